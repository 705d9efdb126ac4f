// CUDA SafeDecoding intersection mix (methods.md section 4): one block of kRowThreads threads per row.
//   |C_k| = |top_k(p_b) ∩ top_k(p_e)| grows with k, so the spec's "k = c; while |C| < c: k += 1" stops at
//   the smallest k with |C_k| >= c. With rank_b(x), rank_e(x) a token's 0-based rank in each row (in the
//   prob_key order) and m(x) = max(rank_b(x), rank_e(x)) + 1, C_k = {x : m(x) <= k}, so that k is the c-th
//   smallest m(x) over the vocabulary (and it is >= c, as |C_k| <= k).
//   1. Find some K with |C_K| >= c: test K = max(c, 256), then kMaxCandidates, then doubling (K = V always
//      passes). A test is a top-K threshold of both rows (radix select, exactly K keys reach each) and a
//      block count of tokens whose two keys both reach them.
//   2. If K <= kMaxCandidates: copy the top-K keys of both rows (key >= threshold, exactly K each) into
//      shared memory. Every token with m(x) <= K is in C_K, i.e. in both lists; for such a token every key
//      larger than its own is in the same list, so its ranks are counts of larger keys within the lists. The
//      c-th smallest of those m values (found by counting) is k.
//      Otherwise (a very disagreeing expert or a large c) bisect between the last failing and the first
//      passing K, each step a test as in 1.
//   3. The top-k thresholds of both rows for that k; q = safedecoding_mix on C (floored at 1e-8),
//      renormalised over C, argmax (ties -> lowest index).
#include "block_ops.cuh"
#include "kernels/cuda_kernels.h"
#include "kernels/safedecoding_math.h"

namespace safedec {
namespace {

using namespace cuda_detail;

// |top_k(p_b) ∩ top_k(p_e)|, and the two top-k thresholds (exactly k keys of each row reach its threshold;
// membership is only ever tested by >=).
__device__ long long intersection_size(const float* pb, const float* pe, int64_t n, int64_t k, uint64_t& kb,
                                       uint64_t& ke) {
  kb = block_topk_threshold(pb, n, k);
  ke = block_topk_threshold(pe, n, k);
  long long count = 0;
  for (int64_t x = threadIdx.x; x < n; x += blockDim.x) {
    count += (prob_key(pb[x], x) >= kb && prob_key(pe[x], x) >= ke) ? 1 : 0;
  }
  return block_count(count);
}

constexpr int64_t kFirstK = 256;          // the first K tested (an agreeing expert needs a few dozen)
constexpr int64_t kMaxCandidates = 2048;  // the deepest K whose top lists fit in shared memory

// The smallest k with |C_k| >= c, given K <= kMaxCandidates with |C_K| >= c and the rows' top-K thresholds
// tb, te (exactly K keys of each row reach its threshold).
__device__ int64_t smallest_k_from_top_lists(const float* pb, const float* pe, int64_t n, int64_t big_k, int64_t c,
                                             uint64_t tb, uint64_t te) {
  __shared__ uint64_t s_keys_b[kMaxCandidates];
  __shared__ uint64_t s_keys_e[kMaxCandidates];
  __shared__ unsigned int s_m[kMaxCandidates];  // m(x) of the members of C_K, in no particular order
  __shared__ unsigned int s_count_b, s_count_e, s_members, s_k;
  if (threadIdx.x == 0) {
    s_count_b = 0;
    s_count_e = 0;
    s_members = 0;
    s_k = 0xffffffffu;
  }
  __syncthreads();
  // 2a. The two top-K lists (exactly K entries each, by the thresholds' contract; the bound check only
  // keeps a broken contract from writing out of bounds).
  for (int64_t x = threadIdx.x; x < n; x += blockDim.x) {
    const uint64_t key_b = prob_key(pb[x], x);
    if (key_b >= tb) {
      const unsigned int i = atomicAdd(&s_count_b, 1u);
      if (i < kMaxCandidates) s_keys_b[i] = key_b;
    }
    const uint64_t key_e = prob_key(pe[x], x);
    if (key_e >= te) {
      const unsigned int i = atomicAdd(&s_count_e, 1u);
      if (i < kMaxCandidates) s_keys_e[i] = key_e;
    }
  }
  __syncthreads();
  const int list = static_cast<int>(big_k);
  // 2b. m(x) of every member of C_K: a token of the base list whose expert key reaches te. Its global rank
  // in a row = the number of larger keys, all of which are in that row's list (they exceed the threshold).
  for (int i = threadIdx.x; i < list; i += blockDim.x) {
    const uint64_t key_b = s_keys_b[i];
    const int64_t x = prob_key_index(key_b);
    const uint64_t key_e = prob_key(pe[x], x);
    if (key_e < te) continue;  // not in top_K(p_e), so m(x) > K
    unsigned int rank_b = 0, rank_e = 0;
    for (int j = 0; j < list; ++j) {
      rank_b += s_keys_b[j] > key_b ? 1u : 0u;
      rank_e += s_keys_e[j] > key_e ? 1u : 0u;
    }
    const unsigned int slot = atomicAdd(&s_members, 1u);  // < K: C_K is a subset of the base list
    s_m[slot] = (rank_b > rank_e ? rank_b : rank_e) + 1u;
  }
  __syncthreads();
  // 2c. The c-th smallest m (|C_K| >= c of them): a value with fewer than c smaller values and at least c
  // values <= it. Every thread that finds it finds the same value.
  const int members = static_cast<int>(s_members);
  const unsigned int want = static_cast<unsigned int>(c);
  for (int i = threadIdx.x; i < members; i += blockDim.x) {
    const unsigned int mi = s_m[i];
    unsigned int less = 0, leq = 0;
    for (int j = 0; j < members; ++j) {
      less += s_m[j] < mi ? 1u : 0u;
      leq += s_m[j] <= mi ? 1u : 0u;
    }
    if (less < want && want <= leq) atomicMin(&s_k, mi);
  }
  __syncthreads();
  const int64_t k = s_k;
  __syncthreads();
  return k;
}

__global__ void __launch_bounds__(kRowThreads) safedecoding_kernel(SafeDecodingArgs a) {
  const int64_t r = blockIdx.x;
  const int64_t n = a.vocab;
  float* pb = a.workspace + r * 2 * n;
  float* pe = pb + n;
  const float alpha = a.params.alpha;
  if (!is_finite_value(alpha) || a.params.c < 1) {
    if (threadIdx.x == 0) a.row_status[r] = static_cast<int32_t>(KernelStatus::kBadArgument);
    return;
  }
  KernelStatus st = block_softmax(a.l_b + r * a.b_stride, n, pb);
  if (st == KernelStatus::kOk) st = block_softmax(a.l_e + r * a.e_stride, n, pe);
  if (st != KernelStatus::kOk) {
    if (threadIdx.x == 0) a.row_status[r] = static_cast<int32_t>(st);
    return;
  }
  const int64_t c = a.params.c < n ? a.params.c : n;
  uint64_t kb = 0, ke = 0;
  int64_t lo = c - 1;  // invariant: |C_lo| < c (lo = c - 1 is never tested: |C_k| <= k)
  int64_t hi = c > kFirstK ? c : kFirstK;
  hi = hi < n ? hi : n;
  while (intersection_size(pb, pe, n, hi, kb, ke) < c) {  // |C_V| = V >= c ends the growth
    lo = hi;
    hi = hi < kMaxCandidates ? kMaxCandidates : 2 * hi;  // strictly larger than lo
    hi = hi < n ? hi : n;
  }
  // |C_hi| >= c; kb, ke are the top-hi thresholds.
  int64_t k = 0;
  if (hi <= kMaxCandidates) {
    k = smallest_k_from_top_lists(pb, pe, n, hi, c, kb, ke);
  } else {
    while (hi - lo > 1) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (intersection_size(pb, pe, n, mid, kb, ke) >= c) {
        hi = mid;
      } else {
        lo = mid;
      }
    }
    k = hi;
  }
  kb = block_topk_threshold(pb, n, k);  // the thresholds of the final k
  ke = block_topk_threshold(pe, n, k);

