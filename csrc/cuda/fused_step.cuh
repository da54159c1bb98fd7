// The recurrent product of one forward step fused with the cell math, for small batches:
// one launch per step instead of a cuBLAS GEMM plus a pointwise kernel.
//
// A block owns kFusedUnits hidden units j (all G gates of each, so the cell math of a unit
// needs no other block's sums) and kFusedRows batch rows b. Its 2G warps each own 4 of the
// block's G * kFusedUnits rows of W_hh against all kFusedRows batch rows; lanes stride over
// k with VW-element (16-byte) loads of W_hh and h rows, then the warp sums across lanes.
// W_hh is reread once per kFusedRows batch rows, which is why this pays only for small B
// (use_fused_step).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <string>

#include "launch.h"

namespace fused_rnn::cuda {

constexpr int kFusedUnits = 8;  // hidden units per block
constexpr int kFusedRows = 8;   // batch rows per block
constexpr int kFusedWRows = 4;  // W_hh rows per warp
static_assert(kFusedWRows * kFusedRows == 32, "one reduced sum per lane");

// Threads of a block for a cell with G gates: G * kFusedUnits W_hh rows, 4 per warp.
constexpr int fused_step_threads(int G) { return G * kFusedUnits / kFusedWRows * 32; }

inline dim3 fused_step_grid(int64_t H, int64_t B) {
  return dim3(static_cast<unsigned>((H + kFusedUnits - 1) / kFusedUnits),
              static_cast<unsigned>((B + kFusedRows - 1) / kFusedRows));
}

// Whether a forward step runs fused. Measured on an H100 (benchmarks/NOTES.md, LSTM):
// faster up to B = 16 in float32 (1.3-1.4x at B = 1 and 16), slower at B = 64; in float16
// faster at B = 1, slower at B = 16 inference. FUSED_RNN_CUDA_STEP_KERNEL=0 / 1 forces
// either path (A/B runs, tests of both).
inline bool use_fused_step(int64_t B, size_t elem_size) {
  static const int mode = [] {
    const char* env = std::getenv("FUSED_RNN_CUDA_STEP_KERNEL");
    return env == nullptr ? -1 : (std::string(env) == "0" ? 0 : 1);
  }();
  if ((B + kFusedRows - 1) / kFusedRows > 65535) return false;  // CUDA's grid.y limit
  return mode < 0 ? B <= (elem_size == 2 ? 8 : 16) : mode == 1;
}

// 16-byte loads of W_hh and h rows: every row start is N-aligned when P % N == 0.
template <int N, typename T>
inline bool fused_step_vec_ok(int64_t P, const T* w_hh, const T* h) {
  return P % N == 0 && pack_aligned<N>(w_hh) && pack_aligned<N>(h);
}

// Accumulation type of the product: float for float16/bfloat16/float32.
template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

// Sums v over the warp's 32 lanes and leaves lane l with the total of v[l]: recursive
// halving, 31 shuffles instead of 32 full butterflies (160); indices stay compile-time.
template <typename A>
__device__ __forceinline__ A warp_reduce_scatter(A (&v)[32], int lane) {
#pragma unroll
  for (int half = 16; half >= 1; half /= 2) {
    const bool upper = (lane & half) != 0;
#pragma unroll
    for (int n = 0; n < half; ++n) {
      const A send = upper ? v[n] : v[n + half];
      const A keep = upper ? v[n + half] : v[n];
      v[n] = keep + __shfl_xor_sync(0xffffffffu, send, half);
    }
  }
  return v[0];
}

// For this block's units j and rows b < rows (rows are sorted by length, so active rows
// come first):  sums[b, q*H + j] (+)= sum_k h[b, k] w_hh[q*H + j, k],  q < G, k < P.
// accumulate adds to what sums holds (the input projection); else overwrites. Ends with a
// barrier: the block's sums are then visible to all its threads.
template <int G, int VW, typename T>
__device__ __forceinline__ void fused_recurrent_step(const T* __restrict__ w_hh,
                                                     const T* __restrict__ h, int64_t P,
                                                     int64_t H, int64_t rows, T* sums,
                                                     bool accumulate) {
  using A = typename Acc<T>::type;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kFusedUnits;
  const int64_t b0 = static_cast<int64_t>(blockIdx.y) * kFusedRows;
  const int64_t nb = rows - b0;  // active rows of this block
  if (nb > 0) {
    // Out-of-range units and rows read a valid row instead (unit 0, the last active row):
    // no branch in the loop; their sums are dropped below.
    const T* w[kFusedWRows];
#pragma unroll
    for (int q = 0; q < kFusedWRows; ++q) {
      const int r = warp * kFusedWRows + q;  // r = gate * kFusedUnits + unit
      const int64_t j = j0 + r % kFusedUnits;
      w[q] = w_hh + ((r / kFusedUnits) * H + (j < H ? j : 0)) * P;
    }
    const T* hr[kFusedRows];
#pragma unroll
    for (int i = 0; i < kFusedRows; ++i) hr[i] = h + (b0 + (i < nb ? i : nb - 1)) * P;
    A acc[32];
#pragma unroll
    for (int n = 0; n < 32; ++n) acc[n] = A(0);
    for (int64_t k = static_cast<int64_t>(lane) * VW; k < P; k += 32 * VW) {
      T wv[kFusedWRows][VW], hv[kFusedRows][VW];
#pragma unroll
      for (int q = 0; q < kFusedWRows; ++q) load_pack<VW>(w[q] + k, wv[q]);
#pragma unroll
      for (int i = 0; i < kFusedRows; ++i) load_pack<VW>(hr[i] + k, hv[i]);
#pragma unroll
      for (int e = 0; e < VW; ++e)
#pragma unroll
        for (int i = 0; i < kFusedRows; ++i)
#pragma unroll
          for (int q = 0; q < kFusedWRows; ++q)
            acc[q * kFusedRows + i] += static_cast<A>(wv[q][e]) * static_cast<A>(hv[i][e]);
    }
    const A mine = warp_reduce_scatter(acc, lane);  // the sum of (q, i) = (lane / 8, lane % 8)
    const int q = lane / kFusedRows, i = lane % kFusedRows;
    const int r = warp * kFusedWRows + q;
    const int64_t j = j0 + r % kFusedUnits;
    if (j < H && i < nb) {
      T* s = sums + (b0 + i) * G * H + (r / kFusedUnits) * H + j;
      *s = static_cast<T>(accumulate ? static_cast<A>(*s) + mine : mine);
    }
  }
  __syncthreads();
}

// Calls elem(b, j) for every unit j < H and row b < B of this block (after the barrier of
// fused_recurrent_step).
template <typename Elem>
__device__ __forceinline__ void for_each_block_elem(int64_t H, int64_t B, const Elem& elem) {
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kFusedUnits;
  const int64_t b0 = static_cast<int64_t>(blockIdx.y) * kFusedRows;
  for (int idx = threadIdx.x; idx < kFusedUnits * kFusedRows; idx += blockDim.x) {
    const int64_t j = j0 + idx % kFusedUnits, b = b0 + idx / kFusedUnits;
    if (j < H && b < B) elem(b, j);
  }
}

}  // namespace fused_rnn::cuda
