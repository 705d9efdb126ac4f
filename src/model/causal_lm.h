// CausalLM: a Llama-family decoder-only transformer (Llama / Mistral / SmolLM / Qwen2 / Gemma 3) in
// LibTorch, with a batched left-padded KV cache and hooks for safety methods and training:
// soft-prompt embeddings, activation capture, MLP-output steering, per-row LoRA, autograd, and
// truncated "self-expert" models that share another model's weights.
//
// Typical inference use (the decoding module owns the loop):
//   auto lm = CausalLM::load(path, {});
//   torch::InferenceMode guard;
//   KvCache cache = lm->new_cache(batch, max_len);
//   ForwardInput in; in.ids = prompt_ids; in.pad_left = pads; in.last_only = true;
//   auto logits = lm->forward(in, cache);               // [B, 1, V]
//   CausalLM::check_logits(logits, step);               // throws on NaN/Inf
//   in = {}; in.ids = next_ids.view({B, 1}); in.last_only = true; logits = lm->forward(in, cache);
// Training: run with autograd enabled (no InferenceMode) and a cache created outside InferenceMode;
// gradients reach input_embeds, LoRA factors and any weight with requires_grad (the cache stores
// detached keys/values; attention inside one call sees the live ones).
// Speed: decode-time linears (<= 16 rows) use the AVX2 kernel in fast_linear.h; on a machine shared
// with other work, OMP_WAIT_POLICY=PASSIVE or one intra-op thread avoids OpenMP spin-waiting.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "io/model_config.h"
#include "model/kv_cache.h"
#include "model/lora.h"

