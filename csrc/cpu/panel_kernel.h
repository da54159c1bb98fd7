// The register kernel shared by the CPU GEMMs on packed panels: panel_gemm.cpp (the
// per-step products of the time loops) and blocked_gemm.cpp (the large products before
// and after them). R <= kRowBlock rows of C times one panel of op(B), two SIMD vectors
// wide (for each k row, the panel's columns contiguous, zero-padded at the edge).
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>
#include <utility>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace fused_rnn::cpu::panel {

using Vec = at::vec::Vectorized<float>;
inline constexpr int64_t kL = Vec::size();
inline constexpr int64_t kPanel = 2 * kL;  // columns per panel: two vectors
// Rows per pass: 2 x kRowBlock accumulators stay in registers (16 with AVX2, 32 with AVX-512).
inline constexpr int kRowBlock = kL == 16 ? 8 : 6;
// Rows per pass when m <= 8: with AVX2 4 + 4 beats 6 + 2; with AVX-512 all 8 at once.
inline constexpr int kFewRowBlock = kL == 16 ? 8 : 4;
inline constexpr int64_t kDepth = 4096 / kPanel;  // k rows per pass: a 16 KB slice stays in L1

// k cut into equal slices of at most kDepth rows: their depth (k = 0: one empty slice).
inline int64_t slice_depth(int64_t k) {
  const int64_t slices = std::max<int64_t>(1, (k + kDepth - 1) / kDepth);
  return std::max<int64_t>(1, (k + slices - 1) / slices);
}

// What the first full row block fetches while slice [p0, p0 + d) of a panel runs, of the
// panel's k rows [g0, g1) in use: the panel's next slice, else the next panel's first
// (next_panel: that panel, or null when there is none).
struct NextSlice {
  const float* p;
  int64_t k;
};
inline NextSlice next_slice(const float* panel, const float* next_panel, int64_t p0, int64_t d,
                            int64_t g0, int64_t g1, int64_t depth) {
  if (p0 + d < g1) return {panel + (p0 + d) * kPanel, std::min(depth, g1 - p0 - d)};
  return {next_panel != nullptr ? next_panel + g0 * kPanel : nullptr, std::min(depth, g1 - g0)};
}

// How the kernel finds A[r, q] (row r of the block, k step q).
enum class ALayout {
  kRows,    // row-major with a leading dimension: A[r * lda + q]
  kPacked,  // packed by blocked_gemm.cpp, the block's rows adjacent: A[q * kRowBlock + r]
};

// One row of C for one panel of `cols` <= kPanel columns: C = (lo, hi) + beta * C.
inline void store_row(float* c, Vec lo, Vec hi, int64_t cols, float beta) {
  if (cols == kPanel) {
    if (beta != 0.0f) {
      lo = at::vec::fmadd(Vec(beta), Vec::loadu(c), lo);
      hi = at::vec::fmadd(Vec(beta), Vec::loadu(c + kL), hi);
    }
    lo.store(c);
    hi.store(c + kL);
    return;
  }
  float sums[kPanel];
  lo.store(sums);
  hi.store(sums + kL);
  for (int64_t q = 0; q < cols; ++q) c[q] = beta == 0.0f ? sums[q] : sums[q] + beta * c[q];
}

template <typename T>
inline void prefetch(const T* p) {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
#endif
}

// v (a float or double vector), kept in a register from here on. With two or three rows
// GCC folded each panel load into every FMA that used it, loading the panel once per row:
// those ran at half the 4-row kernel's rate (one core, session 20: 55 -> 89 and 57 -> 107
// GFLOP/s). thin_gemm.cpp's dots use it too.
template <typename V>
inline V in_register(V v) {
#if defined(__GNUC__) && (defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2))
  // The compiler must assume x changed in the asm: it keeps x, and reloads nothing.
  auto pinned = [](auto x) {
    asm("" : "+v"(x));
    return V(x);
  };
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<typename V::value_type, float>) return pinned(__m512(v));
  else return pinned(__m512d(v));
#else
  if constexpr (std::is_same_v<typename V::value_type, float>) return pinned(__m256(v));
  else return pinned(__m256d(v));
#endif
#else
  return v;
#endif
}

