// The Elman RNN cell for one (batch row, hidden index j), written once for both devices.
//
//   h = act(a),  a = x W_ih^T + b_ih + h_prev W_hh^T + b_hh,  act = tanh or relu
//
// The output h is all the backward needs: act'(a) is written through it
// (tanh' = 1 - h^2, relu' = [h > 0]), so no activations are saved besides the states.
// V is the value type computed in (a scalar on the GPU, a SIMD vector or a scalar on
// the CPU); T is the storage type. With a vector V, j is the first of its lanes.
// kRelu picks the nonlinearity at compile time, so neither device branches per element.
#pragma once

#include "cell_math.h"

namespace fused_rnn {

template <typename V, bool kRelu>
FR_HD V rnn_act(V a) {
  if constexpr (kRelu) {
    return VecOps<V>::relu(a);
  } else {
    return VecOps<V>::tanh(a);
  }
}

// pre:  [H] a = x W_ih^T + h_prev W_hh^T for this row (biases not yet added)
// bias: [H] b_ih + b_hh, or nullptr
// h:    [H] out: new hidden state
// y:    [H] out: a second copy of h (the layer output), or nullptr; may alias pre
template <typename V, bool kRelu, typename T>
FR_HD void rnn_forward_elem(const T* pre, const T* bias, T* h, T* y, int64_t j) {
  using O = VecOps<V>;
  V a = O::load(pre + j);
  if (bias != nullptr) a = a + O::load(bias + j);
  const V h_new = rnn_act<V, kRelu>(a);
  O::store(h + j, h_new);
  if (y != nullptr) O::store(y + j, h_new);
}

// Backward through one step.
// h:  [H] the state this step produced (saved by the forward)
// dh: [H] in: dL/dh from later steps; out: zeroed (it has been consumed) (type C: float32
//     for float16/bfloat16 storage on the GPU, so the running gradient keeps its bits)
// dy: [H] dL/dy of this step's output, added to dh, or nullptr
// da: [H] out: dL/da = (dh + dy) * act'(a)
template <typename V, bool kRelu, typename T, typename C>
FR_HD void rnn_backward_elem(const T* h, C* dh, const T* dy, T* da, int64_t j) {
  using O = VecOps<V>;
  V dh_tot = O::load(dh + j);
  if (dy != nullptr) dh_tot = dh_tot + O::load(dy + j);
  if constexpr (kRelu) {
    O::store(da + j, O::relu_backward(O::load(h + j), dh_tot));
  } else {
    O::store(da + j, dh_tot * dtanh_from_output(O::load(h + j)));
  }
  O::store(dh + j, O::splat(0.0));
}

}  // namespace fused_rnn
