// ModelConfig from GGUF metadata (llama.cpp `<arch>.*` keys) or a Hugging Face config.json.
//
// Architecture mapping: GGUF "llama" / HF LlamaForCausalLM, MistralForCausalLM -> "llama";
// "qwen2" / Qwen2ForCausalLM -> "qwen2" (q/k/v biases); "gemma3" / Gemma3ForCausalLM (and the
// text part of Gemma3ForConditionalGeneration) -> "gemma3". Gemma 3 facts that GGUF does not
// store are filled as llama.cpp does: sliding pattern 6 (every 6th layer global), local RoPE
// theta 10000, query scale 1/sqrt(head_dim) (27B: 1/sqrt(hidden/heads)), embeddings scaled by
// sqrt(hidden), GeGLU with tanh-approximated GELU.
#include "io/model_config.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "io/gguf.h"

namespace safedec {
namespace {

using nlohmann::json;

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

const std::vector<std::string> kRopeTypes = {"none", "linear", "llama3", "yarn"};
const std::vector<std::string> kActivations = {"silu", "gelu_pytorch_tanh", "gelu"};

// ---- GGUF ----------------------------------------------------------------------------------

ModelConfig from_gguf(const GgufFile& f) {
  ModelConfig c;
  const std::string arch = f.architecture();
  const std::string& src = f.path();
  if (arch != "llama" && arch != "qwen2" && arch != "gemma3")
    fail("GGUF file '", src, "' has architecture '", arch, "', which safedec does not support (supported: ",
         join(supported_architectures()), ").");
  c.architecture = arch;
  c.name = f.get_string("general.name", "");
  const std::string p = arch + ".";
  auto required = [&](const std::string& key) -> int64_t {
    if (!f.has(p + key)) fail("GGUF file '", src, "' lacks the required metadata key '", p + key, "'.");
    return f.get_int(p + key, 0);
  };
  c.n_layers = required("block_count");
  c.hidden_size = required("embedding_length");
  c.intermediate_size = required("feed_forward_length");
  c.n_heads = required("attention.head_count");
  c.n_kv_heads = f.get_int(p + "attention.head_count_kv", c.n_heads);
  c.head_dim = f.get_int(p + "attention.key_length", c.n_heads > 0 ? c.hidden_size / c.n_heads : 0);
  c.context_length = f.get_int(p + "context_length", 0);
  c.rms_norm_eps = f.get_float(p + "attention.layer_norm_rms_epsilon", arch == "gemma3" ? 1e-6 : 1e-5);
  c.rope_theta = f.get_float(p + "rope.freq_base", arch == "gemma3" ? 1e6 : 10000.0);

  // Vocabulary: explicit key, else the token list, else the embedding rows.
  if (f.has(p + "vocab_size")) {
    c.vocab_size = f.get_int(p + "vocab_size", 0);
  } else if (f.has("tokenizer.ggml.tokens")) {
    c.vocab_size = static_cast<int64_t>(f.get("tokenizer.ggml.tokens").as_array().size());
  } else if (const GgufTensorInfo* emb = f.find_tensor("token_embd.weight"); emb && emb->ne.size() == 2) {
    c.vocab_size = emb->ne[1];
  }

  // RoPE scaling (llama.cpp keys); llama3-style factors come as a tensor instead.
  const std::string rs_type = f.get_string(p + "rope.scaling.type", "none");
  const double rs_factor = f.get_float(p + "rope.scaling.factor", 0.0);
  if (rs_type == "linear" || rs_type == "yarn") {
    c.rope_scaling.type = rs_type;
    c.rope_scaling.factor = rs_factor > 0 ? rs_factor : 1.0;
    c.rope_scaling.original_max_position =
        f.get_int(p + "rope.scaling.original_context_length", c.rope_scaling.original_max_position);
  } else if (rs_type != "none") {
    fail("GGUF file '", src, "' uses RoPE scaling type '", rs_type, "' (key '", p,
         "rope.scaling.type'), which safedec does not support (supported: none, linear, yarn).");
  } else if (rs_factor > 0 && rs_factor != 1.0) {
    // Older converters wrote only a factor: llama.cpp treats that as linear scaling.
    c.rope_scaling.type = "linear";
    c.rope_scaling.factor = rs_factor;
  }
  c.rope_freqs_tensor = f.find_tensor("rope_freqs.weight") != nullptr;
  // llama.cpp llama_model_rope_type: LLM_ARCH_LLAMA -> NORM (q/k permuted by convert_hf_to_gguf),
  // LLM_ARCH_QWEN2 / LLM_ARCH_GEMMA3 -> NEOX.
  c.rope_interleaved = arch == "llama";

  c.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
  c.attention_bias = arch == "qwen2" || f.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.sliding_window = f.get_int(p + "attention.sliding_window", 0);
  c.final_logit_softcapping = f.get_float(p + "final_logit_softcapping", 0.0);
  c.attn_logit_softcapping = f.get_float(p + "attn_logit_softcapping", 0.0);

  if (arch == "gemma3") {
    c.hidden_act = "gelu_pytorch_tanh";
    c.embedding_scale = true;
    c.norm_weight_offset = 0.0;  // convert_hf_to_gguf already added 1 to every *norm.weight
    c.sliding_window_pattern = 6;  // llama.cpp LLM_ARCH_GEMMA3: hparams.set_swa_pattern(6)
    c.rope_local_theta = 10000.0;  // llama.cpp: rope_freq_base_train_swa = 10000 for gemma3
    // llama.cpp: 27B (62 layers) scales queries by 1/sqrt(hidden/heads), others 1/sqrt(head_dim).
    c.query_pre_attn_scalar = c.n_layers == 62 && c.n_heads > 0 ? static_cast<double>(c.hidden_size / c.n_heads)
                                                                 : static_cast<double>(c.head_dim);
  } else {
    // Mistral-style GGUFs (arch llama) may carry a window for every layer.
    c.sliding_window_pattern = 0;
  }
  c.validate("GGUF file '" + src + "'");
  return c;
}

// ---- Hugging Face config.json ----------------------------------------------------------------

// Typed access to config.json keys with errors naming the key and the source.
class JsonConfig {
 public:
  JsonConfig(const json& j, const std::string& source) : j_(j), source_(source) {}
  bool has(const std::string& key) const { return j_.contains(key) && !j_.at(key).is_null(); }
  int64_t get_int(const std::string& key, int64_t fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_.at(key);
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()) return static_cast<int64_t>(v.get<double>());
    bad(key, v, "an integer");
  }
  int64_t require_int(const std::string& key) const {
    if (!has(key)) fail(source_, " lacks the required key '", key, "'.");
    return get_int(key, 0);
  }
  double get_float(const std::string& key, double fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_.at(key);
    if (v.is_number()) return v.get<double>();
    bad(key, v, "a number");
  }
  bool get_bool(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_.at(key);
    if (v.is_boolean()) return v.get<bool>();
    bad(key, v, "true or false");
  }
  std::string get_string(const std::string& key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_.at(key);
    if (v.is_string()) return v.get<std::string>();
    bad(key, v, "a string");
  }
  const json* object(const std::string& key) const {
    if (!has(key)) return nullptr;
    const json& v = j_.at(key);
    if (!v.is_object()) bad(key, v, "an object");
    return &v;
  }
  const std::string& source() const { return source_; }

