// CUDA implementation of the Elman RNN layer ops (argument layout: rnn_args.h).
//
// Forward: the input projection of every step as one cuBLAS GEMM into y; per step one
// GEMM (y_t += h_prev W_hh^T) and one fused pointwise kernel running rnn_forward_elem,
// the very function the CPU runs. Backward walks the steps in reverse with one fused
// kernel and one GEMM per step, then forms dx and the weight gradients as single GEMMs
// over all steps and the bias gradient as one reduction (no atomics). All on torch's
// current stream, nothing allocated or synchronized inside the time loops.
//
// Storage is the input dtype, except the running gradient dL/dh of the backward, kept in
// float32 for float16/bfloat16 (rounding it to 16 bits every step would compound over the
// sequence); float16/bfloat16 run the activation in float32 and their GEMMs with float32
// accumulation.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <type_traits>

#include "../rnn_args.h"
#include "../rnn_step.h"
#include "cublas_gemm.h"
#include "launch.h"
#include "layer_common.cuh"

namespace fused_rnn::cuda {
namespace {

template <typename T>
struct RnnFwdStep {
  T* y;            // [B, H] in: pre-activations without bias; out: the output h
  const T* bias;   // [H] b_ih + b_hh, or nullptr
  const T* h_in;   // [B, H]
  T* h_out;        // [B, H]
  const int64_t* len;
  int64_t t, B, H;
};

// One thread per (row b, N consecutive hidden indices); see lstm_cuda.cu for the
// vector (N > 1) / scalar (N = 1) split.
template <typename V, bool kRelu, int N, typename T>
__global__ void rnn_forward_step_kernel(RnnFwdStep<T> a) {
  const int64_t H = a.H, chunks = H / N, total = a.B * chunks;
  FR_KERNEL_LOOP(idx, total) {
    const int64_t b = idx / chunks, j = (idx - b * chunks) * N, r = b * H;
    if (!row_active(a.len, b, a.t)) {  // a finished row keeps its state and outputs zeros
#pragma unroll
      for (int l = 0; l < N; ++l) {
        a.h_out[r + j + l] = a.h_in[r + j + l];
        a.y[r + j + l] = T(0);
      }
      continue;
    }
    if constexpr (N == 1) {
      rnn_forward_elem<V, kRelu>(a.y + r, a.bias, a.h_out + r, a.y + r, j);
    } else {
      T pre[N], bias[N], h[N];
      load_pack<N>(a.y + r + j, pre);
      if (a.bias != nullptr) load_pack<N>(a.bias + j, bias);
      const T* bias_p = a.bias != nullptr ? bias : static_cast<const T*>(nullptr);
#pragma unroll
      for (int l = 0; l < N; ++l) rnn_forward_elem<V, kRelu>(pre, bias_p, h, pre, l);
      store_pack<N>(a.y + r + j, pre);
      store_pack<N>(a.h_out + r + j, h);
    }
  }
}

template <typename T, typename C>
struct RnnBwdStep {
  const T* h;      // [B, H] the state step t wrote
  C* dh;           // [B, H] in: dL/dh; out: zeroed on active rows (float32 for 16-bit T)
  const T* dy;     // [B, H]
  T* da;           // [B, H] out (zero on finished rows)
  const int64_t* len;
  int64_t t, B, H;
};

template <typename V, bool kRelu, int N, typename T>
__global__ void rnn_backward_step_kernel(RnnBwdStep<T, V> a) {
  const int64_t H = a.H, chunks = H / N, total = a.B * chunks;
  FR_KERNEL_LOOP(idx, total) {
    const int64_t b = idx / chunks, j = (idx - b * chunks) * N, r = b * H;
    if (!row_active(a.len, b, a.t)) {  // dh passes through a finished row untouched
#pragma unroll
      for (int l = 0; l < N; ++l) a.da[r + j + l] = T(0);
      continue;
    }
    if constexpr (N == 1) {
      rnn_backward_elem<V, kRelu>(a.h + r, a.dh + r, a.dy + r, a.da + r, j);
    } else {
      T h[N], dy[N], da[N];
      V dh[N];
      load_pack<N>(a.h + r + j, h);
      load_pack<N>(a.dh + r + j, dh);
      load_pack<N>(a.dy + r + j, dy);
#pragma unroll
      for (int l = 0; l < N; ++l) rnn_backward_elem<V, kRelu>(h, dh, dy, da, l);
      store_pack<N>(a.da + r + j, da);
      store_pack<N>(a.dh + r + j, dh);
    }
  }
}

template <typename V, bool kRelu, typename T>
void launch_forward(const char* op, const RnnFwdStep<T>& s, bool vec) {
  constexpr int N = vec_width<T>();
  auto stream = at::cuda::getCurrentCUDAStream();
  if (vec) {
    rnn_forward_step_kernel<V, kRelu, N><<<blocks_for(s.B * (s.H / N)), kThreads, 0, stream>>>(s);
  } else {
    rnn_forward_step_kernel<V, kRelu, 1><<<blocks_for(s.B * s.H), kThreads, 0, stream>>>(s);
  }
  check_launch(op, "rnn_forward_step_kernel");
}

template <typename V, bool kRelu, typename T>
void launch_backward(const char* op, const RnnBwdStep<T, V>& s, bool vec) {
  constexpr int N = vec_width<T>();
  auto stream = at::cuda::getCurrentCUDAStream();
  if (vec) {
    rnn_backward_step_kernel<V, kRelu, N><<<blocks_for(s.B * (s.H / N)), kThreads, 0, stream>>>(s);
  } else {
    rnn_backward_step_kernel<V, kRelu, 1><<<blocks_for(s.B * s.H), kThreads, 0, stream>>>(s);
  }
  check_launch(op, "rnn_backward_step_kernel");
}

template <typename T, typename V, bool kRelu>
void rnn_forward_loop(const char* op, const LayerDims& d, const at::Tensor& x,
                      const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& bias,
                      const int64_t* len, const std::vector<int64_t>& rows, bool reverse,
                      const at::Tensor& y, const at::Tensor& hs) {
  const int64_t T_ = d.T, B = d.B, I = d.I, H = d.H;
  const auto ab = x.scalar_type();
  T *yp = ptr<T>(y), *hp = ptr<T>(hs);
  const T* bp = ptr<T>(bias);
  constexpr int N = vec_width<T>();
  const bool vec = N > 1 && H % N == 0 && pack_aligned<N>(yp) && pack_aligned<N>(hp) &&
                   pack_aligned<N>(bp);
  // y[t, b, :] = x[t, b, :] W_ih^T for all steps at once.
  gemm(op, false, true, T_ * B, H, I, x.data_ptr(), I, w_ih.data_ptr(), I, false, yp, H, ab, ab);
  for (int64_t s = 0; s < T_; ++s) {
    const int64_t t = reverse ? T_ - 1 - s : s;
    T* y_t = yp + t * B * H;
    const T* h_in = hp + slot_in(t, reverse) * B * H;
    gemm(op, false, true, rows[t], H, H, h_in, H, w_hh.data_ptr(), H, true, y_t, H, ab, ab);
    launch_forward<V, kRelu>(
        op, RnnFwdStep<T>{y_t, bp, h_in, hp + slot_out(t, reverse) * B * H, len, t, B, H}, vec);
  }
}

template <typename T, typename V, bool kRelu>
void rnn_backward_loop(const char* op, const LayerDims& d, const at::Tensor& dy,
                       const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                       const int64_t* len, const std::vector<int64_t>& rows, bool reverse,
                       const at::Tensor& hs, const at::Tensor& dh, const at::Tensor& da,
                       const at::Tensor& dx, const at::Tensor& dw_ih, const at::Tensor& dw_hh) {
  const int64_t T_ = d.T, B = d.B, I = d.I, H = d.H;
  const auto ab = x.scalar_type();
  const T *hp = ptr<T>(hs), *dyp = ptr<T>(dy);
  T* dap = ptr<T>(da);
  V* dhp = ptr<V>(dh);  // float32 for float16/bfloat16
  constexpr int N = vec_width<T>();
  const bool vec = N > 1 && H % N == 0 && pack_aligned<N>(hp) && pack_aligned<N>(dyp) &&
                   pack_aligned<N>(dhp) && pack_aligned<N>(dap);
  for (int64_t s = 0; s < T_; ++s) {
    const int64_t t = reverse ? s : T_ - 1 - s;  // the forward's order, backwards
    T* da_t = dap + t * B * H;
    launch_backward<V, kRelu>(
        op, RnnBwdStep<T, V>{hp + slot_out(t, reverse) * B * H, dhp, dyp + t * B * H, da_t, len,
                             t, B, H},
        vec);
    // dL/dh_prev: active rows were zeroed above, finished rows carry theirs.
    gemm(op, false, false, rows[t], H, H, da_t, H, w_hh.data_ptr(), H, true, dhp, H, ab,
         dh.scalar_type());
  }
  const int64_t TB = T_ * B;
  if (dx.defined()) {  // undefined when x needs no gradient
    gemm(op, false, false, TB, I, H, dap, H, w_ih.data_ptr(), I, false, dx.data_ptr(), I, ab, ab);
  }
  if (!dw_ih.defined()) return;  // undefined (with dw_hh) when the weights need none
  gemm(op, true, false, H, I, TB, dap, H, x.data_ptr(), I, false, dw_ih.data_ptr(), I, ab, ab);
  const T* h_prev = hp + slot_in(0, reverse) * B * H;  // hs[t + reverse], t = 0..T-1
  gemm(op, true, false, H, H, TB, dap, H, h_prev, H, false, dw_hh.data_ptr(), H, ab, ab);
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

std::tuple<at::Tensor, at::Tensor, at::Tensor> rnn_forward_cuda(
    const at::Tensor& x_in, const at::Tensor& w_ih_in, const at::Tensor& w_hh_in,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
    const at::Tensor& h0, const std::optional<at::Tensor>& lengths, bool reverse, bool relu) {
  const char* op = "fused_rnn::rnn_forward";
  const LayerDims d =
      check_rnn_forward_args(op, x_in, w_ih_in, w_hh_in, b_ih, b_hh, h0, lengths);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor len = lengths_on(op, lengths, x_in.device());
  const auto dt = x_in.scalar_type();
  const at::Tensor x = x_in.contiguous(), w_ih = w_ih_in.contiguous(),
                   w_hh = w_hh_in.contiguous();
  const bool has_bias = b_ih.has_value() && b_ih->defined();
  // b_ih + b_hh summed in float32 for half inputs, then stored in the input dtype.
  const at::Tensor bias =
      has_bias ? (b_ih->to(cell_dtype(dt)) + b_hh->to(cell_dtype(dt))).to(dt).contiguous()
               : at::Tensor();
  const auto opts = x.options();
  const int64_t T = d.T, B = d.B, H = d.H;
  at::Tensor y = at::empty({T, B, H}, opts);
  at::Tensor hs = at::empty({T + 1, B, H}, opts);
  const int64_t first = reverse ? T : 0, last = reverse ? 0 : T;
  hs[first].copy_(h0);
  const auto rows = rows_active(lengths, T, B);
  const int64_t* lp = len.defined() ? len.data_ptr<int64_t>() : nullptr;
  dispatch_types(op, dt, [&](auto t_tag, auto v_tag) {
    with_activation(relu, [&](auto act) {
      rnn_forward_loop<decltype(t_tag), decltype(v_tag), decltype(act)::value>(
          op, d, x, w_ih, w_hh, bias, lp, rows, reverse, y, hs);
    });
  });
  return {y, hs[last].clone(), hs};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_backward_cuda(
    const at::Tensor& dy_in, const at::Tensor& dh_n, const at::Tensor& x_in,
    const at::Tensor& w_ih_in, const at::Tensor& w_hh_in,
    const std::optional<at::Tensor>& lengths, bool reverse, bool relu, bool has_bias,
    const at::Tensor& hs_in, bool need_dx, bool need_dw, bool need_dh0) {
  const char* op = "fused_rnn::rnn_backward";
  const LayerDims d =
      check_rnn_backward_args(op, dy_in, dh_n, x_in, w_ih_in, w_hh_in, lengths, hs_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor len = lengths_on(op, lengths, x_in.device());
  const auto dt = x_in.scalar_type();
  const at::Tensor dy = dy_in.contiguous(), x = x_in.contiguous(), w_ih = w_ih_in.contiguous(),
                   w_hh = w_hh_in.contiguous(), hs = hs_in.contiguous();
  const int64_t T = d.T, B = d.B, I = d.I, H = d.H;
  const auto opts = x.options();
  // The running dL/dh, updated in place (a fresh copy: inputs are never written), in
  // float32 for float16/bfloat16.
  at::Tensor dh = dh_n.to(cell_dtype(dt), false, /*copy=*/true).contiguous();
  at::Tensor da = at::empty({T, B, H}, opts);
  at::Tensor dx = grad_buffer(need_dx, {T, B, I}, opts);
  at::Tensor dw_ih = grad_buffer(need_dw, {H, I}, opts);
  at::Tensor dw_hh = grad_buffer(need_dw, {H, H}, opts);
  const auto rows = rows_active(lengths, T, B);
  const int64_t* lp = len.defined() ? len.data_ptr<int64_t>() : nullptr;
  dispatch_types(op, dt, [&](auto t_tag, auto v_tag) {
    with_activation(relu, [&](auto act) {
      rnn_backward_loop<decltype(t_tag), decltype(v_tag), decltype(act)::value>(
          op, d, dy, x, w_ih, w_hh, lp, rows, reverse, hs, dh, da, need_dx ? dx : at::Tensor(),
          need_dw ? dw_ih : at::Tensor(), need_dw ? dw_hh : at::Tensor());
    });
  });
  // Bias gradient: one deterministic reduction, accumulated in float32 (float64).
  const bool want_db = has_bias && need_dw;
  at::Tensor db = want_db ? at::sum(da.view({T * B, H}), {0}, false, cell_dtype(dt)).to(dt)
                          : at::empty({0}, opts);
  // The loop computes dh0 on its way (need_dh0 only decides whether it is returned).
  return {dx, dw_ih, dw_hh, db, state_grad(need_dh0, [&] { return dh.to(dt); }, opts)};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_rnn, CUDA, m) {
  m.impl("rnn_forward", &rnn_forward_cuda);
  m.impl("rnn_backward", &rnn_backward_cuda);
}

}  // namespace fused_rnn::cuda
