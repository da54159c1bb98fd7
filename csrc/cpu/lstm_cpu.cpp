// CPU implementation of the LSTM layer ops (argument layout: lstm_args.h).
//
// Forward: the input projection of every step's running rows (input_projection.h: one GEMM
// over all steps when no row has finished; a one-step call's tiles project their own rows and
// units inside the step instead), then the time loop on one team of threads
// (step_team.h): per step, thread p multiplies h_prev by its packed slice of W_hh (the 4 gate
// rows of its hidden units; all of W_hh for its rows when the team splits the batch) and runs
// lstm_forward_elem on those units. Backward walks the steps in reverse the same way (its
// slice of dgates W_hh, then the cell's backward on its units), then forms dx and every weight
// gradient as one large GEMM (or sum) over all steps. Nothing is allocated inside the time
// loops. bfloat16 input on a CPU with AVX512-BF16 runs the products in bfloat16, as
// torch.nn's oneDNN LSTM does (bf16_layer.h; sums in float32): the forward's of x, W and the
// state h rounded to bfloat16, the backward's of the gate gradients rounded to bfloat16;
// the cell's math, the states and what is saved stay float32.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../lstm_args.h"
#include "../lstm_step.h"
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

// b16: the bfloat16 operands where the products run in bfloat16 (then x, w_ih and w_hh
// are not read, and there is no projection), else null.
template <typename S>
void lstm_forward_kernel(const LayerDims& d, const S* x, const S* w_ih, const S* w_hh,
                         const S* bias, const S* w_hr, const int64_t* len,
                         const std::vector<int64_t>& rows, bool reverse, S* y, S* gates, S* hs,
                         S* cs, S* h_raw, const Bf16Operands* b16) {
  const int64_t T = d.T, B = d.B, I = d.I, H = d.H, P = d.P, G4 = 4 * H;
  const bool proj = w_hr != nullptr;
  // gates[t, b, :] = x[t, b, :] W_ih^T for every row that runs (all steps at once where
  // every row runs); in a one-step call every tile projects its own rows and units.
  const bool in_step = project_input<S>(T, B, I, G4, x, w_ih, gates, rows, b16);
  // A tile owns hidden units [lo, hi) (their 4 gate columns) and, with a projection,
  // output columns outs of unit block u, for its batch rows [b0, b1).
  const int64_t lanes = at::vec::Vectorized<S>::size();
  // W_hh and W_hr, read every step
  const int64_t weight_bytes =
      (G4 * P + (w_hr != nullptr ? P * H : 0)) * weight_element_bytes<S>(b16 != nullptr);
  const TeamPlan plan = plan_team(B, H, lanes, weight_bytes, len, T, in_step);
  const UnitBlocks outs = split_blocks(P, plan.units.count, lanes);
  const StepProduct<S> whh(w_hh, b16, 4, H, P, plan, T);
  const GateRowSlices<S> wih(in_step ? w_ih : nullptr, 4, H, I, plan.units, plan.max_rows(), T,
                             plan.gemm_rows_vary());
  const GateRowSlices<S> whr(w_hr, 1, P, H, outs, plan.max_rows(), T, plan.gemm_rows_vary());
  // A step is one phase (gates, cell) or, with a projection, two (then r = h_raw W_hr^T,
  // which needs every unit of h_raw).
  const int64_t phases = proj ? 2 : 1;
  run_steps(T * phases, plan, [&](int64_t sp, const Tile& tl) {
    const int64_t s = sp / phases, t = reverse ? T - 1 - s : s;
    const int64_t m = tl.gemm_rows(rows[t]), b0 = tl.b0;
    const S* h_in = hs + slot_in(t, reverse) * B * P;
    S* h_out = hs + slot_out(t, reverse) * B * P;
    S* y_t = y + t * B * P;
    S* hr_t = proj ? h_raw + t * B * H : nullptr;
    if (sp % phases == 1) {
      const int64_t lo = outs.lo(tl.u), hi = outs.hi(tl.u);
      if (lo >= hi) return;
      whr.gemm(tl.u, m, hr_t + b0 * H, H, S(0), y_t + b0 * P, P);
      for (int64_t b = b0; b < tl.b1; ++b) {
        if (row_active(len, b, t)) {
          copy_row(h_out + b * P + lo, y_t + b * P + lo, hi - lo);
        } else {
          copy_row(h_out + b * P + lo, h_in + b * P + lo, hi - lo);
          zero_row(y_t + b * P + lo, hi - lo);
        }
      }
      return;
    }
    const int64_t lo = tl.lo, hi = tl.hi;
    if (lo >= hi) return;
    S* g_t = gates + t * B * G4;
    const S* c_in = cs + slot_in(t, reverse) * B * H;
    S* c_out = cs + slot_out(t, reverse) * B * H;
    // The rounded state in bfloat16 mode: what this step multiplies by, and writes.
    const bf16* h16_in = b16 != nullptr ? b16->h_at(slot_in(t, reverse)) : nullptr;
    bf16* h16_out = b16 != nullptr ? b16->h_at(slot_out(t, reverse)) : nullptr;
    if (in_step) wih.gemm(tl.u, m, x + (t * B + b0) * I, I, S(0), g_t + b0 * G4, G4);
    whh.gemm(tl.u, m, h_in + b0 * P, h16_in + b0 * P, P, S(1), g_t + b0 * G4, G4);
    for (int64_t b = b0; b < tl.b1; ++b) {
      if (!row_active(len, b, t)) {  // a finished row keeps its state and outputs zeros
        copy_row(c_out + b * H + lo, c_in + b * H + lo, hi - lo);
        if (proj) {
          zero_row(hr_t + b * H + lo, hi - lo);  // dW_hr = dr^T h_raw: keep it finite
        } else {
          copy_row(h_out + b * P + lo, h_in + b * P + lo, hi - lo);
          zero_row(y_t + b * P + lo, hi - lo);
          if (b16 != nullptr) copy_row(h16_out + b * P + lo, h16_in + b * P + lo, hi - lo);
        }
        continue;
      }
      S* g = g_t + b * G4;
      S* h_dst = proj ? hr_t + b * H : h_out + b * P;
      S* y_dst = proj ? nullptr : y_t + b * P;
      for_each_lane<S>(lo, hi, [&](auto lane, int64_t j) {
        lstm_forward_elem<decltype(lane)>(g, bias, c_in + b * H, g, c_out + b * H, h_dst, y_dst,
                                          j, H);
      });
      if (b16 != nullptr) round_to_bf16(as_float(h_dst) + lo, h16_out + b * P + lo, hi - lo);
    }
  });
}

