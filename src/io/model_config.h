// ModelConfig: one plain struct describing a decoder-only transformer, filled from GGUF metadata
// (`<arch>.*` keys) or from a Hugging Face config.json.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace safedec {

class GgufFile;

struct RopeScaling {
  std::string type = "none";  // none | linear | llama3 | yarn (yarn: parsed, refused at load)
  double factor = 1.0;
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  int64_t original_max_position = 8192;  // llama3
};

struct ModelConfig {
  std::string architecture;  // "llama" (llama, mistral, smollm, tinyllama), "qwen2", "gemma3"
  std::string name;
  int64_t n_layers = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;        // hidden_size / n_heads unless given (gemma3: 256)
  int64_t vocab_size = 0;
  int64_t context_length = 0;  // max position embeddings
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = true;  // no separate output.weight / lm_head
  bool attention_bias = false;      // q/k/v biases (qwen2)
  std::string hidden_act = "silu";  // silu (SwiGLU) | gelu_pytorch_tanh (GeGLU, gemma)
  // Gemma 3 specifics.
  int64_t sliding_window = 0;          // 0 = none
  int64_t sliding_window_pattern = 0;  // every N-th layer is global (gemma3: 6)
  double rope_local_theta = 10000.0;   // theta of sliding layers
  double query_pre_attn_scalar = 0.0;  // 0 = head_dim
  bool embedding_scale = false;        // multiply embeddings by sqrt(hidden)
  double final_logit_softcapping = 0.0;
  double attn_logit_softcapping = 0.0;
  // Explicit per-layer sliding flags (HF `layer_types`); empty = derived from the fields above.
  std::vector<bool> sliding_layers;
  // llama.cpp llama3-style GGUFs carry precomputed RoPE frequency factors in a `rope_freqs.weight`
  // tensor instead of rope-scaling metadata: the model must divide its inverse frequencies by it.
  bool rope_freqs_tensor = false;
  // RoPE pairing. llama.cpp's converter permutes the rows of attn_q/attn_k of arch "llama" GGUFs
  // so that RoPE rotates adjacent pairs (2i, 2i+1) (llama.cpp LLAMA_ROPE_TYPE_NORM); HF
  // checkpoints and GGUF qwen2/gemma3 rotate halves (i, i + head_dim/2) (NEOX, HF rotate_half).
  // A model loading GGUF llama weights must either use interleaved RoPE or un-permute q/k.
  bool rope_interleaved = false;
  // Added to every RMSNorm gain at use: Gemma computes x * (1 + w). HF gemma3 checkpoints store
  // w (offset 1); llama.cpp's converter stores w + 1 in GGUF (offset 0). 0 for llama/qwen2.
  double norm_weight_offset = 0.0;

  // Whether layer `layer` uses sliding-window attention: sliding_layers if given; else with a
  // pattern N > 0 every N-th layer (1-based) is global and the others slide (gemma3); else with
  // sliding_window > 0 and no pattern all layers slide (Mistral v0.1); else none.
  bool layer_is_sliding(int64_t layer) const;
  // Theta used by a layer's RoPE (rope_local_theta on gemma3 sliding layers, else rope_theta).
  double layer_rope_theta(int64_t layer) const;

  void validate(const std::string& source) const;  // throws safedec::Error naming the source
};

// Upper limits ModelConfig::validate enforces (far above any released model).
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHiddenSize = 1 << 17;
constexpr int64_t kMaxIntermediateSize = 1 << 20;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxHeadDim = 4096;
constexpr int64_t kMaxVocabSize = 1 << 24;
constexpr int64_t kMaxContextLength = int64_t{1} << 26;

// Architectures ModelConfig can describe (values of `architecture`).
const std::vector<std::string>& supported_architectures();

ModelConfig model_config_from_gguf(const GgufFile& file);
// Checks every size of `config` (from model_config_from_gguf) against the shapes of the tensors in
// `file` that a loader will read (llama.cpp names: token_embd, blk.N.attn_q, ...), and that the
// file holds exactly config.n_layers layers. Throws safedec::Error naming the tensor. Loaders call
// it before they allocate anything sized from the metadata.
void check_gguf_tensor_shapes(const ModelConfig& config, const GgufFile& file);
ModelConfig model_config_from_hf_json(const std::string& config_json_path);
// The same from the JSON text itself; `source` names it in error messages.
ModelConfig model_config_from_hf_json_text(const std::string& json_text, const std::string& source);

}  // namespace safedec
