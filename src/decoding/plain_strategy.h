// The `plain` strategy: the target model alone (one branch, one KV cache).
#pragma once
#include <memory>

#include "decoding/strategy.h"
#include "model/causal_lm.h"
#include "model/prefix_cache.h"

namespace safedec {

// The target model alone, batched with left padding.
class PlainStrategy : public Strategy {
 public:
  // With `prefixes`, each prompt's system turn (ids up to system_end) comes from the store.
  explicit PlainStrategy(std::shared_ptr<const CausalLM> model, int64_t pad_id = 0,
                         std::shared_ptr<PrefixKvStore> prefixes = nullptr);
  std::string name() const override { return "plain"; }
  void start(const std::vector<StrategyPrompt>& prompts, int64_t max_new_tokens) override;
  torch::Tensor next_scores(int64_t step) override;
  void advance(const std::vector<int32_t>& tokens) override;
  void keep_rows(const std::vector<int64_t>& rows) override;

 private:
  std::shared_ptr<const CausalLM> model_;
  int64_t pad_id_;
  std::shared_ptr<PrefixKvStore> prefixes_;
  KvCache cache_;
  torch::Tensor last_;  // [A, V] scores of the pending step
};

// Feeds one token per row and returns the next logits [B, V].
torch::Tensor decode_step(const CausalLM& model, const std::vector<int32_t>& tokens, KvCache& cache);
// Keeps cache rows (indices into the current rows, increasing).
void keep_cache_rows(KvCache& cache, const std::vector<int64_t>& rows);

}  // namespace safedec
