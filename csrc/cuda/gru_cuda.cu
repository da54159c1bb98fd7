// CUDA implementation of the GRU layer ops (argument layout: gru_args.h).
//
// Forward: the input projection of every step as one cuBLAS GEMM; per step one GEMM
// (h_prev W_hh^T into a scratch block, kept apart from the input projection since r
// scales its n block) and one fused pointwise kernel running gru_forward_elem, the very
// function the CPU runs (small batches: both in one kernel, fused_step.cuh). Backward
// walks the steps in reverse with one fused kernel and one GEMM per step (dh_prev +=
// dgh W_hh), then forms dx and the weight gradients as single GEMMs over all steps and
// the bias gradients as reductions (no atomics). All on
// torch's current stream, nothing allocated or synchronized inside the time loops.
//
// Storage is the input dtype (a GRU has no cell state), except the running gradient dL/dh
// of the backward, kept in float32 for float16/bfloat16 (each step adds dgh W_hh to it;
// rounding it to 16 bits every step would compound over the sequence). float16/bfloat16
// run their gate math in float32 and their GEMMs with float32 accumulation.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../gru_args.h"
#include "../gru_step.h"
#include "cublas_gemm.h"
#include "launch.h"
#include "fused_step.cuh"
#include "layer_common.cuh"

