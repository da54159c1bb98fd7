#include "checks.h"

#include <sstream>

namespace fused_rnn {

std::string shape_str(at::IntArrayRef sizes) {
  std::ostringstream s;
  s << "[";
  for (size_t k = 0; k < sizes.size(); ++k) s << (k ? ", " : "") << sizes[k];
  s << "]";
  return s.str();
}

void check_shape(const char* op, const char* name, const at::Tensor& t,
                 std::vector<int64_t> expected, const char* meaning) {
  TORCH_CHECK(t.sizes() == at::IntArrayRef(expected), op, ": ", name, " must have shape ",
              shape_str(expected), " (", meaning, "), got ", shape_str(t.sizes()));
}

void check_like(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                const at::Tensor& ref) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have the dtype of ",
              ref_name, " (", ref.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on the device of ", ref_name,
              " (", ref.device(), "), got ", t.device());
}

void check_input(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 3, op, ": x must be 3-D [seq_len, batch, input_size], got ",
              x.dim(), "-D with shape ", shape_str(x.sizes()));
  const auto dt = x.scalar_type();
  const bool ok = dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16 || dt == at::kHalf;
  TORCH_CHECK(ok, op, ": x must be float32, float64, float16 or bfloat16, got ", dt);
  TORCH_CHECK(x.is_cpu() || x.is_cuda(), op, ": x must be on a CPU or CUDA device, got ",
              x.device());
}

namespace {
// How torch names the rows of a weight with G gate blocks.
std::string gate_rows(int64_t G) {
  return G == 1 ? "hidden_size" : std::to_string(G) + "*hidden_size";
}
}  // namespace

LayerDims check_layer_weights(const char* op, const at::Tensor& x, const at::Tensor& w_ih,
                              const at::Tensor& w_hh, int64_t G,
                              const std::optional<at::Tensor>& w_hr) {
  check_input(op, x);
  LayerDims d;
  d.G = G;
  d.T = x.size(0);
  d.B = x.size(1);
  d.I = x.size(2);
  const std::string rows = gate_rows(G);
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) % G == 0 && w_ih.size(0) > 0, op,
              ": w_ih must be 2-D [", rows, ", input_size] with hidden_size > 0, got ",
              shape_str(w_ih.sizes()));
  d.H = w_ih.size(0) / G;
  check_like(op, "w_ih", w_ih, "x", x);
  check_shape(op, "w_ih", w_ih, {G * d.H, d.I}, ("[" + rows + ", input_size]").c_str());
  const bool proj = w_hr.has_value() && w_hr->defined();
  d.P = d.H;
  if (proj) {
    check_like(op, "w_hr", *w_hr, "x", x);
    TORCH_CHECK(w_hr->dim() == 2 && w_hr->size(0) > 0, op,
                ": w_hr must be 2-D [proj_size, hidden_size] with proj_size > 0, got ",
                shape_str(w_hr->sizes()));
    d.P = w_hr->size(0);
    check_shape(op, "w_hr", *w_hr, {d.P, d.H}, "[proj_size, hidden_size]");
  }
  check_like(op, "w_hh", w_hh, "x", x);
  check_shape(op, "w_hh", w_hh, {G * d.H, d.P},
              ("[" + rows + (proj ? ", proj_size]" : ", hidden_size]")).c_str());
  return d;
}

void check_biases(const char* op, const std::optional<at::Tensor>& b_ih,
                  const std::optional<at::Tensor>& b_hh, const at::Tensor& x,
                  const LayerDims& d) {
  const bool has_ih = b_ih.has_value() && b_ih->defined();
  const bool has_hh = b_hh.has_value() && b_hh->defined();
  TORCH_CHECK(has_ih == has_hh, op, ": b_ih and b_hh must both be given or both be None");
  if (!has_ih) return;
  const std::string meaning = "[" + gate_rows(d.G) + "]";
  check_like(op, "b_ih", *b_ih, "x", x);
  check_like(op, "b_hh", *b_hh, "x", x);
  check_shape(op, "b_ih", *b_ih, {d.G * d.H}, meaning.c_str());
  check_shape(op, "b_hh", *b_hh, {d.G * d.H}, meaning.c_str());
}

LayerDims check_single_state_forward_args(const char* op, const at::Tensor& x,
                                          const at::Tensor& w_ih, const at::Tensor& w_hh,
                                          const std::optional<at::Tensor>& b_ih,
                                          const std::optional<at::Tensor>& b_hh,
                                          const at::Tensor& h0,
                                          const std::optional<at::Tensor>& lengths, int64_t G) {
  const LayerDims d = check_layer_weights(op, x, w_ih, w_hh, G);
  check_biases(op, b_ih, b_hh, x, d);
  check_like(op, "h0", h0, "x", x);
  check_shape(op, "h0", h0, {d.B, d.H}, "[batch, hidden_size]");
  check_lengths(op, lengths, d.T, d.B);
  return d;
}

at::ScalarType saved_dtype(const at::Tensor& x) {
  const bool half = x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf;
  return half && x.is_cpu() ? at::kFloat : x.scalar_type();
}

void check_saved(const char* op, const char* name, const at::Tensor& t, at::ScalarType dtype,
                 const at::Tensor& x, std::vector<int64_t> expected, const char* meaning) {
  TORCH_CHECK(t.scalar_type() == dtype && t.device() == x.device(), op, ": saved tensor ", name,
              " must be ", dtype, " on ", x.device(), ", got ", t.scalar_type(), " on ",
              t.device());
  check_shape(op, name, t, std::move(expected), meaning);
}

namespace {
[[noreturn]] C10_NOINLINE void fail_length_outside(const char* op, int64_t b, int64_t length,
                                                   int64_t T) {
  TORCH_CHECK(false, op, ": lengths[", b, "] = ", length, " is outside [0, seq_len = ", T, "]");
}
}  // namespace

void check_lengths(const char* op, const std::optional<at::Tensor>& lengths, int64_t T,
                   int64_t B) {
  if (!lengths.has_value() || !lengths->defined()) return;
  const at::Tensor& l = *lengths;
  TORCH_CHECK(l.scalar_type() == at::kLong && l.is_cpu(), op,
              ": lengths must be an int64 tensor on the CPU, got ", l.scalar_type(), " on ",
              l.device());
  check_shape(op, "lengths", l, {B}, "one length per batch row");
  const at::Tensor values = l.contiguous();  // held while p is read
  const int64_t* p = values.const_data_ptr<int64_t>();
  // The first row out of range, then the error from a function of its own: an H200 machine's
  // CPU (AVX-512, another gcc) segfaulted when this throw sat inside the loop (GPU-RUNS.md).
  int64_t bad = -1;
  for (int64_t b = B - 1; b >= 0; --b)
    if (p[b] < 0 || p[b] > T) bad = b;
  if (bad >= 0) fail_length_outside(op, bad, p[bad], T);
}

std::vector<int64_t> rows_active(const std::optional<at::Tensor>& lengths, int64_t T,
                                 int64_t B) {
  std::vector<int64_t> rows(T, B);
  if (!lengths.has_value() || !lengths->defined()) return rows;
  const at::Tensor l = lengths->contiguous();
  const int64_t* p = l.data_ptr<int64_t>();
  for (int64_t t = 0; t < T; ++t) {
    int64_t r = 0;
    for (int64_t b = 0; b < B; ++b)
      if (p[b] > t) r = b + 1;
    rows[t] = r;
  }
  return rows;
}

}  // namespace fused_rnn
