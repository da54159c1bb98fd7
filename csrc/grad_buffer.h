// The gradient buffers a backward op returns, on the CPU and the GPU alike.
#pragma once

#include <ATen/ATen.h>

namespace fused_rnn {

// A gradient the backward returns: `shape` when wanted, else empty ([0]; autograd gets
// None). need_dx / need_dw decide (ops.cpp).
inline at::Tensor grad_buffer(bool wanted, at::IntArrayRef shape, const at::TensorOptions& opts) {
  return wanted ? at::empty(shape, opts) : at::empty({0}, opts);
}

// An initial state's gradient the backward returns: `grad` when wanted, else empty ([0]),
// as need_dh0 decides (ops.cpp). `grad` is only called when wanted.
template <typename Grad>
at::Tensor state_grad(bool wanted, Grad grad, const at::TensorOptions& opts) {
  return wanted ? grad() : at::empty({0}, opts);
}

}  // namespace fused_rnn
