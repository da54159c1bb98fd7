// A module's whole forward in one call (fused_rnn::module_forward): the eager route of
// fused_rnn.LSTM/GRU/RNN for plain tensor input, and of the cells (cell_forward).
// fused_rnn/rnn_base.py's forward does the same in Python (layers, directions, states,
// dropout, input forms) and stays the route for everything this one declines: it returns
// no tensors, before running any layer, wherever the Python route must run (PackedSequence
// input is not passed here; nested, sparse or symbolic tensors, CUDA autocast, a device
// our kernels were not built for) or would reject an argument the module checks itself
// (input, hx, dropout). The Python route then raises its errors, so they are written once;
// the layer ops' own errors (a later layer's weights, say) come from the same ops on both
// routes. Why: on a one-step call (B = 1, H = 128) the Python around the layer op cost as
// much as the op (benchmarks/NOTES.md, session 17).
#include "layer_autograd.h"

#include "cpu/bf16_gemm.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include <string_view>
#include <vector>

namespace fused_rnn {

using at::Tensor;

namespace {

enum class Cell { lstm, gru, rnn_tanh, rnn_relu };

// Weights per (layer, direction) in the flat list, in RNNBase's roles:
// w_ih, w_hh, b_ih, b_hh, w_hr (absent ones None).
constexpr int64_t kRoles = 5;

bool parse_mode(std::string_view mode, Cell* cell) {
  if (mode == "LSTM") *cell = Cell::lstm;
  else if (mode == "GRU") *cell = Cell::gru;
  else if (mode == "RNN_TANH") *cell = Cell::rnn_tanh;
  else if (mode == "RNN_RELU") *cell = Cell::rnn_relu;
  else return false;
  return true;
}

bool kernels_for(const at::Device& device) {
#ifdef FUSED_RNN_WITH_CUDA
  if (device.is_cuda()) return true;
#endif
  return device.is_cpu();
}

// A dense tensor with concrete sizes: not nested, sparse or symbolic (export, make_fx).
bool plain(const Tensor& t) {
  return t.layout() == at::kStrided && !t.is_nested() &&
         !t.unsafeGetTensorImpl()->has_symbolic_sizes_strides();
}

// Whether a state tensor is what the Python route would accept without an error: the
// input's dtype and device, and these sizes.
bool matches(const Tensor& t, const Tensor& like, at::IntArrayRef sizes) {
  return plain(t) && t.dtype() == like.dtype() && t.device() == like.device() &&
         t.sizes() == sizes;
}

// Whether a call on this input runs under torch.autocast("cpu"). There the layers compute
// float32 input and weights in float32, or in bfloat16 (autocast_work_dtype; hx of either
// dtype, as an earlier call under autocast returned it, is cast to theirs), and
// module_forward / cell_forward round the results to the dtypes torch.nn's modules return
// (fused_rnn/_autocast.py, which the Python route calls, has the table); other dtypes take
// the Python route.
bool cpu_autocast(const Tensor& input) {
  return input.is_cpu() && at::autocast::is_autocast_enabled(at::kCPU);
}

// What autocast casts: floating point, but not float64.
bool autocast_eligible(const Tensor& t) {
  const auto dt = t.scalar_type();
  return dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf;
}

// Under CPU autocast: the autocast dtype A, and promote(A, S) for S the dtype of the state
// the cell adds in unlowered (`carried`, or float32, the input's, where none was given).
struct AutocastDtypes {
  at::ScalarType low, kept;
};
AutocastDtypes autocast_dtypes(const Tensor* carried) {
  const at::ScalarType low = at::autocast::get_autocast_dtype(at::kCPU);
  return {low, at::promote_types(low, carried != nullptr ? carried->scalar_type() : at::kFloat)};
}

// Under CPU autocast, the dtype the layers of a module with float32 input x [T, B, I] work
// in: bfloat16 where the autocast dtype is bfloat16 and this CPU multiplies bfloat16
// natively in a call this long (cpu/bf16_gemm.h), as torch.nn's products run in it (not a
// projected LSTM: its products stay float32); else float32.
at::ScalarType autocast_work_dtype(int64_t proj_size, const Tensor& x) {
  const bool bf16 = proj_size == 0 &&
                    at::autocast::get_autocast_dtype(at::kCPU) == at::kBFloat16 &&
                    cpu::bf16_products_for(x.size(0), x.size(1));
  return bf16 ? at::kBFloat16 : at::kFloat;
}

// Whether torch.nn's module (or, step_cell, its cell) returns the autocast dtype under CPU
// autocast for float32 input (fused_rnn/_autocast.py has the table): the Elman RNN and
// RNNCell; the LSTM where oneDNN runs it (no projection, oneDNN enabled) or its projection
// is a linear; not the GRU, LSTMCell or GRUCell, which add their state in unlowered.
bool lowers_under_autocast(Cell cell, int64_t proj_size, bool step_cell) {
  if (cell == Cell::rnn_tanh || cell == Cell::rnn_relu) return true;
  if (cell == Cell::gru || step_cell) return false;
  return proj_size > 0 || at::globalContext().userEnabledMkldnn();
}

// t in dtype (differentiable: gradients come back in t's dtype).
Tensor as_dtype(const Tensor& t, at::ScalarType dtype) {
  return t.scalar_type() == dtype ? t : t.to(dtype);
}

// The module's configuration (torch.nn.RNNBase's attributes of those names; train: training;
// step_cell: one of the cells, LSTMCell/GRUCell/RNNCell, run as a one-step layer).
struct ModuleConfig {
  int64_t num_layers;
  bool bidirectional, batch_first;
  double dropout;
  bool train;
  int64_t input_size, hidden_size, proj_size;
  bool step_cell;
};

// What module_forward computes before putting it in the module's forms: the last layer's
// output [T, B, F] (time-major; B = 1 for unbatched input) and, per state, the final state
// [B, F] of each (layer, direction) as its layer op returned it.
struct ModuleRun {
  Tensor output;
  std::vector<std::vector<Tensor>> finals;
  Cell cell;  // the mode, parsed
};

// mode: RNNBase.mode; input: [T, B, I] ([B, T, I] if batch_first) or unbatched [T, I];
// hx: empty, or one tensor per state ([L*D, B, F] or unbatched [L*D, F]; LSTM: h_0 with
// F = proj_size or hidden_size, then c_0 with F = hidden_size); weights: kRoles per
// (layer, direction), k = layer * D + direction. std::nullopt where the Python route must
// run. Errors only from the layer ops, as the Python route raises them (a later layer's
// weights of another dtype, say, after the first layers ran).
std::optional<ModuleRun> run_module(c10::string_view mode, const Tensor& input,
                                    at::TensorList hx,
                                    const c10::List<std::optional<Tensor>>& weights,
                                    const ModuleConfig& config) {
  const auto& [num_layers, bidirectional, batch_first, dropout, train, input_size, hidden_size,
               proj_size, step_cell] = config;
  Cell cell;
  const int64_t D = bidirectional ? 2 : 1, L = num_layers * D;
  if (!parse_mode(std::string_view(mode.data(), mode.size()), &cell) ||
      static_cast<int64_t>(weights.size()) != L * kRoles || L < 1 ||
      !(dropout >= 0 && dropout <= 1))  // F.dropout raises ValueError otherwise
    return std::nullopt;
  // Under CUDA autocast the ops' own autograd layer must save what autocast cast
  // (fused_rnn/ops.py, _call).
  if (at::autocast::is_autocast_enabled(at::kCUDA)) return std::nullopt;
  const bool amp = cpu_autocast(input);
  if (amp && input.scalar_type() != at::kFloat) return std::nullopt;
  if (!plain(input)) return std::nullopt;
  const int64_t dim = input.dim();
  if ((dim != 2 && dim != 3) || !input.is_floating_point() || input.size(-1) != input_size ||
      !kernels_for(input.device()))
    return std::nullopt;
  for (int64_t k = 0; k < L; ++k)  // every layer's w_ih and w_hh (a bias may be absent)
    if (!weights.get(k * kRoles).has_value() || !weights.get(k * kRoles + 1).has_value())
      return std::nullopt;
  const Tensor first = *weights.get(0);
  if (first.dtype() != input.dtype() || first.device() != input.device())
    return std::nullopt;
  if (amp)  // the Python route casts the weights of every layer, as autocast would
    for (size_t i = 0; i < weights.size(); ++i) {
      const std::optional<Tensor> w = weights.get(i);
      if (w.has_value() && w->scalar_type() != at::kFloat) return std::nullopt;
    }
  const bool unbatched = dim == 2;
  Tensor x = unbatched ? input.unsqueeze(1) : batch_first ? input.transpose(0, 1) : input;
  if (x.size(0) == 0) return std::nullopt;
  // Under CPU autocast the input, states and weights in the dtype the layers work in
  // (the weights through autocast's cache, as torch.nn's casts: once per autocast region).
  const at::ScalarType work =
      amp && !step_cell ? autocast_work_dtype(proj_size, x) : input.scalar_type();
  const bool cast_weights = work != input.scalar_type();
  if (cast_weights) x = x.to(work);
  const int64_t B = x.size(1);

  // State sizes F, as the module's configuration gives them (as the Python route's).
  std::vector<int64_t> features{hidden_size};
  if (cell == Cell::lstm)  // h_0's first: the projection's size where there is one
    features.insert(features.begin(), proj_size > 0 ? proj_size : hidden_size);
  std::vector<Tensor> states;  // per state: [L*D, B, F], or one [B, F] of zeros
  if (hx.empty()) {
    // One [B, F] of zeros that every layer reads: the ops never write their arguments.
    for (int64_t f : features) states.push_back(at::zeros({B, f}, x.options()));
  } else {
    if (hx.size() != features.size()) return std::nullopt;
    for (size_t s = 0; s < hx.size(); ++s) {
      const std::vector<int64_t> want = unbatched ? std::vector<int64_t>{L, features[s]}
                                                  : std::vector<int64_t>{L, B, features[s]};
      const Tensor h = amp && autocast_eligible(hx[s]) ? hx[s].to(work) : hx[s];
      if (!matches(h, x, want)) return std::nullopt;
      states.push_back(unbatched ? h.unsqueeze(1) : h);
    }
  }
  // State s's initial value for (layer, direction) k.
  const auto initial = [&](size_t s, int64_t k) {
    return hx.empty() ? states[s] : states[s].select(0, k);
  };

  std::vector<std::vector<Tensor>> finals(states.size());  // per state, per (layer, direction)
  Tensor layer_in = x;
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    std::vector<Tensor> outs;
    for (int64_t direction = 0; direction < D; ++direction) {
      const int64_t k = layer * D + direction;
      const auto w = [&](int64_t role) -> std::optional<Tensor> {
        std::optional<Tensor> t = weights.get(k * kRoles + role);
        if (cast_weights && t.has_value())
          t = at::autocast::cached_cast(work, *t, c10::DeviceType::CPU);
        return t;
      };
      const Tensor w_ih = *w(0), w_hh = *w(1);
      const bool reverse = direction == 1;
      if (cell == Cell::lstm) {
        auto [y, h_n, c_n] = lstm_layer_autograd(layer_in, w_ih, w_hh, w(2), w(3), w(4),
                                                 initial(0, k), initial(1, k), std::nullopt,
                                                 reverse);
        outs.push_back(y);
        finals[0].push_back(h_n);
        finals[1].push_back(c_n);
      } else {
        auto [y, h_n] = cell == Cell::gru
                            ? gru_layer_autograd(layer_in, w_ih, w_hh, w(2), w(3), initial(0, k),
                                                 std::nullopt, reverse)
                            : rnn_layer_autograd(layer_in, w_ih, w_hh, w(2), w(3), initial(0, k),
                                                 std::nullopt, reverse, cell == Cell::rnn_relu);
        outs.push_back(y);
        finals[0].push_back(h_n);
      }
    }
    layer_in = D == 1 ? outs[0] : at::cat(outs, 2);
    if (dropout > 0 && train && layer < num_layers - 1)
      layer_in = at::dropout(layer_in, dropout, /*train=*/true);
  }

