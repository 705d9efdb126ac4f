// Byte-pair encoding as Hugging Face tokenizers computes it:
//  1. added tokens are cut out of the raw text, leftmost match first, longest at a position;
//  2. each remaining segment is normalised (SentencePiece mode: ' ' -> U+2581, optional prefix),
//     pre-tokenised by regex splits, and each piece becomes initial symbols: one per byte in the
//     GPT-2 byte alphabet (byte-level mode) or one per character, unknown characters falling back
//     to <0xNN> byte tokens or <unk> (SentencePiece mode);
//  3. adjacent symbol pairs are merged by rank with a min-heap (lowest rank, then leftmost), stale
//     heap entries being skipped, exactly like tokenizers' Word::merge_all.
// Decoding maps tokens back to bytes: byte-level via the inverse alphabet then UTF-8-lossy, or
// SentencePiece-style ('▁' -> ' ', runs of byte tokens joined, invalid runs -> one U+FFFD per byte).
#include "tokenizer/bpe.h"

#include <algorithm>
#include <queue>

#include "core/error.h"
#include "tokenizer/nfc.h"
#include "tokenizer/unicode.h"

namespace safedec {

namespace {

const char* const kMetaSpace = "\xE2\x96\x81";  // U+2581 '▁'

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// "<0xNN>" -> NN, or -1.
int parse_byte_token(const std::string& s) {
  if (s.size() != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    char c = s[i];
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
  return s;
}

}  // namespace

namespace {

// Open-addressing string -> last index table over a vocabulary (the derivation below does
// millions of lookups; a flat table keeps them to about one cache miss each).
class VocabIndex {
 public:
  explicit VocabIndex(const std::vector<std::string>& vocab) : vocab_(vocab) {
    size_t cap = 16;
    while (cap < vocab.size() * 2) cap <<= 1;  // load factor <= 0.5
    slots_.assign(cap, Slot{0, -1});
    mask_ = cap - 1;
    for (size_t i = 0; i < vocab.size(); ++i) {
      const uint64_t h = hash(vocab[i]);
      const uint32_t tag = static_cast<uint32_t>(h >> 32);
      size_t pos = h & mask_;
      while (slots_[pos].id >= 0 && !(slots_[pos].tag == tag && vocab_[slots_[pos].id] == vocab[i])) pos = (pos + 1) & mask_;
      slots_[pos] = {tag, static_cast<int32_t>(i)};  // a repeated token keeps its last index
    }
  }
  int32_t find(std::string_view key) const {
    const uint64_t h = hash(key);
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    // The 32-bit tag avoids touching the vocabulary strings on almost every mismatch.
    for (size_t pos = h & mask_; slots_[pos].id >= 0; pos = (pos + 1) & mask_)
      if (slots_[pos].tag == tag && vocab_[slots_[pos].id] == key) return slots_[pos].id;
    return -1;
  }

