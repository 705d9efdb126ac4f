// Loading a CausalLM from a Hugging Face checkpoint directory: config.json (io/model_config) plus
// model.safetensors or a sharded set (io/safetensors). Tensors of any float dtype are converted to
// fp32 straight into the fused torch tensors (q|k|v rows, gate|up rows) and scanned for NaN/Inf.
// HF weights are already in rotate-half layout (no permutation). Gemma norms store w with the
// model computing x * (1 + w); we keep the effective multiplier 1 + w (see LayerWeights).
#include <sys/stat.h>

#include "core/error.h"
#include "io/model_config.h"
#include "io/safetensors.h"
#include "model/place_weights.h"
#include "model/causal_lm.h"

namespace safedec {

namespace {

class HfLoader {
 public:
  HfLoader(const SafetensorsCheckpoint& ckpt, const LoadOptions& options, std::string prefix)
      : ckpt_(ckpt), options_(options), prefix_(std::move(prefix)) {}

  bool has(const std::string& name) const { return ckpt_.find(prefix_ + name) != nullptr; }

  // The tensor, checked against the shape config.json implies; callers check before they allocate.
  const SafetensorsTensor& check(const std::string& short_name, const std::vector<int64_t>& shape) const {
    const std::string name = prefix_ + short_name;
    const SafetensorsTensor* t = ckpt_.find(name);
    SAFEDEC_CHECK(t, "Checkpoint '", ckpt_.path(), "' has no tensor '", name, "'.");
    // Integer and bool tensors would convert to floats without a word: not a weight (issue 15).
    const SafetensorsDtype d = t->dtype;
    SAFEDEC_CHECK(d == SafetensorsDtype::F32 || d == SafetensorsDtype::F16 || d == SafetensorsDtype::BF16 ||
                      d == SafetensorsDtype::F64 || d == SafetensorsDtype::F8_E4M3 || d == SafetensorsDtype::F8_E5M2,
                  "Tensor '", name, "' in '", ckpt_.path(), "' is stored as ", safetensors_dtype_name(d),
                  "; model weights must be floating point (F32, F16, BF16, F64, F8_E4M3 or F8_E5M2): the checkpoint "
                  "is corrupt.");
    SAFEDEC_CHECK(t->shape == shape, "Tensor '", name, "' in '", ckpt_.path(), "' has shape ",
                  torch::IntArrayRef(t->shape), " but config.json implies ", torch::IntArrayRef(shape),
                  "; the config (sizes, head counts, vocab_size) and the tensors disagree.");
    return *t;
  }

  void into(const std::string& short_name, torch::Tensor& dst, int64_t row0, const std::vector<int64_t>& shape) {
    const std::string name = prefix_ + short_name;
    const SafetensorsTensor* t = &check(short_name, shape);
    const int64_t row_len = dst.dim() == 1 ? 1 : dst.size(1);
    float* out = dst.data_ptr<float>() + row0 * row_len;
    SAFEDEC_ASSERT(row0 * row_len + t->numel() <= dst.numel(), "tensor ", name, " overflows its destination");
    safetensors_to_float32(*t, out);
    if (options_.check_finite) {
      auto view = torch::from_blob(out, {t->numel()}, torch::kFloat32);
      if (!torch::isfinite(view).all().item<bool>()) {
        const int64_t bad = torch::isfinite(view).logical_not().nonzero()[0][0].item<int64_t>();
        fail("Tensor '", name, "' in '", ckpt_.path(), "' contains NaN/Inf (first at element ", bad,
             "); the checkpoint is corrupt.");
      }
    }
  }

  torch::Tensor load(const std::string& name, std::vector<int64_t> shape) {
    check(name, shape);
    auto t = torch::empty(shape, torch::kFloat32);
    into(name, t, 0, shape);
    return t;
  }

