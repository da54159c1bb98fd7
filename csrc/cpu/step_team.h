// A time loop run by one team of threads for all its steps.
//
// The batch rows [0, B) or the hidden units [0, H) are split into blocks; a block's work
// at step s (its slice of the per-step GEMM and its slice of the fused pointwise pass)
// runs on the thread that owns the block at every step, so that thread's weights (all
// of W_hh, or its units' slice) stay in its cache. Blocks of rows never wait for each
// other. With blocks of units, step s of any block starts only when every block has
// finished step s - 1: one wait per step instead of a fork/join for the GEMM and another
// for the pointwise pass (at small shapes those two fork/joins cost as much as the
// step's arithmetic; see benchmarks/NOTES.md). plan_team says which split pays.
#pragma once

#include <ATen/Config.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "blas.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace fused_rnn::cpu {

// [0, n) cut into `count` blocks of `width` (the last ones may be narrower or empty).
struct UnitBlocks {
  int64_t count;
  int64_t width;
  int64_t n;
  int64_t lo(int64_t p) const { return std::min(n, p * width); }
  int64_t hi(int64_t p) const { return std::min(n, (p + 1) * width); }
};

// n units in `count` blocks whose width is a multiple of `align` (a SIMD vector).
inline UnitBlocks split_blocks(int64_t n, int64_t count, int64_t align) {
  const int64_t vectors = std::max<int64_t>(1, (n + align - 1) / align);
  return {count, ((vectors + count - 1) / count) * align, n};
}

// One thread's share of a step: hidden units [lo, hi) (unit block u) of batch rows [b0, b1);
// tile p of its plan.
struct Tile {
  int64_t u, lo, hi, b0, b1, p;
  // How many of the tile's rows a per-step GEMM covers when the first `active` rows of
  // the batch are still running (the rest have finished; see rows_active).
  int64_t gemm_rows(int64_t active) const {
    return std::clamp<int64_t>(active - b0, 0, b1 - b0);
  }
};

// How a time loop over B rows and H hidden units is spread over a team of threads:
// by blocks of rows (every unit; rows never wait for each other), by blocks of units
// (every row; a step waits for the previous step of every block, since h_prev W_hh^T
// needs all units), or one block of everything (one thread).
struct TeamPlan {
  UnitBlocks units;  // one block when split by rows
  // Block p of rows is [row_cuts[p], row_cuts[p + 1]); one block {0, B} when split by units.
  std::vector<int64_t> row_cuts;
  bool by_rows;
  bool varlen;  // rows finish at different steps
  int64_t count() const { return by_rows ? row_blocks() : units.count; }
  int64_t row_blocks() const { return static_cast<int64_t>(row_cuts.size()) - 1; }
  int64_t row_lo(int64_t p) const { return row_cuts[p]; }
  int64_t row_hi(int64_t p) const { return row_cuts[p + 1]; }
  // The most rows one tile's GEMM has (what packed weights are packed for).
  int64_t max_rows() const {
    int64_t most = 0;
    for (int64_t p = 0; p < row_blocks(); ++p) most = std::max(most, row_hi(p) - row_lo(p));
    return most;
  }
  // Whether a tile's GEMMs have fewer rows than max_rows() at some steps (varlen rows, or
  // a block of rows narrower than another).
  bool gemm_rows_vary() const {
    const int64_t most = max_rows();
    for (int64_t p = 0; p < row_blocks(); ++p)
      if (row_hi(p) - row_lo(p) != most) return true;
    return varlen;
  }
  Tile tile(int64_t p) const {
    if (by_rows) return {0, 0, units.n, row_lo(p), row_hi(p), p};
    return {p, units.lo(p), units.hi(p), 0, row_cuts.back(), p};
  }
};

