#include "bf16_gemm.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "layer_util.h"
#include "panel_gemm.h"
#include "panel_kernel.h"
#include "work_memory.h"

#if defined(CPU_CAPABILITY_AVX512) && (defined(__x86_64__) || defined(_M_X64))
#include <immintrin.h>
#define FUSED_RNN_BF16_DOT 1
// Only these functions use AVX512-BF16, and only once bf16_dot_available() said the CPU has
// it: no global compiler flag, so nothing else in the library can pick those instructions.
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#else
#define FUSED_RNN_BF16_DOT 0
#endif

namespace fused_rnn::cpu {
namespace {

constexpr int64_t kBf16Panel = 32;  // columns per panel: two vectors of 16 float32 sums

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

#if FUSED_RNN_BF16_DOT
// A[r, 2p] in the low half of each 32-bit lane, A[r, 2p + 1] in the high half, as vdpbf16ps
// pairs them with the panel's.
BF16_TARGET inline __m512bh pair_at(const bf16* a) {
  uint32_t v;
  std::memcpy(&v, a, sizeof(v));
  return (__m512bh)_mm512_set1_epi32(static_cast<int>(v));
}

// The last k of an odd k alone: the panel holds a zero beside it, but A's next value (the
// next row's first, or past the end of the last row) could be a NaN or inf, and 0 * inf is
// NaN.
BF16_TARGET inline __m512bh last_of(const bf16* a) {
  uint16_t v;
  std::memcpy(&v, a, sizeof(v));
  return (__m512bh)_mm512_set1_epi32(static_cast<int>(v));
}

// Rows [0, R) of C, `cols` <= kBf16Panel columns, from one panel over all k pairs. With
// one or two rows, two sets of sums take alternate pairs: one set alone waits on each
// vdpbf16ps's latency (1 row: 4 chains in flight instead of 2).
template <int R>
BF16_TARGET void panel_rows(int64_t k, const bf16* A, int64_t lda, const bf16* panel,
                            int64_t cols, float beta, float* C, int64_t ldc) {
  constexpr int kSets = R <= 2 ? 2 : 1;
  __m512 lo[kSets][R], hi[kSets][R];
  for (int q = 0; q < kSets; ++q)
    for (int r = 0; r < R; ++r) {
      lo[q][r] = _mm512_setzero_ps();
      hi[q][r] = _mm512_setzero_ps();
    }
  // C is read after the k loop (beta != 0: a time loop adds to the input projection, cold
  // by then): fetch it now, while the loop runs.
  if (beta != 0.0f)
    for (int r = 0; r < R; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(C + r * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(C + r * ldc + 16), _MM_HINT_T0);
    }
  const int64_t pairs = k / 2;
  int64_t p = 0;
  for (; p + kSets <= pairs; p += kSets)
    for (int q = 0; q < kSets; ++q) {
      const bf16* pp = panel + (p + q) * 2 * kBf16Panel;
      const __m512bh b_lo = (__m512bh)_mm512_loadu_si512(pp);
      const __m512bh b_hi = (__m512bh)_mm512_loadu_si512(pp + 32);
      for (int r = 0; r < R; ++r) {
        const __m512bh a = pair_at(A + r * lda + 2 * (p + q));
        lo[q][r] = _mm512_dpbf16_ps(lo[q][r], a, b_lo);
        hi[q][r] = _mm512_dpbf16_ps(hi[q][r], a, b_hi);
      }
    }
  for (; p < pairs; ++p) {
    const __m512bh b_lo = (__m512bh)_mm512_loadu_si512(panel + p * 2 * kBf16Panel);
    const __m512bh b_hi = (__m512bh)_mm512_loadu_si512(panel + p * 2 * kBf16Panel + 32);
    for (int r = 0; r < R; ++r) {
      const __m512bh a = pair_at(A + r * lda + 2 * p);
      lo[0][r] = _mm512_dpbf16_ps(lo[0][r], a, b_lo);
      hi[0][r] = _mm512_dpbf16_ps(hi[0][r], a, b_hi);
    }
  }
  if (k % 2 != 0) {
    const __m512bh b_lo = (__m512bh)_mm512_loadu_si512(panel + pairs * 2 * kBf16Panel);
    const __m512bh b_hi = (__m512bh)_mm512_loadu_si512(panel + pairs * 2 * kBf16Panel + 32);
    for (int r = 0; r < R; ++r) {
      const __m512bh a = last_of(A + r * lda + k - 1);
      lo[0][r] = _mm512_dpbf16_ps(lo[0][r], a, b_lo);
      hi[0][r] = _mm512_dpbf16_ps(hi[0][r], a, b_hi);
    }
  }
  if constexpr (kSets == 2)
    for (int r = 0; r < R; ++r) {
      lo[0][r] = _mm512_add_ps(lo[0][r], lo[1][r]);
      hi[0][r] = _mm512_add_ps(hi[0][r], hi[1][r]);
    }
  // Columns past `cols` (the panel's zero padding) are never stored.
  const __mmask16 m_lo = static_cast<__mmask16>(cols >= 16 ? 0xFFFF : (1u << cols) - 1);
  const __mmask16 m_hi =
      static_cast<__mmask16>(cols >= 32 ? 0xFFFF : cols <= 16 ? 0 : (1u << (cols - 16)) - 1);
  for (int r = 0; r < R; ++r) {
    float* c = C + r * ldc;
    if (beta != 0.0f) {
      const __m512 vb = _mm512_set1_ps(beta);
      lo[0][r] = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m_lo, c), lo[0][r]);
      hi[0][r] = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m_hi, c + 16), hi[0][r]);
    }
    _mm512_mask_storeu_ps(c, m_lo, lo[0][r]);
    _mm512_mask_storeu_ps(c + 16, m_hi, hi[0][r]);
  }
}

