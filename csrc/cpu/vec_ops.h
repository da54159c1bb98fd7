// VecOps for the CPU's SIMD vectors: the same per-element steps, one vector of
// lanes at a time. Scalar libm in a loop is not vectorized by the compiler and
// costs most of a step (see benchmarks/NOTES.md), hence at::vec (Sleef inside).
#pragma once

#include <ATen/cpu/vec/vec.h>

#include "../cell_math.h"

namespace fused_rnn {

template <typename S>
struct VecOps<at::vec::Vectorized<S>> {
  using V = at::vec::Vectorized<S>;
  static constexpr int kLanes = V::size();
  static V load(const S* p) { return V::loadu(p); }
  static void store(S* p, const V& v) { v.store(p); }
  static V splat(double x) { return V(static_cast<S>(x)); }
  static V exp(const V& x) { return x.exp(); }
  static V tanh(const V& x) { return x.tanh(); }
  static V sigmoid(const V& x) { return (V(S(1)) + x.neg().exp()).reciprocal(); }
  static V relu(const V& x) { return at::vec::maximum(x, V(S(0))); }
  static V relu_grad_from_output(const V& y) {
    return V::blendv(V(S(1)), V(S(0)), y <= V(S(0)));
  }
  static V relu_backward(const V& y, const V& g) {
    return V::blendv(g, V(S(0)), y <= V(S(0)));
  }
};

// Runs step(V, j) over j in [begin, end): full vectors first, then the tail one
// element at a time with the scalar V (the exact code path the GPU runs).
template <typename S, typename Step>
inline void for_each_lane(int64_t begin, int64_t end, const Step& step) {
  using Vec = at::vec::Vectorized<S>;
  int64_t j = begin;
  for (; j + Vec::size() <= end; j += Vec::size()) step(Vec(), j);
  for (; j < end; ++j) step(S(), j);
}

}  // namespace fused_rnn
