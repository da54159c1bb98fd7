// Row-major GEMM on raw pointers for the CPU time loops:
//   C[m, n] = alpha * op(A) op(B) + beta * C,  op(X) = X^T when trans_X.
// Calls the BLAS inside libtorch_cpu (MKL on x86_64 wheels) directly, without the
// dispatcher's per-call cost, and falls back to at::mm_out where none is exported; a few
// rows of A (thin_gemm.h's thin_rows) go to thin_gemm.h instead (no copy of B).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace fused_rnn::cpu {

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// The products over all steps of a layer, outside its time loop (the input projection, dx
// and the weight gradients): gemm() above, except the float32 products with alpha = 1 that
// blocked_gemm.h serves faster than MKL (blocked_gemm_suits; FUSED_RNN_BLOCKED_GEMM).
template <typename T>
void large_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// Whether this is an Intel CPU (x86 vendor string "GenuineIntel"). MKL is Intel's own and
// tuned there: our register kernels measured faster than MKL on AMD Zen 3 and slower on
// an Intel Xeon (benchmarks/NOTES.md, sessions 5 and 9), so some choices depend on it.
bool intel_cpu();

// Which BLAS the GEMMs reach ("sgemm_/dgemm_ in libtorch" or "at::mm").
const char* blas_backend();

// The B operand of many GEMMs C[m, n] = A[m, k] op(B) + beta * C that share it, as in
// a time loop's per-step h W^T: packed once per layer call, so no step re-packs it.
// float32 only: into panel_gemm.h's panels where they suit (up to 512 rows; on Intel CPUs
// one row, up to 31 rows by a k x n under 192K floats, or any k x n under 256 x 256;
// faster than MKL there), else into MKL's packed layout when libtorch exports
// cblas_sgemm_pack/compute. Otherwise (float64, no MKL, FUSED_RNN_PACKED_GEMM=0) gemm()
// forwards to the plain gemm() above.
// FUSED_RNN_PACKED_GEMM=panels or =mkl picks one packing wherever it can run (tests of
// both on any CPU; A/B runs). The caller keeps B alive and unchanged while this object
// lives.
template <typename T>
class PackedB {
 public:
  // uses: how many products will share this B. Packing costs about one pass over B, and
  // for too few products (blas.cpp's uses_to_pack says how few) B stays as it is for plain
  // gemm() (measured: a 1-step call paid ~1 ms to pack a 2048 x 512 W_hh, 5x the call
  // without it).
  // m_varies: the products will have fewer than max_m rows at some calls (varlen rows, or
  // a narrower last block of rows); MKL's packed B serves only max_m, so such products
  // take the panels where they suit.
  PackedB(bool trans_b, int64_t k, int64_t n, const T* B, int64_t ldb, int64_t max_m,
          int64_t uses, bool m_varies = false);
  PackedB(const PackedB&) = delete;
  PackedB& operator=(const PackedB&) = delete;

  // C = A op(B) + beta * C for the first m <= max_m rows of A and C.
  void gemm(int64_t m, const T* A, int64_t lda, T beta, T* C, int64_t ldc) const;
  bool packed() const { return buf_.defined(); }

 private:
  bool trans_b_;
  int64_t k_, n_, ldb_, max_m_;
  const T* B_;
  at::Tensor buf_;      // MKL's packed copy of op(B), or undefined
  bool panels_ = false;  // buf_ holds panel_gemm.h panels, not MKL's packed B
  bool thin_;            // unpacked products of a few rows go to thin_gemm.h
};

// Whether PackedB can use MKL's packing (MKL present and the environment variable
// FUSED_RNN_PACKED_GEMM is not "0"; that switch, which also turns off the panels, exists
// to measure the difference against plain sgemm).
bool packed_gemm_enabled();

}  // namespace fused_rnn::cpu
