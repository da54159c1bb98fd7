#include "gru_args.h"

namespace fused_rnn {

LayerDims check_gru_forward_args(const char* op, const at::Tensor& x, const at::Tensor& w_ih,
                                 const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                                 const std::optional<at::Tensor>& b_hh, const at::Tensor& h0,
                                 const std::optional<at::Tensor>& lengths) {
  return check_single_state_forward_args(op, x, w_ih, w_hh, b_ih, b_hh, h0, lengths, 3);
}

LayerDims check_gru_backward_args(const char* op, const at::Tensor& dy, const at::Tensor& dh_n,
                                  const at::Tensor& x, const at::Tensor& w_ih,
                                  const at::Tensor& w_hh, const std::optional<at::Tensor>& lengths,
                                  const at::Tensor& gates, const at::Tensor& hs,
                                  const at::Tensor& hn) {
  const LayerDims d = check_layer_weights(op, x, w_ih, w_hh, 3);
  const at::ScalarType saved = saved_dtype(x);
  check_saved(op, "gates", gates, saved, x, {d.T, d.B, 3 * d.H}, "saved [T, B, 3*hidden_size]");
  check_saved(op, "hs", hs, saved, x, {d.T + 1, d.B, d.H}, "saved [T+1, B, hidden_size]");
  check_saved(op, "hn", hn, saved, x, {d.T, d.B, d.H}, "saved [T, B, hidden_size]");
  check_like(op, "dy", dy, "x", x);
  check_like(op, "dh_n", dh_n, "x", x);
  check_shape(op, "dy", dy, {d.T, d.B, d.H}, "[T, B, hidden_size]");
  check_shape(op, "dh_n", dh_n, {d.B, d.H}, "[B, hidden_size]");
  check_lengths(op, lengths, d.T, d.B);
  return d;
}

}  // namespace fused_rnn
