// Issue 15, class 3 for trained artifacts: every typed loader (ICV, soft prompts, harm vector, risk
// probe, LoRA, expert weights via read_tensors_f32) reads its tensors through one check
// (artifacts/tensor_check.h) that refuses a non-float dtype, NaN/Inf and absurd magnitudes, naming
// the file and the tensor; F16/BF16/F64 files are still accepted.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "artifacts/artifact.h"
#include "artifacts/tensor_check.h"
#include "artifacts/typed.h"
#include "core/error.h"
#include "io/safetensors.h"

using namespace safedec;
namespace fs = std::filesystem;

namespace {

ModelConfig tiny_config() {
  ModelConfig c;
  c.architecture = "llama";
  c.name = "tiny-artifacts";
  c.n_layers = 2;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 4;
  c.vocab_size = 32;
  c.context_length = 64;
  return c;
}

std::string scratch(const std::string& tag) {
  const fs::path d = fs::temp_directory_path() / ("safedec_art_hard_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return (d / tag).string();
}

// One tensor of `shape` filled with `value`, stored as `dtype` (integer dtypes hold the truncated value).
struct Raw {
  std::string name;
  SafetensorsDtype dtype;
  std::vector<int64_t> shape;
  double value;
};

std::vector<uint8_t> encode(const Raw& r) {
  int64_t n = 1;
  for (auto s : r.shape) n *= s;
  const size_t es = safetensors_dtype_size(r.dtype);
  std::vector<uint8_t> out(static_cast<size_t>(n) * es);
  for (int64_t i = 0; i < n; ++i) {
    uint8_t* p = out.data() + static_cast<size_t>(i) * es;
    switch (r.dtype) {
      case SafetensorsDtype::F32: {
        const float v = static_cast<float>(r.value);
        std::memcpy(p, &v, 4);
        break;
      }
      case SafetensorsDtype::F64: std::memcpy(p, &r.value, 8); break;
      case SafetensorsDtype::F16: {  // 0.5 and 1.0 only (exact); enough for the acceptance check
        const uint16_t h = r.value == 1.0 ? 0x3C00 : 0x3800;
        std::memcpy(p, &h, 2);
        break;
      }
      case SafetensorsDtype::BF16: {
        const float v = static_cast<float>(r.value);
        uint32_t bits;
        std::memcpy(&bits, &v, 4);
        const uint16_t b = static_cast<uint16_t>(bits >> 16);
        std::memcpy(p, &b, 2);
        break;
      }
      case SafetensorsDtype::I32: {
        const int32_t v = static_cast<int32_t>(r.value);
        std::memcpy(p, &v, 4);
        break;
      }
      case SafetensorsDtype::I64: {
        const int64_t v = static_cast<int64_t>(r.value);
        std::memcpy(p, &v, 8);
        break;
      }
      default: std::memset(p, static_cast<int>(r.value) & 1, es); break;
    }
  }
  return out;
}

std::string write_file(const std::string& tag, const std::vector<Raw>& tensors) {
  const std::string path = scratch(tag + ".safetensors");
  std::vector<std::vector<uint8_t>> bytes;
  for (const auto& r : tensors) bytes.push_back(encode(r));
  std::vector<SafetensorsWriteTensor> w;
  for (size_t i = 0; i < tensors.size(); ++i)
    w.push_back({tensors[i].name, tensors[i].dtype, tensors[i].shape, bytes[i].data(), bytes[i].size()});
  write_safetensors(path, w);
  return path;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_refused(const std::function<void()>& f, const std::vector<std::string>& parts) {
  const std::string e = error_of(f);
  ASSERT_FALSE(e.empty()) << "accepted, but should be refused (" << parts.front() << ")";
  for (const auto& p : parts) EXPECT_NE(e.find(p), std::string::npos) << "'" << p << "' missing from: " << e;
}

const double kInf = std::numeric_limits<double>::infinity();
const double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

TEST(ArtifactHardening, IcvOfANonFloatDtypeIsRefusedNamingFileAndTensor) {
  const ModelConfig c = tiny_config();
  for (auto dt : {SafetensorsDtype::I32, SafetensorsDtype::I64, SafetensorsDtype::U8, SafetensorsDtype::BOOL,
                  SafetensorsDtype::I16}) {
    const std::string name = safetensors_dtype_name(dt);
    const std::string f = write_file("icv_" + name, {{"icv", dt, {2, 8}, 1}});
    expect_refused([&] { load_icv(f, c); }, {f, "'icv'", "stored as " + name, "floating point"});
  }
}

TEST(ArtifactHardening, IcvWithHugeNaNOrInfValuesIsRefused) {
  const ModelConfig c = tiny_config();
  const std::string huge = write_file("icv_huge", {{"icv", SafetensorsDtype::F32, {2, 8}, 1e30}});
  expect_refused([&] { load_icv(huge, c); }, {huge, "'icv'", "magnitude", "1e+06"});
  const std::string huge64 = write_file("icv_huge64", {{"icv", SafetensorsDtype::F64, {2, 8}, 1e30}});
  // 1e30 fits fp32, so it reaches the magnitude check too (not a conversion overflow).
  expect_refused([&] { load_icv(huge64, c); }, {huge64, "magnitude"});
  const std::string inf = write_file("icv_inf", {{"icv", SafetensorsDtype::F32, {2, 8}, kInf}});
  expect_refused([&] { load_icv(inf, c); }, {inf, "'icv'", "16 NaN/Inf"});
  const std::string nan = write_file("icv_nan", {{"icv", SafetensorsDtype::F32, {2, 8}, kNaN}});
  expect_refused([&] { load_icv(nan, c); }, {nan, "NaN/Inf"});
}

TEST(ArtifactHardening, FloatDtypesStillLoadWithTheirValues) {
  const ModelConfig c = tiny_config();
  for (auto dt : {SafetensorsDtype::F32, SafetensorsDtype::F16, SafetensorsDtype::BF16, SafetensorsDtype::F64}) {
    const std::string f = write_file(std::string("icv_ok_") + safetensors_dtype_name(dt), {{"icv", dt, {2, 8}, 0.5}});
    torch::Tensor icv = load_icv(f, c);
    ASSERT_EQ(icv.sizes(), (std::vector<int64_t>{2, 8}));
    EXPECT_EQ(icv.scalar_type(), torch::kFloat32);
    EXPECT_TRUE(torch::allclose(icv, torch::full({2, 8}, 0.5f))) << safetensors_dtype_name(dt);
  }
  // The bound is inclusive and generous: 1e6 itself loads.
  const std::string edge = write_file("icv_edge", {{"icv", SafetensorsDtype::F32, {2, 8}, 1e6}});
  EXPECT_EQ(load_icv(edge, c).max().item<double>(), 1e6);
}

TEST(ArtifactHardening, SoftPromptsHarmVectorAndProbeGoThroughTheSameCheck) {
  const ModelConfig c = tiny_config();
  const std::string sp = write_file("soft", {{"sp", SafetensorsDtype::F32, {3, 8}, 0.1},
                                             {"ap", SafetensorsDtype::I64, {3, 8}, 1}});
  expect_refused([&] { load_soft_prompts(sp, c); }, {sp, "'ap'", "stored as I64"});
  const std::string sp_inf = write_file("soft_inf", {{"sp", SafetensorsDtype::F32, {3, 8}, kInf},
                                                     {"ap", SafetensorsDtype::F32, {3, 8}, 0.1}});
  expect_refused([&] { load_soft_prompts(sp_inf, c); }, {sp_inf, "'sp'", "NaN/Inf"});

  const std::string hv = write_file("harm", {{"layers.0.attn_q", SafetensorsDtype::F32, {8, 8}, 0.01},
                                             {"layers.1.attn_q", SafetensorsDtype::U8, {8, 8}, 1}});
  expect_refused([&] { load_harm_vector(hv, c); }, {hv, "'layers.1.attn_q'", "stored as U8"});
  const std::string hv_big = write_file("harm_big", {{"layers.0.attn_q", SafetensorsDtype::F32, {8, 8}, -1e30}});
  expect_refused([&] { load_harm_vector(hv_big, c); }, {hv_big, "'layers.0.attn_q'", "magnitude"});

  const std::string probe = write_file("probe", {{"weight", SafetensorsDtype::F32, {8}, 0.2},
                                                 {"bias", SafetensorsDtype::BOOL, {1}, 1}});
  expect_refused([&] { load_risk_probe(probe, c); }, {probe, "'bias'", "stored as BOOL"});
  const std::string probe_big = write_file("probe_big", {{"weight", SafetensorsDtype::F32, {8}, 3e8},
                                                         {"bias", SafetensorsDtype::F32, {1}, 0}});
  expect_refused([&] { load_risk_probe(probe_big, c); }, {probe_big, "'weight'", "magnitude"});
  // And a good probe still loads.
  const std::string probe_ok = write_file("probe_ok", {{"weight", SafetensorsDtype::F32, {8}, 0.2},
                                                       {"bias", SafetensorsDtype::F32, {1}, -1}});
  EXPECT_EQ(load_risk_probe(probe_ok, c).weight.numel(), 8);
}

TEST(ArtifactHardening, LoraFactorsAndExpertWeightsAreChecked) {
  const ModelConfig c = tiny_config();
  const std::string dir = scratch("lora");
  fs::create_directories(dir);
  std::ofstream(dir + "/adapter_config.json") << R"({"r": 2, "lora_alpha": 4})";
  const std::string a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
  const std::string b = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";
  auto write_adapter = [&](SafetensorsDtype a_dtype, double a_value) {
    const std::string f = write_file("adapter", {{a, a_dtype, {2, 8}, a_value}, {b, SafetensorsDtype::F32, {8, 2}, 0.1}});
    fs::rename(f, dir + "/adapter_model.safetensors");
  };
  write_adapter(SafetensorsDtype::F32, 0.1);
  ASSERT_NE(load_lora_adapter(dir, c), nullptr);  // the well-formed adapter loads
  write_adapter(SafetensorsDtype::I32, 1);
  expect_refused([&] { load_lora_adapter(dir, c); }, {dir + "/adapter_model.safetensors", "'" + a + "'", "stored as I32"});
  write_adapter(SafetensorsDtype::F32, 1e30);
  expect_refused([&] { load_lora_adapter(dir, c); }, {"'" + a + "'", "magnitude"});
  write_adapter(SafetensorsDtype::F32, 0.1);
  std::ofstream(dir + "/adapter_config.json") << R"({"r": 2, "lora_alpha": 1e30})";
  expect_refused([&] { load_lora_adapter(dir, c); }, {"adapter_config.json", "lora_alpha", "1e+30"});

  // Expert weights are read with read_tensors_f32 (after the manifest's hash check): same rule.
  const std::string w = write_file("weights", {{"embed", SafetensorsDtype::F32, {32, 8}, 0.1},
                                               {"final_norm", SafetensorsDtype::I16, {8}, 1}});
  expect_refused([&] { read_tensors_f32(w); }, {w, "'final_norm'", "stored as I16"});
  const std::string w_nan = write_file("weights_nan", {{"embed", SafetensorsDtype::F32, {32, 8}, kNaN}});
  expect_refused([&] { read_tensors_f32(w_nan); }, {w_nan, "'embed'", "256 NaN/Inf"});
  EXPECT_EQ(read_tensors_f32(write_file("weights_ok", {{"embed", SafetensorsDtype::BF16, {32, 8}, 0.5}})).size(), 1u);
}
