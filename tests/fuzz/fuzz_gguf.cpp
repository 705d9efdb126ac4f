// Fuzz target: GGUF bytes -> GgufFile::open_memory, then every accessor a loader would use
// (metadata getters, ModelConfig, the loader's size checks against the tensors
// (check_gguf_tensor_shapes), dequantisation of every tensor). Seeds include a complete tiny llama
// model and the malformed corpus of tests/unit/io/malformed_gguf.h, so mutations start where the
// size, overlap and byte-size checks are.
#include <algorithm>

#include "core/error.h"
#include "fuzz_driver.h"
#include "gguf_builder.h"
#include "malformed_gguf.h"
#include "io/gguf.h"
#include "io/half.h"
#include "io/model_config.h"

using namespace safedec;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = GgufFile::open_memory(data, size, "fuzz.gguf");
    ++fuzz::accepted();
    for (const auto& kv : f->metadata()) {
      (void)kv.second.to_string(4);
      try { (void)f->get_int(kv.first, 0); } catch (const Error&) {}
      try { (void)f->get_float(kv.first, 0); } catch (const Error&) {}
      try { (void)f->get_string(kv.first, ""); } catch (const Error&) {}
      try { (void)f->get_bool(kv.first, false); } catch (const Error&) {}
    }
    try {
      const ModelConfig c = model_config_from_gguf(*f);
      check_gguf_tensor_shapes(c, *f);  // what CausalLM::load does before its first allocation
    } catch (const Error&) {
    }
    for (const auto& t : f->tensors()) {
      (void)t.torch_shape();
      if (f->find_tensor(t.name) != &t) fuzz::unexpected("fuzz_gguf", "find_tensor disagrees with tensors()");
      if (t.n_elements() > (int64_t{1} << 22)) continue;  // cannot happen for a <= 1 MB input; be safe
      try {
        std::vector<float> v = f->dequantize(t);
        if (t.n_rows() > 0) (void)f->dequantize_rows(t, t.n_rows() - 1, t.n_rows());
      } catch (const Error&) {
        if (ggml_type_supported(t.type)) fuzz::unexpected("fuzz_gguf", "dequantize failed for a supported type");
      }
    }
  } catch (const Error&) {
  } catch (const std::exception& e) {
    fuzz::unexpected("fuzz_gguf", e.what());
  }
  return 0;
}

namespace safedec::fuzz {

std::vector<std::vector<uint8_t>> seeds() {
  using safedec::testing::GgufBuilder;
  std::vector<std::vector<uint8_t>> out;
  // One tensor of every supported block type (two blocks of random-ish bytes with sane scales).
  GgufBuilder all(3);
  all.kv_str("general.architecture", "llama")
      .kv_u32("llama.block_count", 1)
      .kv_u32("llama.embedding_length", 64)
      .kv_u32("llama.feed_forward_length", 128)
      .kv_u32("llama.attention.head_count", 4)
      .kv_u32("llama.attention.head_count_kv", 2)
      .kv_f32("llama.rope.freq_base", 10000.0f)
      .kv_str_array("tokenizer.ggml.tokens", {"<s>", "a", "b"})
      .kv_f32_array("tokenizer.ggml.scores", {0.0f, -1.0f, -2.0f})
      .kv_i32_array("tokenizer.ggml.token_type", {3, 1, 1})
      .kv_bool("tokenizer.ggml.add_bos_token", true)
      .kv_u64("x.u64", 5)
      .kv_i8("x.i8", -1)
      .kv_f64("x.f64", 2.5);
  uint32_t seed = 1;
  for (uint32_t id = 0; id < 40; ++id) {
    GgmlType t;
    try {
      t = ggml_type_from_id(id);
    } catch (const Error&) {
      continue;
    }
    const int64_t bs = ggml_block_size(t), ts = ggml_type_size(t);
    const int64_t blocks = bs == 1 ? 64 : 2;
    std::vector<uint8_t> data(static_cast<size_t>(blocks * ts));
    for (auto& b : data) {
      seed = seed * 1103515245u + 12345u;
      b = static_cast<uint8_t>(seed >> 16);
    }
    if (bs > 1)  // keep the first fp16 field finite so values are meaningful
      for (int64_t k = 0; k < blocks; ++k) {
        const uint16_t d = float_to_half(0.01f);
        std::memcpy(data.data() + k * ts, &d, 2);
      }
    all.tensor(std::string("t.") + ggml_type_name(t), {static_cast<uint64_t>(bs == 1 ? 64 : 2 * bs)}, id, data);
  }
  out.push_back(all.build());
  // Version 2, custom alignment, a 2-D tensor and an empty one.
  std::vector<float> w(2 * 32, 0.5f);
  out.push_back(GgufBuilder(2, 64)
                    .kv_u32("general.alignment", 64)
                    .kv_str("general.architecture", "gemma3")
                    .tensor("w", {32, 2}, 0, safedec::testing::as_bytes(w))
                    .tensor("empty", {0}, 0, {})
                    .build());
  out.push_back(GgufBuilder(3).build());
  out.push_back(safedec::testing::tiny_llama_gguf());
  for (const auto& list : {safedec::testing::malformed_gguf_tables(), safedec::testing::malformed_gguf_sizes(),
                           safedec::testing::malformed_gguf_tokenizer()})
    for (const auto& m : list) out.push_back(m.bytes);
  return out;
}

std::vector<std::string> dictionary() {
  auto u32 = [](uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); };
  auto u64 = [](uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); };
  return {"GGUF", u32(2), u32(3), u32(9), u32(8), u32(12), u32(14), u32(16), u32(30), u64(0), u64(1), u64(32),
          u64(1ull << 62), "general.alignment", "general.architecture", "llama", "gemma3", "qwen2",
          "llama.block_count", "token_embd.weight", "llama.feed_forward_length", "llama.vocab_size",
          "llama.embedding_length", "blk.0.attn_q.weight", u64(1ull << 31), u32(0), u32(1)};
}

}  // namespace safedec::fuzz
