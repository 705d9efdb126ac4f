// Chat template families re-implemented in C++ (no Jinja engine): each renders a list of parts
// (plain text, special tokens, the system text) that concatenate to exactly the string HF's
// apply_chat_template returns for the model's template; the string is then tokenised like HF
// does (add_special_tokens=False, special tokens in the text matched whole), and the system text's
// byte range is mapped to a token span through the encoding offsets.
//   chatml : <|im_start|>{role}\n{content}<|im_end|>\n ... [<|im_start|>assistant\n]
//   llama2 : <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s>...
//   llama3 : <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>...
//   gemma  : <bos><start_of_turn>user\n{system}\n\n{user|trim}<end_of_turn>\n<start_of_turn>model\n...
#include "tokenizer/chat_template.h"

#include <algorithm>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace safedec {

namespace {

// One rendered piece: literal text, a special token (id >= 0), or the system text.
struct Part {
  std::string text;
  int32_t special_id = -1;
  bool system = false;
  bool user_end = false;  // an empty marker right after the final user message's content
};

// Python str.isspace() for one code point (what Jinja's trim and str.strip() remove).
bool py_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

uint32_t decode_cp(const std::string& s, size_t i, size_t len) {
  auto b = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(s[i + k])); };
  if (len == 1) return b(0);
  if (len == 2) return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
  if (len == 3) return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
  return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
}

// Byte lengths of the leading and trailing Python-whitespace of s.
void py_strip_lengths(const std::string& s, size_t* lead, size_t* trail) {
  std::vector<std::pair<size_t, size_t>> chars;  // (start, len)
  for (size_t i = 0; i < s.size();) {
    size_t l = unicode::utf8_valid_len(s, i);
    if (l == 0) l = 1;
    chars.emplace_back(i, l);
    i += l;
  }
  size_t a = 0;
  while (a < chars.size() && py_space(decode_cp(s, chars[a].first, chars[a].second))) ++a;
  size_t b = chars.size();
  while (b > a && py_space(decode_cp(s, chars[b - 1].first, chars[b - 1].second))) --b;
  *lead = a < chars.size() ? chars[a].first : s.size();
  *trail = b > a ? s.size() - (chars[b - 1].first + chars[b - 1].second) : s.size() - *lead;
}

std::string py_strip(const std::string& s) {
  size_t lead, trail;
  py_strip_lengths(s, &lead, &trail);
  return s.substr(lead, s.size() - lead - trail);
}

// Strips the concatenation prefix + system + suffix like str.strip(), returning the parts with the
// system text clamped to what survives.
std::vector<Part> strip_parts(const std::string& prefix, const std::string& system, bool has_system,
                              const std::string& suffix) {
  std::string all = prefix + system + suffix;
  size_t lead, trail;
  py_strip_lengths(all, &lead, &trail);
  const size_t keep_end = all.size() - trail;
  auto clip = [&](size_t b, size_t e) {
    b = std::max(b, lead);
    e = std::min(e, keep_end);
    return std::make_pair(b, std::max(b, e));
  };
  std::vector<Part> out;
  auto [pb, pe] = clip(0, prefix.size());
  auto [sb, se] = clip(prefix.size(), prefix.size() + system.size());
  auto [ub, ue] = clip(prefix.size() + system.size(), all.size());
  if (pe > pb) out.push_back({all.substr(pb, pe - pb)});
  if (has_system) {
    Part p{all.substr(sb, se - sb)};
    p.system = true;
    out.push_back(p);
  }
  if (ue > ub) out.push_back({all.substr(ub, ue - ub)});
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + v[i];
  return out;
}

// The default system prompt a ChatML template hard-codes: "<|im_start|>system\n...<|im_end|>".
std::string extract_default_system(const std::string& src) {
  const std::string head = "<|im_start|>system";
  size_t p = src.find(head);
  while (p != std::string::npos) {
    size_t q = p + head.size();
    size_t body = std::string::npos;
    if (src.compare(q, 1, "\n") == 0) body = q + 1;
    else if (src.compare(q, 2, "\\n") == 0) body = q + 2;
    if (body != std::string::npos) {
      size_t end = src.find("<|im_end|>", body);
      if (end != std::string::npos) {
        std::string text = src.substr(body, end - body);
        if (!text.empty() && text.find_first_of("{}'\"+") == std::string::npos) return text;
      }
    }
    p = src.find(head, p + 1);
  }
  return "";
}

}  // namespace

std::vector<std::string> ChatTemplate::known_families() { return {"chatml", "llama2", "llama3", "gemma"}; }

