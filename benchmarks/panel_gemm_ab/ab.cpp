// Interleaved single-core A/B of panel_gemm.cpp variants against MKL's packed sgemm, for
// the per-step products of the CPU time loops (benchmarks/NOTES.md, session 4). Each
// variant is one copy of panel_gemm.cpp compiled into its own namespace (run.sh); all are
// checked against the first, then timed in turns, 31 rounds, median and best GFLOP/s.
//   usage: ab M N K   (C[M, N] += A[M, K] B^T, B [N, K] as torch stores W_hh)
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define DECLARE(NS)                                                                      \
  namespace NS::cpu {                                                                    \
  int64_t panel_buffer_size(int64_t k, int64_t n);                                       \
  void panel_pack(bool trans_b, int64_t k, int64_t n, const float* B, int64_t ldb,       \
                  float* panels);                                                        \
  void panel_gemm(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda,          \
                  const float* panels, float beta, float* C, int64_t ldc);               \
  }
VARIANT_DECLARATIONS  // filled in by run.sh

extern "C" {  // MKL's packed GEMM, exported by libtorch_cpu on x86_64 wheels
size_t cblas_sgemm_pack_get_size(int identifier, int m, int n, int k);
void cblas_sgemm_pack(int layout, int identifier, int trans, int m, int n, int k, float alpha,
                      const float* src, int ld, float* dest);
void cblas_sgemm_compute(int layout, int transa, int transb, int m, int n, int k,
                         const float* a, int lda, const float* b, int ldb, float beta, float* c,
                         int ldc);
}

struct Variant {
  const char* name;
  int64_t (*size)(int64_t, int64_t);
  void (*pack)(bool, int64_t, int64_t, const float*, int64_t, float*);
  void (*gemm)(int64_t, int64_t, int64_t, const float*, int64_t, const float*, float, float*,
               int64_t);
};

int main(int argc, char** argv) {
  if (argc < 4) return std::fprintf(stderr, "usage: %s M N K\n", argv[0]), 2;
  const int m = std::atoi(argv[1]), n = std::atoi(argv[2]), k = std::atoi(argv[3]);
  at::set_num_threads(1);
  std::vector<Variant> variants = {VARIANT_TABLE};
  std::vector<float> A(size_t(m) * k), B(size_t(n) * k), C(size_t(m) * n), ref(size_t(m) * n);
  for (auto& v : A) v = std::rand() / float(RAND_MAX) - 0.5f;
  for (auto& v : B) v = std::rand() / float(RAND_MAX) - 0.5f;
  std::vector<std::vector<float>> panels;
  for (size_t i = 0; i < variants.size(); ++i) {
    const Variant& v = variants[i];
    panels.emplace_back(v.size(k, n));
    v.pack(true, k, n, B.data(), k, panels.back().data());
    std::fill(C.begin(), C.end(), NAN);  // beta = 0 must not read C
    v.gemm(m, n, k, A.data(), k, panels.back().data(), 0.0f, C.data(), n);
    if (i == 0) ref = C;
    for (size_t j = 0; j < C.size(); ++j)
      if (!(std::fabs(C[j] - ref[j]) <= 1e-3f * (1.0f + std::fabs(ref[j]))))
        return std::fprintf(stderr, "%s differs from %s at %zu\n", v.name, variants[0].name, j), 1;
  }
  std::vector<float> mkl(cblas_sgemm_pack_get_size(162, m, n, k) / sizeof(float) + 1);
  cblas_sgemm_pack(101, 162, 112, m, n, k, 1.0f, B.data(), k, mkl.data());
  const double flops = 2.0 * m * n * k;
  const int reps = std::max(5, int(2e8 / flops));
  std::vector<std::vector<double>> times(variants.size() + 1);
  for (int round = 0; round < 31; ++round) {
    for (size_t i = 0; i <= variants.size(); ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int r = 0; r < reps; ++r) {
        if (i < variants.size())
          variants[i].gemm(m, n, k, A.data(), k, panels[i].data(), 1.0f, C.data(), n);
        else
          cblas_sgemm_compute(101, 111, 151, m, n, k, A.data(), k, mkl.data(), n, 1.0f, C.data(), n);
      }
      times[i].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps);
    }
  }
  std::printf("m=%d n=%d k=%d GFLOP/s median (best):", m, n, k);
  for (size_t i = 0; i <= variants.size(); ++i) {
    std::sort(times[i].begin(), times[i].end());
    std::printf("  %s %.1f (%.1f)", i < variants.size() ? variants[i].name : "mkl_packed",
                flops / times[i][15] / 1e9, flops / times[i][0] / 1e9);
  }
  std::printf("\n");
}
