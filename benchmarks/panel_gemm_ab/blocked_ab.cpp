// blocked_gemm.cpp against MKL's sgemm (both from libtorch_cpu's thread pool), for the
// large products around the CPU time loops (benchmarks/NOTES.md, session 5). Checks the
// result against a float64 reference, then times the two in turns, 15 rounds, median.
//   usage: blocked_ab M N K TRANS_A TRANS_B THREADS   (row-major C[M, N] = op(A) op(B))
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "blocked_gemm.h"

extern "C" void sgemm_(const char*, const char*, const int*, const int*, const int*,
                       const float*, const float*, const int*, const float*, const int*,
                       const float*, float*, const int*);

int main(int argc, char** argv) {
  if (argc < 7) return std::fprintf(stderr, "usage: %s M N K TA TB THREADS\n", argv[0]), 2;
  const int m = std::atoi(argv[1]), n = std::atoi(argv[2]), k = std::atoi(argv[3]);
  const bool ta = std::atoi(argv[4]) != 0, tb = std::atoi(argv[5]) != 0;
  at::set_num_threads(std::atoi(argv[6]));
  const int lda = ta ? m : k, ldb = tb ? k : n;
  std::vector<float> A(size_t(m) * k), B(size_t(n) * k), C(size_t(m) * n), C0(size_t(m) * n);
  for (auto& v : A) v = std::rand() / float(RAND_MAX) - 0.5f;
  for (auto& v : B) v = std::rand() / float(RAND_MAX) - 0.5f;
  for (auto& v : C0) v = std::rand() / float(RAND_MAX) - 0.5f;
  auto a = [&](int i, int q) { return double(ta ? A[size_t(q) * lda + i] : A[size_t(i) * lda + q]); };
  auto b = [&](int q, int j) { return double(tb ? B[size_t(j) * ldb + q] : B[size_t(q) * ldb + j]); };
  for (float beta : {0.0f, 0.5f}) {  // beta = 0 over NaN: C must not be read
    for (size_t j = 0; j < C.size(); ++j) C[j] = beta == 0.0f ? NAN : C0[j];
    fused_rnn::cpu::blocked_gemm(ta, tb, m, n, k, A.data(), lda, B.data(), ldb, beta, C.data(), n);
    const int step = std::max(1, m * n / 20000);  // a sample of the entries at large sizes
    for (int e = 0; e < m * n; e += step) {
      const int i = e / n, j = e % n;
      double ref = beta * double(C0[e]);
      for (int q = 0; q < k; ++q) ref += a(i, q) * b(q, j);
      if (!(std::fabs(C[e] - ref) <= 1e-4 * (1.0 + std::sqrt(double(k)))))
        return std::fprintf(stderr, "beta %g: C[%d, %d] = %g, want %g\n", beta, i, j, C[e], ref), 1;
    }
  }
  const double flops = 2.0 * m * n * k;
  const int reps = std::clamp(int(4e8 / flops), 1, 1000);
  std::vector<double> ours, mkl;
  const char TA = ta ? 'T' : 'N', TB = tb ? 'T' : 'N';
  const float one = 1.0f, zero = 0.0f;
  for (int round = 0; round < 15; ++round) {
    auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r)
      fused_rnn::cpu::blocked_gemm(ta, tb, m, n, k, A.data(), lda, B.data(), ldb, 0.0f, C.data(), n);
    ours.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps);
    t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r)  // column-major: C^T = op(B)^T op(A)^T
      sgemm_(&TB, &TA, &n, &m, &k, &one, B.data(), &ldb, A.data(), &lda, &zero, C.data(), &n);
    mkl.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps);
  }
  std::sort(ours.begin(), ours.end());
  std::sort(mkl.begin(), mkl.end());
  std::printf("m=%d n=%d k=%d ta=%d tb=%d threads=%s GFLOP/s median: blocked %.1f  mkl %.1f  (%.2fx)\n",
              m, n, k, ta, tb, argv[6], flops / ours[7] / 1e9, flops / mkl[7] / 1e9, mkl[7] / ours[7]);
}
