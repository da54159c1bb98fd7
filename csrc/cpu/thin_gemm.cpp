#include "thin_gemm.h"

#include "panel_kernel.h"

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>

namespace fused_rnn::cpu {
namespace {

// f(std::integral_constant<int, i>) for i = 0 .. N-1, unrolled: the sums below are indexed
// by constants only, so they stay in registers.
template <int N, typename F>
inline void unroll(const F& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (f(std::integral_constant<int, I>{}), ...);
  }(std::make_integer_sequence<int, N>{});
}

using panel::prefetch;

template <int I>
using ic = std::integral_constant<int, I>;

// W rows dotted at once with R rows of A: R * J running sums, the J vectors of W in
// registers (R = 1: folded into the multiply-adds' memory operands), R of A.
template <int R>
inline constexpr int kWRows = R == 1 ? 8 : R == 2 ? 4 : R == 3 ? 3 : 2;

// Argument i of vs (i an integral_constant). The kernels' sums and vectors are named
// variables picked this way, not arrays: GCC kept arrays of them on the stack (a store and
// a load per multiply-add; measured 2x slower).
template <typename I, typename V, typename... Vs>
inline V& pick(I, V& first, Vs&... rest) {
  if constexpr (I::value == 0) return first;
  else return pick(std::integral_constant<int, I::value - 1>{}, rest...);
}

// C[r, j] = A[r] . W[j] + beta * C[r, j] for r < R, j < J.
template <typename T, int R, int J>
void dots(int64_t k, const T* A, int64_t lda, const T* W, int64_t ldw, T beta, T* C,
          int64_t ldc) {
  static_assert(R * J <= 9 && J <= 8);
  using V = at::vec::Vectorized<T>;
  constexpr int64_t L = V::size();
  V s0(T(0)), s1(T(0)), s2(T(0)), s3(T(0)), s4(T(0)), s5(T(0)), s6(T(0)), s7(T(0)), s8(T(0));
  V w0, w1, w2, w3, w4, w5, w6, w7;
  auto sum = [&](auto i) -> V& { return pick(i, s0, s1, s2, s3, s4, s5, s6, s7, s8); };
  auto w = [&](auto j) -> V& { return pick(j, w0, w1, w2, w3, w4, w5, w6, w7); };
  // load(x): the vector at x + p (count = L) or its first count lanes, the rest zero.
  auto step = [&](const auto& load) {
    // With 2+ rows of A each W vector is used R times: in a register, not reloaded (GCC
    // folded the load into every multiply-add: 2 rows 49 -> 74 GFLOP/s on one core).
    unroll<J>([&](auto j) {
      if constexpr (R == 1) w(j) = load(W + j * ldw);
      else w(j) = panel::in_register(load(W + j * ldw));
    });
    unroll<R>([&](auto r) {
      V a = load(A + r * lda);
      if constexpr (J > 1) a = panel::in_register(a);  // likewise, used J times
      unroll<J>([&](auto j) {
        V& s = sum(std::integral_constant<int, r * J + j>{});
        s = at::vec::fmadd(a, w(j), s);
      });
    });
  };
  int64_t p = 0;
  for (; p + L <= k; p += L) {
    // W streams from L2/L3 (one pass per call): fetch 1 KB ahead on each row. GCC keeps
    // these only where 1-2 rows of W are dotted at once (B = 4, H = 512: 1.07 -> 0.69 ms a
    // call); forcing them at 3-8 rows (inline asm) measured no different, so it is not done.
    unroll<J>([&](auto j) { prefetch(W + j * ldw + p + 1024 / sizeof(T)); });
    step([&](const T* x) { return V::loadu(x + p); });
  }
  if (p < k) step([&](const T* x) { return V::loadu(x + p, k - p); });  // the last k % L
  unroll<R>([&](auto r) {
    unroll<J>([&](auto j) {
      const V& s = sum(std::integral_constant<int, r * J + j>{});
      const T total = at::vec::vec_reduce_all<T>([](V& x, V& y) { return x + y; }, s);
      T& c = C[r * ldc + j];
      c = beta == T(0) ? total : total + beta * c;
    });
  });
}

#if defined(CPU_CAPABILITY_AVX512)
// Whether float products with trans_b take dots4x4 below (AVX-512's 32 registers hold its
// 16 sums, 4 rows of W and one of A).
inline constexpr bool kDots4x4 = true;

// The 128-bit blocks (fold_blocks) or, within each block, the elements (fold_elements)
// that shuffle immediate Lo picks of a and b, added to those that Hi picks.
template <int Lo, int Hi>
inline __m512 fold_blocks(__m512 a, __m512 b) {
  return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, Lo), _mm512_shuffle_f32x4(a, b, Hi));
}
template <int Lo, int Hi>
inline __m512 fold_elements(__m512 a, __m512 b) {
  return _mm512_add_ps(_mm512_shuffle_ps(a, b, Lo), _mm512_shuffle_ps(a, b, Hi));
}

