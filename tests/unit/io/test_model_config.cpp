// ModelConfig from the real GGUF files and from Hugging Face config.json texts in both the
// transformers-4 layout found on the Hub (rope_theta/rope_scaling) and the transformers-5 layout
// (rope_parameters, layer_types; the v5 texts below were written by transformers 5.23's
// to_diff_dict()), plus the error paths.
#include <gtest/gtest.h>

#include <functional>

#include "core/error.h"
#include "core/paths.h"
#include "gguf_builder.h"
#include "io/gguf.h"
#include "io/model_config.h"
#include "support/error_of.h"

using namespace safedec;
using safedec::testing_support::error_of;
using safedec::testing_support::kNoError;
using safedec::testing::GgufBuilder;
using safedec::testing::TempDir;

namespace {

// Hub config.json of HuggingFaceTB/SmolLM2-135M-Instruct (transformers 4 layout, trimmed of unused keys).
const char* kSmolLM2Hf = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 1, "eos_token_id": 2,
  "head_dim": 64, "hidden_act": "silu", "hidden_size": 576, "intermediate_size": 1536,
  "max_position_embeddings": 8192, "model_type": "llama", "num_attention_heads": 9, "num_hidden_layers": 30,
  "num_key_value_heads": 3, "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 100000,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "vocab_size": 49152})";

// Hub config.json of google/gemma-3-270m (transformers 4 layout).
const char* kGemmaHfV4 = R"({
  "_sliding_window_pattern": 6, "architectures": ["Gemma3ForCausalLM"], "attention_bias": false,
  "attn_logit_softcapping": null, "final_logit_softcapping": null, "head_dim": 256,
  "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 640, "intermediate_size": 2048,
  "max_position_embeddings": 32768, "model_type": "gemma3_text", "num_attention_heads": 4,
  "num_hidden_layers": 18, "num_key_value_heads": 1, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
  "rope_local_base_freq": 10000.0, "rope_scaling": null, "rope_theta": 1000000.0, "sliding_window": 512,
  "vocab_size": 262144})";

const char* kGemmaHfV5 = R"({"transformers_version": "5.23.0", "vocab_size": 262144, "hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 18, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 32768, "initializer_range": 0.02, "rms_norm_eps": 1e-06, "use_cache": true, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2, "tie_word_embeddings": true, "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}, "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}}, "attention_bias": false, "attention_dropout": 0.0, "query_pre_attn_scalar": 256, "sliding_window": 512, "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention", "full_attention", "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention", "full_attention", "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention", "full_attention"], "final_logit_softcapping": null, "attn_logit_softcapping": null, "use_bidirectional_attention": false, "_sliding_window_pattern": 6, "model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"]})";

const char* kLlama32HfV5 = R"({"transformers_version": "5.23.0", "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "hidden_act": "silu", "max_position_embeddings": 131072, "initializer_range": 0.02, "rms_norm_eps": 1e-05, "use_cache": true, "pad_token_id": null, "bos_token_id": 1, "eos_token_id": 2, "pretraining_tp": 1, "tie_word_embeddings": true, "rope_parameters": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192, "rope_theta": 500000.0}, "attention_bias": false, "attention_dropout": 0.0, "mlp_bias": false, "head_dim": 64, "model_type": "llama", "architectures": ["LlamaForCausalLM"]})";

// Hub config.json of meta-llama/Llama-3.2-1B (transformers 4 layout: rope_scaling with rope_type).
const char* kLlama32HfV4 = R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "intermediate_size": 8192,
  "max_position_embeddings": 131072, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16,
  "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0,
  "low_freq_factor": 1.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "vocab_size": 128256})";

const char* kQwenHfV5 = R"({"transformers_version": "5.23.0", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "hidden_act": "silu", "max_position_embeddings": 32768, "initializer_range": 0.02, "rms_norm_eps": 1e-06, "use_cache": true, "tie_word_embeddings": true, "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}, "use_sliding_window": false, "sliding_window": null, "max_window_layers": 28, "layer_types": ["full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention", "full_attention"], "attention_dropout": 0.0, "pad_token_id": null, "bos_token_id": null, "eos_token_id": null, "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]})";

