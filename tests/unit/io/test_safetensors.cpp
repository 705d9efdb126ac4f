// safetensors: files written by the Python package (tests/oracle/gen_safetensors_golden.py), a
// sharded checkpoint written by huggingface_hub, writer round trips, and malformed files.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "gguf_builder.h"
#include "io/half.h"
#include "io/safetensors.h"
#include "support/error_of.h"

using namespace safedec;
using safedec::testing_support::error_of;
using safedec::testing_support::kNoError;
using nlohmann::json;
using safedec::testing::TempDir;

namespace {

const std::string kGolden = std::string(SAFEDEC_SOURCE_DIR) + "/tests/oracle/golden/safetensors_py";

float golden_value(const json& v) {
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    return s == "nan" ? std::nanf("") : (s == "inf" ? INFINITY : -INFINITY);
  }
  return static_cast<float>(v.get<double>());
}

// A file image from a header text and a data section.
std::vector<uint8_t> image(const std::string& header, const std::vector<uint8_t>& data = {}) {
  std::vector<uint8_t> out(8);
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::string open_error(const std::vector<uint8_t>& bytes, const std::string& name = "bad.safetensors") {
  return error_of([&] { SafetensorsFile::open_memory(bytes.data(), bytes.size(), name); });
}

#define EXPECT_ERROR_HAS(msg, needle) EXPECT_NE((msg).find(needle), std::string::npos) << "message: " << (msg)

}  // namespace

TEST(Safetensors, ReadsEveryDtypeWrittenByPythonPackage) {
  auto f = SafetensorsFile::open(kGolden + "/mixed.safetensors");
  std::ifstream in(kGolden + "/mixed.json");
  const json g = json::parse(in);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->metadata().size(), g["metadata"].size());
  ASSERT_EQ(f->tensors().size(), g["tensors"].size());
  for (auto it = g["tensors"].begin(); it != g["tensors"].end(); ++it) {
    const SafetensorsTensor& t = f->tensor(it.key());
    EXPECT_STREQ(safetensors_dtype_name(t.dtype), it.value()["dtype"].get<std::string>().c_str()) << it.key();
    EXPECT_EQ(t.shape, it.value()["shape"].get<std::vector<int64_t>>()) << it.key();
    std::vector<float> v = f->to_float32(it.key());
    const json& want = it.value()["values"];
    ASSERT_EQ(v.size(), want.size()) << it.key();
    for (size_t i = 0; i < v.size(); ++i) {
      const float w = golden_value(want[i]);
      if (std::isnan(w))
        EXPECT_TRUE(std::isnan(v[i])) << it.key() << "[" << i << "]";
      else
        EXPECT_EQ(v[i], w) << it.key() << "[" << i << "]";
    }
  }
  EXPECT_EQ(f->find("nope"), nullptr);
  EXPECT_ERROR_HAS(error_of([&] { f->tensor("nope"); }), "'nope'");
  EXPECT_EQ(f->tensor("scalar.F32").numel(), 1);
  EXPECT_EQ(f->tensor("empty.F32").numel(), 0);
}

TEST(Safetensors, ShardedCheckpointWrittenByHuggingfaceHub) {
  auto c = SafetensorsCheckpoint::open(kGolden + "/sharded");
  EXPECT_EQ(c->files().size(), 3u);
  EXPECT_EQ(c->size(), 5u);
  EXPECT_EQ(c->metadata().at("total_size"), "640");
  for (int i = 0; i < 4; ++i) {
    std::vector<float> w = c->to_float32("model.layers." + std::to_string(i) + ".mlp.weight");
    ASSERT_EQ(w.size(), 32u);
    for (float x : w) EXPECT_EQ(x, static_cast<float>(i));
  }
  std::vector<float> head = c->to_float32("lm_head.weight");
  for (int i = 0; i < 32; ++i) EXPECT_EQ(head[i], static_cast<float>(i));
  EXPECT_EQ(c->tensor("lm_head.weight").shape, (std::vector<int64_t>{4, 8}));
  EXPECT_ERROR_HAS(error_of([&] { c->tensor("missing.weight"); }), "missing.weight");
  // A single file opened as a checkpoint.
  auto single = SafetensorsCheckpoint::open(kGolden + "/mixed.safetensors");
  EXPECT_EQ(single->size(), 14u);
}

