// Schemas of every fused_rnn op, and the Python module that loads them.
// Device implementations register themselves in cpu/*.cpp and cuda/*.cu.
#include <Python.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "cpu/bf16_gemm.h"
#include "cpu/blas.h"
#include "cpu/blocked_gemm.h"
#include "cpu/layer_util.h"
#include "cpu/step_team.h"
#include "cpu/work_memory.h"

#ifndef FUSED_RNN_TORCH_VERSION
#define FUSED_RNN_TORCH_VERSION "unknown"
#endif
#ifndef FUSED_RNN_CPU_CAPABILITY
#define FUSED_RNN_CPU_CAPABILITY "default"
#endif
#ifndef FUSED_RNN_CUDA_ARCHS
#define FUSED_RNN_CUDA_ARCHS ""
#endif

extern "C" {
// `import fused_rnn._C` loads this library, whose static initializers register the ops.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace fused_rnn {
namespace {

// key=value lines describing how this binary was built (read by fused_rnn.build_info()).
std::string build_info() {
  std::string s;
  s += "torch_version=" FUSED_RNN_TORCH_VERSION "\n";
  s += "cpu_capability=" FUSED_RNN_CPU_CAPABILITY "\n";
#ifdef FUSED_RNN_WITH_CUDA
  s += "cuda=1\n";
  s += "cuda_archs=" FUSED_RNN_CUDA_ARCHS "\n";
#else
  s += "cuda=0\n";
#endif
  s += std::string("cpu_blas=") + cpu::blas_backend() + "\n";
  s += std::string("cpu_packed_gemm=") + (cpu::packed_gemm_enabled() ? "1" : "0") + "\n";
  // Whether this is an Intel CPU, where some measured choices differ (blas.h's intel_cpu).
  s += std::string("cpu_intel=") + (cpu::intel_cpu() ? "1" : "0") + "\n";
  // Whether this CPU's large float32 products default to blocked_gemm (not Intel's x86).
  s += std::string("cpu_blocked_gemm=") + (cpu::blocked_gemm_preferred() ? "1" : "0") + "\n";
  // Whether bfloat16 LSTM layers multiply in bfloat16 here (AVX512-BF16; bf16_gemm.h).
  s += std::string("cpu_bf16_dot=") + (cpu::bf16_dot_available() ? "1" : "0") + "\n";
  return s;
}

// How a CPU time loop over B rows and H units, with weight_bytes of recurrent weights and
// SIMD vectors `align` wide, would split over torch's threads now (step_team.h):
// [how, blocks] with how 0 = one block, 1 = by units, 2 = by rows; with lengths (varlen
// rows, int64 [B]) and a split by rows, then each block's first row and B. T: the call's
// steps (0: a long call; with lengths, 0 means their maximum; 1: a one-step call whose rows
// all run, so its tiles project their own input). For tests of the choice and of
// FUSED_RNN_TEAM.
std::vector<int64_t> cpu_team_plan(int64_t B, int64_t H, int64_t align, int64_t weight_bytes,
                                   const std::optional<at::Tensor>& lengths, int64_t T) {
  const at::Tensor len = cpu::lengths_or_undefined(lengths);
  TORCH_CHECK(!len.defined() || (len.scalar_type() == at::kLong && len.numel() == B),
              "cpu_team_plan: lengths must be int64 [B]");
  const int64_t* l = len.defined() ? len.data_ptr<int64_t>() : nullptr;
  if (T == 0 && len.defined() && B > 0) T = len.max().item<int64_t>();
  const cpu::TeamPlan plan =
      cpu::plan_team(B, H, align, weight_bytes, l, T, cpu::project_in_step(T, 1, {B}, B));
  const int64_t how = plan.by_rows ? 2 : plan.units.count > 1 ? 1 : 0;
  std::vector<int64_t> out{how, plan.count()};
  if (l != nullptr && plan.by_rows)
    out.insert(out.end(), plan.row_cuts.begin(), plan.row_cuts.end());
  return out;
}

}  // namespace

TORCH_LIBRARY(fused_rnn, m) {
  // LSTM layer (lstm_args.h documents every argument and saved tensor).
  // Returns y, h_n, c_n and the saved gates, hs, cs, h_raw.
  m.def(
      "lstm_forward(Tensor x, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "Tensor? w_hr, Tensor h0, Tensor c0, Tensor? lengths, bool reverse) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Returns dx ([0] when !need_dx: x needs no gradient, as the data fed to a first
  // layer, and its product, a quarter of the backward's FLOPs at I = H, is skipped), dw_ih,
  // dw_hh, db (shared by b_ih and b_hh; [0] without bias), dw_hr ([0] without
  // projection), dh0, dc0; with !need_dw (frozen weights) dw_ih, dw_hh, db and dw_hr are
  // [0] and their products skipped. With !need_dh0 (neither h0 nor c0 wants a gradient,
  // as for the zeros a module makes when no state is given) dh0 and dc0 are [0], and the
  // CPU skips the first step's product with W_hh (a one-step call's only recurrent product
  // in backward). The same need_dx, need_dw and need_dh0 in the GRU and RNN backward ops.
  m.def(
      "lstm_backward(Tensor dy, Tensor dh_n, Tensor dc_n, Tensor x, Tensor w_ih, Tensor w_hh, "
      "Tensor? w_hr, Tensor? lengths, bool reverse, bool has_bias, Tensor gates, Tensor hs, "
      "Tensor cs, Tensor h_raw, bool need_dx=True, bool need_dw=True, bool need_dh0=True) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // GRU layer (gru_args.h documents every argument and saved tensor).
  // Returns y, h_n and the saved gates, hs, hn.
  m.def(
      "gru_forward(Tensor x, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor h0, "
      "Tensor? lengths, bool reverse) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Returns dx ([0] when !need_dx), dw_ih, dw_hh, db_ih, db_hh ([0] each without bias or
  // when !need_dw), dh0 ([0] when !need_dh0).
  m.def(
      "gru_backward(Tensor dy, Tensor dh_n, Tensor x, Tensor w_ih, Tensor w_hh, "
      "Tensor? lengths, bool reverse, bool has_bias, Tensor gates, Tensor hs, Tensor hn, "
      "bool need_dx=True, bool need_dw=True, bool need_dh0=True) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Elman RNN layer (rnn_args.h documents every argument and the saved states);
  // relu picks act = relu, else tanh. Returns y, h_n and the saved hs.
  m.def(
      "rnn_forward(Tensor x, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor h0, "
      "Tensor? lengths, bool reverse, bool relu) -> (Tensor, Tensor, Tensor)");
  // Returns dx ([0] when !need_dx), dw_ih, dw_hh, db (shared by b_ih and b_hh; [0]
  // without bias; these three [0] when !need_dw), dh0 ([0] when !need_dh0).
  m.def(
      "rnn_backward(Tensor dy, Tensor dh_n, Tensor x, Tensor w_ih, Tensor w_hh, "
      "Tensor? lengths, bool reverse, bool relu, bool has_bias, Tensor hs, "
      "bool need_dx=True, bool need_dw=True, bool need_dh0=True) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The forward ops' argument checks alone (same messages, named after the forward op),
  // for the paths that run a layer as differentiable torch ops instead (fused_rnn/_rerun.py).
  m.def(
      "lstm_check(Tensor x, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, "
      "Tensor h0, Tensor c0, Tensor? lengths) -> ()");
  m.def(
      "gru_check(Tensor x, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor h0, "
      "Tensor? lengths) -> ()");
  m.def(
      "rnn_check(Tensor x, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor h0, "
      "Tensor? lengths) -> ()");
  // The forward ops with the backward ops as their gradient, through C++ autograd Functions
  // (layer_autograd.cpp): the route fused_rnn/ops.py's _call takes for eager calls, with or
  // without a gradient. Not for direct use: under torch.func or CUDA autocast only the
  // forward ops above are right (_call chooses). Return the forward op's first outputs (y
  // and the final states).
  m.def(
      "lstm_layer_autograd(Tensor x, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "Tensor? w_hr, Tensor h0, Tensor c0, Tensor? lengths, bool reverse) -> "
      "(Tensor, Tensor, Tensor)");
  m.def(
      "gru_layer_autograd(Tensor x, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "Tensor h0, Tensor? lengths, bool reverse) -> (Tensor, Tensor)");
  m.def(
      "rnn_layer_autograd(Tensor x, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "Tensor h0, Tensor? lengths, bool reverse, bool relu) -> (Tensor, Tensor)");
  // A module's whole forward for plain tensor input (module_forward.cpp): the eager route
  // of fused_rnn/rnn_base.py's forward, which passes its configuration. Returns [] where
  // that forward's Python route must run instead. Not for direct use.
  m.def(
      "module_forward(str mode, Tensor input, Tensor[] hx, Tensor?[] weights, int num_layers, "
      "bool bidirectional, bool batch_first, float dropout, bool train, int input_size, "
      "int hidden_size, int proj_size) -> Tensor[]");
  // A cell's step (fused_rnn.LSTMCell/GRUCell/RNNCell) likewise: the new states, or [].
  m.def(
      "cell_forward(str mode, Tensor input, Tensor[] hx, Tensor?[] weights, int input_size, "
      "int hidden_size) -> Tensor[]");
  m.def("build_info() -> str", &build_info);
  // Whether a bfloat16 LSTM layer call of T steps over B rows multiplies in bfloat16 on
  // this CPU now (bf16_gemm.h): the modules' CPU autocast picks bfloat16 or float32 work by
  // it (fused_rnn/_autocast.py).
  // The cache of the CPU ops' large buffers (cpu/work_memory.h): bytes held free, and
  // freeing them (returns the bytes freed).
  m.def("cpu_cache_bytes() -> int", [] { return cpu::work_cache_bytes(); });
  m.def("empty_cpu_cache() -> int", [] { return cpu::empty_work_cache(); });
  m.def("cpu_bf16_dot(int T, int B) -> bool", [](int64_t T, int64_t B) {
    return cpu::bf16_products_for(T, B);
  });
  m.def(
      "cpu_team_plan(int B, int H, int align, int weight_bytes, Tensor? lengths=None, "
      "int T=0) -> int[]",
      &cpu_team_plan);
}

}  // namespace fused_rnn
