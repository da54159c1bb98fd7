#include "blas.h"
#include "blocked_gemm.h"
#include "panel_gemm.h"
#include "thin_gemm.h"
#include "work_memory.h"

#include <ATen/ATen.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <limits>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

// Weak: resolved against libtorch_cpu (which we link) when it exports them, else null.
extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*,
            const float*, const int*, const float*, const int*, const float*, float*,
            const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*,
            const double*, const int*, const double*, const int*, const double*, double*,
            const int*) __attribute__((weak));
// MKL's packed GEMM (LP64 cblas, enums passed as int); not in every BLAS, hence weak.
size_t cblas_sgemm_pack_get_size(int identifier, int m, int n, int k) __attribute__((weak));
void cblas_sgemm_pack(int layout, int identifier, int trans, int m, int n, int k, float alpha,
                      const float* src, int ld, float* dest) __attribute__((weak));
void cblas_sgemm_compute(int layout, int transa, int transb, int m, int n, int k,
                         const float* a, int lda, const float* b, int ldb, float beta,
                         float* c, int ldc) __attribute__((weak));
}

namespace fused_rnn::cpu {
namespace {

// Fortran BLAS: column-major, every argument by pointer, LP64 ints.
template <typename T>
using fortran_gemm = void (*)(const char*, const char*, const int*, const int*, const int*,
                              const T*, const T*, const int*, const T*, const int*, const T*, T*,
                              const int*);

template <typename T>
fortran_gemm<T> blas() {
  if constexpr (sizeof(T) == 4) return &sgemm_;
  else return &dgemm_;
}

template <typename T>
void gemm_aten(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* A,
               int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  // A row-major [r, c] with leading dimension ld is strides {ld, 1}; its transpose is {1, ld}.
  auto view = [&](const T* p, int64_t rows, int64_t cols, int64_t ld, bool trans) {
    return trans ? at::from_blob(const_cast<T*>(p), {rows, cols}, {1, ld}, opts)
                 : at::from_blob(const_cast<T*>(p), {rows, cols}, {ld, 1}, opts);
  };
  at::Tensor a = view(A, m, k, lda, trans_a);
  at::Tensor b = view(B, k, n, ldb, trans_b);
  at::Tensor c = at::from_blob(C, {m, n}, {ldc, 1}, opts);
  if (beta == T(0)) {
    at::mm_out(c, a, b);
    if (alpha != T(1)) c.mul_(alpha);
  } else {
    c.addmm_(a, b, beta, alpha);
  }
}

}  // namespace

bool intel_cpu() {
#if defined(__x86_64__) || defined(_M_X64)
  static const bool intel = [] {
    unsigned int max_leaf = 0, ebx = 0, ecx = 0, edx = 0;
    if (__get_cpuid(0, &max_leaf, &ebx, &ecx, &edx) == 0) return false;
    char vendor[13] = {};
    std::memcpy(vendor, &ebx, 4);
    std::memcpy(vendor + 4, &edx, 4);
    std::memcpy(vendor + 8, &ecx, 4);
    return std::strcmp(vendor, "GenuineIntel") == 0;
  }();
  return intel;
#else
  return false;
#endif
}

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int64_t r = 0; r < m; ++r)
      for (int64_t q = 0; q < n; ++q) C[r * ldc + q] = beta == T(0) ? T(0) : beta * C[r * ldc + q];
    return;
  }
  if (alpha == T(1) && thin_gemm_suits<T>(trans_a, trans_b, m)) {  // a few rows: B as it is
    thin_gemm<T>(trans_b, m, n, k, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  // BLAS rejects leading dimensions below the row length even when unused.
  if (lda < (trans_a ? m : k)) lda = trans_a ? m : k;
  if (ldb < (trans_b ? k : n)) ldb = trans_b ? k : n;
  if (ldc < n) ldc = n;
  const auto fn = blas<T>();
  const bool fits = m < INT_MAX && n < INT_MAX && k < INT_MAX && lda < INT_MAX &&
                    ldb < INT_MAX && ldc < INT_MAX;
  if (fn == nullptr || !fits) {
    gemm_aten<T>(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
  const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
  const int LDA = static_cast<int>(ldb), LDB = static_cast<int>(lda), LDC = static_cast<int>(ldc);
  fn(&tb, &ta, &M, &N, &K, &alpha, B, &LDA, A, &LDB, &beta, C, &LDC);
}

template <typename T>
void large_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if constexpr (sizeof(T) == 4) {
    const bool fits = lda >= (trans_a ? m : k) && ldb >= (trans_b ? k : n) && ldc >= n;
    if (alpha == T(1) && k > 0 && fits && blocked_gemm_suits(trans_a, trans_b, m, n, k)) {
      blocked_gemm(trans_a, trans_b, m, n, k, reinterpret_cast<const float*>(A), lda,
                   reinterpret_cast<const float*>(B), ldb, beta, reinterpret_cast<float*>(C), ldc);
      return;
    }
  }
  gemm<T>(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

template void large_gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*,
                                int64_t, const float*, int64_t, float, float*, int64_t);
template void large_gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*,
                                 int64_t, const double*, int64_t, double, double*, int64_t);

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);

namespace {
// MKL's cblas enum values.
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112, kPacked = 151, kBMatrix = 162;

bool fits_int(int64_t v) { return v >= 0 && v < INT_MAX; }
}  // namespace

namespace {
bool have_mkl_packing() {
  static const bool have = &cblas_sgemm_pack_get_size != nullptr &&
                          &cblas_sgemm_pack != nullptr && &cblas_sgemm_compute != nullptr;
  return have;
}

// FUSED_RNN_PACKED_GEMM, read per call (once per layer op, not per step) so a benchmark
// can flip it in-process: "0" no packing (plain sgemm), "panels" / "mkl" that packing
// wherever it applies (tests and A/B runs on any CPU), else the measured choice.
enum class Packing { kOff, kAuto, kPanels, kMkl };
Packing packing_mode() {
  const char* env = std::getenv("FUSED_RNN_PACKED_GEMM");
  if (env == nullptr) return Packing::kAuto;
  if (std::strcmp(env, "0") == 0) return Packing::kOff;
  if (std::strcmp(env, "panels") == 0) return Packing::kPanels;
  if (std::strcmp(env, "mkl") == 0) return Packing::kMkl;
  return Packing::kAuto;
}
bool packing_switched_on() { return packing_mode() != Packing::kOff; }
}  // namespace

bool packed_gemm_enabled() { return have_mkl_packing() && packing_switched_on(); }

namespace {
// Whether products thin_gemm.h can take read W as it is, not packed, in calls of up to
// kThinCallOnAvx512 steps (one-row products: in calls of any length): with AVX-512 on a
// CPU other than Intel's, its kernels read W in its own layout about as fast as the panels
// read their packed copy, and the pack is a pass over W per call.
// Measured on an AMD EPYC (Zen 4) VM, 2 threads, interleaved in one process, torch.nn's
// time over ours (benchmarks/NOTES.md, sessions 19 and 20):
// - One row: LSTM inference T = 100, H = 128 / 256 / 512 1.38 / 1.57 / 1.39x packed against
//   1.45 / 1.76 / 1.55x not; training H = 256 1.74x against 1.95x, H = 512 the same; GRU
//   H = 256 5.35x against 5.71x, training 9.17x against 9.77x.
// - 2-16 rows, LSTM inference: T = 16, B = 4 H = 256 1.22x packed against 1.40x not;
//   B = 8 H = 512 1.20x against 1.34x (training 1.11x against 1.16x); T = 32 B = 4 1.13x
//   against 1.23x; T = 8 and 32 B = 16 H = 256 ties. Past 32 steps packing ties or wins
//   (T = 100: 2-4 rows ties, 8-16 rows per product 4-6% faster packed).
// Intel's (sessions 9-17: packing chosen there) and AVX2 builds keep packing.
constexpr int64_t kThinCallOnAvx512 = 32;
bool thin_reads_as_is() {
#if defined(CPU_CAPABILITY_AVX512)
  return !intel_cpu();
#else
  return false;
#endif
}

// From how many products packing B pays (interleaved op timings, 2 threads, H = 256 and
// 512, B = 1-64, T = 1-32; benchmarks/NOTES.md). Unpacked, up to thin_rows rows go to
// thin_gemm.h (when `thin`), which reads B once per product without copying it: packed
// panels win from ~16 products at up to 4 rows, from ~8 at 5-32 (9-32: W^T in float32 on
// AVX-512; GRU T = 2-8, B = 12-32 ran 0-15% faster unpacked, session 15), or as
// thin_reads_as_is says. A one-row product otherwise goes to MKL's gemv, which reads B as
// it is too: from ~8. With more rows sgemm re-packs B at every call, so packing pays from
// the second.
// chosen: no FUSED_RNN_PACKED_GEMM forces a packing (a forced one still packs one row, from
// 16 uses).
int64_t uses_to_pack(bool thin, int64_t thin_rows, int64_t max_m, bool chosen) {
  if (chosen && thin && max_m <= thin_rows && thin_reads_as_is())
    return max_m == 1 ? std::numeric_limits<int64_t>::max() : kThinCallOnAvx512 + 1;
  if (thin && max_m <= thin_rows) return max_m <= 4 ? 16 : 8;
  return max_m == 1 ? 8 : 2;
}

// Whether the products go to panel_gemm.h's panels rather than MKL's packed GEMM. On
// Intel, MKL's packed products of 32+ rows by a B of 256+ x 256+ were 0-9% faster inside
// the time loops (LSTM and GRU, H = 512 split over 2 threads, B = 32-128); with fewer rows
// (16: 8% slower) or a smaller B (H = 128: 15-20% slower; H = 256: the same) the panels
// win there too (session 9). With 2-31 rows by a whole layer's W (at least 192K
// floats: LSTM and GRU H >= 256, as a team that splits by rows or not at all multiplies
// by) MKL wins as well: LSTM inference B = 8 and 16, H = 256 (4 and 8 rows per thread)
// 8-10% faster, B = 2-4 on one team up to 13% (session 12; one row stays on the panels:
// MKL was 15-25% slower there). Products whose row count varies (m_varies) take the
// panels wherever they suit: MKL's packed B serves only the max_m it was packed for, and
// the other calls would go to sgemm, which copies B at every call.
bool use_panels(Packing mode, int64_t max_m, int64_t k, int64_t n, bool m_varies) {
  constexpr int64_t kMklRowsOnIntel = 32, kMklDepthOnIntel = 256, kMklWidthOnIntel = 256;
  constexpr int64_t kMklWholeWeights = int64_t{3} << 16;
  if (mode == Packing::kPanels || !have_mkl_packing())
    return mode == Packing::kPanels || panel_gemm_suits(max_m);
  if (mode == Packing::kMkl) return false;
  if (m_varies) return panel_gemm_suits(max_m);
  const bool mkl_there = intel_cpu() && k >= kMklDepthOnIntel && n >= kMklWidthOnIntel &&
                         (max_m >= kMklRowsOnIntel || (max_m >= 2 && k * n >= kMklWholeWeights));
  return panel_gemm_suits(max_m) && !mkl_there;
}
}  // namespace

template <typename T>
PackedB<T>::PackedB(bool trans_b, int64_t k, int64_t n, const T* B, int64_t ldb, int64_t max_m,
                    int64_t uses, bool m_varies)
    : trans_b_(trans_b), k_(k), n_(n), ldb_(ldb), max_m_(max_m), B_(B),
      thin_(thin_gemm_enabled()) {
  if constexpr (sizeof(T) == 4) {
    const Packing mode = packing_mode();
    if (mode == Packing::kOff || B == nullptr || k == 0 || n == 0) return;
    if (uses < uses_to_pack(thin_, thin_rows<T>(trans_b), max_m, mode == Packing::kAuto))
      return;
    if (ldb_ < (trans_b ? k : n)) ldb_ = trans_b ? k : n;
    if (use_panels(mode, max_m, k, n, m_varies)) {
      panels_ = true;
      buf_ = work_empty({panel_buffer_size(k, n)}, at::TensorOptions().dtype(at::kFloat));
      panel_pack(trans_b, k, n, reinterpret_cast<const float*>(B), ldb_, buf_.data_ptr<float>());
      return;
    }
    if (!have_mkl_packing() || !fits_int(k) || !fits_int(n) || !fits_int(ldb_) ||
        !fits_int(max_m))
      return;
    const int M = static_cast<int>(max_m), N = static_cast<int>(n), K = static_cast<int>(k);
    const size_t bytes = cblas_sgemm_pack_get_size(kBMatrix, M, N, K);
    buf_ = work_empty({static_cast<int64_t>((bytes + sizeof(float) - 1) / sizeof(float))},
                     at::TensorOptions().dtype(at::kFloat));
    cblas_sgemm_pack(kRowMajor, kBMatrix, trans_b ? kTrans : kNoTrans, M, N, K, 1.0f,
                     reinterpret_cast<const float*>(B), static_cast<int>(ldb_),
                     buf_.data_ptr<float>());
  }
}

template <typename T>
void PackedB<T>::gemm(int64_t m, const T* A, int64_t lda, T beta, T* C, int64_t ldc) const {
  TORCH_INTERNAL_ASSERT(m <= max_m_, "PackedB::gemm: m = ", m, " > max_m = ", max_m_);
  if (m == 0) return;
  if constexpr (sizeof(T) == 4) {
    if (panels_) {
      panel_gemm(m, n_, k_, reinterpret_cast<const float*>(A), lda, buf_.data_ptr<float>(), beta,
                 reinterpret_cast<float*>(C), ldc);
      return;
    }
    // MKL documents the packed B for the m it was packed with; fewer rows (a varlen
    // batch's finished rows) go to plain sgemm.
    if (packed() && m == max_m_) {
      if (lda < k_) lda = k_;
      if (ldc < n_) ldc = n_;
      if (fits_int(lda) && fits_int(ldc)) {
        cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, static_cast<int>(m),
                            static_cast<int>(n_), static_cast<int>(k_),
                            reinterpret_cast<const float*>(A), static_cast<int>(lda),
                            buf_.data_ptr<float>(), static_cast<int>(n_), beta,
                            reinterpret_cast<float*>(C), static_cast<int>(ldc));
        return;
      }
    }
  }
  if (thin_ && m <= thin_rows<T>(trans_b_) && k_ > 0) {  // decided per layer call, not step
    thin_gemm<T>(trans_b_, m, n_, k_, A, lda, B_, ldb_, beta, C, ldc);
    return;
  }
  cpu::gemm<T>(false, trans_b_, m, n_, k_, T(1), A, lda, B_, ldb_, beta, C, ldc);
}

template class PackedB<float>;
template class PackedB<double>;

const char* blas_backend() {
  return blas<float>() != nullptr ? "sgemm_/dgemm_ in libtorch" : "at::mm";
}

}  // namespace fused_rnn::cpu
