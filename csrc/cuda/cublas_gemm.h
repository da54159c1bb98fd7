// Row-major GEMM on raw device pointers through torch's cuBLAS handle, on torch's
// current stream:  C[m, n] = op(A) op(B) (+ C when accumulate),  op(X) = X^T if trans_X.
//
// A and B have dtype ab; C has dtype c, which is ab or, for float16/bfloat16 inputs,
// float32 (the running state gradients stay in float32). Accumulation is float32 for
// float16/bfloat16/float32 (TF32 when torch.backends.cuda.matmul.allow_tf32 is set) and
// float64 for float64.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace fused_rnn::cuda {

void gemm(const char* op, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
          const void* A, int64_t lda, const void* B, int64_t ldb, bool accumulate, void* C,
          int64_t ldc, at::ScalarType ab, at::ScalarType c);

}  // namespace fused_rnn::cuda
