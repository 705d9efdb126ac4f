// Malformed GGUF files: each must raise safedec::Error whose message names the file and the
// reason (never crash, never allocate absurd amounts). Files are built in the test.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <functional>

#include "core/error.h"
#include "core/paths.h"
#include "gguf_builder.h"
#include "io/gguf.h"
#include "support/error_of.h"

using namespace safedec;
using safedec::testing_support::error_of;
using safedec::testing_support::kNoError;
using safedec::testing::GgufBuilder;
using safedec::testing::TempDir;

namespace {

std::string mem_error(const std::vector<uint8_t>& b, const std::string& name = "bad.gguf") {
  return error_of([&] { GgufFile::open_memory(b.data(), b.size(), name); });
}

#define EXPECT_ERROR_HAS(msg, needle) EXPECT_NE((msg).find(needle), std::string::npos) << "message: " << (msg)

std::vector<uint8_t> q8_block() {
  std::vector<uint8_t> b(34, 0);
  b[1] = 0x3c;  // d = 1.0 in fp16
  for (int i = 0; i < 32; ++i) b[2 + i] = static_cast<uint8_t>(i);
  return b;
}

std::vector<uint8_t> valid_file() {
  std::vector<float> f(8, 1.0f);
  return GgufBuilder(3)
      .kv_str("general.architecture", "llama")
      .kv_u32("llama.block_count", 1)
      .kv_str_array("tokenizer.ggml.tokens", {"a", "b", "c"})
      .kv_f32("x.f", 1.0f)
      .tensor("t.f32", {8}, 0, safedec::testing::as_bytes(f))
      .tensor("t.q8", {32}, 8, q8_block())
      .build();
}

// Header bytes of a file with given magic/version/counts and nothing else.
std::vector<uint8_t> header(const char* magic, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
  std::vector<uint8_t> b(magic, magic + 4);
  auto app = [&](const void* p, size_t n) { b.insert(b.end(), (const uint8_t*)p, (const uint8_t*)p + n); };
  app(&version, 4);
  app(&n_tensors, 8);
  app(&n_kv, 8);
  return b;
}

template <typename V>
void put(std::vector<uint8_t>& b, V v) {
  uint8_t x[sizeof(V)];
  std::memcpy(x, &v, sizeof(V));
  b.insert(b.end(), x, x + sizeof(V));
}
void put_str(std::vector<uint8_t>& b, const std::string& s) {
  put<uint64_t>(b, s.size());
  b.insert(b.end(), s.begin(), s.end());
}

}  // namespace

TEST(GgufErrors, TruncatedAtEveryByteOfASmallFile) {
  const auto full = valid_file();
  ASSERT_NO_THROW(GgufFile::open_memory(full.data(), full.size()));
  for (size_t cut = 0; cut < full.size(); ++cut) {
    std::vector<uint8_t> part(full.begin(), full.begin() + cut);
    const std::string msg = mem_error(part, "cut.gguf");
    ASSERT_NE(msg, kNoError) << "cut at " << cut << " of " << full.size() << " was accepted";
    ASSERT_NE(msg.find("cut.gguf"), std::string::npos) << msg;
    const bool says_why = msg.find("truncated") != std::string::npos || msg.find("not a GGUF file") != std::string::npos;
    ASSERT_TRUE(says_why) << "cut at " << cut << ": " << msg;
  }
}

TEST(GgufErrors, TruncatedCopiesOfTheRealModelFile) {
  // The SmolLM2 header + metadata spans ~1.8 MB (49k tokens and merges); cut inside the magic,
  // the counts, the token list, the merges, the tensor infos and the data section.
  const std::string src = require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf");
  std::ifstream in(src, std::ios::binary);
  std::vector<uint8_t> head(1900000);
  in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()));
  ASSERT_EQ(in.gcount(), static_cast<std::streamsize>(head.size()));
  TempDir dir;
  for (size_t cut : {2ul, 6ul, 17ul, 300ul, 5000ul, 400000ul, 1200000ul, 1780000ul, 1785600ul, 1899999ul}) {
    const std::string path = dir.file("smol_cut_" + std::to_string(cut) + ".gguf");
    safedec::testing::write_bytes(path, std::vector<uint8_t>(head.begin(), head.begin() + cut));
    const std::string msg = error_of([&] { GgufFile::open(path); });
    EXPECT_ERROR_HAS(msg, path);
    EXPECT_TRUE(msg.find("truncated") != std::string::npos || msg.find("not a GGUF") != std::string::npos) << msg;
  }
}