// C[r, j] = A[r] . W[j] + beta * C[r, j] for 4 rows r of A and 4 rows j of W: 16 running
// sums along k (8 loads per 16 multiply-adds), then all 16 reduced at once: 15 combines of
// two vectors (2 shuffles and an add each) instead of 16 reductions of 4 steps each, which
// cost dots<4, 2> about half as much again as its multiply-adds at k = 256.
void dots4x4(int64_t k, const float* A, int64_t lda, const float* W, int64_t ldw, float beta,
             float* C, int64_t ldc) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0,
         s7 = s0, s8 = s0, s9 = s0, s10 = s0, s11 = s0, s12 = s0, s13 = s0, s14 = s0, s15 = s0;
  // Sum j * 4 + r: A row r times W row j (the order the reduction leaves them in).
  auto sum = [&](auto i) -> __m512& {
    return pick(i, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15);
  };
  auto step = [&](const auto& load) {
    const __m512 w0 = load(W), w1 = load(W + ldw), w2 = load(W + 2 * ldw),
                 w3 = load(W + 3 * ldw);
    unroll<4>([&](auto r) {
      constexpr int R = decltype(r)::value;
      const __m512 a = load(A + R * lda);
      auto fma = [&](auto i, __m512 w) { sum(i) = _mm512_fmadd_ps(a, w, sum(i)); };
      fma(ic<R>{}, w0);
      fma(ic<4 + R>{}, w1);
      fma(ic<8 + R>{}, w2);
      fma(ic<12 + R>{}, w3);
    });
  };
  int64_t p = 0;
  for (; p + 16 <= k; p += 16) {
    unroll<4>([&](auto j) { prefetch(W + decltype(j)::value * ldw + p + 256); });
    step([&](const float* x) { return _mm512_loadu_ps(x + p); });
  }
  if (p < k) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (k - p)) - 1);
    step([&](const float* x) { return _mm512_maskz_loadu_ps(tail, x + p); });
  }
  // Pairs of vectors folded into one at 256, 128, 64 and 32 bits: element e of 128-bit
  // block q ends with the total of sum e * 4 + q, so block r holds C[r, 0..3].
  constexpr int kLo = _MM_SHUFFLE(1, 0, 1, 0), kHi = _MM_SHUFFLE(3, 2, 3, 2);
  constexpr int kEven = _MM_SHUFFLE(2, 0, 2, 0), kOdd = _MM_SHUFFLE(3, 1, 3, 1);
  auto f256 = [](__m512 a, __m512 b) { return fold_blocks<kLo, kHi>(a, b); };
  auto f128 = [](__m512 a, __m512 b) { return fold_blocks<kEven, kOdd>(a, b); };
  auto f64 = [](__m512 a, __m512 b) { return fold_elements<kLo, kHi>(a, b); };
  auto f32 = [](__m512 a, __m512 b) { return fold_elements<kEven, kOdd>(a, b); };
  const __m512 t0 = f256(s0, s1), t1 = f256(s2, s3), t2 = f256(s4, s5), t3 = f256(s6, s7),
               t4 = f256(s8, s9), t5 = f256(s10, s11), t6 = f256(s12, s13),
               t7 = f256(s14, s15);
  const __m512 u0 = f128(t0, t1), u1 = f128(t2, t3), u2 = f128(t4, t5), u3 = f128(t6, t7);
  const __m512 v0 = f64(u0, u1), v1 = f64(u2, u3);
  const __m512 x = f32(v0, v1);
  unroll<4>([&](auto r) {
    constexpr int R = decltype(r)::value;
    __m128 c = _mm512_extractf32x4_ps(x, R);
    float* dst = C + R * ldc;
    if (beta != 0.0f) c = _mm_fmadd_ps(_mm_set1_ps(beta), _mm_loadu_ps(dst), c);
    _mm_storeu_ps(dst, c);
  });
}
#else
inline constexpr bool kDots4x4 = false;
#endif

