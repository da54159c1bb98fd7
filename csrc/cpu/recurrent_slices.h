// The recurrent weights of a layer cut along a step team's blocks of hidden units
// (step_team.h), each slice packed once per layer call (blas.h's PackedB; `uses` = the
// steps that will multiply by it), so every thread multiplies only by its own slice at
// every step (m_varies: some steps have fewer than max_m rows). W is in torch's layout:
// [G*N, K] with gate g's rows at g*N .. g*N + N (G = 4 for the LSTM, 3 for the GRU,
// 1 for the Elman RNN).
#pragma once

#include <deque>

#include "blas.h"
#include "step_team.h"

namespace fused_rnn::cpu {

// Forward, A W^T: block p's rows of every gate, out[:, g*N + lo .. g*N + hi].
template <typename S>
class GateRowSlices {
 public:
  GateRowSlices(const S* w, int64_t gates, int64_t N, int64_t K, const UnitBlocks& blocks,
                int64_t max_m, int64_t uses, bool m_varies)
      : gates_(gates), N_(N), blocks_(blocks), whole_(blocks.count == 1) {
    if (w == nullptr) return;  // an absent matrix (no projection): gemm() is never called
    if (whole_) {  // one block of all units: all G*N rows are one contiguous slice
      slices_.emplace_back(/*trans_b=*/true, K, gates * N, w, K, max_m, uses, m_varies);
      return;
    }
    for (int64_t p = 0; p < blocks.count; ++p)
      for (int64_t g = 0; g < gates; ++g)
        slices_.emplace_back(/*trans_b=*/true, K, blocks.hi(p) - blocks.lo(p),
                             w + (g * N + blocks.lo(p)) * K, K, max_m, uses, m_varies);
  }

  // out[:m, g*N + lo .. g*N + hi] = A[:m] W_slice^T + beta * out, for every gate g.
  void gemm(int64_t p, int64_t m, const S* A, int64_t lda, S beta, S* out, int64_t ldo) const {
    if (whole_) {
      slices_[0].gemm(m, A, lda, beta, out, ldo);
      return;
    }
    if (blocks_.lo(p) >= blocks_.hi(p)) return;
    for (int64_t g = 0; g < gates_; ++g)
      slices_[p * gates_ + g].gemm(m, A, lda, beta, out + g * N_ + blocks_.lo(p), ldo);
  }

 private:
  int64_t gates_, N_;
  UnitBlocks blocks_;
  bool whole_;
  std::deque<PackedB<S>> slices_;  // PackedB is not movable
};

// Backward, dA W: block p's columns of W (all G*N rows), out[:, lo .. hi].
template <typename S>
class ColumnSlices {
 public:
  ColumnSlices(const S* w, int64_t rows, int64_t K, const UnitBlocks& blocks, int64_t max_m,
               int64_t uses, bool m_varies)
      : blocks_(blocks) {
    if (w == nullptr) return;  // an absent matrix (no projection): gemm() is never called
    for (int64_t p = 0; p < blocks.count; ++p)
      slices_.emplace_back(/*trans_b=*/false, rows, blocks.hi(p) - blocks.lo(p),
                           w + blocks.lo(p), K, max_m, uses, m_varies);
  }

  // out[:m, lo .. hi] = dA[:m] W[:, lo .. hi] + beta * out.
  void gemm(int64_t p, int64_t m, const S* dA, int64_t lda, S beta, S* out, int64_t ldo) const {
    if (blocks_.lo(p) >= blocks_.hi(p)) return;
    slices_[p].gemm(m, dA, lda, beta, out + blocks_.lo(p), ldo);
  }

 private:
  UnitBlocks blocks_;
  std::deque<PackedB<S>> slices_;
};

}  // namespace fused_rnn::cpu
