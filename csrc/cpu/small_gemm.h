// The few-row case of a time loop's per-step product h W^T (batch <= 8 rows):
//   C[m, n] = sum_p A[m, p] W[n, p] + beta * C,  row-major, m <= kSmallGemmMaxRows.
// BLAS sgemm at m = 2..8 re-packs W on every call; here each row of W is streamed once,
// contiguously, and dotted with all m rows of A (which stay in L1). See NOTES.md.
#pragma once

#include <cstdint>

namespace fused_rnn::cpu {

constexpr int64_t kSmallGemmMaxRows = 8;

// float32 only (float64 stays on dgemm). Parallel over rows of W when large enough.
void small_gemm_nt(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda,
                   const float* W, int64_t ldw, float beta, float* C, int64_t ldc);

}  // namespace fused_rnn::cpu
