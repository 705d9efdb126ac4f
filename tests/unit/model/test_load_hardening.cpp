// Issue 15, class 2: CausalLM::load refuses metadata sizes that are absurd or disagree with the
// tensors before it allocates anything sized from them (a vocabulary of 2^31 used to end in an
// allocation of terabytes); the same for a Hugging Face config.json next to its safetensors.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "../io/malformed_gguf.h"
#include "core/error.h"
#include "model/causal_lm.h"

namespace fs = std::filesystem;
using namespace safedec;
using namespace safedec::testing;

namespace {

std::string load_error(const std::string& path) {
  try {
    CausalLM::load(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string golden(const std::string& name) { return std::string(SAFEDEC_SOURCE_DIR) + "/tests/oracle/golden/" + name; }

}  // namespace

TEST(LoadHardening, TheTinyGgufLoadsAndEveryBrokenCopyIsRefused) {
  TempDir dir;
  const std::string good = dir.file("tiny.gguf");
  write_bytes(good, tiny_llama_gguf());
  ASSERT_EQ(load_error(good), "");
  int n = 0;
  for (const auto& list : {malformed_gguf_sizes(), malformed_gguf_tables()}) {
    for (const auto& m : list) {
      const std::string path = dir.file("case" + std::to_string(n++) + ".gguf");
      write_bytes(path, m.bytes);
      const std::string err = load_error(path);
      EXPECT_NE(err.find(m.error), std::string::npos) << m.name << ": " << (err.empty() ? "loaded" : err);
    }
  }
}

TEST(LoadHardening, HfConfigSizesAreCheckedAgainstTheSafetensors) {
  const std::string src = golden("model_tiny_llama_hf");
  ASSERT_TRUE(fs::exists(src + "/config.json")) << "missing test fixture " << src;
  TempDir dir;
  auto with = [&](const std::string& key, const nlohmann::json& value) {
    const std::string d = dir.file(key + "_" + value.dump());
    fs::create_directories(d);
    fs::copy_file(src + "/model.safetensors", d + "/model.safetensors");
    std::ifstream in(src + "/config.json");
    nlohmann::json cfg = nlohmann::json::parse(in);
    cfg[key] = value;
    std::ofstream(d + "/config.json") << cfg.dump();
    return d;
  };
  EXPECT_EQ(load_error(src), "");
  const std::string huge = load_error(with("vocab_size", int64_t{1} << 40));
  EXPECT_NE(huge.find("above safedec's limit"), std::string::npos) << huge;
  const std::string moderate = load_error(with("vocab_size", 65));
  EXPECT_NE(moderate.find("embed_tokens.weight"), std::string::npos) << moderate;
  const std::string ffn = load_error(with("intermediate_size", 4096));
  EXPECT_NE(ffn.find("gate_proj.weight"), std::string::npos) << ffn;
}
