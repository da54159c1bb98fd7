#include "panel_gemm.h"

#include "panel_kernel.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>

namespace fused_rnn::cpu {

using namespace panel;

bool panel_gemm_suits(int64_t m) { return m <= 512; }

int64_t panel_buffer_size(int64_t k, int64_t n) { return (n + kPanel - 1) / kPanel * kPanel * k; }

namespace {
// dst[i * ld_dst + j] = src[j * ld_src + i] for i, j < 16, in registers.
inline void transpose16x16(const float* src, int64_t ld_src, float* dst, int64_t ld_dst) {
#if defined(CPU_CAPABILITY_AVX512)
  // ATen's transpose_mxn (sizes taken at run time) zeroed and spilled a 1 KB array of
  // rows per block: the pack ran at ~5 GB/s inside the layer calls, 8-10% of a
  // T = 64, B = 8, H = 512 LSTM inference (session 20). Here: rows interleaved by
  // pairs of floats, then of doubles (lanes of 128 bits now hold 4 x 4 blocks), then
  // the 128-bit lanes gathered in two shuffles.
  __m512 r[16], t[16];
  for (int j = 0; j < 16; ++j) r[j] = _mm512_loadu_ps(src + j * ld_src);
  for (int j = 0; j < 16; j += 2) {
    t[j] = _mm512_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm512_unpackhi_ps(r[j], r[j + 1]);
  }
  auto pd = [](__m512 v) { return _mm512_castps_pd(v); };
  for (int g = 0; g < 16; g += 4) {  // rows g..g+3: r[g + c] lane L = column 4L + c
    r[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[g]), pd(t[g + 2])));
    r[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[g]), pd(t[g + 2])));
    r[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[g + 1]), pd(t[g + 3])));
    r[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[g + 1]), pd(t[g + 3])));
  }
  for (int c = 0; c < 4; ++c) {
    const __m512 w0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);   // lanes 0, 2
    const __m512 w1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);   // lanes 1, 3
    const __m512 w2 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
    const __m512 w3 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
    _mm512_storeu_ps(dst + c * ld_dst, _mm512_shuffle_f32x4(w0, w2, 0x88));
    _mm512_storeu_ps(dst + (4 + c) * ld_dst, _mm512_shuffle_f32x4(w1, w3, 0x88));
    _mm512_storeu_ps(dst + (8 + c) * ld_dst, _mm512_shuffle_f32x4(w0, w2, 0xdd));
    _mm512_storeu_ps(dst + (12 + c) * ld_dst, _mm512_shuffle_f32x4(w1, w3, 0xdd));
  }
#else
  at::vec::transpose_mxn<float, 16, 16>(src, ld_src, dst, ld_dst);
#endif
}

// One panel of op(B) = B^T, B's rows [c0, c0 + cols) (cols <= kPanel): 16 x 16 blocks
// transposed in registers (one float at a time was ~10 GB/s, and a per-call pack of W_hh
// dominated short sequences), the last rows of k and the last columns one float at a
// time, columns past cols zero.
void pack_transposed_panel(const float* B, int64_t ldb, int64_t k, int64_t cols, float* panel) {
  constexpr int64_t kT = 16;
  static_assert(kPanel % kT == 0, "a panel is a whole number of 16-column blocks");
  const int64_t k_blocks = k / kT * kT, c_blocks = cols / kT * kT;
  for (int64_t p0 = 0; p0 < k_blocks; p0 += kT)
    for (int64_t c = 0; c < c_blocks; c += kT)
      transpose16x16(B + c * ldb + p0, ldb, panel + p0 * kPanel + c, kPanel);
  for (int64_t c = 0; c < cols; ++c) {
    const float* src = B + c * ldb;
    for (int64_t p = c < c_blocks ? k_blocks : 0; p < k; ++p) panel[p * kPanel + c] = src[p];
  }
  if (cols < kPanel)
    for (int64_t p = 0; p < k; ++p)
      std::fill(panel + p * kPanel + cols, panel + (p + 1) * kPanel, 0.0f);
}
}  // namespace

void panel_pack(bool trans_b, int64_t k, int64_t n, const float* B, int64_t ldb, float* panels) {
  const int64_t n_panels = (n + kPanel - 1) / kPanel;
  // Parallel over panels (inline inside a parallel region, as blocked_gemm calls it): a
  // thread gets at least ~64 KB of panels.
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, kPanel * k));
  at::parallel_for(0, n_panels, grain, [&](int64_t first, int64_t last) {
    for (int64_t q = first; q < last; ++q) {
      float* panel = panels + q * kPanel * k;
      const int64_t c0 = q * kPanel, cols = std::min(kPanel, n - c0);
      if (trans_b) {
        pack_transposed_panel(B + c0 * ldb, ldb, k, cols, panel);
        continue;
      }
      for (int64_t p = 0; p < k; ++p) {
        std::copy(B + p * ldb + c0, B + p * ldb + c0 + cols, panel + p * kPanel);
        std::fill(panel + p * kPanel + cols, panel + (p + 1) * kPanel, 0.0f);
      }
    }
  });
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
        // A first block of 6+ rows fetches the slice that comes next (measured: +5-9%
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
                                        r == 0 && rows >= 6 ? next.p : nullptr, next.k);
        }
      }
    }
  });
}

}  // namespace fused_rnn::cpu
