// What a forward layer op needs to run its products in bfloat16 (bf16_gemm.h): the
// bfloat16 operands, and the state rounded to bfloat16 that each step multiplies by. The
// LSTM, GRU and Elman RNN forward kernels take a Bf16Operands* (null: float32 products).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <type_traits>

#include "bf16_gemm.h"

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

}  // namespace fused_rnn::cpu
