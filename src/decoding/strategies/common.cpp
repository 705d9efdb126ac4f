// Branch prefill/step helpers, soft-prompt splicing and ICV steering hooks shared by the strategies.
#include "decoding/strategies/common.h"

#include "artifacts/typed.h"

#include <atomic>
#include <limits>
#include <numeric>

#include "core/context_overflow.h"
#include "core/error.h"
#include "core/paths.h"
#include "io/safetensors.h"
#include "kernels/ops.h"

namespace safedec {

namespace {

std::atomic<bool> g_grouped_prefill{true};

// The positions of `r` a PrefixKvStore may supply: its shared prefix, short of the last position
// (which gives the logits), and 0 for a prefix that ends inside a soft prompt.
int64_t storable_positions(const BranchRow& r) {
  const int64_t P = std::min(r.shared_prefix, r.length() - 1);
  if (P < 1) return 0;
  const int64_t L = r.embeds.defined() ? r.embeds.size(0) : 0;
  const int64_t at = L > 0 ? r.embeds_at : static_cast<int64_t>(r.ids.size());
  return L > 0 && P > at && P < at + L ? 0 : P;
}

PrefixSpec prefix_spec(const BranchRow& r, int64_t P) {
  PrefixSpec spec;
  const int64_t L = r.embeds.defined() ? r.embeds.size(0) : 0;
  const int64_t at = L > 0 ? r.embeds_at : static_cast<int64_t>(r.ids.size());
  spec.ids.assign(r.ids.begin(), r.ids.begin() + (P <= at ? P : P - L));
  if (L > 0 && P >= at + L) {
    spec.embeds = r.embeds;
    spec.embeds_at = at;
  }
  return spec;
}

// One forward over `rows`, right-aligned in [B, T]; row b's first stored_b positions come from the
// store (`stored`), so the forward covers only the last T_new = max_b (length_b - stored_b) columns.
// Columns [0, T - T_new) are copied from the store, which holds enough of every row because
// length_b - T_new <= stored_b.
struct GroupOut {
  torch::Tensor logits, hidden;
  KvCache cache;
};
GroupOut prefill_group(const CausalLM& model, const std::vector<const BranchRow*>& rows,
                       const std::vector<std::shared_ptr<const PrefixKvStore::Entry>>& stored, int64_t extra_slots,
                       int64_t pad_id, const ForwardHooks* hooks, bool want_hidden) {
  const int64_t B = static_cast<int64_t>(rows.size());
  int64_t T = 0, T_new = 0;
  bool any_embeds = false;
  for (int64_t b = 0; b < B; ++b) {
    T = std::max(T, rows[b]->length());
    T_new = std::max(T_new, rows[b]->length() - (stored[b] ? stored[b]->length : 0));
    any_embeds = any_embeds || rows[b]->embeds.defined();
  }
  const int64_t d = model.config().hidden_size;
  auto ids = torch::full({B, T}, pad_id, torch::kInt64);
  auto pad = torch::zeros({B}, torch::kInt64);
  torch::Tensor embeds, mask;
  if (any_embeds) {
    embeds = torch::zeros({B, T, d}, torch::TensorOptions().dtype(model.dtype()));
    mask = torch::zeros({B, T}, torch::kBool);
  }
  for (int64_t b = 0; b < B; ++b) {
    pad[b] = T - rows[b]->length();
    layout_prefix_row(*rows[b], 0, rows[b]->length(), b, T - rows[b]->length(), ids, embeds, mask);
  }
  const int64_t past = T - T_new;
  GroupOut out;
  out.cache = model.new_cache(B, T + extra_slots);
  ForwardInput in;
  in.last_only = true;
  if (past == 0) {
    in.ids = ids.to(model.device());
    in.pad_left = pad;
    if (any_embeds) {
      in.input_embeds = embeds.to(model.device());
      in.embeds_mask = mask.to(model.device());
    }
  } else {
    KvCache& cache = out.cache;
    cache.set_padding(pad);
    auto pad_a = pad.accessor<int64_t, 1>();
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = past - pad_a[b];  // stored positions of row b in columns [pad_b, past)
      if (n <= 0) continue;
      SAFEDEC_ASSERT(stored[b] && stored[b]->length >= n, "prefill_rows: stored prefix too short");
      for (int64_t l = 0; l < cache.n_layers(); ++l) {
        cache.keys(l)[b].narrow(1, pad_a[b], n).copy_(stored[b]->keys[l].narrow(1, 0, n));
        cache.values(l)[b].narrow(1, pad_a[b], n).copy_(stored[b]->values[l].narrow(1, 0, n));
      }
    }
    cache.advance(past);
    in.ids = ids.narrow(1, past, T_new).contiguous().to(model.device());
    if (any_embeds) {
      in.input_embeds = embeds.narrow(1, past, T_new).contiguous().to(model.device());
      in.embeds_mask = mask.narrow(1, past, T_new).contiguous().to(model.device());
    }
  }
  if (want_hidden) {
    ForwardOutput f = model.forward_full(in, out.cache, hooks);
    out.hidden = f.hidden.select(1, 0);
    out.logits = f.logits.select(1, 0);
  } else {
    out.logits = model.forward(in, out.cache, hooks).select(1, 0);
  }
  return out;
}

}  // namespace

