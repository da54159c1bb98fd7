// The per-step products of the CPU time loops, C = A op(B) + beta * C, for the row
// counts and widths a recurrent step has (a batch of rows, one hidden layer wide):
//   C[m, n] = A[m, k] op(B)[k, n] + beta * C,  row-major.
// op(B) is packed once per layer call into panels two SIMD vectors wide (16 columns with
// AVX2; for each k row, the panel's columns contiguous, zero-padded at the edge). Each
// step then takes the panels in order, each in slices of 16 KB (256 k rows with AVX2) that
// stay in L1, and per block of 6 rows of A (4 when m <= 8; with AVX-512 8 rows) keeps
// rows x 2 vectors of sums in registers (the register kernel is panel_kernel.h, shared
// with blocked_gemm.h). With beta != 0 a block's rows of C are fetched before its k loop:
// C is read at the loop's end, and a time loop's C (the step's input projection) is cold
// by then. Measured against MKL's packed sgemm on one core (benchmarks/NOTES.md): on AMD
// Zen 3 (AVX2) 2-3x at m <= 8, 1.2-1.6x at m = 9..128 and 1.0-1.2x at m = 160..512 for k
// up to 2048; on an Intel Xeon with AVX-512 (session 9) 0.6-0.95x alone, yet as fast or
// faster inside the time loops for one row, for a slice of W narrower than 256 columns,
// or below 32 rows by a small W, where blas.cpp's use_panels keeps them on Intel. float32
// only.
#pragma once

#include <cstdint>

namespace fused_rnn::cpu {

// Where the panels beat MKL's packed GEMM: up to 512 rows, whatever k (measured up to
// k = 2048; the k slices keep each panel's working set in L1).
bool panel_gemm_suits(int64_t m);

// Floats needed for the panels of a k x n op(B).
int64_t panel_buffer_size(int64_t k, int64_t n);

// op(B) = B^T when trans_b (B is [n, k] with leading dimension ldb), else B ([k, n]).
// Panel q at panels + q * kPanel * k: packing columns [c0, c0 + w) of a wider op(B) into
// panels + (c0 / kPanel) * kPanel * k gives the same panels (c0 a multiple of kPanel).
void panel_pack(bool trans_b, int64_t k, int64_t n, const float* B, int64_t ldb, float* panels);

// C = A op(B) + beta * C from packed panels; C is not read when beta == 0. Parallel
// over panels when large enough (inline when called inside a parallel region).
void panel_gemm(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda,
                const float* panels, float beta, float* C, int64_t ldc);

}  // namespace fused_rnn::cpu
