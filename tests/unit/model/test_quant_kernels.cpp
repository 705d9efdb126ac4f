// Quantised matrix-vector kernels (src/model/quant_kernels.*, quant_linear.*):
//  * every SIMD kernel this CPU has (AVX2, AVX-512, AVX-512-VNNI) against the plain C++ reference
//    on random blocks of every type, for awkward sizes (K of 1..several blocks, N = 1, 19, 111, M =
//    1..7 activation rows), printing the first mismatching index. Both compute identical integer
//    block dots and differ only in the order of fp32 additions, so the tolerance is the fp32
//    rounding bound of the sum: 2 * nblocks * eps * sum_b |term_b| (+ the hsum's 8 lanes);
//  * the reference against fp32 dequantised weights times fp32 x, with the bound of the int8
//    activation rounding: |x - d q| <= d / 2 per element, so |error| <= sum_k |w_k| d_k / 2 (d_k the
//    scale of k's activation block: 32 elements for the legacy types, 256 for the K-quants);
//  * quant_linear() decode (int8) and prefill (fp32 tiles) paths against dequantised at::linear,
//    a fused matrix of mixed-type segments, the llama Q/K row permutation, bias, and errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <random>

#include "core/error.h"
#include "io/half.h"
#include "model/quant_kernels.h"
#include "model/quant_linear.h"

using namespace safedec;
using namespace safedec::quant;

namespace {

const GgmlType kTypes[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
                           GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K};

// Random block bytes with finite, moderate fp16 scale fields (the packed quants take every bit pattern).
std::vector<uint8_t> random_rows(GgmlType t, int64_t rows, int64_t K, std::mt19937& rng) {
  const int64_t bs = ggml_block_size(t), ts = ggml_type_size(t);
  std::vector<uint8_t> data(static_cast<size_t>(rows * (K / bs) * ts));
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : data) b = static_cast<uint8_t>(byte(rng));
  std::normal_distribution<float> scale(0.0f, 0.02f);
  std::vector<int> fields;
  switch (t) {
    case GgmlType::Q4_0: case GgmlType::Q5_0: case GgmlType::Q8_0: fields = {0}; break;
    case GgmlType::Q4_1: case GgmlType::Q4_K: fields = {0, 2}; break;
    case GgmlType::Q6_K: fields = {208}; break;
    default: break;
  }
  for (int64_t blk = 0; blk < rows * (K / bs); ++blk)
    for (int off : fields) {
      const uint16_t h = float_to_half(scale(rng));
      std::memcpy(data.data() + blk * ts + off, &h, 2);
    }
  return data;
}

std::vector<float> random_x(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = nd(rng);
  if (n > 40) {
    x[3] = 0.0f;
    x[37] = 25.0f;  // an outlier: one block's scale is set by it
    for (int i = 64; i < 96 && i < n; ++i) x[static_cast<size_t>(i)] = 0.0f;  // an all-zero block
  }
  return x;
}

struct Case {
  GgmlType type;
  int64_t N, K, M;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  for (GgmlType t : kTypes) {
    const int64_t bs = ggml_block_size(t);
    for (int64_t K : {bs, 3 * bs, bs == 32 ? int64_t(896) : int64_t(1536), bs == 32 ? int64_t(4864) : int64_t(4864)})
      for (int64_t N : {1, 19, 111})
        for (int64_t M : {1, 3, 4, 7}) {
          if (K % bs != 0) continue;
          out.push_back({t, N, K, M});
        }
  }
  return out;
}

// M activation rows in both block formats (ActBlock of 32, and KActBlock of 256 where K allows).
struct Acts {
  std::vector<ActBlock> a;
  std::vector<KActBlock> k;
};
Acts quantize_both(const std::vector<float>& x, int64_t M, int64_t K) {
  Acts out;
  out.a.resize(static_cast<size_t>(M * K / 32));
  for (int64_t m = 0; m < M; ++m)
    quantize_activations(x.data() + m * K, K, out.a.data() + m * K / 32, m % 2 ? 127 : 32767);
  if (K % 256 == 0) {
    out.k.resize(static_cast<size_t>(M * K / 256));
    // int16 rows, and every other row at one int8 level's precision (quant_linear's int8 mode).
    for (int64_t m = 0; m < M; ++m)
      quantize_activations_k(x.data() + m * K, K, out.k.data() + m * K / 256, m % 2 ? 127 : 32767);
  }
  return out;
}