void set_grouped_prefill(bool on) { g_grouped_prefill = on; }

std::vector<std::vector<int64_t>> prefill_groups(const std::vector<int64_t>& work, int64_t forward_cost) {
  const int64_t B = static_cast<int64_t>(work.size());
  std::vector<int64_t> order(B);
  for (int64_t i = 0; i < B; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return work[a] < work[b]; });
  // best[j]: least cost of the first j sorted rows; a group of sorted rows [i, j) costs
  // (j - i) x work of its longest row (the last one) + forward_cost.
  std::vector<int64_t> best(B + 1, 0), cut(B + 1, 0);
  for (int64_t j = 1; j <= B; ++j) {
    best[j] = std::numeric_limits<int64_t>::max();
    for (int64_t i = 0; i < j; ++i) {
      const int64_t c = best[i] + (j - i) * work[order[j - 1]] + forward_cost;
      if (c < best[j]) {
        best[j] = c;
        cut[j] = i;
      }
    }
  }
  std::vector<std::vector<int64_t>> groups;
  for (int64_t j = B; j > 0; j = cut[j]) groups.emplace_back(order.begin() + cut[j], order.begin() + j);
  std::reverse(groups.begin(), groups.end());
  for (auto& g : groups) std::sort(g.begin(), g.end());
  return groups;
}

torch::Tensor prefill_rows(const CausalLM& model, const std::vector<BranchRow>& rows, int64_t extra_slots,
                           int64_t pad_id, KvCache& cache, const ForwardHooks* hooks, torch::Tensor* last_hidden,
                           PrefixKvStore* prefixes) {
  SAFEDEC_CHECK(!rows.empty(), "cannot prefill an empty batch (0 rows)");
  const int64_t B = static_cast<int64_t>(rows.size());
  const int64_t d = model.config().hidden_size;
  int64_t T = 0;
  bool any_embeds = false;
  for (int64_t b = 0; b < B; ++b) {
    const auto& r = rows[b];
    SAFEDEC_CHECK(r.length() > 0, "cannot generate from an empty prompt (0 tokens)");
    const int64_t n_ids = static_cast<int64_t>(r.ids.size());
    SAFEDEC_CHECK(!r.embeds.defined() || (r.embeds_at >= 0 && r.embeds_at <= n_ids && r.embeds.dim() == 2 &&
                                          r.embeds.size(1) == d),
                  "soft prompt of row ", b, " must be [L, ", d, "] inserted at a token index in [0, ", n_ids,
                  "], got shape ", r.embeds.sizes(), " at ", r.embeds_at);
    T = std::max(T, r.length());
    any_embeds = any_embeds || r.embeds.defined();
  }
  const int64_t context = model.config().context_length;
  if (context > 0 && T + extra_slots > context)
    throw ContextOverflow(detail::concat(
        "the prompt has ", T, any_embeds ? " positions (tokens and soft-prompt vectors)" : " tokens", " and up to ",
        extra_slots, " new tokens were asked for, but the model's context window is ", context,
        " tokens; shorten the prompt or lower --max-new-tokens"));

  // Stored prefixes, and the positions each row still has to run through the model.
  std::vector<std::shared_ptr<const PrefixKvStore::Entry>> stored(B);
  std::vector<int64_t> work(B);
  const bool use_store = prefixes && PrefixKvStore::usable_with(hooks);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t P = use_store ? storable_positions(rows[b]) : 0;
    if (P > 0) stored[b] = prefixes->get(model, hooks, prefix_spec(rows[b], P));
    work[b] = rows[b].length() - P;
  }
  // Rows of very different lengths run in separate forwards (less padding), then share one cache.
  // (Not under hooks that act per row, e.g. LoRA on the expert rows: they expect the whole batch.)
  std::vector<std::vector<int64_t>> groups;
  if (g_grouped_prefill && PrefixKvStore::usable_with(hooks)) {
    groups = prefill_groups(work, kPrefillForwardCost);
  } else {
    groups.emplace_back(B);
    std::iota(groups[0].begin(), groups[0].end(), int64_t{0});
  }
  std::vector<GroupOut> outs;
  std::vector<int64_t> stacked_row(B);  // row b sits at this row of the stacked groups
  int64_t next = 0;
  for (const auto& g : groups) {
    std::vector<const BranchRow*> rs;
    std::vector<std::shared_ptr<const PrefixKvStore::Entry>> st;
    for (int64_t b : g) {
      rs.push_back(&rows[b]);
      st.push_back(stored[b]);
      stacked_row[b] = next++;
    }
    outs.push_back(prefill_group(model, rs, st, extra_slots, pad_id, hooks, last_hidden != nullptr));
  }
  if (outs.size() == 1) {
    cache = std::move(outs[0].cache);
    if (last_hidden) *last_hidden = outs[0].hidden;
    return outs[0].logits;
  }
  std::vector<const KvCache*> parts;
  std::vector<torch::Tensor> logits, hidden;
  for (const auto& o : outs) {
    parts.push_back(&o.cache);
    logits.push_back(o.logits);
    if (last_hidden) hidden.push_back(o.hidden);
  }
  cache = KvCache::stack(parts, stacked_row);
  auto index = index_tensor(stacked_row).to(logits[0].device());
  if (last_hidden) *last_hidden = torch::cat(hidden).index_select(0, index);
  return torch::cat(logits).index_select(0, index);
}

