// HDR (Hazra et al. 2024, methods.md 3a): theta' = theta_t - lambda * tau'_H where tau'_H keeps the
// global top-k% of |theta_H - theta_b|. This file applies an artifact, selects the global top-k in
// streaming passes (a radix select over the fp32 bit patterns) and turns LoRA factors into a tau.
//
// Why a radix select: for x >= 0 the IEEE-754 bits of x, read as an unsigned integer, are ordered
// like x itself (sign 0, then exponent, then mantissa). The k-th largest |x| is therefore found
// exactly by two histograms of 65536 bins: the top 16 bits, then the low 16 bits among the entries
// whose top bits equal the bin that holds the k-th largest. Each pass needs only one block of tau at
// a time, so tau over a 7B model never exists twice (methods.md: "a selection algorithm that does not
// materialise a full fp32 copy twice").
#include "artifacts/harm_vector.h"

#include <array>
#include <cmath>
#include <cstring>
#include <map>

#include "core/error.h"

namespace safedec {

void check_hdr_lambda(double lambda, const std::string& where) {
  SAFEDEC_CHECK(std::isfinite(lambda) && lambda >= 0.0 && lambda <= kHdrLambdaMax, where,
                ": the HDR strength lambda must be in [0, ", kHdrLambdaMax, "] (the paper uses 0.1 to 6, default 3), got ",
                lambda);
}

void check_topk_fraction(double fraction, const std::string& where) {
  SAFEDEC_CHECK(std::isfinite(fraction) && fraction > 0.0 && fraction <= 1.0, where,
                ": the kept fraction k of the harm vector's global top-k must be in (0, 1] (the paper keeps 0.1), got ",
                fraction);
}

int64_t apply_harm_vector(CausalLM& model, const HarmVector& harm, double lambda) {
  check_hdr_lambda(lambda, "HDR");
  std::map<std::string, torch::Tensor> params;
  for (auto& kv : model.named_parameters()) params[kv.first] = kv.second;
  torch::NoGradGuard no_grad;
  int64_t edited = 0;
  for (const auto& [name, tau] : harm.tau) {
    auto it = params.find(name);
    if (it == params.end()) {
      std::string known;
      int shown = 0;
      for (const auto& kv : params)
        if (shown++ < 6) known += (known.empty() ? "" : ", ") + kv.first;
      fail("HDR: the harm vector has tensor '", name, "' that the model does not have (model names look like ", known,
           ", ...)", model.quantized() ? "; the model holds quantised weights: load it with weights: fp32" : "");
    }
    torch::Tensor& w = it->second;
    SAFEDEC_CHECK(tau.sizes() == w.sizes(), "HDR: tensor '", name, "' of the harm vector has shape ", tau.sizes(),
                  " but the model's is ", w.sizes());
    w.sub_((tau * lambda).to(w.device(), w.scalar_type()));
    ++edited;
  }
  SAFEDEC_CHECK(edited > 0, "HDR: the harm vector holds no tensors");
  return edited;
}

int64_t apply_harm_vector(CausalLM& model, const std::string& path, double lambda) {
  check_hdr_lambda(lambda, "HDR with " + path);
  return apply_harm_vector(model, load_harm_vector(path, model.config()), lambda);
}

namespace {

// |x| as its bit pattern (sign cleared); NaN/Inf refused.
inline uint32_t abs_bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b & 0x7fffffffu;
}
constexpr uint32_t kInfBits = 0x7f800000u;

}  // namespace

TopKSelection select_global_topk(const TauStream& stream, double fraction) {
  check_topk_fraction(fraction, "HDR");
  TopKSelection s;
  // Pass 1: totals and the histogram of the top 16 bits of |tau|.
  std::vector<int64_t> high(1 << 16, 0);
  int64_t bad = 0;
  stream([&](const float* v, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t b = abs_bits(v[i]);
      bad += b >= kInfBits ? 1 : 0;
      ++high[b >> 16];
    }
    s.total += n;
  });
  SAFEDEC_CHECK(s.total > 0, "HDR: empty harm vector");
  SAFEDEC_CHECK(bad == 0, "HDR: the harm vector holds ", bad, " NaN/Inf entries; the fine-tune diverged");
  s.k = std::max<int64_t>(1, static_cast<int64_t>(fraction * static_cast<double>(s.total)));
  if (s.k > s.total) s.k = s.total;
  // The bin holding the k-th largest, and how many entries lie in higher bins.
  int64_t above = 0;
  int64_t hi_bin = (1 << 16) - 1;
  for (; hi_bin >= 0; --hi_bin) {
    if (above + high[hi_bin] >= s.k) break;
    above += high[hi_bin];
  }
  SAFEDEC_CHECK(hi_bin >= 0, "HDR: internal error in the top-k selection (k ", s.k, " of ", s.total, ")");
  // Pass 2: the low 16 bits inside that bin.
  std::vector<int64_t> low(1 << 16, 0);
  const uint32_t want = static_cast<uint32_t>(hi_bin);
  stream([&](const float* v, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t b = abs_bits(v[i]);
      if ((b >> 16) == want) ++low[b & 0xffffu];
    }
  });
  const int64_t rank = s.k - above;  // the rank-th largest inside the bin, 1-based
  int64_t cum = 0;
  int64_t lo_bin = (1 << 16) - 1;
  for (; lo_bin >= 0; --lo_bin) {
    cum += low[lo_bin];
    if (cum >= rank) break;
  }
  SAFEDEC_CHECK(lo_bin >= 0, "HDR: the harm vector changed between the selection passes");
  const uint32_t bits = (want << 16) | static_cast<uint32_t>(lo_bin);
  float t;
  std::memcpy(&t, &bits, sizeof t);
  s.threshold = t;
  s.kept = above + cum;  // every entry in higher bins, plus the ones of this bin at or above the threshold
  s.kept_nonzero = bits == 0 ? s.kept - low[0] : s.kept;  // threshold 0 keeps the zeros too
  return s;
}