TEST(GgufErrors, WrongMagicAndVersions) {
  EXPECT_ERROR_HAS(mem_error(header("GGML", 3, 0, 0)), "not a GGUF file");
  EXPECT_ERROR_HAS(mem_error(header("GGML", 3, 0, 0)), "bad.gguf");
  EXPECT_ERROR_HAS(mem_error({}), "not a GGUF file");
  std::string msg = mem_error(header("GGUF", 1, 0, 0));
  EXPECT_ERROR_HAS(msg, "version 1");
  msg = mem_error(header("GGUF", 4, 0, 0));
  EXPECT_ERROR_HAS(msg, "unsupported version 4");
  msg = mem_error(header("GGUF", 0x03000000u, 0, 0));
  EXPECT_ERROR_HAS(msg, "big-endian");
  EXPECT_NO_THROW(GgufFile::open_memory(header("GGUF", 2, 0, 0).data(), 24));
}

TEST(GgufErrors, HugeCountsAreRejectedBeforeAllocating) {
  EXPECT_ERROR_HAS(mem_error(header("GGUF", 3, 1ull << 40, 0)), "declares 1099511627776 tensors");
  EXPECT_ERROR_HAS(mem_error(header("GGUF", 3, 0, ~0ull)), "metadata pairs");
  // A string length of 2^63 and an array of 2^60 elements.
  auto b = header("GGUF", 3, 0, 1);
  put<uint64_t>(b, 1ull << 63);
  EXPECT_ERROR_HAS(mem_error(b), "truncated");
  b = header("GGUF", 3, 0, 1);
  put_str(b, "arr");
  put<uint32_t>(b, 9);
  put<uint32_t>(b, 4);
  put<uint64_t>(b, 1ull << 60);
  EXPECT_ERROR_HAS(mem_error(b), "cannot fit");
  EXPECT_ERROR_HAS(mem_error(b), "'arr'");
}

TEST(GgufErrors, BadMetadataValues) {
  auto kv = [](uint32_t type, const std::vector<uint8_t>& value) {
    auto b = header("GGUF", 3, 0, 1);
    put_str(b, "k.bad");
    put<uint32_t>(b, type);
    b.insert(b.end(), value.begin(), value.end());
    return b;
  };
  EXPECT_ERROR_HAS(mem_error(kv(13, {0, 0, 0, 0})), "unknown metadata value type 13");
  EXPECT_ERROR_HAS(mem_error(kv(7, {2})), "neither 0 nor 1");
  EXPECT_ERROR_HAS(mem_error(kv(7, {2})), "'k.bad'");
  // Arrays nested five deep.
  std::vector<uint8_t> nested;
  for (int i = 0; i < 5; ++i) {
    put<uint32_t>(nested, 9);
    put<uint64_t>(nested, 1);
  }
  put<uint32_t>(nested, 0);
  put<uint64_t>(nested, 0);
  auto b = header("GGUF", 3, 0, 1);
  put_str(b, "deep");
  put<uint32_t>(b, 9);
  b.insert(b.end(), nested.begin(), nested.end());
  EXPECT_ERROR_HAS(mem_error(b), "nested deeper");
  // Duplicate key; alignment of the wrong type or not a power of two.
  EXPECT_ERROR_HAS(mem_error(GgufBuilder().kv_u32("a", 1).kv_u32("a", 2).build()), "duplicate metadata key");
  EXPECT_ERROR_HAS(mem_error(GgufBuilder().kv_u32("general.alignment", 48).build()), "not a power of two");
  EXPECT_ERROR_HAS(mem_error(GgufBuilder().kv_u64("general.alignment", 32).build()), "must be a uint32");
}

