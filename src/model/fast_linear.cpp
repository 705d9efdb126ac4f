// Skinny matrix product y[m, n] = sum_k x[m, k] W[n, k] (+ b[n]) for few rows of x (<= 16; <= 64 with
// AVX-512, which also covers short prefills): decoding
// streams W from memory once per step, so the kernel reads each weight row once and applies it to
// every x row.
//
// Arithmetic (fixed, whatever the blocking): each (m, n) dot product uses four 8-lane fp32 FMA
// accumulator chains, chain j covering k = 32 i + 8 j + lane; an 8-wide tail (K mod 32 >= 8)
// continues chain 0; then s = hsum((a0 + a1) + (a2 + a3)), a scalar FMA tail for K mod 8, and
// y = s + b (+ 0 without bias). So a row's result does not depend on how many other rows share the
// call (batch-invariant decoding) nor on the code path below.
//
// Blocking: up to 4 rows (batch 1-4 decoding) keep all four chains of every row in registers and
// make one pass over each weight row. More rows (batch 8 plain, batch 8 ACD / SafeDecoding = 16
// rows) would need 4 x M accumulators:
// - AVX-512 (tiled_avx512): a zmm register holds two chains (j, j + 1 = 16 consecutive k), so a tile
//   of 4 weight rows x up to 8 x rows is 32 zmm accumulators for chains 0-1 (the even 64-byte lines
//   of every 128), then again for chains 2-3 (the odd lines): every weight line is loaded once, and
//   each zmm weight load feeds up to 8 FMAs. The halves are added as ymm (a0 + a1, a2 + a3) before
//   the common finish, so the bits equal the ymm kernels'. The weight stream is prefetched (L2 hint)
//   ~16 KiB ahead from inside the k loops, one line per row per iteration: prefetching a whole tile
//   at once at the tile start stalled on the miss buffers, and the stream then did not overlap the
//   FMAs (batch-8 SmolLM2 step 61 ms -> see experiments/runtime_speed.md).
// - AVX2 (16 registers): the chains are computed one after the other on a tile of 2 weight rows x
//   4 x rows (the tile stays in L1 between chains; chain order does not change a chain's value);
//   the four chains' k loops over the first block of x rows prefetch the weight rows ~16 KiB ahead
//   (L2 hint), a quarter of each row per chain.
// fp32 accumulation throughout.
#include "model/fast_linear.h"

#include "core/error.h"
#include "core/row_pool.h"
#include "model/fast_linear_isa.h"
#include "model/quant_linear.h"

#include <immintrin.h>

#include <ATen/Parallel.h>
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

namespace safedec {

namespace {

#define SAFEDEC_AVX2 __attribute__((target("avx2,fma"), always_inline)) inline

SAFEDEC_AVX2 float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
  return _mm_cvtss_f32(s);
}

// The end of one dot product: horizontal sum of the four chains, scalar tail, bias.
SAFEDEC_AVX2 float finish(__m256 a0, __m256 a1, __m256 a2, __m256 a3, const float* w, const float* x, int64_t K8,
                          int64_t K, float bias) {
  float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (int64_t t = K8; t < K; ++t) s = __builtin_fmaf(w[t], x[t], s);
  return s + bias;
}

// --- one pass: all four chains of R x rows live (R <= 4 with 32 vector registers, <= 2 with 16) ---
template <int R>
SAFEDEC_AVX2 void dot_rows(const float* w, const float* const* x, int64_t K, float bias, float* const* y) {
  __m256 acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m256 w0 = _mm256_loadu_ps(w + k), w1 = _mm256_loadu_ps(w + k + 8);
    const __m256 w2 = _mm256_loadu_ps(w + k + 16), w3 = _mm256_loadu_ps(w + k + 24);
    for (int r = 0; r < R; ++r) {
      acc[r][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x[r] + k), acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x[r] + k + 8), acc[r][1]);
      acc[r][2] = _mm256_fmadd_ps(w2, _mm256_loadu_ps(x[r] + k + 16), acc[r][2]);
      acc[r][3] = _mm256_fmadd_ps(w3, _mm256_loadu_ps(x[r] + k + 24), acc[r][3]);
    }
  }
  for (; k + 8 <= K; k += 8) {
    const __m256 wv = _mm256_loadu_ps(w + k);
    for (int r = 0; r < R; ++r) acc[r][0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[r] + k), acc[r][0]);
  }
  for (int r = 0; r < R; ++r) *y[r] = finish(acc[r][0], acc[r][1], acc[r][2], acc[r][3], w, x[r], k, K, bias);
}