  return ModuleRun{layer_in, std::move(finals), cell};
}

}  // namespace

// run_module's results in the module's forms: [output, h_n] or [output, h_n, c_n], or []
// where the Python route must run.
std::vector<Tensor> module_forward(c10::string_view mode, const Tensor& input,
                                   at::TensorList hx,
                                   const c10::List<std::optional<Tensor>>& weights,
                                   int64_t num_layers, bool bidirectional, bool batch_first,
                                   double dropout, bool train, int64_t input_size,
                                   int64_t hidden_size, int64_t proj_size) {
  const std::optional<ModuleRun> run =
      run_module(mode, input, hx, weights,
                 {num_layers, bidirectional, batch_first, dropout, train, input_size,
                  hidden_size, proj_size, /*step_cell=*/false});
  if (!run.has_value()) return {};
  // Under CPU autocast: the autocast dtype A where torch.nn's module lowers, else
  // promote(A, S) (S: the carried state's dtype); a projected LSTM's c_n promote(A, S).
  const at::ScalarType in_dt = input.scalar_type();
  at::ScalarType out_dt = in_dt, c_dt = in_dt;
  if (cpu_autocast(input)) {
    const auto [low, kept] = autocast_dtypes(hx.empty() ? nullptr : &hx[hx.size() - 1]);
    out_dt = lowers_under_autocast(run->cell, proj_size, /*step_cell=*/false) ? low : kept;
    c_dt = proj_size > 0 ? kept : out_dt;
  }
  const bool unbatched = input.dim() == 2;
  const Tensor y = as_dtype(run->output, out_dt);
  std::vector<Tensor> result;
  result.push_back(unbatched ? y.squeeze(1) : batch_first ? y.transpose(0, 1) : y);
  for (const auto& per_layer_run : run->finals) {
    const at::ScalarType dt = result.size() == 2 ? c_dt : out_dt;  // the LSTM's c_n second
    std::vector<Tensor> per_layer;
    for (const Tensor& f : per_layer_run) per_layer.push_back(as_dtype(f, dt));
    // One (layer, direction): its [B, F] as [1, B, F] without a copy, and not as a view
    // (torch.nn's h_n is none: h_n.detach_() must work, as in truncated backpropagation).
    const Tensor h = per_layer.size() == 1
                         ? at::_unsafe_view(per_layer[0], {1, per_layer[0].size(0),
                                                           per_layer[0].size(1)})
                         : at::stack(per_layer, 0);
    result.push_back(unbatched ? h.squeeze(1) : h);
  }
  return result;
}

