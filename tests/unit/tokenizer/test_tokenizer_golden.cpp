// Golden tests: token ids of >= 200 strings per model identical to Hugging Face tokenizers
// (tests/oracle/gen_tokenizer_golden.py), decode(encode(s)) == s, and HF's decoded text.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/paths.h"
#include "io/gguf.h"
#include "tokenizer/stream_decoder.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

using namespace safedec;
using json = nlohmann::json;

namespace {

json load_golden(const std::string& name) {
  std::string path = std::string(SAFEDEC_SOURCE_DIR) + "/tests/oracle/golden/" + name;
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "missing golden file " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str());
}

std::string show(const std::vector<int32_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

void check_cases(const Tokenizer& tok, const json& g) {
  int n = 0;
  for (const auto& c : g["cases"]) {
    std::string text = c["text"];
    std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
    std::vector<int32_t> got = tok.encode(text, false);
    EXPECT_EQ(got, want) << "text=" << json(text).dump() << "\n got " << show(got) << "\nwant " << show(want);
    // SentencePiece vocabularies spell ' ' as U+2581, so a literal U+2581 decodes to a space.
    std::string expect_round_trip = text;
    if (tok.kind() == "bpe-byte-level") {
      // Bytes without a byte token (SmolLM2 lacks e.g. 0x04, 0x1D, 0xF1) are dropped, as in HF.
      std::string kept;
      for (char ch : text)
        if (tok.piece_to_token(std::string(1, ch)) >= 0) kept += ch;
      expect_round_trip = unicode::utf8_lossy(kept);
    } else
      for (size_t p; (p = expect_round_trip.find("\xE2\x96\x81")) != std::string::npos;)
        expect_round_trip.replace(p, 3, " ");
    EXPECT_EQ(tok.decode(got), expect_round_trip) << "round trip of " << json(text).dump();
    EXPECT_EQ(tok.decode(want), c["decoded"].get<std::string>()) << "HF decode of " << json(text).dump();
    ++n;
  }
  EXPECT_GE(n, 200);
  // Streaming: chunks concatenate to the full decode, also when every string runs together.
  std::vector<int32_t> all;
  for (const auto& c : g["cases"]) {
    std::vector<int32_t> ids = c["ids"].get<std::vector<int32_t>>();
    all.insert(all.end(), ids.begin(), ids.end());
    for (bool skip : {false, true}) {
      StreamDecoder stream(tok, skip);
      std::string text;
      for (int32_t id : ids) text += stream.push(id);
      text += stream.finish();
      EXPECT_EQ(text, tok.decode(ids, skip)) << "streamed " << json(c["text"]).dump();
    }
  }
  StreamDecoder stream(tok, false);
  std::string text;
  size_t held_max = 0;
  for (int32_t id : all) {
    std::string chunk = stream.push(id);
    text += chunk;
    if (chunk.empty()) ++held_max;
  }
  text += stream.finish();
  EXPECT_EQ(text, tok.decode(all));
  for (const auto& c : g["with_special"]) {
    std::string text = c["text"];
    std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode(text, true), want) << "with specials: " << json(text).dump();
    EXPECT_EQ(tok.decode(want, true), c["decoded_skip_special"].get<std::string>()) << json(text).dump();
  }
}

}  // namespace

