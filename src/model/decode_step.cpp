#include "model/decode_step.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace safedec::decode_step {

namespace {

// Dot product and y += a x over head_dim floats: AVX2+FMA when the CPU has it, plain loops otherwise.
__attribute__((target("avx2,fma"))) float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  s0 = _mm256_add_ps(s0, s1);
  __m128 r = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_shuffle_ps(r, r, 1));
  float s = _mm_cvtss_f32(r);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

__attribute__((target("avx2,fma"))) void axpy_avx2(float a, const float* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

float dot_plain(const float* a, const float* b, int64_t n) {
  float s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) s[k] += a[i + k] * b[i + k];
  float t = (s[0] + s[1]) + (s[2] + s[3]);
  for (; i < n; ++i) t += a[i] * b[i];
  return t;
}

void axpy_plain(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

bool have_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}

}  // namespace

void rms_norm_rows(const float* x, const float* w, float* y, int64_t rows, int64_t d, double eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    // fp32 rsqrt of the fp32 mean, as the ATen formulation computes it.
    const float mean = static_cast<float>(ss / static_cast<double>(d));
    const float inv = 1.0f / std::sqrt(mean + static_cast<float>(eps));
    for (int64_t i = 0; i < d; ++i) yr[i] = w[i] * (xr[i] * inv);
  }
}

void rope_heads(float* x, const float* cos, const float* sin, int64_t heads, int64_t hd) {
  const int64_t half = hd / 2;
  for (int64_t h = 0; h < heads; ++h) {
    float* x1 = x + h * hd;
    float* x2 = x1 + half;
    for (int64_t i = 0; i < half; ++i) {
      const float a = x1[i], b = x2[i];
      x1[i] = a * cos[i] - b * sin[i];
      x2[i] = b * cos[i] + a * sin[i];
    }
  }
}

void attend_one(const float* q, const float* keys, const float* values, int64_t g, int64_t hd, int64_t lo,
                int64_t last, float scale, float softcap, float* scratch, float* out) {
  const bool avx2 = have_avx2();
  auto dot = avx2 ? dot_avx2 : dot_plain;
  auto axpy = avx2 ? axpy_avx2 : axpy_plain;
  for (int64_t i = 0; i < g; ++i) {
    const float* qi = q + i * hd;
    float* oi = out + i * hd;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = lo; j <= last; ++j) {
      float s = dot(qi, keys + j * hd, hd) * scale;
      if (softcap > 0) s = std::tanh(s / softcap) * softcap;
      scratch[j] = s;
      mx = std::max(mx, s);
    }
    float sum = 0;
    for (int64_t j = lo; j <= last; ++j) {
      scratch[j] = std::exp(scratch[j] - mx);
      sum += scratch[j];
    }
    const float inv = 1.0f / sum;
    std::fill(oi, oi + hd, 0.0f);
    for (int64_t j = lo; j <= last; ++j) axpy(scratch[j] * inv, values + j * hd, oi, hd);
  }
}

void gated_activation(const float* gate, const float* up, float* out, int64_t n, bool gelu_tanh) {
  if (gelu_tanh) {
    constexpr float k = 0.7978845608028654f;  // sqrt(2 / pi)
    for (int64_t i = 0; i < n; ++i) {
      const float x = gate[i];
      out[i] = 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x))) * up[i];
    }
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
  }
}

void add_in_place(float* h, const float* a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) h[i] += a[i];
}

}  // namespace safedec::decode_step