 private:
  [[noreturn]] void bad(const std::string& key, const json& v, const char* want) const {
    std::string shown = v.dump();
    if (shown.size() > 60) shown = shown.substr(0, 57) + "...";
    fail(source_, ": key '", key, "' is ", shown, " but must be ", want, ".");
  }
  const json& j_;
  std::string source_;
};

// rope_scaling (transformers < 5) or rope_parameters (transformers 5) of one attention kind.
void parse_rope(const JsonConfig& cfg, const json* rope, const std::string& key, ModelConfig& c, double* theta) {
  if (!rope) return;
  JsonConfig r(*rope, cfg.source() + " '" + key + "'");
  if (theta && r.has("rope_theta")) *theta = r.get_float("rope_theta", *theta);
  std::string type = r.get_string("rope_type", r.get_string("type", "default"));
  if (type == "default" || type == "none") return;
  if (type != "linear" && type != "llama3" && type != "yarn")
    fail(cfg.source(), ": RoPE scaling type '", type, "' in '", key,
         "' is not supported (supported: default, linear, llama3, yarn).");
  c.rope_scaling.type = type;
  c.rope_scaling.factor = r.get_float("factor", 1.0);
  c.rope_scaling.low_freq_factor = r.get_float("low_freq_factor", c.rope_scaling.low_freq_factor);
  c.rope_scaling.high_freq_factor = r.get_float("high_freq_factor", c.rope_scaling.high_freq_factor);
  c.rope_scaling.original_max_position =
      r.get_int("original_max_position_embeddings", c.rope_scaling.original_max_position);
}

ModelConfig from_hf(const json& root, const std::string& source) {
  if (!root.is_object()) fail(source, " is not a JSON object.");
  // Multimodal Gemma 3 wraps the language model's config in text_config.
  const json* jp = &root;
  std::string hf_arch;
  if (root.contains("architectures") && root["architectures"].is_array() && !root["architectures"].empty() &&
      root["architectures"][0].is_string())
    hf_arch = root["architectures"][0].get<std::string>();
  const std::string model_type = root.contains("model_type") && root["model_type"].is_string()
                                     ? root["model_type"].get<std::string>()
                                     : "";
  if ((hf_arch == "Gemma3ForConditionalGeneration" || model_type == "gemma3") && root.contains("text_config") &&
      root["text_config"].is_object()) {
    jp = &root["text_config"];
    hf_arch = "Gemma3ForCausalLM";
  }
  ModelConfig c;
  if (hf_arch == "LlamaForCausalLM" || hf_arch == "MistralForCausalLM" ||
      (hf_arch.empty() && (model_type == "llama" || model_type == "mistral")))
    c.architecture = "llama";
  else if (hf_arch == "Qwen2ForCausalLM" || (hf_arch.empty() && model_type == "qwen2"))
    c.architecture = "qwen2";
  else if (hf_arch == "Gemma3ForCausalLM" || (hf_arch.empty() && model_type == "gemma3_text"))
    c.architecture = "gemma3";
  else
    fail(source, " describes architecture '", hf_arch.empty() ? model_type : hf_arch,
         "', which safedec does not support (supported: LlamaForCausalLM, MistralForCausalLM, "
         "Qwen2ForCausalLM, Gemma3ForCausalLM, Gemma3ForConditionalGeneration (text part)).");
  const bool gemma = c.architecture == "gemma3";
  const bool mistral = hf_arch == "MistralForCausalLM" || model_type == "mistral";

  JsonConfig j(*jp, source);
  c.name = root.contains("_name_or_path") && root["_name_or_path"].is_string()
               ? root["_name_or_path"].get<std::string>()
               : "";
  c.n_layers = j.require_int("num_hidden_layers");
  c.hidden_size = j.require_int("hidden_size");
  c.intermediate_size = j.require_int("intermediate_size");
  c.n_heads = j.require_int("num_attention_heads");
  c.n_kv_heads = j.get_int("num_key_value_heads", c.n_heads);
  c.head_dim = j.get_int("head_dim", gemma ? 256 : (c.n_heads > 0 ? c.hidden_size / c.n_heads : 0));
  c.vocab_size = j.require_int("vocab_size");
  c.context_length = j.get_int("max_position_embeddings", 0);
  c.rms_norm_eps = j.get_float("rms_norm_eps", 1e-6);
  c.tie_word_embeddings = j.get_bool("tie_word_embeddings", gemma);
  c.attention_bias = c.architecture == "qwen2" ? true : j.get_bool("attention_bias", false);
  c.hidden_act = j.get_string(gemma ? "hidden_activation" : "hidden_act", gemma ? "gelu_pytorch_tanh" : "silu");
  if (gemma && j.has("hidden_act") && !j.has("hidden_activation")) c.hidden_act = j.get_string("hidden_act", c.hidden_act);

  // RoPE: transformers < 5 wrote rope_theta (+ rope_local_base_freq) and rope_scaling;
  // transformers 5 writes rope_parameters (per attention kind for gemma3).
  c.rope_theta = j.get_float("rope_theta", gemma ? 1e6 : 10000.0);
  c.rope_local_theta = j.get_float("rope_local_base_freq", 10000.0);
  parse_rope(j, j.object("rope_scaling"), "rope_scaling", c, nullptr);
  if (const json* rp = j.object("rope_parameters")) {
    if (gemma && (rp->contains("full_attention") || rp->contains("sliding_attention"))) {
      JsonConfig r(*rp, source + " 'rope_parameters'");
      parse_rope(j, r.object("full_attention"), "rope_parameters.full_attention", c, &c.rope_theta);
      // The sliding layers never use scaling in Gemma 3; only their theta matters.
      ModelConfig ignored;
      parse_rope(j, r.object("sliding_attention"), "rope_parameters.sliding_attention", ignored, &c.rope_local_theta);
    } else {
      parse_rope(j, rp, "rope_parameters", c, &c.rope_theta);
    }
  }

  if (gemma) {
    c.embedding_scale = true;
    c.norm_weight_offset = 1.0;  // Gemma3RMSNorm: x * (1 + w), w stored as trained
    c.query_pre_attn_scalar = j.get_float("query_pre_attn_scalar", static_cast<double>(c.head_dim));
    c.sliding_window = j.get_int("sliding_window", 4096);
    c.sliding_window_pattern = j.get_int("sliding_window_pattern", 6);
    c.final_logit_softcapping = j.get_float("final_logit_softcapping", 0.0);
    c.attn_logit_softcapping = j.get_float("attn_logit_softcapping", 0.0);
  } else if (mistral) {
    c.sliding_window = j.get_int("sliding_window", 0);  // null in v0.2+, 4096 in v0.1
  } else if (c.architecture == "qwen2" && j.get_bool("use_sliding_window", false)) {
    fail(source, " enables use_sliding_window for Qwen2 (a window on only some layers), which safedec does not "
         "support; set it to false.");
  }
  if (j.has("layer_types")) {
    const json& lt = (*jp)["layer_types"];
    if (!lt.is_array()) fail(source, ": key 'layer_types' must be a list of \"full_attention\"/\"sliding_attention\".");
    for (const auto& x : lt) {
      const std::string s = x.is_string() ? x.get<std::string>() : "";
      if (s != "full_attention" && s != "sliding_attention")
        fail(source, ": key 'layer_types' holds ", x.dump(), "; expected \"full_attention\" or \"sliding_attention\".");
      c.sliding_layers.push_back(s == "sliding_attention");
    }
    if (c.architecture != "gemma3") {
      bool any = false;
      for (bool b : c.sliding_layers) any = any || b;
      if (!any) c.sliding_layers.clear();  // all global: the common case for llama/qwen2
    }
  }
  c.validate(source);
  return c;
}

}  // namespace

