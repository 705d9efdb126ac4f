// Loading a CausalLM from a GGUF file: every tensor is dequantised to fp32 straight into the fused
// torch tensors the forward pass uses (no second copy), scanned for NaN/Inf, and llama-arch Q/K rows
// are un-permuted from llama.cpp's interleaved-rope order back to HF's rotate-half order:
//   convert_hf_to_gguf stores W_gguf[h, i, j] = W_hf[h, j, i] for W viewed as [heads, 2, hd/2, d]
//   -> [heads, hd/2, 2, d]; we invert it with a view + transpose.
// Gemma norms: llama.cpp already stores 1 + w (ggml's plain RMSNorm), the effective multiplier we keep.
#include <algorithm>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "io/gguf.h"
#include "model/place_weights.h"
#include "model/causal_lm.h"
#include "model/quant_linear.h"

namespace safedec {

namespace {

class GgufLoader {
 public:
  GgufLoader(const GgufFile& file, const LoadOptions& options) : file_(file), options_(options) {}

  // The tensor `name`, checked against the shape the metadata implies. Nothing is allocated here:
  // every caller checks before it allocates, so a size in the metadata that disagrees with the
  // tensors is refused before any memory is taken.
  const GgufTensorInfo& check(const std::string& name, const std::vector<int64_t>& shape) const {
    const GgufTensorInfo* info = file_.find_tensor(name);
    SAFEDEC_CHECK(info, "GGUF file '", file_.path(), "' has no tensor '", name, "' (needed by the ",
                  file_.architecture(), " architecture).");
    auto ts = info->torch_shape();
    // GGUF may drop trailing unit dims; compare element counts and row length.
    int64_t n = 1;
    bool fits = !shape.empty();
    for (auto s : shape) {
      fits = fits && s >= 0 && (s == 0 || n <= std::numeric_limits<int64_t>::max() / s);
      if (fits) n *= s;
    }
    SAFEDEC_CHECK(fits && !ts.empty() && info->n_elements() == n && ts.back() == shape.back(), "GGUF tensor '", name,
                  "' in '", file_.path(), "' has shape ", torch::IntArrayRef(ts), " but the model metadata implies ",
                  torch::IntArrayRef(shape), "; the metadata (sizes, head counts, vocabulary) and the tensors disagree.");
    return *info;
  }

  // Dequantises tensor `name` (whose torch shape must be `shape`) into dst rows [row0, row0 + rows).
  void into(const std::string& name, torch::Tensor& dst, int64_t row0, const std::vector<int64_t>& shape) {
    const GgufTensorInfo* info = &check(name, shape);
    const int64_t n = info->n_elements();
    SAFEDEC_ASSERT(dst.is_contiguous() && dst.scalar_type() == torch::kFloat32);
    const int64_t row_len = dst.dim() == 1 ? 1 : dst.size(1);
    float* out = dst.data_ptr<float>() + row0 * row_len;
    SAFEDEC_ASSERT(row0 * row_len + n <= dst.numel(), "tensor ", name, " overflows its destination");
    file_.dequantize(*info, out);
    if (options_.check_finite) {
      auto view = torch::from_blob(out, {n}, torch::kFloat32);
      if (!torch::isfinite(view).all().item<bool>()) {
        const int64_t bad = torch::isfinite(view).logical_not().nonzero()[0][0].item<int64_t>();
        fail("GGUF tensor '", name, "' in '", file_.path(), "' contains NaN/Inf (first at element ", bad,
             "); the file is corrupt.");
      }
    }
  }

  torch::Tensor load(const std::string& name, std::vector<int64_t> shape) {
    check(name, shape);
    auto t = torch::empty(shape, torch::kFloat32);
    into(name, t, 0, shape);
    return t;
  }

  bool has(const std::string& name) const { return file_.find_tensor(name) != nullptr; }

