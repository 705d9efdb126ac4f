// The steer strategy: plain decoding whose every forward call carries the ICV MLP-output hook
// (steer_hidden, code form by default; the paper form is a switch in SteerConfig).
#include "decoding/strategies/steer.h"

#include "core/error.h"
#include "decoding/plain_strategy.h"

namespace safedec {

SteerStrategy::SteerStrategy(StrategyEnv env, std::shared_ptr<const Steering> steering)
    : env_(std::move(env)), steering_(std::move(steering)) {
  SAFEDEC_CHECK(env_.model && steering_, "steer: needs a target model and an ICV");
}

void SteerStrategy::start(const std::vector<StrategyPrompt>& prompts, int64_t max_new_tokens) {
  std::vector<BranchRow> rows;
  for (const auto& p : prompts) rows.push_back(prompt_row(p));
  logits_ = prefill_rows(*env_.model, rows, max_new_tokens, env_.pad_id, cache_, steering_->hooks(), nullptr,
                         env_.prefixes.get());
}

torch::Tensor SteerStrategy::next_scores(int64_t) { return logits_; }

void SteerStrategy::advance(const std::vector<int32_t>& tokens) {
  logits_ = step_rows(*env_.model, tokens, cache_, steering_->hooks());
}

void SteerStrategy::keep_rows(const std::vector<int64_t>& rows) {
  keep_cache_rows(cache_, rows);
  logits_ = logits_.index_select(0, index_tensor(rows).to(logits_.device()));
}

}  // namespace safedec
