// Issue 15, class 3: bos/eos token ids outside the vocabulary are refused naming the key (they
// used to be treated as absent, so generation never saw its end token); an unreadable file says
// so instead of "cannot tell what kind of tokenizer" it is.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../io/malformed_gguf.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"

using namespace safedec;
using namespace safedec::testing;

namespace {

std::string load_error(const std::string& path) {
  try {
    load_tokenizer(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(TokenizerHardening, SpecialIdsOutsideTheVocabularyAreRefused) {
  TempDir dir;
  const std::string good = dir.file("good.gguf");
  {
    GgufBuilder b = tiny_llama_metadata();
    b.kv_u32("tokenizer.ggml.bos_token_id", 1).kv_u32("tokenizer.ggml.eos_token_id", 2);
    write_bytes(good, tiny_llama_tensors(b).build());
  }
  ASSERT_EQ(load_error(good), "");
  int n = 0;
  for (const auto& m : malformed_gguf_tokenizer()) {
    const std::string path = dir.file("case" + std::to_string(n++) + ".gguf");
    write_bytes(path, m.bytes);
    const std::string err = load_error(path);
    EXPECT_NE(err.find(m.error), std::string::npos) << m.name << ": " << (err.empty() ? "accepted" : err);
    EXPECT_NE(err.find("outside the vocabulary"), std::string::npos) << m.name << ": " << err;
  }
}

TEST(TokenizerHardening, AnUnreadableFileSaysWhy) {
  if (::geteuid() == 0) {
    // root reads files whatever their mode: the situation cannot be made here, so check the
    // message path with a directory-less name instead.
    EXPECT_NE(load_error("/nonexistent/model.gguf").find("does not exist"), std::string::npos);
    return;
  }
  TempDir dir;
  const std::string path = dir.file("locked.gguf");
  write_bytes(path, tiny_llama_gguf());
  ASSERT_EQ(::chmod(path.c_str(), 0), 0);
  const std::string err = load_error(path);
  EXPECT_NE(err.find("Permission denied"), std::string::npos) << err;
  EXPECT_EQ(err.find("Cannot tell what kind"), std::string::npos) << err;
}
