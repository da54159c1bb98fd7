// The forward ops' argument checks as ops of their own (schemas in ops.cpp). They read
// only shapes, dtypes and devices (and the values of lengths, a plain CPU tensor), so
// they run on any tensor, including torch.func's wrapped ones: CompositeImplicitAutograd.
#include <torch/library.h>

#include "gru_args.h"
#include "lstm_args.h"
#include "rnn_args.h"

namespace fused_rnn {
namespace {

using OptTensor = std::optional<at::Tensor>;

void lstm_check(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
                const at::Tensor& h0, const at::Tensor& c0, const OptTensor& lengths) {
  check_lstm_forward_args("fused_rnn::lstm_forward", x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0,
                          lengths);
}

void gru_check(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
               const OptTensor& b_ih, const OptTensor& b_hh, const at::Tensor& h0,
               const OptTensor& lengths) {
  check_gru_forward_args("fused_rnn::gru_forward", x, w_ih, w_hh, b_ih, b_hh, h0, lengths);
}

void rnn_check(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
               const OptTensor& b_ih, const OptTensor& b_hh, const at::Tensor& h0,
               const OptTensor& lengths) {
  check_rnn_forward_args("fused_rnn::rnn_forward", x, w_ih, w_hh, b_ih, b_hh, h0, lengths);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_rnn, CompositeImplicitAutograd, m) {
  m.impl("lstm_check", &lstm_check);
  m.impl("gru_check", &gru_check);
  m.impl("rnn_check", &rnn_check);
}

}  // namespace fused_rnn
