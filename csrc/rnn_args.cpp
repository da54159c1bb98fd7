#include "rnn_args.h"

namespace fused_rnn {
namespace {

// x, w_ih and w_hh give every size of the layer; checks them against each other.
LayerDims rnn_dims(const char* op, const at::Tensor& x, const at::Tensor& w_ih,
                   const at::Tensor& w_hh) {
  check_input(op, x);
  LayerDims d;
  d.G = 1;
  d.T = x.size(0);
  d.B = x.size(1);
  d.I = x.size(2);
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) > 0, op,
              ": w_ih must be 2-D [hidden_size, input_size] with hidden_size > 0, got ",
              shape_str(w_ih.sizes()));
  d.H = d.P = w_ih.size(0);
  check_like(op, "w_ih", w_ih, "x", x);
  check_shape(op, "w_ih", w_ih, {d.H, d.I}, "[hidden_size, input_size]");
  check_like(op, "w_hh", w_hh, "x", x);
  check_shape(op, "w_hh", w_hh, {d.H, d.H}, "[hidden_size, hidden_size]");
  return d;
}

}  // namespace

LayerDims check_rnn_forward_args(const char* op, const at::Tensor& x, const at::Tensor& w_ih,
                                 const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                                 const std::optional<at::Tensor>& b_hh, const at::Tensor& h0,
                                 const std::optional<at::Tensor>& lengths) {
  const LayerDims d = rnn_dims(op, x, w_ih, w_hh);
  const bool has_ih = b_ih.has_value() && b_ih->defined();
  const bool has_hh = b_hh.has_value() && b_hh->defined();
  TORCH_CHECK(has_ih == has_hh, op, ": b_ih and b_hh must both be given or both be None");
  if (has_ih) {
    check_like(op, "b_ih", *b_ih, "x", x);
    check_like(op, "b_hh", *b_hh, "x", x);
    check_shape(op, "b_ih", *b_ih, {d.H}, "[hidden_size]");
    check_shape(op, "b_hh", *b_hh, {d.H}, "[hidden_size]");
  }
  check_like(op, "h0", h0, "x", x);
  check_shape(op, "h0", h0, {d.B, d.H}, "[batch, hidden_size]");
  check_lengths(op, lengths, d.T, d.B);
  return d;
}

LayerDims check_rnn_backward_args(const char* op, const at::Tensor& dy, const at::Tensor& dh_n,
                                  const at::Tensor& x, const at::Tensor& w_ih,
                                  const at::Tensor& w_hh,
                                  const std::optional<at::Tensor>& lengths,
                                  const at::Tensor& hs) {
  const LayerDims d = rnn_dims(op, x, w_ih, w_hh);
  // The saved states are float32 when x is bfloat16 (the CPU computes in float32).
  const at::ScalarType work = x.scalar_type() == at::kBFloat16 && x.is_cpu()
                                  ? at::kFloat : x.scalar_type();
  TORCH_CHECK(hs.scalar_type() == work && hs.device() == x.device(), op,
              ": saved hs must be ", work, " on ", x.device(), ", got ", hs.scalar_type(),
              " on ", hs.device());
  check_shape(op, "hs", hs, {d.T + 1, d.B, d.H}, "saved [T+1, B, hidden_size]");
  check_like(op, "dy", dy, "x", x);
  check_like(op, "dh_n", dh_n, "x", x);
  check_shape(op, "dy", dy, {d.T, d.B, d.H}, "[T, B, hidden_size]");
  check_shape(op, "dh_n", dh_n, {d.B, d.H}, "[B, hidden_size]");
  check_lengths(op, lengths, d.T, d.B);
  return d;
}

}  // namespace fused_rnn