void mask_below_threshold(torch::Tensor& t, double threshold) {
  SAFEDEC_CHECK(t.scalar_type() == torch::kFloat32 && t.device().is_cpu() && t.is_contiguous(),
                "mask_below_threshold needs a contiguous fp32 CPU tensor");
  const uint32_t tb = abs_bits(static_cast<float>(threshold));  // the threshold is an fp32 value of |tau|
  float* p = t.data_ptr<float>();
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i)
    if (abs_bits(p[i]) < tb) p[i] = 0.0f;
}

double prune_harm_vector_global(std::vector<torch::Tensor>& tau, double fraction) {
  check_topk_fraction(fraction, "HDR");
  torch::NoGradGuard no_grad;
  // Work on fp32 contiguous CPU tensors; other tensors get a converted copy, one at a time.
  auto as_f32 = [](const torch::Tensor& t) { return t.detach().to(torch::kCPU, torch::kFloat32).contiguous(); };
  const TopKSelection sel = select_global_topk(
      [&](const TauVisitor& visit) {
        for (const auto& t : tau) {
          torch::Tensor c = as_f32(t);
          visit(c.data_ptr<float>(), c.numel());
        }
      },
      fraction);
  for (auto& t : tau) {
    torch::Tensor c = as_f32(t);
    mask_below_threshold(c, sel.threshold);
    if (!c.is_same(t)) t.copy_(c);
  }
  return sel.threshold;
}

std::map<std::string, torch::Tensor> lora_weight_delta(const CausalLM& model, const LoraAdapter& adapter) {
  const ModelConfig& c = model.config();
  const int64_t hd = c.head_dim > 0 ? c.head_dim : c.hidden_size / c.n_heads;
  const int64_t q_rows = c.n_heads * hd, kv_rows = c.n_kv_heads * hd, inter = c.intermediate_size;
  std::map<std::string, torch::Tensor> shapes;
  for (const auto& [name, w] : model.named_parameters()) shapes[name] = w;
  torch::NoGradGuard no_grad;
  std::map<std::string, torch::Tensor> out;
  // Adds scale * B A into rows [row0, row0 + out) of tensor `name` (created as zeros on first use).
  auto add = [&](const std::string& name, int64_t row0, const LoraFactors& f) {
    auto it = shapes.find(name);
    SAFEDEC_CHECK(it != shapes.end(), "LoRA harm vector: the model has no tensor '", name, "'");
    auto& t = out[name];
    if (!t.defined()) t = torch::zeros(it->second.sizes(), torch::kFloat32);
    torch::Tensor d = torch::matmul(f.b.detach().to(torch::kCPU, torch::kFloat32),
                                    f.a.detach().to(torch::kCPU, torch::kFloat32)) *
                      f.scale;
    SAFEDEC_CHECK(d.size(1) == t.size(1) && row0 + d.size(0) <= t.size(0), "LoRA harm vector: factors of shape ",
                  d.sizes(), " do not fit rows ", row0, ".. of '", name, "' ", t.sizes());
    t.narrow(0, row0, d.size(0)).add_(d);
  };
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    const std::pair<LinearKind, std::pair<const char*, int64_t>> places[] = {
        {LinearKind::Q, {"wqkv", 0}},
        {LinearKind::K, {"wqkv", q_rows}},
        {LinearKind::V, {"wqkv", q_rows + kv_rows}},
        {LinearKind::O, {"wo", 0}},
        {LinearKind::Gate, {"w_gate_up", 0}},
        {LinearKind::Up, {"w_gate_up", inter}},
        {LinearKind::Down, {"w_down", 0}}};
    for (const auto& [kind, where] : places)
      if (const LoraFactors* f = adapter.find(l, kind)) add(p + where.first, where.second, *f);
  }
  if (const LoraFactors* f = adapter.find(-1, LinearKind::LmHead)) {
    SAFEDEC_CHECK(shapes.count("lm_head"), "LoRA harm vector: the adapter trains the LM head but ", c.name,
                  " ties it to the token embeddings, so its tau would edit the embeddings too; drop lm_head from "
                  "lora.targets");
    add("lm_head", 0, *f);
  }
  SAFEDEC_CHECK(!out.empty(), "LoRA harm vector: the adapter touches no weight of the model");
  return out;
}

}  // namespace safedec
