// GgufWriter: byte-identical to the independent test builder, round trips through GgufFile
// (every value type, the real SmolLM2 metadata, quantised tensors), control vectors, errors.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <functional>

#include "core/error.h"
#include "core/paths.h"
#include "gguf_builder.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "support/error_of.h"

using namespace safedec;
using safedec::testing_support::error_of;
using safedec::testing_support::kNoError;
using safedec::testing::GgufBuilder;
using safedec::testing::TempDir;

TEST(GgufWriter, SameBytesAsTheIndependentBuilder) {
  std::vector<float> a = {1, 2, 3};
  std::vector<uint8_t> q(34, 7);
  for (uint64_t align : {32u, 64u}) {
    GgufBuilder b(3, align);
    if (align != 32) b.kv_u32("general.alignment", static_cast<uint32_t>(align));
    b.kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 2)
        .kv_f32("x.f", 0.5f)
        .kv_bool("x.b", true)
        .kv_str_array("x.s", {"p", "qq"})
        .kv_i32_array("x.i", {-1, 2})
        .tensor("a", {3}, 0, safedec::testing::as_bytes(a))
        .tensor("q", {32}, 8, q);
    GgufWriter w(align);
    w.set_string("general.architecture", "llama");
    w.set_u32("llama.block_count", 2);
    w.set_f32("x.f", 0.5f);
    w.set_bool("x.b", true);
    w.set_string_array("x.s", {"p", "qq"});
    w.set_i32_array("x.i", {-1, 2});
    w.add_f32_tensor("a", {3}, a.data());
    w.add_tensor("q", {32}, GgmlType::Q8_0, q.data(), q.size());
    EXPECT_EQ(w.to_bytes(), b.build()) << "alignment " << align;
  }
}

