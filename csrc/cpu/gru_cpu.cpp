// CPU implementation of the GRU layer ops (argument layout: gru_args.h).
//
// Forward: the input projection of every step's running rows (input_projection.h: one GEMM
// over all steps when no row has finished; a one-step call's tiles project their own rows and
// units inside the step instead), then the time loop on one team of threads
// (step_team.h): per step, thread p multiplies h_prev by its packed slice of W_hh (the 3 gate
// rows of its hidden units; all of W_hh for its rows when the team splits the batch) into a
// scratch row block, kept apart from the input projection since r scales its n block, and runs
// gru_forward_elem on those units. Backward walks the steps in reverse the same way (dh_prev
// += dgh W_hh for its units, then the cell's backward), then forms dx and every weight
// gradient as one large GEMM (or sum) over all steps. Nothing is allocated inside the time
// loops.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../gru_args.h"
#include "../gru_step.h"
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
template <typename S>
void gru_forward_kernel(const LayerDims& d, const S* x, const S* w_ih, const S* w_hh,
                        const S* b_ih, const S* b_hh, const int64_t* len,
                        const std::vector<int64_t>& rows, bool reverse, S* y, S* gates, S* hs,
                        S* hn, S* gh, const Bf16Operands* b16) {
  const int64_t T = d.T, B = d.B, I = d.I, H = d.H, G3 = 3 * H;
  // gates[t, b, :] = x[t, b, :] W_ih^T for every row that runs (all steps at once where
  // every row runs); the pass overwrites it with the activations. A one-step call has
  // every tile project its own rows and units instead (project_in_step).
  const bool in_step = project_input<S>(T, B, I, G3, x, w_ih, gates, rows, b16);
  // A tile owns hidden units [lo, hi) (their 3 gate columns of gh and of gates) of its
  // batch rows [b0, b1).
  const int64_t weight_bytes = G3 * H * weight_element_bytes<S>(b16 != nullptr);  // every step
  const TeamPlan plan =
      plan_team(B, H, at::vec::Vectorized<S>::size(), weight_bytes, len, T, in_step);
  const StepProduct<S> whh(w_hh, b16, 3, H, H, plan, T);
  const GateRowSlices<S> wih(in_step ? w_ih : nullptr, 3, H, I, plan.units, plan.max_rows(), T,
                             plan.gemm_rows_vary());
  run_steps(T, plan, [&](int64_t s, const Tile& tl) {
    const int64_t t = reverse ? T - 1 - s : s, lo = tl.lo, hi = tl.hi, b0 = tl.b0;
    if (lo >= hi) return;
    S* g_t = gates + t * B * G3;
    S* hn_t = hn + t * B * H;
    const S* h_in = hs + slot_in(t, reverse) * B * H;
    S* h_out = hs + slot_out(t, reverse) * B * H;
    S* y_t = y + t * B * H;
    const bf16* h16_in = b16 != nullptr ? b16->h_at(slot_in(t, reverse)) : nullptr;
    bf16* h16_out = b16 != nullptr ? b16->h_at(slot_out(t, reverse)) : nullptr;
    if (in_step)
      wih.gemm(tl.u, tl.gemm_rows(rows[t]), x + (t * B + b0) * I, I, S(0), g_t + b0 * G3, G3);
    whh.gemm(tl.u, tl.gemm_rows(rows[t]), h_in + b0 * H, h16_in + b0 * H, H, S(0),
             gh + b0 * G3, G3);
    for (int64_t b = b0; b < tl.b1; ++b) {
      if (!row_active(len, b, t)) {  // a finished row keeps its state and outputs zeros
        copy_row(h_out + b * H + lo, h_in + b * H + lo, hi - lo);
        if (b16 != nullptr) copy_row(h16_out + b * H + lo, h16_in + b * H + lo, hi - lo);
        zero_row(y_t + b * H + lo, hi - lo);
        for (int64_t k = 0; k < 3; ++k) zero_row(g_t + b * G3 + k * H + lo, hi - lo);
        zero_row(hn_t + b * H + lo, hi - lo);  // saved tensors stay deterministic
        continue;
      }
      S* g = g_t + b * G3;
      for_each_lane<S>(lo, hi, [&](auto lane, int64_t j) {
        gru_forward_elem<decltype(lane)>(g, gh + b * G3, b_ih, b_hh, h_in + b * H, g,
                                         hn_t + b * H, h_out + b * H, y_t + b * H, j, H);
      });
      if (b16 != nullptr)
        round_to_bf16(as_float(h_out) + b * H + lo, h16_out + b * H + lo, hi - lo);
    }
  });
}

