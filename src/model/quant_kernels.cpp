// Activation quantisation, the plain C++ reference kernels and run-time dispatch (see
// quant_kernels.h for the arithmetic). The reference computes every block's integer dot exactly
// and adds the scaled block terms in block order, in fp32.
#include "model/quant_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/error.h"
#include "io/half.h"

namespace safedec {
namespace quant {
namespace {

inline float rd_half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return half_to_float(h);
}

// Q4_K / Q5_K packed 6-bit scales and mins of sub-block j (0..7).
inline void k_scale_min(int j, const uint8_t* s, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// The legacy dots: s = exact integer sum over the block, then the fp32 scales.
float dot_q4_0(const uint8_t* w, const ActBlock* a, int64_t nb) {
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b, w += 18) {
    const uint8_t* qs = w + 2;
    const int16_t* q = a[b].q;
    int s = 0;
    for (int j = 0; j < 16; ++j)
      s += ((qs[j] & 0x0F) - 8) * q[k_act_pos(j)] + ((qs[j] >> 4) - 8) * q[k_act_pos(j + 16)];
    acc += rd_half(w) * a[b].d * static_cast<float>(s);
  }
  return acc;
}

float dot_q4_1(const uint8_t* w, const ActBlock* a, int64_t nb) {
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b, w += 20) {
    const uint8_t* qs = w + 4;
    const int16_t* q = a[b].q;
    int s = 0;
    for (int j = 0; j < 16; ++j) s += (qs[j] & 0x0F) * q[k_act_pos(j)] + (qs[j] >> 4) * q[k_act_pos(j + 16)];
    acc += rd_half(w) * a[b].d * static_cast<float>(s) + rd_half(w + 2) * a[b].ds;
  }
  return acc;
}

float dot_q5_0(const uint8_t* w, const ActBlock* a, int64_t nb) {
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b, w += 22) {
    uint32_t qh;
    std::memcpy(&qh, w + 2, 4);
    const uint8_t* qs = w + 6;
    const int16_t* q = a[b].q;
    int s = 0;
    for (int j = 0; j < 16; ++j) {
      const int lo = (qs[j] & 0x0F) | static_cast<int>((qh >> j) & 1u) << 4;
      const int hi = (qs[j] >> 4) | static_cast<int>((qh >> (j + 16)) & 1u) << 4;
      s += (lo - 16) * q[k_act_pos(j)] + (hi - 16) * q[k_act_pos(j + 16)];
    }
    acc += rd_half(w) * a[b].d * static_cast<float>(s);
  }
  return acc;
}

float dot_q8_0(const uint8_t* w, const ActBlock* a, int64_t nb) {
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b, w += 34) {
    const int8_t* qs = reinterpret_cast<const int8_t*>(w + 2);
    int s = 0;
    for (int j = 0; j < 32; ++j) s += qs[j] * a[b].q[k_act_pos(j)];
    acc += rd_half(w) * a[b].d * static_cast<float>(s);
  }
  return acc;
}

float dot_q4_k(const uint8_t* w, const KActBlock* a, int64_t nsb) {
  float acc = 0.0f;
  for (int64_t sb = 0; sb < nsb; ++sb, w += 144) {
    const float d = rd_half(w), dmin = rd_half(w + 2);
    const uint8_t* q = w + 16;
    const KActBlock& x = a[sb];
    float t = 0.0f, mins = 0.0f;
    for (int j = 0; j < 8; ++j) {
      const uint8_t* qc = q + 32 * (j / 2);
      int s = 0;  // exact: |s| <= 32 * 15 * 32767
      for (int l = 0; l < 32; ++l)
        s += ((j % 2 == 0) ? (qc[l] & 0x0F) : (qc[l] >> 4)) * x.q[k_act_pos(32 * j + l)];
      int sc, m;
      k_scale_min(j, w + 4, &sc, &m);
      t += d * static_cast<float>(sc) * static_cast<float>(s);
      mins += dmin * static_cast<float>(m) * x.ds[j];
    }
    acc += t * x.d - mins;
  }
  return acc;
}

