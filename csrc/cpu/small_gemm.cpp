#include "small_gemm.h"

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>

namespace fused_rnn::cpu {
namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kL = Vec::size();

inline void put(float* c, const Vec& acc, float beta) {
  if (beta == 0.0f) acc.store(c);
  else at::vec::fmadd(Vec(beta), Vec::loadu(c), acc).store(c);
}

// Columns [lo, hi) for M rows: NV vectors of columns per block, M x NV accumulators
// held in registers across the whole k loop.
template <int M, int NV>
void block_cols(int64_t lo, int64_t hi, int64_t k, const float* A, int64_t lda,
                const float* Bk, int64_t ldb, float beta, float* C, int64_t ldc) {
  int64_t j = lo;
  for (; j + NV * kL <= hi; j += NV * kL) {
    Vec acc[M][NV];
    for (int r = 0; r < M; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = Vec(0.0f);
    for (int64_t p = 0; p < k; ++p) {
      Vec b[NV];
      for (int v = 0; v < NV; ++v) b[v] = Vec::loadu(Bk + p * ldb + j + v * kL);
      for (int r = 0; r < M; ++r) {
        const Vec a(A[r * lda + p]);
        for (int v = 0; v < NV; ++v) acc[r][v] = at::vec::fmadd(a, b[v], acc[r][v]);
      }
    }
    for (int r = 0; r < M; ++r)
      for (int v = 0; v < NV; ++v) put(C + r * ldc + j + v * kL, acc[r][v], beta);
  }
  for (; j < hi; ++j) {  // columns left over from the vector blocks
    for (int r = 0; r < M; ++r) {
      float s = 0.0f;
      for (int64_t p = 0; p < k; ++p) s += A[r * lda + p] * Bk[p * ldb + j];
      float* c = C + r * ldc + j;
      *c = beta == 0.0f ? s : s + beta * *c;
    }
  }
}

// 16 vector registers on AVX2: M x NV accumulators plus NV loads plus one broadcast.
template <int M>
void cols(int64_t lo, int64_t hi, int64_t k, const float* A, int64_t lda, const float* Bk,
          int64_t ldb, float beta, float* C, int64_t ldc) {
  constexpr int NV = M <= 3 ? 4 : (M <= 4 ? 3 : (M <= 6 ? 2 : 1));
  block_cols<M, NV>(lo, hi, k, A, lda, Bk, ldb, beta, C, ldc);
}

using ColsFn = void (*)(int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t,
                        float, float*, int64_t);
constexpr ColsFn kCols[] = {nullptr, &cols<1>, &cols<2>, &cols<3>, &cols<4>,
                            &cols<5>, &cols<6>, &cols<7>, &cols<8>};

}  // namespace

void small_gemm(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* Bk,
                int64_t ldb, float beta, float* C, int64_t ldc) {
  TORCH_INTERNAL_ASSERT(m >= 0 && m <= kSmallGemmMaxRows, "small_gemm: m = ", m);
  if (m == 0 || n == 0) return;
  const ColsFn fn = kCols[m];
  // Column blocks of 96 (a multiple of every block width above at 8 lanes); a thread
  // gets at least ~64k multiply-adds, below which waking it costs more than it saves.
  constexpr int64_t kBlock = 96;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, m * k * kBlock));
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    fn(b0 * kBlock, std::min(n, b1 * kBlock), k, A, lda, Bk, ldb, beta, C, ldc);
  });
}

}  // namespace fused_rnn::cpu