// B rows cut into n blocks (n <= B). Without len: ceil(B / n) rows each, the last ones
// narrower. With varlen rows (len[b] steps each, longest first as a PackedSequence sorts
// them) blocks of equal count gave the first thread most of the work (lengths uniform in
// [T/4, T], two blocks: 0.81 T against 0.44 T steps per row), so the cuts fall where the
// blocks run about as many row-steps each; every block keeps a row.
inline std::vector<int64_t> row_cuts(int64_t B, int64_t n, const int64_t* len, int64_t T) {
  std::vector<int64_t> cuts{0};
  if (len == nullptr || n <= 1) {
    const int64_t width = (B + n - 1) / n;
    for (int64_t p = 1; p <= n; ++p) cuts.push_back(std::min(B, p * width));
    return cuts;
  }
  const int64_t most = std::max<int64_t>(T, 1);
  auto work = [&](int64_t b) { return std::clamp<int64_t>(len[b], 1, most); };
  int64_t total = 0;
  for (int64_t b = 0; b < B; ++b) total += work(b);
  int64_t done = 0, b = 0;
  for (int64_t p = 1; p < n; ++p) {
    // Take rows until this block reaches its share, leaving a row for each later block.
    const int64_t target = total * p / n;
    do done += work(b++);
    while (b < B - (n - p) && done + work(b) / 2 < target);
    cuts.push_back(b);
  }
  cuts.push_back(B);
  return cuts;
}

// FUSED_RNN_TEAM=units, =rows or =one forces that split wherever it can run (tests cover
// every split at sizes the measured choice would not split; A/B runs); unset or anything
// else: the measured choice below. Read once per layer call.
enum class TeamSplit { kAuto, kUnits, kRows, kOne };
inline TeamSplit team_split_override() {
  const char* env = std::getenv("FUSED_RNN_TEAM");
  if (env == nullptr) return TeamSplit::kAuto;
  const std::string v(env);
  if (v == "units") return TeamSplit::kUnits;
  if (v == "rows") return TeamSplit::kRows;
  if (v == "one") return TeamSplit::kOne;
  return TeamSplit::kAuto;
}

// Whether a forward layer call of T steps projects its input inside its step, each tile
// its own rows and units, rather than in one GEMM over all steps before the loop
// (input_projection.h): in a one-step call nothing is gained by projecting first, and this
// way the call reads W_ih and W_hh in one parallel region, each thread only its slices
// (session 14, 2 threads, each call right after one of torch.nn's: GRU and LSTM 4-13%
// faster at H = 128 and at B = 64 H = 512, ties at B = 1-16 H = 256-512; the op alone in
// a warm loop, GRU B = 1 H = 512: 164 against 195 us). FUSED_RNN_STEP_PROJECTION=0 (read
// per call) projects first (A/B runs, tests). Only where the step has an input to project
// (I > 0) and every row of the batch B runs it (rows: checks.h's rows_active; the ops take
// lengths of 0, whose rows project_rows zeroes).
inline bool project_in_step(int64_t T, int64_t I, const std::vector<int64_t>& rows, int64_t B) {
  if (T != 1 || I <= 0 || rows.empty() || rows[0] != B) return false;
  const char* env = std::getenv("FUSED_RNN_STEP_PROJECTION");
  return env == nullptr || std::strcmp(env, "0") != 0;
}