TEST(Safetensors, WriterRoundTripsEveryDtype) {
  TempDir dir;
  std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f};
  std::vector<uint16_t> f16 = {float_to_half(1.0f), float_to_half(-0.5f), float_to_half(65504.0f)};
  std::vector<uint16_t> bf16 = {float_to_bf16(3.0f), float_to_bf16(-1e30f)};
  std::vector<int64_t> i64 = {-(1ll << 50), 7};
  std::vector<int8_t> i8 = {-1, 2, -3};
  std::vector<uint8_t> b = {1, 0, 1};
  std::vector<double> f64 = {0.1, -2.5};
  std::vector<SafetensorsWriteTensor> ts = {
      {"a.f32", SafetensorsDtype::F32, {2, 3}, f32.data(), f32.size() * 4},
      {"b.f16", SafetensorsDtype::F16, {3}, f16.data(), f16.size() * 2},
      {"c.bf16", SafetensorsDtype::BF16, {1, 2}, bf16.data(), bf16.size() * 2},
      {"d.i64", SafetensorsDtype::I64, {2}, i64.data(), i64.size() * 8},
      {"e.i8", SafetensorsDtype::I8, {3}, i8.data(), 3},
      {"f.bool", SafetensorsDtype::BOOL, {3}, b.data(), 3},
      {"g.f64", SafetensorsDtype::F64, {2, 1}, f64.data(), 16},
      {"h.empty", SafetensorsDtype::F32, {0}, nullptr, 0},
  };
  const std::string path = dir.file("out.safetensors");
  write_safetensors(path, ts, {{"format", "pt"}, {"safedec", "test"}});
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->metadata().at("safedec"), "test");
  EXPECT_EQ(f->tensors().size(), ts.size());
  for (const auto& w : ts) {
    const SafetensorsTensor& r = f->tensor(w.name);
    EXPECT_EQ(r.dtype, w.dtype) << w.name;
    EXPECT_EQ(r.shape, w.shape) << w.name;
    ASSERT_EQ(r.nbytes, w.nbytes) << w.name;
    if (w.nbytes) EXPECT_EQ(std::memcmp(r.data, w.data, w.nbytes), 0) << w.name;
    // Header padded to 8 and tensors ordered by element size: every tensor is aligned.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(r.data) % safetensors_dtype_size(r.dtype), 0u) << w.name;
  }
  uint64_t n;
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  EXPECT_EQ(f->to_float32("b.f16"), (std::vector<float>{1.0f, -0.5f, 65504.0f}));
  EXPECT_EQ(f->to_float32("c.bf16")[0], 3.0f);
  EXPECT_EQ(f->to_float32("d.i64")[0], static_cast<float>(-(1ll << 50)));
  EXPECT_EQ(f->to_float32("f.bool"), (std::vector<float>{1, 0, 1}));
  EXPECT_EQ(f->to_float32("g.f64"), (std::vector<float>{0.1f, -2.5f}));
  EXPECT_EQ(f->to_float32("a.f32"), f32);

  // Overwrite in place (rename over an existing file), and as a checkpoint directory.
  std::filesystem::create_directory(dir.file("ckpt"));
  write_safetensors(dir.file("ckpt/model.safetensors"), {ts[0]});
  write_safetensors(dir.file("ckpt/model.safetensors"), {ts[0], ts[1]});
  auto c = SafetensorsCheckpoint::open(dir.file("ckpt"));
  EXPECT_EQ(c->tensor_names(), (std::vector<std::string>{"a.f32", "b.f16"}));

  // Writer input errors.
  EXPECT_ERROR_HAS(error_of([&] { write_safetensors(dir.file("x.safetensors"), {ts[0], ts[0]}); }), "twice");
  SafetensorsWriteTensor wrong = ts[0];
  wrong.nbytes = 20;
  EXPECT_ERROR_HAS(error_of([&] { write_safetensors(dir.file("x.safetensors"), {wrong}); }), "'a.f32'");
  // Missing parent directories are created (artifacts go to fresh cache folders); a parent that is a
  // file is an error naming the path.
  write_safetensors(dir.file("new/sub/dir/x.safetensors"), {ts[0]});
  EXPECT_EQ(SafetensorsFile::open(dir.file("new/sub/dir/x.safetensors"))->to_float32("a.f32"), f32);
  std::ofstream(dir.file("plain_file")) << "x";
  EXPECT_ERROR_HAS(error_of([&] { write_safetensors(dir.file("plain_file/x.safetensors"), {ts[0]}); }),
                   "plain_file");
}

