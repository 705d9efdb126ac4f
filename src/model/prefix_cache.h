// PrefixKvStore: the keys and values of fixed prompt prefixes, computed once and copied into the KV
// cache of every later batch whose rows start with them.
//
// A safety branch differs from plain decoding mostly by its system turn (ACD's safe and opposite
// prompts, SafeDecoding's and NGSD's safety-prompted expert rows), and that turn is the same for
// every prompt of a run. Without a store every batch prefills it again for every row; with one,
// each distinct prefix is run through the model once (batch 1) and later rows start their prefill
// after it. A prefix's keys and values depend only on its own positions (causal attention), so the
// result is the same computation; floating-point sums may differ in the last bits because the
// prefix was computed in another batch shape.
//
// Entries are keyed by (model, hooks, tokens, soft-prompt tensor): the caller must keep the model
// and hooks alive and unchanged while the store is in use (a MethodFactory owns both). Hooks that
// act on some rows only (LoRA bindings), capture activations or train cannot share prefixes:
// usable_with() says so and callers then prefill without the store.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "model/causal_lm.h"

namespace safedec {

// A prompt prefix: token ids, optionally with soft-prompt embeddings [L, d] inserted before
// ids[embeds_at] (embeds_at == ids.size() appends them). Its length is ids + L positions.
struct PrefixSpec {
  std::vector<int32_t> ids;
  torch::Tensor embeds;
  int64_t embeds_at = -1;
  int64_t length() const { return static_cast<int64_t>(ids.size()) + (embeds.defined() ? embeds.size(0) : 0); }
};

class PrefixKvStore {
 public:
  // Per layer [n_kv_heads, P, head_dim] keys and values of one prefix of P positions.
  struct Entry {
    int64_t length = 0;
    std::vector<torch::Tensor> keys, values;
  };
  // At most `max_entries` prefixes are kept (least recently used ones are dropped).
  explicit PrefixKvStore(size_t max_entries = 32);

  // Whether rows prefilled with these hooks may use stored prefixes.
  static bool usable_with(const ForwardHooks* hooks);

  // The entry for exactly `prefix` (length >= 1) under (model, hooks), computed on first use.
  std::shared_ptr<const Entry> get(const CausalLM& model, const ForwardHooks* hooks, const PrefixSpec& prefix);

  size_t size() const;
  int64_t hits() const;
  int64_t misses() const;

 private:
  using Key = std::tuple<const CausalLM*, const ForwardHooks*, std::vector<int32_t>, const void*, int64_t, int64_t>;
  struct Slot {
    std::shared_ptr<const Entry> entry;
    torch::Tensor embeds;  // keeps the soft-prompt tensor (part of the key by address) alive
    std::list<Key>::iterator lru;
  };
  size_t max_entries_;
  mutable std::mutex mu_;
  std::map<Key, Slot> slots_;
  std::list<Key> lru_;  // front = most recently used
  int64_t hits_ = 0, misses_ = 0;
};

// Lays out `items` positions [first, first + count) of a row (ids with optional embeddings) into
// row `b` of ids [B, T] / embeds [B, T, d] / mask [B, T] starting at column `col`. embeds and mask
// may be undefined when the row has no embeddings.
void layout_prefix_row(const PrefixSpec& row, int64_t first, int64_t count, int64_t b, int64_t col, torch::Tensor& ids,
                       torch::Tensor& embeds, torch::Tensor& mask);

}  // namespace safedec