// Rows [0, R) of C for k rows of one panel, from R pairs of running sums. The sums are
// named variables, not an array: with an array GCC stored every one to the stack on each
// k step (measured 3x slower). With one or two rows, the pairs take alternate k steps
// (four independent FMA chains per vector hide the FMA latency) and are added at the end.
// With 3+ rows, `next` (if not null) is the panel slice the caller runs next, next_k rows
// deep: one cache line of it is fetched per k step (a whole k row with AVX2, half of one
// with AVX-512), so it comes from L2/L3 while this slice computes.
template <int R, ALayout Layout>
void rows(int64_t k, const float* A, int64_t lda, const float* panel, int64_t cols, float beta,
          float* C, int64_t ldc, const float* next, int64_t next_k) {
  static_assert(R >= 1 && R <= kRowBlock);
  Vec l0(0.0f), h0(0.0f), l1(0.0f), h1(0.0f), l2(0.0f), h2(0.0f), l3(0.0f), h3(0.0f),
      l4(0.0f), h4(0.0f), l5(0.0f), h5(0.0f), l6(0.0f), h6(0.0f), l7(0.0f), h7(0.0f);
  auto a = [&](int r, int64_t q) {
    if constexpr (Layout == ALayout::kPacked) return A[q * kRowBlock + r];
    else return A[r * lda + q];
  };
  auto fma = [&](Vec& lo, Vec& hi, float s, const Vec& b_lo, const Vec& b_hi) {
    const Vec av(s);
    lo = at::vec::fmadd(av, b_lo, lo);
    hi = at::vec::fmadd(av, b_hi, hi);
  };
  // (One row uses each panel vector once: there a load folded into its FMA is best.)
  auto load = [](const float* q) {
    if constexpr (R == 1) return Vec::loadu(q);
    else return in_register(Vec::loadu(q));
  };
  auto lo_at = [&](int64_t p) { return load(panel + p * kPanel); };
  auto hi_at = [&](int64_t p) { return load(panel + p * kPanel + kL); };
  int64_t p = 0;
  if constexpr (R == 1) {
    for (; p + 4 <= k; p += 4) {
      fma(l0, h0, a(0, p), lo_at(p), hi_at(p));
      fma(l1, h1, a(0, p + 1), lo_at(p + 1), hi_at(p + 1));
      fma(l2, h2, a(0, p + 2), lo_at(p + 2), hi_at(p + 2));
      fma(l3, h3, a(0, p + 3), lo_at(p + 3), hi_at(p + 3));
    }
  } else if constexpr (R == 2) {
    for (; p + 2 <= k; p += 2) {
      const Vec b0 = lo_at(p), b1 = hi_at(p), b2 = lo_at(p + 1), b3 = hi_at(p + 1);
      fma(l0, h0, a(0, p), b0, b1);
      fma(l1, h1, a(1, p), b0, b1);
      fma(l2, h2, a(0, p + 1), b2, b3);
      fma(l3, h3, a(1, p + 1), b2, b3);
    }
  }
  // One k step for every row (the whole loop at 3+ rows; the tail at one or two).
  auto rows_step = [&](int64_t q) {
    const Vec b0 = lo_at(q), b1 = hi_at(q);
    fma(l0, h0, a(0, q), b0, b1);
    if constexpr (R > 1) fma(l1, h1, a(1, q), b0, b1);
    if constexpr (R > 2) fma(l2, h2, a(2, q), b0, b1);
    if constexpr (R > 3) fma(l3, h3, a(3, q), b0, b1);
    if constexpr (R > 4) fma(l4, h4, a(4, q), b0, b1);
    if constexpr (R > 5) fma(l5, h5, a(5, q), b0, b1);
    if constexpr (R > 6) fma(l6, h6, a(6, q), b0, b1);
    if constexpr (R > 7) fma(l7, h7, a(7, q), b0, b1);
  };
  if constexpr (R > 2) {
    const int64_t fetched = next != nullptr ? std::min(k, next_k) : 0;
    for (; p < fetched; ++p) {
      // A k row of a panel is two cache lines with AVX-512: fetch both (session 21, a
      // 16 MB W_hh from L3, 2 threads x 32 rows: 179-187 -> 188-191 GFLOP/s).
      prefetch(next + p * kPanel);
      if constexpr (kPanel * sizeof(float) > 64) prefetch(next + p * kPanel + kPanel / 2);
      rows_step(p);
    }
  }
  for (; p < k; ++p) rows_step(p);
  if constexpr (R == 1) {
    store_row(C, (l0 + l1) + (l2 + l3), (h0 + h1) + (h2 + h3), cols, beta);
  } else if constexpr (R == 2) {
    store_row(C, l0 + l2, h0 + h2, cols, beta);
    store_row(C + ldc, l1 + l3, h1 + h3, cols, beta);
  } else {
    store_row(C, l0, h0, cols, beta);
    store_row(C + ldc, l1, h1, cols, beta);
    store_row(C + 2 * ldc, l2, h2, cols, beta);
    if constexpr (R > 3) store_row(C + 3 * ldc, l3, h3, cols, beta);
    if constexpr (R > 4) store_row(C + 4 * ldc, l4, h4, cols, beta);
    if constexpr (R > 5) store_row(C + 5 * ldc, l5, h5, cols, beta);
    if constexpr (R > 6) store_row(C + 6 * ldc, l6, h6, cols, beta);
    if constexpr (R > 7) store_row(C + 7 * ldc, l7, h7, cols, beta);
  }
}

using RowsFn = void (*)(int64_t, const float*, int64_t, const float*, int64_t, float, float*,
                        int64_t, const float*, int64_t);

template <ALayout Layout, std::size_t... Rm1>
constexpr std::array<RowsFn, kRowBlock + 1> kernel_table(std::index_sequence<Rm1...>) {
  return {nullptr, &rows<static_cast<int>(Rm1) + 1, Layout>...};
}

// rows<R, Layout> by R at run time: kernels<Layout>[R] for R = 1..kRowBlock.
template <ALayout Layout>
inline constexpr std::array<RowsFn, kRowBlock + 1> kernels =
    kernel_table<Layout>(std::make_index_sequence<kRowBlock>());

}  // namespace fused_rnn::cpu::panel
