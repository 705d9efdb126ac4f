// unicode::nfc against Python unicodedata's NFC (tests/oracle/gen_qwen_golden.py nfc): every code
// point NFC changes, 1500 random strings of marks/bases/Hangul, offsets, and invalid UTF-8.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tokenizer/nfc.h"
#include "tokenizer/unicode.h"

using namespace safedec;
using json = nlohmann::json;

namespace {

json nfc_golden() {
  const std::string path = std::string(SAFEDEC_SOURCE_DIR) + "/tests/oracle/golden/nfc_cases.json";
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "missing golden file " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str());
}

std::string hex(const std::string& s) {
  std::string out;
  char buf[8];
  for (unsigned char c : s) {
    std::snprintf(buf, sizeof buf, "%02X ", c);
    out += buf;
  }
  return out;
}

}  // namespace

TEST(Nfc, EveryChangedCodePointMatchesPython) {
  const json g = nfc_golden();
  int n = 0;
  for (const auto& c : g["changed"]) {
    const std::string in = unicode::utf8_encode(c[0].get<uint32_t>());
    const std::string want = c[1].get<std::string>();
    EXPECT_EQ(unicode::nfc(in), want) << "U+" << std::hex << c[0].get<uint32_t>() << ": got " << hex(unicode::nfc(in))
                                      << " want " << hex(want);
    ++n;
  }
  EXPECT_GT(n, 1000);  // ~1100 code points (singletons, exclusions, decomposed-only, Hangul none)
}

TEST(Nfc, RandomMarkStringsMatchPython) {
  const json g = nfc_golden();
  int n = 0, changed = 0;
  for (const auto& c : g["strings"]) {
    const std::string in = c[0], want = c[1];
    const std::string got = unicode::nfc(in);
    EXPECT_EQ(got, want) << "input " << hex(in) << "\n  got " << hex(got) << "\n want " << hex(want);
    changed += in != want;
    ++n;
  }
  EXPECT_EQ(n, 1500);
  EXPECT_GT(changed, 500);  // the cases do exercise reordering and composition
}

TEST(Nfc, OffsetsPointAtTheSourceCharacter) {
  // "e" U+0301 "x" -> "é" "x": the composed é comes from offset 0, x from offset 3.
  const std::string text = "ae\xCC\x81x";
  std::string out;
  std::vector<size_t> origin;
  unicode::nfc_append(text, 1, text.size(), &out, &origin);
  EXPECT_EQ(out, "\xC3\xA9x");
  EXPECT_EQ(origin, (std::vector<size_t>{1, 1, 4}));
}

TEST(Nfc, AsciiIsStableAndInvalidBytesPassThrough) {
  const std::string ascii = "plain ASCII text 123 \t\n";
  EXPECT_TRUE(unicode::nfc_trivially_stable(ascii, 0, ascii.size()));
  EXPECT_EQ(unicode::nfc(ascii), ascii);
  // An invalid byte between a base and a mark blocks composition and is kept.
  const std::string bad = "e\xFF\xCC\x81";
  EXPECT_EQ(unicode::nfc(bad), bad);
  EXPECT_EQ(unicode::nfc("e\xCC\x81\xFF"), "\xC3\xA9\xFF");
}