template <int R>
SAFEDEC_AVX2 void one_pass(const float* X, const float* W, const float* B, float* Y, int64_t N, int64_t K,
                           int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    const float* xs[R];
    float* ys[R];
    for (int r = 0; r < R; ++r) {
      xs[r] = X + r * K;
      ys[r] = Y + r * N + n;
    }
    dot_rows<R>(W + n * K, xs, K, B ? B[n] : 0.0f, ys);
  }
}

// --- chain by chain on an NB x MB tile ---
// a[n][m] += w_n[k, k + 8) * x_m[k, k + 8) for k = k0, k0 + step, ... < kend.
// Prefetch of the weight stream, spread over the tile's compute rather than issued in one burst: with
// pf > 0, pass p (of P) prefetches in each 32-wide step at k (L2 hint) row n's float pf + (p K + k) / P,
// so it covers the p-th of P segments of the rows pf floats ahead.
struct Prefetch {
  int64_t pf = 0;  // 0: none
  int64_t p = 0, P = 1;
};

template <int NB, int MB>
SAFEDEC_AVX2 void chain(const float* const* w, const float* const* x, int64_t k0, int64_t kend, int64_t step,
                        __m256 (&a)[NB][MB], Prefetch f = {}) {
  const int64_t base = f.pf + f.p * kend / f.P;  // kend = K32 for the 32-wide passes: segment p of P
  for (int64_t k = k0; k < kend; k += step) {
    __m256 wv[NB];
    for (int n = 0; n < NB; ++n) wv[n] = _mm256_loadu_ps(w[n] + k);
    if (f.pf)
      for (int n = 0; n < NB; ++n)
        _mm_prefetch(reinterpret_cast<const char*>(w[n] + base + k / f.P), _MM_HINT_T1);
    for (int m = 0; m < MB; ++m) {
      const __m256 xv = _mm256_loadu_ps(x[m] + k);
      for (int n = 0; n < NB; ++n) a[n][m] = _mm256_fmadd_ps(wv[n], xv, a[n][m]);
    }
  }
}

template <int NB, int MB>
SAFEDEC_AVX2 void tile(const float* X, const float* W, const float* B, float* Y, int64_t N, int64_t K, int64_t n,
                       int64_t m, Prefetch f) {
  const float* w[NB];
  const float* x[MB];
  for (int i = 0; i < NB; ++i) w[i] = W + (n + i) * K;
  for (int i = 0; i < MB; ++i) x[i] = X + (m + i) * K;
  const int64_t K32 = K / 32 * 32, K8 = K / 8 * 8;
  __m256 c0[NB][MB], c1[NB][MB], c2[NB][MB], c3[NB][MB];
  for (int i = 0; i < NB; ++i)
    for (int r = 0; r < MB; ++r) c0[i][r] = c1[i][r] = c2[i][r] = c3[i][r] = _mm256_setzero_ps();
  const auto pass = [&](int j) { return Prefetch{f.pf, f.p + j, f.P}; };
  chain<NB, MB>(w, x, 0, K32, 32, c0, pass(0));
  chain<NB, MB>(w, x, K32, K8, 8, c0);  // the 8-wide tail continues chain 0
  chain<NB, MB>(w, x, 8, K32, 32, c1, pass(1));
  chain<NB, MB>(w, x, 16, K32, 32, c2, pass(2));
  chain<NB, MB>(w, x, 24, K32, 32, c3, pass(3));
  for (int i = 0; i < NB; ++i) {
    const float bias = B ? B[n + i] : 0.0f;
    for (int r = 0; r < MB; ++r)
      Y[(m + r) * N + n + i] = finish(c0[i][r], c1[i][r], c2[i][r], c3[i][r], w[i], x[r], K8, K, bias);
  }
}

// Weight rows [n, n + NB) against every x row, in blocks of 4 x rows.
template <int NB>
SAFEDEC_AVX2 void tile_rows(const float* X, const float* W, const float* B, float* Y, int64_t M, int64_t N,
                            int64_t K, int64_t n, int64_t pf) {
  // The first block's four passes prefetch (a quarter of the rows each); spreading the prefetches
  // over every block's passes measured slower (batch 8: 135 -> 97 tok/s, batch 16: 163 -> 106).
  Prefetch f{pf, 0, 4};
  int64_t m = 0;
  for (; m + 4 <= M; m += 4, f.pf = 0) tile<NB, 4>(X, W, B, Y, N, K, n, m, f);
  switch (M - m) {
    case 3: tile<NB, 3>(X, W, B, Y, N, K, n, m, f); break;
    case 2: tile<NB, 2>(X, W, B, Y, N, K, n, m, f); break;
    case 1: tile<NB, 1>(X, W, B, Y, N, K, n, m, f); break;
    default: break;
  }
}

