// NGSD step A: the per-prompt risk level r and mixing strength alpha (methods.md 1), from a
// pluggable estimator: fixed, self_reflection (the target scores the prompt as JSON S/A/E/T) or
// probe (a single neuron on the prompt's last-token final hidden state).
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "decoding/strategies/common.h"
#include "decoding/strategies/method_config.h"

namespace safedec {

// The four self-reflection scores; a missing key or a parse failure counts as 7.
struct RiskScores {
  int s = 7, a = 7, e = 7, t = 7;
  bool parsed = false;  // a JSON object was found
};

// Finds the first JSON object in `text` and reads integer keys S, A, E, T (also severity,
// actionability, evasion, targeting; case-insensitive), clamped to 0..10.
RiskScores parse_risk_json(const std::string& text);
// The reference's risk rule: +2 each for prompts over 2000 characters (capped at 10), all-zero ->
// S = 1, first of A, E, T >= 8 while S >= 5, else int(clip(max(S, 0.5 S + 0.25 (P1 + P2)), 0, 10)).
int risk_from_scores(RiskScores scores, size_t prompt_chars);
// alpha = 0.9 if r > 6; 0.1 if r < 5; else 0.5.
double alpha_from_risk(double risk);
// The instruction the target answers for self-reflection (the raw user prompt is embedded).
std::string self_reflection_prompt(const std::string& user);

struct RiskEstimate {
  double risk = -1.0;  // -1 when the estimator has no risk level (fixed alpha)
  double alpha = 0.5;
};

// Computes one alpha per prompt before decoding.
class RiskEstimator {
 public:
  virtual ~RiskEstimator() = default;
  virtual std::string name() const = 0;
  // True when estimate() needs the final hidden state of each prompt's last token.
  virtual bool needs_hidden() const { return false; }
  // last_hidden: [B, d] (defined only if needs_hidden()).
  virtual std::vector<RiskEstimate> estimate(const std::vector<StrategyPrompt>& prompts,
                                             const torch::Tensor& last_hidden) = 0;
};

// The same alpha for every prompt.
class FixedRisk : public RiskEstimator {
 public:
  explicit FixedRisk(double alpha) : alpha_(alpha) {}
  std::string name() const override { return "fixed"; }
  std::vector<RiskEstimate> estimate(const std::vector<StrategyPrompt>& prompts, const torch::Tensor&) override;

 private:
  double alpha_;
};

// The target rates the raw prompt itself (greedy, <= max_new_tokens), parsed by parse_risk_json.
class SelfReflectionRisk : public RiskEstimator {
 public:
  SelfReflectionRisk(StrategyEnv env, int64_t max_new_tokens);
  std::string name() const override { return "self_reflection"; }
  std::vector<RiskEstimate> estimate(const std::vector<StrategyPrompt>& prompts, const torch::Tensor&) override;
  // The raw self-reflection answers of the last estimate() call.
  const std::vector<std::string>& last_answers() const { return answers_; }

 private:
  StrategyEnv env_;
  int64_t max_new_tokens_;
  std::vector<std::string> answers_;
};

// Where a risk probe reads the prompt (artifacts/typed.h RiskProbe): the hidden state after `layer`
// (-1: final-normed), pooled as `pooling` over the prompt's tokens.
struct ProbeFeatureSpec {
  int64_t layer = -1;
  std::string pooling = "last";  // last | user_mean
  int64_t window = 64;           // user_mean: tokens before StrategyPrompt::user_end
  bool reads_prefill() const { return layer == -1 && pooling == "last"; }  // the prefill's last hidden state
};

// The probe's input for each prompt, [B, d] fp32 on the CPU. Runs the model itself over each
// prompt's ids (right-padded, no KV cache, layers 0..layer only), `batch` prompts per forward in
// length order. user_mean needs each prompt's user_end (a prompt without one is an error).
torch::Tensor probe_features(const CausalLM& model, const std::vector<StrategyPrompt>& prompts,
                             const ProbeFeatureSpec& spec, int64_t pad_id, int64_t batch = 8);

// r = 10 * sigmoid(w . h + b) on the prompt's features (ProbeFeatureSpec): by default the last-token
// final hidden state that NGSD's prefill already computes; other layers and poolings run
// probe_features on the target (one extra forward over the prompt, up to the probe's layer).
class ProbeRisk : public RiskEstimator {
 public:
  ProbeRisk(torch::Tensor weight, torch::Tensor bias, ProbeFeatureSpec spec = {},
            std::shared_ptr<const CausalLM> model = nullptr, int64_t pad_id = 0);
  // Loads a risk-probe artifact (or a bare safetensors file with `weight` [d], `bias` [1]) for the
  // target of `env`.
  static std::unique_ptr<ProbeRisk> load(const std::string& path, const StrategyEnv& env);
  std::string name() const override { return "probe"; }
  bool needs_hidden() const override { return spec_.reads_prefill(); }
  std::vector<RiskEstimate> estimate(const std::vector<StrategyPrompt>& prompts,
                                     const torch::Tensor& last_hidden) override;
  const ProbeFeatureSpec& spec() const { return spec_; }

 private:
  torch::Tensor weight_, bias_;
  ProbeFeatureSpec spec_;
  std::shared_ptr<const CausalLM> model_;
  int64_t pad_id_ = 0;
};

std::unique_ptr<RiskEstimator> make_risk_estimator(const NgsdConfig& config, const StrategyEnv& env);

}  // namespace safedec
