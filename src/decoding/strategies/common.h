// Shared pieces of the safety strategies: batched branch prefill (with soft-prompt splicing and
// forward hooks), one decode step, prompt re-rendering, ICV steering hooks and per-token traces.
#pragma once
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "decoding/strategy.h"
#include "kernels/steering_math.h"
#include "model/causal_lm.h"
#include "model/prefix_cache.h"
#include "tokenizer/tokenizer.h"

namespace safedec {

class Steering;

// Renders the user turn of `base` again with another system text (std::nullopt = the template's
// default). Strategies use it for branches that differ only in the system slot.
using PromptRenderer = std::function<StrategyPrompt(const StrategyPrompt& base, const std::optional<std::string>& system)>;

// Receives one JSON object per sequence and decoding step (the --trace file).
using TraceSink = std::function<void(const nlohmann::json&)>;

// One row of a branch: token ids, optionally with soft-prompt embeddings [L, d] inserted before
// ids[embeds_at] (embeds_at == ids.size() appends them). The first `shared_prefix` positions are
// the same for every prompt of the branch (its system turn), so a PrefixKvStore may supply them.
struct BranchRow : PrefixSpec {
  int64_t shared_prefix = 0;
  BranchRow() = default;
  BranchRow(std::vector<int32_t> row_ids, torch::Tensor row_embeds = {}, int64_t at = -1, int64_t shared = 0)
      : PrefixSpec{std::move(row_ids), std::move(row_embeds), at}, shared_prefix(shared) {}
};

// Rows whose prefill lengths differ a lot run in separate forwards (groups of similar lengths, see
// prefill_groups) and are stacked into one cache; on by default. Off: one padded forward (benchmarks).
void set_grouped_prefill(bool on);
// Splits rows into groups minimising sum over groups of (rows x longest `work` in the group) +
// forward_cost per group; each group lists row indices in increasing order, groups by length.
std::vector<std::vector<int64_t>> prefill_groups(const std::vector<int64_t>& work, int64_t forward_cost);
// The fixed cost of one more prefill forward, in positions (measured on SmolLM2-135M, one thread).
constexpr int64_t kPrefillForwardCost = 8;

// A prompt's own rendering as a branch row; its system turn (ids up to system_end) is shared.
BranchRow prompt_row(const StrategyPrompt& p);

// Left-pads the rows, creates `cache` and prefills it; returns the last-position logits [B, V].
// If `last_hidden` is given it receives the final-normed hidden state of each row's last token [B, d].
// With a `prefixes` store (and hooks it accepts), each row's `shared_prefix` positions come from the
// store and only the rest of the rows is run through the model.
torch::Tensor prefill_rows(const CausalLM& model, const std::vector<BranchRow>& rows, int64_t extra_slots,
                           int64_t pad_id, KvCache& cache, const ForwardHooks* hooks = nullptr,
                           torch::Tensor* last_hidden = nullptr, PrefixKvStore* prefixes = nullptr);
// Feeds one token per row; returns the next logits [B, V].
torch::Tensor step_rows(const CausalLM& model, const std::vector<int32_t>& tokens, KvCache& cache,
                        const ForwardHooks* hooks = nullptr);
// tokens repeated `times` (rows of several branches stacked in one batch).
std::vector<int32_t> repeat_tokens(const std::vector<int32_t>& tokens, int times);
// [rows] int64 index tensor.
torch::Tensor index_tensor(const std::vector<int64_t>& rows);

// Safe-Align in-context safety vector injection (methods.md 3b), usable alone (`steer`) or inside
// another method (a `steer:` sub-config).
struct SteerConfig {
  bool enabled = false;
  std::string icv;              // safetensors file with tensor `icv` [L, d]
  double alpha = 0.12;          // the code's default strength
  std::string form = "code";    // code | paper (h - alpha ICV rescaled to |h|: the paper's h + alpha ICV, whose ICV points to the safe side)
  void validate(const std::string& where) const;
};

// ICV tensor + hooks that steer every layer's MLP output of a model.
class Steering {
 public:
  // Loads and checks the ICV against the model ([n_layers, hidden]).
  Steering(const SteerConfig& config, const ModelConfig& model);
  // From an ICV tensor directly (tests).
  Steering(torch::Tensor icv, double alpha, SteerForm form);
  const ForwardHooks* hooks() const { return &hooks_; }
  const torch::Tensor& icv() const { return icv_; }

 private:
  void bind();
  torch::Tensor icv_;  // [L, d] fp32
  double alpha_;
  SteerForm form_;
  ForwardHooks hooks_;
};

// What every safety strategy gets from its caller besides its own config.
struct StrategyEnv {
  std::shared_ptr<const CausalLM> model;  // the target
  int64_t pad_id = 0;
  PromptRenderer render;                  // empty: every branch reuses the prompt's own ids
  std::shared_ptr<const Tokenizer> tokenizer;  // optional (NGSD self-reflection and early stop)
  std::vector<int32_t> eos_ids;           // optional (NGSD early stop, self-reflection)
  std::shared_ptr<const Steering> steering;  // optional ICV steering of the target
  TraceSink trace;                        // optional per-token trace
  std::shared_ptr<PrefixKvStore> prefixes;  // optional: system-turn KV computed once per run
};

// Book-keeping every strategy shares: ids of the active rows and the decoding step, for traces.
class TracedRows {
 public:
  void start(const std::vector<StrategyPrompt>& prompts);
  void keep(const std::vector<int64_t>& rows);
  const std::vector<std::string>& ids() const { return ids_; }
  int64_t step = 0;

 private:
  std::vector<std::string> ids_;
};

// The top-n (token, logit) pairs of one row as JSON [[id, value], ...].
nlohmann::json top_tokens_json(const torch::Tensor& row, int64_t n);

}  // namespace safedec