// Rows [j0, j1) of W against R rows of A: blocks of J rows, then the remainder (< J rows)
// by blocks of J - 1, J - 2, ...
template <typename T, int R, int J>
void row_run(int64_t j0, int64_t j1, int64_t k, const T* A, int64_t lda, const T* W,
             int64_t ldw, T beta, T* C, int64_t ldc) {
  int64_t j = j0;
  for (; j + J <= j1; j += J) dots<T, R, J>(k, A, lda, W + j * ldw, ldw, beta, C + j, ldc);
  if constexpr (J > 1)
    if (j < j1) row_run<T, R, J - 1>(j, j1, k, A, lda, W, ldw, beta, C, ldc);
}

template <typename T, int R>
void rows_block(int64_t j0, int64_t j1, int64_t k, const T* A, int64_t lda, const T* W,
                int64_t ldw, T beta, T* C, int64_t ldc) {
  row_run<T, R, kWRows<R>>(j0, j1, k, A, lda, W, ldw, beta, C, ldc);
}

#if defined(CPU_CAPABILITY_AVX512)
// Rows [j0, j1) of W against all m rows of A: 4 x 4 blocks (a block of W stays in L1
// while A's blocks pass), then the W rows and the A rows (m % 4) left over.
void rows_4x4(int64_t j0, int64_t j1, int64_t m, int64_t k, const float* A, int64_t lda,
              const float* W, int64_t ldw, float beta, float* C, int64_t ldc) {
  const int64_t m4 = m / 4 * 4, n4 = j0 + (j1 - j0) / 4 * 4;
  for (int64_t j = j0; j < n4; j += 4)
    for (int64_t r = 0; r < m4; r += 4)
      dots4x4(k, A + r * lda, lda, W + j * ldw, ldw, beta, C + r * ldc + j, ldc);
  if (n4 < j1)
    for (int64_t r = 0; r < m4; r += 4)
      row_run<float, 4, 2>(n4, j1, k, A + r * lda, lda, W, ldw, beta, C + r * ldc, ldc);
  const float* a = A + m4 * lda;
  float* c = C + m4 * ldc;
  switch (m - m4) {
    case 1: rows_block<float, 1>(j0, j1, k, a, lda, W, ldw, beta, c, ldc); break;
    case 2: rows_block<float, 2>(j0, j1, k, a, lda, W, ldw, beta, c, ldc); break;
    case 3: rows_block<float, 3>(j0, j1, k, a, lda, W, ldw, beta, c, ldc); break;
    default: break;
  }
}
#endif

// B's column vectors a block of R rows of C takes at once (R * V running sums).
template <int R>
inline constexpr int kColumnVectors = R <= 2 ? 4 : 2;

// C[r, j .. j + cols) = sum_p A[r, p] B[p, j ..] + beta * C for r < R, cols <= V vectors
// (B and C already offset by j): B's rows in turn, each broadcast A[r, p] times its
// vectors. Full: cols is all V vectors, else the last ones are partial or zero.
template <typename T, int R, int V, bool Full>
void combos(int64_t k, const T* A, int64_t lda, const T* B, int64_t ldb, int64_t cols, T beta,
            T* C, int64_t ldc) {
  static_assert(R * V <= 9);
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t L = Vec::size();
  Vec s0(T(0)), s1(T(0)), s2(T(0)), s3(T(0)), s4(T(0)), s5(T(0)), s6(T(0)), s7(T(0)), s8(T(0));
  auto sum = [&](auto i) -> Vec& { return pick(i, s0, s1, s2, s3, s4, s5, s6, s7, s8); };
  // Lanes of vector v inside cols (all of them when Full).
  auto lanes = [&](int v) { return Full ? L : std::clamp<int64_t>(cols - v * L, 0, L); };
  auto load = [&](const T* x, auto v) {
    if constexpr (Full) return Vec::loadu(x + v * L);
    else return lanes(v) == L ? Vec::loadu(x + v * L)
                : lanes(v) > 0 ? Vec::loadu(x + v * L, lanes(v)) : Vec(T(0));
  };
  for (int64_t p = 0; p < k; ++p) {
    const T* b = B + p * ldb;
    prefetch(b + 8 * ldb);  // B's rows are ldb apart: fetch 8 rows ahead
    unroll<V>([&](auto v) {
      const Vec bv = load(b, v);
      unroll<R>([&](auto r) {
        Vec& s = sum(std::integral_constant<int, r * V + v>{});
        s = at::vec::fmadd(Vec(A[r * lda + p]), bv, s);
      });
    });
  }
  unroll<R>([&](auto r) {
    unroll<V>([&](auto v) {
      Vec out = sum(std::integral_constant<int, r * V + v>{});
      T* c = C + r * ldc + v * L;
      const int64_t n = lanes(v);
      if (n == 0) return;
      if (beta != T(0))
        out = at::vec::fmadd(Vec(beta), n == L ? Vec::loadu(c) : Vec::loadu(c, n), out);
      if (n == L) out.store(c);
      else out.store(c, n);
    });
  });
}