// Hub config.json of mistralai/Mistral-7B-v0.1.
const char* kMistralHf = R"({"architectures": ["MistralForCausalLM"], "hidden_act": "silu", "hidden_size": 4096,
  "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32,
  "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
  "sliding_window": 4096, "tie_word_embeddings": false, "vocab_size": 32000})";

void expect_gemma_270m(const ModelConfig& c) {
  EXPECT_EQ(c.architecture, "gemma3");
  EXPECT_EQ(c.n_layers, 18);
  EXPECT_EQ(c.hidden_size, 640);
  EXPECT_EQ(c.intermediate_size, 2048);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 1);
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.vocab_size, 262144);
  EXPECT_EQ(c.context_length, 32768);
  EXPECT_NEAR(c.rms_norm_eps, 1e-6, 1e-12);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_DOUBLE_EQ(c.rope_local_theta, 10000.0);
  EXPECT_EQ(c.rope_scaling.type, "none");
  EXPECT_EQ(c.sliding_window, 512);
  EXPECT_DOUBLE_EQ(c.query_pre_attn_scalar, 256.0);
  EXPECT_TRUE(c.embedding_scale);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.hidden_act, "gelu_pytorch_tanh");
  EXPECT_DOUBLE_EQ(c.final_logit_softcapping, 0.0);
  // transformers: layer i slides unless (i + 1) % 6 == 0.
  for (int64_t i = 0; i < 18; ++i) {
    EXPECT_EQ(c.layer_is_sliding(i), (i + 1) % 6 != 0) << "layer " << i;
    EXPECT_DOUBLE_EQ(c.layer_rope_theta(i), (i + 1) % 6 != 0 ? 10000.0 : 1e6) << "layer " << i;
  }
}

void expect_smollm2(const ModelConfig& c) {
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.n_layers, 30);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.n_heads, 9);
  EXPECT_EQ(c.n_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.context_length, 8192);
  EXPECT_NEAR(c.rms_norm_eps, 1e-5, 1e-11);
  EXPECT_DOUBLE_EQ(c.rope_theta, 100000.0);
  EXPECT_EQ(c.rope_scaling.type, "none");
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.hidden_act, "silu");
  EXPECT_FALSE(c.embedding_scale);
  EXPECT_FALSE(c.layer_is_sliding(0));
  EXPECT_DOUBLE_EQ(c.layer_rope_theta(3), 100000.0);
}

}  // namespace

