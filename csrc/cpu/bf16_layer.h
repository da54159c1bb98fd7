// What a layer op needs to run its products in bfloat16 (bf16_gemm.h). Forward: the
// bfloat16 operands, and the state rounded to bfloat16 that each step multiplies by; the
// LSTM, GRU and Elman RNN forward kernels take a Bf16Operands* (null: float32 products).
// Backward: W_hh in bfloat16 and the gate gradients rounded to bfloat16 as the time loop
// forms them, which the next step's dA W_hh and the products after the loop multiply
// (Bf16Grads*; null: float32 products).
#pragma once

#include <ATen/ATen.h>
#include <ATen/ops/mm_cpu_dispatch.h>

#include <cstdint>
#include <type_traits>

#include "bf16_gemm.h"
#include "blas.h"
#include "input_projection.h"
#include "recurrent_slices.h"
#include "step_team.h"
#include "work_memory.h"

namespace fused_rnn::cpu {

// x [T, B, I], w_ih [G*H, I], w_hh [G*H, F] as the op got them (contiguous), and h
// [2, B, F]: hs's slot s rounded to bfloat16 at h_at(s) (two buffers: a step reads one and
// writes the other).
struct Bf16Operands {
  const bf16* x;
  const bf16* w_ih;
  const bf16* w_hh;
  bf16* h;
  int64_t BF;  // B * F
  bf16* h_at(int64_t slot) const { return h + slot % 2 * BF; }
};

// The tensors behind a Bf16Operands, kept alive by the op for the call.
struct Bf16Layer {
  at::Tensor x, w_ih, w_hh, h;
  Bf16Operands operands() const {
    return {x.data_ptr<bf16>(), w_ih.data_ptr<bf16>(), w_hh.data_ptr<bf16>(),
            h.data_ptr<bf16>(), h.size(1) * h.size(2)};
  }
};

// The op's bfloat16 arguments (h0 [B, F]: the state before the first step, which takes
// slot `first`).
inline Bf16Layer bf16_layer(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                            const at::Tensor& h0, int64_t first) {
  Bf16Layer layer{x.contiguous(), w_ih.contiguous(), w_hh.contiguous(),
                  at::empty({2, h0.size(0), h0.size(1)}, x.options())};
  layer.h.select(0, first % 2).copy_(h0);
  return layer;
}

// p as float* (const float* for const S) where S is float; the bfloat16 products exist
// only for float32 work (the kernels' double instantiation never gets operands).
template <typename S>
auto as_float(S* p) {
  using F = std::conditional_t<std::is_const_v<S>, const float, float>;
  if constexpr (std::is_same_v<std::remove_const_t<S>, float>) {
    return p;
  } else {
    TORCH_INTERNAL_ASSERT(p == nullptr, "fused_rnn: bfloat16 products need float32 work");
    return static_cast<F*>(nullptr);
  }
}

// A forward layer's input projection, out[t, b, :] = x[t, b, :] W_ih^T (W_ih [N, I]) for
// the rows that run: in bfloat16 where b16 is given, else in S over all steps, except in a
// one-step call whose tiles project their own rows and units inside the step
// (project_in_step). Returns whether that is left to the step.
template <typename S>
bool project_input(int64_t T, int64_t B, int64_t I, int64_t N, const S* x, const S* w_ih,
                   S* out, const std::vector<int64_t>& rows, const Bf16Operands* b16) {
  if (b16 != nullptr) {
    project_rows_bf16(T, B, I, N, b16->x, b16->w_ih, as_float(out), rows);
    return false;
  }
  if (project_in_step(T, I, rows, B)) return true;
  project_rows<S>(T, B, I, N, x, w_ih, out, rows);
  return false;
}

// Bytes of a recurrent weight as the time loop reads it (for plan_team).
template <typename S>
int64_t weight_element_bytes(bool bf16_products) {
  return bf16_products ? int64_t{sizeof(bf16)} : int64_t{sizeof(S)};
}

// Block p's product on float32 slices w (A = a), or on their bfloat16 twins w16 (A = a16,
// a rounded to bfloat16) where in_bf16: out = A w_p + beta * out.
template <typename S, typename Slices, typename Slices16>
void slices_gemm(bool in_bf16, const Slices& w, const Slices16& w16, int64_t p, int64_t m,
                 const S* a, const bf16* a16, int64_t lda, S beta, S* out, int64_t ldo) {
  if (in_bf16)
    w16.gemm(p, m, a16, lda, static_cast<float>(beta), as_float(out), ldo);
  else
    w.gemm(p, m, a, lda, beta, out, ldo);
}

// A step's recurrent product h_prev W_hh^T for a tile's block of units (W_hh [gates * N,
// K]): on the float32 slices of W_hh, or on bfloat16 ones where b16 is given, which read
// the rounded state instead.
template <typename S>
class StepProduct {
 public:
  StepProduct(const S* w_hh, const Bf16Operands* b16, int64_t gates, int64_t N, int64_t K,
              const TeamPlan& plan, int64_t T)
      : bf16_(b16 != nullptr),
        w_(bf16_ ? nullptr : w_hh, gates, N, K, plan.units, plan.max_rows(), T,
           plan.gemm_rows_vary()),
        w16_(bf16_ ? b16->w_hh : nullptr, gates, N, K, plan.units) {}