 private:
  struct Slot {
    uint32_t tag;
    int32_t id;
  };
  static uint64_t hash(std::string_view s) {  // FNV-1a, 64 bit, with a final mix
    uint64_t h = 1469598103934665603ULL;
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ULL;
    return h ^ (h >> 32);
  }
  const std::vector<std::string>& vocab_;
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

}  // namespace

std::vector<MergeIds> generate_merges(const std::vector<std::string>& vocab, const std::vector<double>& scores) {
  SAFEDEC_ASSERT(vocab.size() == scores.size());
  // Python dict semantics: a repeated token is iterated once, at its first position, with the
  // index/score of its last occurrence.
  const VocabIndex last(vocab);
  std::unordered_map<std::string_view, int32_t> first_of_repeated;
  for (size_t i = 0; i < vocab.size(); ++i)
    if (last.find(vocab[i]) != static_cast<int32_t>(i)) first_of_repeated.emplace(vocab[i], static_cast<int32_t>(i));
  struct Cand {
    MergeIds m;
    double score;
    uint32_t len_l, len_r;  // in code points
  };
  std::vector<Cand> all;
  std::vector<Cand> local;
  std::vector<size_t> cuts;
  for (size_t i = 0; i < vocab.size(); ++i) {
    const std::string_view tok = vocab[i];
    const int32_t self = last.find(tok);
    if (self != static_cast<int32_t>(i) && first_of_repeated.at(tok) != static_cast<int32_t>(i)) continue;
    const double score = scores[self];
    cuts.clear();
    for (size_t p = 0; p < tok.size();) {
      size_t l = unicode::utf8_valid_len(vocab[i], p);
      p += l == 0 ? 1 : l;
      if (p < tok.size()) cuts.push_back(p);
    }
    local.clear();
    for (size_t k = 0; k < cuts.size(); ++k) {
      const int32_t li = last.find(tok.substr(0, cuts[k]));
      if (li < 0) continue;
      const int32_t ri = last.find(tok.substr(cuts[k]));
      if (ri < 0) continue;
      local.push_back({{li, ri, self}, score, static_cast<uint32_t>(k + 1),
                       static_cast<uint32_t>(cuts.size() - k)});
    }
    std::stable_sort(local.begin(), local.end(), [](const Cand& a, const Cand& b) {
      return a.m.left != b.m.left ? a.m.left < b.m.left : a.m.right < b.m.right;
    });
    all.insert(all.end(), local.begin(), local.end());
  }
  // sorted(key=(score, len_l, len_r), reverse=True) keeps equal keys in their original order.
  std::stable_sort(all.begin(), all.end(), [](const Cand& a, const Cand& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.len_l != b.len_l) return a.len_l > b.len_l;
    return a.len_r > b.len_r;
  });
  std::vector<MergeIds> merges;
  merges.reserve(all.size());
  for (const Cand& c : all) merges.push_back(c.m);
  return merges;
}

BpeTokenizer::BpeTokenizer(BpeSpec spec)
    : mode_(spec.mode),
      vocab_(std::move(spec.vocab)),
      replace_space_(spec.replace_space),
      prepend_every_segment_(spec.prepend_every_segment),
      prepend_unless_present_(spec.prepend_unless_present),
      byte_level_prefix_space_(spec.byte_level_prefix_space),
      byte_fallback_(spec.byte_fallback),
      fuse_unk_(spec.fuse_unk),
      ignore_merges_(spec.ignore_merges),
      strip_leading_space_(spec.strip_leading_space),
      nfc_(spec.nfc),
      prepend_(spec.prepend),
      model_unk_id_(spec.model_unk_id),
      prefix_ids_(spec.prefix_ids),
      suffix_ids_(spec.suffix_ids) {
  source_ = spec.source;
  chat_template_ = spec.chat_template;
  bos_id_ = spec.bos_id;
  eos_id_ = spec.eos_id;
  pad_id_ = spec.pad_id;
  unk_id_ = spec.unk_id;
  const int32_t n = static_cast<int32_t>(vocab_.size());
  SAFEDEC_CHECK(n > 0, "Tokenizer from ", source_, " has an empty vocabulary.");
  for (int32_t id : {bos_id_, eos_id_, pad_id_, unk_id_, model_unk_id_})
    SAFEDEC_CHECK(id < n, "Tokenizer from ", source_, ": special token id ", id, " is outside the vocabulary of ",
                  n, " tokens.");

  token_to_id_.reserve(vocab_.size() * 2);
  // A repeated spelling keeps its last id (HF); empty spellings are holes in a tokenizer.json's ids.
  for (int32_t i = 0; i < n; ++i)
    if (!vocab_[i].empty()) token_to_id_[vocab_[i]] = i;
  special_.assign(n, 0);
  for (const auto& a : spec.added) {
    SAFEDEC_CHECK(a.id >= 0 && a.id < n, "Tokenizer from ", source_, ": added token '", a.content, "' has id ", a.id,
                  " outside the vocabulary of ", n, " tokens.");
    if (a.special) special_[a.id] = 1;
  }
  add_bos_ = bos_id_ >= 0 && std::find(prefix_ids_.begin(), prefix_ids_.end(), bos_id_) != prefix_ids_.end();
  add_eos_ = eos_id_ >= 0 && std::find(suffix_ids_.begin(), suffix_ids_.end(), eos_id_) != suffix_ids_.end();
  for (int32_t id : prefix_ids_) SAFEDEC_CHECK(id >= 0 && id < n, "Tokenizer from ", source_, ": post-processor id ", id, " is outside the vocabulary.");
  for (int32_t id : suffix_ids_) SAFEDEC_CHECK(id >= 0 && id < n, "Tokenizer from ", source_, ": post-processor id ", id, " is outside the vocabulary.");

  // Merge table: (left id, right id) -> (rank, id of left+right). A later duplicate overrides, as
  // in tokenizers' BPE builder.
  merges_.reserve((spec.merges.size() + spec.merge_ids.size()) * 2);
  for (size_t rank = 0; rank < spec.merge_ids.size() && spec.merges.empty(); ++rank) {
    const MergeIds& m = spec.merge_ids[rank];
    SAFEDEC_CHECK(m.left >= 0 && m.left < n && m.right >= 0 && m.right < n && m.merged >= 0 && m.merged < n,
                  "Tokenizer from ", source_, ": merge #", rank, " uses an id outside the vocabulary.");
    merges_[pair_key(m.left, m.right)] = {static_cast<int32_t>(rank), m.merged};
  }
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto& m = spec.merges[rank];
    auto a = token_to_id_.find(m.first), b = token_to_id_.find(m.second);
    SAFEDEC_CHECK(a != token_to_id_.end() && b != token_to_id_.end(), "Tokenizer from ", source_, ": merge #", rank,
                  " ('", m.first, "' '", m.second, "') uses a token missing from the vocabulary.");
    auto c = token_to_id_.find(m.first + m.second);
    SAFEDEC_CHECK(c != token_to_id_.end(), "Tokenizer from ", source_, ": merge #", rank, " ('", m.first, "' '",
                  m.second, "') makes a token missing from the vocabulary.");
    merges_[pair_key(a->second, b->second)] = {static_cast<int32_t>(rank), c->second};
  }