// Returns db (the bias gradient; empty without a bias or !need_dw). dx is null when x
// needs no gradient; dw_ih, dw_hh and dw_hr are not written when !need_dw. b16: the
// bfloat16 operands where the products run in bfloat16 (then x, w_ih and w_hh are not
// read, and the products after the loop are the caller's: bf16_grad_products), else null.
template <typename S>
at::Tensor lstm_backward_kernel(const LayerDims& d, const S* dy, const S* x, const S* w_ih,
                                const S* w_hh, const S* w_hr, const int64_t* len,
                                const std::vector<int64_t>& rows, bool reverse, bool has_bias,
                                bool need_dw, bool need_dh0, const S* gates, const S* hs,
                                const S* cs, const S* h_raw, S* dh, S* dc, S* dgates, S* dr,
                                S* dh_raw, S* dx, S* dw_ih, S* dw_hh, S* dw_hr,
                                const at::TensorOptions& opts, const Bf16Grads* b16) {
  const int64_t T = d.T, B = d.B, I = d.I, H = d.H, P = d.P, G4 = 4 * H;
  const bool proj = w_hr != nullptr;
  // A tile owns hidden units [lo, hi) and state columns outs of unit block u (the same
  // blocks without a projection, so dL/dh of its units never leaves the thread), for
  // its batch rows [b0, b1).
  const int64_t lanes = at::vec::Vectorized<S>::size();
  // W_hh and W_hr, read every step
  const int64_t weight_bytes =
      (G4 * P + (w_hr != nullptr ? P * H : 0)) * weight_element_bytes<S>(b16 != nullptr);
  const TeamPlan plan = plan_team(B, H, lanes, weight_bytes, len, T);
  const UnitBlocks units = plan.units, outs = split_blocks(P, units.count, lanes);
  // Block u's columns `outs` of W_hh for dL/dh_prev = dgates W_hh, and its columns
  // `units` of W_hr for dL/dh_raw = dr W_hr.
  const StepGradProduct<S> whh(w_hh, b16, G4, P, outs, plan, T);
  bf16* dg16 = b16 != nullptr ? b16->dg_in : nullptr;  // dgates in bfloat16
  const ColumnSlices<S> whr(w_hr, P, H, units, plan.max_rows(), T, plan.gemm_rows_vary());
  const BiasGradSums<S> db(has_bias && need_dw, plan, G4, opts);
  auto step_of = [&](int64_t s) { return reverse ? s : T - 1 - s; };  // forward order, backwards
  // Phase 0 (state columns): dh += dgates of the step after this one, times W_hh; with a
  // projection also dr = dh + dy. Phase 1 (units): the cell's backward. Without a
  // projection both run in one phase.
  const int64_t phases = proj ? 2 : 1;
  run_steps(T * phases, plan, [&](int64_t sp, const Tile& tl) {
    const int64_t s = sp / phases, t = step_of(s), b0 = tl.b0;
    const S* dy_t = dy + t * B * P;
    S* dr_t = proj ? dr + t * B * P : nullptr;
    if (sp % phases == 0) {
      const int64_t lo = outs.lo(tl.u), hi = outs.hi(tl.u);
      if (lo < hi && s > 0) {
        const int64_t t_next = step_of(s - 1);  // active rows of dgates there; the rest are 0
        const int64_t off = (t_next * B + b0) * G4;
        whh.gemm(tl.u, tl.gemm_rows(rows[t_next]), dgates + off, offset_or_null(dg16, off), G4,
                 S(1), dh + b0 * P, P);
      }
      if (proj && lo < hi) {  // dL/dr of this step, kept for dW_hr
        for (int64_t b = b0; b < tl.b1; ++b) {
          S* drb = dr_t + b * P;
          if (!row_active(len, b, t)) {
            zero_row(drb + lo, hi - lo);
            continue;
          }
          for (int64_t q = lo; q < hi; ++q) {
            drb[q] = dh[b * P + q] + dy_t[b * P + q];
            dh[b * P + q] = S(0);
          }
        }
      }
      if (proj) return;
    }
    const int64_t lo = tl.lo, hi = tl.hi;
    if (lo >= hi) return;
    if (proj) whr.gemm(tl.u, tl.gemm_rows(rows[t]), dr_t + b0 * P, P, S(0), dh_raw + b0 * H, H);
    const S* c_in = cs + slot_in(t, reverse) * B * H;
    const S* c_out = cs + slot_out(t, reverse) * B * H;
    const S* g_t = gates + t * B * G4;
    S* dg_t = dgates + t * B * G4;
    for (int64_t b = b0; b < tl.b1; ++b) {
      S* da = dg_t + b * G4;
      if (!row_active(len, b, t)) {  // a finished row passes dh and dc through untouched
        for (int64_t k = 0; k < 4; ++k) zero_row(da + k * H + lo, hi - lo);
        if (dg16 != nullptr) round_gate_columns(da, dg16 + (t * B + b) * G4, 4, H, lo, hi);
        continue;
      }
      const int64_t ro = b * H;
      S* dhc = proj ? dh_raw + ro : dh + b * P;
      const S* dyc = proj ? nullptr : dy_t + b * P;
      for_each_lane<S>(lo, hi, [&](auto lane, int64_t j) {
        lstm_backward_elem<decltype(lane)>(g_t + b * G4, c_in + ro, c_out + ro, dhc, dyc,
                                           dc + ro, da, j, H);
      });
      if (dg16 != nullptr) round_gate_columns(da, dg16 + (t * B + b) * G4, 4, H, lo, hi);
      if (db.wanted()) db.add(tl, 0, da, 4, H, lo, hi);
    }
  });
  if (T > 0 && need_dh0) {  // dL/dh_prev of the first step, h0's gradient
    const int64_t off = step_of(T - 1) * B * G4;
    whh.add_all_columns(rows[step_of(T - 1)], dgates + off, offset_or_null(dg16, off), G4, dh, P);
  }
  const int64_t TB = T * B;
  if (b16 != nullptr) return db.total(0, G4);
  if (dx != nullptr)
    large_gemm<S>(false, false, TB, I, G4, S(1), dgates, G4, w_ih, I, S(0), dx, I);
  if (need_dw) {
    large_gemm<S>(true, false, G4, I, TB, S(1), dgates, G4, x, I, S(0), dw_ih, I);
    const S* h_prev = hs + slot_in(0, reverse) * B * P;  // hs[t + reverse] for t = 0..T-1
    large_gemm<S>(true, false, G4, P, TB, S(1), dgates, G4, h_prev, P, S(0), dw_hh, P);
    if (proj) large_gemm<S>(true, false, P, H, TB, S(1), dr, P, h_raw, H, S(0), dw_hr, H);
  }
  return db.total(0, G4);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_forward_cpu(const at::Tensor& x_in, const at::Tensor& w_ih_in, const at::Tensor& w_hh_in,
                 const std::optional<at::Tensor>& b_ih_in,
                 const std::optional<at::Tensor>& b_hh_in,
                 const std::optional<at::Tensor>& w_hr_in, const at::Tensor& h0_in,
                 const at::Tensor& c0_in, const std::optional<at::Tensor>& lengths,
                 bool reverse) {
  const char* op = "fused_rnn::lstm_forward";
  const LayerDims d = check_lstm_forward_args(op, x_in, w_ih_in, w_hh_in, b_ih_in, b_hh_in,
                                              w_hr_in, h0_in, c0_in, lengths);
  const auto dt = work_dtype(x_in);
  // bfloat16 input on a CPU with AVX512-BF16: the products in bfloat16, as torch.nn's
  // oneDNN LSTM runs them (twice float32's rate there); the cell, the states and what is
  // saved stay float32. Not with a projection (its products stay float32), nor in calls
  // too short to pay for packing the weights.
  const bool b16 = x_in.scalar_type() == at::kBFloat16 && !w_hr_in.has_value() &&
                   bf16_products_for(d.T, d.B);
  // (The float32 copies of x and the weights are not made then.)
  const at::Tensor x = b16 ? at::Tensor() : as_work(x_in, dt),
                   w_ih = b16 ? at::Tensor() : as_work(w_ih_in, dt),
                   w_hh = b16 ? at::Tensor() : as_work(w_hh_in, dt), h0 = as_work(h0_in, dt),
                   c0 = as_work(c0_in, dt);
  const auto w_hr = as_work(w_hr_in, dt);
  const auto bias = bias_sum(b_ih_in, b_hh_in, dt);
  const auto opts = h0.options();
  const int64_t T = d.T, B = d.B, H = d.H, P = d.P;
  at::Tensor y = work_empty({T, B, P}, opts);
  at::Tensor gates = work_empty({T, B, 4 * H}, opts);
  at::Tensor hs = work_empty({T + 1, B, P}, opts);
  at::Tensor cs = work_empty({T + 1, B, H}, opts);
  at::Tensor h_raw = w_hr.has_value() ? work_empty({T, B, H}, opts) : at::empty({0}, opts);
  const int64_t first = reverse ? T : 0, last = reverse ? 0 : T;
  set_slot(hs, first, h0);
  set_slot(cs, first, c0);
  const auto rows = rows_active(lengths, T, B);
  const at::Tensor len = lengths_or_undefined(lengths);
  const Bf16Layer bf16_args =
      b16 ? bf16_layer(x_in, w_ih_in, w_hh_in, h0_in, first) : Bf16Layer{};
  const Bf16Operands operands = b16 ? bf16_args.operands() : Bf16Operands{};
  AT_DISPATCH_FLOATING_TYPES(dt, "lstm_forward_cpu", [&] {
    lstm_forward_kernel<scalar_t>(
        d, data_or_null<scalar_t>(x), data_or_null<scalar_t>(w_ih), data_or_null<scalar_t>(w_hh),
        bias.has_value() ? bias->data_ptr<scalar_t>() : nullptr,
        w_hr.has_value() ? w_hr->data_ptr<scalar_t>() : nullptr,
        len.defined() ? len.data_ptr<int64_t>() : nullptr, rows, reverse, y.data_ptr<scalar_t>(),
        gates.data_ptr<scalar_t>(), hs.data_ptr<scalar_t>(), cs.data_ptr<scalar_t>(),
        w_hr.has_value() ? h_raw.data_ptr<scalar_t>() : nullptr, b16 ? &operands : nullptr);
  });
  const auto out_dt = x_in.scalar_type();
  return {as_out(y, out_dt), slot_copy(hs, last, out_dt), slot_copy(cs, last, out_dt),
          gates, hs, cs, h_raw};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_backward_cpu(const at::Tensor& dy_in, const at::Tensor& dh_n_in, const at::Tensor& dc_n_in,
                  const at::Tensor& x_in, const at::Tensor& w_ih_in, const at::Tensor& w_hh_in,
                  const std::optional<at::Tensor>& w_hr_in,
                  const std::optional<at::Tensor>& lengths, bool reverse, bool has_bias,
                  const at::Tensor& gates_in, const at::Tensor& hs_in, const at::Tensor& cs_in,
                  const at::Tensor& h_raw_in, bool need_dx, bool need_dw, bool need_dh0) {
  const char* op = "fused_rnn::lstm_backward";
  const LayerDims d = check_lstm_backward_args(op, dy_in, dh_n_in, dc_n_in, x_in, w_ih_in,
                                               w_hh_in, w_hr_in, lengths, gates_in, hs_in,
                                               cs_in, h_raw_in);
  const auto dt = work_dtype(x_in);
  // The products in bfloat16 where the forward ran them so (lstm_forward_cpu); the float32
  // copies of x and the weights are not made then.
  const bool b16 = x_in.scalar_type() == at::kBFloat16 && !w_hr_in.has_value() &&
                   bf16_products_for(d.T, d.B);
  const at::Tensor dy = as_work(dy_in, dt), x = b16 ? at::Tensor() : as_work(x_in, dt),
                   w_ih = b16 ? at::Tensor() : as_work(w_ih_in, dt),
                   w_hh = b16 ? at::Tensor() : as_work(w_hh_in, dt),
                   gates = gates_in.contiguous(), hs = hs_in.contiguous(),
                   cs = cs_in.contiguous(), h_raw = h_raw_in.contiguous();
  const auto w_hr = as_work(w_hr_in, dt);
  const bool proj = w_hr.has_value();
  const int64_t T = d.T, B = d.B, I = d.I, H = d.H, P = d.P;
  const auto opts = dy.options();
  // Running gradients of the state, updated in place step by step (fresh copies:
  // the caller's tensors are never written).
  at::Tensor dh = fresh_copy(dh_n_in, dt);
  at::Tensor dc = fresh_copy(dc_n_in, dt);
  at::Tensor dgates = work_empty({T, B, 4 * H}, opts);
  at::Tensor dr = proj ? work_empty({T, B, P}, opts) : at::Tensor();
  at::Tensor dh_raw = proj ? at::empty({B, H}, opts) : at::Tensor();
  // dx and the weight gradients the kernel forms (with bfloat16 products,
  // bf16_grad_products forms them after it).
  const bool loop_dx = need_dx && !b16, loop_dw = need_dw && !b16;
  at::Tensor dx = work_grad_buffer(loop_dx, {T, B, I}, opts);
  at::Tensor dw_ih = work_grad_buffer(loop_dw, {4 * H, I}, opts);
  at::Tensor dw_hh = work_grad_buffer(loop_dw, {4 * H, P}, opts);
  at::Tensor dw_hr = work_grad_buffer(need_dw && proj, {P, H}, opts);
  const auto rows = rows_active(lengths, T, B);
  const at::Tensor len = lengths_or_undefined(lengths);
  const Bf16BackLayer bf16_args = b16 ? bf16_back_layer(w_hh_in, T, B, 4 * H, 0) : Bf16BackLayer{};
  const Bf16Grads operands = b16 ? bf16_args.grads() : Bf16Grads{};
  at::Tensor db;
  AT_DISPATCH_FLOATING_TYPES(dt, "lstm_backward_cpu", [&] {
    db = lstm_backward_kernel<scalar_t>(
        d, dy.data_ptr<scalar_t>(), data_or_null<scalar_t>(x), data_or_null<scalar_t>(w_ih),
        data_or_null<scalar_t>(w_hh), proj ? w_hr->data_ptr<scalar_t>() : nullptr,
        len.defined() ? len.data_ptr<int64_t>() : nullptr, rows, reverse, has_bias, need_dw,
        need_dh0, gates.data_ptr<scalar_t>(), hs.data_ptr<scalar_t>(), cs.data_ptr<scalar_t>(),
        proj ? h_raw.data_ptr<scalar_t>() : nullptr, dh.data_ptr<scalar_t>(),
        dc.data_ptr<scalar_t>(), dgates.data_ptr<scalar_t>(),
        proj ? dr.data_ptr<scalar_t>() : nullptr, proj ? dh_raw.data_ptr<scalar_t>() : nullptr,
        data_if<scalar_t>(loop_dx, dx), data_if<scalar_t>(loop_dw, dw_ih),
        data_if<scalar_t>(loop_dw, dw_hh), data_if<scalar_t>(need_dw && proj, dw_hr), opts,
        b16 ? &operands : nullptr);
  });
  if (b16)
    bf16_grad_products(bf16_args, x_in, w_ih_in, hs.narrow(0, slot_in(0, reverse), T), need_dx,
                       need_dw, dx, dw_ih, dw_hh);
  const auto out_dt = x_in.scalar_type();
  return {as_out(dx, out_dt), as_out(dw_ih, out_dt), as_out(dw_hh, out_dt),
          as_out(db, out_dt), as_out(dw_hr, out_dt),
          state_grad(need_dh0, [&] { return as_out(dh, out_dt); }, x_in.options()),
          state_grad(need_dh0, [&] { return as_out(dc, out_dt); }, x_in.options())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_rnn, CPU, m) {
  m.impl("lstm_forward", &lstm_forward_cpu);
  m.impl("lstm_backward", &lstm_backward_cpu);
}

}  // namespace fused_rnn::cpu
