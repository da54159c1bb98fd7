// The input projection of a forward layer, out[t, b, :] = x[t, b, :] W^T, computed only
// for the rows that run: a varlen batch (rows sorted by length, as a PackedSequence is)
// has finished rows at the end of step t's rows, and projecting its padding cost as much
// as the rows that run (the bench's varlen suite: lengths uniform in [T/4, T], 37% of the
// rows are padding).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "blas.h"
#include "layer_util.h"

namespace fused_rnn::cpu {

// x [T, B, I], w [N, I] (torch's layout), out [T, B, N]; rows[t]: step t runs rows
// [0, rows[t]) (checks.h's rows_active). Rows past rows[t] get zeros (saved tensors stay
// deterministic). Runs of steps where every row runs are one GEMM each (on all threads),
// the other steps one GEMM each over their rows, the steps spread over the threads.
template <typename S>
void project_rows(int64_t T, int64_t B, int64_t I, int64_t N, const S* x, const S* w, S* out,
                  const std::vector<int64_t>& rows) {
  std::vector<int64_t> partial;  // steps where some rows have finished
  for (int64_t t = 0; t < T;) {
    if (rows[t] < B) {
      partial.push_back(t++);
      continue;
    }
    const int64_t t0 = t;
    while (t < T && rows[t] == B) ++t;
    large_gemm<S>(false, true, (t - t0) * B, N, I, S(1), x + t0 * B * I, I, w, I, S(0),
                  out + t0 * B * N, N);
  }
  if (partial.empty()) return;
  // Thread p takes steps p, p + n, ...: their rows shrink step by step, so contiguous
  // ranges of steps would give the first thread the most rows. A thread gets at least
  // ~1M multiply-adds' worth of steps.
  const int64_t steps = static_cast<int64_t>(partial.size());
  const int64_t step_work = std::max<int64_t>(1, B * N * I);
  const int64_t min_steps = std::max<int64_t>(1, (int64_t{1} << 20) / step_work);
  const int64_t n = std::max<int64_t>(
      1, std::min<int64_t>(at::get_num_threads(), steps / min_steps));
  // Their row counts vary, so W goes to the panels, packed once: plain sgemm copied it at
  // every step (session 13, op alone, varlen T = 100: 4-13% faster, LSTM and GRU,
  // B = 16-64, H = 256-512).
  const PackedB<S> packed_w(/*trans_b=*/true, I, N, w, I, B, steps, /*m_varies=*/true);
  at::parallel_for(0, n, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      for (int64_t i = p; i < steps; i += n) {
        const int64_t t = partial[i], r = rows[t];
        S* out_t = out + t * B * N;
        packed_w.gemm(r, x + t * B * I, I, S(0), out_t, N);
        zero_row(out_t + r * N, (B - r) * N);
      }
  });
}

}  // namespace fused_rnn::cpu
