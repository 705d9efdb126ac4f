// QuantWeight storage and quant_linear() dispatch (see quant_linear.h).
#include "model/quant_linear.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "core/error.h"

namespace safedec {

bool quant_weight_supported(const GgufTensorInfo& t) {
  return quant::kernel_supported(t.type) && t.ne.size() >= 1 && t.ne[0] % quant::kActBlock == 0 &&
         t.ne[0] % ggml_block_size(t.type) == 0;
}

void QuantWeight::append(const GgufTensorInfo& t, const std::string& file, int64_t heads, int64_t head_dim) {
  SAFEDEC_CHECK(quant::kernel_supported(t.type), "GGUF tensor '", t.name, "' in '", file, "' has type ",
                ggml_type_name(t.type), ", which safedec cannot multiply in quantised form (supported: Q4_0, Q4_1, "
                "Q5_0, Q8_0, Q4_K, Q6_K); load the model with weights: fp32.");
  SAFEDEC_CHECK(t.ne[0] == cols_, "GGUF tensor '", t.name, "' in '", file, "' has rows of ", t.ne[0],
                " elements but the layer needs ", cols_, ".");
  const int64_t n = t.n_rows();
  const size_t rb = static_cast<size_t>(t.ne[0] / ggml_block_size(t.type) * ggml_type_size(t.type));
  SAFEDEC_CHECK(rb * static_cast<size_t>(n) == t.nbytes, "GGUF tensor '", t.name, "' in '", file, "' holds ",
                t.nbytes, " bytes, not ", rb * static_cast<size_t>(n), " for ", n, " rows of ", ggml_type_name(t.type));
  Segment s;
  s.type = t.type;
  s.row0 = rows_;
  s.rows = n;
  s.row_bytes = rb;
  s.data.resize(rb * static_cast<size_t>(n));
  if (heads > 0) {
    SAFEDEC_CHECK(head_dim % 2 == 0 && heads * head_dim == n, "GGUF tensor '", t.name, "' in '", file, "' has ", n,
                  " rows, not ", heads, " heads of ", head_dim);
    const int64_t half = head_dim / 2;
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < 2; ++i)
        for (int64_t j = 0; j < half; ++j) {
          const int64_t dst = h * head_dim + i * half + j, src = h * head_dim + j * 2 + i;
          std::memcpy(s.data.data() + dst * rb, t.data + src * rb, rb);
        }
  } else {
    std::memcpy(s.data.data(), t.data, s.data.size());
  }
  rows_ += n;
  segments_.push_back(std::move(s));
}

size_t QuantWeight::nbytes() const {
  size_t n = 0;
  for (const auto& s : segments_) n += s.data.size();
  return n;
}

std::string QuantWeight::describe() const {
  std::ostringstream o;
  for (size_t i = 0; i < segments_.size(); ++i)
    o << (i ? " " : "") << ggml_type_name(segments_[i].type) << "[" << segments_[i].rows << "]";
  return o.str();
}

void QuantWeight::dequantize_rows(int64_t row0, int64_t n, float* out) const {
  for (const auto& s : segments_) {
    const int64_t b = std::max(row0, s.row0), e = std::min(row0 + n, s.row0 + s.rows);
    if (b >= e) continue;
    dequantize_row(s.type, s.data.data() + static_cast<size_t>(b - s.row0) * s.row_bytes, out + (b - row0) * cols_,
                   (e - b) * cols_);
  }
}

torch::Tensor QuantWeight::dequantize() const {
  auto w = torch::empty({rows_, cols_}, torch::kFloat32);
  dequantize_rows(0, rows_, w.data_ptr<float>());
  return w;
}

namespace {

// M rows of x (row stride K) quantised to int8 blocks of Blk's size: level 1 in rows [0, M) and,
// with two levels, the residual x - d q of each row quantised again in rows [M, 2 M).
template <typename Blk>
std::vector<Blk> quantize_rows(const float* xp, int64_t M, int64_t K, bool two,
                               void (*quantize)(const float*, int64_t, Blk*)) {
  constexpr int64_t bs = static_cast<int64_t>(sizeof(Blk::q));
  const int64_t nb = K / bs;
  std::vector<Blk> act(static_cast<size_t>((two ? 2 : 1) * M * nb));
  std::vector<float> resid(two ? static_cast<size_t>(K) : 0);
  for (int64_t m = 0; m < M; ++m) {
    Blk* a1 = act.data() + m * nb;
    quantize(xp + m * K, K, a1);
    if (!two) continue;
    for (int64_t k = 0; k < K; ++k) {
      const Blk& blk = a1[k / bs];
      resid[static_cast<size_t>(k)] = xp[m * K + k] - blk.d * static_cast<float>(blk.q[k % bs]);
    }
    quantize(resid.data(), K, act.data() + (M + m) * nb);
  }
  return act;
}

}  // namespace

