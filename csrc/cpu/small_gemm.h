// The few-row case of a time loop's per-step products (a batch of <= 8 rows):
//   C[m, n] = A[m, k] op(B)[k, n] + beta * C,  row-major, m <= kSmallGemmMaxRows.
// op(B) is packed once per layer call into panels of kSmallPanel columns (for each k
// row, the panel's columns contiguous, zero-padded at the edge). Each step then streams
// the panels in order and keeps the m x kSmallPanel sums in registers: no per-call
// packing (what sgemm spends most of its time on at these sizes) and no horizontal
// sums (what a dot-product form spends it on). See benchmarks/NOTES.md. float32 only.
#pragma once

#include <cstdint>

namespace fused_rnn::cpu {

constexpr int64_t kSmallGemmMaxRows = 8;

// Floats needed for the panels of a k x n op(B).
int64_t small_panels_size(int64_t k, int64_t n);

// op(B) = B^T when trans_b (B is [n, k] with leading dimension ldb), else B ([k, n]).
void small_pack(bool trans_b, int64_t k, int64_t n, const float* B, int64_t ldb,
                float* panels);

// C = A op(B) + beta * C from packed panels; C is not read when beta == 0. Parallel
// over panels when large enough (inline when called inside a parallel region).
void small_gemm_packed(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda,
                       const float* panels, float beta, float* C, int64_t ldc);

}  // namespace fused_rnn::cpu
