// CUDA implementation of the LSTM layer ops (argument layout: lstm_args.h).
//
// Forward: the input projection of every step as one cuBLAS GEMM; per step one GEMM
// (h_prev W_hh^T, accumulated into that step's gate rows) and one fused pointwise
// kernel running lstm_forward_elem, the very function the CPU runs (small batches: both in
// one kernel, fused_step.cuh). Backward walks
// the steps in reverse with one fused kernel and one GEMM per step, then forms dx and
// the weight gradients as single GEMMs over all steps and the bias gradient as one
// reduction (no atomics). Everything is queued on torch's current stream: no host
// synchronization, allocation or handle creation inside the time loops, so both
// passes can be captured in a CUDA graph.
//
// Storage: gates, states h and outputs are in the input dtype T (they feed GEMMs);
// the cell state, the bias and the running gradients dh, dc are in C = float32 for
// float16/bfloat16 inputs (C = T otherwise), and all gate math runs in C.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../lstm_args.h"
#include "../lstm_step.h"
#include "cublas_gemm.h"
#include "launch.h"
#include "fused_step.cuh"
#include "layer_common.cuh"

namespace fused_rnn::cuda {
namespace {

// --------------------------------------------------------------------------- forward

template <typename T, typename C>
struct FwdStep {
  T* gates;        // [B, 4H] in: pre-activations without bias; out: activations i, f, g, o
  const C* bias;   // [4H] b_ih + b_hh, or nullptr
  const C* c_in;   // [B, H]
  C* c_out;        // [B, H]
  const T* h_in;   // [B, P]
  T* h_out;        // [B, P] (written here only without projection)
  T* h_raw;        // [B, H] o * tanh(c) before the projection, or nullptr
  T* y;            // [B, P] (written here only without projection)
  const int64_t* len;  // [B] on the device, or nullptr
  int64_t t, B, H;
};

// Step t for row b, hidden index j, reading and writing global memory: a finished row
// keeps its state and outputs zeros; an active one runs lstm_forward_elem on gates[b].
template <typename V, typename T, typename C>
__device__ __forceinline__ void forward_one(const FwdStep<T, C>& a, int64_t b, int64_t j) {
  const int64_t H = a.H, r = b * H + j;
  const bool proj = a.h_raw != nullptr;
  if (!row_active(a.len, b, a.t)) {
    a.c_out[r] = a.c_in[r];
    if (proj) {
      a.h_raw[r] = T(0);  // read by the dW_hr GEMM: must be finite
    } else {  // P == H
      a.h_out[r] = a.h_in[r];
      a.y[r] = T(0);
    }
    return;
  }
  T* g = a.gates + b * 4 * H;
  lstm_forward_elem<V>(g, a.bias, a.c_in + b * H, g, a.c_out + b * H,
                       proj ? a.h_raw + b * H : a.h_out + b * H,
                       proj ? static_cast<T*>(nullptr) : a.y + b * H, j, H);
}

// One thread per (row b, N consecutive hidden indices j). N > 1 only when H % N == 0
// and every row start is N-aligned: then operands move as vectors into registers and
// the element function runs on those copies (a row of width N); otherwise N = 1 and
// it runs on global memory directly.
template <typename V, int N, typename T, typename C>
__global__ void lstm_forward_step_kernel(FwdStep<T, C> a) {
  const int64_t H = a.H, chunks = H / N, total = a.B * chunks;
  const bool proj = a.h_raw != nullptr;
  FR_KERNEL_LOOP(idx, total) {
    const int64_t b = idx / chunks, j = (idx - b * chunks) * N;
    // The scalar path, and finished rows (which keep their state), go element by element.
    if (N == 1 || !row_active(a.len, b, a.t)) {
#pragma unroll
      for (int k = 0; k < N; ++k) forward_one<V>(a, b, j + k);
      continue;
    }
    const C* c_in = a.c_in + b * H;
    C* c_out = a.c_out + b * H;
    T* g = a.gates + b * 4 * H;
    T* h_dst = proj ? a.h_raw + b * H : a.h_out + b * H;
    T* y_dst = proj ? static_cast<T*>(nullptr) : a.y + b * H;
    T pre[4 * N], h[N];
    C bias[4 * N], cp[N], c[N];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      load_pack<N>(g + k * H + j, pre + k * N);
      if (a.bias != nullptr) load_pack<N>(a.bias + k * H + j, bias + k * N);
    }
    load_pack<N>(c_in + j, cp);
    const C* bias_p = a.bias != nullptr ? bias : static_cast<const C*>(nullptr);
#pragma unroll
    for (int k = 0; k < N; ++k) {
      lstm_forward_elem<V>(pre, bias_p, cp, pre, c, h, static_cast<T*>(nullptr), k,
                           static_cast<int64_t>(N));
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) store_pack<N>(g + k * H + j, pre + k * N);
    store_pack<N>(c_out + j, c);
    store_pack<N>(h_dst + j, h);
    if (y_dst != nullptr) store_pack<N>(y_dst + j, h);
  }
}

// The whole of step t in one launch, for small batches (fused_step.cuh):
//   gates[b, q*H + j] += sum_k h_in[b, k] W_hh[q*H + j, k]   (b < rows, q = gate i, f, g, o)
// then forward_one for every (b, j) of the block.
template <typename V, int VW, typename T, typename C>
__global__ void __launch_bounds__(fused_step_threads(4))
lstm_fused_step_kernel(FwdStep<T, C> a, const T* __restrict__ w_hh, int64_t P, int64_t rows) {
  fused_recurrent_step<4, VW>(w_hh, a.h_in, P, a.H, rows, a.gates, /*accumulate=*/true);
  for_each_block_elem(a.H, a.B, [&](int64_t b, int64_t j) { forward_one<V>(a, b, j); });
}

// With a projection, after y[:rows] = h_raw W_hr^T: active rows take y as their new
// state; finished rows carry their state and output zeros.
template <typename T>
__global__ void lstm_proj_state_kernel(const T* h_in, T* h_out, T* y, const int64_t* len,
                                       int64_t t, int64_t B, int64_t P) {
  FR_KERNEL_LOOP(idx, B * P) {
    const int64_t b = idx / P;
    if (row_active(len, b, t)) {
      h_out[idx] = y[idx];
    } else {
      h_out[idx] = h_in[idx];
      y[idx] = T(0);
    }
  }
}

// -------------------------------------------------------------------------- backward

template <typename T, typename C>
struct BwdStep {
  const T* act;    // [B, 4H] saved i, f, g, o
  const C* c_in;   // [B, H]
  const C* c_out;  // [B, H]
  C* dh;           // [B, H] in: dL/dh of the cell output; out: zeroed on active rows
  const T* dy;     // [B, H] dL/dy of this step (no projection), or nullptr
  C* dc;           // [B, H] in: dL/dc; out: dL/dc_prev on active rows
  T* da;           // [B, 4H] out: dL/d pre-activations (zero on finished rows)
  const int64_t* len;
  int64_t t, B, H;
};

template <typename V, int N, typename T, typename C>
__global__ void lstm_backward_step_kernel(BwdStep<T, C> a) {
  const int64_t H = a.H, chunks = H / N, total = a.B * chunks;
  FR_KERNEL_LOOP(idx, total) {
    const int64_t b = idx / chunks, j = (idx - b * chunks) * N;
    T* da = a.da + b * 4 * H;
    if (!row_active(a.len, b, a.t)) {  // dh and dc pass through a finished row untouched
#pragma unroll
      for (int k = 0; k < 4; ++k)
#pragma unroll
        for (int l = 0; l < N; ++l) da[k * H + j + l] = T(0);
      continue;
    }
    const T* act = a.act + b * 4 * H;
    const int64_t r = b * H;
    const T* dy = a.dy != nullptr ? a.dy + r : static_cast<const T*>(nullptr);
    if constexpr (N == 1) {
      lstm_backward_elem<V>(act, a.c_in + r, a.c_out + r, a.dh + r, dy, a.dc + r, da, j, H);
    } else {
      T ac[4 * N], dyl[N], dal[4 * N];
      C cp[N], c[N], dh[N], dc[N];
#pragma unroll
      for (int k = 0; k < 4; ++k) load_pack<N>(act + k * H + j, ac + k * N);
      load_pack<N>(a.c_in + r + j, cp);
      load_pack<N>(a.c_out + r + j, c);
      load_pack<N>(a.dh + r + j, dh);
      load_pack<N>(a.dc + r + j, dc);
      if (dy != nullptr) load_pack<N>(dy + j, dyl);
      const T* dy_p = dy != nullptr ? dyl : static_cast<const T*>(nullptr);
#pragma unroll
      for (int k = 0; k < N; ++k) {
        lstm_backward_elem<V>(ac, cp, c, dh, dy_p, dc, dal, k, static_cast<int64_t>(N));
      }
#pragma unroll
      for (int k = 0; k < 4; ++k) store_pack<N>(da + k * H + j, dal + k * N);
      store_pack<N>(a.dh + r + j, dh);
      store_pack<N>(a.dc + r + j, dc);
    }
  }
}

// With a projection: dL/dr of this step = dh + dy on active rows (kept for dW_hr and
// pulled back through W_hr); dh is consumed there. Finished rows get dr = 0 and keep dh.
template <typename T, typename C>
__global__ void lstm_proj_grad_kernel(C* dh, const T* dy, T* dr, const int64_t* len, int64_t t,
                                      int64_t B, int64_t P) {
  FR_KERNEL_LOOP(idx, B * P) {
    const int64_t b = idx / P;
    if (row_active(len, b, t)) {
      dr[idx] = static_cast<T>(dh[idx] + static_cast<C>(dy[idx]));
      dh[idx] = C(0);
    } else {
      dr[idx] = T(0);
    }
  }
}

// ------------------------------------------------------------------------ host side

template <typename T, typename C>
void launch_forward_step(const char* op, const FwdStep<T, C>& s, bool vec) {
  constexpr int N = vec_width<T>();
  auto stream = at::cuda::getCurrentCUDAStream();
  if (vec) {
    lstm_forward_step_kernel<C, N><<<blocks_for(s.B * (s.H / N)), kThreads, 0, stream>>>(s);
  } else {
    lstm_forward_step_kernel<C, 1><<<blocks_for(s.B * s.H), kThreads, 0, stream>>>(s);
  }
  check_launch(op, "lstm_forward_step_kernel");
}

template <typename T, typename C>
void launch_backward_step(const char* op, const BwdStep<T, C>& s, bool vec) {
  constexpr int N = vec_width<T>();
  auto stream = at::cuda::getCurrentCUDAStream();
  if (vec) {
    lstm_backward_step_kernel<C, N><<<blocks_for(s.B * (s.H / N)), kThreads, 0, stream>>>(s);
  } else {
    lstm_backward_step_kernel<C, 1><<<blocks_for(s.B * s.H), kThreads, 0, stream>>>(s);
  }
  check_launch(op, "lstm_backward_step_kernel");
}

template <typename T, typename C>
void forward_loop(const char* op, const LayerDims& d, const at::Tensor& x, const at::Tensor& w_ih,
                  const at::Tensor& w_hh, const at::Tensor& bias, const at::Tensor& w_hr,
                  const int64_t* len, const std::vector<int64_t>& rows, bool reverse,
                  const at::Tensor& y, const at::Tensor& gates, const at::Tensor& hs,
                  const at::Tensor& cs, const at::Tensor& h_raw) {
  const int64_t T_ = d.T, B = d.B, I = d.I, H = d.H, P = d.P, G4 = 4 * H;
  const auto ab = x.scalar_type();
  const bool proj = w_hr.defined();
  T* gp = ptr<T>(gates);
  T* hp = ptr<T>(hs);
  C* cp = ptr<C>(cs);
  T* yp = ptr<T>(y);
  T* hrp = proj ? ptr<T>(h_raw) : nullptr;
  const C* bp = ptr<C>(bias);
  constexpr int N = vec_width<T>();
  const bool vec = N > 1 && H % N == 0 && pack_aligned<N>(gp) && pack_aligned<N>(hp) &&
                   pack_aligned<N>(cp) && pack_aligned<N>(yp) && pack_aligned<N>(hrp) &&
                   pack_aligned<N>(bp);
  // gates[t, b, :] = x[t, b, :] W_ih^T for all steps at once.
  gemm(op, false, true, T_ * B, G4, I, x.data_ptr(), I, w_ih.data_ptr(), I, false, gp, G4, ab,
       ab);
  auto stream = at::cuda::getCurrentCUDAStream();
  const T* w_hh_p = ptr<T>(w_hh);
  const bool fused = use_fused_step(B, sizeof(T));
  const bool fused_vec = fused_step_vec_ok<N>(P, w_hh_p, hp);
  for (int64_t s = 0; s < T_; ++s) {
    const int64_t t = reverse ? T_ - 1 - s : s;
    T* g_t = gp + t * B * G4;
    const T* h_in = hp + slot_in(t, reverse) * B * P;
    T* h_out = hp + slot_out(t, reverse) * B * P;
    T* y_t = yp + t * B * P;
    T* hr_t = proj ? hrp + t * B * H : nullptr;
    FwdStep<T, C> st{g_t, bp, cp + slot_in(t, reverse) * B * H, cp + slot_out(t, reverse) * B * H,
                     h_in, h_out, hr_t, y_t, len, t, B, H};
    if (fused) {
      if (fused_vec) {
        lstm_fused_step_kernel<C, N><<<fused_step_grid(H, B), fused_step_threads(4), 0, stream>>>(
            st, w_hh_p, P, rows[t]);
      } else {
        lstm_fused_step_kernel<C, 1><<<fused_step_grid(H, B), fused_step_threads(4), 0, stream>>>(
            st, w_hh_p, P, rows[t]);
      }
      check_launch(op, "lstm_fused_step_kernel");
    } else {
      gemm(op, false, true, rows[t], G4, P, h_in, P, w_hh_p, P, true, g_t, G4, ab, ab);
      launch_forward_step<T, C>(op, st, vec);
    }
    if (proj) {
      // r = h_raw W_hr^T is both the output and the next state.
      gemm(op, false, true, rows[t], P, H, hr_t, H, w_hr.data_ptr(), H, false, y_t, P, ab, ab);
      lstm_proj_state_kernel<T><<<blocks_for(B * P), kThreads, 0, stream>>>(h_in, h_out, y_t,
                                                                            len, t, B, P);
      check_launch(op, "lstm_proj_state_kernel");
    }
  }
}

template <typename T, typename C>
void backward_loop(const char* op, const LayerDims& d, const at::Tensor& dy, const at::Tensor& x,
                   const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& w_hr,
                   const int64_t* len, const std::vector<int64_t>& rows, bool reverse,
                   const at::Tensor& gates, const at::Tensor& hs, const at::Tensor& cs,
                   const at::Tensor& h_raw, const at::Tensor& dh, const at::Tensor& dc,
                   const at::Tensor& dgates, const at::Tensor& dr, const at::Tensor& dh_raw,
                   const at::Tensor& dx, const at::Tensor& dw_ih, const at::Tensor& dw_hh,
                   const at::Tensor& dw_hr) {
  const int64_t T_ = d.T, B = d.B, I = d.I, H = d.H, P = d.P, G4 = 4 * H;
  const auto ab = x.scalar_type(), cdt = cs.scalar_type();
  const bool proj = w_hr.defined();
  const T* gp = ptr<T>(gates);
  const C* cp = ptr<C>(cs);
  const T* dyp = ptr<T>(dy);
  C* dhp = ptr<C>(dh);
  C* dcp = ptr<C>(dc);
  T* dgp = ptr<T>(dgates);
  T* drp = proj ? ptr<T>(dr) : nullptr;
  C* dhrp = proj ? ptr<C>(dh_raw) : nullptr;
  constexpr int N = vec_width<T>();
  const bool vec = N > 1 && H % N == 0 && pack_aligned<N>(gp) && pack_aligned<N>(cp) &&
                   pack_aligned<N>(dhp) && pack_aligned<N>(dcp) && pack_aligned<N>(dgp) &&
                   pack_aligned<N>(dhrp) && (proj || pack_aligned<N>(dyp));
  auto stream = at::cuda::getCurrentCUDAStream();
  for (int64_t s = 0; s < T_; ++s) {
    const int64_t t = reverse ? s : T_ - 1 - s;  // the forward's order, backwards
    const T* dy_t = dyp + t * B * P;
    T* dg_t = dgp + t * B * G4;
    C* dh_cell = dhp;
    const T* dy_cell = dy_t;
    if (proj) {
      T* dr_t = drp + t * B * P;
      lstm_proj_grad_kernel<T, C><<<blocks_for(B * P), kThreads, 0, stream>>>(dhp, dy_t, dr_t,
                                                                               len, t, B, P);
      check_launch(op, "lstm_proj_grad_kernel");
      gemm(op, false, false, rows[t], H, P, dr_t, P, w_hr.data_ptr(), H, false, dhrp, H, ab, cdt);
      dh_cell = dhrp;
      dy_cell = nullptr;
    }
    BwdStep<T, C> st{gp + t * B * G4, cp + slot_in(t, reverse) * B * H,
                     cp + slot_out(t, reverse) * B * H, dh_cell, dy_cell, dcp, dg_t, len, t, B, H};
    launch_backward_step<T, C>(op, st, vec);
    // dL/dh_prev: active rows were zeroed above, finished rows carry theirs.
    gemm(op, false, false, rows[t], P, G4, dg_t, G4, w_hh.data_ptr(), P, true, dhp, P, ab, cdt);
  }
  const int64_t TB = T_ * B;
  if (dx.defined()) {  // undefined when x needs no gradient
    gemm(op, false, false, TB, I, G4, dgp, G4, w_ih.data_ptr(), I, false, dx.data_ptr(), I, ab,
         ab);
  }
  if (!dw_ih.defined()) return;  // undefined (with dw_hh, dw_hr) when the weights need none
  gemm(op, true, false, G4, I, TB, dgp, G4, x.data_ptr(), I, false, dw_ih.data_ptr(), I, ab, ab);
  const T* h_prev = ptr<T>(hs) + slot_in(0, reverse) * B * P;  // hs[t + reverse], t = 0..T-1
  gemm(op, true, false, G4, P, TB, dgp, G4, h_prev, P, false, dw_hh.data_ptr(), P, ab, ab);
  if (proj) {
    gemm(op, true, false, P, H, TB, drp, P, h_raw.data_ptr(), H, false, dw_hr.data_ptr(), H, ab,
         ab);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_forward_cuda(const at::Tensor& x_in, const at::Tensor& w_ih_in, const at::Tensor& w_hh_in,
                  const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
                  const std::optional<at::Tensor>& w_hr_in, const at::Tensor& h0,
                  const at::Tensor& c0, const std::optional<at::Tensor>& lengths, bool reverse) {
  const char* op = "fused_rnn::lstm_forward";
  const LayerDims d = check_lstm_forward_args(op, x_in, w_ih_in, w_hh_in, b_ih, b_hh, w_hr_in,
                                              h0, c0, lengths);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor len = lengths_on(op, lengths, x_in.device());
  const auto dt = x_in.scalar_type(), cdt = cell_dtype(dt);
  const at::Tensor x = x_in.contiguous(), w_ih = w_ih_in.contiguous(),
                   w_hh = w_hh_in.contiguous();
  const bool proj = w_hr_in.has_value() && w_hr_in->defined();
  const at::Tensor w_hr = proj ? w_hr_in->contiguous() : at::Tensor();
  const bool has_bias = b_ih.has_value() && b_ih->defined();
  const at::Tensor bias = has_bias ? (b_ih->to(cdt) + b_hh->to(cdt)).contiguous() : at::Tensor();
  const int64_t T = d.T, B = d.B, H = d.H, P = d.P;
  const auto opts = x.options();
  at::Tensor y = at::empty({T, B, P}, opts);
  at::Tensor gates = at::empty({T, B, 4 * H}, opts);
  at::Tensor hs = at::empty({T + 1, B, P}, opts);
  at::Tensor cs = at::empty({T + 1, B, H}, opts.dtype(cdt));
  at::Tensor h_raw = proj ? at::empty({T, B, H}, opts) : at::empty({0}, opts);
  const int64_t first = reverse ? T : 0, last = reverse ? 0 : T;
  hs[first].copy_(h0);
  cs[first].copy_(c0);
  const auto rows = rows_active(lengths, T, B);
  const int64_t* lp = len.defined() ? len.data_ptr<int64_t>() : nullptr;
  dispatch_types(op, dt, [&](auto t_tag, auto c_tag) {
    using TT = decltype(t_tag);
    using CC = decltype(c_tag);
    forward_loop<TT, CC>(op, d, x, w_ih, w_hh, bias, w_hr, lp, rows, reverse, y, gates, hs, cs,
                         proj ? h_raw : at::Tensor());
  });
  return {y, hs[last].clone(), cs[last].to(dt, false, /*copy=*/true), gates, hs, cs, h_raw};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_backward_cuda(const at::Tensor& dy_in, const at::Tensor& dh_n, const at::Tensor& dc_n,
                   const at::Tensor& x_in, const at::Tensor& w_ih_in, const at::Tensor& w_hh_in,
                   const std::optional<at::Tensor>& w_hr_in,
                   const std::optional<at::Tensor>& lengths, bool reverse, bool has_bias,
                   const at::Tensor& gates_in, const at::Tensor& hs_in, const at::Tensor& cs_in,
                   const at::Tensor& h_raw_in, bool need_dx, bool need_dw, bool need_dh0) {
  const char* op = "fused_rnn::lstm_backward";
  const LayerDims d = check_lstm_backward_args(op, dy_in, dh_n, dc_n, x_in, w_ih_in, w_hh_in,
                                               w_hr_in, lengths, gates_in, hs_in, cs_in,
                                               h_raw_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor len = lengths_on(op, lengths, x_in.device());
  const auto dt = x_in.scalar_type(), cdt = cell_dtype(dt);
  const at::Tensor dy = dy_in.contiguous(), x = x_in.contiguous(), w_ih = w_ih_in.contiguous(),
                   w_hh = w_hh_in.contiguous(), gates = gates_in.contiguous(),
                   hs = hs_in.contiguous(), cs = cs_in.contiguous(),
                   h_raw = h_raw_in.contiguous();
  const bool proj = w_hr_in.has_value() && w_hr_in->defined();
  const at::Tensor w_hr = proj ? w_hr_in->contiguous() : at::Tensor();
  const int64_t T = d.T, B = d.B, I = d.I, H = d.H, P = d.P;
  const auto opts = x.options();
  // Running state gradients, updated in place step by step (fresh copies: the caller's
  // tensors are never written).
  at::Tensor dh = dh_n.to(cdt, false, /*copy=*/true).contiguous();
  at::Tensor dc = dc_n.to(cdt, false, true).contiguous();
  at::Tensor dgates = at::empty({T, B, 4 * H}, opts);
  at::Tensor dr = proj ? at::empty({T, B, P}, opts) : at::Tensor();
  at::Tensor dh_raw = proj ? at::empty({B, H}, opts.dtype(cdt)) : at::Tensor();
  at::Tensor dx = grad_buffer(need_dx, {T, B, I}, opts);
  at::Tensor dw_ih = grad_buffer(need_dw, {4 * H, I}, opts);
  at::Tensor dw_hh = grad_buffer(need_dw, {4 * H, P}, opts);
  at::Tensor dw_hr = grad_buffer(need_dw && proj, {P, H}, opts);
  const auto rows = rows_active(lengths, T, B);
  const int64_t* lp = len.defined() ? len.data_ptr<int64_t>() : nullptr;
  dispatch_types(op, dt, [&](auto t_tag, auto c_tag) {
    using TT = decltype(t_tag);
    using CC = decltype(c_tag);
    backward_loop<TT, CC>(op, d, dy, x, w_ih, w_hh, w_hr, lp, rows, reverse, gates, hs, cs,
                          proj ? h_raw : at::Tensor(), dh, dc, dgates, dr, dh_raw,
                          need_dx ? dx : at::Tensor(), need_dw ? dw_ih : at::Tensor(),
                          need_dw ? dw_hh : at::Tensor(),
                          need_dw && proj ? dw_hr : at::Tensor());
  });
  // Bias gradient: one deterministic reduction over all steps and rows, in C.
  const bool want_db = has_bias && need_dw;
  at::Tensor db = want_db ? at::sum(dgates.view({T * B, 4 * H}), {0}, false, cdt).to(dt)
                          : at::empty({0}, opts);
  // The loop computes dh0 and dc0 on its way (need_dh0 only decides whether they are returned).
  return {dx, dw_ih, dw_hh, db, dw_hr, state_grad(need_dh0, [&] { return dh.to(dt); }, opts),
          state_grad(need_dh0, [&] { return dc.to(dt); }, opts)};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_rnn, CUDA, m) {
  m.impl("lstm_forward", &lstm_forward_cuda);
  m.impl("lstm_backward", &lstm_backward_cuda);
}

}  // namespace fused_rnn::cuda
