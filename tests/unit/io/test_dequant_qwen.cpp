// Every tensor of both Qwen2.5-Coder GGUFs (0.5B: F32, Q5_0, Q8_0, Q4_K, Q6_K; 1.5B: F32, Q4_K,
// Q6_K) dequantised bit-identically to gguf-py: a position-weighted checksum of the bit patterns
// of each tensor's whole fp32 dequantisation equals the one tests/oracle/gen_qwen_golden.py wrote
// (sum_i bits(x_i) * K[i % 1024] mod 2^64, K odd: any single changed element changes it), and
// value slices of a few
// tensors per type are compared element by element (so a mismatch names the first bad element).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/paths.h"
#include "io/gguf.h"

using namespace safedec;
using nlohmann::json;

namespace {

// The checksum of gen_qwen_golden.py checksum(): K from a fixed 64-bit LCG, forced odd.
std::string checksum(const std::vector<float>& v) {
  static const std::vector<uint64_t> k = [] {
    std::vector<uint64_t> w(1024);
    uint64_t x = 0x243F6A8885A308D3ull;
    for (auto& e : w) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      e = x | 1;
    }
    return w;
  }();
  uint64_t total = 0;
  const uint32_t* bits = reinterpret_cast<const uint32_t*>(v.data());
  for (size_t i = 0; i < v.size(); ++i) total += static_cast<uint64_t>(bits[i]) * k[i & 1023];
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(total));
  return buf;
}

json golden() {
  const std::string path = std::string(SAFEDEC_SOURCE_DIR) + "/tests/oracle/golden/dequant_qwen.json";
  std::ifstream f(path);
  if (!f) throw Error("golden file missing: " + path + " (run tests/oracle/gen_qwen_golden.py dequant)");
  return json::parse(f);
}

void check_file(const json& m, const std::set<std::string>& want_types) {
  const std::string file = m["file"];
  auto gguf = GgufFile::open(require_cached_model(file));
  ASSERT_EQ(gguf->tensors().size(), m["tensors"].size()) << file;
  std::set<std::string> types;
  std::vector<float> buf;
  int sliced = 0;
  for (const auto& rec : m["tensors"]) {
    const std::string name = rec["name"];
    const GgufTensorInfo& t = gguf->tensor(name);
    EXPECT_EQ(ggml_type_name(t.type), rec["type"].get<std::string>()) << name;
    EXPECT_EQ(t.ne, rec["ne"].get<std::vector<int64_t>>()) << name;
    types.insert(ggml_type_name(t.type));
    buf.resize(static_cast<size_t>(t.n_elements()));
    gguf->dequantize(t, buf.data());  // (x86-64 is little-endian like gguf-py's "<f4")
    EXPECT_EQ(checksum(buf), rec["checksum"].get<std::string>()) << file << " tensor " << name << " ("
                                                                  << ggml_type_name(t.type) << ")";
    if (!rec.contains("slices")) continue;
    for (const auto& s : rec["slices"]) {
      const int64_t first = s["first"], count = s["count"];
      const auto& vals = s["values"];
      for (int64_t i = 0; i < count; ++i) {
        const float want = static_cast<float>(vals[static_cast<size_t>(i)].get<double>());
        const float got = buf[static_cast<size_t>(first + i)];
        uint32_t a, b;
        std::memcpy(&a, &got, 4);
        std::memcpy(&b, &want, 4);
        ASSERT_EQ(a, b) << file << " " << name << " element " << first + i << ": " << got << " vs gguf-py " << want;
      }
      ++sliced;
    }
  }
  EXPECT_EQ(types, want_types) << file;
  EXPECT_GT(sliced, 0);
}

}  // namespace

TEST(DequantQwen, EveryTensorOfThe05BMatchesGgufPy) {
  const json g = golden();
  check_file(g["models"][0], {"F32", "Q5_0", "Q8_0", "Q4_K", "Q6_K"});
}

TEST(DequantQwen, EveryTensorOfThe15BMatchesGgufPy) {
  const json g = golden();
  check_file(g["models"][1], {"F32", "Q4_K", "Q6_K"});
}