  for (int b = 0; b < 256; ++b) {
    byte_unit_[b] = -1;
    byte_fallback_id_[b] = -1;
  }
  is_byte_token_.assign(n, 0);
  piece_bytes_.resize(n);
  if (mode_ == BpeSpec::Mode::ByteLevel) {
    const auto& alphabet = unicode::byte_to_unicode();
    for (int b = 0; b < 256; ++b) {
      auto it = token_to_id_.find(alphabet[b]);
      if (it != token_to_id_.end()) byte_unit_[b] = it->second;
    }
    for (int32_t i = 0; i < n; ++i)
      if (!unicode::byte_level_to_bytes(vocab_[i], &piece_bytes_[i])) piece_bytes_[i] = vocab_[i];
  } else {
    for (int32_t i = 0; i < n; ++i) {
      int byte = parse_byte_token(vocab_[i]);
      if (byte >= 0) {
        is_byte_token_[i] = 1;
        piece_bytes_[i] = std::string(1, static_cast<char>(byte));
        if (byte_fallback_id_[byte] < 0 || token_to_id_[vocab_[i]] == i) byte_fallback_id_[byte] = i;
      } else {
        piece_bytes_[i] = replace_all(vocab_[i], kMetaSpace, " ");
      }
    }
  }
  // Decoded-bytes lookup for piece_to_token: normal tokens win over byte tokens, lower ids first.
  for (int32_t i = n - 1; i >= 0; --i)
    if (!is_byte_token_[i] && !piece_bytes_[i].empty()) piece_to_id_[piece_bytes_[i]] = i;
  for (int32_t i = n - 1; i >= 0; --i)
    if (is_byte_token_[i] && !piece_to_id_.count(piece_bytes_[i])) piece_to_id_[piece_bytes_[i]] = i;