// Reference results.
void reference(const Case& c, const std::vector<uint8_t>& w, const Acts& a, std::vector<float>& y) {
  y.assign(static_cast<size_t>(c.M * c.N), 0.0f);
  QuantGemv p{c.type, w.data(), static_cast<size_t>(c.K / ggml_block_size(c.type) * ggml_type_size(c.type)), c.K,
              a.a.data(), c.M, y.data(), c.N, a.k.data()};
  gemv_rows(Isa::Reference, p, 0, c.N);
}

}  // namespace

TEST(QuantKernels, SimdMatchesReferenceOnAwkwardSizes) {
  std::mt19937 rng(1234);
  int checked_isas = 0;
  for (Isa isa : {Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni}) {
    if (!isa_available(isa)) {
      std::printf("  %s: not on this CPU (its body is the same source; the reference still runs)\n", isa_name(isa));
      continue;
    }
    ++checked_isas;
    int n_cases = 0;
    for (const Case& c : cases()) {
      const auto w = random_rows(c.type, c.N, c.K, rng);
      const auto x = random_x(c.M * c.K, rng);
      const Acts a = quantize_both(x, c.M, c.K);
      std::vector<float> ref, got(static_cast<size_t>(c.M * c.N), -1.0f);
      reference(c, w, a, ref);
      const size_t rb = static_cast<size_t>(c.K / ggml_block_size(c.type) * ggml_type_size(c.type));
      QuantGemv p{c.type, w.data(), rb, c.K, a.a.data(), c.M, got.data(), c.N, a.k.data()};
      // In two pieces, as the thread split does.
      gemv_rows(isa, p, 0, c.N / 2);
      gemv_rows(isa, p, c.N / 2, c.N);
      // Bound: |sum error| <= (blocks + 8) * eps * sum |terms|; sum |terms| <= |w|_1-ish bound
      // computed from the dequantised row and |x|, which dominates every block term.
      std::vector<float> wf(static_cast<size_t>(c.N * c.K));
      dequantize_row(c.type, w.data(), wf.data(), c.N * c.K);
      const double eps = 1.19209290e-7;
      for (int64_t m = 0; m < c.M; ++m)
        for (int64_t n = 0; n < c.N; ++n) {
          double mag = 0.0;
          for (int64_t k = 0; k < c.K; ++k)
            mag += std::fabs(wf[static_cast<size_t>(n * c.K + k)]) * (std::fabs(x[static_cast<size_t>(m * c.K + k)]) + 1.0);
          const double tol = 2.0 * (static_cast<double>(c.K) / 32.0 + 16.0) * eps * mag + 1e-30;
          const float r = ref[static_cast<size_t>(m * c.N + n)], g = got[static_cast<size_t>(m * c.N + n)];
          ASSERT_LE(std::fabs(double(r) - double(g)), tol)
              << isa_name(isa) << " " << ggml_type_name(c.type) << " N=" << c.N << " K=" << c.K << " M=" << c.M
              << ": first mismatch at row " << m << ", output " << n << ": " << g << " vs reference " << r;
        }
      ++n_cases;
    }
    std::printf("  %s: %d cases equal to the reference within the fp32 summation bound\n", isa_name(isa), n_cases);
  }
  std::printf("  %d SIMD kernels checked on this CPU (best: %s)\n", checked_isas, isa_name(best_isa()));
}

TEST(QuantKernels, ReferenceMatchesFp32WithinTheInt8ActivationBound) {
  std::mt19937 rng(99);
  for (GgmlType t : kTypes) {
    const int64_t K = 1536, N = 19;
    const auto w = random_rows(t, N, K, rng);
    const auto x = random_x(K, rng);
    const Acts a = quantize_both(x, 1, K);
    std::vector<float> y;
    reference({t, N, K, 1}, w, a, y);
    // The activation step of element k: its 32-block's (legacy types) or 256-block's (K-quants).
    auto step = [&](int64_t k) { return uses_k_activations(t) ? a.k[static_cast<size_t>(k / 256)].d : a.a[static_cast<size_t>(k / 32)].d; };
    std::vector<float> wf(static_cast<size_t>(N * K));
    dequantize_row(t, w.data(), wf.data(), N * K);
    for (int64_t n = 0; n < N; ++n) {
      double exact = 0.0, bound = 0.0, mag = 0.0;
      for (int64_t k = 0; k < K; ++k) {
        const double wk = wf[static_cast<size_t>(n * K + k)];
        exact += wk * x[static_cast<size_t>(k)];
        bound += std::fabs(wk) * step(k) * 0.5;
        mag += std::fabs(wk) * std::fabs(x[static_cast<size_t>(k)]);
      }
      bound += 1e-5 * mag;  // plus fp32 rounding of the products and sums
      ASSERT_LE(std::fabs(exact - y[static_cast<size_t>(n)]), bound)
          << ggml_type_name(t) << " output " << n << ": " << y[static_cast<size_t>(n)] << " vs fp64 " << exact;
    }
  }
}

