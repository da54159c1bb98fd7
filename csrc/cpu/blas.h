// Row-major GEMM on raw pointers for the CPU time loops:
//   C[m, n] = alpha * op(A) op(B) + beta * C,  op(X) = X^T when trans_X.
// Calls the BLAS inside libtorch_cpu (MKL on x86_64 wheels) directly, without the
// dispatcher's per-call cost, and falls back to at::mm_out where none is exported.
#pragma once

#include <cstdint>

namespace fused_rnn::cpu {

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// Which BLAS the GEMMs reach ("sgemm_/dgemm_ in libtorch" or "at::mm").
const char* blas_backend();

}  // namespace fused_rnn::cpu
