// QuantWeight storage and quant_linear() dispatch (see quant_linear.h).
#include "model/quant_linear.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "core/error.h"
#include "core/row_pool.h"

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


int quant_activation_levels() {
  static const int levels = [] {
    const char* env = std::getenv("SAFEDEC_QUANT_ACT");
    // int16 (default; "int8x2", the name of the two-int8-level scheme it replaced, is accepted too).
    if (!env || !*env || std::string(env) == "int16" || std::string(env) == "int8x2") return 2;
    SAFEDEC_CHECK(std::string(env) == "int8", "SAFEDEC_QUANT_ACT='", env, "' is not int16 (default) or int8.");
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
    // Activation rows in each block format a segment needs (ActBlock of 32 for the legacy types,
    // KActBlock of 256 for the K-quants), int16 by default: an error of ~1/65000 of a block's
    // largest value, as precise as two int8 levels, where one int8 level's ~1/254 (llama.cpp's
    // scheme, $SAFEDEC_QUANT_ACT=int8: qmax 127) costs outlier-heavy models such as SmolLM2 and
    // Gemma a few percent of logit error.
    const int qmax = quant_activation_levels() == 2 ? 32767 : 127;
    const float* xp = xc.data_ptr<float>();
    bool need32 = false, need256 = false;
    for (const auto& s : w.segments()) (quant::uses_k_activations(s.type) ? need256 : need32) = true;
    std::vector<quant::ActBlock> act;
    std::vector<quant::KActBlock> kact;
    if (need32) {
      act.resize(static_cast<size_t>(M * (K / quant::kActBlock)));
      for (int64_t m = 0; m < M; ++m)
        quant::quantize_activations(xp + m * K, K, act.data() + m * (K / quant::kActBlock), qmax);
    }
    if (need256) {
      kact.resize(static_cast<size_t>(M * (K / quant::kKActBlock)));
      for (int64_t m = 0; m < M; ++m)
        quant::quantize_activations_k(xp + m * K, K, kact.data() + m * (K / quant::kKActBlock), qmax);
    }
    auto y2 = torch::empty({M, N}, x.options());
    float* yp = y2.data_ptr<float>();
    // Chunks of whole 32-row groups, about 8 per thread so a late-starting worker still gets a share.
    const int threads = std::max(1, at::get_num_threads());
    const int64_t chunk = std::max<int64_t>(32, (N / (8 * threads) + 31) / 32 * 32);
    struct Ctx {
      const QuantWeight* w;
      const quant::ActBlock* act;
      const quant::KActBlock* kact;
      int64_t K, N, M, chunk;
      float* yp;
      quant::Isa isa;
    } ctx{&w, act.data(), kact.data(), K, N, M, chunk, yp, isa};
    RowPool::instance().run((N + chunk - 1) / chunk, threads, [](void* vp, int64_t c) {
      const Ctx& q = *static_cast<const Ctx*>(vp);
      const int64_t n0 = c * q.chunk, n1 = std::min(q.N, n0 + q.chunk);
      for (const auto& s : q.w->segments()) {
        const int64_t b0 = std::max(n0, s.row0), b1 = std::min(n1, s.row0 + s.rows);
        if (b0 >= b1) continue;
        quant::QuantGemv p{s.type, s.data.data(), s.row_bytes, q.K, q.act, q.M, q.yp + s.row0, q.N, q.kact};
        quant::gemv_rows(q.isa, p, b0 - s.row0, b1 - s.row0);
      }
    }, &ctx);
    y = y2.view(shape);
  } else {
    // Prefill: blocks of W dequantised to fp32 (tiles of 64 rows spread over the pool) and multiplied
    // through ATen, whose mm has its own threads.
    auto x2 = xc.view({M, K});
    y = torch::empty({M, N}, x.options());
    constexpr int64_t kTile = 64, kBlock = 512;
    const int threads = std::max(1, at::get_num_threads());
    auto buf = torch::empty({std::min(kBlock, N), K}, torch::kFloat32);
    float* bp = buf.data_ptr<float>();
    for (int64_t r0 = 0; r0 < N; r0 += kBlock) {
      const int64_t n = std::min(kBlock, N - r0);
      parallel_chunks((n + kTile - 1) / kTile, threads, [&](int64_t t) {
        const int64_t t0 = t * kTile;
        w.dequantize_rows(r0 + t0, std::min(kTile, n - t0), bp + t0 * K);
      });
      y.narrow(1, r0, n).copy_(torch::mm(x2, buf.narrow(0, 0, n).t()));
    }
    y = y.view(shape);
  }
  if (b.defined()) y.add_(b);
  return y;
}

}  // namespace safedec
