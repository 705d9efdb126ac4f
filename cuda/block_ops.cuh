// Block-wide building blocks of the row kernels (one thread block = one row): reductions through warp
// shuffles and shared memory, a block softmax into global scratch, and an exact top-k threshold of the
// prob_keys of a row by radix select (the top-k set of a row is then "key >= that threshold", with ties
// ordered by index exactly as on the CPU). Every function must be called by all threads of the block (they
// synchronise); results are returned to every thread. They work for any block size that is a multiple of
// 32 up to kMaxThreads; block_topk_threshold needs at least 256 threads.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/logit_math.h"
#include "kernels/status.h"

namespace safedec {
namespace cuda_detail {

constexpr int kMaxThreads = 1024;          // the largest block any helper here supports (32 warps)
constexpr int kMaxWarps = kMaxThreads / 32;
constexpr int kRowThreads = 1024;          // one block per row for the NGSD and SafeDecoding kernels
constexpr int kSelectMinThreads = 256;     // block_topk_threshold: one thread per radix bucket
static_assert(kRowThreads % 32 == 0 && kRowThreads <= kMaxThreads && kRowThreads >= kSelectMinThreads,
              "row kernels need 256..1024 threads, a multiple of 32");

template <typename T, typename Op>
__device__ inline T warp_reduce(T v, Op op) {
  for (int offset = 16; offset > 0; offset >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, offset));
  return v;
}

// Reduces one value per thread with op; every thread gets the result.
template <typename T, typename Op>
__device__ inline T block_reduce(T v, Op op, T identity) {
  __shared__ T partial[kMaxWarps];
  __shared__ T result;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = static_cast<int>(blockDim.x >> 5);
  v = warp_reduce(v, op);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T w = lane < warps ? partial[lane] : identity;
    w = warp_reduce(w, op);
    if (lane == 0) result = w;
  }
  __syncthreads();
  const T out = result;
  __syncthreads();  // the shared slots may be reused by the next call
  return out;
}

struct SumF {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct SumI64 {
  __device__ long long operator()(long long a, long long b) const { return a + b; }
};
struct MaxF {
  __device__ float operator()(float a, float b) const { return a > b ? a : b; }
};
struct WorseStatus {
  __device__ int operator()(int a, int b) const {
    return static_cast<int>(worse_status(static_cast<KernelStatus>(a), static_cast<KernelStatus>(b)));
  }
};

__device__ inline float block_sum(float v) { return block_reduce(v, SumF(), 0.0f); }
__device__ inline long long block_count(long long v) { return block_reduce(v, SumI64(), 0LL); }
__device__ inline float block_max(float v) { return block_reduce(v, MaxF(), -INFINITY); }
__device__ inline KernelStatus block_status(KernelStatus s) {
  return static_cast<KernelStatus>(block_reduce(static_cast<int>(s), WorseStatus(), 0));
}

// (value, index) argmax in the order of ranks_before: larger value first, then the lower index.
struct ArgMax {
  float value;
  long long index;
};
__device__ inline ArgMax block_argmax(ArgMax a) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float v = __shfl_down_sync(0xffffffffu, a.value, offset);
    const long long i = __shfl_down_sync(0xffffffffu, a.index, offset);
    if (ranks_before(v, i, a.value, a.index)) a = {v, i};
  }
  __shared__ ArgMax partial[kMaxWarps];
  __shared__ ArgMax result;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = static_cast<int>(blockDim.x >> 5);
  if (lane == 0) partial[warp] = a;
  __syncthreads();
  if (warp == 0) {
    ArgMax w = lane < warps ? partial[lane] : ArgMax{-INFINITY, 0x7fffffffffffffffLL};
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float v = __shfl_down_sync(0xffffffffu, w.value, offset);
      const long long i = __shfl_down_sync(0xffffffffu, w.index, offset);
      if (ranks_before(v, i, w.value, w.index)) w = {v, i};
    }
    if (lane == 0) result = w;
  }
  __syncthreads();
  const ArgMax out = result;
  __syncthreads();
  return out;
}

// p = softmax(l) over n values into global memory (max-subtracted, fp32; the same numerator and scaling
// functions as the CPU). Returns the row's status (NaN / +inf / all -inf) to every thread.
__device__ inline KernelStatus block_softmax(const float* l, int64_t n, float* p) {
  KernelStatus st = KernelStatus::kOk;
  float m = -INFINITY;
  for (int64_t x = threadIdx.x; x < n; x += blockDim.x) {
    const float v = l[x];
    st = worse_status(st, classify_logit(v));
    m = v > m ? v : m;
  }
  st = block_status(st);
  m = block_max(m);
  if (st != KernelStatus::kOk) return st;
  if (m == -INFINITY) return KernelStatus::kNoFiniteLogit;
  float s = 0.0f;
  for (int64_t x = threadIdx.x; x < n; x += blockDim.x) {
    const float e = softmax_numerator(l[x], m);
    p[x] = e;
    s += e;
  }
  const float inv_sum = 1.0f / block_sum(s);  // >= 1 term of exactly 1: finite
  for (int64_t x = threadIdx.x; x < n; x += blockDim.x) p[x] = softmax_prob(p[x], inv_sum);
  __syncthreads();  // p is read by other threads next
  return KernelStatus::kOk;
}