// A cell's step (fused_rnn.LSTMCell/GRUCell/RNNCell) as a one-layer module's over one time
// step: input [B, I] as [1, B, I] (unbatched [I] as [1, I]), each state [B, H] as [1, B, H]
// ([H] as [1, H]). weights: kRoles. Returns the new states in the cell's form, or [] where
// the cell's Python route must run.
std::vector<Tensor> cell_forward(c10::string_view mode, const Tensor& input, at::TensorList hx,
                                 const c10::List<std::optional<Tensor>>& weights,
                                 int64_t input_size, int64_t hidden_size) {
  if (!plain(input)) return {};
  const int64_t dim = input.dim();
  if (dim != 1 && dim != 2) return {};
  std::vector<Tensor> states;
  for (const Tensor& h : hx) {
    if (!plain(h) || h.dim() != dim) return {};
    states.push_back(h.unsqueeze(0));
  }
  const ModuleConfig one_step{/*num_layers=*/1, /*bidirectional=*/false, /*batch_first=*/false,
                              /*dropout=*/0, /*train=*/false, input_size, hidden_size,
                              /*proj_size=*/0, /*step_cell=*/true};
  const std::optional<ModuleRun> run = run_module(mode, input.unsqueeze(0), states, weights,
                                                  one_step);
  if (!run.has_value()) return {};
  // Under CPU autocast: as module_forward's, for the cells (S: the c or h passed in).
  at::ScalarType dt = input.scalar_type();
  if (cpu_autocast(input)) {
    const auto [low, kept] = autocast_dtypes(hx.empty() ? nullptr : &hx[hx.size() - 1]);
    dt = lowers_under_autocast(run->cell, /*proj_size=*/0, /*step_cell=*/true) ? low : kept;
  }
  // The layer op's own [B, H], not a view of it (as torch.nn's cells); unbatched: [H]
  // (a view, as torch.nn's squeeze).
  std::vector<Tensor> result;
  for (const auto& per_layer : run->finals) {
    const Tensor h = as_dtype(per_layer[0], dt);
    result.push_back(dim == 1 ? h.squeeze(0) : h);
  }
  return result;
}

TORCH_LIBRARY_IMPL(fused_rnn, CompositeImplicitAutograd, m) {
  m.impl("module_forward", &module_forward);
  m.impl("cell_forward", &cell_forward);
}

}  // namespace fused_rnn
