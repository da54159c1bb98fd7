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

#if defined(CPU_CAPABILITY_AVX512)
// The same functions written for AVX-512's mask registers (at::vec's comparisons build
// vectors of all-ones lanes that blendv turns back into masks: two extra instructions per
// select) and with a reciprocal from rcp14 plus one Newton step instead of a division
// (vdivps on 16 lanes has a throughput of one per ~10 cycles, and the LSTM cell divides
// four times per vector). Measured in benchmarks/NOTES.md, session 9.

// 1 / d to about 1 ulp for d >= 1 (all the cell divides by): rcp14 is within 2^-14, one
// Newton step squares that. d = inf, or so large that rcp14 flushes its result, gives 0.
inline __m512 recip(__m512 d) {
  const __m512 r0 = _mm512_rcp14_ps(d);
  const __m512 e = _mm512_fnmadd_ps(d, r0, _mm512_set1_ps(1.0f));  // 1 - d r0
  const __m512 r = _mm512_fmadd_ps(r0, e, r0);
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(r0, _mm512_setzero_ps(), _CMP_NEQ_UQ), r);
}

// exp above, with 2^n applied by scalef. x is clamped to [-86, 89]: past ln(FLT_MAX) =
// 88.72 scalef overflows to inf by itself, and a larger x would lose r to cancellation.
inline __m512 exp512(__m512 x) {
  // min and max return their second operand when either is NaN, so NaN stays NaN.
  const __m512 xc =
      _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-86.0f), x));
  const __m512 n = _mm512_roundscale_ps(
      _mm512_fmadd_ps(xc, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f)),
      _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693359375f), xc);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

// tanh above: the odd polynomial below |x| = 0.625, else 1 - 2 / (e^{2|x|} + 1) with
// the sign of x.
inline __m512 tanh512(__m512 x) {
  const __m512 sign = _mm512_set1_ps(-0.0f);
  const __m512 ax = _mm512_andnot_ps(sign, x);
  const __m512 z = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(-5.70498872745e-3f);
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(2.06390887954e-2f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-5.37397155531e-2f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(1.33314422036e-1f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-3.33332819422e-1f));
  const __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(p, z), x, x);
  const __m512 d = _mm512_add_ps(exp512(_mm512_add_ps(ax, ax)), _mm512_set1_ps(1.0f));
  const __m512 large = _mm512_fnmadd_ps(_mm512_set1_ps(2.0f), recip(d), _mm512_set1_ps(1.0f));
  const __m512 signed_large = _mm512_or_ps(large, _mm512_and_ps(sign, x));  // large >= 0
  return _mm512_mask_mov_ps(signed_large,
                            _mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.625f), _CMP_LT_OQ), small);
}
#endif
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
#if defined(CPU_CAPABILITY_AVX512)
    if constexpr (std::is_same_v<S, float>) return vec_math::exp512(x);
#endif
    if constexpr (std::is_same_v<S, float>) return vec_math::exp(x);
    else return x.exp();
  }
  static V tanh(const V& x) {
#if defined(CPU_CAPABILITY_AVX512)
    if constexpr (std::is_same_v<S, float>) return vec_math::tanh512(x);
#endif
    if constexpr (std::is_same_v<S, float>) return vec_math::tanh(x);
    else return x.tanh();
  }
  static V sigmoid(const V& x) {
#if defined(CPU_CAPABILITY_AVX512)
    if constexpr (std::is_same_v<S, float>) return vec_math::recip(exp(x.neg()) + V(S(1)));
#endif
    return (V(S(1)) + exp(x.neg())).reciprocal();
  }
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
