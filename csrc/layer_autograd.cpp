// The eager route of the layer ops (fused_rnn/ops.py, _call): one C++ autograd Function per
// cell over the fused forward and backward ops, both called below the autograd layer. It
// saves what the ops' own autograd layer (register_autograd in ops.py, taken under
// torch.compile, torch.jit.trace, vmap, CUDA autocast and by callers of the raw ops) saves
// and runs the same backward, without its Python: Function.apply and setup_context in forward, the
// engine's call back into Python and the saved tensors' unpacking in backward. Where no
// gradient is wanted it is the forward op below the autograd layer, without Python's guard
// for that (~3 us of a ~30 us one-step call) or the Function's bookkeeping (~1 us).
#include "layer_autograd.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

namespace fused_rnn {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = std::optional<Tensor>;

namespace {

template <class Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

using Tensors3 = std::tuple<Tensor, Tensor, Tensor>;
using Tensors5 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;
using Tensors6 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
using Tensors7 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// Handles of the ops (schemas in ops.cpp), looked up once.
const auto& lstm_forward_op() {
  static const auto op = find_op<Tensors7(const Tensor&, const Tensor&, const Tensor&,
                                          const OptTensor&, const OptTensor&, const OptTensor&,
                                          const Tensor&, const Tensor&, const OptTensor&, bool)>(
      "fused_rnn::lstm_forward");
  return op;
}
const auto& lstm_backward_op() {
  static const auto op =
      find_op<Tensors7(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                       const Tensor&, const Tensor&, const OptTensor&, const OptTensor&, bool,
                       bool, const Tensor&, const Tensor&, const Tensor&, const Tensor&, bool,
                       bool, bool)>("fused_rnn::lstm_backward");
  return op;
}
const auto& gru_forward_op() {
  static const auto op = find_op<Tensors5(const Tensor&, const Tensor&, const Tensor&,
                                          const OptTensor&, const OptTensor&, const Tensor&,
                                          const OptTensor&, bool)>("fused_rnn::gru_forward");
  return op;
}
const auto& gru_backward_op() {
  static const auto op =
      find_op<Tensors6(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                       const Tensor&, const OptTensor&, bool, bool, const Tensor&,
                       const Tensor&, const Tensor&, bool, bool, bool)>("fused_rnn::gru_backward");
  return op;
}
const auto& rnn_forward_op() {
  static const auto op = find_op<Tensors3(const Tensor&, const Tensor&, const Tensor&,
                                          const OptTensor&, const OptTensor&, const Tensor&,
                                          const OptTensor&, bool, bool)>(
      "fused_rnn::rnn_forward");
  return op;
}
const auto& rnn_backward_op() {
  static const auto op =
      find_op<Tensors5(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                       const Tensor&, const OptTensor&, bool, bool, bool, const Tensor&, bool,
                       bool, bool)>("fused_rnn::rnn_backward");
  return op;
}

// Saved variables hold an absent optional argument as an undefined tensor.
Tensor or_undefined(const OptTensor& t) { return t.has_value() ? *t : Tensor(); }
OptTensor optional(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

// A gradient autograd left undefined as zeros of `shape`: set_materialize_grads(false)
// keeps autograd from filling zeros for every unused output, the saved gates and states
// among them, which the kernels never read.
Tensor zeros_if_undefined(const Tensor& grad, const Tensor& x, at::IntArrayRef shape) {
  return grad.defined() ? grad.contiguous() : at::zeros(shape, x.options());
}

// Per forward argument, whether autograd wants its gradient. needs_input_grad counts the
// tensors among the arguments only, and an absent optional one is none.
std::vector<bool> needs_per_argument(const AutogradContext* ctx,
                                     const std::vector<c10::IValue>& args) {
  std::vector<bool> needs(args.size(), false);
  size_t edge = 0;
  for (size_t k = 0; k < args.size(); ++k)
    if (args[k].isTensor() && args[k].toTensor().defined())
      needs[k] = ctx->needs_input_grad(edge++);
  return needs;
}

// The backward under create_graph=True, which must itself be differentiable; the fused
// backward is not. Runs the forward op once more through its own autograd layer, whose
// backward re-runs the layer as differentiable torch ops when grad mode is on
// (fused_rnn/_rerun.py), and differentiates that: one fused forward more than that layer
// alone would cost, on a path only gradient penalties and Hessians take.
variable_list differentiable_grads(const c10::OperatorHandle& forward_op,
                                   const std::vector<c10::IValue>& args,
                                   const std::vector<bool>& needs, const variable_list& grads) {
  const bool wanted_none = std::none_of(needs.begin(), needs.end(), [](bool n) { return n; });
  torch::jit::Stack stack(args);
  forward_op.callBoxed(&stack);
  variable_list outputs, output_grads;
  for (size_t i = 0; i < grads.size(); ++i) {
    const Tensor& out = stack[i].toTensor();
    TORCH_CHECK(!grads[i].defined() || out.requires_grad() || wanted_none,
                "fused_rnn: ", forward_op.schema().name(),
                " has no autograd layer to differentiate its backward through (import fused_rnn, "
                "whose ops.py registers it)");
    if (grads[i].defined() && out.requires_grad()) {
      outputs.push_back(out);
      output_grads.push_back(grads[i]);
    }
  }
  variable_list wanted;
  std::vector<size_t> where;
  for (size_t k = 0; k < args.size(); ++k)
    if (needs[k]) {
      wanted.push_back(args[k].toTensor());
      where.push_back(k);
    }
  variable_list result(args.size());
  if (outputs.empty() || wanted.empty()) return result;
  const variable_list got = torch::autograd::grad(outputs, wanted, output_grads,
                                                  /*retain_graph=*/true, /*create_graph=*/true,
                                                  /*allow_unused=*/true);
  for (size_t j = 0; j < got.size(); ++j)
    result[where[j]] = got[j].defined() ? got[j] : at::zeros_like(wanted[j]);
  return result;
}

Tensor if_wanted(bool wanted, const Tensor& grad) { return wanted ? grad : Tensor(); }

bool requires_grad(const Tensor& t) { return t.defined() && t.requires_grad(); }
bool requires_grad(const OptTensor& t) { return t.has_value() && requires_grad(*t); }

// Whether autograd records a call with these differentiable arguments (as Function::apply
// decides).
template <typename... Args>
bool records(const Args&... args) {
  return at::GradMode::is_enabled() && (requires_grad(args) || ...);
}

}  // namespace

// Named as graphs show them: grad_fn.name() reads "...FusedLstmLayer>" and so on.
struct FusedLstmLayer : torch::autograd::Function<FusedLstmLayer> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& w_ih,
                               const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                               const OptTensor& w_hr, const Tensor& h0, const Tensor& c0,
                               const OptTensor& lengths, bool reverse) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [y, h_n, c_n, gates, hs, cs, h_raw] =
        lstm_forward_op().call(x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths, reverse);
    // The biases and initial states only for differentiable_grads.
    ctx->save_for_backward({x, w_ih, w_hh, or_undefined(w_hr), or_undefined(lengths), gates, hs,
                            cs, h_raw, or_undefined(b_ih), or_undefined(b_hh), h0, c0});
    ctx->set_materialize_grads(false);
    ctx->saved_data["reverse"] = reverse;
    return {y, h_n, c_n};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const Tensor &x = s[0], &w_ih = s[1], &w_hh = s[2], &w_hr = s[3], &lengths = s[4];
    const Tensor &gates = s[5], &hs = s[6], &cs = s[7], &h_raw = s[8];
    const Tensor &b_ih = s[9], &b_hh = s[10], &h0 = s[11], &c0 = s[12];
    const bool reverse = ctx->saved_data["reverse"].toBool();
    const std::vector<c10::IValue> args{x,  w_ih, w_hh, optional(b_ih), optional(b_hh),
                                        optional(w_hr), h0, c0, optional(lengths), reverse};
    const std::vector<bool> needs = needs_per_argument(ctx, args);
    if (at::GradMode::is_enabled())
      return differentiable_grads(lstm_forward_op(), args, needs, grads);
    const bool has_bias = b_ih.defined(), need_dx = needs[0];
    const bool need_dw = needs[1] || needs[2] || needs[3] || needs[4] || needs[5];
    const bool need_dh0 = needs[6] || needs[7];
    const int64_t T = x.size(0), B = x.size(1), H = cs.size(2), P = hs.size(2);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [dx, dw_ih, dw_hh, db, dw_hr, dh0, dc0] = lstm_backward_op().call(
        zeros_if_undefined(grads[0], x, {T, B, P}), zeros_if_undefined(grads[1], x, {B, P}),
        zeros_if_undefined(grads[2], x, {B, H}), x, w_ih, w_hh, optional(w_hr),
        optional(lengths), reverse, has_bias, gates, hs, cs, h_raw, need_dx, need_dw, need_dh0);
    db = if_wanted(has_bias && need_dw, db);
    return {if_wanted(need_dx, dx),
            if_wanted(need_dw, dw_ih),
            if_wanted(need_dw, dw_hh),
            db,
            db,
            if_wanted(w_hr.defined() && need_dw, dw_hr),
            if_wanted(need_dh0, dh0),
            if_wanted(need_dh0, dc0),
            Tensor(),
            Tensor()};
  }
};