TEST(TokenizerGolden, SmolLM2FromGguf) {
  json g = load_golden("tokenizer_smollm2.json");
  auto tok = load_tokenizer(require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf"));
  EXPECT_EQ(tok->vocab_size(), g["vocab_size"].get<int64_t>());
  EXPECT_EQ(tok->bos_id(), g["bos_id"].get<int32_t>());
  EXPECT_EQ(tok->eos_id(), g["eos_id"].get<int32_t>());
  EXPECT_EQ(tok->kind(), "bpe-byte-level");
  EXPECT_FALSE(tok->add_bos());  // tokenizer.ggml.add_bos_token = false
  const int32_t im_end = tok->piece_to_token("<|im_end|>");
  EXPECT_EQ(im_end, 2);
  EXPECT_TRUE(tok->is_eog(im_end));
  EXPECT_TRUE(tok->is_eog(tok->piece_to_token("<|endoftext|>")));
  EXPECT_FALSE(tok->is_eog(tok->piece_to_token("<|im_start|>")));
  EXPECT_TRUE(tok->is_special(tok->piece_to_token("<|im_start|>")));
  EXPECT_EQ(tok->token_to_piece(tok->piece_to_token(" the")), " the");
  check_cases(*tok, g);
}

TEST(TokenizerGolden, Gemma3FromGguf) {
  json g = load_golden("tokenizer_gemma3.json");
  auto tok = load_tokenizer(require_cached_model("gemma-3-270m-q4_k_m.gguf"));
  EXPECT_EQ(tok->vocab_size(), g["vocab_size"].get<int64_t>());
  EXPECT_EQ(tok->bos_id(), g["bos_id"].get<int32_t>());
  EXPECT_EQ(tok->eos_id(), g["eos_id"].get<int32_t>());
  EXPECT_EQ(tok->kind(), "bpe-sentencepiece");
  EXPECT_TRUE(tok->add_bos());
  EXPECT_EQ(tok->pad_id(), 0);
  EXPECT_EQ(tok->unk_id(), 3);
  const int32_t eot = tok->piece_to_token("<end_of_turn>");
  EXPECT_EQ(eot, 106);
  EXPECT_TRUE(tok->is_eog(eot));
  EXPECT_TRUE(tok->is_eog(tok->eos_id()));
  EXPECT_FALSE(tok->is_special(tok->piece_to_token("\n")));  // user-defined, not special
  EXPECT_EQ(tok->token_to_piece(tok->piece_to_token("<0x41>")), "A");  // byte-fallback token
  EXPECT_EQ(tok->piece_to_token(" the"), tok->piece_to_token("\xE2\x96\x81the"));
  check_cases(*tok, g);
}

namespace {

// The Qwen2.5 vocabulary shared by the two Qwen2.5-Coder GGUFs, against Hugging Face's Qwen2
// tokenizer (NFC + Qwen2 split regex + byte-level BPE; tests/oracle/gen_qwen_golden.py).
void check_qwen25(const std::string& file) {
  json g = load_golden("tokenizer_qwen25.json");
  auto tok = load_tokenizer(require_cached_model(file));
  EXPECT_EQ(tok->vocab_size(), g["vocab_size_file"].get<int64_t>());
  EXPECT_EQ(tok->vocab_size(), 151936);
  EXPECT_EQ(tok->kind(), "bpe-byte-level");
  EXPECT_FALSE(tok->add_bos());
  EXPECT_EQ(tok->eos_id(), g["eos_id"].get<int32_t>());
  EXPECT_EQ(tok->pad_id(), g["pad_id"].get<int32_t>());
  EXPECT_TRUE(tok->is_eog(tok->piece_to_token("<|im_end|>")));
  EXPECT_TRUE(tok->is_special(tok->piece_to_token("<|fim_prefix|>")));
  EXPECT_FALSE(tok->is_special(tok->piece_to_token("<tool_call>")));  // user-defined: matched whole, not special
  int n = 0;
  for (const auto& c : g["cases"]) {
    const std::string text = c["text"];
    const auto want = c["ids"].get<std::vector<int32_t>>();
    const auto got = tok->encode(text, false);
    EXPECT_EQ(got, want) << "text=" << json(text).dump() << "\n got " << show(got) << "\nwant " << show(want);
    EXPECT_EQ(tok->encode(text, true), want) << "no BOS/EOS for Qwen: " << json(text).dump();
    EXPECT_EQ(tok->decode(want), c["decoded"].get<std::string>()) << "HF decode of " << json(text).dump();
    EXPECT_EQ(tok->decode(want, true), c["decoded_skip_special"].get<std::string>()) << json(text).dump();
    ++n;
  }
  EXPECT_GE(n, 250);
}

}  // namespace

TEST(TokenizerGolden, Qwen25Coder05BFromGguf) { check_qwen25("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"); }
TEST(TokenizerGolden, Qwen25Coder15BFromGguf) { check_qwen25("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"); }