template <int NB>
SAFEDEC_AVX2 void chained(const float* X, const float* W, const float* B, float* Y, int64_t M, int64_t N, int64_t K,
                          int64_t n0, int64_t n1) {
  // The weight stream is prefetched ~16 KiB ahead from inside the chains' k loops (as in
  // tiled_avx512): prefetching whole tiles up front stalled on the miss buffers (perf, batch-8
  // SmolLM2 on Zen 2: 10% of the kernel's samples on the prefetch loops, 44% on the first FMA after a
  // weight load).
  const int64_t far = NB * std::max<int64_t>(1, (16 * 1024) / (NB * K * 4));
  int64_t n = n0;
  for (; n + NB <= n1; n += NB) {
    const int64_t pf = (n + far + NB <= n1) ? far * K : 0;
    tile_rows<NB>(X, W, B, Y, M, N, K, n, pf);
  }
  for (; n < n1; ++n) tile_rows<1>(X, W, B, Y, M, N, K, n, 0);
}

__attribute__((target("avx2,fma"))) void skinny_avx2(const float* X, const float* W, const float* B, float* Y,
                                                    int64_t M, int64_t N, int64_t K, int64_t n0, int64_t n1) {
  // 16 vector registers: one pass up to 2 rows, else 2 x 4 tiles (8 accumulators + 2 weight vectors).
  if (M == 1) return one_pass<1>(X, W, B, Y, N, K, n0, n1);
  if (M == 2) return one_pass<2>(X, W, B, Y, N, K, n0, n1);
  chained<2>(X, W, B, Y, M, N, K, n0, n1);
}

// Same ymm arithmetic for 1-4 rows: AVX-512VL gives 32 vector registers, so one pass up to 4 rows.
// 5-16 rows go to tiled_avx512 (below).
__attribute__((target("avx2,fma,avx512f,avx512vl"))) void skinny_avx512vl(const float* X, const float* W,
                                                                         const float* B, float* Y, int64_t M,
                                                                         int64_t N, int64_t K, int64_t n0, int64_t n1) {
  switch (M) {
    case 1: return one_pass<1>(X, W, B, Y, N, K, n0, n1);
    case 2: return one_pass<2>(X, W, B, Y, N, K, n0, n1);
    case 3: return one_pass<3>(X, W, B, Y, N, K, n0, n1);
    default: return one_pass<4>(X, W, B, Y, N, K, n0, n1);
  }
}

#undef SAFEDEC_AVX2

// GCC 12 reports the _mm256_undefined_pd() inside _mm512_extractf64x4_pd as maybe-uninitialized (the
// extract writes every lane); the warning is a false positive.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define SAFEDEC_AVX512 __attribute__((target("avx2,fma,avx512f,avx512vl"), always_inline)) inline