// Columns [j0, j1) of C for R rows: chunks of V vectors, the last one partial.
template <typename T, int R>
void column_run(int64_t j0, int64_t j1, int64_t k, const T* A, int64_t lda, const T* B,
                int64_t ldb, T beta, T* C, int64_t ldc) {
  constexpr int V = kColumnVectors<R>;
  constexpr int64_t W = V * at::vec::Vectorized<T>::size();
  int64_t j = j0;
  for (; j + W <= j1; j += W) combos<T, R, V, true>(k, A, lda, B + j, ldb, W, beta, C + j, ldc);
  if (j < j1) combos<T, R, V, false>(k, A, lda, B + j, ldb, j1 - j, beta, C + j, ldc);
}

}  // namespace

bool thin_gemm_enabled() {
  const char* env = std::getenv("FUSED_RNN_THIN_GEMM");
  return !(env != nullptr && std::strcmp(env, "0") == 0);
}

template <typename T>
int64_t thin_rows(bool trans_b) {
  return trans_b && kDots4x4 && std::is_same_v<T, float> ? kThinRowsTransB : kThinRows;
}

template <typename T>
bool thin_gemm_suits(bool trans_a, bool trans_b, int64_t m) {
  return !trans_a && m <= thin_rows<T>(trans_b) && thin_gemm_enabled();
}

template <typename T>
void thin_gemm(bool trans_b, int64_t m, int64_t n, int64_t k, const T* A, int64_t lda,
               const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  // A thread gets at least ~32k multiply-adds (below that waking it costs more), and
  // without trans_b whole chunks of B's columns.
  constexpr int64_t kChunk = 4 * at::vec::Vectorized<T>::size();
  int64_t grain = std::max<int64_t>(8, 32768 / std::max<int64_t>(1, m * k));
  if (!trans_b) grain = (grain + kChunk - 1) / kChunk * kChunk;
  at::parallel_for(0, n, grain, [&](int64_t j0, int64_t j1) {
#if defined(CPU_CAPABILITY_AVX512)
    if constexpr (std::is_same_v<T, float>) {
      if (trans_b) {
        rows_4x4(j0, j1, m, k, A, lda, B, ldb, beta, C, ldc);
        return;
      }
    }
#endif
    for (int64_t r = 0; r < m; r += 4) {
      const T* a = A + r * lda;
      T* c = C + r * ldc;
      const int64_t rows = std::min<int64_t>(4, m - r);
      if (trans_b) {
        switch (rows) {
          case 1: rows_block<T, 1>(j0, j1, k, a, lda, B, ldb, beta, c, ldc); break;
          case 2: rows_block<T, 2>(j0, j1, k, a, lda, B, ldb, beta, c, ldc); break;
          case 3: rows_block<T, 3>(j0, j1, k, a, lda, B, ldb, beta, c, ldc); break;
          default: rows_block<T, 4>(j0, j1, k, a, lda, B, ldb, beta, c, ldc); break;
        }
      } else {
        switch (rows) {
          case 1: column_run<T, 1>(j0, j1, k, a, lda, B, ldb, beta, c, ldc); break;
          case 2: column_run<T, 2>(j0, j1, k, a, lda, B, ldb, beta, c, ldc); break;
          case 3: column_run<T, 3>(j0, j1, k, a, lda, B, ldb, beta, c, ldc); break;
          default: column_run<T, 4>(j0, j1, k, a, lda, B, ldb, beta, c, ldc); break;
        }
      }
    }
  });
}

template void thin_gemm<float>(bool, int64_t, int64_t, int64_t, const float*, int64_t,
                               const float*, int64_t, float, float*, int64_t);
template void thin_gemm<double>(bool, int64_t, int64_t, int64_t, const double*, int64_t,
                                const double*, int64_t, double, double*, int64_t);

template int64_t thin_rows<float>(bool);
template int64_t thin_rows<double>(bool);
template bool thin_gemm_suits<float>(bool, bool, int64_t);
template bool thin_gemm_suits<double>(bool, bool, int64_t);

}  // namespace fused_rnn::cpu