int quant_activation_levels() {
  static const int levels = [] {
    const char* env = std::getenv("SAFEDEC_QUANT_ACT");
    if (!env || !*env || std::string(env) == "int8x2") return 2;
    SAFEDEC_CHECK(std::string(env) == "int8", "SAFEDEC_QUANT_ACT='", env, "' is not int8x2 (default) or int8.");
    return 1;
  }();
  return levels;
}

torch::Tensor quant_linear(const torch::Tensor& x, const QuantWeight& w, const torch::Tensor& b, quant::Isa isa) {
  const int64_t K = w.cols(), N = w.rows();
  SAFEDEC_CHECK(x.size(-1) == K, "quant_linear: input has ", x.size(-1), " features, the weight ", K, ".");
  SAFEDEC_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat32,
                "quant_linear: quantised weights run on the CPU in fp32 only.");
  const bool grad = torch::GradMode::is_enabled() && (x.requires_grad() || (b.defined() && b.requires_grad()));
  SAFEDEC_CHECK(!grad, "This model was loaded with quantised weights (weights: quantized), which cannot be trained "
                "or differentiated through; load it with weights: fp32.");
  const int64_t M = K > 0 ? x.numel() / K : 0;
  auto shape = x.sizes().vec();
  shape.back() = N;
  auto xc = x.contiguous();
  torch::Tensor y;
  if (M == 0) {
    y = torch::zeros(shape, x.options());
  } else if (M <= kQuantGemvMaxRows) {
    // Activation rows: x ~ d q (int8), and with two levels (the default) also the residual
    // x - d q quantised the same way as M more rows, multiplied in the same pass over W; the two
    // partial products are summed. Two levels leave an activation error of ~1/64000 of a block's
    // largest value instead of ~1/254 (which outlier-heavy models such as SmolLM2 and Gemma feel
    // as a few percent of logit error). Each block format a segment needs is built (ActBlock of 32
    // for the legacy types, KActBlock of 256 for the K-quants).
    const bool two = quant_activation_levels() == 2;
    const int64_t R = two ? 2 * M : M;
    const float* xp = xc.data_ptr<float>();
    bool need32 = false, need256 = false;
    for (const auto& s : w.segments()) (quant::uses_k_activations(s.type) ? need256 : need32) = true;
    std::vector<quant::ActBlock> act;
    std::vector<quant::KActBlock> kact;
    if (need32) act = quantize_rows<quant::ActBlock>(xp, M, K, two, quant::quantize_activations);
    if (need256) kact = quantize_rows<quant::KActBlock>(xp, M, K, two, quant::quantize_activations_k);
    auto yr = torch::empty({R, N}, x.options());
    float* yp = yr.data_ptr<float>();
    // Grain: 32 weight rows per task keeps both threads busy on the smallest matrices (k/v of 256 rows).
    at::parallel_for(0, N, 32, [&](int64_t n0, int64_t n1) {
      for (const auto& s : w.segments()) {
        const int64_t b0 = std::max(n0, s.row0), b1 = std::min(n1, s.row0 + s.rows);
        if (b0 >= b1) continue;
        quant::QuantGemv p{s.type, s.data.data(), s.row_bytes, K, act.data(), R, yp + s.row0, N, kact.data()};
        quant::gemv_rows(isa, p, b0 - s.row0, b1 - s.row0);
      }
    });
    y = (two ? yr.narrow(0, 0, M) + yr.narrow(0, M, M) : yr).view(shape);
  } else {
    // Prefill: fp32 tiles of W times x through ATen (single-threaded inside each task).
    auto x2 = xc.view({M, K});
    y = torch::empty({M, N}, x.options());
    constexpr int64_t kTile = 64;
    at::parallel_for(0, (N + kTile - 1) / kTile, 1, [&](int64_t t0, int64_t t1) {
      auto buf = torch::empty({kTile, K}, torch::kFloat32);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t r0 = t * kTile, n = std::min(kTile, N - r0);
        w.dequantize_rows(r0, n, buf.data_ptr<float>());
        y.narrow(1, r0, n).copy_(torch::mm(x2, buf.narrow(0, 0, n).t()));
      }
    });
    y = y.view(shape);
  }
  if (b.defined()) y.add_(b);
  return y;
}

}  // namespace safedec