TEST(ModelConfigGguf, SmolLM2) {
  auto f = GgufFile::open(require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf"));
  ModelConfig c = model_config_from_gguf(*f);
  expect_smollm2(c);
  EXPECT_TRUE(c.rope_interleaved);  // converter-permuted q/k
  EXPECT_FALSE(c.rope_freqs_tensor);
  EXPECT_FALSE(c.name.empty());
}

TEST(ModelConfigGguf, Gemma3) {
  auto f = GgufFile::open(require_cached_model("gemma-3-270m-q4_k_m.gguf"));
  ModelConfig c = model_config_from_gguf(*f);
  expect_gemma_270m(c);
  EXPECT_FALSE(c.rope_interleaved);
  EXPECT_DOUBLE_EQ(c.norm_weight_offset, 0.0);  // GGUF norms already hold 1 + w
  // Consistent with that: the stored final-norm gains are positive around 1 + w, not around w.
  std::vector<float> norm = f->dequantize(f->tensor("output_norm.weight"));
  double mean = 0;
  for (float v : norm) mean += v;
  EXPECT_GT(mean / static_cast<double>(norm.size()), 0.5);
}

TEST(ModelConfigGguf, UnknownArchitectureListsSupported) {
  auto bytes = GgufBuilder().kv_str("general.architecture", "gpt2").kv_u32("gpt2.block_count", 2).build();
  auto f = GgufFile::open_memory(bytes.data(), bytes.size(), "gpt2.gguf");
  const std::string msg = error_of([&] { model_config_from_gguf(*f); });
  EXPECT_NE(msg.find("'gpt2'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("llama, qwen2, gemma3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("gpt2.gguf"), std::string::npos) << msg;
}

TEST(ModelConfigGguf, QwenBiasRopeScalingAndMissingKeys) {
  auto base = [] {
    GgufBuilder b;
    b.kv_str("general.architecture", "qwen2")
        .kv_u32("qwen2.block_count", 2)
        .kv_u32("qwen2.embedding_length", 64)
        .kv_u32("qwen2.feed_forward_length", 128)
        .kv_u32("qwen2.attention.head_count", 4)
        .kv_u32("qwen2.attention.head_count_kv", 2)
        .kv_u32("qwen2.vocab_size", 100);
    return b;
  };
  {
    auto bytes = base().kv_str("qwen2.rope.scaling.type", "linear").kv_f32("qwen2.rope.scaling.factor", 4.0f).build();
    auto f = GgufFile::open_memory(bytes.data(), bytes.size(), "q.gguf");
    ModelConfig c = model_config_from_gguf(*f);
    EXPECT_EQ(c.architecture, "qwen2");
    EXPECT_TRUE(c.attention_bias);
    EXPECT_EQ(c.head_dim, 16);
    EXPECT_EQ(c.vocab_size, 100);
    EXPECT_EQ(c.rope_scaling.type, "linear");
    EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 4.0);
    EXPECT_TRUE(c.tie_word_embeddings);  // no output.weight tensor
    EXPECT_FALSE(c.rope_interleaved);
  }
  {
    auto bytes = base().kv_str("qwen2.rope.scaling.type", "longrope").build();
    auto f = GgufFile::open_memory(bytes.data(), bytes.size(), "q.gguf");
    const std::string msg = error_of([&] { model_config_from_gguf(*f); });
    EXPECT_NE(msg.find("longrope"), std::string::npos) << msg;
  }
  {
    auto bytes = GgufBuilder().kv_str("general.architecture", "llama").kv_u32("llama.block_count", 2).build();
    auto f = GgufFile::open_memory(bytes.data(), bytes.size(), "partial.gguf");
    const std::string msg = error_of([&] { model_config_from_gguf(*f); });
    EXPECT_NE(msg.find("llama.embedding_length"), std::string::npos) << msg;
    EXPECT_NE(msg.find("partial.gguf"), std::string::npos) << msg;
  }
  {
    auto bytes = base().kv_u32("qwen2.attention.head_count_kv", 3).build();  // duplicate key -> corrupt file
    EXPECT_THROW(GgufFile::open_memory(bytes.data(), bytes.size()), Error);
  }
}

TEST(ModelConfigHf, SmolLM2HubConfigMatchesGguf) {
  expect_smollm2(model_config_from_hf_json_text(kSmolLM2Hf, "smollm2 config.json"));
  EXPECT_FALSE(model_config_from_hf_json_text(kSmolLM2Hf, "x").rope_interleaved);  // HF rotate_half
  TempDir dir;
  safedec::testing::write_text(dir.file("config.json"), kSmolLM2Hf);
  expect_smollm2(model_config_from_hf_json(dir.file("config.json")));
}

TEST(ModelConfigHf, Gemma3BothLayouts) {
  expect_gemma_270m(model_config_from_hf_json_text(kGemmaHfV4, "gemma v4"));
  EXPECT_DOUBLE_EQ(model_config_from_hf_json_text(kGemmaHfV4, "gemma v4").norm_weight_offset, 1.0);
  ModelConfig v5 = model_config_from_hf_json_text(kGemmaHfV5, "gemma v5");
  expect_gemma_270m(v5);
  EXPECT_EQ(v5.sliding_layers.size(), 18u);
  // The multimodal wrapper: only the text part is used.
  const std::string wrapped = std::string(R"({"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "text_config": )") +
                              kGemmaHfV4 + "}";
  expect_gemma_270m(model_config_from_hf_json_text(wrapped, "gemma mm"));
}

TEST(ModelConfigHf, Llama3RopeScalingBothLayouts) {
  for (const char* text : {kLlama32HfV4, kLlama32HfV5}) {
    ModelConfig c = model_config_from_hf_json_text(text, "llama3.2");
    EXPECT_EQ(c.architecture, "llama");
    EXPECT_EQ(c.head_dim, 64);
    EXPECT_EQ(c.n_kv_heads, 8);
    EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
    EXPECT_EQ(c.rope_scaling.type, "llama3");
    EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 32.0);
    EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
    EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
    EXPECT_EQ(c.rope_scaling.original_max_position, 8192);
    EXPECT_TRUE(c.tie_word_embeddings);
    EXPECT_NEAR(c.rms_norm_eps, 1e-5, 1e-11);
  }
}