// The 6-bit quant (0..63, i.e. value + 32) of element e (0..255) of a Q6_K block.
inline int q6_at(const uint8_t* w, int e) {
  const uint8_t* ql = w + 64 * (e / 128);
  const uint8_t* qh = w + 128 + 32 * (e / 128);
  const int r = e % 128, quarter = r / 32, l = r % 32;
  // quarter 0: ql[l] low, 1: ql[l + 32] low, 2: ql[l] high, 3: ql[l + 32] high; qh bits 2*quarter.
  const uint8_t byte = ql[l + ((quarter & 1) ? 32 : 0)];
  const int nib = quarter < 2 ? (byte & 0x0F) : (byte >> 4);
  return nib | (((qh[l] >> (2 * quarter)) & 3) << 4);
}

float dot_q6_k(const uint8_t* w, const KActBlock* a, int64_t nsb) {
  float acc = 0.0f;
  for (int64_t sb = 0; sb < nsb; ++sb, w += 210) {
    const int8_t* sc = reinterpret_cast<const int8_t*>(w + 192);
    const float d = rd_half(w + 208);
    const KActBlock& x = a[sb];
    float t = 0.0f;
    for (int g = 0; g < 16; ++g) {  // group g = elements [16 g, 16 g + 16), scale sc[g]
      int s = 0;  // exact: |s| <= 16 * 32 * 32767
      for (int l = 0; l < 16; ++l) s += (q6_at(w, 16 * g + l) - 32) * x.q[k_act_pos(16 * g + l)];
      t += d * static_cast<float>(sc[g]) * static_cast<float>(s);
    }
    acc += t * x.d;
  }
  return acc;
}

using DotFn = float (*)(const uint8_t*, const ActBlock*, int64_t);
using KDotFn = float (*)(const uint8_t*, const KActBlock*, int64_t);

DotFn reference_dot(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: return dot_q4_0;
    case GgmlType::Q4_1: return dot_q4_1;
    case GgmlType::Q5_0: return dot_q5_0;
    case GgmlType::Q8_0: return dot_q8_0;
    default: return nullptr;
  }
}

KDotFn reference_kdot(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_K: return dot_q4_k;
    case GgmlType::Q6_K: return dot_q6_k;
    default: return nullptr;
  }
}

bool cpu_has(const char* feature) {
  __builtin_cpu_init();
  if (std::string(feature) == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (std::string(feature) == "avx512")
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
  if (std::string(feature) == "avx512vnni") return cpu_has("avx512") && __builtin_cpu_supports("avx512vnni");
  return false;
}

}  // namespace

void quantize_activations(const float* x, int64_t K, ActBlock* out, int qmax) {
  SAFEDEC_ASSERT(K % kActBlock == 0, "activation length ", K, " is not a multiple of 32");
  SAFEDEC_ASSERT(qmax >= 1 && qmax <= 32767, "qmax ", qmax);
  const float lim = static_cast<float>(qmax);
  for (int64_t b = 0; b < K / kActBlock; ++b, x += kActBlock) {
    float amax = 0.0f;
    for (int i = 0; i < kActBlock; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / lim;
    const float inv = d > 0.0f ? 1.0f / d : 0.0f;  // an all-zero block quantises to zeros
    ActBlock& o = out[b];
    o.d = d;
    int s = 0;
    for (int i = 0; i < kActBlock; ++i) {
      // Round to nearest (ties to even); |x * inv| <= qmax up to rounding, clamped for safety.
      const int q = static_cast<int>(std::nearbyint(std::min(lim, std::max(-lim, x[i] * inv))));
      o.q[k_act_pos(i)] = static_cast<int16_t>(q);
      s += q;
    }
    o.ds = d * static_cast<float>(s);
  }
}

void quantize_activations_k(const float* x, int64_t K, KActBlock* out, int qmax) {
  SAFEDEC_ASSERT(K % kKActBlock == 0, "activation length ", K, " is not a multiple of 256");
  SAFEDEC_ASSERT(qmax >= 1 && qmax <= 32767, "qmax ", qmax);
  const float lim = static_cast<float>(qmax);
  for (int64_t b = 0; b < K / kKActBlock; ++b, x += kKActBlock) {
    float amax = 0.0f;
    for (int i = 0; i < kKActBlock; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / lim;
    const float inv = d > 0.0f ? 1.0f / d : 0.0f;  // an all-zero block quantises to zeros
    KActBlock& o = out[b];
    o.d = d;
    for (int j = 0; j < 8; ++j) {
      int s = 0;
      for (int e = 32 * j; e < 32 * j + 32; ++e) {
        // Round to nearest (ties to even); |x * inv| <= qmax up to rounding, clamped for safety.
        const int q = static_cast<int>(std::nearbyint(std::min(lim, std::max(-lim, x[e] * inv))));
        o.q[k_act_pos(e)] = static_cast<int16_t>(q);
        s += q;
      }
      o.ds[j] = d * static_cast<float>(s);
    }
  }
}

bool uses_k_activations(GgmlType type) { return reference_kdot(type) != nullptr; }

bool kernel_supported(GgmlType type) { return reference_dot(type) != nullptr || reference_kdot(type) != nullptr; }

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Reference: return "reference";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Vnni: return "avx512vnni";
  }
  return "?";
}