// Returns db_ih and db_hh (empty without a bias or !need_dw). dx is null when x needs no
// gradient; dw_ih and dw_hh are not written when !need_dw; dh ends as h0's gradient only
// when need_dh0. b16: the bfloat16 operands where the products run in bfloat16 (then x,
// w_ih and w_hh are not read, and the products after the loop are the caller's:
// bf16_grad_products), else null.
template <typename S>
std::pair<at::Tensor, at::Tensor> gru_backward_kernel(
    const LayerDims& d, const S* dy, const S* x, const S* w_ih, const S* w_hh,
    const int64_t* len, const std::vector<int64_t>& rows, bool reverse, bool has_bias,
    bool need_dw, bool need_dh0, const S* gates, const S* hs, const S* hn, S* dh, S* dgi, S* dgh,
    S* dx, S* dw_ih, S* dw_hh, const at::TensorOptions& opts, const Bf16Grads* b16) {
  const int64_t T = d.T, B = d.B, I = d.I, H = d.H, G3 = 3 * H;
  // A tile owns hidden units [lo, hi) (its columns of dh = dgh W_hh, and its cells) of
  // its batch rows [b0, b1).
  const int64_t weight_bytes = G3 * H * weight_element_bytes<S>(b16 != nullptr);  // every step
  const TeamPlan plan = plan_team(B, H, at::vec::Vectorized<S>::size(), weight_bytes, len, T);
  const StepGradProduct<S> whh(w_hh, b16, G3, H, plan.units, plan, T);
  // dgi and dgh in bfloat16
  bf16* dgi16 = b16 != nullptr ? b16->dg_in : nullptr;
  bf16* dgh16 = b16 != nullptr ? b16->dg_h : nullptr;
  const BiasGradSums<S> db(has_bias && need_dw, plan, 2 * G3, opts);  // [db_ih | db_hh]
  auto step_of = [&](int64_t s) { return reverse ? s : T - 1 - s; };  // forward order, backwards
  run_steps(T, plan, [&](int64_t s, const Tile& tl) {
    const int64_t t = step_of(s), lo = tl.lo, hi = tl.hi, b0 = tl.b0;
    if (lo >= hi) return;
    if (s > 0) {  // dL/dh_prev of the step after this one: its pass left dh_tot * z in dh
      const int64_t t_next = step_of(s - 1);  // active rows of dgh there; the rest are 0
      const int64_t off = (t_next * B + b0) * G3;
      whh.gemm(tl.u, tl.gemm_rows(rows[t_next]), dgh + off, offset_or_null(dgh16, off), G3,
               S(1), dh + b0 * H, H);
    }
    const S* h_in = hs + slot_in(t, reverse) * B * H;
    const S* g_t = gates + t * B * G3;
    const S* hn_t = hn + t * B * H;
    const S* dy_t = dy + t * B * H;
    S* dgi_t = dgi + t * B * G3;
    S* dgh_t = dgh + t * B * G3;
    // Row b's gate gradients in bfloat16, for the products that multiply them.
    auto round_row = [&](int64_t b) {
      if (b16 == nullptr) return;
      const int64_t off = (t * B + b) * G3;
      round_gate_columns(dgi + off, dgi16 + off, 3, H, lo, hi);
      round_gate_columns(dgh + off, dgh16 + off, 3, H, lo, hi);
    };
    for (int64_t b = b0; b < tl.b1; ++b) {
      if (!row_active(len, b, t)) {  // a finished row passes dh through untouched
        for (int64_t k = 0; k < 3; ++k) {
          zero_row(dgi_t + b * G3 + k * H + lo, hi - lo);
          zero_row(dgh_t + b * G3 + k * H + lo, hi - lo);
        }
        round_row(b);
        continue;
      }
      const int64_t ro = b * H;
      for_each_lane<S>(lo, hi, [&](auto lane, int64_t j) {
        gru_backward_elem<decltype(lane)>(g_t + b * G3, hn_t + ro, h_in + ro, dh + ro,
                                          dy_t + ro, dgi_t + b * G3, dgh_t + b * G3, j, H);
      });
      round_row(b);
      if (db.wanted()) {
        db.add(tl, 0, dgi_t + b * G3, 3, H, lo, hi);
        db.add(tl, G3, dgh_t + b * G3, 3, H, lo, hi);
      }
    }
  });
  if (T > 0 && need_dh0) {  // dL/dh_prev of the first step, h0's gradient
    const int64_t off = step_of(T - 1) * B * G3;
    whh.add_all_columns(rows[step_of(T - 1)], dgh + off, offset_or_null(dgh16, off), G3, dh, H);
  }
  if (b16 != nullptr) return {db.total(0, G3), db.total(G3, G3)};
  const int64_t TB = T * B;
  if (dx != nullptr) large_gemm<S>(false, false, TB, I, G3, S(1), dgi, G3, w_ih, I, S(0), dx, I);
  if (need_dw) {
    large_gemm<S>(true, false, G3, I, TB, S(1), dgi, G3, x, I, S(0), dw_ih, I);
    const S* h_prev = hs + slot_in(0, reverse) * B * H;  // hs[t + reverse] for t = 0..T-1
    large_gemm<S>(true, false, G3, H, TB, S(1), dgh, G3, h_prev, H, S(0), dw_hh, H);
  }
  return {db.total(0, G3), db.total(G3, G3)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gru_forward_cpu(const at::Tensor& x_in, const at::Tensor& w_ih_in, const at::Tensor& w_hh_in,
                const std::optional<at::Tensor>& b_ih_in,
                const std::optional<at::Tensor>& b_hh_in, const at::Tensor& h0_in,
                const std::optional<at::Tensor>& lengths, bool reverse) {
  const char* op = "fused_rnn::gru_forward";
  const LayerDims d =
      check_gru_forward_args(op, x_in, w_ih_in, w_hh_in, b_ih_in, b_hh_in, h0_in, lengths);
  const auto dt = work_dtype(x_in);
  // bfloat16 input on a CPU with AVX512-BF16: the products in bfloat16 (as lstm_cpu.cpp's;
  // the float32 copies of x and the weights are not made then).
  const bool b16 = x_in.scalar_type() == at::kBFloat16 && bf16_products_for(d.T, d.B);
  const at::Tensor x = b16 ? at::Tensor() : as_work(x_in, dt),
                   w_ih = b16 ? at::Tensor() : as_work(w_ih_in, dt),
                   w_hh = b16 ? at::Tensor() : as_work(w_hh_in, dt), h0 = as_work(h0_in, dt);
  const auto b_ih = as_work(b_ih_in, dt), b_hh = as_work(b_hh_in, dt);
  const auto opts = h0.options();
  const int64_t T = d.T, B = d.B, H = d.H;
  at::Tensor y = work_empty({T, B, H}, opts);
  at::Tensor gates = work_empty({T, B, 3 * H}, opts);
  at::Tensor hs = work_empty({T + 1, B, H}, opts);
  at::Tensor hn = work_empty({T, B, H}, opts);
  at::Tensor gh = at::empty({B, 3 * H}, opts);  // per-step scratch: h_prev W_hh^T
  const int64_t first = reverse ? T : 0, last = reverse ? 0 : T;
  set_slot(hs, first, h0);
  const auto rows = rows_active(lengths, T, B);
  const at::Tensor len = lengths_or_undefined(lengths);
  const Bf16Layer bf16_args =
      b16 ? bf16_layer(x_in, w_ih_in, w_hh_in, h0_in, first) : Bf16Layer{};
  const Bf16Operands operands = b16 ? bf16_args.operands() : Bf16Operands{};
  AT_DISPATCH_FLOATING_TYPES(dt, "gru_forward_cpu", [&] {
    gru_forward_kernel<scalar_t>(
        d, data_or_null<scalar_t>(x), data_or_null<scalar_t>(w_ih), data_or_null<scalar_t>(w_hh),
        b_ih.has_value() ? b_ih->data_ptr<scalar_t>() : nullptr,
        b_hh.has_value() ? b_hh->data_ptr<scalar_t>() : nullptr,
        len.defined() ? len.data_ptr<int64_t>() : nullptr, rows, reverse, y.data_ptr<scalar_t>(),
        gates.data_ptr<scalar_t>(), hs.data_ptr<scalar_t>(), hn.data_ptr<scalar_t>(),
        gh.data_ptr<scalar_t>(), b16 ? &operands : nullptr);
  });
  const auto out_dt = x_in.scalar_type();
  return {as_out(y, out_dt), slot_copy(hs, last, out_dt), gates, hs, hn};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gru_backward_cpu(const at::Tensor& dy_in, const at::Tensor& dh_n_in, const at::Tensor& x_in,
                 const at::Tensor& w_ih_in, const at::Tensor& w_hh_in,
                 const std::optional<at::Tensor>& lengths, bool reverse, bool has_bias,
                 const at::Tensor& gates_in, const at::Tensor& hs_in, const at::Tensor& hn_in,
                 bool need_dx, bool need_dw, bool need_dh0) {
  const char* op = "fused_rnn::gru_backward";
  const LayerDims d = check_gru_backward_args(op, dy_in, dh_n_in, x_in, w_ih_in, w_hh_in,
                                              lengths, gates_in, hs_in, hn_in);
  const auto dt = work_dtype(x_in);
  // The products in bfloat16 where the forward ran them so (gru_forward_cpu); the float32
  // copies of x and the weights are not made then.
  const bool b16 = x_in.scalar_type() == at::kBFloat16 && bf16_products_for(d.T, d.B);
  const at::Tensor dy = as_work(dy_in, dt), x = b16 ? at::Tensor() : as_work(x_in, dt),
                   w_ih = b16 ? at::Tensor() : as_work(w_ih_in, dt),
                   w_hh = b16 ? at::Tensor() : as_work(w_hh_in, dt),
                   gates = gates_in.contiguous(), hs = hs_in.contiguous(),
                   hn = hn_in.contiguous();
  const int64_t T = d.T, B = d.B, I = d.I, H = d.H;
  const auto opts = dy.options();
  // The running gradient of the state, updated in place step by step (a fresh copy:
  // the caller's tensor is never written).
  at::Tensor dh = fresh_copy(dh_n_in, dt);
  at::Tensor dgi = work_empty({T, B, 3 * H}, opts);
  at::Tensor dgh = work_empty({T, B, 3 * H}, opts);
  // dx and the weight gradients the kernel forms (with bfloat16 products,
  // bf16_grad_products forms them after it).
  const bool loop_dx = need_dx && !b16, loop_dw = need_dw && !b16;
  at::Tensor dx = work_grad_buffer(loop_dx, {T, B, I}, opts);
  at::Tensor dw_ih = work_grad_buffer(loop_dw, {3 * H, I}, opts);
  at::Tensor dw_hh = work_grad_buffer(loop_dw, {3 * H, H}, opts);
  const auto rows = rows_active(lengths, T, B);
  const at::Tensor len = lengths_or_undefined(lengths);
  const Bf16BackLayer bf16_args =
      b16 ? bf16_back_layer(w_hh_in, T, B, 3 * H, 3 * H) : Bf16BackLayer{};
  const Bf16Grads operands = b16 ? bf16_args.grads() : Bf16Grads{};
  at::Tensor db_ih, db_hh;
  AT_DISPATCH_FLOATING_TYPES(dt, "gru_backward_cpu", [&] {
    std::tie(db_ih, db_hh) = gru_backward_kernel<scalar_t>(
        d, dy.data_ptr<scalar_t>(), data_or_null<scalar_t>(x), data_or_null<scalar_t>(w_ih),
        data_or_null<scalar_t>(w_hh), len.defined() ? len.data_ptr<int64_t>() : nullptr, rows,
        reverse, has_bias, need_dw, need_dh0, gates.data_ptr<scalar_t>(), hs.data_ptr<scalar_t>(),
        hn.data_ptr<scalar_t>(), dh.data_ptr<scalar_t>(), dgi.data_ptr<scalar_t>(),
        dgh.data_ptr<scalar_t>(), data_if<scalar_t>(loop_dx, dx),
        data_if<scalar_t>(loop_dw, dw_ih), data_if<scalar_t>(loop_dw, dw_hh), opts,
        b16 ? &operands : nullptr);
  });
  if (b16)
    bf16_grad_products(bf16_args, x_in, w_ih_in, hs.narrow(0, slot_in(0, reverse), T), need_dx,
                       need_dw, dx, dw_ih, dw_hh);
  const auto out_dt = x_in.scalar_type();
  return {as_out(dx, out_dt), as_out(dw_ih, out_dt), as_out(dw_hh, out_dt),
          as_out(db_ih, out_dt), as_out(db_hh, out_dt),
          state_grad(need_dh0, [&] { return as_out(dh, out_dt); }, x_in.options())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_rnn, CPU, m) {
  m.impl("gru_forward", &gru_forward_cpu);
  m.impl("gru_backward", &gru_backward_cpu);
}

}  // namespace fused_rnn::cpu
