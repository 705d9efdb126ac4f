// Issue 15 for safetensors / Hugging Face checkpoints: every file of the malformed corpus
// (tests/unit/io/malformed_safetensors.h: header length, header JSON, overlapping or out-of-bounds
// offsets, offsets that disagree with dtype x shape, unknown dtypes, duplicate names, huge shapes) is
// refused with safedec::Error naming the tensor or what is wrong, both from memory and from disk; and
// whole HF checkpoints built from the tiny golden llama with one thing broken (a NaN weight, a weight
// stored as an integer dtype, a missing tensor, config.json sizes that disagree with the tensors or
// exceed safedec's limits, a truncated weights file) are refused by CausalLM::load naming the tensor
// or key, before any allocation from the bad sizes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "../io/malformed_safetensors.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "model/causal_lm.h"

using namespace safedec;
using namespace safedec::testing;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string golden_hf() { return std::string(SAFEDEC_SOURCE_DIR) + "/tests/oracle/golden/model_tiny_llama_hf"; }

std::string scratch(const std::string& tag) {
  const fs::path d = fs::temp_directory_path() / ("safedec_st_hard_" + std::to_string(::getpid())) / tag;
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

std::string open_error(const std::vector<uint8_t>& bytes) {
  try {
    auto f = SafetensorsFile::open_memory(bytes.data(), bytes.size(), "case.safetensors");
    for (const auto& t : f->tensors()) (void)safetensors_to_float32(t);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string load_error(const std::string& dir) {
  try {
    CausalLM::load(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The golden checkpoint's tensors as raw bytes, editable, and a writer of an HF directory from them.
struct Tensors {
  std::map<std::string, SafetensorsDtype> dtype;
  std::map<std::string, std::vector<int64_t>> shape;
  std::map<std::string, std::vector<uint8_t>> bytes;
};

Tensors golden_tensors() {
  auto f = SafetensorsFile::open(golden_hf() + "/model.safetensors");
  Tensors t;
  for (const auto& x : f->tensors()) {
    t.dtype[x.name] = x.dtype;
    t.shape[x.name] = x.shape;
    t.bytes[x.name].assign(x.data, x.data + x.nbytes);
  }
  return t;
}

json golden_config() {
  std::ifstream in(golden_hf() + "/config.json");
  return json::parse(in);
}

std::string write_hf(const std::string& tag, const Tensors& t, const json& config) {
  const std::string dir = scratch(tag);
  std::ofstream(dir + "/config.json") << config.dump(2);
  std::vector<SafetensorsWriteTensor> w;
  for (const auto& [name, b] : t.bytes) w.push_back({name, t.dtype.at(name), t.shape.at(name), b.data(), b.size()});
  write_safetensors(dir + "/model.safetensors", w, {{"format", "pt"}});
  return dir;
}

const char* kQ = "model.layers.1.self_attn.q_proj.weight";

}  // namespace

TEST(SafetensorsHardening, TheGoodImagesOpen) {
  EXPECT_EQ(open_error(good_safetensors()), "");
  EXPECT_EQ(load_error(write_hf("good", golden_tensors(), golden_config())), "");
}

TEST(SafetensorsHardening, EveryMalformedImageIsRefusedNamingWhatIsWrong) {
  const auto cases = malformed_safetensors();
  ASSERT_GE(cases.size(), 20u);
  for (const auto& m : cases) {
    const std::string e = open_error(m.bytes);
    ASSERT_FALSE(e.empty()) << m.name << ": opened without an error";
    EXPECT_NE(e.find(m.error), std::string::npos) << m.name << ": '" << m.error << "' not in: " << e;
  }
}

TEST(SafetensorsHardening, TheSameImagesOnDiskAreRefusedByTheFileAndCheckpointReaders) {
  const std::string dir = scratch("disk");
  size_t i = 0;
  for (const auto& m : malformed_safetensors()) {
    const std::string path = dir + "/case" + std::to_string(i++) + ".safetensors";
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(m.bytes.data()),
                                                static_cast<std::streamsize>(m.bytes.size()));
    try {
      SafetensorsFile::open(path);
      ADD_FAILURE() << m.name << ": SafetensorsFile::open accepted it";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << m.name << ": the file is not named: " << e.what();
      EXPECT_NE(std::string(e.what()).find(m.error), std::string::npos) << m.name << ": " << e.what();
    }
    try {
      SafetensorsCheckpoint::open(path);
      ADD_FAILURE() << m.name << ": SafetensorsCheckpoint::open accepted it";
    } catch (const Error&) {
    }
  }
}

TEST(SafetensorsHardening, BrokenHfCheckpointsAreRefusedNamingTensorOrKey) {
  struct Case {
    std::string name;
    std::string dir;
    std::vector<std::string> error;  // pieces of the message
  };
  std::vector<Case> cases;
  const Tensors good = golden_tensors();
  const json config = golden_config();
  ASSERT_TRUE(good.bytes.count(kQ)) << "the golden checkpoint changed: no " << kQ;
  ASSERT_EQ(good.dtype.at(kQ), SafetensorsDtype::F32);
  {
    Tensors t = good;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(t.bytes[kQ].data() + 4 * 5, &nan, 4);
    cases.push_back({"a NaN in a weight", write_hf("nan", t, config), {kQ, "NaN/Inf", "element 5"}});
  }
  {
    Tensors t = good;
    t.dtype[kQ] = SafetensorsDtype::I32;  // same byte size: the table is consistent, the type is not a weight's
    cases.push_back({"a weight stored as I32", write_hf("i32", t, config), {kQ, "I32"}});
  }
  {
    Tensors t = good;
    t.dtype.erase(kQ);
    t.shape.erase(kQ);
    t.bytes.erase(kQ);
    cases.push_back({"a missing tensor", write_hf("missing", t, config), {"has no tensor", kQ}});
  }
  auto with = [&](const std::string& tag, const std::string& key, json value) {
    json c = config;
    c[key] = value;
    return write_hf(tag, good, c);
  };
  cases.push_back({"hidden_size 64 (tensors have 32)", with("hidden", "hidden_size", 64), {"model.", "config.json implies"}});
  cases.push_back({"intermediate_size 96", with("inter", "intermediate_size", 96), {"mlp", "config.json implies"}});
  cases.push_back({"num_key_value_heads 4", with("kv", "num_key_value_heads", 4), {"k_proj", "config.json implies"}});
  cases.push_back({"num_hidden_layers 3", with("layers", "num_hidden_layers", 3), {"has no tensor", "model.layers.2."}});
  cases.push_back({"vocab_size 65", with("vocab65", "vocab_size", 65), {"embed_tokens", "config.json implies"}});
  cases.push_back({"vocab_size 2^40", with("vocab", "vocab_size", int64_t{1} << 40), {"config.json", "vocabulary size is 1099511627776", "above safedec's limit"}});
  cases.push_back({"intermediate_size 2^31", with("inter_huge", "intermediate_size", int64_t{1} << 31),
                   {"config.json", "feed-forward size is 2147483648", "above safedec's limit"}});
  cases.push_back({"num_hidden_layers 2^31", with("layers_huge", "num_hidden_layers", int64_t{1} << 31),
                   {"config.json", "number of layers is 2147483648", "above safedec's limit"}});
  cases.push_back({"hidden_size -32", with("negative", "hidden_size", -32), {"config.json", "hidden size must be positive"}});
  cases.push_back({"vocab_size a string", with("vocab_str", "vocab_size", "64"), {"vocab_size"}});
  {
    const std::string dir = write_hf("truncated", good, config);
    fs::resize_file(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") / 2);
    cases.push_back({"model.safetensors truncated", dir, {"model.safetensors"}});
  }
  {
    const std::string dir = write_hf("badjson", good, config);
    std::ofstream(dir + "/config.json") << "{\"hidden_size\": 32,";
    cases.push_back({"config.json not JSON", dir, {"config.json"}});
  }
  for (const auto& c : cases) {
    const std::string e = load_error(c.dir);
    ASSERT_FALSE(e.empty()) << c.name << ": CausalLM::load accepted it";
    for (const auto& piece : c.error)
      EXPECT_NE(e.find(piece), std::string::npos) << c.name << ": '" << piece << "' not in: " << e;
  }
}
