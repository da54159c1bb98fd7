#include "blas.h"

#include <ATen/ATen.h>

#include <climits>

// Weak: resolved against libtorch_cpu (which we link) when it exports them, else null.
extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*,
            const float*, const int*, const float*, const int*, const float*, float*,
            const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*,
            const double*, const int*, const double*, const int*, const double*, double*,
            const int*) __attribute__((weak));
}

namespace fused_rnn::cpu {
namespace {

// Fortran BLAS: column-major, every argument by pointer, LP64 ints.
template <typename T>
using fortran_gemm = void (*)(const char*, const char*, const int*, const int*, const int*,
                              const T*, const T*, const int*, const T*, const int*, const T*, T*,
                              const int*);

template <typename T>
fortran_gemm<T> blas() {
  if constexpr (sizeof(T) == 4) return &sgemm_;
  else return &dgemm_;
}

template <typename T>
void gemm_aten(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* A,
               int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  // A row-major [r, c] with leading dimension ld is strides {ld, 1}; its transpose is {1, ld}.
  auto view = [&](const T* p, int64_t rows, int64_t cols, int64_t ld, bool trans) {
    return trans ? at::from_blob(const_cast<T*>(p), {rows, cols}, {1, ld}, opts)
                 : at::from_blob(const_cast<T*>(p), {rows, cols}, {ld, 1}, opts);
  };
  at::Tensor a = view(A, m, k, lda, trans_a);
  at::Tensor b = view(B, k, n, ldb, trans_b);
  at::Tensor c = at::from_blob(C, {m, n}, {ldc, 1}, opts);
  if (beta == T(0)) {
    at::mm_out(c, a, b);
    if (alpha != T(1)) c.mul_(alpha);
  } else {
    c.addmm_(a, b, beta, alpha);
  }
}

}  // namespace

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int64_t r = 0; r < m; ++r)
      for (int64_t q = 0; q < n; ++q) C[r * ldc + q] = beta == T(0) ? T(0) : beta * C[r * ldc + q];
    return;
  }
  // BLAS rejects leading dimensions below the row length even when unused.
  if (lda < (trans_a ? m : k)) lda = trans_a ? m : k;
  if (ldb < (trans_b ? k : n)) ldb = trans_b ? k : n;
  if (ldc < n) ldc = n;
  const auto fn = blas<T>();
  const bool fits = m < INT_MAX && n < INT_MAX && k < INT_MAX && lda < INT_MAX &&
                    ldb < INT_MAX && ldc < INT_MAX;
  if (fn == nullptr || !fits) {
    gemm_aten<T>(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
  const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
  const int LDA = static_cast<int>(ldb), LDB = static_cast<int>(lda), LDC = static_cast<int>(ldc);
  fn(&tb, &ta, &M, &N, &K, &alpha, B, &LDA, A, &LDB, &beta, C, &LDC);
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);

const char* blas_backend() {
  return blas<float>() != nullptr ? "sgemm_/dgemm_ in libtorch" : "at::mm";
}

}  // namespace fused_rnn::cpu
