// bfloat16 products for the CPU time loops on CPUs with AVX512-BF16 (vdpbf16ps):
//   C[m, n] = A[m, k] op(W) + beta * C,  op(W) = W^T for W [n, k] (torch's weight layout, the
//   forward's products) or W for W [k, n] (the backward's dA W); A and W bfloat16, C float32,
//   accumulated in float32 (the product of two bfloat16 numbers is exact there).
// Such a CPU multiplies bfloat16 pairs at twice float32's rate or more (benchmarks/NOTES.md,
// session 18: one core, 4-32 rows, 215-224 GFLOP/s against float32's ~95); torch.nn's
// oneDNN LSTM does the same for bfloat16 input, so without it a bfloat16 LSTM here ran at
// half of torch.nn's speed.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "step_team.h"

namespace fused_rnn::cpu {

using bf16 = c10::BFloat16;

// Whether the bfloat16 products can run: built for AVX-512, a CPU with AVX512-BF16, and
// FUSED_RNN_BF16_DOT not "0" (read per call: A/B runs and tests of both paths).
bool bf16_dot_available();

// Whether a bfloat16 layer call of T steps over B rows multiplies in bfloat16: where they
// can run, in a call that is not empty and either long enough to pay for packing its weights
// into bfloat16 panels (one pass over them per call) or under FUSED_RNN_BF16_DOT=force.
// Measured under CPU autocast (AMD EPYC, 2 threads, LSTM, against float32 products on
// float32 weights): H = 256 B = 1 0.22-0.48x at T = 1-8, 1.08x at T = 16; B = 16
// 0.45-0.55x at T = 1-2, 1.16x at T = 4; H = 512 B = 8 0.18-0.53x at T = 1-4, 1.95x at
// T = 8 (benchmarks/NOTES.md, session 18).
bool bf16_products_for(int64_t T, int64_t B);

// op(W) [k, n] (row stride ldw of W), packed once into panels of 32 columns: for each pair
// of k rows, each column's two values adjacent, as vdpbf16ps reads them (odd k: the last
// pair's second value zero). op(W) = W^T for W [n, k] when trans_w, else W [k, n]. The
// caller keeps nothing alive: this owns its copy. Packs on the calling thread, or in
// parallel over panels when called outside a parallel region.
class Bf16PackedB {
 public:
  Bf16PackedB(bool trans_w, int64_t k, int64_t n, const bf16* w, int64_t ldw);
  Bf16PackedB(const Bf16PackedB&) = delete;
  Bf16PackedB& operator=(const Bf16PackedB&) = delete;

  // C[:m] = A[:m] op(W) + beta * C[:m] on the calling thread (A: m rows of k, stride lda).
  void gemm(int64_t m, const bf16* A, int64_t lda, float beta, float* C, int64_t ldc) const;
  int64_t n() const { return n_; }

 private:
  int64_t k_, n_;
  at::Tensor panels_;  // bfloat16, ceil(n / 32) panels of ceil(k / 2) pairs x 32 columns
};

// Forward, A W^T for a step team's blocks of hidden units (recurrent_slices.h's
// GateRowSlices in bfloat16): block p's rows of every gate of W [gates * N, K], written to
// out[:, g*N + lo .. g*N + hi].
class Bf16GateRowSlices {
 public:
  // w null: nothing packed, gemm() never called.
  Bf16GateRowSlices(const bf16* w, int64_t gates, int64_t N, int64_t K, const UnitBlocks& blocks);
  void gemm(int64_t p, int64_t m, const bf16* A, int64_t lda, float beta, float* out,
            int64_t ldo) const;

 private:
  int64_t gates_, N_;
  UnitBlocks blocks_;
  std::vector<std::unique_ptr<Bf16PackedB>> slices_;  // block p, gate g at p * gates + g
};

// Backward, dA W for a step team's blocks of state columns (recurrent_slices.h's
// ColumnSlices in bfloat16): block p's columns of W [rows, K] (all its rows), written to
// out[:, lo .. hi].
class Bf16ColumnSlices {
 public:
  // w null: nothing packed, gemm() never called.
  Bf16ColumnSlices(const bf16* w, int64_t rows, int64_t K, const UnitBlocks& blocks);
  void gemm(int64_t p, int64_t m, const bf16* dA, int64_t lda, float beta, float* out,
            int64_t ldo) const;

 private:
  UnitBlocks blocks_;
  std::vector<std::unique_ptr<Bf16PackedB>> slices_;  // block p at p
};

// out[t, b, :] = x[t, b, :] W^T for the rows that run (input_projection.h's project_rows in
// bfloat16): x [T, B, I], w [N, I], out [T, B, N] float32; rows past rows[t] get zeros.
// On all threads.
void project_rows_bf16(int64_t T, int64_t B, int64_t I, int64_t N, const bf16* x,
                       const bf16* w, float* out, const std::vector<int64_t>& rows);

// dst[i] = src[i] rounded to the nearest bfloat16 (ties to even), for i < n; only where
// bf16_dot_available().
void round_to_bf16(const float* src, bf16* dst, int64_t n);

}  // namespace fused_rnn::cpu
