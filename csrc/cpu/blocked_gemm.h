// The large float32 products of a layer, outside its time loop (the input projection of
// all steps, dx and the weight gradients over all steps; blas.h's large_gemm):
//   C[m, n] = op(A) op(B) + beta * C,  row-major, op(X) = X^T when trans_X.
// op(B) is packed once into panel_gemm.h's panels, shared by the threads; each thread
// takes its chunks of <= 32 row blocks of C, packs that chunk's rows of op(A) by row block
// (rows adjacent for each k), and runs panel_kernel.h's register kernel over every panel, k
// in slices of 256 rows (128 with AVX-512; a slice of a panel is 16 KB, in L1). Row-major
// A is packed for all k at once, so each panel's C tile stays hot over the slices;
// transposed A (k = all steps, often thousands) one slice at a time, which keeps the
// packed slice in L2 (benchmarks/NOTES.md, session 5, has both orders measured).
//
// Why not MKL: on the AMD Zen 3 machine this was measured on, MKL's sgemm ran these
// shapes at 50-56 GFLOP/s per core, the same register kernel at ~60-75; oneDNN, which
// torch.nn's LSTM uses there, is not callable from an extension.
#pragma once

#include <cstdint>

namespace fused_rnn::cpu {

// Whether large_gemm hands this product to blocked_gemm. The environment variable
// FUSED_RNN_BLOCKED_GEMM (read per call) decides: "0" never (MKL throughout, for A/B
// runs), "force" always (tests: every product, however small), anything else or unset:
// where it measured faster than MKL, and only on CPUs like the one it was measured on
// (blocked_gemm_preferred).
bool blocked_gemm_suits(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k);

// Whether this CPU is one where blocked_gemm measured faster than MKL: x86 but not
// Intel's (MKL is Intel's own and tuned there; that comparison was never measured).
bool blocked_gemm_preferred();

// C = op(A) op(B) + beta * C; C is not read when beta == 0. Needs k >= 1 and leading
// dimensions of at least a row (lda >= (trans_a ? m : k), ldb >= (trans_b ? k : n),
// ldc >= n). Parallel over chunks of rows of C (inline inside a parallel region); the
// rounding depends on the thread count, as with any BLAS.
void blocked_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* A,
                  int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace fused_rnn::cpu