const std::vector<std::string>& supported_architectures() {
  static const std::vector<std::string> archs = {"llama", "qwen2", "gemma3"};
  return archs;
}

bool ModelConfig::layer_is_sliding(int64_t layer) const {
  if (!sliding_layers.empty())
    return layer >= 0 && layer < static_cast<int64_t>(sliding_layers.size()) && sliding_layers[layer];
  if (sliding_window <= 0) return false;
  if (sliding_window_pattern > 0) return (layer + 1) % sliding_window_pattern != 0;
  return true;
}

double ModelConfig::layer_rope_theta(int64_t layer) const {
  return architecture == "gemma3" && layer_is_sliding(layer) ? rope_local_theta : rope_theta;
}

void ModelConfig::validate(const std::string& source) const {
  auto in = [](const std::string& v, const std::vector<std::string>& set) {
    for (const auto& s : set)
      if (s == v) return true;
    return false;
  };
  SAFEDEC_CHECK(in(architecture, supported_architectures()), source, ": architecture '", architecture,
                "' is not supported (supported: ", join(supported_architectures()), ").");
  SAFEDEC_CHECK(n_layers > 0, source, ": the number of layers must be positive, got ", n_layers, ".");
  SAFEDEC_CHECK(hidden_size > 0, source, ": the hidden size must be positive, got ", hidden_size, ".");
  SAFEDEC_CHECK(intermediate_size > 0, source, ": the feed-forward size must be positive, got ", intermediate_size, ".");
  SAFEDEC_CHECK(n_heads > 0, source, ": the number of attention heads must be positive, got ", n_heads, ".");
  SAFEDEC_CHECK(n_kv_heads > 0 && n_kv_heads <= n_heads && n_heads % n_kv_heads == 0, source,
                ": the number of key/value heads (", n_kv_heads, ") must divide the number of attention heads (",
                n_heads, ").");
  SAFEDEC_CHECK(head_dim > 0 && head_dim % 2 == 0, source, ": the head dimension must be a positive even number "
                "(RoPE rotates pairs), got ", head_dim, ".");
  SAFEDEC_CHECK(vocab_size > 0, source, ": the vocabulary size must be positive, got ", vocab_size, ".");
  SAFEDEC_CHECK(context_length >= 0, source, ": the context length must not be negative, got ", context_length, ".");
  SAFEDEC_CHECK(rms_norm_eps > 0 && std::isfinite(rms_norm_eps), source,
                ": the RMSNorm epsilon must be a positive number, got ", rms_norm_eps, ".");
  SAFEDEC_CHECK(rope_theta > 0 && std::isfinite(rope_theta), source, ": the RoPE theta must be positive, got ",
                rope_theta, ".");
  SAFEDEC_CHECK(rope_local_theta > 0, source, ": the local RoPE theta must be positive, got ", rope_local_theta, ".");
  SAFEDEC_CHECK(in(rope_scaling.type, kRopeTypes), source, ": RoPE scaling type '", rope_scaling.type,
                "' is not one of ", join(kRopeTypes), ".");
  SAFEDEC_CHECK(rope_scaling.factor > 0, source, ": the RoPE scaling factor must be positive, got ",
                rope_scaling.factor, ".");
  if (rope_scaling.type == "llama3")
    SAFEDEC_CHECK(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor && rope_scaling.original_max_position > 0,
                  source, ": llama3 RoPE scaling needs high_freq_factor > low_freq_factor and a positive "
                  "original_max_position_embeddings.");
  SAFEDEC_CHECK(in(hidden_act, kActivations), source, ": activation '", hidden_act, "' is not one of ",
                join(kActivations), ".");
  SAFEDEC_CHECK(sliding_window >= 0 && sliding_window_pattern >= 0, source,
                ": sliding_window and sliding_window_pattern must not be negative.");
  SAFEDEC_CHECK(sliding_layers.empty() || static_cast<int64_t>(sliding_layers.size()) == n_layers, source,
                ": layer_types lists ", sliding_layers.size(), " layers but the model has ", n_layers, ".");
  SAFEDEC_CHECK(query_pre_attn_scalar >= 0 && final_logit_softcapping >= 0 && attn_logit_softcapping >= 0, source,
                ": query_pre_attn_scalar and the soft-capping values must not be negative.");
  // Sane upper limits, far above any released model, so that a corrupt or hostile size is refused
  // before anything is sized from it (the loaders then check every size against the tensors).
  auto at_most = [&](int64_t v, int64_t cap, const char* what) {
    SAFEDEC_CHECK(v <= cap, source, ": ", what, " is ", v, ", above safedec's limit of ", cap,
                  "; the metadata is corrupt (no released model comes close).");
  };
  at_most(n_layers, kMaxLayers, "the number of layers");
  at_most(hidden_size, kMaxHiddenSize, "the hidden size");
  at_most(intermediate_size, kMaxIntermediateSize, "the feed-forward size");
  at_most(n_heads, kMaxHeads, "the number of attention heads");
  at_most(head_dim, kMaxHeadDim, "the head dimension");
  at_most(vocab_size, kMaxVocabSize, "the vocabulary size");
  at_most(context_length, kMaxContextLength, "the context length");
  at_most(sliding_window, kMaxContextLength, "the sliding window");
}

