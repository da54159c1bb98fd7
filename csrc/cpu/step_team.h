// A time loop run by one team of threads for all its steps.
//
// The hidden units [0, H) are split into blocks; a block's work at step s (its slice of
// the per-step GEMM and its slice of the fused pointwise pass) runs on the thread that
// owns the block at every step, so that thread's slice of W_hh stays in its cache. Step
// s of any block starts only when every block has finished step s - 1: one wait per
// step instead of a fork/join for the GEMM and another for the pointwise pass (at
// small shapes those two fork/joins cost as much as the step's arithmetic; see
// benchmarks/NOTES.md).
#pragma once

#include <ATen/Config.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <thread>

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

// How many blocks a time loop over H hidden units uses: one per thread of the team,
// never a block narrower than one vector.
inline int64_t team_blocks(int64_t H, int64_t align) {
  int64_t threads = at::get_num_threads();
#if !AT_PARALLEL_OPENMP
  // Only OpenMP guarantees that every chunk of a parallel_for runs at the same time,
  // which the per-step wait below relies on; other backends run the loop on one thread.
  threads = 1;
#endif
  if (at::in_parallel_region()) threads = 1;
  const int64_t vectors = std::max<int64_t>(1, (H + align - 1) / align);
  return std::max<int64_t>(1, std::min(threads, vectors));
}

// H hidden units in team_blocks(H, align) blocks.
inline UnitBlocks team_units(int64_t H, int64_t align) {
  return split_blocks(H, team_blocks(H, align), align);
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

// Calls step(s, p) for s in [0, T) and every block p in [0, n), where step(s, p) may
// read what any step(s - 1, q) wrote. Blocks are spread over the threads of one
// parallel region; a thread that owns several runs them in order.
template <typename Step>
void run_steps(int64_t T, int64_t n, const Step& step) {
  if (T <= 0) return;
  if (n == 1) {
    for (int64_t s = 0; s < T; ++s) step(s, 0);
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
        for (int64_t p = first; p < last; ++p) step(s, p);
        done.fetch_add(last - first, std::memory_order_acq_rel);
      }
    } catch (...) {
      failed.store(true);  // release the other threads, then let parallel_for rethrow
      throw;
    }
  });
}

}  // namespace fused_rnn::cpu
