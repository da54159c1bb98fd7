// What the CPU layer ops of every cell share: where a step reads and writes its state,
// which rows are still running, copying and clearing rows, and the dtype the kernels
// compute in.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "../grad_buffer.h"

namespace fused_rnn::cpu {

// Where step t reads its state from and writes it to (see lstm_args.h, gru_args.h).
inline int64_t slot_in(int64_t t, bool reverse) { return reverse ? t + 1 : t; }
inline int64_t slot_out(int64_t t, bool reverse) { return reverse ? t : t + 1; }

inline bool row_active(const int64_t* len, int64_t b, int64_t t) {
  return len == nullptr || len[b] > t;
}

template <typename S>
inline void copy_row(S* dst, const S* src, int64_t n) {
  std::memcpy(dst, src, sizeof(S) * n);
}

template <typename S>
inline void zero_row(S* dst, int64_t n) {
  std::fill(dst, dst + n, S(0));
}

// bfloat16 and float16 run in float32 (so states accumulate in float32).
inline at::ScalarType work_dtype(const at::Tensor& x) {
  const bool half = x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf;
  return half ? at::kFloat : x.scalar_type();
}

inline at::Tensor as_work(const at::Tensor& t, at::ScalarType dt) {
  return t.to(dt).contiguous();
}

inline std::optional<at::Tensor> as_work(const std::optional<at::Tensor>& t, at::ScalarType dt) {
  if (!t.has_value() || !t->defined()) return std::nullopt;
  return as_work(*t, dt);
}

// The lengths tensor as a contiguous tensor, undefined without lengths.
inline at::Tensor lengths_or_undefined(const std::optional<at::Tensor>& lengths) {
  return lengths.has_value() && lengths->defined() ? lengths->contiguous() : at::Tensor();
}

}  // namespace fused_rnn::cpu
