// What every CPU layer op shares: where a step's state lives in the saved [T+1, B, F]
// buffers, which rows are still running, and the dtype the time loops compute in.
// (lstm_cpu.cpp predates this header and keeps private copies of the same rules.)
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>

namespace fused_rnn::cpu::layer {

// Step t reads its state from hs[slot_in] and writes it to hs[slot_out] (see lstm_args.h).
inline int64_t slot_in(int64_t t, bool reverse) { return reverse ? t + 1 : t; }
inline int64_t slot_out(int64_t t, bool reverse) { return reverse ? t : t + 1; }

// Row b runs at step t unless lengths say it has finished (len is null without lengths).
inline bool row_active(const int64_t* len, int64_t b, int64_t t) {
  return len == nullptr || len[b] > t;
}

// bfloat16 runs in float32 (states accumulate in float32, and the BLAS has no bf16 GEMM here).
inline at::ScalarType work_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kBFloat16 ? at::kFloat : x.scalar_type();
}

inline at::Tensor as_work(const at::Tensor& t, at::ScalarType dt) {
  return t.to(dt).contiguous();
}

inline std::optional<at::Tensor> as_work(const std::optional<at::Tensor>& t,
                                         at::ScalarType dt) {
  if (!t.has_value() || !t->defined()) return std::nullopt;
  return as_work(*t, dt);
}

// lengths as a contiguous tensor whose data the loops read, or undefined.
inline at::Tensor lengths_or_undefined(const std::optional<at::Tensor>& lengths) {
  return lengths.has_value() && lengths->defined() ? lengths->contiguous() : at::Tensor();
}

}  // namespace fused_rnn::cpu::layer
