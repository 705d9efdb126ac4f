// Issue 15, classes 2 and 3: a GGUF whose tensor table is inconsistent (overlapping data, a type
// whose byte size no longer matches its range) is refused when opened; metadata sizes that exceed
// sane limits or disagree with the tensors are refused by check_gguf_tensor_shapes, naming the key
// or tensor, before anything is allocated from them.
#include <gtest/gtest.h>

#include <filesystem>

#include "core/error.h"
#include "core/paths.h"
#include "io/gguf.h"
#include "io/model_config.h"
#include "malformed_gguf.h"

using namespace safedec;
using namespace safedec::testing;

namespace {

// The error of opening + checking the image, or "" when everything passes.
std::string load_error(const std::vector<uint8_t>& bytes) {
  try {
    auto f = GgufFile::open_memory(bytes.data(), bytes.size(), "case.gguf");
    ModelConfig c = model_config_from_gguf(*f);
    check_gguf_tensor_shapes(c, *f);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(GgufHardening, TheTinyModelItselfPasses) {
  const auto bytes = tiny_llama_gguf();
  EXPECT_EQ(load_error(bytes), "");
  auto f = GgufFile::open_memory(bytes.data(), bytes.size(), "tiny.gguf");
  const ModelConfig c = model_config_from_gguf(*f);
  EXPECT_EQ(c.n_layers, 1);
  EXPECT_EQ(c.hidden_size, 8);
  EXPECT_EQ(c.intermediate_size, 16);
  EXPECT_EQ(c.vocab_size, 4);
}

TEST(GgufHardening, InconsistentTensorTablesAreRefusedNamingTheTensor) {
  for (const auto& m : malformed_gguf_tables()) {
    try {
      GgufFile::open_memory(m.bytes.data(), m.bytes.size(), "case.gguf");
      ADD_FAILURE() << m.name << ": opened without an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(m.error), std::string::npos) << m.name << ": " << e.what();
    }
  }
}

TEST(GgufHardening, OverlapAndTypeChangeMessagesNameBothFacts) {
  const auto cases = malformed_gguf_tables();
  const std::string overlap = load_error(cases[0].bytes);
  EXPECT_NE(overlap.find("blk.0.attn_k.weight"), std::string::npos) << overlap;
  EXPECT_NE(overlap.find("blk.0.attn_v.weight"), std::string::npos) << overlap;
  const std::string retyped = load_error(cases[1].bytes);
  EXPECT_NE(retyped.find("blk.0.attn_q.weight"), std::string::npos) << retyped;
  EXPECT_NE(retyped.find("F16"), std::string::npos) << retyped;
}

TEST(GgufHardening, MetadataSizesAreCheckedAgainstLimitsAndTensors) {
  for (const auto& m : malformed_gguf_sizes()) {
    const std::string err = load_error(m.bytes);
    EXPECT_FALSE(err.empty()) << m.name << ": accepted";
    EXPECT_NE(err.find(m.error), std::string::npos) << m.name << ": " << err;
  }
}

TEST(GgufHardening, ModelConfigCapsHfSizesToo) {
  const std::string base = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 1,
    "hidden_size": 8, "intermediate_size": 16, "num_attention_heads": 2, "num_key_value_heads": 1,
    "rms_norm_eps": 1e-5, "vocab_size": VOCAB})";
  auto with_vocab = [&](const std::string& v) {
    std::string s = base;
    s.replace(s.find("VOCAB"), 5, v);
    return s;
  };
  EXPECT_NO_THROW(model_config_from_hf_json_text(with_vocab("4"), "config.json"));
  try {
    model_config_from_hf_json_text(with_vocab("1099511627776"), "config.json");
    ADD_FAILURE() << "vocab_size 2^40 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("above safedec's limit"), std::string::npos) << e.what();
  }
}

TEST(GgufHardening, EveryCachedRealModelPassesTheChecks) {
  // The default model must be there (scripts/setup.sh); any other cached GGUF is checked too.
  const std::string smol = require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf");
  int checked = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(smol).parent_path())) {
    if (e.path().extension() != ".gguf") continue;
    try {
      auto f = GgufFile::open(e.path().string());
      check_gguf_tensor_shapes(model_config_from_gguf(*f), *f);
      ++checked;
    } catch (const Error& err) {
      ADD_FAILURE() << e.path() << ": " << err.what();
    }
  }
  EXPECT_GE(checked, 1);
}
