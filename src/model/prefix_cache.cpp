// PrefixKvStore: prefixes computed once (batch 1) and kept per (model, hooks, tokens, soft prompt).
#include "model/prefix_cache.h"

#include "core/error.h"

namespace safedec {

void layout_prefix_row(const PrefixSpec& row, int64_t first, int64_t count, int64_t b, int64_t col, torch::Tensor& ids,
                       torch::Tensor& embeds, torch::Tensor& mask) {
  const int64_t n_ids = static_cast<int64_t>(row.ids.size());
  const int64_t L = row.embeds.defined() ? row.embeds.size(0) : 0;
  const int64_t at = L > 0 ? row.embeds_at : n_ids;
  SAFEDEC_CHECK(first >= 0 && count >= 0 && first + count <= row.length(), "prefix layout: positions [", first, ", ",
                first + count, ") are outside the row's ", row.length());
  SAFEDEC_CHECK(L == 0 || (embeds.defined() && mask.defined()), "prefix layout: a row with soft-prompt embeddings "
                "needs embeds/mask buffers");
  auto ids_a = ids.accessor<int64_t, 2>();
  // Position p of the row: ids[p] before `at`, embeds[p - at] for p in [at, at + L), ids[p - L] after.
  int64_t p = first;
  const int64_t end = first + count;
  while (p < end) {
    const int64_t c = col + (p - first);
    if (p < at) {
      ids_a[b][c] = row.ids[p];
      ++p;
    } else if (p < at + L) {
      const int64_t n = std::min(end, at + L) - p;
      embeds[b].narrow(0, c, n).copy_(row.embeds.narrow(0, p - at, n).to(embeds.dtype()));
      mask[b].narrow(0, c, n).fill_(true);
      p += n;
    } else {
      ids_a[b][c] = row.ids[p - L];
      ++p;
    }
  }
}

PrefixKvStore::PrefixKvStore(size_t max_entries) : max_entries_(std::max<size_t>(1, max_entries)) {}

bool PrefixKvStore::usable_with(const ForwardHooks* hooks) {
  return !hooks || (hooks->loras.empty() && hooks->capture == nullptr && !hooks->training);
}

std::shared_ptr<const PrefixKvStore::Entry> PrefixKvStore::get(const CausalLM& model, const ForwardHooks* hooks,
                                                               const PrefixSpec& prefix) {
  SAFEDEC_CHECK(usable_with(hooks), "PrefixKvStore: prefixes cannot be shared under LoRA, capture or training hooks");
  const int64_t P = prefix.length();
  SAFEDEC_CHECK(P >= 1, "PrefixKvStore: empty prefix");
  const bool has_embeds = prefix.embeds.defined() && prefix.embeds.size(0) > 0;
  Key key{&model, hooks, prefix.ids, has_embeds ? prefix.embeds.data_ptr() : nullptr,
          has_embeds ? prefix.embeds_at : -1, has_embeds ? prefix.embeds.size(0) : 0};
  std::lock_guard<std::mutex> lock(mu_);
  auto it = slots_.find(key);
  if (it != slots_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    ++hits_;
    return it->second.entry;
  }
  ++misses_;
  const auto& cfg = model.config();
  const int64_t d = cfg.hidden_size;
  auto ids = torch::zeros({1, P}, torch::kInt64);
  torch::Tensor embeds, mask;
  if (has_embeds) {
    SAFEDEC_CHECK(prefix.embeds.dim() == 2 && prefix.embeds.size(1) == d && prefix.embeds_at >= 0 &&
                      prefix.embeds_at <= static_cast<int64_t>(prefix.ids.size()),
                  "PrefixKvStore: soft prompt must be [L, ", d, "] inserted at a token index of the prefix");
    embeds = torch::zeros({1, P, d}, torch::TensorOptions().dtype(model.dtype()));
    mask = torch::zeros({1, P}, torch::kBool);
  }
  layout_prefix_row(prefix, 0, P, 0, 0, ids, embeds, mask);
  torch::NoGradGuard no_grad;
  KvCache cache = model.new_cache(1, P);
  ForwardInput in;
  in.ids = ids.to(model.device());
  in.last_only = true;
  if (has_embeds) {
    in.input_embeds = embeds.to(model.device());
    in.embeds_mask = mask.to(model.device());
  }
  model.forward(in, cache, hooks);
  auto entry = std::make_shared<Entry>();
  entry->length = P;
  for (int64_t l = 0; l < cache.n_layers(); ++l) {
    entry->keys.push_back(cache.keys(l)[0].narrow(1, 0, P).clone());
    entry->values.push_back(cache.values(l)[0].narrow(1, 0, P).clone());
  }
  lru_.push_front(key);
  slots_[key] = Slot{entry, has_embeds ? prefix.embeds : torch::Tensor(), lru_.begin()};
  while (slots_.size() > max_entries_) {
    slots_.erase(lru_.back());
    lru_.pop_back();
  }
  return entry;
}

size_t PrefixKvStore::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return slots_.size();
}
int64_t PrefixKvStore::hits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hits_;
}
int64_t PrefixKvStore::misses() const {
  std::lock_guard<std::mutex> lock(mu_);
  return misses_;
}

}  // namespace safedec
