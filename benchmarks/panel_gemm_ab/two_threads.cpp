// A time loop's recurrent product alone, on 2 threads as a layer call runs it: 25 steps of
// C[B, N] += A[B, K] W^T (W [N, K] packed once into panel_gemm.h's panels), split by rows
// (each thread half the rows, all of W) or by units (each thread all rows, half of W, a
// barrier per step). Prints GFLOP/s (median and best of 7). Build and run:
//   T=$(python -c "import os, torch; print(os.path.dirname(torch.__file__))")
//   g++ -O3 -std=c++17 -fopenmp -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c \
//     -DCPU_CAPABILITY=AVX512 -DCPU_CAPABILITY_AVX512 -D_GLIBCXX_USE_CXX11_ABI=1 \
//     -I$T/include -Icsrc/cpu benchmarks/panel_gemm_ab/two_threads.cpp csrc/cpu/panel_gemm.cpp \
//     -o /tmp/two -L$T/lib -ltorch_cpu -lc10 -Wl,-rpath,$T/lib
//   /tmp/two 64 4096 1024     # B N K: LSTM B = 64, H = 1024 (a 16 MB W_hh)
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "panel_gemm.h"

using namespace fused_rnn::cpu;

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s B N K\n", argv[0]);
    return 1;
  }
  const int64_t B = std::atoll(argv[1]), N = std::atoll(argv[2]), K = std::atoll(argv[3]);
  constexpr int kSteps = 25, kRepeats = 7;
  std::vector<float> W(N * K), A(B * K, 0.01f), C(B * N);
  for (size_t i = 0; i < W.size(); ++i) W[i] = static_cast<float>(i % 7) * 0.01f;
  std::vector<float> whole(panel_buffer_size(K, N)), half0(panel_buffer_size(K, N / 2)),
      half1(panel_buffer_size(K, N / 2));
  panel_pack(true, K, N, W.data(), K, whole.data());
  panel_pack(true, K, N / 2, W.data(), K, half0.data());
  panel_pack(true, K, N / 2, W.data() + N / 2 * K, K, half1.data());
  for (int by_units = 0; by_units < 2; ++by_units) {
    std::vector<double> seconds;
    for (int rep = 0; rep < kRepeats; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(2)
      {
        const int t = omp_get_thread_num();
        for (int s = 0; s < kSteps; ++s) {
          if (!by_units) {
            panel_gemm(B / 2, N, K, A.data() + t * (B / 2) * K, K, whole.data(), 1.0f,
                       C.data() + t * (B / 2) * N, N);
          } else {
            panel_gemm(B, N / 2, K, A.data(), K, t ? half1.data() : half0.data(), 1.0f,
                       C.data() + t * (N / 2), N);
#pragma omp barrier
          }
        }
      }
      seconds.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(seconds.begin(), seconds.end());
    const double flop = 2.0 * B * N * K * kSteps;
    std::printf("%s B=%lld N=%lld K=%lld: %.0f GFLOP/s (best %.0f)\n",
                by_units ? "units" : "rows ", static_cast<long long>(B),
                static_cast<long long>(N), static_cast<long long>(K),
                flop / seconds[kRepeats / 2] / 1e9, flop / seconds[0] / 1e9);
  }
}