TEST(QuantKernels, QuantizeActivationsRoundsToNearestInKernelOrder) {
  std::vector<float> x(64, 0.0f);
  for (int i = 0; i < 32; ++i) x[static_cast<size_t>(i)] = static_cast<float>(i - 16) * 0.5f;
  std::vector<ActBlock> a(2);
  quantize_activations(x.data(), 64, a.data());
  EXPECT_FLOAT_EQ(a[0].d, 8.0f / 32767.0f);
  EXPECT_EQ(a[0].q[k_act_pos(0)], -32767);  // -8 -> -32767
  EXPECT_EQ(a[0].q[k_act_pos(16)], 0);
  int s = 0;
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(a[0].q[k_act_pos(i)], static_cast<int>(std::nearbyint(x[static_cast<size_t>(i)] / a[0].d))) << i;
    s += a[0].q[i];
  }
  EXPECT_FLOAT_EQ(a[0].ds, a[0].d * static_cast<float>(s));
  EXPECT_EQ(a[1].d, 0.0f);  // all-zero block
  for (int i = 0; i < 32; ++i) EXPECT_EQ(a[1].q[i], 0);
  quantize_activations(x.data(), 32, a.data(), 127);  // one int8 level's precision
  EXPECT_FLOAT_EQ(a[0].d, 8.0f / 127.0f);
  EXPECT_EQ(a[0].q[k_act_pos(0)], -127);
}

TEST(QuantKernels, QuantizeActivationsKIsInt16PerSuperBlockInKernelOrder) {
  std::vector<float> x(512, 0.0f);
  for (int i = 0; i < 256; ++i) x[static_cast<size_t>(i)] = static_cast<float>(i % 37 - 18) * 0.25f;
  x[200] = -10.0f;  // sets the first super-block's scale
  std::vector<KActBlock> a(2);
  quantize_activations_k(x.data(), 512, a.data());
  EXPECT_FLOAT_EQ(a[0].d, 10.0f / 32767.0f);
  EXPECT_EQ(a[0].q[k_act_pos(200)], -32767);
  // Element e sits at k_act_pos(e): groups of 8 within each 32 in the order 0, 2, 1, 3.
  EXPECT_EQ(k_act_pos(0), 0);
  EXPECT_EQ(k_act_pos(8), 16);
  EXPECT_EQ(k_act_pos(16), 8);
  EXPECT_EQ(k_act_pos(31), 31);
  EXPECT_EQ(k_act_pos(32 + 9), 32 + 17);
  for (int i = 0; i < 256; ++i) {
    EXPECT_EQ(a[0].q[k_act_pos(i)], static_cast<int>(std::nearbyint(x[static_cast<size_t>(i)] / a[0].d))) << i;
    EXPECT_LE(std::fabs(x[static_cast<size_t>(i)] - a[0].d * a[0].q[k_act_pos(i)]), a[0].d * 0.5f + 1e-6f) << i;
  }
  for (int j = 0; j < 8; ++j) {
    int s = 0;
    for (int i = 32 * j; i < 32 * j + 32; ++i) s += a[0].q[i];
    EXPECT_FLOAT_EQ(a[0].ds[j], a[0].d * static_cast<float>(s)) << j;
  }
  EXPECT_EQ(a[1].d, 0.0f);  // all-zero block
  for (int i = 0; i < 256; ++i) EXPECT_EQ(a[1].q[i], 0);
  quantize_activations_k(x.data(), 256, a.data(), 127);  // one int8 level's precision
  EXPECT_FLOAT_EQ(a[0].d, 10.0f / 127.0f);
  EXPECT_EQ(a[0].q[k_act_pos(200)], -127);
  EXPECT_TRUE(uses_k_activations(GgmlType::Q4_K) && uses_k_activations(GgmlType::Q6_K));
  EXPECT_FALSE(uses_k_activations(GgmlType::Q4_0) || uses_k_activations(GgmlType::Q8_0));
}