bool isa_available(Isa isa) {
  static const bool avx2 = cpu_has("avx2"), avx512 = avx2 && cpu_has("avx512"), vnni = avx2 && cpu_has("avx512vnni");
  switch (isa) {
    case Isa::Reference: return true;
    case Isa::Avx2: return avx2;
    case Isa::Avx512: return avx512;
    case Isa::Avx512Vnni: return vnni;
  }
  return false;
}

Isa best_isa() {
  static const Isa best = [] {
    Isa cap = Isa::Avx512Vnni;
    if (const char* env = std::getenv("SAFEDEC_QUANT_ISA")) {
      const std::string v = env;
      if (v == "reference") cap = Isa::Reference;
      else if (v == "avx2") cap = Isa::Avx2;
      else if (v == "avx512") cap = Isa::Avx512;
      else if (v != "avx512vnni" && !v.empty())
        fail("SAFEDEC_QUANT_ISA='", v, "' is not one of reference, avx2, avx512, avx512vnni.");
    }
    for (int i = static_cast<int>(cap); i > 0; --i)
      if (isa_available(static_cast<Isa>(i))) return static_cast<Isa>(i);
    return Isa::Reference;
  }();
  return best;
}

void gemv_rows(Isa isa, const QuantGemv& p, int64_t n0, int64_t n1) {
  SAFEDEC_ASSERT(p.K % kActBlock == 0 && p.K % ggml_block_size(p.type) == 0, "bad K ", p.K, " for ",
                 ggml_type_name(p.type));
  SAFEDEC_ASSERT(uses_k_activations(p.type) ? p.AK != nullptr : p.A != nullptr, "no activation rows in the format ",
                 ggml_type_name(p.type), " needs");
  SAFEDEC_ASSERT(isa_available(isa), "kernel ", isa_name(isa), " is not available on this CPU");
  switch (isa) {
    case Isa::Avx512Vnni:
      if (gemv_rows_avx512vnni(p, n0, n1)) return;
      break;
    case Isa::Avx512:
      if (gemv_rows_avx512(p, n0, n1)) return;
      break;
    case Isa::Avx2:
      if (gemv_rows_avx2(p, n0, n1)) return;
      break;
    case Isa::Reference: break;
  }
  if (const KDotFn kdot = reference_kdot(p.type)) {
    const int64_t nsb = p.K / kKActBlock;
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t m = 0; m < p.M; ++m) p.Y[m * p.ldy + n] = kdot(p.W + n * p.row_bytes, p.AK + m * nsb, nsb);
    return;
  }
  const DotFn dot = reference_dot(p.type);
  SAFEDEC_CHECK(dot, "No quantised kernel for ggml type ", ggml_type_name(p.type), ".");
  const int64_t nb = p.K / kActBlock;
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t m = 0; m < p.M; ++m) p.Y[m * p.ldy + n] = dot(p.W + n * p.row_bytes, p.A + m * nb, nb);
}

}  // namespace quant
}  // namespace safedec