  // options.quantized: the tensors of one linear (rows stacked in order) as a QuantWeight, or null
  // when some of them has no kernel (that linear then loads as fp32). heads[i] > 0 un-permutes
  // llama Q/K rows (see unpermute_rows).
  std::shared_ptr<const QuantWeight> quantized(const std::vector<std::string>& names, int64_t cols,
                                               const std::vector<int64_t>& heads = {}, int64_t head_dim = 0) {
    if (!options_.quantized()) return nullptr;
    for (const auto& n : names) {
      const GgufTensorInfo* t = file_.find_tensor(n);
      SAFEDEC_CHECK(t, "GGUF file '", file_.path(), "' has no tensor '", n, "' (needed by the ",
                    file_.architecture(), " architecture).");
      if (!quant_weight_supported(*t)) return nullptr;
    }
    auto w = std::make_shared<QuantWeight>(cols);
    for (size_t i = 0; i < names.size(); ++i)
      w->append(file_.tensor(names[i]), file_.path(), i < heads.size() ? heads[i] : 0, head_dim);
    return w;
  }

 private:
  const GgufFile& file_;
  const LoadOptions& options_;
};

// Inverts llama.cpp's Q/K row permutation: rows viewed [heads, hd/2, 2] -> [heads, 2, hd/2].
void unpermute_rows(torch::Tensor& w, int64_t row0, int64_t heads, int64_t hd) {
  auto block = w.narrow(0, row0, heads * hd);
  auto fixed = block.view({heads, hd / 2, 2, -1}).transpose(1, 2).reshape({heads * hd, -1}).clone();
  block.copy_(fixed);
}

}  // namespace

std::shared_ptr<CausalLM> CausalLM::load_gguf(const std::string& path, const LoadOptions& options) {
  SAFEDEC_CHECK(!options.quantized() || (options.device == torch::kCPU && options.dtype == torch::kFloat32),
                "Quantised weights (weights: quantized) run on the CPU in fp32; '", path, "' was asked for ",
                options.device.str(), " ", c10::toString(options.dtype), ".");
  auto file = GgufFile::open(path);
  ModelConfig cfg = model_config_from_gguf(*file);
  const std::string arch = cfg.architecture;
  SAFEDEC_CHECK(arch == "llama" || arch == "qwen2" || arch == "gemma3", "GGUF file '", path, "' has architecture '",
                arch, "'; safedec's CausalLM supports llama, qwen2 and gemma3.");
  if (cfg.head_dim <= 0) cfg.head_dim = cfg.hidden_size / cfg.n_heads;
  check_gguf_tensor_shapes(cfg, *file);  // every metadata size against the tensors, before any allocation
  if (options.max_layers > 0) {
    SAFEDEC_CHECK(options.max_layers <= cfg.n_layers, "LoadOptions.max_layers = ", options.max_layers,
                  " exceeds the ", cfg.n_layers, " layers of '", path, "'.");
    cfg.n_layers = options.max_layers;
  }
  torch::NoGradGuard no_grad;
  c10::InferenceMode not_inference(false);  // weights must be usable by autograd later
  GgufLoader ld(*file, options);
  const int64_t d = cfg.hidden_size, hd = cfg.head_dim, H = cfg.n_heads, Hkv = cfg.n_kv_heads;
  const int64_t I = cfg.intermediate_size, V = cfg.vocab_size;
  const int64_t qkv = (H + 2 * Hkv) * hd;
  const bool permuted = arch == "llama";  // convert_hf_to_gguf permutes Q/K only for llama
  ModelWeights w;
  w.embed = ld.load("token_embd.weight", {V, d});
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    // Every matrix of the layer against the metadata, before anything of it is allocated (the
    // quantized path keeps the blocks as they are and would not notice a wrong row count).
    for (const auto& [name, shape] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
             {"attn_q.weight", {H * hd, d}}, {"attn_k.weight", {Hkv * hd, d}}, {"attn_v.weight", {Hkv * hd, d}},
             {"attn_output.weight", {d, H * hd}}, {"ffn_gate.weight", {I, d}}, {"ffn_up.weight", {I, d}},
             {"ffn_down.weight", {d, I}}})
      ld.check(p + name, shape);
    auto L = std::make_shared<LayerWeights>();
    L->attn_norm = ld.load(p + "attn_norm.weight", {d});
    L->q_wqkv = ld.quantized({p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"}, d,
                             permuted ? std::vector<int64_t>{H, Hkv, 0} : std::vector<int64_t>{}, hd);
    if (!L->q_wqkv) {
      L->wqkv = torch::empty({qkv, d}, torch::kFloat32);
      ld.into(p + "attn_q.weight", L->wqkv, 0, {H * hd, d});
      ld.into(p + "attn_k.weight", L->wqkv, H * hd, {Hkv * hd, d});
      ld.into(p + "attn_v.weight", L->wqkv, (H + Hkv) * hd, {Hkv * hd, d});
      if (permuted) {
        unpermute_rows(L->wqkv, 0, H, hd);
        unpermute_rows(L->wqkv, H * hd, Hkv, hd);
      }
    }
    if (ld.has(p + "attn_q.bias")) {
      ld.check(p + "attn_q.bias", {H * hd});
      ld.check(p + "attn_k.bias", {Hkv * hd});
      ld.check(p + "attn_v.bias", {Hkv * hd});
      L->bqkv = torch::empty({qkv}, torch::kFloat32);
      ld.into(p + "attn_q.bias", L->bqkv, 0, {H * hd});
      ld.into(p + "attn_k.bias", L->bqkv, H * hd, {Hkv * hd});
      ld.into(p + "attn_v.bias", L->bqkv, (H + Hkv) * hd, {Hkv * hd});
      if (permuted) {
        auto b2 = L->bqkv.view({qkv, 1});
        unpermute_rows(b2, 0, H, hd);
        unpermute_rows(b2, H * hd, Hkv, hd);
      }
    }
    L->q_wo = ld.quantized({p + "attn_output.weight"}, H * hd);
    if (!L->q_wo) L->wo = ld.load(p + "attn_output.weight", {d, H * hd});
    L->ffn_norm = ld.load(p + "ffn_norm.weight", {d});
    L->q_gate_up = ld.quantized({p + "ffn_gate.weight", p + "ffn_up.weight"}, d);
    if (!L->q_gate_up) {
      L->w_gate_up = torch::empty({2 * I, d}, torch::kFloat32);
      ld.into(p + "ffn_gate.weight", L->w_gate_up, 0, {I, d});
      ld.into(p + "ffn_up.weight", L->w_gate_up, I, {I, d});
    }
    L->q_down = ld.quantized({p + "ffn_down.weight"}, I);
    if (!L->q_down) L->w_down = ld.load(p + "ffn_down.weight", {d, I});
    if (arch == "gemma3") {
      L->q_norm = ld.load(p + "attn_q_norm.weight", {hd});
      L->k_norm = ld.load(p + "attn_k_norm.weight", {hd});
      L->post_attn_norm = ld.load(p + "post_attention_norm.weight", {d});
      L->post_ffn_norm = ld.load(p + "post_ffw_norm.weight", {d});
    }
    w.layers.push_back(L);
  }
  w.final_norm = ld.load("output_norm.weight", {d});
  if (ld.has("rope_freqs.weight")) w.rope_freqs = ld.load("rope_freqs.weight", {hd / 2});
  if (ld.has("output.weight")) {
    ld.check("output.weight", {V, d});
    w.q_lm_head = ld.quantized({"output.weight"}, d);
    if (!w.q_lm_head) w.lm_head = ld.load("output.weight", {V, d});
    cfg.tie_word_embeddings = false;
  } else {
    w.lm_head = w.embed;  // tied: one tensor, not two copies
    w.q_lm_head = ld.quantized({"token_embd.weight"}, d);  // (the fp32 table stays for the lookup)
    cfg.tie_word_embeddings = true;
  }
  place_weights(w, options);
  return std::make_shared<CausalLM>(cfg, w);
}

std::shared_ptr<CausalLM> CausalLM::load(const std::string& path, const LoadOptions& options) {
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".gguf") == 0) return load_gguf(path, options);
  SAFEDEC_CHECK(!options.quantized(), "weights: quantized needs a GGUF file (block-quantised tensors), but '", path,
                "' is a Hugging Face checkpoint; use weights: fp32.");
  return load_hf(path, options);
}

}  // namespace safedec
