// Helpers for the CPU time loops: run a per-row, per-lane function over the batch
// in parallel, and copy or clear rows.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

#include "vec_ops.h"

namespace fused_rnn::cpu {

// Calls fn(b, lo, hi) over rows b in [0, B) and lane ranges [lo, hi) of [0, width)
// that split the row into vector-aligned pieces, in parallel. A piece is about
// kPiece elements, so small batches with wide rows still use every thread.
template <typename S, typename Fn>
inline void parallel_rows(int64_t B, int64_t width, const Fn& fn) {
  constexpr int64_t kPiece = 256;
  const int64_t lanes = at::vec::Vectorized<S>::size();
  const int64_t piece = std::max<int64_t>(lanes, (kPiece / lanes) * lanes);
  const int64_t pieces = std::max<int64_t>(1, (width + piece - 1) / piece);
  // Below ~8k elements per call a thread is not worth waking.
  const int64_t grain = std::max<int64_t>(1, 8192 / (piece * 4));
  at::parallel_for(0, B * pieces, grain, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      const int64_t b = w / pieces, lo = (w % pieces) * piece;
      fn(b, lo, std::min(width, lo + piece));
    }
  });
}

template <typename S>
inline void copy_row(S* dst, const S* src, int64_t n) {
  std::memcpy(dst, src, sizeof(S) * n);
}

template <typename S>
inline void zero_row(S* dst, int64_t n) {
  std::fill(dst, dst + n, S(0));
}

}  // namespace fused_rnn::cpu
