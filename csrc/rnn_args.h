// The Elman RNN ops' arguments: one layer, one direction, the whole sequence per call.
//
//   x       [T, B, I]   input, time-major
//   w_ih    [H, I]      input weights
//   w_hh    [H, H]      recurrent weights
//   b_ih    [H]         optional
//   b_hh    [H]         optional (both biases or neither)
//   h0      [B, H]      initial state
//   lengths [B] int64 on the CPU, optional: row b runs steps 0..lengths[b]-1 and then
//                        keeps its state; its outputs past its length are zero
//   reverse             process t = T-1 .. 0 (for packed rows: lengths[b]-1 .. 0)
//   relu                act = relu if true, else tanh
//
// Saved for backward by the forward (indexed by time t, not by processing order):
//   hs      [T+1, B, H] states: step t reads hs[t + reverse] and writes hs[t + 1 - reverse]
// act'(a) is computed from the state a step wrote, so nothing else is saved.
#pragma once

#include "checks.h"

namespace fused_rnn {

LayerDims check_rnn_forward_args(const char* op, const at::Tensor& x, const at::Tensor& w_ih,
                                 const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                                 const std::optional<at::Tensor>& b_hh, const at::Tensor& h0,
                                 const std::optional<at::Tensor>& lengths);

// Checks the gradients and the saved states handed to the backward against the forward's shapes.
LayerDims check_rnn_backward_args(const char* op, const at::Tensor& dy, const at::Tensor& dh_n,
                                  const at::Tensor& x, const at::Tensor& w_ih,
                                  const at::Tensor& w_hh,
                                  const std::optional<at::Tensor>& lengths,
                                  const at::Tensor& hs);

}  // namespace fused_rnn