using PanelRowsFn = void (*)(int64_t, const bf16*, int64_t, const bf16*, int64_t, float,
                            float*, int64_t);
// panel_rows<R> by R = 1..7 at run time.
constexpr PanelRowsFn kRemainder[8] = {nullptr,        &panel_rows<1>, &panel_rows<2>,
                                       &panel_rows<3>, &panel_rows<4>, &panel_rows<5>,
                                       &panel_rows<6>, &panel_rows<7>};

// One panel of W [k, n] as it is (the backward's dA W): `cols` <= kBf16Panel columns from
// w (row stride ldw), each pair of k rows interleaved value by value; columns past cols
// and an odd k's missing last row zero.
BF16_TARGET void pack_rows_as_is(const bf16* w, int64_t ldw, int64_t k, int64_t cols,
                                 bf16* panel) {
  // Output value 2i takes the first row's column i (index i), value 2i + 1 the second
  // row's (32 + i: the second table); the high half does columns 16..31.
  alignas(64) int16_t lo_idx[32], hi_idx[32];
  for (int i = 0; i < 16; ++i) {
    lo_idx[2 * i] = static_cast<int16_t>(i);
    lo_idx[2 * i + 1] = static_cast<int16_t>(32 + i);
    hi_idx[2 * i] = static_cast<int16_t>(16 + i);
    hi_idx[2 * i + 1] = static_cast<int16_t>(48 + i);
  }
  const __m512i lo = _mm512_load_si512(lo_idx), hi = _mm512_load_si512(hi_idx);
  const __mmask32 m = cols >= 32 ? ~__mmask32{0} : (__mmask32{1} << cols) - 1;
  for (int64_t p = 0; 2 * p < k; ++p) {
    const __m512i a = _mm512_maskz_loadu_epi16(m, w + 2 * p * ldw);
    const __m512i b = 2 * p + 1 < k ? _mm512_maskz_loadu_epi16(m, w + (2 * p + 1) * ldw)
                                    : _mm512_setzero_si512();
    _mm512_storeu_si512(panel + p * 2 * kBf16Panel, _mm512_permutex2var_epi16(a, lo, b));
    _mm512_storeu_si512(panel + p * 2 * kBf16Panel + 32, _mm512_permutex2var_epi16(a, hi, b));
  }
}

// vcvtneps2bf16 rounds to nearest even, as c10's conversion does (it also flushes
// float32 subnormals, below 1.2e-38, to zero).
BF16_TARGET void round_avx512(const float* src, bf16* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256bh v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), (__m256i)v);
  }
  for (; i < n; ++i) dst[i] = bf16(src[i]);  // c10's conversion: nearest, ties to even
}
#endif

}  // namespace

