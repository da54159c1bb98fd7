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

// The ops' arguments in the working dtype, contiguous; as they are where they already
// are (without a dispatched to(), ~0.5-1 us each, 6-8 per call: a tenth of a one-step op).
inline at::Tensor as_work(const at::Tensor& t, at::ScalarType dt) {
  if (t.scalar_type() == dt && t.is_contiguous()) return t;
  return t.to(dt).contiguous();
}

// t's data, or null for an undefined tensor (an operand a kernel does not read).
template <typename S>
inline S* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<S>() : nullptr;
}

// t's data where wanted, else null (a gradient the kernel does not form).
template <typename S>
inline S* data_if(bool wanted, const at::Tensor& t) {
  return wanted ? t.data_ptr<S>() : nullptr;
}

// An op's result in the caller's dtype dt (bfloat16 and float16 inputs run in float32).
inline at::Tensor as_out(const at::Tensor& t, at::ScalarType dt) {
  return t.scalar_type() == dt ? t : t.to(dt);
}

// A new contiguous tensor of `sizes` and `opts` holding the bytes at src (as many as it
// has): a memcpy, no dispatched ops.
inline at::Tensor copy_of(const void* src, at::IntArrayRef sizes, const at::TensorOptions& opts) {
  at::Tensor out = at::empty(sizes, opts);
  const int64_t bytes = out.numel() * out.element_size();
  if (bytes > 0) std::memcpy(out.data_ptr(), src, bytes);
  return out;
}

// A fresh contiguous copy of t in dtype dt (a state the backward updates in place; the
// caller's tensor is never written).
inline at::Tensor fresh_copy(const at::Tensor& t, at::ScalarType dt) {
  if (t.scalar_type() != dt || !t.is_contiguous())
    return t.to(dt, false, /*copy=*/true).contiguous();
  return copy_of(t.data_ptr(), t.sizes(), t.options());
}

// b_ih + b_hh in dtype dt, or nothing without a bias (the LSTM and RNN cells add one sum).
inline std::optional<at::Tensor> bias_sum(const std::optional<at::Tensor>& b_ih,
                                          const std::optional<at::Tensor>& b_hh,
                                          at::ScalarType dt) {
  if (!b_ih.has_value() || !b_ih->defined()) return std::nullopt;
  const at::Tensor a = as_work(*b_ih, dt), b = as_work(*b_hh, dt);
  at::Tensor out = at::empty(a.sizes(), a.options());
  AT_DISPATCH_FLOATING_TYPES(dt, "bias_sum", [&] {
    const scalar_t* pa = a.data_ptr<scalar_t>();
    const scalar_t* pb = b.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    const int64_t n = out.numel();
    for (int64_t j = 0; j < n; ++j) po[j] = pa[j] + pb[j];
  });
  return out;
}

inline std::optional<at::Tensor> as_work(const std::optional<at::Tensor>& t, at::ScalarType dt) {
  if (!t.has_value() || !t->defined()) return std::nullopt;
  return as_work(*t, dt);
}

// Where slot `slot` of a contiguous buf [S, ...] starts (slots are buf[0], buf[1], ...).
inline char* slot_ptr(const at::Tensor& buf, int64_t slot) {
  TORCH_INTERNAL_ASSERT(buf.is_contiguous() && slot >= 0 && slot < buf.size(0),
                        "slot_ptr: slot ", slot, " of a buffer of ", buf.size(0));
  const int64_t slot_bytes = buf.numel() / buf.size(0) * buf.element_size();
  return static_cast<char*>(buf.data_ptr()) + slot * slot_bytes;
}

// buf[slot] = src (the ops' own state buffers, and states already through as_work: both
// contiguous, of one dtype). Through ATen (a select, then copy_) this was ~3 us of a
// one-step call's ~13 us below autograd.
inline void set_slot(const at::Tensor& buf, int64_t slot, const at::Tensor& src) {
  TORCH_INTERNAL_ASSERT(src.is_contiguous() && src.scalar_type() == buf.scalar_type() &&
                            src.numel() * buf.size(0) == buf.numel(),
                        "set_slot: src must be a contiguous slot of the buffer's dtype");
  const int64_t bytes = src.numel() * src.element_size();
  if (bytes > 0) std::memcpy(slot_ptr(buf, slot), src.data_ptr(), bytes);
}

// A new tensor of dtype dt holding buf[slot] (a final state handed to the caller, which
// must not alias the saved states).
inline at::Tensor slot_copy(const at::Tensor& buf, int64_t slot, at::ScalarType dt) {
  if (dt != buf.scalar_type()) return buf[slot].to(dt, false, /*copy=*/true);
  return copy_of(slot_ptr(buf, slot), buf.sizes().slice(1), buf.options());
}

// The lengths tensor as a contiguous tensor, undefined without lengths.
inline at::Tensor lengths_or_undefined(const std::optional<at::Tensor>& lengths) {
  return lengths.has_value() && lengths->defined() ? lengths->contiguous() : at::Tensor();
}

}  // namespace fused_rnn::cpu
