// The LSTM cell for one (batch row, hidden index j), written once for both devices.
//
// Gate layout is torch.nn.LSTM's: the 4H pre-activations of a row are the blocks
// [i | f | g | o], each H wide, so element j of gate k sits at k*H + j.
//
//   i = sigmoid(a_i)  f = sigmoid(a_f)  g = tanh(a_g)  o = sigmoid(a_o)
//   c = f * c_prev + i * g
//   h = o * tanh(c)
//
// V is the value type computed in (a scalar on the GPU, a SIMD vector or a scalar
// on the CPU); T is the storage type of gates and states. C stores what must stay in
// full precision when T is half or bfloat16 on the GPU: the bias, the cell state and
// the running state gradients (C = T on the CPU and for float32/float64; both are
// deduced from the pointers). With a vector V, j is the first of its lanes.
#pragma once

#include "cell_math.h"

namespace fused_rnn {

// pre:    [4H] a = x W_ih^T + h_prev W_hh^T for this row (biases not yet added)
// bias:   [4H] b_ih + b_hh, or nullptr (type C)
// c_prev: [H]  (type C)
// act:    [4H] out: i, f, g, o (saved for backward; may alias pre)
// c:      [H]  out: new cell state (type C)
// h:      [H]  out: new hidden state
// y:      [H]  out: a second copy of h (the layer output), or nullptr
template <typename V, typename T, typename C>
FR_HD void lstm_forward_elem(const T* pre, const C* bias, const C* c_prev, T* act,
                             C* c, T* h, T* y, int64_t j, int64_t H) {
  using O = VecOps<V>;
  V a_i = O::load(pre + j);
  V a_f = O::load(pre + H + j);
  V a_g = O::load(pre + 2 * H + j);
  V a_o = O::load(pre + 3 * H + j);
  if (bias != nullptr) {
    a_i = a_i + O::load(bias + j);
    a_f = a_f + O::load(bias + H + j);
    a_g = a_g + O::load(bias + 2 * H + j);
    a_o = a_o + O::load(bias + 3 * H + j);
  }
  const V i = O::sigmoid(a_i);
  const V f = O::sigmoid(a_f);
  const V g = O::tanh(a_g);
  const V o = O::sigmoid(a_o);
  const V c_new = f * O::load(c_prev + j) + i * g;
  const V h_new = o * O::tanh(c_new);
  O::store(act + j, i);
  O::store(act + H + j, f);
  O::store(act + 2 * H + j, g);
  O::store(act + 3 * H + j, o);
  O::store(c + j, c_new);
  O::store(h + j, h_new);
  if (y != nullptr) O::store(y + j, h_new);
}

// Backward through one step, given the saved activations.
// act:    [4H] i, f, g, o from the forward
// c_prev: [H]  cell state fed into the step;  c: [H] cell state it produced (type C)
// dh:     [H]  in: dL/dh (from later steps); out: zeroed (it has been consumed) (type C)
// dy:     [H]  dL/dy of this step's output, added to dh, or nullptr
// dc:     [H]  in: dL/dc (from later steps); out: dL/dc_prev (type C)
// da:     [4H] out: dL/da, the gradient of the gate pre-activations
//
//   dc_tot = dc + dh * o * (1 - tanh(c)^2)
//   da_i = dc_tot * g * i(1-i)      da_f = dc_tot * c_prev * f(1-f)
//   da_g = dc_tot * i * (1-g^2)     da_o = dh * tanh(c) * o(1-o)
//   dc_prev = dc_tot * f
template <typename V, typename T, typename C>
FR_HD void lstm_backward_elem(const T* act, const C* c_prev, const C* c, C* dh,
                              const T* dy, C* dc, T* da, int64_t j, int64_t H) {
  using O = VecOps<V>;
  const V i = O::load(act + j);
  const V f = O::load(act + H + j);
  const V g = O::load(act + 2 * H + j);
  const V o = O::load(act + 3 * H + j);
  V dh_tot = O::load(dh + j);
  if (dy != nullptr) dh_tot = dh_tot + O::load(dy + j);
  const V tc = O::tanh(O::load(c + j));
  const V dc_tot = O::load(dc + j) + dh_tot * o * dtanh_from_output(tc);
  O::store(da + j, dc_tot * g * dsigmoid_from_output(i));
  O::store(da + H + j, dc_tot * O::load(c_prev + j) * dsigmoid_from_output(f));
  O::store(da + 2 * H + j, dc_tot * i * dtanh_from_output(g));
  O::store(da + 3 * H + j, dh_tot * tc * dsigmoid_from_output(o));
  O::store(dc + j, dc_tot * f);
  O::store(dh + j, O::splat(0.0));
}

}  // namespace fused_rnn