TEST(ModelConfigHf, Qwen2AndMistral) {
  ModelConfig q = model_config_from_hf_json_text(kQwenHfV5, "qwen");
  EXPECT_EQ(q.architecture, "qwen2");
  EXPECT_TRUE(q.attention_bias);
  EXPECT_EQ(q.head_dim, 64);
  EXPECT_DOUBLE_EQ(q.rope_theta, 1e6);
  EXPECT_TRUE(q.sliding_layers.empty());
  EXPECT_FALSE(q.layer_is_sliding(3));
  ModelConfig m = model_config_from_hf_json_text(kMistralHf, "mistral");
  EXPECT_EQ(m.architecture, "llama");
  EXPECT_FALSE(m.tie_word_embeddings);
  EXPECT_EQ(m.sliding_window, 4096);
  EXPECT_TRUE(m.layer_is_sliding(0));
  EXPECT_TRUE(m.layer_is_sliding(31));
  EXPECT_EQ(m.head_dim, 128);
}

TEST(ModelConfigHf, Errors) {
  std::string msg = error_of([] { model_config_from_hf_json_text(R"({"architectures": ["GPT2LMHeadModel"]})", "gpt2 cfg"); });
  EXPECT_NE(msg.find("GPT2LMHeadModel"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Qwen2ForCausalLM"), std::string::npos) << msg;
  EXPECT_NE(msg.find("gpt2 cfg"), std::string::npos) << msg;

  TempDir dir;
  safedec::testing::write_text(dir.file("config.json"), "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 5");
  msg = error_of([&] { model_config_from_hf_json(dir.file("config.json")); });
  EXPECT_NE(msg.find(dir.file("config.json")), std::string::npos) << msg;
  EXPECT_NE(msg.find("not valid JSON"), std::string::npos) << msg;

  msg = error_of([&] { model_config_from_hf_json(dir.file("missing.json")); });
  EXPECT_NE(msg.find("missing.json"), std::string::npos) << msg;

  std::string text = kSmolLM2Hf;
  text.replace(text.find("\"hidden_size\": 576"), 18, "\"hidden_size\": \"576\"");
  msg = error_of([&] { model_config_from_hf_json_text(text, "cfg"); });
  EXPECT_NE(msg.find("'hidden_size'"), std::string::npos) << msg;

  text = kSmolLM2Hf;
  text.replace(text.find("\"num_key_value_heads\": 3"), 24, "\"num_key_value_heads\": 4");
  msg = error_of([&] { model_config_from_hf_json_text(text, "cfg"); });
  EXPECT_NE(msg.find("key/value heads (4)"), std::string::npos) << msg;

  text = kSmolLM2Hf;
  text.replace(text.find("\"num_hidden_layers\": 30,"), 24, "");
  msg = error_of([&] { model_config_from_hf_json_text(text, "cfg"); });
  EXPECT_NE(msg.find("'num_hidden_layers'"), std::string::npos) << msg;

  msg = error_of([] { model_config_from_hf_json_text("[1, 2]", "arr"); });
  EXPECT_NE(msg.find("not a JSON object"), std::string::npos) << msg;

  text = kSmolLM2Hf;
  text.replace(text.find("\"rope_scaling\": null"), 20, R"("rope_scaling": {"type": "dynamic", "factor": 2.0})");
  msg = error_of([&] { model_config_from_hf_json_text(text, "cfg"); });
  EXPECT_NE(msg.find("'dynamic'"), std::string::npos) << msg;
}

TEST(ModelConfig, ValidateChecksFields) {
  ModelConfig c = model_config_from_hf_json_text(kSmolLM2Hf, "x");
  c.head_dim = 63;
  EXPECT_THROW(c.validate("x"), Error);
  c = model_config_from_hf_json_text(kSmolLM2Hf, "x");
  c.hidden_act = "relu";
  EXPECT_THROW(c.validate("x"), Error);
  c = model_config_from_hf_json_text(kSmolLM2Hf, "x");
  c.architecture = "gpt2";
  const std::string msg = error_of([&] { c.validate("src.json"); });
  EXPECT_NE(msg.find("src.json"), std::string::npos);
  EXPECT_NE(msg.find("llama, qwen2, gemma3"), std::string::npos);
  c = model_config_from_hf_json_text(kSmolLM2Hf, "x");
  c.sliding_layers = {true, false};
  EXPECT_THROW(c.validate("x"), Error);
}
