// ACD decoding (Zhao et al. 2024; methods.md 2). Per step both branches see the same generated
// prefix; the scores are l_SP - alpha * l_AP (contrastive_combine). Branches differ only in the
// system slot: manual text prompts (the instructive-decoding baseline) or soft prompts spliced
// into the empty system slot with the input-embeddings hook. Variants: null_ap (the SP branch has
// an empty system slot) and sp_null (the AP branch has an empty system slot).
#include "decoding/strategies/acd.h"

#include "core/error.h"
#include "decoding/plain_strategy.h"
#include "kernels/ops.h"

namespace safedec {

AcdStrategy::AcdStrategy(StrategyEnv env, AcdConfig config, torch::Tensor sp, torch::Tensor ap)
    : env_(std::move(env)), config_(std::move(config)), sp_(std::move(sp)), ap_(std::move(ap)) {
  config_.validate();
  SAFEDEC_CHECK(env_.model, "acd: no target model given");
  if (config_.prompts == "soft") {
    SAFEDEC_CHECK(sp_.defined() && ap_.defined(), "acd: `prompts: soft` but no soft prompt tensors were loaded");
    SAFEDEC_CHECK(env_.render, "acd: soft prompts need a chat template to find the system slot");
  }
}

BranchRow AcdStrategy::branch_row(const StrategyPrompt& p, const std::string& kind) const {
  BranchRow row;
  if (!env_.render) return prompt_row(p);  // no chat template (tests on token prompts): the prompt's own ids
  if (config_.prompts == "manual" || kind == "null") {
    const std::string text = kind == "safe" ? config_.safe_prompt : kind == "opposite" ? config_.opposite_prompt : "";
    return prompt_row(env_.render(p, text));
  }
  // Soft prompt: render with an explicit empty system text and splice the embeddings into the slot
  // (for templates without a system role the slot sits where the template puts system text).
  StrategyPrompt empty = env_.render(p, std::string());
  SAFEDEC_CHECK(empty.system_begin >= 0, "acd: the chat template has no system slot to splice soft prompts into");
  row.ids = empty.ids;
  row.embeds = (kind == "safe" ? sp_ : ap_).to(env_.model->dtype());
  row.embeds_at = empty.system_begin;
  row.shared_prefix = empty.system_end + row.embeds.size(0);  // the system turn including the soft prompt
  return row;
}

void AcdStrategy::start(const std::vector<StrategyPrompt>& prompts, int64_t max_new_tokens) {
  traced_.start(prompts);
  rows_ = static_cast<int64_t>(prompts.size());
  const std::string sp_kind = config_.variant == "null_ap" ? "null" : "safe";
  const std::string ap_kind = config_.variant == "sp_null" ? "null" : "opposite";
  std::vector<BranchRow> rows;
  for (const auto& p : prompts) rows.push_back(branch_row(p, sp_kind));
  for (const auto& p : prompts) rows.push_back(branch_row(p, ap_kind));
  logits_ = prefill_rows(*env_.model, rows, max_new_tokens, env_.pad_id, cache_,
                         env_.steering ? env_.steering->hooks() : nullptr, nullptr, env_.prefixes.get());
}

torch::Tensor AcdStrategy::next_scores(int64_t step) {
  torch::Tensor l_sp = logits_.narrow(0, 0, rows_).to(torch::kFloat32);
  torch::Tensor l_ap = logits_.narrow(0, rows_, rows_).to(torch::kFloat32);
  torch::Tensor scores = contrastive_combine(l_sp, l_ap, config_.alpha);
  if (env_.trace) {
    for (int64_t r = 0; r < rows_; ++r)
      env_.trace({{"method", "acd"},
                  {"id", traced_.ids()[r]},
                  {"step", step},
                  {"top5_sp", top_tokens_json(l_sp[r], 5)},
                  {"top5_ap", top_tokens_json(l_ap[r], 5)},
                  {"top5_acd", top_tokens_json(scores[r], 5)}});
  }
  return scores;
}

void AcdStrategy::advance(const std::vector<int32_t>& tokens) {
  logits_ = step_rows(*env_.model, repeat_tokens(tokens, 2), cache_, env_.steering ? env_.steering->hooks() : nullptr);
  ++traced_.step;
}

void AcdStrategy::keep_rows(const std::vector<int64_t>& rows) {
  std::vector<int64_t> both(rows);
  for (int64_t r : rows) both.push_back(r + rows_);
  keep_cache_rows(cache_, both);
  logits_ = logits_.index_select(0, index_tensor(both).to(logits_.device()));
  rows_ = static_cast<int64_t>(rows.size());
  traced_.keep(rows);
}

}  // namespace safedec