// weight_bytes: the recurrent weights one step multiplies by (W_hh, and W_hr with a
// projection). Measured on an Intel Xeon, 2 threads (benchmarks/NOTES.md, session 11):
// - By rows wherever each thread gets 4+ rows and either the weights stay in its L2
//   (up to 1 MB) or its rows are many enough (32+) for it to stream them from L3: by
//   units every step waits for the slowest block, and a VM's threads are descheduled
//   often enough that those waits cost more than re-reading the weights (LSTM T = 100,
//   B = 16, H = 256: 9.9 against 10.9 ms; B = 64, H = 512: 68 against 73 ms).
//   With weights up to 512 KB (LSTM H <= 128, GRU H <= 160) rows pay down to one per
//   thread (session 12, inference T = 200, 2 rows: LSTM H = 128 1.76-1.88x of torch.nn
//   against 1.49-1.60x by units, GRU 5.35-5.67x against 4.34-4.69x).
// - Else, for 2-7 rows on an Intel CPU, one team whose step products run in parallel
//   inside (MKL's threads, or panel_gemm's over panels) and whose cell is one thread: by
//   units the step waits for the slowest block, and at these sizes that cost more than
//   the cell it shares (session 12: LSTM B = 2 H = 256 1.41-1.45x against 1.25-1.34x,
//   B = 4 H = 512 1.76-1.84x against 1.61-1.73x). On an AMD Zen 4 by units was as fast
//   or 1-5% faster at every such shape, forward and backward, LSTM and GRU (session 20:
//   one team's fork and join per step, and its second thread idle through the cell, were
//   17% of the samples at B = 6 H = 256), so other CPUs split by units. Measured with 2
//   threads only; where 3+ would take blocks of units, they still do (each keeps its
//   slice of W_hh in its own cache over all steps, which a product threaded per call
//   may not).
// - Else by units, with 64+ units per thread (narrower blocks make per-gate GEMMs a
//   few columns wide);
// - else on one thread: the per-step wait costs more than half a tiny step
//   (T = 100, B = 1, H = 32: 49 against 149 us).
// With more threads than those minimums allow, fewer threads take part (a split by rows
// is preferred only if it keeps at least as many threads busy as one by units).
// Before all that, a short call (T <= 16 steps) with weights of 1 MB or more and at most
// 512 row-steps T B runs as one team, its products threaded inside: over so few steps a
// team's start, its waits, and (by rows) every thread reading all of W_hh from L3 cost more
// than they gain (session 13, COLD=1 A/B, 2 threads, one team against the split:
// T = 16 B = 32 H = 512 GRU 1.55x of torch.nn against 1.46x, training 1.56x against 1.45x;
// T = 2 B = 64 H = 512 LSTM 1.11x against 1.01x; T = 8 B = 8 H = 256 LSTM training 1.37x
// against 1.29x). With smaller weights the split stayed as good or better (T = 4 B = 16
// H = 128 GRU 1.49x by rows against 1.38x), and so did one-step calls by units. That was
// an Intel Xeon; on an AMD Zen 4 one team's fork and join per step cost more than these
// gains (session 20, COLD=1: LSTM T = 2 B = 64 H = 512 1.22-1.35x against 1.46-1.73x by
// rows, T = 8 B = 8 H = 256 1.43-1.54x against 1.48-1.79x), so other CPUs skip this rule.
// len (null without varlen rows): where a split by rows cuts the batch (row_cuts).
// T: the call's steps (0: unknown, taken as long).
// one_step_projection: a one-step call whose tiles also project their own input
// (project_in_step): by units over as many threads as get 64+ units, so each thread
// reads only its slices of W_ih and W_hh, once.
inline TeamPlan plan_team(int64_t B, int64_t H, int64_t align, int64_t weight_bytes,
                          const int64_t* len = nullptr, int64_t T = 0,
                          bool one_step_projection = false) {
  constexpr int64_t kMinUnitsPerThread = 64, kMinRowsPerThread = 4;
  constexpr int64_t kCachedWeightBytes = int64_t{1} << 20, kStreamingRowsPerThread = 32;
  constexpr int64_t kSmallWeightBytes = int64_t{512} << 10, kMinBatchForUnits = 8;
  constexpr int64_t kShortSteps = 16, kShortRowSteps = 512;
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  const int64_t vectors = std::max<int64_t>(1, (H + align - 1) / align);
#if AT_PARALLEL_OPENMP
  const int64_t unit_threads = std::max<int64_t>(1, std::min(threads, vectors));
#else
  // Only OpenMP guarantees that every chunk of a parallel_for runs at the same time,
  // which the per-step wait relies on; rows, which never wait, can use any backend.
  const int64_t unit_threads = 1;
#endif
  const bool varlen = len != nullptr;
  auto rows_over = [&](int64_t n) {
    n = std::max<int64_t>(1, std::min(n, B));
    return TeamPlan{split_blocks(H, 1, align), row_cuts(B, n, len, T), true, varlen};
  };
  auto units_over = [&](int64_t n) {
    return TeamPlan{split_blocks(H, n, align), {0, B}, false, varlen};
  };
  switch (team_split_override()) {
    case TeamSplit::kUnits: return units_over(unit_threads);
    case TeamSplit::kRows: return rows_over(threads);
    case TeamSplit::kOne: return units_over(1);
    case TeamSplit::kAuto: break;
  }
  // As many threads as get 64+ units (blocks are whole vectors) or 4+ rows each (1+
  // with small weights).
  const int64_t unit_count = std::max<int64_t>(
      1, std::min(unit_threads, vectors * align / kMinUnitsPerThread));
  if (one_step_projection) return units_over(unit_count);
  if (T > 0 && T <= kShortSteps && weight_bytes >= kCachedWeightBytes &&
      T * B <= kShortRowSteps && intel_cpu())
    return units_over(1);
  const int64_t min_rows = weight_bytes <= kSmallWeightBytes ? 1 : kMinRowsPerThread;
  const int64_t row_count = std::max<int64_t>(1, std::min(threads, B / min_rows));
  const bool rows_cheap = weight_bytes <= kCachedWeightBytes ||
                          B >= kStreamingRowsPerThread * row_count || unit_count == 1;
  if (row_count > 1 && row_count >= unit_count && rows_cheap) return rows_over(row_count);
  if (B >= 2 && B < kMinBatchForUnits && unit_count <= 2 && intel_cpu()) return units_over(1);
  return units_over(unit_count);
}

