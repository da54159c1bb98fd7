// The large float32 products around the CPU time loops: the input projection of all
// steps, dx and the weight gradients over all steps,
//   C[m, n] = op(A) op(B) + beta * C,  row-major, op(X) = X^T when trans_X.
// Blocked for the caches the usual way: k in slices of 256 rows (AVX2); per slice op(B)
// is packed into panel_kernel.h's panels (16 KB each, in L1), shared by the threads, and
// each thread packs its chunks of op(A)'s rows (<= 192 x 256, in L2) next to each other
// by six, then runs the register kernel over every panel. MKL's sgemm reaches 50-56
// GFLOP/s per core at these shapes on the AMD Zen 3 machine of benchmarks/NOTES.md,
// where the same register kernel runs at ~75; oneDNN, which torch.nn's LSTM uses there,
// is not callable from an extension.
#pragma once

#include <cstdint>

namespace fused_rnn::cpu {

// Whether gemm<float> (blas.h) hands this product to blocked_gemm: where it measured
// faster than MKL. The environment variable FUSED_RNN_BLOCKED_GEMM (read per call) can
// switch it off ("0", for in-process A/B runs) or on for every product ("force", tests).
bool blocked_gemm_suits(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k);

// C = op(A) op(B) + beta * C; C is not read when beta == 0. Parallel over rows of C
// (inline when called inside a parallel region). Needs k >= 1.
void blocked_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* A,
                  int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace fused_rnn::cpu
