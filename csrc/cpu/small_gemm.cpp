#include "small_gemm.h"

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>

namespace fused_rnn::cpu {
namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kL = Vec::size();

inline float hsum(const Vec& v) {
  float t[kL];
  v.store(t);
  float s = 0.0f;
  for (int64_t i = 0; i < kL; ++i) s += t[i];
  return s;
}

// Rows [lo, hi) of W, R at a time (independent FMA chains when M is small).
template <int M, int R>
void dot_rows(int64_t lo, int64_t hi, int64_t k, const float* A, int64_t lda, const float* W,
              int64_t ldw, float beta, float* C, int64_t ldc) {
  int64_t n = lo;
  auto finish = [&](int64_t col, Vec* acc) {
    const float* w = W + col * ldw;
    for (int r = 0; r < M; ++r) {
      float s = hsum(acc[r]);
      for (int64_t p = k - k % kL; p < k; ++p) s += A[r * lda + p] * w[p];
      float* c = C + r * ldc + col;
      *c = beta == 0.0f ? s : s + beta * *c;
    }
  };
  for (; n + R <= hi; n += R) {
    Vec acc[R][M];
    for (int q = 0; q < R; ++q)
      for (int r = 0; r < M; ++r) acc[q][r] = Vec(0.0f);
    for (int64_t p = 0; p + kL <= k; p += kL) {
      for (int q = 0; q < R; ++q) {
        const Vec w = Vec::loadu(W + (n + q) * ldw + p);
        for (int r = 0; r < M; ++r)
          acc[q][r] = at::vec::fmadd(Vec::loadu(A + r * lda + p), w, acc[q][r]);
      }
    }
    for (int q = 0; q < R; ++q) finish(n + q, acc[q]);
  }
  for (; n < hi; ++n) {
    Vec acc[M];
    for (int r = 0; r < M; ++r) acc[r] = Vec(0.0f);
    for (int64_t p = 0; p + kL <= k; p += kL) {
      const Vec w = Vec::loadu(W + n * ldw + p);
      for (int r = 0; r < M; ++r) acc[r] = at::vec::fmadd(Vec::loadu(A + r * lda + p), w, acc[r]);
    }
    finish(n, acc);
  }
}

template <int M>
void rows(int64_t lo, int64_t hi, int64_t k, const float* A, int64_t lda, const float* W,
          int64_t ldw, float beta, float* C, int64_t ldc) {
  dot_rows<M, (M <= 2 ? 4 : (M <= 4 ? 2 : 1))>(lo, hi, k, A, lda, W, ldw, beta, C, ldc);
}

using RowsFn = void (*)(int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t,
                        float, float*, int64_t);
constexpr RowsFn kRows[] = {nullptr, &rows<1>, &rows<2>, &rows<3>, &rows<4>,
                            &rows<5>, &rows<6>, &rows<7>, &rows<8>};

}  // namespace

void small_gemm_nt(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda,
                   const float* W, int64_t ldw, float beta, float* C, int64_t ldc) {
  TORCH_INTERNAL_ASSERT(m >= 0 && m <= kSmallGemmMaxRows, "small_gemm_nt: m = ", m);
  if (m == 0 || n == 0) return;
  // A thread gets at least ~64k multiply-adds: below that waking it costs more.
  const int64_t grain = std::max<int64_t>(16, 65536 / std::max<int64_t>(1, m * k));
  at::parallel_for(0, n, grain, [&](int64_t lo, int64_t hi) {
    kRows[m](lo, hi, k, A, lda, W, ldw, beta, C, ldc);
  });
}

}  // namespace fused_rnn::cpu
