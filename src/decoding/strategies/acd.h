// ACD — adversarial contrastive decoding (methods.md 2): l = l_SP - alpha * l_AP from two branches of
// the target that differ only in the system slot, advanced together as 2B rows of one batch.
#pragma once
#include "decoding/strategies/common.h"
#include "decoding/strategies/method_config.h"

namespace safedec {

// Two system-slot branches (text prompts or soft prompts) contrasted per step.
class AcdStrategy : public Strategy {
 public:
  // sp/ap: soft prompts [L, d] / [L', d] (only for config.prompts == "soft").
  AcdStrategy(StrategyEnv env, AcdConfig config, torch::Tensor sp = {}, torch::Tensor ap = {});
  std::string name() const override { return "acd"; }
  void start(const std::vector<StrategyPrompt>& prompts, int64_t max_new_tokens) override;
  torch::Tensor next_scores(int64_t step) override;
  void advance(const std::vector<int32_t>& tokens) override;
  void keep_rows(const std::vector<int64_t>& rows) override;

 private:
  // The branch row of one prompt: kind is "safe", "opposite" or "null".
  BranchRow branch_row(const StrategyPrompt& p, const std::string& kind) const;

  StrategyEnv env_;
  AcdConfig config_;
  torch::Tensor sp_, ap_;
  KvCache cache_;
  torch::Tensor logits_;  // [2A, V]: SP rows then AP rows
  int64_t rows_ = 0;      // A
  TracedRows traced_;
};


}  // namespace safedec
