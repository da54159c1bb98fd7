// GEMM for the few-row case of a time loop's per-step product (batch <= 8 rows):
//   C[m, n] = A[m, k] Bk[k, n] + beta * C,  all row-major, m <= kSmallGemmMaxRows.
// A BLAS sgemm at m <= 8 re-packs B on every call and runs far below peak (see
// benchmarks/NOTES.md); here each B row is loaded once and multiplied into every row
// of A held in registers, so a step streams the weights once from cache.
#pragma once

#include <cstdint>

namespace fused_rnn::cpu {

constexpr int64_t kSmallGemmMaxRows = 8;

// float32 only (float64 stays on dgemm). Parallel over column blocks when large enough.
void small_gemm(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* Bk,
                int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace fused_rnn::cpu