  float q_part = 0.0f;
  for (int64_t x = threadIdx.x; x < n; x += blockDim.x) {
    if (prob_key(pb[x], x) >= kb && prob_key(pe[x], x) >= ke) q_part += safedecoding_mix(pb[x], pe[x], alpha);
  }
  const float q_sum = block_sum(q_part);
  float* probs = a.probs ? a.probs + r * a.probs_stride : nullptr;
  ArgMax best{-INFINITY, 0x7fffffffffffffffLL};
  for (int64_t x = threadIdx.x; x < n; x += blockDim.x) {
    float q = 0.0f;
    if (prob_key(pb[x], x) >= kb && prob_key(pe[x], x) >= ke) {
      q = safedecoding_mix(pb[x], pe[x], alpha) / q_sum;
      if (ranks_before(q, x, best.value, best.index)) best = {q, x};
    }
    if (probs) probs[x] = q;
  }
  best = block_argmax(best);
  if (threadIdx.x == 0) {
    a.choice[r] = best.index;
    a.k[r] = k;
    a.row_status[r] = 0;
  }
}

}  // namespace

KernelStatus safedecoding_cuda(const SafeDecodingArgs& a, void* stream) {
  if (a.rows == 0) return KernelStatus::kOk;
  if (a.rows < 0 || a.vocab < 1 || a.vocab > 0xFFFFFFFFll || a.row_status == nullptr || a.workspace == nullptr) {
    return KernelStatus::kBadArgument;
  }
  safedecoding_kernel<<<static_cast<unsigned int>(a.rows), kRowThreads, 0, static_cast<cudaStream_t>(stream)>>>(a);
  return check_cuda_launch("safedecoding_kernel");
}

}  // namespace safedec
