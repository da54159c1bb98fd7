// Products of a few rows by a weight matrix in torch's layout, read as it is:
//   C[m, n] = A[m, k] W[n, k]^T + beta * C,  row-major, m small (a batch of a few rows).
// A BLAS sgemm/dgemm first copies W into its own blocked layout, which for a few rows
// costs more than the product: a streaming call (one step per call, batch 4, H = 128)
// spent ~30 us of its ~60 in MKL's copy. Here each row of W is read once per block of up
// to 4 rows of A and dotted with them, SIMD along k. The time loops' products over many
// steps do not come here: they pack W once (blas.h's PackedB) and reuse it.
#pragma once

#include <cstdint>

namespace fused_rnn::cpu {

// Whether blas.h's gemm() hands this product to thin_gemm: A row-major, B = W^T, at most
// kThinRows rows, and the environment variable FUSED_RNN_THIN_GEMM (read per call) is not
// "0" (the switch exists to measure against the BLAS).
inline constexpr int64_t kThinRows = 8;
bool thin_gemm_suits(bool trans_a, bool trans_b, int64_t m);

// C = A W^T + beta * C; C is not read when beta == 0. k >= 0; lda >= k, ldw >= k,
// ldc >= n. Parallel over rows of W when large enough (inline inside a parallel region).
template <typename T>
void thin_gemm(int64_t m, int64_t n, int64_t k, const T* A, int64_t lda, const T* W,
               int64_t ldw, T beta, T* C, int64_t ldc);

}  // namespace fused_rnn::cpu