  // Trie of added-token contents for the leftmost-longest scan.
  trie_.emplace_back();
  for (const auto& a : spec.added) {
    if (a.content.empty()) continue;
    int32_t node = 0;
    for (unsigned char c : a.content) {
      auto& next = trie_[node].next;
      auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(static_cast<uint8_t>(c), INT32_MIN));
      if (it != next.end() && it->first == c) {
        node = it->second;
      } else {
        int32_t child = static_cast<int32_t>(trie_.size());
        next.insert(it, {static_cast<uint8_t>(c), child});
        trie_.emplace_back();
        node = child;
      }
    }
    trie_[node].token = a.id;
  }

  for (const auto& s : spec.splits) pre_.add(s.pattern, s.behavior, s.invert);
  init_eog(spec.extra_eog);
}

std::string BpeTokenizer::kind() const {
  return mode_ == BpeSpec::Mode::ByteLevel ? "bpe-byte-level" : "bpe-sentencepiece";
}

void BpeTokenizer::check_id(int32_t id) const {
  SAFEDEC_CHECK(id >= 0 && id < static_cast<int32_t>(vocab_.size()), "Token id ", id,
                " is outside the vocabulary of ", vocab_.size(), " tokens (", source_, ").");
}

bool BpeTokenizer::is_special(int32_t id) const {
  return id >= 0 && id < static_cast<int32_t>(special_.size()) && special_[id];
}

std::string BpeTokenizer::token_to_piece(int32_t id) const {
  check_id(id);
  return piece_bytes_[id];
}

std::string BpeTokenizer::token_text(int32_t id) const {
  check_id(id);
  return vocab_[id];
}

int32_t BpeTokenizer::piece_to_token(const std::string& piece) const {
  auto it = token_to_id_.find(piece);
  if (it != token_to_id_.end()) return it->second;
  auto jt = piece_to_id_.find(piece);
  return jt == piece_to_id_.end() ? -1 : jt->second;
}

void BpeTokenizer::split_added(const std::string& text, std::vector<std::tuple<size_t, size_t, int32_t>>* out) const {
  size_t seg_begin = 0;
  const size_t n = text.size();
  if (trie_[0].next.empty()) {
    if (n > 0) out->emplace_back(0, n, -1);
    return;
  }
  for (size_t i = 0; i < n;) {
    int32_t node = 0, best = -1;
    size_t best_len = 0;
    for (size_t j = i; j < n; ++j) {
      const auto& next = trie_[node].next;
      uint8_t c = static_cast<uint8_t>(text[j]);
      auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(c, INT32_MIN));
      if (it == next.end() || it->first != c) break;
      node = it->second;
      if (trie_[node].token >= 0) {
        best = trie_[node].token;
        best_len = j + 1 - i;
      }
    }
    if (best >= 0) {
      if (i > seg_begin) out->emplace_back(seg_begin, i, -1);
      out->emplace_back(i, i + best_len, best);
      i += best_len;
      seg_begin = i;
    } else {
      ++i;
    }
  }
  if (seg_begin < n) out->emplace_back(seg_begin, n, -1);
}

Encoding BpeTokenizer::encode_with_offsets(const std::string& text, bool add_special) const {
  Encoding enc;
  if (add_special)
    for (int32_t id : prefix_ids_) {
      enc.ids.push_back(id);
      enc.offsets.emplace_back(0, 0);
    }
  std::vector<std::tuple<size_t, size_t, int32_t>> segs;
  split_added(text, &segs);
  for (const auto& [b, e, id] : segs) {
    if (id >= 0) {
      enc.ids.push_back(id);
      enc.offsets.emplace_back(b, e);
    } else {
      encode_segment(text, b, e, b == 0, &enc);
    }
  }
  if (add_special)
    for (int32_t id : suffix_ids_) {
      enc.ids.push_back(id);
      enc.offsets.emplace_back(text.size(), text.size());
    }
  return enc;
}

