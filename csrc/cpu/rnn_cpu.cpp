// CPU implementation of the Elman RNN layer ops (argument layout: rnn_args.h).
//
// Forward: the input projection of every step's running rows goes into y (input_projection.h:
// one GEMM over all steps when no row has finished; a one-step call's tiles project their own
// rows and units inside the step instead), then the time loop on one team of threads
// (step_team.h): per step, thread p adds h_prev times its packed rows of W_hh (all of them for
// its batch rows when the team splits the batch) to its columns of y and turns them into the
// new state, in place (y is its own pre-activation buffer). Backward walks the steps in
// reverse the same way, then forms dx and every weight gradient as one large GEMM (or sum)
// over all steps. Nothing is allocated inside the time loops.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <type_traits>

#include "../rnn_args.h"
#include "../rnn_step.h"
#include "bf16_layer.h"
#include "bias_grad.h"
#include "blas.h"
#include "input_projection.h"
#include "layer_util.h"
#include "recurrent_slices.h"
#include "step_team.h"
#include "vec_ops.h"
#include "work_memory.h"

namespace fused_rnn::cpu {
namespace {

// b16: the bfloat16 operands where the products run in bfloat16 (bf16_layer.h; then x,
// w_ih and w_hh are not read), else null.
template <typename S, bool kRelu>
void rnn_forward_kernel(const LayerDims& d, const S* x, const S* w_ih, const S* w_hh,
                        const S* bias, const int64_t* len, const std::vector<int64_t>& rows,
                        bool reverse, S* y, S* hs, const Bf16Operands* b16) {
  const int64_t T = d.T, B = d.B, I = d.I, H = d.H;
  // y[t, b, :] = x[t, b, :] W_ih^T for every row that runs (all steps at once where every
  // row runs); in a one-step call every tile projects its own rows and units.
  const bool in_step = project_input<S>(T, B, I, H, x, w_ih, y, rows, b16);
  // A tile owns hidden units [lo, hi) (its rows of W_hh, its columns of y and h) of its
  // batch rows [b0, b1).
  const int64_t weight_bytes = H * H * weight_element_bytes<S>(b16 != nullptr);  // read every step
  const TeamPlan plan =
      plan_team(B, H, at::vec::Vectorized<S>::size(), weight_bytes, len, T, in_step);
  const StepProduct<S> whh(w_hh, b16, 1, H, H, plan, T);
  const GateRowSlices<S> wih(in_step ? w_ih : nullptr, 1, H, I, plan.units, plan.max_rows(), T,
                             plan.gemm_rows_vary());
  run_steps(T, plan, [&](int64_t s, const Tile& tl) {
    const int64_t t = reverse ? T - 1 - s : s, lo = tl.lo, hi = tl.hi, b0 = tl.b0;
    if (lo >= hi) return;
    S* y_t = y + t * B * H;
    const S* h_in = hs + slot_in(t, reverse) * B * H;
    S* h_out = hs + slot_out(t, reverse) * B * H;
    const bf16* h16_in = b16 != nullptr ? b16->h_at(slot_in(t, reverse)) : nullptr;
    bf16* h16_out = b16 != nullptr ? b16->h_at(slot_out(t, reverse)) : nullptr;
    if (in_step)
      wih.gemm(tl.u, tl.gemm_rows(rows[t]), x + (t * B + b0) * I, I, S(0), y_t + b0 * H, H);
    whh.gemm(tl.u, tl.gemm_rows(rows[t]), h_in + b0 * H, h16_in + b0 * H, H, S(1),
             y_t + b0 * H, H);
    for (int64_t b = b0; b < tl.b1; ++b) {
      S* y_row = y_t + b * H;
      if (!row_active(len, b, t)) {  // a finished row keeps its state and outputs zeros
        copy_row(h_out + b * H + lo, h_in + b * H + lo, hi - lo);
        if (b16 != nullptr) copy_row(h16_out + b * H + lo, h16_in + b * H + lo, hi - lo);
        zero_row(y_row + lo, hi - lo);
        continue;
      }
      S* h_row = h_out + b * H;
      for_each_lane<S>(lo, hi, [&](auto lane, int64_t j) {
        rnn_forward_elem<decltype(lane), kRelu>(y_row, bias, h_row, y_row, j);
      });
      if (b16 != nullptr) round_to_bf16(as_float(h_row) + lo, h16_out + b * H + lo, hi - lo);
    }
  });
}

// Returns db (the bias gradient; empty without a bias or !need_dw). dx is null when x
// needs no gradient; dw_ih and dw_hh are not written when !need_dw. b16: the bfloat16
// operands where the products run in bfloat16 (then x, w_ih and w_hh are not read, and the
// products after the loop are the caller's: bf16_grad_products), else null.
template <typename S, bool kRelu>
at::Tensor rnn_backward_kernel(const LayerDims& d, const S* dy, const S* x, const S* w_ih,
                               const S* w_hh, const int64_t* len, const std::vector<int64_t>& rows,
                               bool reverse, bool has_bias, bool need_dw, bool need_dh0,
                               const S* hs, S* dh, S* da, S* dx, S* dw_ih, S* dw_hh,
                               const at::TensorOptions& opts, const Bf16Grads* b16) {
  const int64_t T = d.T, B = d.B, I = d.I, H = d.H;
  // A tile owns hidden units [lo, hi) (its columns of dh = da W_hh, and its cells) of
  // its batch rows [b0, b1).
  const int64_t weight_bytes = H * H * weight_element_bytes<S>(b16 != nullptr);  // every step
  const TeamPlan plan = plan_team(B, H, at::vec::Vectorized<S>::size(), weight_bytes, len, T);
  const StepGradProduct<S> whh(w_hh, b16, H, H, plan.units, plan, T);
  bf16* da16 = b16 != nullptr ? b16->dg_in : nullptr;  // da in bfloat16
  const BiasGradSums<S> db(has_bias && need_dw, plan, H, opts);
  auto step_of = [&](int64_t s) { return reverse ? s : T - 1 - s; };  // forward order, backwards
  run_steps(T, plan, [&](int64_t s, const Tile& tl) {
    const int64_t t = step_of(s), lo = tl.lo, hi = tl.hi, b0 = tl.b0;
    if (lo >= hi) return;
    if (s > 0) {  // dL/dh_prev of the step after this one; its pass zeroed active rows
      const int64_t t_next = step_of(s - 1);  // active rows of da there; the rest are 0
      const int64_t off = (t_next * B + b0) * H;
      whh.gemm(tl.u, tl.gemm_rows(rows[t_next]), da + off, offset_or_null(da16, off), H, S(1),
               dh + b0 * H, H);
    }
    const S* h_t = hs + slot_out(t, reverse) * B * H;
    const S* dy_t = dy + t * B * H;
    S* da_t = da + t * B * H;
    for (int64_t b = b0; b < tl.b1; ++b) {
      S* da_row = da_t + b * H;
      if (!row_active(len, b, t)) {  // a finished row passes dh through untouched
        zero_row(da_row + lo, hi - lo);
        if (da16 != nullptr) round_gate_columns(da_row, da16 + (t * B + b) * H, 1, H, lo, hi);
        continue;
      }
      const S* h_row = h_t + b * H;
      S* dh_row = dh + b * H;
      const S* dy_row = dy_t + b * H;
      for_each_lane<S>(lo, hi, [&](auto lane, int64_t j) {
        rnn_backward_elem<decltype(lane), kRelu>(h_row, dh_row, dy_row, da_row, j);
      });
      if (da16 != nullptr) round_gate_columns(da_row, da16 + (t * B + b) * H, 1, H, lo, hi);
      if (db.wanted()) db.add(tl, 0, da_row, 1, H, lo, hi);
    }
  });
  if (T > 0 && need_dh0) {  // dL/dh_prev of the first step, h0's gradient
    const int64_t off = step_of(T - 1) * B * H;
    whh.add_all_columns(rows[step_of(T - 1)], da + off, offset_or_null(da16, off), H, dh, H);
  }
  if (b16 != nullptr) return db.total(0, H);
  const int64_t TB = T * B;
  if (dx != nullptr) large_gemm<S>(false, false, TB, I, H, S(1), da, H, w_ih, I, S(0), dx, I);
  if (need_dw) {
    large_gemm<S>(true, false, H, I, TB, S(1), da, H, x, I, S(0), dw_ih, I);
    const S* h_prev = hs + slot_in(0, reverse) * B * H;  // hs[t + reverse] for t = 0..T-1
    large_gemm<S>(true, false, H, H, TB, S(1), da, H, h_prev, H, S(0), dw_hh, H);
  }
  return db.total(0, H);
}

// Calls fn(std::integral_constant<bool, relu>) so kernels get the activation as a constant.
template <typename Fn>
void with_activation(bool relu, const Fn& fn) {
  if (relu) {
    fn(std::true_type());
  } else {
    fn(std::false_type());
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rnn_forward_cpu(
    const at::Tensor& x_in, const at::Tensor& w_ih_in, const at::Tensor& w_hh_in,
    const std::optional<at::Tensor>& b_ih_in, const std::optional<at::Tensor>& b_hh_in,
    const at::Tensor& h0_in, const std::optional<at::Tensor>& lengths, bool reverse,
    bool relu) {
  const char* op = "fused_rnn::rnn_forward";
  const LayerDims d =
      check_rnn_forward_args(op, x_in, w_ih_in, w_hh_in, b_ih_in, b_hh_in, h0_in, lengths);
  const auto dt = work_dtype(x_in);
  // bfloat16 input on a CPU with AVX512-BF16: the products in bfloat16 (as lstm_cpu.cpp's;
  // the float32 copies of x and the weights are not made then).
  const bool b16 = x_in.scalar_type() == at::kBFloat16 && bf16_products_for(d.T, d.B);
  const at::Tensor x = b16 ? at::Tensor() : as_work(x_in, dt),
                   w_ih = b16 ? at::Tensor() : as_work(w_ih_in, dt),
                   w_hh = b16 ? at::Tensor() : as_work(w_hh_in, dt), h0 = as_work(h0_in, dt);
  const auto bias = bias_sum(b_ih_in, b_hh_in, dt);
  const auto opts = h0.options();
  const int64_t T = d.T, B = d.B, H = d.H;
  at::Tensor y = work_empty({T, B, H}, opts);
  at::Tensor hs = work_empty({T + 1, B, H}, opts);
  const int64_t first = reverse ? T : 0, last = reverse ? 0 : T;
  set_slot(hs, first, h0);
  const auto rows = rows_active(lengths, T, B);
  const at::Tensor len = lengths_or_undefined(lengths);
  const Bf16Layer bf16_args =
      b16 ? bf16_layer(x_in, w_ih_in, w_hh_in, h0_in, first) : Bf16Layer{};
  const Bf16Operands operands = b16 ? bf16_args.operands() : Bf16Operands{};
  AT_DISPATCH_FLOATING_TYPES(dt, "rnn_forward_cpu", [&] {
    with_activation(relu, [&](auto act) {
      rnn_forward_kernel<scalar_t, decltype(act)::value>(
          d, data_or_null<scalar_t>(x), data_or_null<scalar_t>(w_ih), data_or_null<scalar_t>(w_hh),
          bias.has_value() ? bias->data_ptr<scalar_t>() : nullptr,
          len.defined() ? len.data_ptr<int64_t>() : nullptr, rows, reverse,
          y.data_ptr<scalar_t>(), hs.data_ptr<scalar_t>(), b16 ? &operands : nullptr);
    });
  });
  const auto out_dt = x_in.scalar_type();
  return {as_out(y, out_dt), slot_copy(hs, last, out_dt), hs};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_backward_cpu(
    const at::Tensor& dy_in, const at::Tensor& dh_n_in, const at::Tensor& x_in,
    const at::Tensor& w_ih_in, const at::Tensor& w_hh_in,
    const std::optional<at::Tensor>& lengths, bool reverse, bool relu, bool has_bias,
    const at::Tensor& hs_in, bool need_dx, bool need_dw, bool need_dh0) {
  const char* op = "fused_rnn::rnn_backward";
  const LayerDims d =
      check_rnn_backward_args(op, dy_in, dh_n_in, x_in, w_ih_in, w_hh_in, lengths, hs_in);
  const auto dt = work_dtype(x_in);
  // The products in bfloat16 where the forward ran them so (rnn_forward_cpu); the float32
  // copies of x and the weights are not made then.
  const bool b16 = x_in.scalar_type() == at::kBFloat16 && bf16_products_for(d.T, d.B);
  const at::Tensor dy = as_work(dy_in, dt), x = b16 ? at::Tensor() : as_work(x_in, dt),
                   w_ih = b16 ? at::Tensor() : as_work(w_ih_in, dt),
                   w_hh = b16 ? at::Tensor() : as_work(w_hh_in, dt), hs = hs_in.contiguous();
  const int64_t T = d.T, B = d.B, I = d.I, H = d.H;
  const auto opts = dy.options();
  // The running dL/dh, updated in place step by step (a fresh copy: the caller's
  // tensor is never written).
  at::Tensor dh = fresh_copy(dh_n_in, dt);
  at::Tensor da = work_empty({T, B, H}, opts);
  // dx and the weight gradients the kernel forms (with bfloat16 products,
  // bf16_grad_products forms them after it).
  const bool loop_dx = need_dx && !b16, loop_dw = need_dw && !b16;
  at::Tensor dx = work_grad_buffer(loop_dx, {T, B, I}, opts);
  at::Tensor dw_ih = work_grad_buffer(loop_dw, {H, I}, opts);
  at::Tensor dw_hh = work_grad_buffer(loop_dw, {H, H}, opts);
  const auto rows = rows_active(lengths, T, B);
  const at::Tensor len = lengths_or_undefined(lengths);
  const Bf16BackLayer bf16_args = b16 ? bf16_back_layer(w_hh_in, T, B, H, 0) : Bf16BackLayer{};
  const Bf16Grads operands = b16 ? bf16_args.grads() : Bf16Grads{};
  at::Tensor db;
  AT_DISPATCH_FLOATING_TYPES(dt, "rnn_backward_cpu", [&] {
    with_activation(relu, [&](auto act) {
      db = rnn_backward_kernel<scalar_t, decltype(act)::value>(
          d, dy.data_ptr<scalar_t>(), data_or_null<scalar_t>(x), data_or_null<scalar_t>(w_ih),
          data_or_null<scalar_t>(w_hh), len.defined() ? len.data_ptr<int64_t>() : nullptr, rows,
          reverse, has_bias, need_dw, need_dh0, hs.data_ptr<scalar_t>(), dh.data_ptr<scalar_t>(),
          da.data_ptr<scalar_t>(), data_if<scalar_t>(loop_dx, dx),
          data_if<scalar_t>(loop_dw, dw_ih), data_if<scalar_t>(loop_dw, dw_hh), opts,
          b16 ? &operands : nullptr);
    });
  });
  if (b16)
    bf16_grad_products(bf16_args, x_in, w_ih_in, hs.narrow(0, slot_in(0, reverse), T), need_dx,
                       need_dw, dx, dw_ih, dw_hh);
  const auto out_dt = x_in.scalar_type();
  return {as_out(dx, out_dt), as_out(dw_ih, out_dt), as_out(dw_hh, out_dt), as_out(db, out_dt),
          state_grad(need_dh0, [&] { return as_out(dh, out_dt); }, x_in.options())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_rnn, CPU, m) {
  m.impl("rnn_forward", &rnn_forward_cpu);
  m.impl("rnn_backward", &rnn_backward_cpu);
}

}  // namespace fused_rnn::cpu
