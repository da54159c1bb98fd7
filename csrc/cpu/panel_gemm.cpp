#include "panel_gemm.h"

#include "panel_kernel.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>

namespace fused_rnn::cpu {

using namespace panel;

bool panel_gemm_suits(int64_t m) { return m <= 512; }

int64_t panel_buffer_size(int64_t k, int64_t n) { return (n + kPanel - 1) / kPanel * kPanel * k; }

void panel_pack(bool trans_b, int64_t k, int64_t n, const float* B, int64_t ldb, float* panels) {
  const int64_t n_panels = (n + kPanel - 1) / kPanel;
  for (int64_t q = 0; q < n_panels; ++q) {
    float* panel = panels + q * kPanel * k;
    const int64_t c0 = q * kPanel, cols = std::min(kPanel, n - c0);
    if (!trans_b) {
      for (int64_t p = 0; p < k; ++p) {
        std::copy(B + p * ldb + c0, B + p * ldb + c0 + cols, panel + p * kPanel);
        std::fill(panel + p * kPanel + cols, panel + (p + 1) * kPanel, 0.0f);
      }
      continue;
    }
    for (int64_t c = 0; c < kPanel; ++c) {  // op(B)[p, c] = B[c, p]: read B's rows whole
      const float* src = B + (c0 + c) * ldb;
      for (int64_t p = 0; p < k; ++p) panel[p * kPanel + c] = c < cols ? src[p] : 0.0f;
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
  const int64_t depth = slice_depth(k);
  const int64_t block = m <= 8 ? kFewRowBlock : kRowBlock;
  at::parallel_for(0, n_panels, grain, [&](int64_t first, int64_t last) {
    for (int64_t q = first; q < last; ++q) {
      const int64_t col = q * kPanel, cols = std::min(kPanel, n - col);
      const float* panel = panels + q * kPanel * k;
      for (int64_t p0 = 0; p0 == 0 || p0 < k; p0 += depth) {
        const int64_t d = std::min(depth, k - p0);
        // The first block of 6 rows fetches the slice that comes next (measured: +5-9%
        // at 12-64 rows; slower when the first block has only 4 rows).
        const NextSlice next =
            next_slice(panel, q + 1 < last ? panel + kPanel * k : nullptr, p0, d, 0, k, depth);
        for (int64_t r = 0; r < m; r += block) {
          const int64_t rows = std::min<int64_t>(block, m - r);
          // C is read at the end of the block's k loop (beta != 0: a time loop adds to the
          // input projection, cold by then): fetch it now.
          if (p0 == 0 && beta != 0.0f)
            for (int64_t j = 0; j < rows; ++j) prefetch(C + (r + j) * ldc + col);
          kernels<ALayout::kRows>[rows](d, A + r * lda + p0, lda, panel + p0 * kPanel, cols,
                                        p0 == 0 ? beta : 1.0f, C + r * ldc + col, ldc,
                                        r == 0 && rows == kRowBlock ? next.p : nullptr, next.k);
        }
      }
    }
  });
}

}  // namespace fused_rnn::cpu
