#include "cublas_gemm.h"

#include <ATen/Context.h>
#include <ATen/cuda/CUDAContext.h>
#include <cublas_v2.h>

#include <climits>

#include "launch.h"

namespace fused_rnn::cuda {
namespace {

cudaDataType_t cuda_type(const char* op, at::ScalarType t) {
  switch (t) {
    case at::kFloat: return CUDA_R_32F;
    case at::kDouble: return CUDA_R_64F;
    case at::kHalf: return CUDA_R_16F;
    case at::kBFloat16: return CUDA_R_16BF;
    default: TORCH_CHECK(false, op, ": no cuBLAS GEMM for dtype ", t);
  }
  return CUDA_R_32F;
}

int as_int(const char* op, int64_t v, const char* what) {
  TORCH_CHECK(v >= 0 && v <= INT_MAX, op, ": GEMM ", what, " = ", v,
              " exceeds cuBLAS's 32-bit limit");
  return static_cast<int>(v);
}

}  // namespace

void gemm(const char* op, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
          const void* A, int64_t lda, const void* B, int64_t ldb, bool accumulate, void* C,
          int64_t ldc, at::ScalarType ab, at::ScalarType c) {
  if (m == 0 || n == 0) return;
  const size_t c_size = c10::elementSize(c);
  if (k == 0) {  // an empty sum: C is unchanged, or zero when overwritten
    if (!accumulate) {
      FR_CUDA_CHECK(op, cudaMemset2DAsync(C, ldc * c_size, 0, n * c_size, m,
                                          at::cuda::getCurrentCUDAStream()));
    }
    return;
  }
  TORCH_CHECK(c == ab || (c == at::kFloat && (ab == at::kHalf || ab == at::kBFloat16)), op,
              ": GEMM output dtype ", c, " does not go with inputs ", ab);
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, and a row-major
  // matrix read column-major is its transpose: so swap the operands, keep the flags.
  const cublasOperation_t opa = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  if (ab == at::kDouble) {
    compute = CUBLAS_COMPUTE_64F;
  } else if (ab == at::kFloat && at::globalContext().allowTF32CuBLAS()) {
    compute = CUBLAS_COMPUTE_32F_FAST_TF32;
  }
  const double alpha_d = 1.0, beta_d = accumulate ? 1.0 : 0.0;
  const float alpha_f = 1.0f, beta_f = accumulate ? 1.0f : 0.0f;
  const void* alpha = ab == at::kDouble ? static_cast<const void*>(&alpha_d) : &alpha_f;
  const void* beta = ab == at::kDouble ? static_cast<const void*>(&beta_d) : &beta_f;
  // torch's handle for this device, already bound to the current stream and workspace.
  cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();
  const cublasStatus_t st = cublasGemmEx(
      handle, opb, opa, as_int(op, n, "n"), as_int(op, m, "m"), as_int(op, k, "k"), alpha, B,
      cuda_type(op, ab), as_int(op, ldb, "ldb"), A, cuda_type(op, ab), as_int(op, lda, "lda"),
      beta, C, cuda_type(op, c), as_int(op, ldc, "ldc"), compute, CUBLAS_GEMM_DEFAULT);
  TORCH_CHECK(st == CUBLAS_STATUS_SUCCESS, op, ": cublasGemmEx (m=", m, ", n=", n, ", k=", k,
              ", ", ab, " -> ", c, ") failed: ", cublasGetStatusString(st));
}

}  // namespace fused_rnn::cuda
