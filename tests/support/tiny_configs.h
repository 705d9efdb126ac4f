// Small random-model configs of each supported architecture, shared by the CausalLM tests:
// llama, qwen2 (q/k/v biases) and gemma3 (sliding window 4 every other layer, gelu, scaled embeddings).
#pragma once
#include <string>

#include "io/model_config.h"

namespace safedec::test {

inline ModelConfig tiny_arch_config(const std::string& arch = "llama") {
  ModelConfig c;
  c.architecture = arch;
  c.name = "tiny-" + arch;
  c.n_layers = 3;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 97;
  c.context_length = 256;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  if (arch == "qwen2") c.attention_bias = true;
  if (arch == "gemma3") {
    c.hidden_act = "gelu_pytorch_tanh";
    c.sliding_window = 4;
    c.sliding_window_pattern = 2;
    c.rope_theta = 1000000.0;
    c.rope_local_theta = 10000.0;
    c.query_pre_attn_scalar = 16;
    c.embedding_scale = true;
  }
  return c;
}

}  // namespace safedec::test
