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

// An op's result in the caller's dtype dt (bfloat16 and float16 inputs run in float32).
inline at::Tensor as_out(const at::Tensor& t, at::ScalarType dt) {
  return t.scalar_type() == dt ? t : t.to(dt);
}

// A fresh contiguous copy of t in dtype dt (a state the backward updates in place; the
// caller's tensor is never written).
inline at::Tensor fresh_copy(const at::Tensor& t, at::ScalarType dt) {
  if (t.scalar_type() != dt || !t.is_contiguous())
    return t.to(dt, false, /*copy=*/true).contiguous();
  at::Tensor out = at::empty(t.sizes(), t.options());
  const int64_t bytes = t.numel() * t.element_size();
  if (bytes > 0) std::memcpy(out.data_ptr(), t.data_ptr(), bytes);
  return out;
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

// buf [S, ...]: buf[slot] = src, src of buf[slot]'s shape. A memcpy where both are
// contiguous and of one dtype: through ATen (a select, then copy_) it was ~3 us of a
// one-step call's ~13 us below autograd.
inline void set_slot(const at::Tensor& buf, int64_t slot, const at::Tensor& src) {
  if (!buf.is_contiguous() || !src.is_contiguous() || src.scalar_type() != buf.scalar_type()) {
    buf[slot].copy_(src);
    return;
  }
  const int64_t bytes = src.numel() * src.element_size();
  TORCH_INTERNAL_ASSERT(slot >= 0 && slot < buf.size(0) &&
                            src.numel() * buf.size(0) == buf.numel(),
                        "set_slot: slot or shape out of range");
  if (bytes > 0)
    std::memcpy(static_cast<char*>(buf.data_ptr()) + slot * bytes, src.data_ptr(), bytes);
}

// A new tensor of dtype dt holding buf[slot] (a final state handed to the caller, which
// must not alias the saved states).
inline at::Tensor slot_copy(const at::Tensor& buf, int64_t slot, at::ScalarType dt) {
  if (dt != buf.scalar_type() || !buf.is_contiguous()) return buf[slot].to(dt, false, true);
  at::Tensor out = at::empty(buf.sizes().slice(1), buf.options());
  const int64_t bytes = out.numel() * out.element_size();
  if (bytes > 0)
    std::memcpy(out.data_ptr(), static_cast<const char*>(buf.data_ptr()) + slot * bytes, bytes);
  return out;
}

// The lengths tensor as a contiguous tensor, undefined without lengths.
inline at::Tensor lengths_or_undefined(const std::optional<at::Tensor>& lengths) {
  return lengths.has_value() && lengths->defined() ? lengths->contiguous() : at::Tensor();
}

}  // namespace fused_rnn::cpu
