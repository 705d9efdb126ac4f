// KvCache: preallocated per-layer key/value storage for a batch of left-padded sequences.
//
// Layout: for every layer, keys and values are [B, n_kv_heads, capacity, head_dim] tensors. All rows
// advance together, so slot s of every row is written by the same forward call; a row that holds
// fewer real tokens than the others is LEFT-padded: its first pad_offsets()[b] slots are padding
// that no query attends to. A token in slot s of row b has position s - pad_offsets()[b].
// Growing past the capacity reallocates once (doubling), never per step.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace safedec {

// Per-layer key/value cache of a batch of left-padded sequences (see file comment).
class KvCache {
 public:
  KvCache() = default;
  KvCache(int64_t n_layers, int64_t batch, int64_t n_kv_heads, int64_t head_dim, int64_t capacity,
          torch::TensorOptions options);

  bool defined() const { return !keys_.empty(); }
  int64_t n_layers() const { return static_cast<int64_t>(keys_.size()); }
  int64_t batch() const { return batch_; }
  int64_t n_kv_heads() const { return n_kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  int64_t capacity() const { return capacity_; }
  // Number of slots in use (the same for every row; includes left padding).
  int64_t length() const { return length_; }
  // [B] int64 (CPU): leading pad slots per row.
  const torch::Tensor& pad_offsets() const { return pad_; }
  // [B] int64 (CPU): real tokens per row = length() - pad_offsets().
  torch::Tensor row_lengths() const { return length_ - pad_; }
  // Bytes held by the key/value tensors.
  int64_t nbytes() const;

  // Rolls back to `length` slots (0 <= length <= length()), e.g. to drop rejected draft tokens.
  // Rows whose padding reaches past the new length keep pad_offset = length (no real tokens).
  void truncate(int64_t length);
  // A new cache holding the given rows (int64 indices, may repeat/reorder), e.g. to drop finished
  // sequences or to duplicate a prompt for several samples.
  KvCache select_rows(const torch::Tensor& rows) const;
  // Stacks caches of the same model as rows of one batch (in order). Shorter caches are
  // right-aligned, i.e. given extra left padding, so all rows share one slot count. Used to advance
  // several branches (e.g. two system prompts of one conversation) in one batched forward.
  // With `order`, output row i is row order[i] of the concatenated inputs (a permutation).
  static KvCache stack(const std::vector<const KvCache*>& caches, const std::vector<int64_t>& order = {});
  // Splits rows [first, first + count) back out into their own cache.
  KvCache slice_rows(int64_t first, int64_t count) const;
  // Drops the padding slots that every row shares (min over rows of pad_offsets()).
  void compact();
  // Makes room for at least `capacity` slots (copies the used slots once).
  void reserve(int64_t capacity);

  // --- used by CausalLM::forward ---
  // Sets the left padding of the rows of an EMPTY cache (length() must be 0).
  void set_padding(const torch::Tensor& pad);
  torch::Tensor& keys(int64_t layer) { return keys_[layer]; }
  torch::Tensor& values(int64_t layer) { return values_[layer]; }
  // Marks `n` more slots as used (after every layer wrote them).
  void advance(int64_t n);

 private:
  std::vector<torch::Tensor> keys_, values_;
  torch::Tensor pad_;  // [B] int64 on CPU
  int64_t batch_ = 0, n_kv_heads_ = 0, head_dim_ = 0, capacity_ = 0, length_ = 0;
  torch::TensorOptions options_;
};

}  // namespace safedec
