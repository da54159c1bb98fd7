// The bias gradients of a layer's backward, db[c] = sum over steps t and rows b of
// dG[t, b, c] (dG: the gate gradients the time loop writes), summed by each tile of the
// step team (step_team.h) right after its pass writes its part of dG, while those rows
// are in L1. Summing all of dG after the loop instead (at::sum over T*B rows) read it back
// from memory: ~5 ms of a 210 ms LSTM backward at T = 25, B = 128, H = 512. The sums are
// kept in double: T * B float32 terms added one by one drift by ~n ulp (GRU, T = 187,
// B = 32: 3e-6 of the largest bias gradient, 10-20 times torch.nn's pairwise sums; NOTES,
// session 22), and the conversion costs little beside the step's products.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

#include "step_team.h"

namespace fused_rnn::cpu {

template <typename S>
class BiasGradSums {
 public:
  // One row of `width` sums per tile (tiles split by rows share columns), zeroed; none
  // when !wanted (no bias).
  BiasGradSums(bool wanted, const TeamPlan& plan, int64_t width, const at::TensorOptions& opts)
      : width_(width),
        opts_(opts),
        parts_(wanted ? at::empty({plan.count(), width}, opts.dtype(at::kDouble)) : at::Tensor()),
        data_(wanted ? parts_.data_ptr<double>() : nullptr) {
    if (wanted) std::fill(data_, data_ + parts_.numel(), 0.0);
  }

  bool wanted() const { return data_ != nullptr; }

  // sums[col0 + k * H + j] += dg[k * H + j] for gates k < G and units j in [lo, hi) of
  // tile tl: one row of dG (G gates of H units each).
  void add(const Tile& tl, int64_t col0, const S* dg, int64_t G, int64_t H, int64_t lo,
           int64_t hi) const {
    double* sums = data_ + tl.p * width_ + col0;
    for (int64_t k = 0; k < G; ++k) {
      double* acc = sums + k * H;
      const S* src = dg + k * H;
      for (int64_t j = lo; j < hi; ++j) acc[j] += static_cast<double>(src[j]);  // vectorized
    }
  }

  // db over columns [col0, col0 + n): the tiles' rows added (an empty tensor when !wanted).
  // By hand: narrow + sum through the dispatcher cost ~10 us of a one-step backward.
  at::Tensor total(int64_t col0, int64_t n) const {
    if (!wanted()) return at::empty({0}, opts_);
    at::Tensor out = at::empty({n}, opts_);
    S* o = out.data_ptr<S>();
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0.0;
      for (int64_t r = 0; r < parts_.size(0); ++r) sum += data_[r * width_ + col0 + j];
      o[j] = static_cast<S>(sum);
    }
    return out;
  }

 private:
  int64_t width_;
  at::TensorOptions opts_;
  at::Tensor parts_;  // double
  double* data_;
};

}  // namespace fused_rnn::cpu
