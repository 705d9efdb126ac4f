// Building tokenizers from files:
//  * GGUF `tokenizer.ggml.*` (llama.cpp): model "gpt2" -> byte-level BPE with the stored merges and
//    the regex named by `.pre`; model "llama" -> SentencePiece-style BPE with byte fallback whose
//    merges are derived from the vocabulary the way transformers' GGUF converter does (by score;
//    for Gemma by file order, with all-space tokens respelled as '▁' runs). Control tokens (type 3)
//    become special added tokens, user-defined ones (type 4) plain added tokens.
//  * tokenizer.json (HF tokenizers): model BPE, normalizer/pre-tokenizer/post-processor/decoder of
//    the kinds used by Llama, Mistral, Gemma, GPT-2, SmolLM, Qwen (NFC normalisation included).
//  * tokenizer.model (SentencePiece) through libsentencepiece.
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "io/gguf.h"
#include "tokenizer/bpe.h"
#include "tokenizer/sentencepiece_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace safedec {

using json = nlohmann::json;

namespace {

// llama.cpp token types (llama_token_type).
constexpr int64_t kTokenNormal = 1, kTokenUnknown = 2, kTokenControl = 3, kTokenUserDefined = 4;

bool is_dir(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
bool is_file(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}
std::string dir_of(const std::string& p) {
  auto slash = p.find_last_of('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}
std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SAFEDEC_CHECK(in.good(), "Cannot open '", path, "' for reading.");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
json parse_json_file(const std::string& path) {
  std::string text = read_text(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail("Cannot parse '", path, "' as JSON: ", e.what(), ".");
  }
}
bool has_gguf_magic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char m[4] = {0, 0, 0, 0};
  in.read(m, 4);
  return in.gcount() == 4 && m[0] == 'G' && m[1] == 'G' && m[2] == 'U' && m[3] == 'F';
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + v[i];
  return out;
}

std::vector<std::string> gguf_strings(const GgufFile& f, const std::string& key) {
  const GgufValue& v = f.get(key);
  SAFEDEC_CHECK(v.type == GgufValueType::ARRAY && v.array_type == GgufValueType::STRING, "GGUF file '", f.path(),
                "': metadata key ", key, " must be an array of strings.");
  std::vector<std::string> out;
  const GgufArray& a = v.as_array();
  out.reserve(a.size());
  for (const auto& e : a) out.push_back(e.as_string());
  return out;
}

template <typename T, typename F>
std::vector<T> gguf_numbers(const GgufFile& f, const std::string& key, size_t n, F conv) {
  const GgufValue& v = f.get(key);
  SAFEDEC_CHECK(v.type == GgufValueType::ARRAY, "GGUF file '", f.path(), "': metadata key ", key, " must be an array.");
  const GgufArray& a = v.as_array();
  SAFEDEC_CHECK(a.size() == n, "GGUF file '", f.path(), "': ", key, " has ", a.size(), " entries but the vocabulary has ",
                n, " tokens.");
  std::vector<T> out;
  out.reserve(n);
  for (const auto& e : a) out.push_back(conv(e));
  return out;
}

int32_t gguf_id(const GgufFile& f, const std::string& key, size_t n) {
  if (!f.has(key)) return -1;
  int64_t id = f.get_int(key, -1);
  if (id < 0 || id >= static_cast<int64_t>(n)) return -1;  // llama.cpp also treats out-of-range as absent
  return static_cast<int32_t>(id);
}

// The same for ids the runtime cannot do without (bos, eos): present but outside the vocabulary is
// a corrupt file, refused naming the key, rather than silently treated as absent (which would stop
// generation from ever seeing its end token).
int32_t required_gguf_id(const GgufFile& f, const std::string& key, size_t n) {
  if (!f.has(key)) return -1;
  const int64_t id = f.get_int(key, -1);  // a non-integer value is refused there, naming the key
  SAFEDEC_CHECK(id >= 0 && id < static_cast<int64_t>(n), "GGUF file '", f.path(), "': metadata key '", key, "' is ",
                id, ", outside the vocabulary of ", n, " tokens (ids 0..", static_cast<int64_t>(n) - 1,
                "); the file is corrupt.");
  return static_cast<int32_t>(id);
}

bool all_in_byte_alphabet(const std::string& s) {
  std::string tmp;
  return unicode::byte_level_to_bytes(s, &tmp);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// GGUF

std::unique_ptr<Tokenizer> load_tokenizer(const GgufFile& f) {
  const std::string& path = f.path();
  SAFEDEC_CHECK(f.has("tokenizer.ggml.tokens"), "GGUF file '", path,
                "' has no tokenizer.ggml.tokens array, so it carries no tokenizer; load the tokenizer from a "
                "tokenizer.json / tokenizer.model instead.");
  const std::string model = f.get_string("tokenizer.ggml.model", "");
  SAFEDEC_CHECK(model == "gpt2" || model == "llama", "GGUF file '", path, "': tokenizer.ggml.model '", model,
                "' is not supported; known: gpt2 (byte-level BPE), llama (SentencePiece).");
  BpeSpec spec;
  spec.source = path;
  spec.vocab = gguf_strings(f, "tokenizer.ggml.tokens");
  const size_t n = spec.vocab.size();
  SAFEDEC_CHECK(n > 0, "GGUF file '", path, "': tokenizer.ggml.tokens is empty.");
  std::vector<int64_t> types(n, kTokenNormal);
  if (f.has("tokenizer.ggml.token_type"))
    types = gguf_numbers<int64_t>(f, "tokenizer.ggml.token_type", n, [](const GgufValue& v) { return v.as_int(); });
  spec.bos_id = required_gguf_id(f, "tokenizer.ggml.bos_token_id", n);
  spec.eos_id = required_gguf_id(f, "tokenizer.ggml.eos_token_id", n);
  spec.pad_id = gguf_id(f, "tokenizer.ggml.padding_token_id", n);
  spec.unk_id = gguf_id(f, "tokenizer.ggml.unknown_token_id", n);
  for (const char* k : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    int32_t id = gguf_id(f, k, n);
    if (id >= 0) spec.extra_eog.push_back(id);
  }
  spec.chat_template = f.get_string("tokenizer.chat_template", "");
  const std::vector<std::string> original = spec.vocab;
  const std::string arch = f.get_string("general.architecture", "");

  if (model == "gpt2") {
    spec.mode = BpeSpec::Mode::ByteLevel;
    SAFEDEC_CHECK(f.has("tokenizer.ggml.merges"), "GGUF file '", path,
                  "': a gpt2 (byte-level BPE) tokenizer needs tokenizer.ggml.merges, which is missing.");
    std::vector<std::string> merges = gguf_strings(f, "tokenizer.ggml.merges");
    spec.merges.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      const std::string& m = merges[i];
      // A merge is "left right"; the left part never contains ' ' (spaces are 'Ġ' in the alphabet).
      size_t sp = m.find(' ', 1);
      SAFEDEC_CHECK(sp != std::string::npos, "GGUF file '", path, "': merge #", i, " ('", m,
                    "') is not of the form 'left right'.");
      spec.merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
    }
    // Tokens outside the byte alphabet are respelled byte-wise (as transformers does).
    for (auto& t : spec.vocab)
      if (!all_in_byte_alphabet(t)) t = unicode::bytes_to_byte_level(t);
    const std::string pre = f.get_string("tokenizer.ggml.pre", "gpt2");
    SAFEDEC_CHECK(pretok::named_steps(pre, &spec.splits), "GGUF file '", path,
                  "': pre-tokenizer tokenizer.ggml.pre = '", pre, "' is not supported; known: ",
                  join(pretok::known_names()), ".");
    spec.ignore_merges = pretok::named_ignores_merges(pre);
    spec.nfc = pretok::named_uses_nfc(pre);
    for (size_t i = 0; i < n; ++i) {
      // Control tokens spelled outside the byte alphabet are llama.cpp mislabels (transformers skips them).
      // <unk> is a special token too (HF registers unk_token; llama.cpp matches UNKNOWN in text).
      if ((types[i] == kTokenControl || types[i] == kTokenUnknown) && all_in_byte_alphabet(original[i]))
        spec.added.push_back({static_cast<int32_t>(i), original[i], true});
      else if (types[i] == kTokenUserDefined && all_in_byte_alphabet(original[i]))
        spec.added.push_back({static_cast<int32_t>(i), original[i], false});
    }
  } else {  // llama: SentencePiece vocabulary with scores
    spec.mode = BpeSpec::Mode::SentencePiece;
    const bool gemma = arch.rfind("gemma", 0) == 0;
    std::vector<double> scores(n, 0.0);
    if (gemma) {
      // Gemma's stored scores do not follow its merge order; the file order does (transformers).
      for (size_t i = 0; i < n; ++i) scores[i] = -static_cast<double>(i);
      // Tokens of 2+ spaces are stored as real spaces; the model looks them up as '▁' runs.
      for (auto& t : spec.vocab)
        if (!t.empty() && t.find_first_not_of(' ') == std::string::npos) {
          std::string meta;
          for (size_t k = 0; k < t.size(); ++k) meta += "\xE2\x96\x81";
          t = meta;
        }
    } else {
      SAFEDEC_CHECK(f.has("tokenizer.ggml.scores"), "GGUF file '", path,
                    "': a llama (SentencePiece) tokenizer needs tokenizer.ggml.scores, which is missing.");
      scores = gguf_numbers<double>(f, "tokenizer.ggml.scores", n, [](const GgufValue& v) { return v.as_float(); });
    }
    spec.merge_ids = generate_merges(spec.vocab, scores);
    spec.model_unk_id = spec.unk_id;  // transformers' SentencePiece BPE has unk_token set
    spec.replace_space = true;
    spec.byte_fallback = true;
    spec.fuse_unk = true;
    if (f.get_bool("tokenizer.ggml.add_space_prefix", !gemma)) {
      // transformers: Metaspace(prepend_scheme="first"): '▁' before the segment at offset 0 unless
      // it already starts with one; the decoder strips one leading space.
      spec.prepend = "\xE2\x96\x81";
      spec.prepend_unless_present = true;
      spec.strip_leading_space = true;
    }
    std::unordered_map<std::string, int32_t> vocab_index;
    for (size_t i = 0; i < n; ++i) vocab_index[spec.vocab[i]] = static_cast<int32_t>(i);
    for (size_t i = 0; i < n; ++i) {
      if (types[i] == kTokenControl || types[i] == kTokenUnknown)
        spec.added.push_back({static_cast<int32_t>(i), original[i], true});
      else if (types[i] == kTokenUserDefined && vocab_index.count(original[i]))
        spec.added.push_back({static_cast<int32_t>(i), original[i], false});
    }
  }
  // Post-processor: BOS/EOS per the file's flags (byte-level default off, SentencePiece default on).
  const bool add_bos = f.get_bool("tokenizer.ggml.add_bos_token", model == "llama");
  const bool add_eos = f.get_bool("tokenizer.ggml.add_eos_token", false);
  if (add_bos && spec.bos_id >= 0) spec.prefix_ids.push_back(spec.bos_id);
  if (add_eos && spec.eos_id >= 0) spec.suffix_ids.push_back(spec.eos_id);
  return std::make_unique<BpeTokenizer>(std::move(spec));
}

// ---------------------------------------------------------------------------------------------
// tokenizer.json

namespace {

std::string token_content(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content")) return v["content"].get<std::string>();
  return "";
}

void add_normalizer(const json& nz, BpeSpec* spec, const std::string& path) {
  if (nz.is_null()) return;
  const std::string type = nz.value("type", "");
  if (type == "Sequence") {
    for (const auto& sub : nz["normalizers"]) add_normalizer(sub, spec, path);
  } else if (type == "Replace") {
    std::string from = nz["pattern"].contains("String") ? nz["pattern"]["String"].get<std::string>() : "";
    std::string to = nz.value("content", "");
    SAFEDEC_CHECK(from == " " && to == "\xE2\x96\x81", "Tokenizer file '", path,
                  "': only the Replace(' ' -> '▁') normalizer is supported, not Replace('", from, "' -> '", to, "').");
    spec->replace_space = true;
  } else if (type == "Prepend") {
    spec->prepend = nz.value("prepend", "");
    spec->prepend_every_segment = true;
  } else if (type == "NFC") {
    SAFEDEC_CHECK(!spec->replace_space && spec->prepend.empty(), "Tokenizer file '", path,
                  "': an NFC normalizer after Replace/Prepend is not supported (safedec applies NFC first).");
    spec->nfc = true;
  } else {
    fail("Tokenizer file '", path, "': normalizer type '", type,
         "' is not supported; supported: NFC, Replace(' ' -> '▁'), Prepend, Sequence of those.");
  }
}

void add_pre_tokenizer(const json& pt, BpeSpec* spec, const std::string& path) {
  if (pt.is_null()) return;
  const std::string type = pt.value("type", "");
  if (type == "Sequence") {
    for (const auto& sub : pt["pretokenizers"]) add_pre_tokenizer(sub, spec, path);
  } else if (type == "ByteLevel") {
    spec->mode = BpeSpec::Mode::ByteLevel;
    if (pt.value("use_regex", true)) spec->splits.push_back({pretok::kGpt2, SplitBehavior::Isolated, false});
    spec->byte_level_prefix_space = pt.value("add_prefix_space", false);
  } else if (type == "Split") {
    const json& pat = pt["pattern"];
    std::string re = pat.contains("Regex") ? pat["Regex"].get<std::string>() : regex_escape(pat["String"].get<std::string>());
    spec->splits.push_back({re, parse_split_behavior(pt.value("behavior", "Isolated")), pt.value("invert", false)});
  } else if (type == "Digits") {
    spec->splits.push_back({pt.value("individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)", SplitBehavior::Isolated, false});
  } else if (type == "Metaspace") {
    std::string rep = pt.value("replacement", "\xE2\x96\x81");
    SAFEDEC_CHECK(rep == "\xE2\x96\x81", "Tokenizer file '", path, "': Metaspace replacement must be '▁'.");
    spec->replace_space = true;
    std::string scheme = pt.value("prepend_scheme", pt.value("add_prefix_space", true) ? "always" : "never");
    if (scheme != "never") {
      spec->prepend = rep;
      spec->prepend_unless_present = true;
      spec->prepend_every_segment = scheme == "always";
      spec->strip_leading_space = true;
    }
    if (pt.value("split", true)) spec->splits.push_back({rep, SplitBehavior::MergedWithNext, false});
  } else {
    fail("Tokenizer file '", path, "': pre-tokenizer type '", type,
         "' is not supported; supported: ByteLevel, Split, Digits, Metaspace, Sequence.");
  }
}

void add_decoder(const json& d, BpeSpec* spec) {
  if (d.is_null()) return;
  const std::string type = d.value("type", "");
  if (type == "Sequence") {
    for (const auto& sub : d["decoders"]) add_decoder(sub, spec);
  } else if (type == "ByteLevel") {
    spec->mode = BpeSpec::Mode::ByteLevel;
  } else if (type == "Strip") {
    if (d.value("content", " ") == " " && d.value("start", 0) >= 1) spec->strip_leading_space = true;
  }
  // Replace('▁' -> ' '), ByteFallback and Fuse are what SentencePiece mode decoding does anyway.
}

void add_post_processor(const json& pp, const std::unordered_map<std::string, int32_t>& ids, BpeSpec* spec,
                        const std::string& path) {
  if (pp.is_null()) return;
  const std::string type = pp.value("type", "");
  if (type == "Sequence") {
    for (const auto& sub : pp["processors"]) add_post_processor(sub, ids, spec, path);
  } else if (type == "TemplateProcessing") {
    bool seen_sequence = false;
    for (const auto& item : pp["single"]) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
      } else if (item.contains("SpecialToken")) {
        std::string name = item["SpecialToken"].value("id", "");
        std::vector<int32_t> tok_ids;
        if (pp.contains("special_tokens") && pp["special_tokens"].contains(name)) {
          for (const auto& i : pp["special_tokens"][name]["ids"]) tok_ids.push_back(i.get<int32_t>());
        } else {
          auto it = ids.find(name);
          SAFEDEC_CHECK(it != ids.end(), "Tokenizer file '", path, "': post-processor token '", name, "' is unknown.");
          tok_ids.push_back(it->second);
        }
        auto& dst = seen_sequence ? spec->suffix_ids : spec->prefix_ids;
        dst.insert(dst.end(), tok_ids.begin(), tok_ids.end());
      }
    }
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    spec->prefix_ids.push_back(pp["cls"][1].get<int32_t>());
    spec->suffix_ids.push_back(pp["sep"][1].get<int32_t>());
  }
  // ByteLevel post-processing only trims offsets.
}

std::unique_ptr<Tokenizer> load_tokenizer_json(const std::string& path) {
  json j = parse_json_file(path);
  SAFEDEC_CHECK(j.is_object() && j.contains("model") && j["model"].is_object(), "Tokenizer file '", path,
                "' has no \"model\" object; is it a Hugging Face tokenizer.json?");
  const json& m = j["model"];
  const std::string type = m.value("type", "BPE");
  SAFEDEC_CHECK(type == "BPE", "Tokenizer file '", path, "': model type '", type,
                "' is not supported; supported: BPE (use a tokenizer.model for SentencePiece Unigram models).");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    SAFEDEC_CHECK(!m.contains(k) || m[k].is_null() || m[k].get<std::string>().empty(), "Tokenizer file '", path,
                  "': BPE option ", k, " is not supported.");
  BpeSpec spec;
  spec.source = path;
  spec.mode = BpeSpec::Mode::SentencePiece;
  std::unordered_map<std::string, int32_t> ids;
  int32_t max_id = -1;
  for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
    int32_t id = it.value().get<int32_t>();
    ids[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  if (j.contains("added_tokens"))
    for (const auto& a : j["added_tokens"]) {
      int32_t id = a["id"].get<int32_t>();
      std::string content = a["content"].get<std::string>();
      spec.added.push_back({id, content, a.value("special", false)});
      max_id = std::max(max_id, id);
    }
  SAFEDEC_CHECK(max_id >= 0, "Tokenizer file '", path, "' has an empty vocabulary.");
  spec.vocab.assign(static_cast<size_t>(max_id) + 1, "");
  for (const auto& [tok, id] : ids) spec.vocab[id] = tok;
  for (const auto& a : spec.added) {
    spec.vocab[a.id] = a.content;
    ids[a.content] = a.id;
  }
  if (m.contains("merges"))
    for (const auto& mg : m["merges"]) {
      if (mg.is_array()) {
        spec.merges.emplace_back(mg[0].get<std::string>(), mg[1].get<std::string>());
      } else {
        std::string s = mg.get<std::string>();
        size_t sp = s.find(' ', 1);
        SAFEDEC_CHECK(sp != std::string::npos, "Tokenizer file '", path, "': merge '", s, "' is not 'left right'.");
        spec.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      }
    }
  spec.byte_fallback = m.value("byte_fallback", false);
  spec.fuse_unk = m.value("fuse_unk", false);
  spec.ignore_merges = m.value("ignore_merges", false);
  if (m.contains("unk_token") && m["unk_token"].is_string()) {
    auto it = ids.find(m["unk_token"].get<std::string>());
    if (it != ids.end()) spec.unk_id = spec.model_unk_id = it->second;
  }
  add_normalizer(j.value("normalizer", json()), &spec, path);
  add_pre_tokenizer(j.value("pre_tokenizer", json()), &spec, path);
  add_decoder(j.value("decoder", json()), &spec);
  add_post_processor(j.value("post_processor", json()), ids, &spec, path);

  // Names of the special tokens and the chat template live beside it.
  const std::string dir = dir_of(path);
  const std::string cfg_path = dir + "/tokenizer_config.json";
  if (is_file(cfg_path)) {
    json cfg = parse_json_file(cfg_path);
    auto lookup = [&](const char* key) -> int32_t {
      if (!cfg.contains(key)) return -1;
      auto it = ids.find(token_content(cfg[key]));
      return it == ids.end() ? -1 : it->second;
    };
    spec.bos_id = lookup("bos_token");
    spec.eos_id = lookup("eos_token");
    spec.pad_id = lookup("pad_token");
    if (cfg.contains("unk_token")) spec.unk_id = lookup("unk_token");
    if (cfg.contains("chat_template")) {
      const json& ct = cfg["chat_template"];
      if (ct.is_string()) {
        spec.chat_template = ct.get<std::string>();
      } else if (ct.is_array()) {  // [{"name": "default", "template": ...}, ...]
        for (const auto& e : ct)
          if (e.value("name", "") == "default") spec.chat_template = e.value("template", "");
      }
    }
  }
  if (spec.chat_template.empty() && is_file(dir + "/chat_template.jinja"))
    spec.chat_template = read_text(dir + "/chat_template.jinja");
  return std::make_unique<BpeTokenizer>(std::move(spec));
}

std::string sibling_template(const std::string& dir) {
  if (is_file(dir + "/chat_template.jinja")) return read_text(dir + "/chat_template.jinja");
  if (is_file(dir + "/tokenizer_config.json")) {
    json cfg = parse_json_file(dir + "/tokenizer_config.json");
    if (cfg.contains("chat_template") && cfg["chat_template"].is_string()) return cfg["chat_template"].get<std::string>();
  }
  return "";
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  if (is_dir(path)) {
    if (is_file(path + "/tokenizer.json")) return load_tokenizer_json(path + "/tokenizer.json");
    if (is_file(path + "/tokenizer.model"))
      return std::make_unique<SentencePieceTokenizer>(path + "/tokenizer.model", sibling_template(path));
    fail("Directory '", path, "' holds neither tokenizer.json nor tokenizer.model; give a GGUF file, a "
         "tokenizer.json, a tokenizer.model or a Hugging Face model directory.");
  }
  SAFEDEC_CHECK(is_file(path), "Tokenizer path '", path, "' does not exist or is not readable.");
  {
    std::ifstream probe(path, std::ios::binary);
    SAFEDEC_CHECK(probe.good(), "Cannot read '", path, "': ", std::strerror(errno), ".");
  }
  if (has_gguf_magic(path)) {
    auto gguf = GgufFile::open(path);
    return load_tokenizer(*gguf);
  }
  if (ends_with(path, ".json")) return load_tokenizer_json(path);
  if (ends_with(path, ".model")) return std::make_unique<SentencePieceTokenizer>(path, sibling_template(dir_of(path)));
  fail("Cannot tell what kind of tokenizer '", path,
       "' is; expected a .gguf file, a tokenizer.json, a tokenizer.model or a model directory.");
}

std::vector<std::string> known_pretokenizers() { return pretok::known_names(); }

// ---------------------------------------------------------------------------------------------
// Tokenizer base

bool Tokenizer::is_eog(int32_t id) const {
  return std::find(eog_ids_.begin(), eog_ids_.end(), id) != eog_ids_.end();
}

void Tokenizer::init_eog(const std::vector<int32_t>& extra) {
  eog_ids_.clear();
  auto add = [&](int32_t id) {
    if (id >= 0 && std::find(eog_ids_.begin(), eog_ids_.end(), id) == eog_ids_.end()) eog_ids_.push_back(id);
  };
  add(eos_id_);
  for (int32_t id : extra) add(id);
  // End-of-turn spellings (llama.cpp's EOG detection list).
  for (const char* s : {"<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<|eot_id|>", "<|eom_id|>", "<|end|>",
                        "<|return|>", "<|end_of_text|>", "<EOT>", "_<EOT>", "<｜end▁of▁sentence｜>"}) {
    int32_t id = piece_to_token(s);
    if (id >= 0 && is_special(id)) add(id);
  }
}

}  // namespace safedec