struct FusedGruLayer : torch::autograd::Function<FusedGruLayer> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& w_ih,
                               const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                               const Tensor& h0, const OptTensor& lengths, bool reverse) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [y, h_n, gates, hs, hn] =
        gru_forward_op().call(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse);
    ctx->save_for_backward({x, w_ih, w_hh, or_undefined(lengths), gates, hs, hn,
                            or_undefined(b_ih), or_undefined(b_hh), h0});
    ctx->set_materialize_grads(false);
    ctx->saved_data["reverse"] = reverse;
    return {y, h_n};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const Tensor &x = s[0], &w_ih = s[1], &w_hh = s[2], &lengths = s[3];
    const Tensor &gates = s[4], &hs = s[5], &hn = s[6];
    const Tensor &b_ih = s[7], &b_hh = s[8], &h0 = s[9];
    const bool reverse = ctx->saved_data["reverse"].toBool();
    const std::vector<c10::IValue> args{x,  w_ih, w_hh, optional(b_ih), optional(b_hh),
                                        h0, optional(lengths), reverse};
    const std::vector<bool> needs = needs_per_argument(ctx, args);
    if (at::GradMode::is_enabled())
      return differentiable_grads(gru_forward_op(), args, needs, grads);
    const bool has_bias = b_ih.defined(), need_dx = needs[0];
    const bool need_dw = needs[1] || needs[2] || needs[3] || needs[4], need_dh0 = needs[5];
    const int64_t T = x.size(0), B = x.size(1), H = hs.size(2);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [dx, dw_ih, dw_hh, db_ih, db_hh, dh0] = gru_backward_op().call(
        zeros_if_undefined(grads[0], x, {T, B, H}), zeros_if_undefined(grads[1], x, {B, H}), x,
        w_ih, w_hh, optional(lengths), reverse, has_bias, gates, hs, hn, need_dx, need_dw,
        need_dh0);
    const bool bias_wanted = has_bias && need_dw;
    return {if_wanted(need_dx, dx),
            if_wanted(need_dw, dw_ih),
            if_wanted(need_dw, dw_hh),
            if_wanted(bias_wanted, db_ih),
            if_wanted(bias_wanted, db_hh),
            if_wanted(need_dh0, dh0),
            Tensor(),
            Tensor()};
  }
};

