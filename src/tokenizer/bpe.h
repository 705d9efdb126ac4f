// BpeTokenizer: byte-level BPE (GPT-2 / Llama 3 / Qwen / SmolLM) and SentencePiece-style BPE with
// byte fallback (Gemma, Llama 2 converted by HF), both described by a BpeSpec that the GGUF and
// tokenizer.json loaders fill.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"

namespace safedec {

// A merge given by token ids: left + right -> merged.
struct MergeIds {
  int32_t left = -1, right = -1, merged = -1;
};

// Everything needed to build a BpeTokenizer (plain data, filled by the loaders).
struct BpeSpec {
  enum class Mode { ByteLevel, SentencePiece };
  // An added token matched in the raw text before BPE (HF added_tokens; GGUF control/user-defined).
  struct Added {
    int32_t id = -1;
    std::string content;
    bool special = false;
  };
  using Split = SplitStep;  // a pre-tokenizer regex split step

  Mode mode = Mode::ByteLevel;
  std::vector<std::string> vocab;  // id -> spelling (model form: "Ġthe" / "▁the")
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::vector<MergeIds> merge_ids;  // alternative to `merges` (used when merges is empty)
  std::vector<Added> added;
  // Normalizer: Unicode NFC first (Qwen2), then ' ' -> U+2581 and a prefix put before the first
  // text segment (or every segment).
  bool nfc = false;
  bool replace_space = false;
  std::string prepend;
  bool prepend_every_segment = false;
  bool prepend_unless_present = false;  // Metaspace: no prefix when the segment already starts with it
  // ByteLevel(add_prefix_space): a ' ' before the first segment when it does not start with one.
  bool byte_level_prefix_space = false;
  std::vector<Split> splits;
  bool byte_fallback = false;
  bool fuse_unk = false;
  bool ignore_merges = false;  // a word already in the vocabulary is one token (Llama 3)
  // Decoder: drop one leading space of the decoded text (SentencePiece prefix space).
  bool strip_leading_space = false;
  // Post-processor: ids put around the sequence when add_special is true.
  std::vector<int32_t> prefix_ids, suffix_ids;
  int32_t bos_id = -1, eos_id = -1, pad_id = -1, unk_id = -1;
  // The BPE model's own unknown token; -1: characters/bytes without a token are dropped, as HF
  // tokenizers does when model.unk_token is null.
  int32_t model_unk_id = -1;
  std::vector<int32_t> extra_eog;
  std::string chat_template;
  std::string source;
};

// Merges derived from a vocabulary, as transformers' generate_merges does for GGUF vocabularies
// without merges: every split of a token into two vocabulary tokens, best score first (ties:
// longer left part first). scores[i] belongs to vocab[i].
std::vector<MergeIds> generate_merges(const std::vector<std::string>& vocab, const std::vector<double>& scores);

// BPE with HF tokenizers' exact merge order (lowest rank first, leftmost on ties).
class BpeTokenizer : public Tokenizer {
 public:
  explicit BpeTokenizer(BpeSpec spec);
  Encoding encode_with_offsets(const std::string& text, bool add_special = true) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  std::string token_to_piece(int32_t id) const override;
  std::string token_text(int32_t id) const override;
  int32_t piece_to_token(const std::string& piece) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(vocab_.size()); }
  bool is_special(int32_t id) const override;
  std::string kind() const override;

 private:
  // One token of a word: id and its byte range [begin, end) within the (normalised) word.
  struct WordToken {
    int32_t id;
    uint32_t begin, end;
  };
  using Word = std::vector<WordToken>;
  struct TrieNode {
    std::vector<std::pair<uint8_t, int32_t>> next;  // sorted by byte
    int32_t token = -1;
  };
  // Splits text by added tokens: (begin, end, id or -1 for ordinary text).
  void split_added(const std::string& text, std::vector<std::tuple<size_t, size_t, int32_t>>* out) const;
  void encode_segment(const std::string& text, size_t begin, size_t end, bool first, Encoding* enc) const;
  Word bpe_word(const std::string& word) const;  // word: normalised bytes
  Word bpe_uncached(const std::string& word) const;
  void check_id(int32_t id) const;

  BpeSpec::Mode mode_;
  std::vector<std::string> vocab_;
  std::unordered_map<std::string_view, int32_t> token_to_id_;  // views into vocab_
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (left,right) -> (rank, new id)
  std::vector<uint8_t> special_;
  std::vector<uint8_t> is_byte_token_;
  std::vector<std::string> piece_bytes_;  // decoded bytes per id
  std::unordered_map<std::string_view, int32_t> piece_to_id_;  // views into piece_bytes_
  std::vector<TrieNode> trie_;
  bool replace_space_, prepend_every_segment_, prepend_unless_present_, byte_level_prefix_space_, byte_fallback_, fuse_unk_;
  bool ignore_merges_, strip_leading_space_, nfc_;
  std::string prepend_;
  int32_t model_unk_id_;
  PreTokenizer pre_;
  int32_t byte_unit_[256];         // byte-level: id of each byte's alphabet char
  int32_t byte_fallback_id_[256];  // sentencepiece: id of <0xNN>
  std::vector<int32_t> prefix_ids_, suffix_ids_;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, Word> cache_;
};

}  // namespace safedec