bool bf16_dot_available() {
#if FUSED_RNN_BF16_DOT
  static const bool cpu_has = __builtin_cpu_supports("avx512bf16");
  const char* env = std::getenv("FUSED_RNN_BF16_DOT");
  return cpu_has && !(env != nullptr && std::strcmp(env, "0") == 0);
#else
  return false;
#endif
}

bool bf16_products_for(int64_t T, int64_t B) {
  // (An empty call has no products: nothing to pack for.)
  if (T <= 0 || B <= 0 || !bf16_dot_available()) return false;
  const char* env = std::getenv("FUSED_RNN_BF16_DOT");
  if (env != nullptr && std::strcmp(env, "force") == 0) return true;
  return T >= 16 || (T >= 4 && T * B >= 64);
}

Bf16PackedB::Bf16PackedB(bool trans_w, int64_t k, int64_t n, const bf16* w, int64_t ldw)
    : k_(k), n_(n),
      panels_(work_empty({ceil_div(n, kBf16Panel) * ceil_div(k, 2) * 2 * kBf16Panel},
                        at::TensorOptions().dtype(at::kBFloat16))) {
  const int64_t pairs = ceil_div(k, 2), n_panels = ceil_div(n, kBf16Panel);
  bf16* out = panels_.data_ptr<bf16>();
#if FUSED_RNN_BF16_DOT
  static_assert(kBf16Panel == panel::kPanel, "a bfloat16 pair per float32 panel slot");
  if (trans_w && k % 2 == 0 && ldw % 2 == 0) {
    // Each pair of k is one 32-bit word of W's row, and the panels hold those words as
    // panel_gemm.h's float32 panels hold floats: its (vectorized, parallel) transposing
    // pack moves them bit for bit.
    panel_pack(/*trans_b=*/true, pairs, n, reinterpret_cast<const float*>(w), ldw / 2,
               reinterpret_cast<float*>(out));
    return;
  }
  if (!trans_w) {
    // A thread gets at least ~64 KB of panels (inline inside a parallel region).
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, pairs * kBf16Panel));
    at::parallel_for(0, n_panels, grain, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q)
        pack_rows_as_is(w + q * kBf16Panel, ldw, k, std::min(kBf16Panel, n - q * kBf16Panel),
                        out + q * pairs * 2 * kBf16Panel);
    });
    return;
  }
#endif
  // Zeros first: the padding columns and an odd k's last value stay zero.
  std::memset(static_cast<void*>(out), 0, panels_.numel() * sizeof(bf16));
  for (int64_t q = 0; q < n_panels; ++q) {
    bf16* panel = out + q * pairs * 2 * kBf16Panel;
    const int64_t c0 = q * kBf16Panel, cols = std::min(kBf16Panel, n - c0);
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < k; ++j)  // op(W)[j, c0 + i]
        panel[((j / 2) * kBf16Panel + i) * 2 + j % 2] =
            trans_w ? w[(c0 + i) * ldw + j] : w[j * ldw + c0 + i];
  }
}

void Bf16PackedB::gemm(int64_t m, const bf16* A, int64_t lda, float beta, float* C,
                       int64_t ldc) const {
#if FUSED_RNN_BF16_DOT
  const int64_t pairs = ceil_div(k_, 2);
  const bf16* panels = panels_.data_ptr<bf16>();
  for (int64_t q = 0; q < ceil_div(n_, kBf16Panel); ++q) {
    const bf16* panel = panels + q * pairs * 2 * kBf16Panel;
    const int64_t c0 = q * kBf16Panel, cols = std::min(kBf16Panel, n_ - c0);
    int64_t r = 0;
    for (; r + 8 <= m; r += 8)
      panel_rows<8>(k_, A + r * lda, lda, panel, cols, beta, C + r * ldc + c0, ldc);
    // The last 1-7 rows in one pass over the panel: 6 rows as 4 + 2 read the panel twice
    // and ran the 2-row pass at half the 4-row one's sums per panel load (session 20: LSTM
    // inference T = 100, B = 6, H = 512 by units, 40% of the samples in those two passes).
    if (r < m) kRemainder[m - r](k_, A + r * lda, lda, panel, cols, beta, C + r * ldc + c0, ldc);
  }
#else
  TORCH_INTERNAL_ASSERT(false, "fused_rnn: bfloat16 products called without AVX512-BF16");
#endif
}