// Sum of the two 8-lane chains held in the halves of v: chain j + chain j+1 (one ymm add).
SAFEDEC_AVX512 __m256 fold(__m512 v) {
  return _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

// One half of the 32-wide step: chains (2h, 2h + 1) = k in [32 i + 16 h, 32 i + 16 h + 16), for an
// NB x MB tile; with tail (h == 0) the 8-wide tail [K32, K8) continues chain 0 (lower 8 lanes).
template <int NB, int MB>
SAFEDEC_AVX512 void half_pass(const float* const* w, const float* const* x, int64_t off, int64_t K32, int64_t K8,
                              bool tail, int64_t pf, __m256 (&out)[NB][MB]) {
  __m512 a[NB][MB];
  for (int n = 0; n < NB; ++n)
    for (int m = 0; m < MB; ++m) a[n][m] = _mm512_setzero_ps();
  for (int64_t k = off; k < K32; k += 32) {
    __m512 wv[NB];
    for (int n = 0; n < NB; ++n) wv[n] = _mm512_loadu_ps(w[n] + k);
    if (pf) for (int n = 0; n < NB; ++n) _mm_prefetch(reinterpret_cast<const char*>(w[n] + k + pf), _MM_HINT_T1);
    for (int m = 0; m < MB; ++m) {
      const __m512 xv = _mm512_loadu_ps(x[m] + k);
      for (int n = 0; n < NB; ++n) a[n][m] = _mm512_fmadd_ps(wv[n], xv, a[n][m]);
    }
  }
  if (tail) {
    const __mmask16 lo = 0x00FF;
    for (int64_t k = K32; k < K8; k += 8) {
      __m512 wv[NB];
      for (int n = 0; n < NB; ++n) wv[n] = _mm512_maskz_loadu_ps(lo, w[n] + k);
      for (int m = 0; m < MB; ++m) {
        const __m512 xv = _mm512_maskz_loadu_ps(lo, x[m] + k);
        for (int n = 0; n < NB; ++n) a[n][m] = _mm512_mask3_fmadd_ps(wv[n], xv, a[n][m], lo);
      }
    }
  }
  for (int n = 0; n < NB; ++n)
    for (int m = 0; m < MB; ++m) out[n][m] = fold(a[n][m]);
}

template <int NB, int MB>
SAFEDEC_AVX512 void tile512(const float* X, const float* W, const float* B, float* Y, int64_t N, int64_t K, int64_t n,
                            int64_t m, int64_t pf) {
  const float* w[NB];
  const float* x[MB];
  for (int i = 0; i < NB; ++i) w[i] = W + (n + i) * K;
  for (int i = 0; i < MB; ++i) x[i] = X + (m + i) * K;
  const int64_t K32 = K / 32 * 32, K8 = K / 8 * 8;
  __m256 s01[NB][MB], s23[NB][MB];
  half_pass<NB, MB>(w, x, 0, K32, K8, true, pf, s01);
  half_pass<NB, MB>(w, x, 16, K32, K8, false, pf, s23);
  for (int i = 0; i < NB; ++i) {
    const float bias = B ? B[n + i] : 0.0f;
    for (int r = 0; r < MB; ++r) {
      float s = hsum(_mm256_add_ps(s01[i][r], s23[i][r]));
      for (int64_t t = K8; t < K; ++t) s = __builtin_fmaf(w[i][t], x[r][t], s);
      Y[(m + r) * N + n + i] = s + bias;
    }
  }
}

template <int NB>
SAFEDEC_AVX512 void tile512_rows(const float* X, const float* W, const float* B, float* Y, int64_t M, int64_t N,
                                 int64_t K, int64_t n, int64_t pf) {
  int64_t m = 0;
  for (; m + 8 <= M; m += 8, pf = 0) tile512<NB, 8>(X, W, B, Y, N, K, n, m, pf);
  switch (M - m) {
    case 7: tile512<NB, 7>(X, W, B, Y, N, K, n, m, pf); break;
    case 6: tile512<NB, 6>(X, W, B, Y, N, K, n, m, pf); break;
    case 5: tile512<NB, 5>(X, W, B, Y, N, K, n, m, pf); break;
    case 4: tile512<NB, 4>(X, W, B, Y, N, K, n, m, pf); break;
    case 3: tile512<NB, 3>(X, W, B, Y, N, K, n, m, pf); break;
    case 2: tile512<NB, 2>(X, W, B, Y, N, K, n, m, pf); break;
    case 1: tile512<NB, 1>(X, W, B, Y, N, K, n, m, pf); break;
    default: break;
  }
}

__attribute__((target("avx2,fma,avx512f,avx512vl"))) void tiled_avx512(const float* X, const float* W,
                                                                      const float* B, float* Y, int64_t M,
                                                                      int64_t N, int64_t K, int64_t n0, int64_t n1) {
  constexpr int NB = 4;
  // Prefetch distance: the tile ~16 KiB ahead (at least the next one), issued inside the k loops.
  const int64_t far = NB * std::max<int64_t>(1, (16 * 1024) / (NB * K * 4));
  int64_t n = n0;
  for (; n + NB <= n1; n += NB) {
    const int64_t pf = (n + far + NB <= n1) ? far * K : 0;
    tile512_rows<NB>(X, W, B, Y, M, N, K, n, pf);
  }
  for (; n < n1; ++n) tile512_rows<1>(X, W, B, Y, M, N, K, n, 0);
}
#undef SAFEDEC_AVX512
#pragma GCC diagnostic pop

// With AVX-512 the register-tiled kernel also takes short prefills (a chat prompt of ~40 tokens): ATen's
// sgemm (MKL) packs the whole weight matrix on every call, which cost more than the product itself
// here (SmolLM2 40-token prefill: 57% of its samples in the sgemm kernel + packing copy).
constexpr int64_t kTiledMaxRows = 64;

FastLinearIsa detect_isa() {
  __builtin_cpu_init();
  FastLinearIsa best = FastLinearIsa::kNone;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    best = FastLinearIsa::kAvx2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) best = FastLinearIsa::kAvx512;
  }
  const char* env = std::getenv("SAFEDEC_FAST_LINEAR");
  const std::string v = env ? env : "";
  if (v == "0") return FastLinearIsa::kNone;
  if (v == "avx2") return std::min(best, FastLinearIsa::kAvx2);
  SAFEDEC_CHECK(v.empty() || v == "1" || v == "avx512", "SAFEDEC_FAST_LINEAR='", v,
                "' is not one of 0 (plain at::linear), avx2, avx512 or 1 (the best this CPU has).");
  return best;
}

