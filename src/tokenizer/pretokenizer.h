// Pre-tokenization: splitting normalised text into the pieces BPE runs on, as a chain of regex
// splits (PCRE2, UTF + Unicode properties) with Hugging Face's split behaviours.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace safedec {

// A byte range [begin, end) of the text being split.
struct TextSpan {
  size_t begin = 0;
  size_t end = 0;
};

// What happens to the regex matches (HF tokenizers SplitDelimiterBehavior).
enum class SplitBehavior { Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous };
SplitBehavior parse_split_behavior(const std::string& name);  // "Isolated", "merged_with_previous", ...

// One split step as plain data.
struct SplitStep {
  std::string pattern;
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
};

// One compiled PCRE2 pattern (UTF + UCP) with a split behaviour.
class RegexSplit {
 public:
  RegexSplit(const std::string& pattern, SplitBehavior behavior, bool invert = false);
  ~RegexSplit();
  RegexSplit(const RegexSplit&) = delete;
  RegexSplit& operator=(const RegexSplit&) = delete;
  // Splits each span of text into pieces (empty pieces dropped).
  void split(const std::string& text, const std::vector<TextSpan>& in, std::vector<TextSpan>* out) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  SplitBehavior behavior_;
  bool invert_;
  void* code_ = nullptr;  // pcre2_code_8*
};

// A sequence of splits applied in order.
class PreTokenizer {
 public:
  void add(const std::string& pattern, SplitBehavior behavior, bool invert = false);
  bool empty() const { return steps_.empty(); }
  std::vector<TextSpan> split(const std::string& text, TextSpan whole) const;

 private:
  std::vector<std::unique_ptr<RegexSplit>> steps_;
};

// Escapes a literal string for use as a PCRE2 pattern.
std::string regex_escape(const std::string& literal);

// Pre-tokenizer regexes by name (GGUF tokenizer.ggml.pre and HF pre-tokenizer equivalents).
namespace pretok {
extern const char* const kGpt2;    // GPT-2 / HF ByteLevel(use_regex) pattern
extern const char* const kLlama3;  // Llama 3 (tiktoken cl100k-style)
extern const char* const kQwen2;
// The split steps for a GGUF `tokenizer.ggml.pre` name; false if the name is unknown.
bool named_steps(const std::string& name, std::vector<SplitStep>* steps);
// Fills pt for a GGUF `tokenizer.ggml.pre` name; false if the name is unknown.
bool configure_named(const std::string& name, PreTokenizer* pt);
// Whether the named pre-tokenizer's reference tokenizer.json sets BPE ignore_merges (Llama 3).
bool named_ignores_merges(const std::string& name);
// The Hugging Face tokenizer.json of these vocabularies normalises to NFC first (Qwen2's
// tokenizers: normalizer NFC); llama.cpp does not, and we follow Hugging Face.
bool named_uses_nfc(const std::string& name);
std::vector<std::string> known_names();
}  // namespace pretok

}  // namespace safedec
