// KvCache bookkeeping: allocation, growth, row selection, stacking (right-aligned) and rollback.
#include "model/kv_cache.h"

#include <algorithm>

#include "core/error.h"

namespace safedec {

KvCache::KvCache(int64_t n_layers, int64_t batch, int64_t n_kv_heads, int64_t head_dim,
                 int64_t capacity, torch::TensorOptions options)
    : batch_(batch), n_kv_heads_(n_kv_heads), head_dim_(head_dim), capacity_(capacity),
      options_(options) {
  SAFEDEC_CHECK(n_layers > 0 && batch > 0 && n_kv_heads > 0 && head_dim > 0 && capacity > 0,
                "KvCache: n_layers, batch, n_kv_heads, head_dim and capacity must be positive (got ",
                n_layers, ", ", batch, ", ", n_kv_heads, ", ", head_dim, ", ", capacity, ").");
  keys_.reserve(n_layers);
  values_.reserve(n_layers);
  for (int64_t l = 0; l < n_layers; ++l) {
    keys_.push_back(torch::zeros({batch, n_kv_heads, capacity, head_dim}, options));
    values_.push_back(torch::zeros({batch, n_kv_heads, capacity, head_dim}, options));
  }
  pad_ = torch::zeros({batch}, torch::kInt64);
}

int64_t KvCache::nbytes() const {
  int64_t n = 0;
  for (size_t l = 0; l < keys_.size(); ++l) n += keys_[l].nbytes() + values_[l].nbytes();
  return n;
}

void KvCache::truncate(int64_t length) {
  SAFEDEC_CHECK(length >= 0 && length <= length_, "KvCache::truncate: new length ", length,
                " is outside [0, ", length_, "].");
  length_ = length;
  pad_ = pad_.clamp_max(length);
}

void KvCache::reserve(int64_t capacity) {
  if (capacity <= capacity_) return;
  for (size_t l = 0; l < keys_.size(); ++l) {
    for (auto* store : {&keys_[l], &values_[l]}) {
      auto grown = torch::zeros({batch_, n_kv_heads_, capacity, head_dim_}, options_);
      if (length_ > 0) grown.narrow(2, 0, length_).copy_(store->narrow(2, 0, length_));
      *store = grown;
    }
  }
  capacity_ = capacity;
}

void KvCache::set_padding(const torch::Tensor& pad) {
  SAFEDEC_CHECK(length_ == 0, "KvCache: left padding can only be set on an empty cache (this one holds ",
                length_, " slots); prefill every row of a batch in one forward call.");
  auto p = pad.to(torch::kCPU, torch::kInt64).contiguous();
  SAFEDEC_CHECK(p.dim() == 1 && p.size(0) == batch_, "KvCache: pad offsets must be a [", batch_,
                "] tensor, got ", p.sizes());
  SAFEDEC_CHECK(p.numel() == 0 || p.min().item<int64_t>() >= 0, "KvCache: pad offsets must be >= 0.");
  pad_ = p.clone();
}

void KvCache::advance(int64_t n) {
  SAFEDEC_ASSERT(length_ + n <= capacity_, "advance past capacity");
  length_ += n;
}

KvCache KvCache::select_rows(const torch::Tensor& rows) const {
  SAFEDEC_CHECK(defined(), "KvCache::select_rows on an empty (default-constructed) cache.");
  auto idx = rows.to(torch::kCPU, torch::kInt64).contiguous();
  SAFEDEC_CHECK(idx.dim() == 1 && idx.numel() > 0, "KvCache::select_rows: rows must be a non-empty 1-D index tensor.");
  SAFEDEC_CHECK(idx.min().item<int64_t>() >= 0 && idx.max().item<int64_t>() < batch_,
                "KvCache::select_rows: row index out of range [0, ", batch_, ").");
  KvCache out;
  out.batch_ = idx.size(0);
  out.n_kv_heads_ = n_kv_heads_;
  out.head_dim_ = head_dim_;
  out.capacity_ = capacity_;
  out.length_ = length_;
  out.options_ = options_;
  auto dev_idx = idx.to(keys_[0].device());
  for (size_t l = 0; l < keys_.size(); ++l) {
    out.keys_.push_back(keys_[l].index_select(0, dev_idx));
    out.values_.push_back(values_[l].index_select(0, dev_idx));
  }
  out.pad_ = pad_.index_select(0, idx);
  return out;
}

KvCache KvCache::slice_rows(int64_t first, int64_t count) const {
  SAFEDEC_CHECK(first >= 0 && count > 0 && first + count <= batch_, "KvCache::slice_rows: rows [", first,
                ", ", first + count, ") are outside the batch of ", batch_, ".");
  return select_rows(torch::arange(first, first + count, torch::kInt64));
}

KvCache KvCache::stack(const std::vector<const KvCache*>& caches, const std::vector<int64_t>& order) {
  SAFEDEC_CHECK(!caches.empty(), "KvCache::stack needs at least one cache.");
  const KvCache& first = *caches[0];
  int64_t batch = 0, length = 0, capacity = 0;
  std::vector<std::pair<const KvCache*, int64_t>> source;  // concatenated row -> (cache, row in it)
  for (const KvCache* c : caches) {
    SAFEDEC_CHECK(c->defined(), "KvCache::stack: one of the caches is empty (default-constructed).");
    SAFEDEC_CHECK(c->n_layers() == first.n_layers() && c->n_kv_heads_ == first.n_kv_heads_ &&
                      c->head_dim_ == first.head_dim_ && c->options_.dtype() == first.options_.dtype() &&
                      c->keys_[0].device() == first.keys_[0].device(),
                  "KvCache::stack: caches come from different models (layers/heads/head_dim/dtype/device differ).");
    batch += c->batch_;
    length = std::max(length, c->length_);
    capacity = std::max(capacity, c->capacity_);
    for (int64_t r = 0; r < c->batch_; ++r) source.emplace_back(c, r);
  }
  std::vector<int64_t> rows = order;
  if (rows.empty()) {
    for (int64_t i = 0; i < batch; ++i) rows.push_back(i);
  }
  SAFEDEC_CHECK(static_cast<int64_t>(rows.size()) == batch, "KvCache::stack: the order lists ", rows.size(),
                " rows but the caches hold ", batch);
  std::vector<bool> seen(batch, false);
  for (int64_t r : rows) {
    SAFEDEC_CHECK(r >= 0 && r < batch && !seen[r], "KvCache::stack: the order must be a permutation of 0..",
                  batch - 1);
    seen[r] = true;
  }
  KvCache out(first.n_layers(), batch, first.n_kv_heads_, first.head_dim_, std::max(capacity, length),
              first.options_);
  out.length_ = length;
  auto pad = out.pad_.accessor<int64_t, 1>();
  const bool in_order = order.empty();
  for (int64_t i = 0; i < batch;) {
    const auto [c, r] = source[rows[i]];
    // A run of consecutive source rows of one cache is copied with one narrow per layer.
    int64_t n = 1;
    while (in_order && i + n < batch && source[rows[i + n]].first == c) ++n;
    const int64_t shift = length - c->length_;  // right-align: extra left padding
    if (c->length_ > 0) {
      for (int64_t l = 0; l < out.n_layers(); ++l) {
        out.keys_[l].narrow(0, i, n).narrow(2, shift, c->length_).copy_(c->keys_[l].narrow(0, r, n).narrow(2, 0, c->length_));
        out.values_[l].narrow(0, i, n).narrow(2, shift, c->length_).copy_(c->values_[l].narrow(0, r, n).narrow(2, 0, c->length_));
      }
    }
    for (int64_t k = 0; k < n; ++k) pad[i + k] = c->pad_[r + k].item<int64_t>() + shift;
    i += n;
  }
  return out;
}

void KvCache::compact() {
  if (length_ == 0 || batch_ == 0) return;
  const int64_t drop = pad_.min().item<int64_t>();
  if (drop == 0) return;
  for (size_t l = 0; l < keys_.size(); ++l) {
    for (auto* store : {&keys_[l], &values_[l]}) {
      auto kept = store->narrow(2, drop, length_ - drop).clone();
      store->narrow(2, 0, length_ - drop).copy_(kept);
    }
  }
  length_ -= drop;
  pad_ = pad_ - drop;
}

}  // namespace safedec
