// Test-only corpus of malformed model files (issue 15): a tiny but complete llama GGUF (one layer,
// hidden 8, 2 heads of 4, 1 kv head, feed-forward 16, 4 tokens, all F32) and copies of it broken in
// one way each, with a piece of the error safedec must give. The unit tests load every case and
// the GGUF fuzz target starts from them, so the size and layout checks are where it mutates.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gguf_builder.h"

namespace safedec::testing {

struct MalformedCase {
  std::string name;            // what is broken
  std::vector<uint8_t> bytes;  // the GGUF image
  std::string error;           // a piece of the expected safedec::Error message
};

// Metadata of the tiny model; `override_key` (if non-empty) is written with `override_value`
// instead of its normal value (as u64 so that 2^31 and beyond can be expressed), or added.
inline GgufBuilder tiny_llama_metadata(const std::string& override_key = "", uint64_t override_value = 0) {
  GgufBuilder b(3);
  b.kv_str("general.architecture", "llama");
  const std::vector<std::pair<std::string, uint64_t>> sizes = {
      {"llama.block_count", 1},         {"llama.embedding_length", 8},   {"llama.feed_forward_length", 16},
      {"llama.attention.head_count", 2}, {"llama.attention.head_count_kv", 1}, {"llama.context_length", 64}};
  bool overridden = false;
  for (const auto& [k, v] : sizes) {
    if (k == override_key) {
      b.kv_u64(k, override_value);
      overridden = true;
    } else {
      b.kv_u32(k, static_cast<uint32_t>(v));
    }
  }
  if (!override_key.empty() && !overridden) b.kv_u64(override_key, override_value);
  b.kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f).kv_f32("llama.rope.freq_base", 10000.0f);
  b.kv_str("tokenizer.ggml.model", "llama")
      .kv_str_array("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "a"})
      .kv_f32_array("tokenizer.ggml.scores", {0.0f, 0.0f, 0.0f, -1.0f})
      .kv_i32_array("tokenizer.ggml.token_type", {2, 3, 3, 1});
  return b;
}

// The tensors of the tiny model (ggml order: ne[0] is the row length).
inline GgufBuilder& tiny_llama_tensors(GgufBuilder& b) {
  auto f32 = [](size_t n, float v) { return as_bytes(std::vector<float>(n, v)); };
  b.tensor("token_embd.weight", {8, 4}, 0, f32(32, 0.01f))
      .tensor("output_norm.weight", {8}, 0, f32(8, 1.0f))
      .tensor("blk.0.attn_norm.weight", {8}, 0, f32(8, 1.0f))
      .tensor("blk.0.attn_q.weight", {8, 8}, 0, f32(64, 0.02f))
      .tensor("blk.0.attn_k.weight", {8, 4}, 0, f32(32, 0.02f))
      .tensor("blk.0.attn_v.weight", {8, 4}, 0, f32(32, 0.02f))
      .tensor("blk.0.attn_output.weight", {8, 8}, 0, f32(64, 0.02f))
      .tensor("blk.0.ffn_norm.weight", {8}, 0, f32(8, 1.0f))
      .tensor("blk.0.ffn_gate.weight", {8, 16}, 0, f32(128, 0.02f))
      .tensor("blk.0.ffn_up.weight", {8, 16}, 0, f32(128, 0.02f))
      .tensor("blk.0.ffn_down.weight", {16, 8}, 0, f32(128, 0.02f));
  return b;
}

inline std::vector<uint8_t> tiny_llama_gguf() {
  GgufBuilder b = tiny_llama_metadata();
  return tiny_llama_tensors(b).build();
}

// Byte position of the tensor-info record of `name` (its name length field), or npos.
inline size_t tensor_info_pos(const std::vector<uint8_t>& bytes, const std::string& name) {
  std::vector<uint8_t> needle(8 + name.size());
  const uint64_t n = name.size();
  std::memcpy(needle.data(), &n, 8);
  std::memcpy(needle.data() + 8, name.data(), name.size());
  for (size_t i = 0; i + needle.size() <= bytes.size(); ++i)
    if (std::memcmp(bytes.data() + i, needle.data(), needle.size()) == 0) return i;
  return std::string::npos;
}

// Overwrites the type id and/or the data offset in the tensor-info record of `name`.
inline std::vector<uint8_t> patch_tensor_info(std::vector<uint8_t> bytes, const std::string& name, int64_t type_id,
                                              int64_t offset) {
  size_t p = tensor_info_pos(bytes, name);
  if (p == std::string::npos) return bytes;
  p += 8 + name.size();
  uint32_t n_dims = 0;
  std::memcpy(&n_dims, bytes.data() + p, 4);
  p += 4 + 8 * static_cast<size_t>(n_dims);
  if (type_id >= 0) {
    const uint32_t t = static_cast<uint32_t>(type_id);
    std::memcpy(bytes.data() + p, &t, 4);
  }
  p += 4;
  if (offset >= 0) {
    const uint64_t o = static_cast<uint64_t>(offset);
    std::memcpy(bytes.data() + p, &o, 8);
  }
  return bytes;
}

// The data offset recorded for tensor `name`.
inline uint64_t tensor_offset(const std::vector<uint8_t>& bytes, const std::string& name) {
  size_t p = tensor_info_pos(bytes, name);
  if (p == std::string::npos) return 0;
  p += 8 + name.size();
  uint32_t n_dims = 0;
  std::memcpy(&n_dims, bytes.data() + p, 4);
  p += 4 + 8 * static_cast<size_t>(n_dims) + 4;
  uint64_t o = 0;
  std::memcpy(&o, bytes.data() + p, 8);
  return o;
}

// Files whose GgufFile::open must fail (the tensor table itself is inconsistent).
inline std::vector<MalformedCase> malformed_gguf_tables() {
  const std::vector<uint8_t> good = tiny_llama_gguf();
  std::vector<MalformedCase> out;
  out.push_back({"overlapping tensor data", patch_tensor_info(good, "blk.0.attn_v.weight", -1,
                                                              static_cast<int64_t>(tensor_offset(good, "blk.0.attn_k.weight"))),
                 "overlap"});
  out.push_back({"type id F32 -> F16 (byte size halves)", patch_tensor_info(good, "blk.0.attn_q.weight", 1, -1),
                 "does not match its data"});
  out.push_back({"last tensor F32 -> F16", patch_tensor_info(good, "blk.0.ffn_down.weight", 1, -1),
                 "does not match its data"});
  out.push_back({"first tensor moved off offset 0",
                 patch_tensor_info(good, "token_embd.weight", -1, static_cast<int64_t>(tensor_offset(good, "blk.0.ffn_down.weight")) + 512),
                 "token_embd.weight"});
  out.push_back({"type id F32 -> Q8_0 (byte size changes)", patch_tensor_info(good, "blk.0.ffn_gate.weight", 8, -1),
                 "blk.0.ffn_gate.weight"});
  return out;
}

// Files that open but whose metadata sizes disagree with the tensors or exceed sane limits:
// check_gguf_tensor_shapes / model_config_from_gguf must refuse them before any allocation.
inline std::vector<MalformedCase> malformed_gguf_sizes() {
  std::vector<MalformedCase> out;
  auto with = [](const std::string& key, uint64_t value) {
    GgufBuilder b = tiny_llama_metadata(key, value);
    return tiny_llama_tensors(b).build();
  };
  out.push_back({"feed_forward_length 2^31", with("llama.feed_forward_length", 1ull << 31), "above safedec's limit"});
  out.push_back({"feed_forward_length 32", with("llama.feed_forward_length", 32), "ffn_gate.weight"});
  out.push_back({"vocab_size 2^31", with("llama.vocab_size", 1ull << 31), "above safedec's limit"});
  out.push_back({"vocab_size 5", with("llama.vocab_size", 5), "token_embd.weight"});
  out.push_back({"embedding_length 2^40", with("llama.embedding_length", 1ull << 40), "above safedec's limit"});
  out.push_back({"embedding_length 16", with("llama.embedding_length", 16), "token_embd.weight"});
  out.push_back({"head_count_kv 2", with("llama.attention.head_count_kv", 2), "attn_k.weight"});
  out.push_back({"block_count 2", with("llama.block_count", 2), "blk.1.attn_norm.weight"});
  out.push_back({"block_count 2^31", with("llama.block_count", 1ull << 31), "above safedec's limit"});
  out.push_back({"context_length 2^62", with("llama.context_length", 1ull << 62), "above safedec's limit"});
  {
    // One layer of metadata but two layers of tensors.
    GgufBuilder b = tiny_llama_metadata();
    tiny_llama_tensors(b);
    auto f32 = [](size_t n) { return as_bytes(std::vector<float>(n, 1.0f)); };
    b.tensor("blk.1.attn_norm.weight", {8}, 0, f32(8));
    out.push_back({"more layers than block_count", b.build(), "block_count"});
  }
  return out;
}

// Tokenizer metadata that must be refused (ids outside the vocabulary of 4 tokens).
inline std::vector<MalformedCase> malformed_gguf_tokenizer() {
  std::vector<MalformedCase> out;
  for (const char* key : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"}) {
    GgufBuilder b = tiny_llama_metadata();
    b.kv_u32(key, 4);
    out.push_back({std::string(key) + " = vocabulary size", tiny_llama_tensors(b).build(), key});
    GgufBuilder c = tiny_llama_metadata();
    c.kv_i32(key, -1);
    out.push_back({std::string(key) + " = -1", tiny_llama_tensors(c).build(), key});
  }
  return out;
}

}  // namespace safedec::testing
