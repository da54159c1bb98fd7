// Argument validation shared by every op and device: each failure names the op,
// the argument and what was expected, and is raised before any kernel runs.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

namespace fused_rnn {

// Shapes of one recurrent layer, derived from (and checked against) its arguments.
struct LayerDims {
  int64_t T = 0;  // time steps
  int64_t B = 0;  // batch
  int64_t I = 0;  // input features
  int64_t H = 0;  // hidden size
  int64_t P = 0;  // size of the recurrent state h: proj_size if projected, else H
  int64_t G = 0;  // gates per step: 4 (LSTM), 3 (GRU), 1 (RNN)
};

std::string shape_str(at::IntArrayRef sizes);

// `t` must have exactly `expected` sizes.
void check_shape(const char* op, const char* name, const at::Tensor& t,
                 std::vector<int64_t> expected, const char* meaning);

// `t` must share dtype and device with `ref` (named ref_name).
void check_like(const char* op, const char* name, const at::Tensor& t,
                const char* ref_name, const at::Tensor& ref);

// x is [T, B, I] floating point of a supported dtype on a supported device.
void check_input(const char* op, const at::Tensor& x);

// x, then w_ih [G*H, I] (which gives H) and w_hh [G*H, P], with P = H unless w_hr
// [P, H] projects the state (the LSTM's proj_size): every size of a layer, checked.
LayerDims check_layer_weights(const char* op, const at::Tensor& x, const at::Tensor& w_ih,
                              const at::Tensor& w_hh, int64_t G,
                              const std::optional<at::Tensor>& w_hr = std::nullopt);

// b_ih and b_hh: both or neither, each [G*H] like x.
void check_biases(const char* op, const std::optional<at::Tensor>& b_ih,
                  const std::optional<at::Tensor>& b_hh, const at::Tensor& x,
                  const LayerDims& d);

// Every argument of a forward with one state h0 [B, H] (GRU: G = 3, Elman RNN: G = 1).
LayerDims check_single_state_forward_args(const char* op, const at::Tensor& x,
                                          const at::Tensor& w_ih, const at::Tensor& w_hh,
                                          const std::optional<at::Tensor>& b_ih,
                                          const std::optional<at::Tensor>& b_hh,
                                          const at::Tensor& h0,
                                          const std::optional<at::Tensor>& lengths, int64_t G);

// The dtype of what a forward saves for x: float32 for bfloat16 and float16 on the CPU (which
// computes in float32), else x's own.
at::ScalarType saved_dtype(const at::Tensor& x);

// A saved tensor handed back to a backward: `dtype` on x's device, `expected` sizes.
void check_saved(const char* op, const char* name, const at::Tensor& t, at::ScalarType dtype,
                 const at::Tensor& x, std::vector<int64_t> expected, const char* meaning);

// lengths: int64 on the CPU, [B], each in [0, T].
void check_lengths(const char* op, const std::optional<at::Tensor>& lengths,
                   int64_t T, int64_t B);

// rows_active[t] = 1 + the largest batch index still running at step t (0 if none);
// rows past it are all finished, so per-step GEMMs can stop there. Without
// lengths every row runs at every step.
std::vector<int64_t> rows_active(const std::optional<at::Tensor>& lengths,
                                 int64_t T, int64_t B);

// Optional tensors arrive as undefined or as 0-element placeholders from Python.
inline bool present(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() && t->numel() > 0;
}

}  // namespace fused_rnn
