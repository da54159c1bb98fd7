// The LSTM ops' arguments: one layer, one direction, the whole sequence per call.
//
//   x       [T, B, I]   input, time-major
//   w_ih    [4H, I]     input weights, gate blocks i, f, g, o (torch.nn.LSTM's layout)
//   w_hh    [4H, P]     recurrent weights; P = proj_size if w_hr is given, else H
//   b_ih    [4H]        optional
//   b_hh    [4H]        optional (both biases or neither)
//   w_hr    [P, H]      optional projection: the state is r = h W_hr^T
//   h0      [B, P]      initial state
//   c0      [B, H]      initial cell state
//   lengths [B] int64 on the CPU, optional: row b runs steps 0..lengths[b]-1 and then
//                        keeps its state; its outputs past its length are zero
//   reverse             process t = T-1 .. 0 (for packed rows: lengths[b]-1 .. 0)
//
// Saved for backward by the forward (indexed by time t, not by processing order):
//   gates   [T, B, 4H]  activations i, f, g, o
//   hs      [T+1, B, P] states: step t reads hs[t + reverse] and writes hs[t + 1 - reverse]
//   cs      [T+1, B, H] cell states, indexed as hs (float32 for float16/bfloat16 x)
//   h_raw   [T, B, H]   o * tanh(c) before the projection ([0] without projection)
#pragma once

#include "checks.h"

namespace fused_rnn {

LayerDims check_lstm_forward_args(const char* op, const at::Tensor& x, const at::Tensor& w_ih,
                                  const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                                  const std::optional<at::Tensor>& b_hh,
                                  const std::optional<at::Tensor>& w_hr, const at::Tensor& h0,
                                  const at::Tensor& c0, const std::optional<at::Tensor>& lengths);

// Checks the gradients and saved tensors handed to the backward against the forward's shapes.
LayerDims check_lstm_backward_args(const char* op, const at::Tensor& dy, const at::Tensor& dh_n,
                                   const at::Tensor& dc_n, const at::Tensor& x,
                                   const at::Tensor& w_ih, const at::Tensor& w_hh,
                                   const std::optional<at::Tensor>& w_hr,
                                   const std::optional<at::Tensor>& lengths,
                                   const at::Tensor& gates, const at::Tensor& hs,
                                   const at::Tensor& cs, const at::Tensor& h_raw);

}  // namespace fused_rnn
