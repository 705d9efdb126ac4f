// NGSD — neuron-gated safety decoding (methods.md 1): a target and a separate small expert sharing
// the vocabulary, each with its own KV cache and chat rendering; a LIF gate on the per-token TV
// distance decides when the expert's probabilities are mixed in (ngsd_step).
#pragma once
#include "decoding/strategies/common.h"
#include "decoding/strategies/method_config.h"
#include "decoding/strategies/risk.h"
#include "model/lora.h"

namespace safedec {

// Target + expert branches gated per token by a leaky integrate-and-fire unit.
class NgsdStrategy : public Strategy {
 public:
  // expert_render: the expert's own chat rendering (empty = reuse the target's ids). expert_lora: the
  // expert is `expert` (the target itself) with this adapter on its rows (expert: lora).
  NgsdStrategy(StrategyEnv env, NgsdConfig config, std::shared_ptr<const CausalLM> expert, PromptRenderer expert_render,
               std::unique_ptr<RiskEstimator> risk, std::shared_ptr<const LoraAdapter> expert_lora = {});
  std::string name() const override { return "ngsd"; }
  void start(const std::vector<StrategyPrompt>& prompts, int64_t max_new_tokens) override;
  torch::Tensor next_scores(int64_t step) override;
  void advance(const std::vector<int32_t>& tokens) override;
  void keep_rows(const std::vector<int64_t>& rows) override;

  // Per-row state after start(): alpha and risk of the active rows; gate statistics.
  const torch::Tensor& alpha() const { return alpha_; }
  const std::vector<double>& risk() const { return risk_; }
  int64_t spikes() const { return spikes_; }
  int64_t gated_tokens() const { return gated_tokens_; }

 private:

  StrategyEnv env_;
  NgsdConfig config_;
  std::shared_ptr<const CausalLM> expert_;
  PromptRenderer expert_render_;
  std::unique_ptr<RiskEstimator> risk_estimator_;
  std::shared_ptr<const LoraAdapter> expert_lora_;
  ForwardHooks joint_hooks_, expert_hooks_;  // LoRA on the expert rows (joint) or on the expert forward
  // Hooks of the joint forward over A target rows then A expert rows (nullptr without a LoRA expert).
  const ForwardHooks* joint_hooks(int64_t A);
  KvCache cache_b_, cache_e_;  // joint_: both branches in cache_b_ (target rows, then expert rows)
  bool joint_ = false;          // the expert is the target itself (system-prompt expert), no steering:
                                // one batched forward of 2A rows per step instead of two forwards
  torch::Tensor l_b_, l_e_;   // [A, V]
  torch::Tensor alpha_, v_;   // [A] float32: mixing strength, membrane potential
  std::vector<double> risk_;
  // Early-stop state per active row.
  std::vector<std::vector<int32_t>> generated_;
  std::vector<int64_t> stop_limit_;  // -1: not triggered
  int64_t spikes_ = 0, gated_tokens_ = 0;
  TracedRows traced_;
};

// Refusal phrases that trigger NGSD's early stop (lower case).
const std::vector<std::string>& ngsd_refusal_phrases();

// The reference's early-stop rule for one sequence (call once per step with the tokens generated so
// far; `limit` starts at -1 and is the row's state). From 128 to 256 tokens, every 7 tokens, the last
// 64 tokens are decoded; a refusal phrase sets limit = n + 128. Once set, returns true (end now) when
// n reaches the limit or the last token decodes exactly to ".", "!" or "?". Control characters such as
// "\n" do not end the sequence (the reference's bug).
bool ngsd_early_stop(const std::vector<int32_t>& generated,
                     const std::function<std::string(const std::vector<int32_t>&)>& decode, int64_t& limit);

}  // namespace safedec
