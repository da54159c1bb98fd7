// What the CUDA layer ops of every cell share: where a step reads and writes its state,
// which rows are still running, dtype dispatch and the device copy of lengths.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>

#include <optional>

#include "../grad_buffer.h"

namespace fused_rnn::cuda {

// Where step t reads its state from and writes it to (see lstm_args.h, gru_args.h).
inline int64_t slot_in(int64_t t, bool reverse) { return reverse ? t + 1 : t; }
inline int64_t slot_out(int64_t t, bool reverse) { return reverse ? t : t + 1; }

__device__ __forceinline__ bool row_active(const int64_t* len, int64_t b, int64_t t) {
  return len == nullptr || len[b] > t;
}

// Grid-stride loop over [0, n).
#define FR_KERNEL_LOOP(idx, n)                                                          \
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;       \
       idx < (n); idx += static_cast<int64_t>(gridDim.x) * blockDim.x)

template <typename T>
T* ptr(const at::Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr;
}

// Float32 keeps what float16/bfloat16 cannot: the LSTM cell state, bias and state
// gradients.
inline at::ScalarType cell_dtype(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 ? at::kFloat : t;
}

// Calls fn(T{}, C{}) with the storage type T of dtype t and the type C = cell_dtype(t).
template <typename Fn>
void dispatch_types(const char* op, at::ScalarType t, const Fn& fn) {
  switch (t) {
    case at::kFloat: fn(float{}, float{}); break;
    case at::kDouble: fn(double{}, double{}); break;
    case at::kHalf: fn(at::Half{}, float{}); break;
    case at::kBFloat16: fn(at::BFloat16{}, float{}); break;
    default: TORCH_CHECK(false, op, ": unsupported dtype ", t);
  }
}

// lengths (CPU) copied to the device once per call, before any kernel reads it.
// Not inside a CUDA graph capture: the per-step GEMM row counts are decided on the host
// from these lengths, so a graph would replay this call's lengths whatever the batch it is
// replayed on holds.
inline at::Tensor lengths_on(const char* op, const std::optional<at::Tensor>& lengths,
                             const at::Device& dev) {
  if (!lengths.has_value() || !lengths->defined()) return at::Tensor();
  TORCH_CHECK(c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None,
              op, ": per-row lengths (a PackedSequence) cannot be captured in a CUDA graph: "
              "capture padded input without lengths, or run this call outside the graph");
  // From pinned memory, without blocking: a blocking copy from pageable memory synchronizes
  // the stream, so every varlen layer call stalled the host until the GPU had drained. A
  // fresh pinned buffer (not the caller's, which may already be pinned and be rewritten
  // before the copy runs), which the host allocator does not reuse before the copy has run.
  at::Tensor staged = at::empty(lengths->sizes(), lengths->options().pinned_memory(true));
  staged.copy_(*lengths);
  return staged.to(at::TensorOptions().device(dev), /*non_blocking=*/true, /*copy=*/true);
}

}  // namespace fused_rnn::cuda
