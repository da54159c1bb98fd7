// Products of a few rows by a matrix read as it is:
//   C[m, n] = A[m, k] op(B) + beta * C,  row-major, op(B) = B^T when trans_b, m small.
// A BLAS sgemm/dgemm first copies B into its own blocked layout, which for a few rows
// costs more than the product: a streaming call (one step per call, batch 4, H = 128)
// spent ~30 us of its ~60 in MKL's copy. Here B is read once per block of up to 4 rows
// of A: with trans_b (B = W, [n, k], torch's weight layout) each row of W is dotted with
// the block's rows, SIMD along k (in float32 on AVX-512 4 rows of W at a time, for up to
// 32 rows of A, where MKL's own kernel for an uncopied W^T was slower still); without
// (B [k, n], as in dgates W) B's rows are combined, SIMD along n. The time loops'
// products over many steps do not come here: they pack B once (blas.h's PackedB) and
// reuse it.
#pragma once

#include <cstdint>

namespace fused_rnn::cpu {

// Whether the environment variable FUSED_RNN_THIN_GEMM (read per call) is not "0" (the
// switch exists to measure against the BLAS).
bool thin_gemm_enabled();

// Whether blas.h's gemm() hands this product to thin_gemm: A row-major (either op(B)), at
// most thin_rows<T>(trans_b) rows, and enabled. kThinRows rows; with trans_b in float32
// on AVX-512 (whose 4 x 4 dot kernel beats MKL's no-copy kernel there) kThinRowsTransB.
inline constexpr int64_t kThinRows = 8, kThinRowsTransB = 32;
template <typename T>
int64_t thin_rows(bool trans_b);
template <typename T>
bool thin_gemm_suits(bool trans_a, bool trans_b, int64_t m);

// C = A op(B) + beta * C; C is not read when beta == 0. k >= 0; lda >= k, ldc >= n,
// ldb >= k (trans_b) or n. Parallel over columns of C when large enough (inline inside a
// parallel region).
template <typename T>
void thin_gemm(bool trans_b, int64_t m, int64_t n, int64_t k, const T* A, int64_t lda,
               const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

}  // namespace fused_rnn::cpu