  // out[:m, g*N + lo .. g*N + hi] = h[:m] W_slice^T + beta * out for block u's units, h
  // being h_in, or h16_in in bfloat16.
  void gemm(int64_t u, int64_t m, const S* h_in, const bf16* h16_in, int64_t ldh, S beta,
            S* out, int64_t ldo) const {
    slices_gemm(bf16_, w_, w16_, u, m, h_in, h16_in, ldh, beta, out, ldo);
  }

 private:
  bool bf16_;
  GateRowSlices<S> w_;
  Bf16GateRowSlices w16_;
};

// The backward's bfloat16 operands: W_hh [G_h, K], and the gradients of the gate
// pre-activations rounded to bfloat16, dg_in [T, B, G_in] (what x's products multiply) and
// dg_h [T, B, G_h] (what the state's multiply; the same buffer for the LSTM and the RNN,
// whose gates take x and h alike).
struct Bf16Grads {
  const bf16* w_hh;
  bf16* dg_in;
  bf16* dg_h;
};

// The tensors behind a Bf16Grads, kept alive by the op for the call.
struct Bf16BackLayer {
  at::Tensor w_hh, dg_in, dg_h;
  Bf16Grads grads() const {
    return {w_hh.data_ptr<bf16>(), dg_in.data_ptr<bf16>(), dg_h.data_ptr<bf16>()};
  }
};

// g_h = 0: one gate gradient for x and h (dg_h is dg_in).
inline Bf16BackLayer bf16_back_layer(const at::Tensor& w_hh, int64_t T, int64_t B, int64_t g_in,
                                     int64_t g_h) {
  const auto opts = w_hh.options().dtype(at::kBFloat16);
  at::Tensor dg_in = work_empty({T, B, g_in}, opts);
  return {w_hh.contiguous(), dg_in, g_h == 0 ? dg_in : work_empty({T, B, g_h}, opts)};
}

// p + offset, or null where there is no p (float32 products).
inline bf16* offset_or_null(bf16* p, int64_t offset) {
  return p != nullptr ? p + offset : nullptr;
}

// A tile's gate gradients of one row, the columns [lo, hi) of each of `gates` gates of H
// units, from src (float32, as the cell's backward wrote them) into dst in bfloat16.
template <typename S>
void round_gate_columns(const S* src, bf16* dst, int64_t gates, int64_t H, int64_t lo,
                        int64_t hi) {
  for (int64_t g = 0; g < gates; ++g)
    round_to_bf16(as_float(src) + g * H + lo, dst + g * H + lo, hi - lo);
}

// A backward step's recurrent product dA W_hh for a tile's block of state columns (W_hh
// [rows, K]): on the float32 slices, or on bfloat16 ones where b16 is given, which read the
// rounded gate gradients instead.
template <typename S>
class StepGradProduct {
 public:
  StepGradProduct(const S* w_hh, const Bf16Grads* b16, int64_t rows, int64_t K,
                  const UnitBlocks& blocks, const TeamPlan& plan, int64_t T)
      : bf16_(b16 != nullptr), blocks_(blocks), rows_(rows), K_(K), w_hh_(w_hh),
        w_(bf16_ ? nullptr : w_hh, rows, K, blocks, plan.max_rows(), T, plan.gemm_rows_vary()),
        w16_(bf16_ ? b16->w_hh : nullptr, rows, K, blocks) {}

