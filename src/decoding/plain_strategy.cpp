#include "decoding/plain_strategy.h"

#include "core/error.h"
#include "decoding/strategies/common.h"

namespace safedec {

torch::Tensor decode_step(const CausalLM& model, const std::vector<int32_t>& tokens, KvCache& cache) {
  std::vector<int64_t> t(tokens.begin(), tokens.end());
  ForwardInput in;
  in.ids = torch::tensor(t, torch::kLong).view({static_cast<int64_t>(t.size()), 1}).to(model.device());
  in.last_only = true;
  return model.forward(in, cache).select(1, 0);
}

void keep_cache_rows(KvCache& cache, const std::vector<int64_t>& rows) {
  if (static_cast<int64_t>(rows.size()) == cache.batch()) return;
  cache = cache.select_rows(torch::tensor(rows, torch::kLong));
  cache.compact();
}

PlainStrategy::PlainStrategy(std::shared_ptr<const CausalLM> model, int64_t pad_id,
                             std::shared_ptr<PrefixKvStore> prefixes)
    : model_(std::move(model)), pad_id_(pad_id), prefixes_(std::move(prefixes)) {}

void PlainStrategy::start(const std::vector<StrategyPrompt>& prompts, int64_t max_new_tokens) {
  std::vector<BranchRow> rows;
  for (const auto& p : prompts) rows.push_back(prompt_row(p));
  last_ = prefill_rows(*model_, rows, max_new_tokens, pad_id_, cache_, nullptr, nullptr, prefixes_.get());
}

torch::Tensor PlainStrategy::next_scores(int64_t) { return last_; }

void PlainStrategy::advance(const std::vector<int32_t>& tokens) { last_ = decode_step(*model_, tokens, cache_); }

void PlainStrategy::keep_rows(const std::vector<int64_t>& rows) {
  keep_cache_rows(cache_, rows);
  last_ = last_.index_select(0, torch::tensor(rows, torch::kLong).to(last_.device()));
}

}  // namespace safedec
