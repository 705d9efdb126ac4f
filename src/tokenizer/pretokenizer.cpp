// Regex pre-tokenization with PCRE2 in UTF mode with Unicode properties (\p{L}, \p{N}, \s). Each
// split finds all non-overlapping matches left to right and combines matches and gaps per the
// behaviour, mirroring tokenizers' Split / ByteLevel / Digits pre-tokenizers.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/pretokenizer.h"

#include <pcre2.h>

#include <algorithm>
#include <utility>

#include "core/error.h"

namespace safedec {

SplitBehavior parse_split_behavior(const std::string& raw) {
  std::string n;
  for (char c : raw)
    if (c != '_') n += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (n == "isolated") return SplitBehavior::Isolated;
  if (n == "removed") return SplitBehavior::Removed;
  if (n == "mergedwithprevious") return SplitBehavior::MergedWithPrevious;
  if (n == "mergedwithnext") return SplitBehavior::MergedWithNext;
  if (n == "contiguous") return SplitBehavior::Contiguous;
  fail("Unknown split behavior '", raw,
       "'; known: Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous.");
}

RegexSplit::RegexSplit(const std::string& pattern, SplitBehavior behavior, bool invert)
    : pattern_(pattern), behavior_(behavior), invert_(invert) {
  int err = 0;
  PCRE2_SIZE err_off = 0;
  // MATCH_INVALID_UTF: invalid UTF-8 in the input never matches instead of making pcre2 fail.
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &err_off, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    fail("Cannot compile the pre-tokenizer regex '", pattern, "' at offset ", err_off, ": ",
         reinterpret_cast<const char*>(msg), ".");
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // optional speed-up; falls back to the interpreter
  code_ = code;
}

RegexSplit::~RegexSplit() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void RegexSplit::split(const std::string& text, const std::vector<TextSpan>& in,
                       std::vector<TextSpan>* out) const {
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  struct Seg {
    size_t b, e;
    bool match;
  };
  std::vector<Seg> segs;
  for (const TextSpan& span : in) {
    segs.clear();
    size_t pos = span.begin, prev = span.begin;
    while (pos < span.end) {
      // Match inside the span only: the subject length is the span end.
      int rc = pcre2_match(code, subject, span.end, pos, 0, md, nullptr);
      if (rc < 0) {
        if (rc == PCRE2_ERROR_NOMATCH) break;
        pcre2_match_data_free(md);
        fail("Pre-tokenizer regex '", pattern_, "' failed with PCRE2 error ", rc, ".");
      }
      PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      size_t ms = ov[0], me = ov[1];
      if (me == ms) {  // empty match: step over one character
        pos = ms + 1;
        while (pos < span.end && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
        continue;
      }
      if (ms > prev) segs.push_back({prev, ms, false});
      segs.push_back({ms, me, true});
      prev = pos = me;
    }
    if (prev < span.end) segs.push_back({prev, span.end, false});
    if (invert_)
      for (auto& s : segs) s.match = !s.match;

    std::vector<Seg> res;
    switch (behavior_) {
      case SplitBehavior::Isolated:
        res = segs;
        break;
      case SplitBehavior::Removed:
        for (auto& s : segs)
          if (!s.match) res.push_back(s);
        break;
      case SplitBehavior::Contiguous: {
        bool prev_match = false;
        for (auto& s : segs) {  // neighbours with the same flag join (tokenizers' Contiguous)
          if (s.match == prev_match && !res.empty()) res.back().e = s.e;
          else res.push_back(s);
          prev_match = s.match;
        }
        break;
      }
      case SplitBehavior::MergedWithPrevious: {
        bool prev_match = false;
        for (auto& s : segs) {
          if (s.match && !prev_match && !res.empty()) res.back().e = s.e;
          else res.push_back({s.b, s.e, false});
          prev_match = s.match;
        }
        break;
      }
      case SplitBehavior::MergedWithNext: {
        bool prev_match = false;
        for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
          if (it->match && !prev_match && !res.empty()) res.back().b = it->b;
          else res.push_back({it->b, it->e, false});
          prev_match = it->match;
        }
        std::reverse(res.begin(), res.end());
        break;
      }
    }
    for (auto& s : res)
      if (s.e > s.b) out->push_back({s.b, s.e});
  }
  pcre2_match_data_free(md);
}

void PreTokenizer::add(const std::string& pattern, SplitBehavior behavior, bool invert) {
  steps_.push_back(std::make_unique<RegexSplit>(pattern, behavior, invert));
}

std::vector<TextSpan> PreTokenizer::split(const std::string& text, TextSpan whole) const {
  std::vector<TextSpan> cur{whole}, next;
  for (const auto& step : steps_) {
    next.clear();
    step->split(text, cur, &next);
    cur.swap(next);
  }
  return cur;
}

std::string regex_escape(const std::string& literal) {
  std::string out;
  for (char c : literal) {
    if (std::string("\\^$.|?*+()[]{}/-").find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}

namespace pretok {

const char* const kGpt2 = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace {
const std::vector<std::string> kGpt2Names = {"gpt2", "default", "mpt", "olmo", "jais", "gpt-2"};
// Digits isolated one by one before the GPT-2 regex (llama.cpp: starcoder/smollm family; HF:
// Sequence[Digits(individual_digits=true), ByteLevel]).
const std::vector<std::string> kDigitsGpt2Names = {"smollm", "starcoder", "refact", "codeshell", "exaone",
                                                   "minerva", "command-r"};
const std::vector<std::string> kLlama3Names = {"llama3", "llama-bpe", "llama-v3", "falcon3", "dbrx", "smaug-bpe"};
const std::vector<std::string> kQwen2Names = {"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"};
bool in(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}
}  // namespace

bool named_steps(const std::string& name, std::vector<SplitStep>* steps) {
  steps->clear();
  if (in(kGpt2Names, name)) {
    steps->push_back({kGpt2});
  } else if (in(kDigitsGpt2Names, name)) {
    steps->push_back({R"(\p{N})"});
    steps->push_back({kGpt2});
  } else if (in(kLlama3Names, name)) {
    steps->push_back({kLlama3});
  } else if (in(kQwen2Names, name)) {
    steps->push_back({kQwen2});
  } else {
    return false;
  }
  return true;
}

bool configure_named(const std::string& name, PreTokenizer* pt) {
  std::vector<SplitStep> steps;
  if (!named_steps(name, &steps)) return false;
  for (const auto& s : steps) pt->add(s.pattern, s.behavior, s.invert);
  return true;
}

// Llama 3's tokenizer.json sets ignore_merges, and llama.cpp does the same for these names.
bool named_ignores_merges(const std::string& name) { return in(kLlama3Names, name); }

bool named_uses_nfc(const std::string& name) { return name == "qwen2" || name == "deepseek-r1-qwen"; }

std::vector<std::string> known_names() {
  std::vector<std::string> all;
  for (const auto* v : {&kGpt2Names, &kDigitsGpt2Names, &kLlama3Names, &kQwen2Names})
    all.insert(all.end(), v->begin(), v->end());
  return all;
}

}  // namespace pretok
}  // namespace safedec
