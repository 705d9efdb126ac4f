// Chat templates: render (system, messages) into the exact text and token ids Hugging Face's
// apply_chat_template produces for the families chatml (SmolLM2, Qwen), llama2, llama3 and gemma,
// and report where the system text sits so soft prompts can be spliced there.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace safedec {

// One chat turn; role is "system", "user" or "assistant".
struct ChatMessage {
  std::string role;
  std::string content;
};

// A rendered prompt. [system_begin, system_end) is the token span of the system text (empty span
// at the slot position for an explicit empty system text; -1/-1 when the prompt has no system
// slot at all). Tokens that straddle the edge of the system text (BPE merging across it) are
// counted inside the span.
// user_end is one past the last token of the final user message's text (-1 without a user message):
// the tokens after it are the template's end-of-turn and generation header.
struct ChatPrompt {
  std::vector<int32_t> ids;
  int64_t system_begin = -1, system_end = -1;
  int64_t user_end = -1;
  std::string text;
};

// A chat format bound to a tokenizer (which must outlive it).
//
// System text semantics of render(system, ...):
//  * std::nullopt: what the model's template does without a system message — SmolLM2's template
//    inserts its default system prompt (the span then covers that default text); other families
//    render no system part (span -1/-1). A leading {"system", ...} message in `messages` is used
//    as the system text instead.
//  * a string (possibly empty ""): rendered exactly as HF renders a first message
//    {"role": "system", "content": system}; "" gives an empty slot (system_begin == system_end).
//  * gemma has no system role: like the HF Gemma 3 template, the system text is put at the start
//    of the first user turn (after "<start_of_turn>user\n") followed by "\n\n"; the span is there,
//    not right after BOS, so that the ids stay identical to HF.
//  * llama2: inside the first [INST] as "<<SYS>>\n{system}\n<</SYS>>\n\n"; llama3: its own
//    header block (content trimmed, as the template does).
class ChatTemplate {
 public:
  // family: "auto" (or "") detects from tok.chat_template_source(); otherwise one of
  // known_families() (throws safedec::Error listing them).
  explicit ChatTemplate(const Tokenizer& tok, const std::string& family = "auto");

  static std::vector<std::string> known_families();
  // Family named by the markers in a Jinja template source, or "" if none is recognised.
  static std::string detect_family(const std::string& template_source);

  const std::string& family() const { return family_; }
  // The default system text the template inserts (SmolLM2, Qwen), or "".
  const std::string& default_system() const { return default_system_; }

  ChatPrompt render(const std::optional<std::string>& system, const std::vector<ChatMessage>& messages,
                    bool add_generation_prompt) const;
  // Same as render(std::string(""), ...): an explicit, empty system slot.
  ChatPrompt render_empty_system(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

 private:
  const Tokenizer& tok_;
  std::string family_;
  std::string default_system_;
};

}  // namespace safedec