  // out[:m, lo .. hi] = dA[:m] W_hh[:, lo .. hi] + beta * out for block p's columns, dA
  // being dA_in, or dA16_in in bfloat16.
  void gemm(int64_t p, int64_t m, const S* dA_in, const bf16* dA16_in, int64_t lda, S beta,
            S* out, int64_t ldo) const {
    slices_gemm(bf16_, w_, w16_, p, m, dA_in, dA16_in, lda, beta, out, ldo);
  }

  // out[:m] += dA[:m] W_hh over all columns, on the calling thread outside the time loop
  // (the first step's dL/dh_prev, h0's gradient: any number of rows).
  void add_all_columns(int64_t m, const S* dA_in, const bf16* dA16_in, int64_t lda, S* out,
                       int64_t ldo) const {
    if (!bf16_) {
      cpu::gemm<S>(false, false, m, K_, rows_, S(1), dA_in, lda, w_hh_, K_, S(1), out, ldo);
      return;
    }
    for (int64_t p = 0; p < blocks_.count; ++p)
      w16_.gemm(p, m, dA16_in, lda, 1.0f, as_float(out), ldo);
  }

 private:
  bool bf16_;
  UnitBlocks blocks_;
  int64_t rows_, K_;
  const S* w_hh_;
  ColumnSlices<S> w_;
  Bf16ColumnSlices w16_;
};

// The backward's products over all steps, in bfloat16 where its loop ran on b16: from the
// rounded gate gradients, through at::cpu::mm (oneDNN's bfloat16 GEMM, about twice
// float32's rate on these CPUs, as torch.nn's oneDNN backward runs them; at::cpu:: skips
// the dispatcher, so an enclosing autocast cannot recast them):
//   dx = dg_in W_ih,  dW_ih = dg_in^T x,  dW_hh = dg_h^T h_prev
// x [T, B, I] and w_ih [G_in, I] bfloat16, h_prev [T, B, K] float32 (the states the steps
// multiplied, rounded here as the forward rounded them). Results in bfloat16, the op's
// dtype, into dx, dw_ih and dw_hh (left as they are where not wanted: empty, from
// grad_buffer).
inline void bf16_grad_products(const Bf16BackLayer& layer, const at::Tensor& x,
                               const at::Tensor& w_ih, const at::Tensor& h_prev, bool need_dx,
                               bool need_dw, at::Tensor& dx, at::Tensor& dw_ih,
                               at::Tensor& dw_hh) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), TB = T * B;
  const at::Tensor dg_in = layer.dg_in.view({TB, layer.dg_in.size(2)}),
                   dg_h = layer.dg_h.view({TB, layer.dg_h.size(2)});
  if (need_dx) dx = at::cpu::mm(dg_in, w_ih.contiguous()).view({T, B, I});
  if (need_dw) {
    dw_ih = at::cpu::mm(dg_in.t(), x.reshape({TB, I}));
    dw_hh = at::cpu::mm(dg_h.t(), h_prev.reshape({TB, h_prev.size(2)}).to(at::kBFloat16));
  }
}

}  // namespace fused_rnn::cpu
