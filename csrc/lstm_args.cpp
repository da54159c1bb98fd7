#include "lstm_args.h"

namespace fused_rnn {

LayerDims check_lstm_forward_args(const char* op, const at::Tensor& x, const at::Tensor& w_ih,
                                  const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                                  const std::optional<at::Tensor>& b_hh,
                                  const std::optional<at::Tensor>& w_hr, const at::Tensor& h0,
                                  const at::Tensor& c0, const std::optional<at::Tensor>& lengths) {
  const LayerDims d = check_layer_weights(op, x, w_ih, w_hh, 4, w_hr);
  check_biases(op, b_ih, b_hh, x, d);
  check_like(op, "h0", h0, "x", x);
  check_like(op, "c0", c0, "x", x);
  const bool proj = w_hr.has_value() && w_hr->defined();
  check_shape(op, "h0", h0, {d.B, d.P}, proj ? "[batch, proj_size]" : "[batch, hidden_size]");
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
  const LayerDims d = check_layer_weights(op, x, w_ih, w_hh, 4, w_hr);
  const bool proj = w_hr.has_value() && w_hr->defined();
  // Besides saved_dtype's rule, the saved cell states are float32 for any float16 or
  // bfloat16 x (the GPU keeps gates and h in the input dtype, the cell state in float32).
  const at::ScalarType saved = saved_dtype(x), xt = x.scalar_type();
  const at::ScalarType cell = xt == at::kBFloat16 || xt == at::kHalf ? at::kFloat : xt;
  check_saved(op, "gates", gates, saved, x, {d.T, d.B, 4 * d.H}, "saved [T, B, 4*hidden_size]");
  check_saved(op, "hs", hs, saved, x, {d.T + 1, d.B, d.P}, "saved [T+1, B, state size]");
  check_saved(op, "cs", cs, cell, x, {d.T + 1, d.B, d.H}, "saved [T+1, B, hidden_size]");
  check_saved(op, "h_raw", h_raw, saved, x,
              proj ? std::vector<int64_t>{d.T, d.B, d.H} : std::vector<int64_t>{0},
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
