// The GRU cell for one (batch row, hidden index j), written once for both devices.
//
// Gate layout is torch.nn.GRU's: the 3H pre-activations of a row are the blocks
// [r | z | n], each H wide, so element j of gate k sits at k*H + j. The input and
// recurrent projections stay apart because the reset gate scales the recurrent part
// of the n block, bias included:
//
//   gi = x W_ih^T            gh = h_prev W_hh^T          (each [3H], no bias)
//   r  = sigmoid(gi_r + b_ih_r + gh_r + b_hh_r)
//   z  = sigmoid(gi_z + b_ih_z + gh_z + b_hh_z)
//   hn = gh_n + b_hh_n                                    (saved for backward)
//   n  = tanh(gi_n + b_ih_n + r * hn)
//   h  = (1 - z) * n + z * h_prev
//
// V is the value type computed in (a scalar on the GPU, a SIMD vector or a scalar
// on the CPU); T is the storage type. With a vector V, j is the first of its lanes.
#pragma once

#include "cell_math.h"

namespace fused_rnn {

// gi:     [3H] x W_ih^T for this row
// gh:     [3H] h_prev W_hh^T for this row
// b_ih:   [3H] or nullptr;  b_hh: [3H] or nullptr (both or neither)
// h_prev: [H]
// act:    [3H] out: r, z, n (saved for backward; may alias gi)
// hn:     [H]  out: gh_n + b_hh_n (saved for backward)
// h:      [H]  out: new hidden state
// y:      [H]  out: a second copy of h (the layer output), or nullptr
template <typename V, typename T>
FR_HD void gru_forward_elem(const T* gi, const T* gh, const T* b_ih, const T* b_hh,
                            const T* h_prev, T* act, T* hn, T* h, T* y, int64_t j, int64_t H) {
  using O = VecOps<V>;
  V a_r = O::load(gi + j) + O::load(gh + j);
  V a_z = O::load(gi + H + j) + O::load(gh + H + j);
  V a_n = O::load(gi + 2 * H + j);
  V h_n = O::load(gh + 2 * H + j);
  if (b_ih != nullptr) {
    a_r = a_r + (O::load(b_ih + j) + O::load(b_hh + j));
    a_z = a_z + (O::load(b_ih + H + j) + O::load(b_hh + H + j));
    a_n = a_n + O::load(b_ih + 2 * H + j);
    h_n = h_n + O::load(b_hh + 2 * H + j);
  }
  const V r = O::sigmoid(a_r);
  const V z = O::sigmoid(a_z);
  const V n = O::tanh(a_n + r * h_n);
  const V hp = O::load(h_prev + j);
  const V h_new = n + z * (hp - n);  // = (1 - z) n + z h_prev
  O::store(act + j, r);
  O::store(act + H + j, z);
  O::store(act + 2 * H + j, n);
  O::store(hn + j, h_n);
  O::store(h + j, h_new);
  if (y != nullptr) O::store(y + j, h_new);
}

// Backward through one step, given the saved activations.
// act:    [3H] r, z, n from the forward;  hn: [H] gh_n + b_hh_n from the forward
// h_prev: [H]  state fed into the step
// dh:     [H]  in: dL/dh (from later steps); out: dh_tot * z, the part of dL/dh_prev that
//              does not go through W_hh (the caller adds dgh W_hh). Type C: float32 for
//              float16/bfloat16 storage on the GPU, so the running gradient keeps its bits
// dy:     [H]  dL/dy of this step's output, added to dh, or nullptr
// dgi:    [3H] out: dL/dgi (= dL/db_ih for this row and step)
// dgh:    [3H] out: dL/dgh (= dL/db_hh); equal to dgi except in the n block
//
//   dh_tot = dh + dy
//   da_n = dh_tot * (1 - z) * (1 - n^2)                  dgi_n = da_n, dgh_n = da_n * r
//   da_r = da_n * hn * r(1-r)                            dgi_r = dgh_r = da_r
//   da_z = dh_tot * (h_prev - n) * z(1-z)                dgi_z = dgh_z = da_z
//   dh_prev = dh_tot * z + dgh W_hh
template <typename V, typename T, typename C>
FR_HD void gru_backward_elem(const T* act, const T* hn, const T* h_prev, C* dh, const T* dy,
                             T* dgi, T* dgh, int64_t j, int64_t H) {
  using O = VecOps<V>;
  const V r = O::load(act + j);
  const V z = O::load(act + H + j);
  const V n = O::load(act + 2 * H + j);
  V dh_tot = O::load(dh + j);
  if (dy != nullptr) dh_tot = dh_tot + O::load(dy + j);
  const V da_n = dh_tot * (O::splat(1.0) - z) * dtanh_from_output(n);
  const V da_r = da_n * O::load(hn + j) * dsigmoid_from_output(r);
  const V da_z = dh_tot * (O::load(h_prev + j) - n) * dsigmoid_from_output(z);
  O::store(dgi + j, da_r);
  O::store(dgi + H + j, da_z);
  O::store(dgi + 2 * H + j, da_n);
  O::store(dgh + j, da_r);
  O::store(dgh + H + j, da_z);
  O::store(dgh + 2 * H + j, da_n * r);
  O::store(dh + j, dh_tot * z);
}

}  // namespace fused_rnn