void BpeTokenizer::encode_segment(const std::string& text, size_t begin, size_t end, bool first, Encoding* enc) const {
  // NFC (when the tokenizer has it) comes first; `src` is the segment after it and src_at[i] the
  // offset in `text` that byte i of src came from.
  std::string nfc_text;
  std::vector<size_t> nfc_origin;
  const std::string* src = &text;
  size_t src_begin = begin, src_end = end;
  if (nfc_ && !unicode::nfc_trivially_stable(text, begin, end)) {
    unicode::nfc_append(text, begin, end, &nfc_text, &nfc_origin);
    src = &nfc_text;
    src_begin = 0;
    src_end = nfc_text.size();
  }
  auto src_at = [&](size_t i) { return src == &text ? i : nfc_origin[i]; };
  // Normalise, keeping for every normalised byte the original offset it came from (map has one
  // extra entry for the end).
  std::string norm;
  std::vector<size_t> map;
  norm.reserve(src_end - src_begin + 8);
  map.reserve(src_end - src_begin + 9);
  auto emit = [&](const std::string& s, size_t orig) {
    norm += s;
    map.insert(map.end(), s.size(), orig);
  };
  if (src_begin < src_end && !prepend_.empty() && (first || prepend_every_segment_)) {
    // The check is on the normalised text: a leading ' ' counts once replaced by '▁'.
    bool present = src->compare(src_begin, prepend_.size(), prepend_) == 0 ||
                   (replace_space_ && prepend_ == kMetaSpace && (*src)[src_begin] == ' ');
    if (!(prepend_unless_present_ && present)) emit(prepend_, begin);
  }
  if (src_begin < src_end && byte_level_prefix_space_ && first && (*src)[src_begin] != ' ') emit(" ", begin);
  for (size_t i = src_begin; i < src_end; ++i) {
    if (replace_space_ && (*src)[i] == ' ') {
      emit(kMetaSpace, src_at(i));
    } else {
      norm += (*src)[i];
      map.push_back(src_at(i));
    }
  }
  map.push_back(end);

  std::vector<TextSpan> pieces;
  if (pre_.empty()) pieces.push_back({0, norm.size()});
  else pieces = pre_.split(norm, {0, norm.size()});
  for (const TextSpan& p : pieces) {
    for (const WordToken& t : bpe_word(norm.substr(p.begin, p.end - p.begin))) {
      enc->ids.push_back(t.id);
      enc->offsets.emplace_back(map[p.begin + t.begin], map[p.begin + t.end]);
    }
  }
}

BpeTokenizer::Word BpeTokenizer::bpe_word(const std::string& word) const {
  // Words up to 64 bytes are cached (the common case for regex pre-tokenised text); long
  // SentencePiece segments are not, to bound memory.
  constexpr size_t kMaxCachedWord = 64;
  constexpr size_t kMaxCacheEntries = 1 << 17;
  if (word.size() > kMaxCachedWord) return bpe_uncached(word);
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(word);
    if (it != cache_.end()) return it->second;
  }
  Word w = bpe_uncached(word);
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() >= kMaxCacheEntries) cache_.clear();
  cache_.emplace(word, w);
  return w;
}