TEST(Safetensors, MalformedFilesThrowNamingFileAndReason) {
  const std::vector<uint8_t> four_floats(16, 0);
  const std::string ok_entry = R"("w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]})";
  // Sanity: the well-formed variant parses.
  EXPECT_NO_THROW(SafetensorsFile::open_memory(image("{" + ok_entry + "}", four_floats).data(), 8 + 2 + ok_entry.size() + 16));

  EXPECT_ERROR_HAS(open_error({1, 2, 3}), "bad.safetensors");
  EXPECT_ERROR_HAS(open_error({1, 2, 3}), "less than the 8-byte header length");

  std::vector<uint8_t> overflow(16, 0xff);  // header length 2^64-1
  EXPECT_ERROR_HAS(open_error(overflow), "header length field says 18446744073709551615");
  auto too_long = image("{" + ok_entry + "}", four_floats);
  const uint64_t longer = too_long.size();  // claims more than what follows
  std::memcpy(too_long.data(), &longer, 8);
  EXPECT_ERROR_HAS(open_error(too_long), "only");

  EXPECT_ERROR_HAS(open_error(image("{\"w\": [1, 2", four_floats)), "invalid JSON header");
  EXPECT_ERROR_HAS(open_error(image("[1,2]")), "JSON object");
  EXPECT_ERROR_HAS(open_error(image(R"({"w":{"dtype":"Q4","shape":[4],"data_offsets":[0,16]}})", four_floats)),
                   "unsupported dtype");
  EXPECT_ERROR_HAS(open_error(image(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,32]}})", four_floats)),
                   "past the end of the data section");
  EXPECT_ERROR_HAS(open_error(image(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", four_floats)),
                   "need 3 x 4 bytes");
  EXPECT_ERROR_HAS(open_error(image(R"({"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", four_floats)),
                   "not a non-negative integer");
  EXPECT_ERROR_HAS(open_error(image(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[8,0]}})", four_floats)),
                   "begin > end");
  EXPECT_ERROR_HAS(
      open_error(image(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                       four_floats)),
      "overlaps");
  EXPECT_ERROR_HAS(
      open_error(image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                       four_floats)),
      "gap");
  EXPECT_ERROR_HAS(open_error(image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", four_floats)),
                   "trailing data");
  EXPECT_ERROR_HAS(open_error(image("{" + ok_entry + "," + ok_entry + "}", four_floats)), "twice");
  EXPECT_ERROR_HAS(open_error(image(R"({"__metadata__":{"n":3}})")), "not a string");
  EXPECT_ERROR_HAS(open_error(image(R"({"w":{"dtype":"F32","shape":[18446744073709551615, 4],"data_offsets":[0,16]}})", four_floats)),
                   "overflows");
  EXPECT_ERROR_HAS(open_error(image(R"({"w":{"shape":[4],"data_offsets":[0,16]}})", four_floats)), "dtype");

  TempDir dir;
  safedec::testing::write_bytes(dir.file("t.safetensors"), image("{\"w\": [1, 2", four_floats));
  EXPECT_ERROR_HAS(error_of([&] { SafetensorsFile::open(dir.file("t.safetensors")); }), dir.file("t.safetensors"));
  EXPECT_ERROR_HAS(error_of([&] { SafetensorsFile::open(dir.file("absent.safetensors")); }), "absent.safetensors");
}

TEST(Safetensors, BadCheckpointDirectories) {
  TempDir dir;
  namespace fs = std::filesystem;
  EXPECT_ERROR_HAS(error_of([&] { SafetensorsCheckpoint::open(dir.file("nothing")); }), "does not exist");
  EXPECT_ERROR_HAS(error_of([&] { SafetensorsCheckpoint::open(dir.path()); }), "no .safetensors files");

  // Index naming a missing shard, a shard lacking the tensor, a path outside the directory.
  fs::copy_file(kGolden + "/sharded/model-00003-of-00003.safetensors", dir.file("model-00003-of-00003.safetensors"));
  auto with_index = [&](const std::string& text) {
    safedec::testing::write_text(dir.file("model.safetensors.index.json"), text);
    return error_of([&] { SafetensorsCheckpoint::open(dir.path()); });
  };
  EXPECT_ERROR_HAS(with_index(R"({"weight_map": {"lm_head.weight": "model-00001-of-00003.safetensors"}})"),
                   "does not exist");
  EXPECT_ERROR_HAS(with_index(R"({"weight_map": {"other.weight": "model-00003-of-00003.safetensors"}})"),
                   "does not contain it");
  EXPECT_ERROR_HAS(with_index(R"({"weight_map": {"lm_head.weight": "../model-00003-of-00003.safetensors"}})"),
                   "plain file name");
  EXPECT_ERROR_HAS(with_index(R"({"metadata": {}})"), "weight_map");
  EXPECT_ERROR_HAS(with_index("{not json"), "not valid JSON");
  auto ok = [&] {
    safedec::testing::write_text(dir.file("model.safetensors.index.json"),
                                 R"({"weight_map": {"lm_head.weight": "model-00003-of-00003.safetensors"}})");
    return SafetensorsCheckpoint::open(dir.path());
  }();
  EXPECT_EQ(ok->tensor_names(), (std::vector<std::string>{"lm_head.weight"}));
}

TEST(Safetensors, DtypeNamesAndSizes) {
  EXPECT_EQ(safetensors_dtype_from_name("BF16"), SafetensorsDtype::BF16);
  EXPECT_EQ(safetensors_dtype_size(SafetensorsDtype::F8_E4M3), 1u);
  EXPECT_EQ(safetensors_dtype_size(SafetensorsDtype::I64), 8u);
  EXPECT_ERROR_HAS(error_of([] { safetensors_dtype_from_name("F4"); }), "F8_E5M2");
}