std::string ChatTemplate::detect_family(const std::string& src) {
  if (src.find("<|im_start|>") != std::string::npos) return "chatml";
  if (src.find("<start_of_turn>") != std::string::npos) return "gemma";
  if (src.find("<|start_header_id|>") != std::string::npos) return "llama3";
  if (src.find("[INST]") != std::string::npos) return "llama2";
  return "";
}

ChatTemplate::ChatTemplate(const Tokenizer& tok, const std::string& family) : tok_(tok) {
  const auto known = known_families();
  if (family.empty() || family == "auto") {
    const std::string& src = tok.chat_template_source();
    SAFEDEC_CHECK(!src.empty(), "The tokenizer from '", tok.source(),
                  "' carries no chat template (tokenizer.chat_template); set the chat template explicitly to one of: ",
                  join(known), ".");
    family_ = detect_family(src);
    SAFEDEC_CHECK(!family_.empty(), "The chat template of '", tok.source(),
                  "' matches none of the known families; set it explicitly to one of: ", join(known), ".");
  } else {
    SAFEDEC_CHECK(std::find(known.begin(), known.end(), family) != known.end(), "Unknown chat template '", family,
                  "'; known: auto, ", join(known), ".");
    family_ = family;
  }
  if (family_ == "chatml" && detect_family(tok.chat_template_source()) == "chatml")
    default_system_ = extract_default_system(tok.chat_template_source());
}

ChatPrompt ChatTemplate::render_empty_system(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  return render(std::string(), messages, add_generation_prompt);
}