TEST(GgufWriter, RealModelMetadataAndTensorsRoundTrip) {
  auto src = GgufFile::open(require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf"));
  GgufWriter w;
  for (const auto& kv : src->metadata()) w.set(kv.first, kv.second);
  for (const char* name : {"token_embd.weight", "blk.0.ffn_down.weight", "blk.0.attn_norm.weight"}) {
    const auto& t = src->tensor(name);
    w.add_tensor(t.name, t.ne, t.type, t.data, t.nbytes);
  }
  TempDir dir;
  const std::string path = dir.file("copy.gguf");
  w.write(path);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  auto copy = GgufFile::open(path);
  ASSERT_EQ(copy->metadata().size(), src->metadata().size());
  for (const auto& kv : src->metadata()) {
    const GgufValue& v = copy->get(kv.first);
    EXPECT_EQ(v.type, kv.second.type) << kv.first;
    EXPECT_EQ(v.to_string(1u << 30), kv.second.to_string(1u << 30)) << kv.first;
  }
  EXPECT_EQ(copy->get("tokenizer.ggml.merges").as_array()[100].as_string(),
            src->get("tokenizer.ggml.merges").as_array()[100].as_string());
  ASSERT_EQ(copy->tensors().size(), 3u);
  for (const auto& t : copy->tensors()) {
    const auto& o = src->tensor(t.name);
    EXPECT_EQ(t.ne, o.ne);
    EXPECT_EQ(t.type, o.type);
    ASSERT_EQ(t.nbytes, o.nbytes);
    EXPECT_EQ(std::memcmp(t.data, o.data, t.nbytes), 0) << t.name;
  }
  EXPECT_EQ(copy->dequantize_rows(copy->tensor("token_embd.weight"), 5, 6),
            src->dequantize_rows(src->tensor("token_embd.weight"), 5, 6));
}

TEST(GgufWriter, EveryValueTypeAndNestedArrays) {
  GgufWriter w(16);
  auto val = [](GgufValueType t, decltype(GgufValue::v) x) {
    GgufValue v;
    v.type = t;
    v.v = std::move(x);
    return v;
  };
  w.set("u8", val(GgufValueType::UINT8, uint64_t{200}));
  w.set("i8", val(GgufValueType::INT8, int64_t{-100}));
  w.set("u16", val(GgufValueType::UINT16, uint64_t{60000}));
  w.set("i16", val(GgufValueType::INT16, int64_t{-30000}));
  w.set("i64", val(GgufValueType::INT64, int64_t{-5}));
  w.set("u64", val(GgufValueType::UINT64, ~uint64_t{0}));
  w.set("f64", val(GgufValueType::FLOAT64, 0.1));
  GgufValue inner;
  inner.type = GgufValueType::ARRAY;
  inner.array_type = GgufValueType::UINT16;
  inner.v = std::make_shared<GgufArray>(GgufArray{val(GgufValueType::UINT16, uint64_t{1}), val(GgufValueType::UINT16, uint64_t{2})});
  GgufValue outer;
  outer.type = GgufValueType::ARRAY;
  outer.array_type = GgufValueType::ARRAY;
  outer.v = std::make_shared<GgufArray>(GgufArray{inner, inner});
  w.set("nested", outer);
  w.set_u32("u8", 5);  // replaces, keeps position
  const auto bytes = w.to_bytes();
  auto f = GgufFile::open_memory(bytes.data(), bytes.size());
  EXPECT_EQ(f->alignment(), 16u);
  EXPECT_EQ(f->get("u8").type, GgufValueType::UINT32);
  EXPECT_EQ(f->get_int("u8", 0), 5);
  EXPECT_EQ(f->get_int("i8", 0), -100);
  EXPECT_EQ(f->get_int("u16", 0), 60000);
  EXPECT_EQ(f->get_int("i16", 0), -30000);
  EXPECT_EQ(f->get_int("i64", 0), -5);
  EXPECT_EQ(std::get<uint64_t>(f->get("u64").v), ~uint64_t{0});
  EXPECT_DOUBLE_EQ(f->get_float("f64", 0), 0.1);
  EXPECT_EQ(f->get("nested").to_string(), "[[1, 2], [1, 2]]");

  GgufWriter bad;
  bad.set("x", val(GgufValueType::UINT8, uint64_t{300}));
  EXPECT_NE(error_of([&] { bad.to_bytes(); }).find("'x'"), std::string::npos);
}

TEST(GgufWriter, ControlVector) {
  TempDir dir;
  const std::string path = dir.file("cvec.gguf");
  write_control_vector_gguf(path, "llama", {{1, {1, 2, 3}}, {4, {-1, 0, 0.5f}}});
  auto f = GgufFile::open(path);
  EXPECT_EQ(f->architecture(), "controlvector");
  EXPECT_EQ(f->get_string("controlvector.model_hint", ""), "llama");
  EXPECT_EQ(f->get_int("controlvector.layer_count", 0), 5);
  EXPECT_EQ(f->tensors().size(), 2u);
  EXPECT_EQ(f->dequantize(f->tensor("direction.4")), (std::vector<float>{-1, 0, 0.5f}));
  EXPECT_EQ(f->tensor("direction.1").ne, (std::vector<int64_t>{3}));
  EXPECT_NE(error_of([&] { write_control_vector_gguf(path, "llama", {{0, {1}}}); }).find("layer index 0"),
            std::string::npos);
  EXPECT_NE(error_of([&] { write_control_vector_gguf(path, "llama", {{1, {1}}, {2, {1, 2}}}); }).find("layer 2"),
            std::string::npos);
}

TEST(GgufWriter, TensorChecks) {
  GgufWriter w;
  std::vector<uint8_t> q(34);
  EXPECT_THROW(w.add_tensor("q", {33}, GgmlType::Q8_0, q.data(), q.size()), Error);  // not whole blocks
  EXPECT_THROW(w.add_tensor("q", {64}, GgmlType::Q8_0, q.data(), q.size()), Error);  // wrong byte count
  w.add_tensor("q", {32}, GgmlType::Q8_0, q.data(), q.size());
  EXPECT_THROW(w.add_tensor("q", {32}, GgmlType::Q8_0, q.data(), q.size()), Error);  // duplicate
  EXPECT_THROW(GgufWriter(24), Error);
  EXPECT_NE(error_of([&] { w.write("/nonexistent-dir/x.gguf"); }).find("/nonexistent-dir/x.gguf.tmp"), std::string::npos);
}