Bf16GateRowSlices::Bf16GateRowSlices(const bf16* w, int64_t gates, int64_t N, int64_t K,
                                     const UnitBlocks& blocks)
    : gates_(gates), N_(N), blocks_(blocks) {
  if (w == nullptr) return;
  // All slices packed in one parallel region, each on one thread (a region per slice
  // cost more than packing a small one).
  slices_.resize(blocks.count * gates);
  at::parallel_for(0, blocks.count * gates, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t p = i / gates, g = i % gates, lo = blocks.lo(p), hi = blocks.hi(p);
      if (hi > lo)
        slices_[i] = std::make_unique<Bf16PackedB>(/*trans_w=*/true, K, hi - lo,
                                                   w + (g * N + lo) * K, K);
    }
  });
}

void Bf16GateRowSlices::gemm(int64_t p, int64_t m, const bf16* A, int64_t lda, float beta,
                             float* out, int64_t ldo) const {
  const int64_t lo = blocks_.lo(p), hi = blocks_.hi(p);
  if (lo >= hi) return;
  for (int64_t g = 0; g < gates_; ++g)
    slices_[p * gates_ + g]->gemm(m, A, lda, beta, out + g * N_ + lo, ldo);
}

Bf16ColumnSlices::Bf16ColumnSlices(const bf16* w, int64_t rows, int64_t K,
                                   const UnitBlocks& blocks)
    : blocks_(blocks) {
  if (w == nullptr) return;
  slices_.resize(blocks.count);
  if (blocks.count == 1) {  // one slice: packed in parallel over its panels
    slices_[0] = std::make_unique<Bf16PackedB>(/*trans_w=*/false, rows, blocks.hi(0), w, K);
    return;
  }
  at::parallel_for(0, blocks.count, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t lo = blocks.lo(p), hi = blocks.hi(p);
      if (hi > lo)
        slices_[p] = std::make_unique<Bf16PackedB>(/*trans_w=*/false, rows, hi - lo, w + lo, K);
    }
  });
}

void Bf16ColumnSlices::gemm(int64_t p, int64_t m, const bf16* dA, int64_t lda, float beta,
                            float* out, int64_t ldo) const {
  const int64_t lo = blocks_.lo(p), hi = blocks_.hi(p);
  if (lo >= hi) return;
  slices_[p]->gemm(m, dA, lda, beta, out + lo, ldo);
}

void project_rows_bf16(int64_t T, int64_t B, int64_t I, int64_t N, const bf16* x,
                       const bf16* w, float* out, const std::vector<int64_t>& rows) {
  const Bf16PackedB packed(/*trans_w=*/true, I, N, w, I);
  // Work items of up to kChunk consecutive rows of x (flat row t * B + b), spread over the
  // threads: steps where every row runs are one block of rows (at B = 1 a step alone
  // would be a one-row product), the other steps their running rows.
  constexpr int64_t kChunk = 32;
  std::vector<std::pair<int64_t, int64_t>> items;  // (first flat row, rows)
  const auto add = [&](int64_t first, int64_t count) {
    for (int64_t r = 0; r < count; r += kChunk)
      items.emplace_back(first + r, std::min(kChunk, count - r));
  };
  for (int64_t t = 0; t < T;) {
    if (rows[t] < B) {
      zero_row(out + (t * B + rows[t]) * N, (B - rows[t]) * N);
      add(t * B, rows[t]);
      ++t;
      continue;
    }
    const int64_t t0 = t;
    while (t < T && rows[t] == B) ++t;
    add(t0 * B, (t - t0) * B);
  }
  at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const auto [first, m] = items[i];
      packed.gemm(m, x + first * I, I, 0.0f, out + first * N, N);
    }
  });
}

void round_to_bf16(const float* src, bf16* dst, int64_t n) {
#if FUSED_RNN_BF16_DOT
  round_avx512(src, dst, n);
#else
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16(src[i]);
#endif
}

}  // namespace fused_rnn::cpu
