#include "panel_gemm.h"

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/Exception.h>

#include <algorithm>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace fused_rnn::cpu {
namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kL = Vec::size();
constexpr int64_t kPanel = 2 * kL;  // columns per panel: two vectors
constexpr int kRowBlock = 6;        // rows per pass: 2 x 6 accumulators stay in registers
constexpr int kFewRowBlock = 4;     // rows per pass when m <= 8 (4 + 4 beats 6 + 2)
constexpr int64_t kDepth = 4096 / kPanel;  // k rows per pass: a 16 KB slice stays in L1

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

inline void prefetch(const float* p) {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
#endif
}

// Rows [0, R) of C for k rows of one panel, from R pairs of running sums. The sums are
// named variables, not an array: with an array GCC stored every one to the stack on each
// k step (measured 3x slower). With one or two rows, the pairs take alternate k steps
// (four independent FMA chains per vector hide the FMA latency) and are added at the end.
// With 3+ rows, `next` (if not null) is the panel slice the caller runs next, next_k rows
// deep: one line of it is fetched per k step, so it comes from L2/L3 while this slice
// computes.
template <int R>
void panel_rows(int64_t k, const float* A, int64_t lda, const float* panel, int64_t cols,
                float beta, float* C, int64_t ldc, const float* next, int64_t next_k) {
  static_assert(R >= 1 && R <= kRowBlock);
  Vec l0(0.0f), h0(0.0f), l1(0.0f), h1(0.0f), l2(0.0f), h2(0.0f), l3(0.0f), h3(0.0f),
      l4(0.0f), h4(0.0f), l5(0.0f), h5(0.0f);
  auto fma = [&](Vec& lo, Vec& hi, float a, const Vec& b_lo, const Vec& b_hi) {
    const Vec av(a);
    lo = at::vec::fmadd(av, b_lo, lo);
    hi = at::vec::fmadd(av, b_hi, hi);
  };
  auto lo_at = [&](int64_t p) { return Vec::loadu(panel + p * kPanel); };
  auto hi_at = [&](int64_t p) { return Vec::loadu(panel + p * kPanel + kL); };
  int64_t p = 0;
  if constexpr (R == 1) {
    for (; p + 4 <= k; p += 4) {
      fma(l0, h0, A[p], lo_at(p), hi_at(p));
      fma(l1, h1, A[p + 1], lo_at(p + 1), hi_at(p + 1));
      fma(l2, h2, A[p + 2], lo_at(p + 2), hi_at(p + 2));
      fma(l3, h3, A[p + 3], lo_at(p + 3), hi_at(p + 3));
    }
  } else if constexpr (R == 2) {
    for (; p + 2 <= k; p += 2) {
      const Vec b0 = lo_at(p), b1 = hi_at(p), b2 = lo_at(p + 1), b3 = hi_at(p + 1);
      fma(l0, h0, A[p], b0, b1);
      fma(l1, h1, A[lda + p], b0, b1);
      fma(l2, h2, A[p + 1], b2, b3);
      fma(l3, h3, A[lda + p + 1], b2, b3);
    }
  }
  // One k step for every row (the whole loop at 3+ rows; the tail at one or two).
  auto rows_step = [&](int64_t q) {
    const Vec b0 = lo_at(q), b1 = hi_at(q);
    fma(l0, h0, A[q], b0, b1);
    if constexpr (R > 1) fma(l1, h1, A[lda + q], b0, b1);
    if constexpr (R > 2) fma(l2, h2, A[2 * lda + q], b0, b1);
    if constexpr (R > 3) fma(l3, h3, A[3 * lda + q], b0, b1);
    if constexpr (R > 4) fma(l4, h4, A[4 * lda + q], b0, b1);
    if constexpr (R > 5) fma(l5, h5, A[5 * lda + q], b0, b1);
  };
  if constexpr (R > 2) {
    const int64_t fetched = next != nullptr ? std::min(k, next_k) : 0;
    for (; p < fetched; ++p) {
      prefetch(next + p * kPanel);
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
  }
}

using PanelFn = void (*)(int64_t, const float*, int64_t, const float*, int64_t, float, float*,
                         int64_t, const float*, int64_t);
constexpr PanelFn kPanelRows[] = {nullptr,        &panel_rows<1>, &panel_rows<2>, &panel_rows<3>,
                                  &panel_rows<4>, &panel_rows<5>, &panel_rows<6>};

}  // namespace

bool panel_gemm_suits(int64_t m) { return m <= 512; }

int64_t panel_buffer_size(int64_t k, int64_t n) { return (n + kPanel - 1) / kPanel * kPanel * k; }

void panel_pack(bool trans_b, int64_t k, int64_t n, const float* B, int64_t ldb, float* panels) {
  const int64_t n_panels = (n + kPanel - 1) / kPanel;
  for (int64_t q = 0; q < n_panels; ++q) {
    float* panel = panels + q * kPanel * k;
    for (int64_t p = 0; p < k; ++p) {
      for (int64_t c = 0; c < kPanel; ++c) {
        const int64_t col = q * kPanel + c;
        panel[p * kPanel + c] =
            col >= n ? 0.0f : (trans_b ? B[col * ldb + p] : B[p * ldb + col]);
      }
    }
  }
}

void panel_gemm(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda,
                const float* panels, float beta, float* C, int64_t ldc) {
  if (m == 0 || n == 0) return;
  const int64_t n_panels = (n + kPanel - 1) / kPanel;
  // A thread gets at least ~64k multiply-adds: below that waking it costs more.
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, m * k * kPanel));
  // k in slices of at most kDepth rows (equal sizes); each slice of a panel is used by
  // every block of rows before the next, so it stays in L1. Slices after the first add
  // to C (beta = 1). k = 0 still takes one (empty) slice: C = beta * C.
  const int64_t slices = std::max<int64_t>(1, (k + kDepth - 1) / kDepth);
  const int64_t depth = std::max<int64_t>(1, (k + slices - 1) / slices);
  const int64_t block = m <= 8 ? kFewRowBlock : kRowBlock;
  at::parallel_for(0, n_panels, grain, [&](int64_t first, int64_t last) {
    for (int64_t q = first; q < last; ++q) {
      const int64_t col = q * kPanel, cols = std::min(kPanel, n - col);
      const float* panel = panels + q * kPanel * k;
      for (int64_t p0 = 0; p0 == 0 || p0 < k; p0 += depth) {
        const int64_t d = std::min(depth, k - p0);
        // The first block of 6 rows fetches the slice that comes next (measured: +5-9%
        // at 12-64 rows; slower when the first block has only 4 rows).
        const bool more = p0 + d < k;  // else the next panel's first slice, if any
        const float* next = more ? panel + (p0 + d) * kPanel
                                 : (q + 1 < last ? panel + kPanel * k : nullptr);
        const int64_t next_k = more ? std::min(depth, k - p0 - d) : std::min(depth, k);
        for (int64_t r = 0; r < m; r += block) {
          const int64_t rows = std::min<int64_t>(block, m - r);
          kPanelRows[rows](d, A + r * lda + p0, lda, panel + p0 * kPanel, cols,
                           p0 == 0 ? beta : 1.0f, C + r * ldc + col, ldc,
                           r == 0 && rows == kRowBlock ? next : nullptr, next_k);
        }
      }
    }
  });
}

}  // namespace fused_rnn::cpu
