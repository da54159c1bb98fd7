// One layer in one direction with its autograd (layer_autograd.cpp): the forward op below
// the autograd layer, recorded as a C++ autograd Function whose backward is the backward op.
// Arguments as the forward ops' (lstm_args.h, gru_args.h, rnn_args.h); return y and the
// final states.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace fused_rnn {

using OptionalTensor = std::optional<at::Tensor>;

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_layer_autograd(
    const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const OptionalTensor& b_ih, const OptionalTensor& b_hh, const OptionalTensor& w_hr,
    const at::Tensor& h0, const at::Tensor& c0, const OptionalTensor& lengths, bool reverse);

std::tuple<at::Tensor, at::Tensor> gru_layer_autograd(
    const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const OptionalTensor& b_ih, const OptionalTensor& b_hh, const at::Tensor& h0,
    const OptionalTensor& lengths, bool reverse);

std::tuple<at::Tensor, at::Tensor> rnn_layer_autograd(
    const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const OptionalTensor& b_ih, const OptionalTensor& b_hh, const at::Tensor& h0,
    const OptionalTensor& lengths, bool reverse, bool relu);

}  // namespace fused_rnn