namespace detail {
inline void spin_pause() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}
}  // namespace detail

// Calls step(s, plan.tile(p)) for s in [0, T) and every tile p, where a step may read
// what the previous step of any tile wrote (split by units) or of its own tile only
// (split by rows). Tiles are spread over the threads of one parallel region; a thread
// that owns several runs them in order.
template <typename Step>
void run_steps(int64_t T, const TeamPlan& plan, const Step& step) {
  const int64_t n = plan.count();
  if (T <= 0) return;
  if (n == 1) {
    const Tile tile = plan.tile(0);
    for (int64_t s = 0; s < T; ++s) step(s, tile);
    return;
  }
  if (plan.by_rows) {
    at::parallel_for(0, n, 1, [&](int64_t first, int64_t last) {
      for (int64_t p = first; p < last; ++p) {
        const Tile tile = plan.tile(p);
        for (int64_t s = 0; s < T; ++s) step(s, tile);
      }
    });
    return;
  }
  // done counts finished (step, block) pairs. No block runs ahead of the slowest by
  // more than one step, so done >= s * n means every block has finished step s - 1.
  std::atomic<int64_t> done{0};
  std::atomic<bool> failed{false};
  at::parallel_for(0, n, 1, [&](int64_t first, int64_t last) {
    try {
      for (int64_t s = 0; s < T; ++s) {
        const int64_t need = s * n;
        for (int64_t spins = 0; done.load(std::memory_order_acquire) < need; ++spins) {
          if (failed.load(std::memory_order_relaxed)) return;
          // Spin briefly (a step is microseconds), then give the core away: the
          // machine may have fewer free cores than the team has threads.
          if (spins < 4096) detail::spin_pause();
          else std::this_thread::yield();
        }
        for (int64_t p = first; p < last; ++p) step(s, plan.tile(p));
        done.fetch_add(last - first, std::memory_order_acq_rel);
      }
    } catch (...) {
      failed.store(true);  // release the other threads, then let parallel_for rethrow
      throw;
    }
  });
}

}  // namespace fused_rnn::cpu
