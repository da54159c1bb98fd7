#include "blocked_gemm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "blas.h"
#include "panel_gemm.h"
#include "panel_kernel.h"
#include "work_memory.h"

namespace fused_rnn::cpu {

using namespace panel;

namespace {

// Rows of C per chunk (a multiple of the row block): with transposed A, the packed slice
// of the chunk's op(A) is 192 x 256 x 4 B = 192 KB with AVX2 (256 x 128 x 4 B with
// AVX-512), in L2 while the panels pass over it.
constexpr int64_t kChunkRows = 32 * kRowBlock;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Rows [i0, i0 + rows) of op(A), k rows [p0, p0 + d), in blocks of kRowBlock rows: block r
// (its first row) at out + r * d, element (row r + j, step q) at [q * kRowBlock + j]. A last
// block of fewer rows leaves the other slots unwritten (the kernel never reads them).
void pack_a(bool trans_a, int64_t i0, int64_t rows, int64_t p0, int64_t d, const float* A,
            int64_t lda, float* out) {
  if (trans_a) {  // op(A)[i, q] = A[q, i]: read A's rows whole, R values per block
    for (int64_t q = 0; q < d; ++q) {
      const float* src = A + (p0 + q) * lda + i0;
      int64_t r = 0;
      for (; r + kRowBlock <= rows; r += kRowBlock)
        std::memcpy(out + r * d + q * kRowBlock, src + r, kRowBlock * sizeof(float));
      if (r < rows) std::memcpy(out + r * d + q * kRowBlock, src + r, (rows - r) * sizeof(float));
    }
    return;
  }
  for (int64_t r = 0; r < rows; r += kRowBlock) {
    const int64_t R = std::min<int64_t>(kRowBlock, rows - r);
    float* blk = out + r * d;
    for (int64_t j = 0; j < R; ++j) {
      const float* src = A + (i0 + r + j) * lda + p0;
      for (int64_t q = 0; q < d; ++q) blk[q * kRowBlock + j] = src[q];
    }
  }
}

enum class Mode { kOff, kAuto, kForce };

Mode mode() {
  const char* env = std::getenv("FUSED_RNN_BLOCKED_GEMM");
  if (env == nullptr) return Mode::kAuto;
  if (std::strcmp(env, "0") == 0) return Mode::kOff;
  if (std::strcmp(env, "force") == 0) return Mode::kForce;
  return Mode::kAuto;
}

}  // namespace

bool blocked_gemm_preferred() {
#if defined(__x86_64__) || defined(_M_X64)
  return !intel_cpu();
#else
  return false;
#endif
}

bool blocked_gemm_suits(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k) {
  const Mode how = mode();
  if (how != Mode::kAuto) return how == Mode::kForce;
  if (!blocked_gemm_preferred()) return false;
  // Where it measured faster than MKL's sgemm (benchmarks/NOTES.md, session 5; 2 threads):
  // A row-major (the input projection, 1.5-1.75x with B = W^T; dx, 1.04-1.36x from
  // n = 256) once there are enough rows to pay for packing op(B); A transposed (the weight
  // gradients, summed over all steps) only for large outputs (1.07-1.30x from 2048 x 512;
  // 0.8-0.95x at 1024 x 256 and below, where MKL's own packing of A^T does better). With
  // AVX-512 (an AMD Zen 4, session 20) from 128K outputs: one product 1.06-1.12x at
  // 1024 x 256 x 100-1600, 0.96x at 512 x 128 x 800; LSTM training T = 100 H = 256 B = 1 /
  // 8 / 16 / 32 1.58 / 1.07 / 1.00 / 1.22x of torch.nn -> 1.65 / 1.10 / 1.03 / 1.23x. Session
  // 21, the same CPU: from 64K outputs and, A row-major, from n = 128 (one product: dx at
  // n = 128 1.04-1.50x, dW 512 x 128 1.08-1.12x but 512 x 160 0.94x; LSTM training H = 128,
  // T = 25 B = 32 / 64 / 128 1.07 / 1.01 / 1.01x of torch.nn -> 1.14 / 1.04 / 1.06x, T = 100
  // B = 16 1.10 -> 1.24x).
#if defined(CPU_CAPABILITY_AVX512)
  constexpr int64_t kMinTransposedOutputs = int64_t(1) << 16, kMinColumns = 128;
#else
  constexpr int64_t kMinTransposedOutputs = int64_t(1) << 20, kMinColumns = 256;
#endif
  if (m * n * k < (int64_t(1) << 21) || k < 16) return false;
  if (trans_a) return m * n >= kMinTransposedOutputs;
  return m >= 256 && (trans_b ? n >= kPanel : n >= kMinColumns);
}

void blocked_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* A,
                  int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  TORCH_INTERNAL_ASSERT(k >= 1, "blocked_gemm: k = ", k);
  if (m == 0 || n == 0) return;
  const int64_t n_panels = ceil_div(n, kPanel);
  const int64_t depth = slice_depth(k);
  // How many k rows of a chunk of op(A) are packed at once. Row-major A: all of them,
  // so each panel runs every slice over the chunk while its C tile is hot. Transposed A:
  // one slice at a time, the packed slice in L2, C of the chunk read once per slice
  // (measured, 2 threads, GFLOP/s: 1024 x 256 x 1600 63 -> 85, 2048 x 512 x 3200
  // 90 -> 95; the same order cost the projection, k = 512, 118 -> 76).
  const int64_t group = trans_a ? depth : k;
  // Chunks of rows: a multiple of the thread count (equal shares), each a multiple of
  // kRowBlock and at most kChunkRows.
  const int64_t threads = at::in_parallel_region() ? 1 : std::max(1, at::get_num_threads());
  const int64_t chunks = threads * ceil_div(ceil_div(m, threads), kChunkRows);
  const int64_t chunk_rows = ceil_div(ceil_div(m, chunks), kRowBlock) * kRowBlock;
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  // All of op(B) in panels (panel q at q * kPanel * k, as panel_pack lays them out).
  at::Tensor b_buf = work_empty({n_panels * kPanel * k}, opts);
  at::Tensor a_buf = work_empty({threads, chunk_rows * group}, opts);
  float* bp = b_buf.data_ptr<float>();
  float* ap = a_buf.data_ptr<float>();
  at::parallel_for(0, n_panels, 1, [&](int64_t q0, int64_t q1) {
    const int64_t c0 = q0 * kPanel, cols = std::min(n, q1 * kPanel) - c0;
    panel_pack(trans_b, k, cols, B + (trans_b ? c0 * ldb : c0), ldb, bp + q0 * kPanel * k);
  });
  // Share s of the chunks runs on one thread with its own A buffer.
  at::parallel_for(0, threads, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      float* a_pack = ap + s * chunk_rows * group;
      const int64_t per = chunks / threads;
      for (int64_t c = s * per; c < (s + 1) * per; ++c) {
        const int64_t i0 = c * chunk_rows, rows = std::min(chunk_rows, m - i0);
        if (rows <= 0) break;
        for (int64_t g0 = 0; g0 < k; g0 += group) {
          const int64_t gk = std::min(group, k - g0);
          pack_a(trans_a, i0, rows, g0, gk, A, lda, a_pack);
          for (int64_t q = 0; q < n_panels; ++q) {
            const float* panel = bp + q * kPanel * k;
            const int64_t col = q * kPanel, cols = std::min(kPanel, n - col);
            for (int64_t p0 = g0; p0 < g0 + gk; p0 += depth) {
              const int64_t d = std::min(depth, g0 + gk - p0);
              const NextSlice next =
                  next_slice(panel, q + 1 < n_panels ? panel + kPanel * k : nullptr, p0, d,
                             g0, g0 + gk, depth);
              for (int64_t r = 0; r < rows; r += kRowBlock) {
                const int64_t R = std::min<int64_t>(kRowBlock, rows - r);
                float* c_blk = C + (i0 + r) * ldc + col;
                // Groups after the first add to C, cold by then: fetch the next block's.
                for (int64_t j = R; g0 > 0 && j < std::min(rows - r, R + kRowBlock); ++j)
                  prefetch(c_blk + j * ldc);
                kernels<ALayout::kPacked>[R](d, a_pack + r * gk + (p0 - g0) * kRowBlock, 0,
                                             panel + p0 * kPanel, cols, p0 == 0 ? beta : 1.0f,
                                             c_blk, ldc, r == 0 && R == kRowBlock ? next.p : nullptr,
                                             next.k);
              }
            }
          }
        }
      }
    }
  });
}

}  // namespace fused_rnn::cpu
