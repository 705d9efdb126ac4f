// Strategy: how a decoding method turns one or more model branches into next-token scores.
// The Generator owns the loop (processors, sampling, stopping); a Strategy owns its branches
// (models + KV caches) and its per-sequence state (gate potential, alpha, step count).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/chat_template.h"

namespace safedec {

// One conversation to continue: the raw chat and its rendering for the target model.
// A multi-turn chat is (system, history, user): `history` holds the earlier turns, alternating
// user/assistant and starting with user, and `user` is the final user turn that the reply answers.
// Every renderer (the target's, ACD's system branches, an expert's own template, steering) renders
// the whole conversation, so all branches see the same chat; only the system slot may differ.
struct StrategyPrompt {
  std::string id;
  std::string system;           // system text ("" = none); strategies may replace it
  bool has_system = false;      // false: the template's default (e.g. SmolLM2's own system line)
  std::vector<ChatMessage> history;  // earlier turns before `user` (empty = a single-turn chat)
  std::string user;             // the final user turn
  std::vector<int32_t> ids;     // the target's rendering (chat template + generation prompt)
  int64_t system_begin = -1;    // token span of the system text inside ids, -1 if none
  int64_t system_end = -1;
  int64_t user_end = -1;        // one past the last token of the user text inside ids (-1 if unknown)
};

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::string name() const = 0;
  // Prefills every branch for this batch (rows in prompt order, all active afterwards).
  virtual void start(const std::vector<StrategyPrompt>& prompts, int64_t max_new_tokens) = 0;
  // [A, V] fp32 scores of the A active rows: logits or log-probabilities (any per-row constant
  // shift is allowed; -inf marks impossible tokens). The processor chain and sampler follow.
  virtual torch::Tensor next_scores(int64_t step) = 0;
  // Feeds the token chosen for each active row (in active-row order).
  virtual void advance(const std::vector<int32_t>& tokens) = 0;
  // Keeps only these active rows (indices into the current active rows, increasing).
  virtual void keep_rows(const std::vector<int64_t>& rows) = 0;
};

}  // namespace safedec