BranchRow prompt_row(const StrategyPrompt& p) {
  return BranchRow(p.ids, torch::Tensor(), -1, std::max<int64_t>(0, p.system_end));
}

torch::Tensor step_rows(const CausalLM& model, const std::vector<int32_t>& tokens, KvCache& cache,
                        const ForwardHooks* hooks) {
  std::vector<int64_t> t(tokens.begin(), tokens.end());
  ForwardInput in;
  in.ids = torch::tensor(t, torch::kLong).view({static_cast<int64_t>(t.size()), 1}).to(model.device());
  in.last_only = true;
  return model.forward(in, cache, hooks).select(1, 0);
}

std::vector<int32_t> repeat_tokens(const std::vector<int32_t>& tokens, int times) {
  std::vector<int32_t> out;
  out.reserve(tokens.size() * times);
  for (int i = 0; i < times; ++i) out.insert(out.end(), tokens.begin(), tokens.end());
  return out;
}

void TracedRows::start(const std::vector<StrategyPrompt>& prompts) {
  ids_.clear();
  for (const auto& p : prompts) ids_.push_back(p.id);
  step = 0;
}

void TracedRows::keep(const std::vector<int64_t>& rows) {
  std::vector<std::string> next;
  for (int64_t r : rows) next.push_back(ids_.at(r));
  ids_.swap(next);
}

nlohmann::json top_tokens_json(const torch::Tensor& row, int64_t n) {
  auto top = row.to(torch::kFloat32).topk(std::min<int64_t>(n, row.size(0)));
  auto vals = std::get<0>(top).contiguous().to(torch::kCPU);
  auto idx = std::get<1>(top).contiguous().to(torch::kCPU);
  nlohmann::json out = nlohmann::json::array();
  for (int64_t i = 0; i < vals.size(0); ++i)
    out.push_back({idx[i].item<int64_t>(), vals[i].item<float>()});
  return out;
}

torch::Tensor index_tensor(const std::vector<int64_t>& rows) { return torch::tensor(rows, torch::kLong); }

void SteerConfig::validate(const std::string& where) const {
  if (!enabled) return;
  SAFEDEC_CHECK(!icv.empty(), where, ": steering needs `icv:` (a safetensors file with tensor `icv` [layers, hidden]);",
                " make one with `safedec icv extract`");
  // alpha < 0 would steer towards the unsafe side of the ICV.
  SAFEDEC_CHECK(std::isfinite(alpha) && alpha >= 0.0 && alpha <= 100.0, where,
                ": `alpha` must be in [0, 100] (the steering strength; the code uses 0.12), got ", alpha);
  SAFEDEC_CHECK(form == "code" || form == "paper", where, ": `form` must be one of code, paper; got '", form, "'");
}

Steering::Steering(const SteerConfig& config, const ModelConfig& model)
    : alpha_(config.alpha), form_(config.form == "paper" ? SteerForm::kPaper : SteerForm::kCode) {
  config.validate("steer");
  icv_ = load_icv(config.icv, model);
  // load_icv refuses NaN/Inf; a finite but absurd vector (|v| up to 1e30) would still swamp the
  // hidden state in the paper form, so its entries are bounded too.
  const double peak = icv_.numel() > 0 ? icv_.abs().max().item<double>() : 0.0;
  SAFEDEC_CHECK(peak <= 1e6, "the ICV ", config.icv, " has an entry of magnitude ", peak,
                ", far beyond any hidden-state difference (limit 1e6); the file is corrupt or not an ICV");
  bind();
}

Steering::Steering(torch::Tensor icv, double alpha, SteerForm form)
    : icv_(icv.to(torch::kFloat32).contiguous()), alpha_(alpha), form_(form) {
  bind();
}

void Steering::bind() {
  torch::Tensor icv = icv_;
  // The ICV here is h(unsafe) - h(safe) (methods.md 3b, as the reference code builds it), and the code
  // form moves away from it. The paper writes h' = h + alpha ICV with its ICV pointing to the safe
  // side, i.e. minus ours, so the paper form is steer_hidden's x + a v with a = -alpha.
  const double alpha = form_ == SteerForm::kPaper ? -alpha_ : alpha_;
  const SteerForm form = form_;
  hooks_.mlp_transform = [icv, alpha, form](int64_t layer, const torch::Tensor& mlp_out) -> torch::Tensor {
    if (layer >= icv.size(0)) return mlp_out;
    // The steering math runs in fp32 (methods.md 3b) whatever the model's dtype.
    torch::Tensor x = mlp_out.to(torch::kFloat32).contiguous();
    torch::Tensor v = icv[layer].to(x.device());
    return steer_hidden(x, v, alpha, form).to(mlp_out.scalar_type());
  };
}

}  // namespace safedec