namespace fused_rnn::cuda {
namespace {

template <typename T>
struct GruFwdStep {
  T* gates;         // [B, 3H] in: x W_ih^T; out: activations r, z, n
  T* gh;            // [B, 3H] scratch: h_prev W_hh^T, by the GEMM or the fused kernel
                    // (rows of finished batch entries unset)
  const T* b_ih;    // [3H] or nullptr
  const T* b_hh;    // [3H] or nullptr
  const T* h_in;    // [B, H]
  T* h_out;         // [B, H]
  T* hn;            // [B, H] out: gh_n + b_hh_n
  T* y;             // [B, H]
  const int64_t* len;
  int64_t t, B, H;
};

// Step t for row b, hidden index j, reading and writing global memory: a finished row
// keeps its state and outputs zeros; an active one runs gru_forward_elem.
template <typename V, typename T>
__device__ __forceinline__ void gru_forward_one(const GruFwdStep<T>& a, int64_t b, int64_t j) {
  const int64_t H = a.H, r = b * H;
  T* g = a.gates + b * 3 * H;
  if (!row_active(a.len, b, a.t)) {
    a.h_out[r + j] = a.h_in[r + j];
    a.y[r + j] = T(0);
    a.hn[r + j] = T(0);  // saved tensors stay deterministic
    for (int k = 0; k < 3; ++k) g[k * H + j] = T(0);
    return;
  }
  gru_forward_elem<V>(g, a.gh + b * 3 * H, a.b_ih, a.b_hh, a.h_in + r, g, a.hn + r,
                      a.h_out + r, a.y + r, j, H);
}

// One thread per (row b, N consecutive hidden indices); see lstm_cuda.cu for the
// vector (N > 1) / scalar (N = 1) split.
template <typename V, int N, typename T>
__global__ void gru_forward_step_kernel(GruFwdStep<T> a) {
  const int64_t H = a.H, chunks = H / N, total = a.B * chunks;
  FR_KERNEL_LOOP(idx, total) {
    const int64_t b = idx / chunks, j = (idx - b * chunks) * N, r = b * H;
    // The scalar path, and finished rows (which keep their state), go element by element.
    if (N == 1 || !row_active(a.len, b, a.t)) {
#pragma unroll
      for (int l = 0; l < N; ++l) gru_forward_one<V>(a, b, j + l);
      continue;
    }
    T* g = a.gates + b * 3 * H;
    const T* gh = a.gh + b * 3 * H;
    T gi[3 * N], ghl[3 * N], bi[3 * N], bh[3 * N], hp[N], hn[N], h[N];
    const bool bias = a.b_ih != nullptr;
#pragma unroll
    for (int k = 0; k < 3; ++k) {
      load_pack<N>(g + k * H + j, gi + k * N);
      load_pack<N>(gh + k * H + j, ghl + k * N);
      if (bias) {
        load_pack<N>(a.b_ih + k * H + j, bi + k * N);
        load_pack<N>(a.b_hh + k * H + j, bh + k * N);
      }
    }
    load_pack<N>(a.h_in + r + j, hp);
    const T* bi_p = bias ? bi : static_cast<const T*>(nullptr);
    const T* bh_p = bias ? bh : static_cast<const T*>(nullptr);
#pragma unroll
    for (int l = 0; l < N; ++l) {
      gru_forward_elem<V>(gi, ghl, bi_p, bh_p, hp, gi, hn, h, static_cast<T*>(nullptr), l,
                          static_cast<int64_t>(N));
    }
#pragma unroll
    for (int k = 0; k < 3; ++k) store_pack<N>(g + k * H + j, gi + k * N);
    store_pack<N>(a.hn + r + j, hn);
    store_pack<N>(a.h_out + r + j, h);
    store_pack<N>(a.y + r + j, h);
  }
}

// The whole of step t in one launch, for small batches (fused_step.cuh):
//   gh[b, q*H + j] = sum_k h_in[b, k] W_hh[q*H + j, k]   (b < rows, q = gate r, z, n)
// then gru_forward_one for every (b, j) of the block.
template <typename V, int VW, typename T>
__global__ void __launch_bounds__(fused_step_threads(3))
gru_fused_step_kernel(GruFwdStep<T> a, const T* __restrict__ w_hh, int64_t rows) {
  fused_recurrent_step<3, VW>(w_hh, a.h_in, a.H, a.H, rows, a.gh,
                              /*accumulate=*/false);
  for_each_block_elem(a.H, a.B, [&](int64_t b, int64_t j) { gru_forward_one<V>(a, b, j); });
}

template <typename T, typename C>
struct GruBwdStep {
  const T* act;     // [B, 3H] saved r, z, n
  const T* hn;      // [B, H] saved gh_n + b_hh_n
  const T* h_in;    // [B, H] state fed into the step
  C* dh;            // [B, H] in: dL/dh; out: dh_tot * z on active rows (float32 for 16-bit T)
  const T* dy;      // [B, H]
  T* dgi;           // [B, 3H] out (zero on finished rows)
  T* dgh;           // [B, 3H] out (zero on finished rows)
  const int64_t* len;
  int64_t t, B, H;
};

template <typename V, int N, typename T>
__global__ void gru_backward_step_kernel(GruBwdStep<T, V> a) {
  const int64_t H = a.H, chunks = H / N, total = a.B * chunks;
  FR_KERNEL_LOOP(idx, total) {
    const int64_t b = idx / chunks, j = (idx - b * chunks) * N, r = b * H;
    T* dgi = a.dgi + b * 3 * H;
    T* dgh = a.dgh + b * 3 * H;
    if (!row_active(a.len, b, a.t)) {  // dh passes through a finished row untouched
#pragma unroll
      for (int k = 0; k < 3; ++k)
#pragma unroll
        for (int l = 0; l < N; ++l) dgi[k * H + j + l] = dgh[k * H + j + l] = T(0);
      continue;
    }
    const T* act = a.act + b * 3 * H;
    if constexpr (N == 1) {
      gru_backward_elem<V>(act, a.hn + r, a.h_in + r, a.dh + r, a.dy + r, dgi, dgh, j, H);
    } else {
      T ac[3 * N], hn[N], hp[N], dy[N], gi[3 * N], gh[3 * N];
      V dh[N];
#pragma unroll
      for (int k = 0; k < 3; ++k) load_pack<N>(act + k * H + j, ac + k * N);
      load_pack<N>(a.hn + r + j, hn);
      load_pack<N>(a.h_in + r + j, hp);
      load_pack<N>(a.dh + r + j, dh);
      load_pack<N>(a.dy + r + j, dy);
#pragma unroll
      for (int l = 0; l < N; ++l) {
        gru_backward_elem<V>(ac, hn, hp, dh, dy, gi, gh, l, static_cast<int64_t>(N));
      }
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        store_pack<N>(dgi + k * H + j, gi + k * N);
        store_pack<N>(dgh + k * H + j, gh + k * N);
      }
      store_pack<N>(a.dh + r + j, dh);
    }
  }
}

template <typename T, typename V>
void gru_forward_loop(const char* op, const LayerDims& d, const at::Tensor& x,
                      const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& b_ih,
                      const at::Tensor& b_hh, const int64_t* len,
                      const std::vector<int64_t>& rows, bool reverse, const at::Tensor& y,
                      const at::Tensor& gates, const at::Tensor& hs, const at::Tensor& hn,
                      const at::Tensor& gh) {
  const int64_t T_ = d.T, B = d.B, I = d.I, H = d.H, G3 = 3 * H;
  const auto ab = x.scalar_type();
  T *gp = ptr<T>(gates), *hp = ptr<T>(hs), *hnp = ptr<T>(hn), *yp = ptr<T>(y),
    *ghp = ptr<T>(gh);
  const T *bip = ptr<T>(b_ih), *bhp = ptr<T>(b_hh);
  constexpr int N = vec_width<T>();
  const bool vec = N > 1 && H % N == 0 && pack_aligned<N>(gp) && pack_aligned<N>(hp) &&
                   pack_aligned<N>(hnp) && pack_aligned<N>(yp) && pack_aligned<N>(ghp) &&
                   pack_aligned<N>(bip) && pack_aligned<N>(bhp);
  gemm(op, false, true, T_ * B, G3, I, x.data_ptr(), I, w_ih.data_ptr(), I, false, gp, G3, ab,
       ab);
  auto stream = at::cuda::getCurrentCUDAStream();
  const T* w_hh_p = ptr<T>(w_hh);
  const bool fused = use_fused_step(B, sizeof(T));
  const bool fused_vec = fused_step_vec_ok<N>(H, w_hh_p, hp);
  for (int64_t s = 0; s < T_; ++s) {
    const int64_t t = reverse ? T_ - 1 - s : s;
    const T* h_in = hp + slot_in(t, reverse) * B * H;
    GruFwdStep<T> st{gp + t * B * G3, ghp, bip, bhp, h_in, hp + slot_out(t, reverse) * B * H,
                     hnp + t * B * H, yp + t * B * H, len, t, B, H};
    if (fused) {
      if (fused_vec) {
        gru_fused_step_kernel<V, N><<<fused_step_grid(H, B), fused_step_threads(3), 0, stream>>>(
            st, w_hh_p, rows[t]);
      } else {
        gru_fused_step_kernel<V, 1><<<fused_step_grid(H, B), fused_step_threads(3), 0, stream>>>(
            st, w_hh_p, rows[t]);
      }
      check_launch(op, "gru_fused_step_kernel");
      continue;
    }
    gemm(op, false, true, rows[t], G3, H, h_in, H, w_hh_p, H, false, ghp, G3, ab, ab);
    if (vec) {
      gru_forward_step_kernel<V, N><<<blocks_for(B * (H / N)), kThreads, 0, stream>>>(st);
    } else {
      gru_forward_step_kernel<V, 1><<<blocks_for(B * H), kThreads, 0, stream>>>(st);
    }
    check_launch(op, "gru_forward_step_kernel");
  }
}

template <typename T, typename V>
void gru_backward_loop(const char* op, const LayerDims& d, const at::Tensor& dy,
                       const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                       const int64_t* len, const std::vector<int64_t>& rows, bool reverse,
                       const at::Tensor& gates, const at::Tensor& hs, const at::Tensor& hn,
                       const at::Tensor& dh, const at::Tensor& dgi, const at::Tensor& dgh,
                       const at::Tensor& dx, const at::Tensor& dw_ih, const at::Tensor& dw_hh) {
  const int64_t T_ = d.T, B = d.B, I = d.I, H = d.H, G3 = 3 * H;
  const auto ab = x.scalar_type();
  const T *gp = ptr<T>(gates), *hp = ptr<T>(hs), *hnp = ptr<T>(hn), *dyp = ptr<T>(dy);
  T *dgip = ptr<T>(dgi), *dghp = ptr<T>(dgh);
  V* dhp = ptr<V>(dh);  // float32 for float16/bfloat16
  constexpr int N = vec_width<T>();
  const bool vec = N > 1 && H % N == 0 && pack_aligned<N>(gp) && pack_aligned<N>(hp) &&
                   pack_aligned<N>(hnp) && pack_aligned<N>(dyp) && pack_aligned<N>(dhp) &&
                   pack_aligned<N>(dgip) && pack_aligned<N>(dghp);
  auto stream = at::cuda::getCurrentCUDAStream();
  for (int64_t s = 0; s < T_; ++s) {
    const int64_t t = reverse ? s : T_ - 1 - s;  // the forward's order, backwards
    T* dgh_t = dghp + t * B * G3;
    GruBwdStep<T, V> st{gp + t * B * G3, hnp + t * B * H, hp + slot_in(t, reverse) * B * H, dhp,
                     dyp + t * B * H, dgip + t * B * G3, dgh_t, len, t, B, H};
    if (vec) {
      gru_backward_step_kernel<V, N><<<blocks_for(B * (H / N)), kThreads, 0, stream>>>(st);
    } else {
      gru_backward_step_kernel<V, 1><<<blocks_for(B * H), kThreads, 0, stream>>>(st);
    }
    check_launch(op, "gru_backward_step_kernel");
    // dL/dh_prev: the kernel left dh_tot * z in active rows, finished rows carry theirs.
    gemm(op, false, false, rows[t], H, G3, dgh_t, G3, w_hh.data_ptr(), H, true, dhp, H, ab,
         dh.scalar_type());
  }
  const int64_t TB = T_ * B;
  if (dx.defined()) {  // undefined when x needs no gradient
    gemm(op, false, false, TB, I, G3, dgip, G3, w_ih.data_ptr(), I, false, dx.data_ptr(), I, ab,
         ab);
  }
  if (!dw_ih.defined()) return;  // undefined (with dw_hh) when the weights need none
  gemm(op, true, false, G3, I, TB, dgip, G3, x.data_ptr(), I, false, dw_ih.data_ptr(), I, ab,
       ab);
  const T* h_prev = hp + slot_in(0, reverse) * B * H;  // hs[t + reverse], t = 0..T-1
  gemm(op, true, false, G3, H, TB, dghp, G3, h_prev, H, false, dw_hh.data_ptr(), H, ab, ab);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gru_forward_cuda(const at::Tensor& x_in, const at::Tensor& w_ih_in, const at::Tensor& w_hh_in,
                 const std::optional<at::Tensor>& b_ih_in,
                 const std::optional<at::Tensor>& b_hh_in, const at::Tensor& h0,
                 const std::optional<at::Tensor>& lengths, bool reverse) {
  const char* op = "fused_rnn::gru_forward";
  const LayerDims d =
      check_gru_forward_args(op, x_in, w_ih_in, w_hh_in, b_ih_in, b_hh_in, h0, lengths);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor len = lengths_on(op, lengths, x_in.device());
  const auto dt = x_in.scalar_type();
  const at::Tensor x = x_in.contiguous(), w_ih = w_ih_in.contiguous(),
                   w_hh = w_hh_in.contiguous();
  const bool has_bias = b_ih_in.has_value() && b_ih_in->defined();
  const at::Tensor b_ih = has_bias ? b_ih_in->contiguous() : at::Tensor();
  const at::Tensor b_hh = has_bias ? b_hh_in->contiguous() : at::Tensor();
  const auto opts = x.options();
  const int64_t T = d.T, B = d.B, H = d.H;
  at::Tensor y = at::empty({T, B, H}, opts);
  at::Tensor gates = at::empty({T, B, 3 * H}, opts);
  at::Tensor hs = at::empty({T + 1, B, H}, opts);
  at::Tensor hn = at::empty({T, B, H}, opts);
  at::Tensor gh = at::empty({B, 3 * H}, opts);  // per-step scratch: h_prev W_hh^T
  const int64_t first = reverse ? T : 0, last = reverse ? 0 : T;
  hs[first].copy_(h0);
  const auto rows = rows_active(lengths, T, B);
  const int64_t* lp = len.defined() ? len.data_ptr<int64_t>() : nullptr;
  dispatch_types(op, dt, [&](auto t_tag, auto v_tag) {
    gru_forward_loop<decltype(t_tag), decltype(v_tag)>(op, d, x, w_ih, w_hh, b_ih, b_hh, lp,
                                                       rows, reverse, y, gates, hs, hn, gh);
  });
  return {y, hs[last].clone(), gates, hs, hn};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gru_backward_cuda(const at::Tensor& dy_in, const at::Tensor& dh_n, const at::Tensor& x_in,
                  const at::Tensor& w_ih_in, const at::Tensor& w_hh_in,
                  const std::optional<at::Tensor>& lengths, bool reverse, bool has_bias,
                  const at::Tensor& gates_in, const at::Tensor& hs_in, const at::Tensor& hn_in,
                  bool need_dx, bool need_dw, bool need_dh0) {
  const char* op = "fused_rnn::gru_backward";
  const LayerDims d = check_gru_backward_args(op, dy_in, dh_n, x_in, w_ih_in, w_hh_in, lengths,
                                              gates_in, hs_in, hn_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor len = lengths_on(op, lengths, x_in.device());
  const auto dt = x_in.scalar_type();
  const at::Tensor dy = dy_in.contiguous(), x = x_in.contiguous(), w_ih = w_ih_in.contiguous(),
                   w_hh = w_hh_in.contiguous(), gates = gates_in.contiguous(),
                   hs = hs_in.contiguous(), hn = hn_in.contiguous();
  const int64_t T = d.T, B = d.B, I = d.I, H = d.H;
  const auto opts = x.options();
  // The running state gradient, updated in place (a fresh copy: inputs are never written),
  // in float32 for float16/bfloat16.
  at::Tensor dh = dh_n.to(cell_dtype(dt), false, /*copy=*/true).contiguous();
  at::Tensor dgi = at::empty({T, B, 3 * H}, opts);
  at::Tensor dgh = at::empty({T, B, 3 * H}, opts);
  at::Tensor dx = grad_buffer(need_dx, {T, B, I}, opts);
  at::Tensor dw_ih = grad_buffer(need_dw, {3 * H, I}, opts);
  at::Tensor dw_hh = grad_buffer(need_dw, {3 * H, H}, opts);
  const auto rows = rows_active(lengths, T, B);
  const int64_t* lp = len.defined() ? len.data_ptr<int64_t>() : nullptr;
  dispatch_types(op, dt, [&](auto t_tag, auto v_tag) {
    gru_backward_loop<decltype(t_tag), decltype(v_tag)>(op, d, dy, x, w_ih, w_hh, lp, rows,
                                                        reverse, gates, hs, hn, dh, dgi, dgh,
                                                        need_dx ? dx : at::Tensor(),
                                                        need_dw ? dw_ih : at::Tensor(),
                                                        need_dw ? dw_hh : at::Tensor());
  });
  // Bias gradients: deterministic reductions over all steps and rows, accumulated in
  // float32 (float64 for float64).
  const auto acc = cell_dtype(dt);
  const bool want_db = has_bias && need_dw;
  at::Tensor db_ih = want_db ? at::sum(dgi.view({T * B, 3 * H}), {0}, false, acc).to(dt)
                             : at::empty({0}, opts);
  at::Tensor db_hh = want_db ? at::sum(dgh.view({T * B, 3 * H}), {0}, false, acc).to(dt)
                             : at::empty({0}, opts);
  // The loop computes dh0 on its way (need_dh0 only decides whether it is returned).
  return {dx, dw_ih, dw_hh, db_ih, db_hh, state_grad(need_dh0, [&] { return dh.to(dt); }, opts)};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_rnn, CUDA, m) {
  m.impl("gru_forward", &gru_forward_cuda);
  m.impl("gru_backward", &gru_backward_cuda);
}

}  // namespace fused_rnn::cuda