struct FusedRnnLayer : torch::autograd::Function<FusedRnnLayer> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& w_ih,
                               const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                               const Tensor& h0, const OptTensor& lengths, bool reverse,
                               bool relu) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [y, h_n, hs] =
        rnn_forward_op().call(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse, relu);
    ctx->save_for_backward({x, w_ih, w_hh, or_undefined(lengths), hs, or_undefined(b_ih),
                            or_undefined(b_hh), h0});
    ctx->set_materialize_grads(false);
    ctx->saved_data["reverse"] = reverse;
    ctx->saved_data["relu"] = relu;
    return {y, h_n};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const Tensor &x = s[0], &w_ih = s[1], &w_hh = s[2], &lengths = s[3], &hs = s[4];
    const Tensor &b_ih = s[5], &b_hh = s[6], &h0 = s[7];
    const bool reverse = ctx->saved_data["reverse"].toBool();
    const bool relu = ctx->saved_data["relu"].toBool();
    const std::vector<c10::IValue> args{
        x, w_ih, w_hh, optional(b_ih), optional(b_hh), h0, optional(lengths), reverse, relu};
    const std::vector<bool> needs = needs_per_argument(ctx, args);
    if (at::GradMode::is_enabled())
      return differentiable_grads(rnn_forward_op(), args, needs, grads);
    const bool has_bias = b_ih.defined(), need_dx = needs[0];
    const bool need_dw = needs[1] || needs[2] || needs[3] || needs[4], need_dh0 = needs[5];
    const int64_t T = x.size(0), B = x.size(1), H = hs.size(2);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [dx, dw_ih, dw_hh, db, dh0] = rnn_backward_op().call(
        zeros_if_undefined(grads[0], x, {T, B, H}), zeros_if_undefined(grads[1], x, {B, H}), x,
        w_ih, w_hh, optional(lengths), reverse, relu, has_bias, hs, need_dx, need_dw, need_dh0);
    db = if_wanted(has_bias && need_dw, db);
    return {if_wanted(need_dx, dx), if_wanted(need_dw, dw_ih), if_wanted(need_dw, dw_hh), db, db,
            if_wanted(need_dh0, dh0), Tensor(), Tensor(), Tensor()};
  }
};