namespace safedec {

class QuantWeight;  // model/quant_linear.h

// Weights of one decoder layer in the fused layouts the forward pass uses (HF rotate-half layout
// for Q/K rows). RMSNorm weights are stored as the effective multiplier: for Gemma (whose HF norm
// computes x * (1 + w)) that is 1 + w.
struct LayerWeights {
  torch::Tensor attn_norm;  // [d]
  torch::Tensor wqkv;       // [(H + 2 Hkv) * hd, d]: rows q | k | v
  torch::Tensor bqkv;       // [(H + 2 Hkv) * hd] or undefined (Qwen2 has q/k/v biases)
  torch::Tensor wo;         // [d, H * hd]
  torch::Tensor ffn_norm;   // [d] (Gemma: pre_feedforward_layernorm)
  torch::Tensor w_gate_up;  // [2 I, d]: rows gate | up
  torch::Tensor w_down;     // [d, I]
  // Gemma 3 only (undefined otherwise).
  torch::Tensor q_norm, k_norm;                 // [hd]
  torch::Tensor post_attn_norm, post_ffn_norm;  // [d]
  // Loaded with weights: quantized, the linears whose GGUF type has a kernel keep their blocks here
  // and the fp32 tensor above is left undefined (the forward uses whichever is set).
  std::shared_ptr<const QuantWeight> q_wqkv, q_wo, q_gate_up, q_down;
};

// All weights of a model. lm_head is the same tensor as embed when the embeddings are tied.
struct ModelWeights {
  torch::Tensor embed;  // [V, d]
  std::vector<std::shared_ptr<LayerWeights>> layers;
  torch::Tensor final_norm;  // [d]
  torch::Tensor lm_head;     // [V, d]
  torch::Tensor rope_freqs;  // optional [hd/2]: llama.cpp llama3 frequency divisors (rope_freqs.weight)
  std::shared_ptr<const QuantWeight> q_lm_head;  // weights: quantized (lm_head undefined unless tied)
};

struct LoadOptions {
  torch::Device device = torch::kCPU;
  torch::Dtype dtype = torch::kFloat32;  // fp16/bf16 only on CUDA
  bool check_finite = true;              // NaN/Inf scan of every weight (error names the tensor)
  int64_t max_layers = -1;               // load only the first K layers (truncated model); -1 = all
  // Linear weights: fp32 tensors, or (GGUF only) kept in their block formats (Q4_0, Q4_1, Q5_0, Q8_0,
  // Q4_K, Q6_K; other types stay fp32) and multiplied with directly: decoding speed, inference only.
  // Config: what the model's configs/models entry says (`weights:`, default fp32) when loaded by
  // name through load_model_bundle, fp32 otherwise. Training must ask for Fp32.
  enum class Weights { Config, Fp32, Quantized };
  Weights weights = Weights::Config;
  bool quantized() const { return weights == Weights::Quantized; }
};

// One forward call: T new tokens for each of B rows.
struct ForwardInput {
  torch::Tensor ids;       // [B, T] int64; ids at padded positions must still be valid ids (e.g. pad/eos)
  torch::Tensor pad_left;  // optional [B] int64: leading pad tokens per row (only into an empty cache)
  // Caller-supplied input embeddings (soft prompts): [B, T, d] in the space embed() returns (after
  // Gemma's sqrt(d) scale). embeds_mask [B, T] bool marks the positions that take them (undefined =
  // all positions; ids may then be undefined).
  torch::Tensor input_embeds;
  torch::Tensor embeds_mask;
  bool last_only = false;  // compute logits for the last position only -> [B, 1, V]
  int64_t logits_last = 0;  // > 0: logits for the last n positions only -> [B, n, V] (draft verification)
};

// Which activations to record during a forward call.
struct CaptureRequest {
  std::vector<int64_t> layers;  // empty = every layer
  bool residual = true;         // the residual stream after the layer (the layer's output)
  bool mlp = false;             // the MLP output added to the residual (after any steering)
  // Positions within this call's T: undefined = all; [P] int64 = the same positions for every row;
  // [B, P] int64 = per-row positions. Captured tensors are [B, P, d].
  torch::Tensor positions;
};

// Optional per-call hooks. Every member is optional.
struct ForwardHooks {
  // Applied to each layer's MLP output [B, T, d] before the residual add (activation steering).
  std::function<torch::Tensor(int64_t layer, const torch::Tensor& mlp_out)> mlp_transform;
  const CaptureRequest* capture = nullptr;
  std::vector<LoraBinding> loras;
  bool training = false;  // enables LoRA dropout
};

struct ForwardOutput {
  torch::Tensor logits;  // [B, T, V] (or [B, n, V] with last_only / logits_last), fp32
  torch::Tensor hidden;  // final-normed hidden states feeding the LM head, same positions as logits
  std::map<int64_t, torch::Tensor> residual;  // layer -> [B, P, d] (when captured)
  std::map<int64_t, torch::Tensor> mlp;       // layer -> [B, P, d] (when captured)
};

// What the layers of one forward call share: sizes, positions' rotary tables, attention masks and
// hooks. Made by CausalLM::begin_pass; used by run_layer. With a cache, the layers append to it and
// attend over it; without one (training), they attend only within the call's T tokens, causally,
// with positions 0..T-1 in every row (batches are then RIGHT-padded: a pad only follows real tokens,
// so causality alone keeps real tokens from seeing pads; losses must mask the pad positions).
struct LayerPass {
  int64_t batch = 0, tokens = 0, past = 0;
  KvCache* cache = nullptr;
  const ForwardHooks* hooks = nullptr;
  torch::Tensor mask_global, mask_local;  // additive [B, 1, 1, T, Lk] or undefined (no mask needed)
  std::pair<torch::Tensor, torch::Tensor> rope_global, rope_local;  // cos/sin [B, T, 1, hd/2]
  ForwardOutput* capture_out = nullptr;  // receives captured activations (hooks->capture)
  // A decode step (T = 1, cache, fp32 on CPU, no autograd, LoRA, capture or MLP hook): the layers run
  // their non-GEMM work on raw buffers (model/decode_step.h); the masks are then not built and
  // pad_cpu holds the cache's per-row pad offsets.
  bool fused = false;
  torch::Tensor pad_cpu;
};

// The fused decode step is on by default; off (or SAFEDEC_FUSED_DECODE=0 in the environment) every
// step runs the generic ATen layer. For tests and side-by-side benchmarks.
void set_fused_decode(bool on);
bool fused_decode_enabled();

// A Llama-family decoder. Thread-compatible: concurrent forward() calls need distinct caches.
class CausalLM {
 public:
  CausalLM(ModelConfig config, ModelWeights weights);

  // Loads a GGUF file (*.gguf) or a Hugging Face checkpoint directory (config.json + safetensors).
  static std::shared_ptr<CausalLM> load(const std::string& path, const LoadOptions& options = {});
  static std::shared_ptr<CausalLM> load_gguf(const std::string& path, const LoadOptions& options = {});
  static std::shared_ptr<CausalLM> load_hf(const std::string& dir, const LoadOptions& options = {});
  // A model with random weights (normal(0, std), norms 1), for tests of code that needs a model.
  static std::shared_ptr<CausalLM> random(const ModelConfig& config, uint64_t seed = 0, double std = 0.02);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  ModelWeights& mutable_weights() { return weights_; }
  torch::Device device() const { return weights_.embed.device(); }
  torch::Dtype dtype() const { return weights_.embed.scalar_type(); }