std::atomic<int>& isa_cap() {
  static std::atomic<int> cap{static_cast<int>(FastLinearIsa::kAvx512)};
  return cap;
}

void skinny_gemm(FastLinearIsa isa, const float* X, const float* W, const float* B, float* Y, int64_t M, int64_t N,
                 int64_t K) {
  // Chunks of >= 64 weight rows, about 8 per thread so a late-starting worker still gets a share
  // (RowPool, core/row_pool.h: at::parallel_for would run serially in this translation unit).
  const int threads = std::max(1, at::get_num_threads());
  const int64_t chunk = std::max<int64_t>(64, (N / (8 * threads) + 15) / 16 * 16);
  parallel_chunks((N + chunk - 1) / chunk, threads, [&](int64_t c) {
    const int64_t n0 = c * chunk, n1 = std::min(N, n0 + chunk);
    if (isa == FastLinearIsa::kAvx512) {
      if (M <= 4)
        skinny_avx512vl(X, W, B, Y, M, N, K, n0, n1);
      else
        tiled_avx512(X, W, B, Y, M, N, K, n0, n1);
    } else {
      skinny_avx2(X, W, B, Y, M, N, K, n0, n1);
    }
  });
}

}  // namespace

FastLinearIsa fast_linear_cpu_isa() {
  static const FastLinearIsa best = detect_isa();
  return best;
}

FastLinearIsa fast_linear_isa() {
  return std::min(fast_linear_cpu_isa(), static_cast<FastLinearIsa>(isa_cap().load(std::memory_order_relaxed)));
}

void set_fast_linear_isa(FastLinearIsa level) { isa_cap().store(static_cast<int>(level)); }

const char* fast_linear_isa_name(FastLinearIsa level) {
  switch (level) {
    case FastLinearIsa::kAvx512: return "avx512";
    case FastLinearIsa::kAvx2: return "avx2";
    default: return "none";
  }
}

bool fast_linear_available() { return fast_linear_isa() != FastLinearIsa::kNone; }

torch::Tensor fast_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  const int64_t K = x.size(-1);
  const int64_t M = K > 0 ? x.numel() / K : 0;
  const bool grad = torch::GradMode::is_enabled() &&
                    (x.requires_grad() || w.requires_grad() || (b.defined() && b.requires_grad()));
  if (M == 0 || M > kTiledMaxRows || grad || !x.device().is_cpu() || x.scalar_type() != torch::kFloat32 ||
      w.scalar_type() != torch::kFloat32 || !w.is_contiguous() || w.dim() != 2 || w.size(1) != K ||
      (b.defined() && (!b.is_contiguous() || b.scalar_type() != torch::kFloat32)))
    return at::linear(x, w, b);
  const FastLinearIsa isa = fast_linear_isa();
  if (isa == FastLinearIsa::kNone || (isa != FastLinearIsa::kAvx512 && M > kFastLinearMaxRows))
    return at::linear(x, w, b);
  auto xc = x.contiguous();
  const int64_t N = w.size(0);
  auto shape = x.sizes().vec();
  shape.back() = N;
  auto y = torch::empty(shape, x.options());
  skinny_gemm(isa, xc.data_ptr<float>(), w.data_ptr<float>(), b.defined() ? b.data_ptr<float>() : nullptr,
              y.data_ptr<float>(), M, N, K);
  return y;
}

torch::Tensor fast_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, const QuantWeight* q) {
  return q ? quant_linear(x, *q, b) : fast_linear(x, w, b);
}

}  // namespace safedec