TEST(GgufErrors, BadTensorInfos) {
  const auto blk = q8_block();
  // Unknown ggml type id, too many dims, a row that is not a whole number of blocks.
  EXPECT_ERROR_HAS(mem_error(GgufBuilder().tensor("w", {32}, 4, blk).build()), "Unknown ggml tensor type id 4");
  EXPECT_ERROR_HAS(mem_error(GgufBuilder().tensor("w", {32}, 4, blk).build()), "'w'");
  EXPECT_ERROR_HAS(mem_error(GgufBuilder().tensor("w", {32}, 77, blk).build()), "type id 77");
  EXPECT_ERROR_HAS(mem_error(GgufBuilder().tensor("w", {1, 1, 1, 1, 32}, 0, blk).build()), "5 dimensions");
  EXPECT_ERROR_HAS(mem_error(GgufBuilder().tensor("w", {33}, 8, blk).build()), "not a multiple of the Q8_0 block size");
  EXPECT_ERROR_HAS(mem_error(GgufBuilder().tensor("w", {1ull << 62, 1ull << 62}, 0, blk).build()), "overflows");
  EXPECT_ERROR_HAS(mem_error(GgufBuilder().tensor("w", {32}, 8, blk).tensor("w", {32}, 8, blk).build()),
                   "duplicate tensor name");
}

TEST(GgufErrors, TensorDataPastEndOrMisaligned) {
  auto b = GgufBuilder().tensor("a", {32}, 8, q8_block()).tensor("big", {32, 4}, 8, q8_block()).build();
  // "big" claims 4 blocks (136 bytes) but the file has only 1 block after its offset.
  const std::string msg = mem_error(b, "short.gguf");
  EXPECT_ERROR_HAS(msg, "'big'");
  EXPECT_ERROR_HAS(msg, "past the end of the file");
  EXPECT_ERROR_HAS(msg, "short.gguf");

  // Misaligned offset: patch the second tensor's offset field to 40 (alignment 32).
  auto ok = GgufBuilder().tensor("a", {32}, 8, q8_block()).tensor("b", {32}, 8, q8_block()).build();
  ASSERT_NO_THROW(GgufFile::open_memory(ok.data(), ok.size()));
  // Layout: 24-byte header; tensor "a": 8+1 name, 4 n_dims, 8 ne, 4 type, 8 offset = 33 bytes;
  // tensor "b" info follows and its offset field is its last 8 bytes.
  const size_t off_b = 24 + 33 + 33 - 8;
  uint64_t got;
  std::memcpy(&got, ok.data() + off_b, 8);
  ASSERT_EQ(got, 64u);
  const uint64_t bad = 40;
  std::memcpy(ok.data() + off_b, &bad, 8);
  EXPECT_ERROR_HAS(mem_error(ok), "not a multiple of the alignment 32");
}

TEST(GgufErrors, FileSystemProblems) {
  TempDir dir;
  EXPECT_ERROR_HAS(error_of([&] { GgufFile::open(dir.file("absent.gguf")); }), "absent.gguf");
  EXPECT_ERROR_HAS(error_of([&] { GgufFile::open(dir.path()); }), "not a regular file");
  safedec::testing::write_bytes(dir.file("empty.gguf"), {});
  EXPECT_ERROR_HAS(error_of([&] { GgufFile::open(dir.file("empty.gguf")); }), "is empty");
  safedec::testing::write_bytes(dir.file("magic.gguf"), {'P', 'K', 3, 4, 0, 0, 0, 0});
  const std::string msg = error_of([&] { GgufFile::open(dir.file("magic.gguf")); });
  EXPECT_ERROR_HAS(msg, "magic.gguf");
  EXPECT_ERROR_HAS(msg, "\"PK\\x03\\x04\"");
}