  // An empty cache for `batch` rows of up to `max_len` slots (it grows if needed).
  KvCache new_cache(int64_t batch, int64_t max_len) const;
  // Runs T new tokens per row through the model, appending them to the cache.
  ForwardOutput forward_full(const ForwardInput& input, KvCache& cache, const ForwardHooks* hooks = nullptr) const;
  // Same, returning only the logits.
  torch::Tensor forward(const ForwardInput& input, KvCache& cache, const ForwardHooks* hooks = nullptr) const;
  // Input embeddings of token ids [B, T] -> [B, T, d] (Gemma: already scaled by sqrt(d)).
  torch::Tensor embed(const torch::Tensor& ids) const;

  // ---- the forward pass layer by layer (what forward_full runs; training drives it directly for
  // activation checkpointing) ----
  // h_0 of a call: token embeddings, with caller embeddings at embeds_mask positions.
  torch::Tensor input_hidden(const ForwardInput& input) const;
  // Positions, masks and rotary tables for T new tokens per row. cache == nullptr: no KV cache
  // (training; see LayerPass). With a cache, applies input.pad_left and reserves room, but does not
  // advance it (forward_full advances after the last layer).
  LayerPass begin_pass(const ForwardInput& input, int64_t batch, int64_t tokens, KvCache* cache,
                       const ForwardHooks* hooks = nullptr, ForwardOutput* capture_out = nullptr) const;
  // Decoder layer l: h [B, T, d] -> h [B, T, d] (writes the layer's keys/values into the pass's cache).
  torch::Tensor run_layer(int64_t layer, const torch::Tensor& h, const LayerPass& pass) const;
  // run_layer for a fused decode pass (pass.fused).
  torch::Tensor run_layer_decode(int64_t layer, const torch::Tensor& h, const LayerPass& pass) const;
  // Final RMSNorm of the residual stream (the LM head's input).
  torch::Tensor final_hidden(const torch::Tensor& h) const;
  // LM head (+ LoRA on the head, + softcapping) on final-normed hidden states [..., d] -> fp32 logits.
  torch::Tensor head_logits(const torch::Tensor& normed, const ForwardHooks* hooks = nullptr) const;
  // A training forward without KV cache: right-padded ids [B, T] (and optional soft-prompt embeds),
  // returns the final-normed hidden states [B, T, d] (compute logits only where a loss needs them).
  torch::Tensor forward_hidden(const ForwardInput& input, const ForwardHooks* hooks = nullptr) const;

  // The first k layers + final norm + LM head, sharing this model's weight tensors (a truncated
  // self-expert). Fine-tune a deep_copy() of it to avoid changing this model.
  std::shared_ptr<CausalLM> truncated(int64_t k) const;
  // An independent copy of every weight.
  std::shared_ptr<CausalLM> deep_copy() const;
  // Every weight tensor with a descriptive (fused-layout) name; the tied LM head appears once.
  std::vector<std::pair<std::string, torch::Tensor>> named_parameters() const;
  int64_t parameter_bytes() const;
  // Whether some linear weights are held quantised (then they are not in named_parameters()).
  bool quantized() const;
  // Bytes the forward reads per token from weights: fp32 tensors + quantised blocks (the decode
  // bandwidth floor's numerator).
  int64_t weight_stream_bytes() const;

  // Throws safedec::Error if logits hold NaN/Inf, naming the decoding step and the first bad row.
  static void check_logits(const torch::Tensor& logits, int64_t step);

 private:
  // cos/sin tables [n_positions, hd] for the given theta (grown on demand).
  std::pair<torch::Tensor, torch::Tensor> rope_tables(bool local, int64_t n_positions) const;
  bool layer_is_sliding(int64_t layer) const;

  ModelConfig config_;
  ModelWeights weights_;
  torch::Tensor inv_freq_global_, inv_freq_local_;  // [hd/2] fp32
  mutable std::mutex rope_mutex_;
  mutable torch::Tensor cos_global_, sin_global_, cos_local_, sin_local_;
};

// Left-pads variable-length prompts into [B, T] ids (pad value `pad_id`) and [B] pad counts.
std::pair<torch::Tensor, torch::Tensor> left_pad(const std::vector<std::vector<int64_t>>& prompts, int64_t pad_id);

// Minimal batched greedy decoding (argmax, no stopping unless eos_id >= 0, after which a row emits
// eos_id). Returns the new tokens of each prompt. For tests and benchmarks; the real generation
// loop lives in src/decoding.
std::vector<std::vector<int64_t>> greedy_generate(const CausalLM& lm, const std::vector<std::vector<int64_t>>& prompts,
                                                  int64_t max_new_tokens, int64_t eos_id = -1,
                                                  const ForwardHooks* hooks = nullptr);

}  // namespace safedec
