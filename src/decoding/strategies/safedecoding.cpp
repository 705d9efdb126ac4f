// SafeDecoding: for the first m tokens, C = top_k(p_b) ∩ top_k(p_e) grown to c candidates and
// q = p_b + alpha (p_e - p_b) on C (safedecoding_mix); the returned scores are log q (-inf off C),
// so greedy picks argmax q and sampling draws from q renormalised over C. The expert is either the
// target with a safety system prompt in its rows (training-free variant) or the target + a LoRA
// adapter bound to the expert rows of the same batch. After m tokens the expert rows are dropped.
#include "decoding/strategies/safedecoding.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <regex>

#include "core/error.h"
#include "core/paths.h"
#include "decoding/plain_strategy.h"
#include "io/safetensors.h"
#include "kernels/ops.h"

namespace safedec {

SafeDecodingStrategy::SafeDecodingStrategy(StrategyEnv env, SafeDecodingConfig config,
                                           std::shared_ptr<const LoraAdapter> adapter)
    : env_(std::move(env)), config_(std::move(config)), adapter_(std::move(adapter)) {
  config_.validate();
  SAFEDEC_CHECK(env_.model, "safedecoding: no target model given");
  SAFEDEC_CHECK(config_.expert != "lora" || adapter_, "safedecoding: `expert: lora` but no adapter was loaded");
}

const ForwardHooks* SafeDecodingStrategy::hooks() {
  // Without expert LoRA rows the hooks are the factory's (stable for its PrefixKvStore, which keys
  // prefixes by the hooks' address) or none.
  if (!(expert_on_ && adapter_)) return env_.steering ? env_.steering->hooks() : nullptr;
  hooks_ = env_.steering ? *env_.steering->hooks() : ForwardHooks{};
  {
    auto mask = torch::zeros({2 * rows_}, torch::kFloat32);
    mask.narrow(0, rows_, rows_).fill_(1.0f);
    hooks_.loras = {LoraBinding{adapter_, mask.to(env_.model->device())}};
  }
  return &hooks_;
}

void SafeDecodingStrategy::start(const std::vector<StrategyPrompt>& prompts, int64_t max_new_tokens) {
  traced_.start(prompts);
  rows_ = static_cast<int64_t>(prompts.size());
  fed_ = 0;
  expert_on_ = true;
  std::vector<BranchRow> rows;
  for (const auto& p : prompts) rows.push_back(prompt_row(p));
  for (const auto& p : prompts) {
    // LoRA expert (or token prompts in tests): the same rendering.
    rows.push_back(config_.expert == "system_prompt" && env_.render ? prompt_row(env_.render(p, config_.expert_system))
                                                                    : prompt_row(p));
  }
  // (A LoRA expert's hooks act on some rows only; prefill_rows then computes every prefix itself.)
  logits_ = prefill_rows(*env_.model, rows, max_new_tokens, env_.pad_id, cache_, hooks(), nullptr,
                         env_.prefixes.get());
}

torch::Tensor SafeDecodingStrategy::next_scores(int64_t step) {
  if (!expert_on_) {
    torch::Tensor scores = logits_.to(torch::kFloat32);
    if (env_.trace)
      for (int64_t r = 0; r < rows_; ++r)
        env_.trace({{"method", "safedecoding"}, {"id", traced_.ids()[r]}, {"step", step}, {"mixing", false}});
    return scores;
  }
  torch::Tensor l_b = logits_.narrow(0, 0, rows_).to(torch::kFloat32);
  torch::Tensor l_e = logits_.narrow(0, rows_, rows_).to(torch::kFloat32);
  SafeDecodingOutput out = safedecoding_mix(l_b, l_e, config_.c, config_.alpha, /*want_probs=*/true);
  if (env_.trace) {
    auto k = out.k.to(torch::kCPU);
    for (int64_t r = 0; r < rows_; ++r)
      env_.trace({{"method", "safedecoding"},
                  {"id", traced_.ids()[r]},
                  {"step", step},
                  {"mixing", true},
                  {"k", k[r].item<int64_t>()}});
  }
  // log q: the sampler and processors work on log-probabilities; tokens outside C get -inf.
  return out.probs.log();
}

void SafeDecodingStrategy::advance(const std::vector<int32_t>& tokens) {
  ++fed_;
  ++traced_.step;
  if (expert_on_ && fed_ >= config_.m) {
    // The mixing window is over: drop the expert rows, the base continues alone.
    std::vector<int64_t> base(rows_);
    for (int64_t r = 0; r < rows_; ++r) base[r] = r;
    keep_cache_rows(cache_, base);
    expert_on_ = false;
  }
  logits_ = step_rows(*env_.model, expert_on_ ? repeat_tokens(tokens, 2) : tokens, cache_, hooks());
}

void SafeDecodingStrategy::keep_rows(const std::vector<int64_t>& rows) {
  std::vector<int64_t> idx(rows);
  if (expert_on_)
    for (int64_t r : rows) idx.push_back(r + rows_);
  keep_cache_rows(cache_, idx);
  logits_ = logits_.index_select(0, index_tensor(idx).to(logits_.device()));
  rows_ = static_cast<int64_t>(rows.size());
  traced_.keep(rows);
}

}  // namespace safedec
