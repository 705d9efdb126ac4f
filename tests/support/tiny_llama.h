// The tiny random Llama (2 layers, hidden 16, vocabulary 40) that the trainer tests train on.
#pragma once
#include <cstdint>
#include <memory>

#include "model/causal_lm.h"

namespace safedec::test {

inline std::shared_ptr<CausalLM> tiny_llama(uint64_t seed = 5) {
  ModelConfig c;
  c.architecture = "llama";
  c.name = "tiny";
  c.n_layers = 2;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 8;
  c.vocab_size = 40;
  c.context_length = 128;
  c.rope_theta = 10000;
  return CausalLM::random(c, seed, 0.2);
}

}  // namespace safedec::test