ModelConfig model_config_from_gguf(const GgufFile& file) { return from_gguf(file); }

void check_gguf_tensor_shapes(const ModelConfig& c, const GgufFile& f) {
  const std::string src = "GGUF file '" + f.path() + "'";
  c.validate(src);  // bounded sizes first: the products below cannot overflow
  const int64_t d = c.hidden_size, H = c.n_heads, Hkv = c.n_kv_heads, I = c.intermediate_size, V = c.vocab_size;
  const int64_t hd = c.head_dim > 0 ? c.head_dim : d / H;
  auto expect = [&](const std::string& name, std::vector<int64_t> shape, bool required) {
    const GgufTensorInfo* t = f.find_tensor(name);
    if (!t) {
      if (required) fail(src, " has no tensor '", name, "' (needed by the ", c.architecture, " architecture).");
      return;
    }
    const std::vector<int64_t> ts = t->torch_shape();
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    auto show = [](const std::vector<int64_t>& v) {
      std::string s = "[";
      for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
      return s + "]";
    };
    // GGUF may drop trailing unit dims; compare element counts and row length (as the loader does).
    if (ts.empty() || t->n_elements() != n || ts.back() != shape.back())
      fail(src, ": tensor '", name, "' has shape ", show(ts), " but the metadata implies ", show(shape),
           "; the metadata (sizes, head counts, vocabulary) and the tensors disagree.");
  };
  expect("token_embd.weight", {V, d}, true);
  expect("output.weight", {V, d}, false);
  expect("output_norm.weight", {d}, true);
  expect("rope_freqs.weight", {hd / 2}, false);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    expect(p + "attn_norm.weight", {d}, true);
    expect(p + "attn_q.weight", {H * hd, d}, true);
    expect(p + "attn_k.weight", {Hkv * hd, d}, true);
    expect(p + "attn_v.weight", {Hkv * hd, d}, true);
    expect(p + "attn_q.bias", {H * hd}, false);
    expect(p + "attn_k.bias", {Hkv * hd}, false);
    expect(p + "attn_v.bias", {Hkv * hd}, false);
    expect(p + "attn_output.weight", {d, H * hd}, true);
    expect(p + "ffn_norm.weight", {d}, true);
    expect(p + "ffn_gate.weight", {I, d}, true);
    expect(p + "ffn_up.weight", {I, d}, true);
    expect(p + "ffn_down.weight", {d, I}, true);
    if (c.architecture == "gemma3") {
      expect(p + "attn_q_norm.weight", {hd}, true);
      expect(p + "attn_k_norm.weight", {hd}, true);
      expect(p + "post_attention_norm.weight", {d}, true);
      expect(p + "post_ffw_norm.weight", {d}, true);
    }
  }
  SAFEDEC_CHECK(!f.find_tensor("blk." + std::to_string(c.n_layers) + ".attn_norm.weight"), src,
                " holds tensors of layer ", c.n_layers, " but its metadata '", c.architecture, ".block_count' says ",
                c.n_layers, " layers; the metadata and the tensors disagree.");
}

ModelConfig model_config_from_hf_json_text(const std::string& json_text, const std::string& source) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {  // parse errors and number overflow (out_of_range)
    fail(source, " is not valid JSON: ", e.what(), ".");
  }
  return from_hf(root, source);
}

ModelConfig model_config_from_hf_json(const std::string& config_json_path) {
  std::ifstream in(config_json_path, std::ios::binary);
  if (!in) fail("Cannot open model config '", config_json_path, "' (expected a Hugging Face config.json).");
  std::ostringstream text;
  text << in.rdbuf();
  return model_config_from_hf_json_text(text.str(), "Model config '" + config_json_path + "'");
}

}  // namespace safedec
