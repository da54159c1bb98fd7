// VecOps for the CPU's SIMD vectors: the same per-element steps, one vector of
// lanes at a time. Scalar libm in a loop is not vectorized by the compiler and
// costs most of a step (see benchmarks/NOTES.md), hence at::vec (Sleef inside).
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <limits>
#include <type_traits>

#include "../cell_math.h"

namespace fused_rnn {

namespace vec_math {
using VF = at::vec::Vectorized<float>;
using VI = at::vec::Vectorized<int32_t>;

// e^x in float32 to about 1 ulp, several times cheaper than Sleef's u10 exp (which
// dominated the pointwise pass; see benchmarks/NOTES.md). Cephes' expf: x = n ln2 + r
// with ln2 split in two so r is exact, then a degree-6 polynomial in r. Arguments
// below -86 give e^-86 (4e-38) instead of a denormal: the cell only uses 1 + e^x.
// NaN stays NaN; x > ln(FLT_MAX) gives inf.
inline VF exp(const VF& x) {
  const VF ln_max(88.72283935546875f);
  const VF xc = at::vec::minimum(at::vec::maximum(x, VF(-86.0f)), ln_max);
  const VF n = at::vec::fmadd(xc, VF(1.44269504088896341f), VF(0.5f)).floor();
  VF r = at::vec::fmadd(n, VF(-0.693359375f), xc);
  r = at::vec::fmadd(n, VF(2.12194440e-4f), r);
  VF p(1.9875691500e-4f);
  p = at::vec::fmadd(p, r, VF(1.3981999507e-3f));
  p = at::vec::fmadd(p, r, VF(8.3334519073e-3f));
  p = at::vec::fmadd(p, r, VF(4.1665795894e-2f));
  p = at::vec::fmadd(p, r, VF(1.6666665459e-1f));
  p = at::vec::fmadd(p, r, VF(5.0000001201e-1f));
  p = at::vec::fmadd(p, r * r, r + VF(1.0f));
  // 2^(n-1) from its exponent bits, times 2: n = 128 (x near ln(FLT_MAX)) stays in range.
  const VI bits = (at::vec::convert_to_int_of_same_size(n - VF(1.0f)) + VI(127)) << VI(23);
  const VF y = p * at::vec::cast<float>(bits) * VF(2.0f);
  return VF::blendv(y, VF(std::numeric_limits<float>::infinity()), x > ln_max);
}

// tanh in float32 to a few ulp: Cephes' odd polynomial below |x| = 0.625, where
// 1 - 2 / (e^{2|x|} + 1) would cancel, and that form (sign restored) above.
inline VF tanh(const VF& x) {
  const VF ax = x.abs();
  const VF z = x * x;
  VF p(-5.70498872745e-3f);
  p = at::vec::fmadd(p, z, VF(2.06390887954e-2f));
  p = at::vec::fmadd(p, z, VF(-5.37397155531e-2f));
  p = at::vec::fmadd(p, z, VF(1.33314422036e-1f));
  p = at::vec::fmadd(p, z, VF(-3.33332819422e-1f));
  const VF small = at::vec::fmadd(p * z, x, x);
  VF large = VF(1.0f) - VF(2.0f) / (exp(ax + ax) + VF(1.0f));
  large = VF::blendv(large, large.neg(), x < VF(0.0f));
  return VF::blendv(large, small, ax < VF(0.625f));
}
}  // namespace vec_math

template <typename S>
struct VecOps<at::vec::Vectorized<S>> {
  using V = at::vec::Vectorized<S>;
  static constexpr int kLanes = V::size();
  static V load(const S* p) { return V::loadu(p); }
  static void store(S* p, const V& v) { v.store(p); }
  static V splat(double x) { return V(static_cast<S>(x)); }
  // float32 uses vec_math (few-ulp, fast); float64, the parity dtype, Sleef's u10.
  static V exp(const V& x) {
    if constexpr (std::is_same_v<S, float>) return vec_math::exp(x);
    else return x.exp();
  }
  static V tanh(const V& x) {
    if constexpr (std::is_same_v<S, float>) return vec_math::tanh(x);
    else return x.tanh();
  }
  static V sigmoid(const V& x) { return (V(S(1)) + exp(x.neg())).reciprocal(); }
  static V relu(const V& x) { return at::vec::maximum(x, V(S(0))); }
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
