// The GRU ops' arguments: one layer, one direction, the whole sequence per call.
//
//   x       [T, B, I]   input, time-major
//   w_ih    [3H, I]     input weights, gate blocks r, z, n (torch.nn.GRU's layout)
//   w_hh    [3H, H]     recurrent weights
//   b_ih    [3H]        optional
//   b_hh    [3H]        optional (both biases or neither)
//   h0      [B, H]      initial state
//   lengths [B] int64 on the CPU, optional: row b runs steps 0..lengths[b]-1 and then
//                        keeps its state; its outputs past its length are zero
//   reverse             process t = T-1 .. 0 (for packed rows: lengths[b]-1 .. 0)
//
// Saved for backward by the forward (indexed by time t, not by processing order):
//   gates   [T, B, 3H]  activations r, z, n (zero for finished rows)
//   hs      [T+1, B, H] states: step t reads hs[t + reverse] and writes hs[t + 1 - reverse]
//   hn      [T, B, H]   recurrent part of the n block, h_prev W_hn^T + b_hn (zero for
//                        finished rows)
#pragma once

#include "checks.h"

namespace fused_rnn {

LayerDims check_gru_forward_args(const char* op, const at::Tensor& x, const at::Tensor& w_ih,
                                 const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                                 const std::optional<at::Tensor>& b_hh, const at::Tensor& h0,
                                 const std::optional<at::Tensor>& lengths);

// Checks the gradients and saved tensors handed to the backward against the forward's shapes.
LayerDims check_gru_backward_args(const char* op, const at::Tensor& dy, const at::Tensor& dh_n,
                                  const at::Tensor& x, const at::Tensor& w_ih,
                                  const at::Tensor& w_hh, const std::optional<at::Tensor>& lengths,
                                  const at::Tensor& gates, const at::Tensor& hs,
                                  const at::Tensor& hn);

}  // namespace fused_rnn
