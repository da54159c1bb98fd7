#include "lstm_args.h"

namespace fused_rnn {

LayerDims check_lstm_forward_args(const char* op, const at::Tensor& x, const at::Tensor& w_ih,
                                  const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                                  const std::optional<at::Tensor>& b_hh,
                                  const std::optional<at::Tensor>& w_hr, const at::Tensor& h0,
                                  const at::Tensor& c0, const std::optional<at::Tensor>& lengths) {
  check_input(op, x);
  LayerDims d;
  d.G = 4;
  d.T = x.size(0);
  d.B = x.size(1);
  d.I = x.size(2);
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) % 4 == 0 && w_ih.size(0) > 0, op,
              ": w_ih must be 2-D [4*hidden_size, input_size], got ", shape_str(w_ih.sizes()));
  d.H = w_ih.size(0) / 4;
  const bool proj = w_hr.has_value() && w_hr->defined();
  d.P = proj ? w_hr->size(0) : d.H;
  check_like(op, "w_ih", w_ih, "x", x);
  check_shape(op, "w_ih", w_ih, {4 * d.H, d.I}, "[4*hidden_size, input_size]");
  check_like(op, "w_hh", w_hh, "x", x);
  if (proj) {
    check_like(op, "w_hr", *w_hr, "x", x);
    TORCH_CHECK(w_hr->dim() == 2 && d.P > 0, op,
                ": w_hr must be 2-D [proj_size, hidden_size] with proj_size > 0, got ",
                shape_str(w_hr->sizes()));
    check_shape(op, "w_hr", *w_hr, {d.P, d.H}, "[proj_size, hidden_size]");
  }
  check_shape(op, "w_hh", w_hh, {4 * d.H, d.P},
              proj ? "[4*hidden_size, proj_size]" : "[4*hidden_size, hidden_size]");
  const bool has_ih = b_ih.has_value() && b_ih->defined();
  const bool has_hh = b_hh.has_value() && b_hh->defined();
  TORCH_CHECK(has_ih == has_hh, op, ": b_ih and b_hh must both be given or both be None");
  if (has_ih) {
    check_like(op, "b_ih", *b_ih, "x", x);
    check_like(op, "b_hh", *b_hh, "x", x);
    check_shape(op, "b_ih", *b_ih, {4 * d.H}, "[4*hidden_size]");
    check_shape(op, "b_hh", *b_hh, {4 * d.H}, "[4*hidden_size]");
  }
  check_like(op, "h0", h0, "x", x);
  check_like(op, "c0", c0, "x", x);
  check_shape(op, "h0", h0, {d.B, d.P},
              proj ? "[batch, proj_size]" : "[batch, hidden_size]");
  check_shape(op, "c0", c0, {d.B, d.H}, "[batch, hidden_size]");
  check_lengths(op, lengths, d.T, d.B);
  return d;
}

LayerDims check_lstm_backward_args(const char* op, const at::Tensor& dy, const at::Tensor& dh_n,
                                   const at::Tensor& dc_n, const at::Tensor& x,
                                   const at::Tensor& w_ih, const at::Tensor& w_hh,
                                   const std::optional<at::Tensor>& w_hr,
                                   const std::optional<at::Tensor>& lengths,
                                   const at::Tensor& gates, const at::Tensor& hs,
                                   const at::Tensor& cs, const at::Tensor& h_raw) {
  check_input(op, x);
  LayerDims d;
  d.G = 4;
  d.T = x.size(0);
  d.B = x.size(1);
  d.I = x.size(2);
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) % 4 == 0, op,
              ": w_ih must be 2-D [4*hidden_size, input_size], got ", shape_str(w_ih.sizes()));
  d.H = w_ih.size(0) / 4;
  const bool proj = w_hr.has_value() && w_hr->defined();
  d.P = proj ? w_hr->size(0) : d.H;
  check_shape(op, "w_ih", w_ih, {4 * d.H, d.I}, "[4*hidden_size, input_size]");
  check_shape(op, "w_hh", w_hh, {4 * d.H, d.P}, "[4*hidden_size, state size]");
  if (proj) check_shape(op, "w_hr", *w_hr, {d.P, d.H}, "[proj_size, hidden_size]");
  // The saved tensors are float32 when x is bfloat16 on the CPU (which computes in
  // float32); the saved cell states are float32 for any float16/bfloat16 x (the GPU
  // keeps gates and h in the input dtype but the cell state in float32).
  const at::ScalarType xt = x.scalar_type();
  const at::ScalarType work = xt == at::kBFloat16 && x.is_cpu() ? at::kFloat : xt;
  const at::ScalarType cell = xt == at::kBFloat16 || xt == at::kHalf ? at::kFloat : xt;
  for (const at::Tensor* t : {&gates, &hs, &cs, &h_raw}) {
    const at::ScalarType want = t == &cs ? cell : work;
    TORCH_CHECK(t->scalar_type() == want && t->device() == x.device(), op, ": saved tensor ",
                t == &gates ? "gates" : t == &hs ? "hs" : t == &cs ? "cs" : "h_raw",
                " must be ", want, " on ", x.device(), ", got ", t->scalar_type(), " on ",
                t->device());
  }
  check_shape(op, "gates", gates, {d.T, d.B, 4 * d.H}, "saved [T, B, 4*hidden_size]");
  check_shape(op, "hs", hs, {d.T + 1, d.B, d.P}, "saved [T+1, B, state size]");
  check_shape(op, "cs", cs, {d.T + 1, d.B, d.H}, "saved [T+1, B, hidden_size]");
  check_shape(op, "h_raw", h_raw, proj ? std::vector<int64_t>{d.T, d.B, d.H} : std::vector<int64_t>{0},
              "saved [T, B, hidden_size] with projection, else [0]");
  check_like(op, "dy", dy, "x", x);
  check_like(op, "dh_n", dh_n, "x", x);
  check_like(op, "dc_n", dc_n, "x", x);
  check_shape(op, "dy", dy, {d.T, d.B, d.P}, "[T, B, state size]");
  check_shape(op, "dh_n", dh_n, {d.B, d.P}, "[B, state size]");
  check_shape(op, "dc_n", dc_n, {d.B, d.H}, "[B, hidden_size]");
  check_lengths(op, lengths, d.T, d.B);
  return d;
}

}  // namespace fused_rnn
