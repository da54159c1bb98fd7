// What a forward layer op needs to run its products in bfloat16 (bf16_gemm.h): the
// bfloat16 operands, and the state rounded to bfloat16 that each step multiplies by. The
// LSTM, GRU and Elman RNN forward kernels take a Bf16Operands* (null: float32 products).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <type_traits>

#include "bf16_gemm.h"
#include "input_projection.h"
#include "recurrent_slices.h"
#include "step_team.h"

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

// p as float* where S is float; the bfloat16 products exist only for float32 work (the
// kernels' double instantiation never gets operands).
template <typename S>
float* as_float(S* p) {
  if constexpr (std::is_same_v<S, float>) {
    return p;
  } else {
    TORCH_INTERNAL_ASSERT(p == nullptr, "fused_rnn: bfloat16 products need float32 work");
    return nullptr;
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
int64_t weight_element_bytes(const Bf16Operands* b16) {
  return b16 != nullptr ? int64_t{sizeof(bf16)} : int64_t{sizeof(S)};
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
    if (bf16_)
      w16_.gemm(u, m, h16_in, ldh, static_cast<float>(beta), as_float(out), ldo);
    else
      w_.gemm(u, m, h_in, ldh, beta, out, ldo);
  }

 private:
  bool bf16_;
  GateRowSlices<S> w_;
  Bf16GateRowSlices w16_;
};

}  // namespace fused_rnn::cpu
