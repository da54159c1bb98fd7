// Launch helpers for the CUDA kernels: grid sizing on torch's current stream, error
// checks that name the op, and aligned vector packs for the pointwise kernels.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

// Every CUDA runtime call goes through this: a failure raises (RuntimeError in Python)
// naming the op and the call.
#define FR_CUDA_CHECK(op, expr)                                                           \
  do {                                                                                    \
    const cudaError_t fr_err_ = (expr);                                                   \
    TORCH_CHECK(fr_err_ == cudaSuccess, op, ": CUDA call ", #expr, " failed: ",           \
                cudaGetErrorString(fr_err_));                                             \
  } while (0)

namespace fused_rnn::cuda {

constexpr int kThreads = 256;

// Blocks for n threads of work with a grid-stride loop: enough to fill the GPU, and
// never more than the grid limit (the loop covers the rest).
inline unsigned int blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 1 << 20));
}

// Checks the launch just made (bad configuration, no kernel image for this GPU...).
inline void check_launch(const char* op, const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, op, ": launch of CUDA kernel ", kernel, " failed: ",
              cudaGetErrorString(err));
}

// N elements of S moved as one aligned vector access (16 bytes for N*sizeof(S) = 16).
template <typename S, int N>
struct alignas(sizeof(S) * N) Pack {
  S v[N];
};

template <int N, typename S>
__device__ __forceinline__ void load_pack(const S* src, S* dst) {
  const Pack<S, N> p = *reinterpret_cast<const Pack<S, N>*>(src);
#pragma unroll
  for (int k = 0; k < N; ++k) dst[k] = p.v[k];
}

template <int N, typename S>
__device__ __forceinline__ void store_pack(S* dst, const S* src) {
  Pack<S, N> p;
#pragma unroll
  for (int k = 0; k < N; ++k) p.v[k] = src[k];
  *reinterpret_cast<Pack<S, N>*>(dst) = p;
}

// Elements of S per 16-byte access.
template <typename S>
constexpr int vec_width() {
  return sizeof(S) >= 16 ? 1 : static_cast<int>(16 / sizeof(S));
}

// Whether p (nullptr counts as aligned) can be accessed N elements at a time.
template <int N, typename S>
inline bool pack_aligned(const S* p) {
  return reinterpret_cast<uintptr_t>(p) % (sizeof(S) * N) == 0;
}

}  // namespace fused_rnn::cuda
