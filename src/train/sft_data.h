// Supervised examples for the LM trainer, rendered exactly as decoding renders prompts: the model's chat
// template with the generation prompt (ModelBundle::make_prompt), then the response tokens and the
// template's end-of-turn token, with the loss on the response (and end-of-turn) only. Also the deep
// safety-alignment augmentation of methods.md 1 (Qi et al. 2024) and the readers of the data files.
#pragma once
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "decoding/model_bundle.h"
#include "train/lm_task.h"

namespace safedec {

// The id that ends an assistant turn: <|im_end|> (ChatML), <end_of_turn> (Gemma), <|eot_id|>
// (Llama 3), else the end-of-sequence id.
int32_t end_of_turn_id(const Tokenizer& tokenizer);

// One (prompt, response) pair rendered for `bundle`. system: nullopt = the template's default.
// `prefix` tokens (e.g. the start of a harmful answer) go into the assistant turn before the response
// without loss. Sequences over max_tokens are cut from the end of the response (keeping >= 1 target).
LmExample chat_example(const ModelBundle& bundle, const std::string& id, const std::string& user,
                       const std::string& response, const std::optional<std::string>& system = std::nullopt,
                       const std::vector<int32_t>& prefix = {}, int64_t max_tokens = 512, int term = 0);

// SafeDecoding's refusal file rows: "USER: <prompt> ASSISTANT: <refusal></s>" -> (prompt, refusal).
std::pair<std::string, std::string> split_vicuna_text(const std::string& text, const std::string& where);

// A row of the deep-alignment data (safedec data build, builder deep_alignment).
struct AlignmentRow {
  std::string id;
  std::string kind;  // safety | anchor
  std::string instruction;
  std::string harmful_answer;  // safety rows: the model's (or a reference) complying answer; may be empty
  std::string refusal;         // safety rows
  std::string response;        // anchor rows
};
// Reads the JSONL rows (errors name the line); unknown kinds are refused.
std::vector<AlignmentRow> read_alignment_rows(const std::string& path);

struct AugmentOptions {
  double prefix_probability = 0.5;  // share of safety examples that start with a harmful prefix
  int64_t max_prefix_tokens = 100;  // k ~ U[1, min(max_prefix_tokens, len(harmful answer))]
  uint64_t seed = 0;
};
// The training examples of deep-alignment rows: safety rows become instruction -> refusal, or (with
// probability p, when a harmful answer exists) instruction -> [first k harmful tokens] refusal with the
// loss on the refusal only; anchor rows instruction -> response. The draw is seeded per row id.
std::vector<LmExample> deep_alignment_examples(const ModelBundle& bundle, const std::vector<AlignmentRow>& rows,
                                               const AugmentOptions& options, int64_t max_tokens,
                                               int64_t* augmented = nullptr);

}  // namespace safedec
