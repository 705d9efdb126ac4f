// CUDA NGSD step B (methods.md section 1): one block of kRowThreads threads per sequence row.
//   1. p_b, p_e = softmax rows into the workspace (block_softmax).
//   2. One pass: TV distance (block sum of tv_term) and argmax p_b (block argmax, ties -> lowest index).
//   3. Thread 0 runs lif_step on the row's potential; the spike is broadcast through shared memory.
//   4. Only if it fired: a top-64 threshold of each row's prob_keys by radix select (exactly 64 keys reach
//      it), then one pass computing score = ngsd_mix on C = top_k(p_b) U top_k(p_e) (membership: key >=
//      that row's threshold) and p_b elsewhere, its argmax and sum (for the optional renormalised
//      probability row).
// The per-element math is the SAFEDEC_HD functions of ngsd_math.h / logit_math.h, shared with the CPU.
#include "block_ops.cuh"
#include "kernels/cuda_kernels.h"
#include "kernels/ngsd_math.h"

namespace safedec {
namespace {

using namespace cuda_detail;

// probs = p / sum(p) (the renormalised row used for sampling).
__device__ void write_renormalised(const float* p, int64_t n, float* probs) {
  float s = 0.0f;
  for (int64_t x = threadIdx.x; x < n; x += blockDim.x) s += p[x];
  const float sum = block_sum(s);
  for (int64_t x = threadIdx.x; x < n; x += blockDim.x) probs[x] = p[x] / sum;
}

__global__ void __launch_bounds__(kRowThreads) ngsd_step_kernel(NgsdStepArgs a) {
  const int64_t r = blockIdx.x;
  const int64_t n = a.vocab;
  float* pb = a.workspace + r * 2 * n;
  float* pe = pb + n;
  float* probs = a.probs ? a.probs + r * a.probs_stride : nullptr;
  const float alpha = a.alpha[r * a.alpha_stride];
  if (!is_finite_value(alpha) || a.gate.top_k < 1) {
    if (threadIdx.x == 0) a.row_status[r] = static_cast<int32_t>(KernelStatus::kBadArgument);
    return;
  }
  KernelStatus st = block_softmax(a.l_b + r * a.b_stride, n, pb);
  if (st != KernelStatus::kOk) {
    if (threadIdx.x == 0) a.row_status[r] = static_cast<int32_t>(st);
    return;
  }
  const bool active = a.active == nullptr || a.active[r] != 0;
  if (!active) {  // gate disabled: greedy on the base row, v untouched, the expert row never read
    ArgMax best{-INFINITY, 0x7fffffffffffffffLL};
    for (int64_t x = threadIdx.x; x < n; x += blockDim.x) {
      if (ranks_before(pb[x], x, best.value, best.index)) best = {pb[x], x};
    }
    best = block_argmax(best);
    if (probs) write_renormalised(pb, n, probs);
    if (threadIdx.x == 0) {
      a.choice[r] = best.index;
      a.tv[r] = 0.0f;
      a.spike[r] = 0;
      a.row_status[r] = 0;
    }
    return;
  }
  st = block_softmax(a.l_e + r * a.e_stride, n, pe);
  if (st != KernelStatus::kOk) {
    if (threadIdx.x == 0) a.row_status[r] = static_cast<int32_t>(st);
    return;
  }

  float tv_part = 0.0f;
  ArgMax best_b{-INFINITY, 0x7fffffffffffffffLL};
  for (int64_t x = threadIdx.x; x < n; x += blockDim.x) {
    tv_part += tv_term(pb[x], pe[x]);
    if (ranks_before(pb[x], x, best_b.value, best_b.index)) best_b = {pb[x], x};
  }
  const float tv = 0.5f * block_sum(tv_part);
  best_b = block_argmax(best_b);

  __shared__ int s_spike;
  if (threadIdx.x == 0) {
    float v = a.v[r];
    const bool spike = lif_step(v, tv, a.gate);
    a.v[r] = v;
    a.tv[r] = tv;
    a.spike[r] = spike ? 1 : 0;
    a.row_status[r] = 0;
    s_spike = spike ? 1 : 0;
  }
  __syncthreads();
  if (!s_spike) {
    if (threadIdx.x == 0) a.choice[r] = best_b.index;
    if (probs) write_renormalised(pb, n, probs);
    return;
  }

  const int64_t k = a.gate.top_k < n ? a.gate.top_k : n;
  // Thresholds with exactly k keys >= each (block_topk_threshold); membership is only ever tested by >=.
  const uint64_t kb = block_topk_threshold(pb, n, k);
  const uint64_t ke = block_topk_threshold(pe, n, k);
  float score_part = 0.0f;
  ArgMax best{-INFINITY, 0x7fffffffffffffffLL};
  for (int64_t x = threadIdx.x; x < n; x += blockDim.x) {
    const bool in_c = prob_key(pb[x], x) >= kb || prob_key(pe[x], x) >= ke;
    const float score = in_c ? ngsd_mix(pb[x], pe[x], alpha) : pb[x];
    if (probs) probs[x] = score;
    score_part += score;
    if (ranks_before(score, x, best.value, best.index)) best = {score, x};
  }
  const float score_sum = block_sum(score_part);
  best = block_argmax(best);
  if (threadIdx.x == 0) a.choice[r] = best.index;
  if (probs) {
    // Each thread rescales the elements it wrote itself: no further synchronisation needed.
    for (int64_t x = threadIdx.x; x < n; x += blockDim.x) probs[x] = probs[x] / score_sum;
  }
}

}  // namespace

KernelStatus ngsd_step_cuda(const NgsdStepArgs& a, void* stream) {
  if (a.rows == 0) return KernelStatus::kOk;
  if (a.rows < 0 || a.vocab < 1 || a.vocab > 0xFFFFFFFFll || a.row_status == nullptr || a.workspace == nullptr) {
    return KernelStatus::kBadArgument;
  }
  ngsd_step_kernel<<<static_cast<unsigned int>(a.rows), kRowThreads, 0, static_cast<cudaStream_t>(stream)>>>(a);
  return check_cuda_launch("ngsd_step_kernel");
}

}  // namespace safedec