Tensors3 lstm_layer_autograd(const Tensor& x, const Tensor& w_ih, const Tensor& w_hh,
                             const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
                             const Tensor& h0, const Tensor& c0, const OptTensor& lengths,
                             bool reverse) {
  if (!records(x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const auto out =
        lstm_forward_op().call(x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths, reverse);
    return {std::get<0>(out), std::get<1>(out), std::get<2>(out)};
  }
  const variable_list out =
      FusedLstmLayer::apply(x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, lengths, reverse);
  return {out[0], out[1], out[2]};
}

std::tuple<Tensor, Tensor> gru_layer_autograd(const Tensor& x, const Tensor& w_ih,
                                              const Tensor& w_hh, const OptTensor& b_ih,
                                              const OptTensor& b_hh, const Tensor& h0,
                                              const OptTensor& lengths, bool reverse) {
  if (!records(x, w_ih, w_hh, b_ih, b_hh, h0)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const auto out = gru_forward_op().call(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse);
    return {std::get<0>(out), std::get<1>(out)};
  }
  const variable_list out = FusedGruLayer::apply(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse);
  return {out[0], out[1]};
}

std::tuple<Tensor, Tensor> rnn_layer_autograd(const Tensor& x, const Tensor& w_ih,
                                              const Tensor& w_hh, const OptTensor& b_ih,
                                              const OptTensor& b_hh, const Tensor& h0,
                                              const OptTensor& lengths, bool reverse,
                                              bool relu) {
  if (!records(x, w_ih, w_hh, b_ih, b_hh, h0)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const auto out =
        rnn_forward_op().call(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse, relu);
    return {std::get<0>(out), std::get<1>(out)};
  }
  const variable_list out =
      FusedRnnLayer::apply(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, reverse, relu);
  return {out[0], out[1]};
}

TORCH_LIBRARY_IMPL(fused_rnn, CompositeImplicitAutograd, m) {
  m.impl("lstm_layer_autograd", &lstm_layer_autograd);
  m.impl("gru_layer_autograd", &gru_layer_autograd);
  m.impl("rnn_layer_autograd", &rnn_layer_autograd);
}

}  // namespace fused_rnn
