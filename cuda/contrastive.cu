// CUDA ACD contrastive combination (methods.md section 2). Element-wise, so the grid is 2-D: blockIdx.x is a
// chunk of kChunk elements of a row, blockIdx.y the row (rows beyond the grid's y limit are looped over), so
// even one row spreads over many SMs. contrastive_logit is the same function the CPU loop calls. The row's
// status (NaN / +inf input, the worst of the row as worse_status orders them) is reduced per block and merged
// into row_status by an atomic compare-and-swap; the launcher zeroes row_status first.
#include <algorithm>

#include "block_ops.cuh"
#include "kernels/contrastive_math.h"
#include "kernels/cuda_kernels.h"

namespace safedec {
namespace {

using namespace cuda_detail;

constexpr int kContrastiveThreads = 256;
constexpr int64_t kChunk = 4 * kContrastiveThreads;  // elements per block: 4 per thread
constexpr int64_t kMaxGridY = 65535;

__global__ void __launch_bounds__(kContrastiveThreads) contrastive_kernel(ContrastiveArgs a) {
  const int64_t x0 = static_cast<int64_t>(blockIdx.x) * kChunk;
  const int64_t x1 = x0 + kChunk < a.vocab ? x0 + kChunk : a.vocab;
  for (int64_t r = blockIdx.y; r < a.rows; r += gridDim.y) {  // uniform over the block
    const float* sp = a.l_sp + r * a.sp_stride;
    const float* ap = a.l_ap + r * a.ap_stride;
    float* out = a.out + r * a.out_stride;
    const float alpha = a.alpha[r * a.alpha_stride];
    if (!is_finite_value(alpha) || !(a.temperature > 0.0f) || a.temperature == INFINITY) {
      // Every block of the row sees the same alpha: none of them writes, all report kBadArgument.
      if (threadIdx.x == 0) merge_row_status(a.row_status + r, KernelStatus::kBadArgument);
      continue;
    }
    KernelStatus st = KernelStatus::kOk;
    for (int64_t x = x0 + threadIdx.x; x < x1; x += blockDim.x) {
      const float s = sp[x];
      const float q = ap[x];
      st = worse_status(st, worse_status(classify_logit(s), classify_logit(q)));
      out[x] = contrastive_logit(s, q, alpha, a.temperature);
    }
    st = block_status(st);
    if (threadIdx.x == 0) merge_row_status(a.row_status + r, st);
  }
}

}  // namespace

KernelStatus contrastive_cuda(const ContrastiveArgs& a, void* stream) {
  if (a.rows == 0) return KernelStatus::kOk;
  if (a.rows < 0 || a.vocab < 1 || a.row_status == nullptr) return KernelStatus::kBadArgument;
  const int64_t chunks = (a.vocab + kChunk - 1) / kChunk;
  if (chunks > 0x7fffffffll) return KernelStatus::kBadArgument;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  // Blocks merge their status into the row's slot, so every slot starts at kOk (0).
  if (cudaMemsetAsync(a.row_status, 0, sizeof(int32_t) * static_cast<size_t>(a.rows), s) != cudaSuccess) {
    return check_cuda_launch("contrastive_kernel (zeroing row_status)");
  }
  const dim3 grid(static_cast<unsigned int>(chunks), static_cast<unsigned int>(std::min(a.rows, kMaxGridY)));
  contrastive_kernel<<<grid, kContrastiveThreads, 0, s>>>(a);
  return check_cuda_launch("contrastive_kernel");
}

}  // namespace safedec