 private:
  const SafetensorsCheckpoint& ckpt_;
  const LoadOptions& options_;
  std::string prefix_;
};

}  // namespace

std::shared_ptr<CausalLM> CausalLM::load_hf(const std::string& dir, const LoadOptions& options) {
  struct stat st {};
  SAFEDEC_CHECK(::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode), "CausalLM::load: '", dir,
                "' is neither a .gguf file nor a Hugging Face checkpoint directory.");
  ModelConfig cfg = model_config_from_hf_json(dir + "/config.json");
  const std::string arch = cfg.architecture;
  SAFEDEC_CHECK(arch == "llama" || arch == "qwen2" || arch == "gemma3", "Checkpoint '", dir, "' has architecture '",
                arch, "'; safedec's CausalLM supports llama, qwen2 and gemma3.");
  if (cfg.head_dim <= 0) cfg.head_dim = cfg.hidden_size / cfg.n_heads;
  if (options.max_layers > 0) {
    SAFEDEC_CHECK(options.max_layers <= cfg.n_layers, "LoadOptions.max_layers = ", options.max_layers,
                  " exceeds the ", cfg.n_layers, " layers of '", dir, "'.");
    cfg.n_layers = options.max_layers;
  }
  auto ckpt = SafetensorsCheckpoint::open(dir);
  std::string prefix = "model.";
  for (const char* p : {"model.", "language_model.model.", "model.language_model."})
    if (ckpt->find(std::string(p) + "embed_tokens.weight")) {
      prefix = p;
      break;
    }
  torch::NoGradGuard no_grad;
  c10::InferenceMode not_inference(false);
  HfLoader ld(*ckpt, options, prefix);
  const int64_t d = cfg.hidden_size, hd = cfg.head_dim, H = cfg.n_heads, Hkv = cfg.n_kv_heads;
  const int64_t I = cfg.intermediate_size, V = cfg.vocab_size;
  const int64_t qkv = (H + 2 * Hkv) * hd;
  const bool gemma = arch == "gemma3";
  auto norm = [&](const std::string& name, int64_t n) {
    auto t = ld.load(name, {n});
    if (gemma) t.add_(1.0);  // Gemma RMSNorm multiplies by (1 + w)
    return t;
  };
  ModelWeights w;
  w.embed = ld.load("embed_tokens.weight", {V, d});
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    auto L = std::make_shared<LayerWeights>();
    L->attn_norm = norm(p + "input_layernorm.weight", d);
    ld.check(p + "self_attn.q_proj.weight", {H * hd, d});
    ld.check(p + "self_attn.k_proj.weight", {Hkv * hd, d});
    ld.check(p + "self_attn.v_proj.weight", {Hkv * hd, d});
    L->wqkv = torch::empty({qkv, d}, torch::kFloat32);
    ld.into(p + "self_attn.q_proj.weight", L->wqkv, 0, {H * hd, d});
    ld.into(p + "self_attn.k_proj.weight", L->wqkv, H * hd, {Hkv * hd, d});
    ld.into(p + "self_attn.v_proj.weight", L->wqkv, (H + Hkv) * hd, {Hkv * hd, d});
    if (ld.has(p + "self_attn.q_proj.bias")) {
      ld.check(p + "self_attn.q_proj.bias", {H * hd});
      ld.check(p + "self_attn.k_proj.bias", {Hkv * hd});
      ld.check(p + "self_attn.v_proj.bias", {Hkv * hd});
      L->bqkv = torch::empty({qkv}, torch::kFloat32);
      ld.into(p + "self_attn.q_proj.bias", L->bqkv, 0, {H * hd});
      ld.into(p + "self_attn.k_proj.bias", L->bqkv, H * hd, {Hkv * hd});
      ld.into(p + "self_attn.v_proj.bias", L->bqkv, (H + Hkv) * hd, {Hkv * hd});
    }
    L->wo = ld.load(p + "self_attn.o_proj.weight", {d, H * hd});
    ld.check(p + "mlp.gate_proj.weight", {I, d});
    ld.check(p + "mlp.up_proj.weight", {I, d});
    L->w_gate_up = torch::empty({2 * I, d}, torch::kFloat32);
    ld.into(p + "mlp.gate_proj.weight", L->w_gate_up, 0, {I, d});
    ld.into(p + "mlp.up_proj.weight", L->w_gate_up, I, {I, d});
    L->w_down = ld.load(p + "mlp.down_proj.weight", {d, I});
    if (gemma) {
      L->ffn_norm = norm(p + "pre_feedforward_layernorm.weight", d);
      L->post_attn_norm = norm(p + "post_attention_layernorm.weight", d);
      L->post_ffn_norm = norm(p + "post_feedforward_layernorm.weight", d);
      L->q_norm = norm(p + "self_attn.q_norm.weight", hd);
      L->k_norm = norm(p + "self_attn.k_norm.weight", hd);
    } else {
      L->ffn_norm = norm(p + "post_attention_layernorm.weight", d);
    }
    w.layers.push_back(L);
  }
  w.final_norm = norm("norm.weight", d);
  const SafetensorsTensor* head = ckpt->find("lm_head.weight");
  if (head && !cfg.tie_word_embeddings) {
    HfLoader top(*ckpt, options, "");
    w.lm_head = top.load("lm_head.weight", {V, d});
  } else {
    SAFEDEC_CHECK(head || cfg.tie_word_embeddings, "Checkpoint '", dir,
                  "' has no lm_head.weight and config.json does not tie the embeddings.");
    w.lm_head = w.embed;
    cfg.tie_word_embeddings = true;
  }
  place_weights(w, options);
  return std::make_shared<CausalLM>(cfg, w);
}

}  // namespace safedec