ChatPrompt ChatTemplate::render(const std::optional<std::string>& system_in, const std::vector<ChatMessage>& messages_in,
                                bool add_generation_prompt) const {
  std::optional<std::string> system = system_in;
  std::vector<ChatMessage> messages = messages_in;
  if (!messages.empty() && messages[0].role == "system") {
    SAFEDEC_CHECK(!system.has_value(), "Chat render: a system text was given and the messages also start with a "
                  "system message; give only one.");
    system = messages[0].content;
    messages.erase(messages.begin());
  }
  for (const auto& m : messages)
    SAFEDEC_CHECK(m.role == "user" || m.role == "assistant" || m.role == "system", "Chat render: unknown role '",
                  m.role, "'; use system, user or assistant.");

  auto special = [&](const char* spelling) {
    int32_t id = tok_.piece_to_token(spelling);
    SAFEDEC_CHECK(id >= 0, "Chat template '", family_, "' needs the token ", spelling, " but the tokenizer from '",
                  tok_.source(), "' has none; pick another chat template.");
    Part p{spelling};
    p.special_id = id;
    return p;
  };
  auto special_id = [&](int32_t id, const char* what) {
    SAFEDEC_CHECK(id >= 0, "Chat template '", family_, "' needs a ", what, " token but the tokenizer from '",
                  tok_.source(), "' defines none.");
    Part p{tok_.token_text(id)};
    p.special_id = id;
    return p;
  };
  auto check_alternating = [&]() {
    for (size_t i = 0; i < messages.size(); ++i)
      SAFEDEC_CHECK((messages[i].role == "user") == (i % 2 == 0), "Chat template '", family_,
                    "': conversation roles must alternate user/assistant/user/... (message ", i, " is '",
                    messages[i].role, "').");
  };

  std::vector<Part> parts;
  auto text = [&](const std::string& s) { parts.push_back({s}); };
  int64_t last_user = -1;  // index of the final user message
  for (size_t i = 0; i < messages.size(); ++i)
    if (messages[i].role == "user") last_user = static_cast<int64_t>(i);
  auto mark_user_end = [&](size_t message) {
    if (static_cast<int64_t>(message) != last_user) return;
    Part p{""};
    p.user_end = true;
    parts.push_back(p);
  };
  auto sys_part = [&](const std::string& s) {
    Part p{s};
    p.system = true;
    parts.push_back(p);
  };

  if (family_ == "chatml") {
    std::optional<std::string> sys = system;
    if (!sys && !default_system_.empty()) sys = default_system_;
    if (sys) {
      parts.push_back(special("<|im_start|>"));
      text("system\n");
      sys_part(*sys);
      parts.push_back(special("<|im_end|>"));
      text("\n");
    }
    for (size_t i = 0; i < messages.size(); ++i) {
      const auto& m = messages[i];
      parts.push_back(special("<|im_start|>"));
      text(m.role + "\n" + m.content);
      mark_user_end(i);
      parts.push_back(special("<|im_end|>"));
      text("\n");
    }
    if (add_generation_prompt) {
      parts.push_back(special("<|im_start|>"));
      text("assistant\n");
    }
  } else if (family_ == "llama2") {
    check_alternating();
    for (size_t i = 0; i < messages.size(); ++i) {
      const auto& m = messages[i];
      if (m.role == "user") {
        parts.push_back(special_id(tok_.bos_id(), "BOS"));
        text("[INST] ");
        if (i == 0 && system) {
          auto stripped = strip_parts("<<SYS>>\n", *system, true, "\n<</SYS>>\n\n" + m.content);
          parts.insert(parts.end(), stripped.begin(), stripped.end());
        } else {
          text(py_strip(m.content));
        }
        mark_user_end(i);
        text(" [/INST]");
      } else {
        text(" " + py_strip(m.content) + " ");
        parts.push_back(special_id(tok_.eos_id(), "EOS"));
      }
    }
  } else if (family_ == "llama3") {
    parts.push_back(special_id(tok_.bos_id(), "BOS"));
    auto turn = [&](const std::string& role, const std::string& content, bool is_system, size_t message) {
      parts.push_back(special("<|start_header_id|>"));
      text(role);
      parts.push_back(special("<|end_header_id|>"));
      text("\n\n");
      if (is_system) {
        sys_part(py_strip(content));
      } else {
        text(py_strip(content));
        mark_user_end(message);
      }
      parts.push_back(special("<|eot_id|>"));
    };
    if (system) turn("system", *system, true, messages.size());
    for (size_t i = 0; i < messages.size(); ++i) turn(messages[i].role, messages[i].content, false, i);
    if (add_generation_prompt) {
      parts.push_back(special("<|start_header_id|>"));
      text("assistant");
      parts.push_back(special("<|end_header_id|>"));
      text("\n\n");
    }
  } else {  // gemma
    check_alternating();
    parts.push_back(special_id(tok_.bos_id(), "BOS"));
    for (size_t i = 0; i < messages.size(); ++i) {
      const auto& m = messages[i];
      parts.push_back(special("<start_of_turn>"));
      text((m.role == "assistant" ? std::string("model") : m.role) + "\n");
      if (i == 0 && system) {
        sys_part(*system);
        text("\n\n");
      }
      text(py_strip(m.content));
      mark_user_end(i);
      parts.push_back(special("<end_of_turn>"));
      text("\n");
    }
    if (add_generation_prompt) {
      parts.push_back(special("<start_of_turn>"));
      text("model\n");
    }
  }

  // Text and the system byte range.
  ChatPrompt out;
  size_t sys_b = 0, sys_e = 0, user_b = 0;
  bool has_sys = false, has_user = false;
  for (const auto& p : parts) {
    if (p.user_end) {
      has_user = true;
      user_b = out.text.size();
    }
    if (p.system) {
      has_sys = true;
      sys_b = out.text.size();
      sys_e = sys_b + p.text.size();
    }
    out.text += p.text;
  }

  // Token ids as HF computes them: the whole string, special tokens matched in the text. A plain
  // SentencePiece model does not match special tokens in text, so there the parts are encoded one
  // run at a time with the special ids in between (HF splits on them first, so this is the same).
  Encoding enc;
  if (tok_.kind() != "sentencepiece") {
    enc = tok_.encode_with_offsets(out.text, false);
  } else {
    size_t pos = 0;
    std::string run;
    size_t run_start = 0;
    auto flush = [&]() {
      if (run.empty()) return;
      Encoding e = tok_.encode_with_offsets(run, false);
      for (size_t k = 0; k < e.ids.size(); ++k) {
        enc.ids.push_back(e.ids[k]);
        enc.offsets.emplace_back(e.offsets[k].first + run_start, e.offsets[k].second + run_start);
      }
      run.clear();
    };
    for (const auto& p : parts) {
      if (p.special_id >= 0) {
        flush();
        enc.ids.push_back(p.special_id);
        enc.offsets.emplace_back(pos, pos + p.text.size());
      } else {
        if (run.empty()) run_start = pos;
        run += p.text;
      }
      pos += p.text.size();
    }
    flush();
  }
  out.ids = std::move(enc.ids);
  if (has_user) {  // tokens that start before the end of the user text (one straddling it counts inside)
    int64_t i = 0;
    while (i < static_cast<int64_t>(enc.offsets.size()) && enc.offsets[i].first < user_b) ++i;
    out.user_end = i;
  }
  if (has_sys) {
    const auto& off = enc.offsets;
    const int64_t n = static_cast<int64_t>(off.size());
    if (sys_e == sys_b) {
      int64_t i = 0;
      while (i < n && off[i].first < sys_b) ++i;
      out.system_begin = out.system_end = i;
    } else {
      int64_t b = 0;
      while (b < n && off[b].second <= sys_b) ++b;
      int64_t e = b;
      while (e < n && off[e].first < sys_e) ++e;
      out.system_begin = b;
      out.system_end = e;
    }
  }
  return out;
}

}  // namespace safedec