namespace {

// A GgufTensorInfo over caller-owned bytes (ne[0] = K, ne[1] = rows).
GgufTensorInfo info(const std::string& name, GgmlType t, int64_t rows, int64_t K, const std::vector<uint8_t>& d) {
  GgufTensorInfo i;
  i.name = name;
  i.ne = {K, rows};
  i.type = t;
  i.data = d.data();
  i.nbytes = d.size();
  return i;
}

}  // namespace

TEST(QuantLinear, DecodeAndPrefillMatchDequantisedFp32OnAFusedMixedMatrix) {
  torch::NoGradGuard ng;
  std::mt19937 rng(7);
  const int64_t K = 512;
  const auto a = random_rows(GgmlType::Q4_K, 40, K, rng);
  const auto b = random_rows(GgmlType::Q6_K, 24, K, rng);
  const auto c = random_rows(GgmlType::Q8_0, 8, K, rng);
  QuantWeight w(K);
  w.append(info("a", GgmlType::Q4_K, 40, K, a), "mem");
  w.append(info("b", GgmlType::Q6_K, 24, K, b), "mem");
  w.append(info("c", GgmlType::Q8_0, 8, K, c), "mem");
  EXPECT_EQ(w.rows(), 72);
  EXPECT_EQ(w.describe(), "Q4_K[40] Q6_K[24] Q8_0[8]");
  const auto wf = w.dequantize();
  const auto bias = torch::randn({72});
  for (int64_t rows : {1, 5, 16, 17, 40}) {
    const auto x = torch::randn({rows, K});
    const auto want = at::linear(x, wf, bias);
    const auto got = quant_linear(x, w, bias);
    ASSERT_EQ(got.sizes(), want.sizes());
    // Decode rows (<= 16) carry the activation rounding (int16: ~1e-5 relative; one int8
    // level: ~0.3% of the output scale); prefill
    // rows use the fp32 weights exactly (only the GEMM's summation order differs).
    const double rel = ((got - want).norm() / want.norm()).item<double>();
    if (rows <= kQuantGemvMaxRows)
      EXPECT_LT(rel, quant_activation_levels() == 2 ? 1e-4 : 1e-2) << rows << " rows";
    else
      EXPECT_LT(rel, 1e-5) << rows << " rows";
    // Each output row is independent of the others in the batch (batch-invariant decoding).
    if (rows <= kQuantGemvMaxRows && rows > 1)
      EXPECT_TRUE(torch::equal(quant_linear(x.narrow(0, 1, 1), w, bias)[0], got[1])) << rows << " rows";
  }
}

TEST(QuantLinear, LlamaRowPermutationMatchesTheFp32Unpermute) {
  std::mt19937 rng(11);
  const int64_t K = 64, heads = 2, hd = 8;
  const auto d = random_rows(GgmlType::Q8_0, heads * hd, K, rng);
  QuantWeight plain(K), perm(K);
  plain.append(info("q", GgmlType::Q8_0, heads * hd, K, d), "mem");
  perm.append(info("q", GgmlType::Q8_0, heads * hd, K, d), "mem", heads, hd);
  const auto expect = plain.dequantize().view({heads, hd / 2, 2, K}).transpose(1, 2).reshape({heads * hd, K});
  EXPECT_TRUE(torch::equal(perm.dequantize(), expect));
}

TEST(QuantLinear, RefusesUnsupportedTypesAndGradients) {
  std::vector<uint8_t> d(64 * 2 * 2);
  QuantWeight w(64);
  try {
    w.append(info("blk.0.ffn_up.weight", GgmlType::F16, 2, 64, d), "model.gguf");
    FAIL() << "F16 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.0.ffn_up.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("F16"), std::string::npos) << e.what();
  }
  std::mt19937 rng(3);
  const auto q = random_rows(GgmlType::Q8_0, 4, 64, rng);
  w.append(info("x", GgmlType::Q8_0, 4, 64, q), "mem");
  auto x = torch::randn({1, 64}, torch::requires_grad());
  EXPECT_THROW(quant_linear(x, w), Error);
}