BpeTokenizer::Word BpeTokenizer::bpe_uncached(const std::string& word) const {
  struct Sym {
    int32_t id;
    int32_t prev, next;
    uint32_t begin, end;  // byte range in the word; end == 0 marks a symbol merged away
  };
  std::vector<Sym> syms;
  syms.reserve(word.size());
  auto add = [&](int32_t id, size_t begin, size_t end) {
    int32_t idx = static_cast<int32_t>(syms.size());
    syms.push_back({id, idx - 1, -1, static_cast<uint32_t>(begin), static_cast<uint32_t>(end)});
    if (idx > 0) syms[idx - 1].next = idx;
  };

  if (ignore_merges_) {
    std::string model_form = mode_ == BpeSpec::Mode::ByteLevel ? unicode::bytes_to_byte_level(word) : word;
    auto it = token_to_id_.find(model_form);
    if (it != token_to_id_.end()) return {{it->second, 0, static_cast<uint32_t>(word.size())}};
  }

  // A byte or character without a token becomes the model's unknown token, or is dropped when the
  // model has none (its neighbours then become adjacent, as in HF tokenizers).
  if (mode_ == BpeSpec::Mode::ByteLevel) {
    for (size_t i = 0; i < word.size(); ++i) {
      int32_t id = byte_unit_[static_cast<unsigned char>(word[i])];
      if (id < 0) id = model_unk_id_;
      if (id >= 0) add(id, i, i + 1);
    }
  } else {
    int32_t unk_begin = -1, unk_end = -1;  // pending (fused) unknown run
    auto flush_unk = [&]() {
      if (unk_begin >= 0) add(model_unk_id_, unk_begin, unk_end);
      unk_begin = unk_end = -1;
    };
    for (size_t i = 0; i < word.size();) {
      size_t l = unicode::utf8_valid_len(word, i);
      if (l == 0) l = 1;
      auto it = token_to_id_.find(word.substr(i, l));
      if (it != token_to_id_.end()) {
        flush_unk();
        add(it->second, i, i + l);
      } else {
        bool all = byte_fallback_;
        for (size_t k = 0; all && k < l; ++k) all = byte_fallback_id_[static_cast<uint8_t>(word[i + k])] >= 0;
        if (all) {
          // HF tokenizers keeps a pending unknown run open across byte-fallback characters.
          for (size_t k = 0; k < l; ++k) add(byte_fallback_id_[static_cast<uint8_t>(word[i + k])], i + k, i + k + 1);
        } else if (model_unk_id_ >= 0) {
          if (unk_begin >= 0 && !fuse_unk_) flush_unk();
          if (unk_begin < 0) unk_begin = static_cast<int32_t>(i);
          unk_end = static_cast<int32_t>(i + l);
        }
      }
      i += l;
    }
    flush_unk();
  }

  struct Cand {
    int32_t rank, pos, new_id;
    bool operator<(const Cand& o) const {  // priority_queue pops the largest: invert
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Cand> heap;
  auto push_pair = [&](int32_t pos) {
    int32_t nx = syms[pos].next;
    if (nx < 0) return;
    auto it = merges_.find(pair_key(syms[pos].id, syms[nx].id));
    if (it != merges_.end()) heap.push({it->second.first, pos, it->second.second});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(syms.size()); ++i) push_pair(i);
  while (!heap.empty()) {
    Cand top = heap.top();
    heap.pop();
    Sym& s = syms[top.pos];
    if (s.end == 0 || s.next < 0) continue;
    Sym& right = syms[s.next];
    auto it = merges_.find(pair_key(s.id, right.id));
    if (it == merges_.end() || it->second.second != top.new_id) continue;  // stale entry
    s.id = top.new_id;
    s.end = right.end;
    right.end = 0;
    s.next = right.next;
    if (s.next >= 0) syms[s.next].prev = top.pos;
    if (s.prev >= 0) push_pair(s.prev);
    push_pair(top.pos);
  }
  Word out;
  for (const Sym& s : syms)
    if (s.end > 0) out.push_back({s.id, s.begin, s.end});
  return out;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  if (mode_ == BpeSpec::Mode::ByteLevel) {
    for (int32_t id : ids) {
      check_id(id);
      if (skip_special && special_[id]) continue;
      out += piece_bytes_[id];
    }
    return unicode::utf8_lossy(out);
  }
  std::string run;  // consecutive byte-fallback tokens
  auto flush = [&]() {
    if (run.empty()) return;
    if (unicode::is_valid_utf8(run)) {
      out += run;
    } else {
      for (size_t k = 0; k < run.size(); ++k) out += "\xEF\xBF\xBD";  // one U+FFFD per byte (HF ByteFallback)
    }
    run.clear();
  };
  for (int32_t id : ids) {
    check_id(id);
    if (skip_special && special_[id]) continue;
    if (is_byte_token_[id]) {
      run += piece_bytes_[id];
    } else {
      flush();
      out += piece_bytes_[id];
    }
  }
  flush();
  if (strip_leading_space_ && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return unicode::utf8_lossy(out);
}

}  // namespace safedec