// A threshold T such that EXACTLY k of the keys prob_key(p[x], x), x < n, are >= T (1 <= k <= n < 2^32).
// Callers may only test membership as "key >= T": T is not necessarily one element's key (it is the k-th
// largest key with some low bits cleared), so "key == T" or "key > T" mean nothing.
//
// MSB-first radix select, 8 bits per pass, on the keys that share the prefix chosen so far. In each pass
// the bucket b holding the remaining-th largest key of that prefix class is found from the suffix sums of
// the pass's histogram (above = keys in higher buckets). If the bucket holds exactly the keys still
// missing (above + hist[b] == remaining), every key of the bucket is in the top k and every key outside the
// prefix class below it is not, so T = prefix | b << shift with the lower bits zero has exactly k keys >= it
// and the select stops there. Keys are unique, so this happens at the latest in the last pass (a bucket of
// one key). Histogram updates are aggregated per warp (one shared atomic per distinct bucket in a warp).
__device__ inline uint64_t block_topk_threshold(const float* p, int64_t n, int64_t k) {
  __shared__ unsigned int hist[256];
  __shared__ unsigned int warp_total[256 / 32];
  __shared__ uint64_t s_prefix;
  __shared__ unsigned int s_remaining;
  __shared__ int s_done;
  constexpr unsigned int kFull = 0xffffffffu;
  constexpr unsigned int kNoBucket = 256u;  // lanes past the row end or outside the prefix class
  const int t = static_cast<int>(threadIdx.x);
  const int lane = t & 31;
  const int warp = t >> 5;
  uint64_t prefix = 0;
  uint64_t mask = 0;
  unsigned int remaining = static_cast<unsigned int>(k);
  for (int shift = 56; shift >= 0; shift -= 8) {
    if (t < 256) hist[t] = 0;
    __syncthreads();
    // Every lane of every warp runs the same number of iterations (x may be past n), so the full-mask
    // warp intrinsics below are always called by all 32 lanes.
    for (int64_t base = 0; base < n; base += blockDim.x) {
      const int64_t x = base + t;
      unsigned int bucket = kNoBucket;
      if (x < n) {
        const uint64_t key = prob_key(p[x], x);
        if ((key & mask) == prefix) bucket = static_cast<unsigned int>(key >> shift) & 255u;
      }
      const unsigned int peers = __match_any_sync(kFull, bucket);
      if (bucket != kNoBucket && lane == __ffs(peers) - 1) atomicAdd(&hist[bucket], __popc(peers));
    }
    __syncthreads();
    // Thread t < 256 owns bucket 255 - t; an inclusive scan over t gives the suffix sums over buckets.
    // (t < 256 is whole warps 0..7, so the shuffles run on full warps.)
    unsigned int h = 0;
    unsigned int incl = 0;
    if (t < 256) {
      h = hist[255 - t];
      incl = h;
      for (int offset = 1; offset < 32; offset <<= 1) {
        const unsigned int v = __shfl_up_sync(kFull, incl, offset);
        if (lane >= offset) incl += v;
      }
      if (lane == 31) warp_total[warp] = incl;
    }
    __syncthreads();
    if (t < 256) {
      for (int w = 0; w < warp; ++w) incl += warp_total[w];
      const unsigned int above = incl - h;  // keys of the prefix class in buckets above 255 - t
      if (above < remaining && incl >= remaining) {  // exactly one thread: the bucket of the remaining-th key
        s_prefix = prefix | (static_cast<uint64_t>(255 - t) << shift);
        s_remaining = remaining - above;
        s_done = incl == remaining ? 1 : 0;
      }
    }
    __syncthreads();
    prefix = s_prefix;
    remaining = s_remaining;
    mask |= static_cast<uint64_t>(255) << shift;
    if (s_done) break;  // the same shared value for every thread: a uniform exit
    // The next write of s_prefix / s_done comes after two more barriers, so this read is safe.
  }
  __syncthreads();  // hist, warp_total and s_* may be reused by the next call
  return prefix;
}

// Merges a status into a row's status slot (worst status wins, as worse_status), from any number of blocks.
__device__ inline void merge_row_status(int32_t* slot, KernelStatus st) {
  if (st == KernelStatus::kOk) return;
  int old = *slot;
  for (;;) {
    const int want = static_cast<int>(worse_status(static_cast<KernelStatus>(old), st));
    if (want == old) return;
    const int seen = atomicCAS(reinterpret_cast<int*>(slot), old, want);
    if (seen == old) return;
    old = seen;
  }
}

}  // namespace cuda_detail

// Records a failed launch's text for cuda_last_error_text(); returns kCudaError or kOk.
KernelStatus check_cuda_launch(const char* kernel);

}  // namespace safedec
