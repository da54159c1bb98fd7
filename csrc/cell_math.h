// Gate nonlinearities and element access shared by the CPU and CUDA kernels.
//
// Every per-element step (lstm_step.h, gru_step.h) is a template over the value
// type V it computes in and the storage type T it reads and writes. The GPU runs
// it with V a scalar (float or double); the CPU with V = at::vec::Vectorized<T>
// (cpu/vec_ops.h specializes VecOps for it) and with V = T for the tail of a row.
// All math goes through VecOps<V>, a qualified name, so the specialization is
// found at instantiation whatever the include order.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FR_HD __host__ __device__ __forceinline__
#else
#define FR_HD inline
#endif

namespace fused_rnn {

// Scalar V (float or double). Storage T may be narrower (half, bfloat16 on the GPU):
// values are widened on load and rounded on store.
template <typename V>
struct VecOps {
  static constexpr int kLanes = 1;
  template <typename T>
  static FR_HD V load(const T* p) { return static_cast<V>(*p); }
  template <typename T>
  static FR_HD void store(T* p, V v) { *p = static_cast<T>(v); }
  static FR_HD V splat(double x) { return static_cast<V>(x); }
  static FR_HD V exp(V x) { return ::exp(x); }
  static FR_HD V tanh(V x) { return ::tanh(x); }
  static FR_HD V sigmoid(V x) { return V(1) / (V(1) + ::exp(-x)); }
  static FR_HD V relu(V x) { return x < V(0) ? V(0) : x; }
  // dL/da = g where y > 0 (or NaN), else exactly 0, as torch's threshold_backward.
  static FR_HD V relu_backward(V y, V g) { return y <= V(0) ? V(0) : g; }
};

template <>
FR_HD float VecOps<float>::exp(float x) { return ::expf(x); }
template <>
FR_HD float VecOps<float>::tanh(float x) { return ::tanhf(x); }
template <>
FR_HD float VecOps<float>::sigmoid(float x) { return 1.0f / (1.0f + ::expf(-x)); }

// Derivatives written through the activation's output y, which is what the
// forward saves: sigmoid'(a) = y (1 - y), tanh'(a) = 1 - y^2.
template <typename V>
FR_HD V dsigmoid_from_output(V y) { return y * (VecOps<V>::splat(1.0) - y); }
template <typename V>
FR_HD V dtanh_from_output(V y) { return VecOps<V>::splat(1.0) - y * y; }

}  // namespace fused_rnn
