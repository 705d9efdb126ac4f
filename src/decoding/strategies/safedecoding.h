// SafeDecoding (Xu et al. 2024; methods.md 4): the base rows and expert rows of the same prompts run
// as one batch for the first m tokens, mixed by safedecoding_mix; then the base continues alone.
#pragma once
#include "decoding/strategies/common.h"
#include "decoding/strategies/method_config.h"
#include "model/lora.h"

namespace safedec {

// Base + expert rows for m tokens, base alone afterwards.
class SafeDecodingStrategy : public Strategy {
 public:
  // adapter: the expert's LoRA (expert: lora), applied to the expert rows only.
  SafeDecodingStrategy(StrategyEnv env, SafeDecodingConfig config, std::shared_ptr<const LoraAdapter> adapter = {});
  std::string name() const override { return "safedecoding"; }
  void start(const std::vector<StrategyPrompt>& prompts, int64_t max_new_tokens) override;
  torch::Tensor next_scores(int64_t step) override;
  void advance(const std::vector<int32_t>& tokens) override;
  void keep_rows(const std::vector<int64_t>& rows) override;

 private:
  // Hooks for the current rows (steering + the LoRA on expert rows while they exist).
  const ForwardHooks* hooks();

  StrategyEnv env_;
  SafeDecodingConfig config_;
  std::shared_ptr<const LoraAdapter> adapter_;
  KvCache cache_;
  torch::Tensor logits_;   // [A, V] base rows, then [A, V] expert rows while mixing
  int64_t rows_ = 0;
  int64_t fed_ = 0;        // tokens generated so far
  bool expert_on_ = false;
  ForwardHooks hooks_;
  TracedRows traced_;
};

}  // namespace safedec
