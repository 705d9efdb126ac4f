// CUDA ICV steering (methods.md section 3b): one block per hidden row; block sums of x.x, v.v, x.v and
// |x + alpha v|^2 in fp32, then steer_coefficients / steer_apply, the functions the CPU loop uses.
#include "block_ops.cuh"
#include "kernels/cuda_kernels.h"
#include "kernels/steering_math.h"

namespace safedec {
namespace {

using namespace cuda_detail;

constexpr int kSteerThreads = 256;  // hidden rows are short (576..8192): one 256-thread block per row

__global__ void __launch_bounds__(kSteerThreads) steer_kernel(SteerArgs a) {
  const int64_t r = blockIdx.x;
  const float* x = a.x + r * a.x_stride;
  const float* v = a.v + r * a.v_stride;
  float* out = a.out + r * a.out_stride;
  if (!is_finite_value(a.alpha)) {
    if (threadIdx.x == 0) a.row_status[r] = static_cast<int32_t>(KernelStatus::kBadArgument);
    return;
  }
  KernelStatus st = KernelStatus::kOk;
  float xx = 0.0f, vv = 0.0f, xv = 0.0f, yy = 0.0f;
  for (int64_t i = threadIdx.x; i < a.dim; i += blockDim.x) {
    const float xi = x[i];
    const float vi = v[i];
    if (!is_finite_value(xi) || !is_finite_value(vi)) {
      st = worse_status(st, (is_nan(xi) || is_nan(vi)) ? KernelStatus::kNanInput : KernelStatus::kInfInput);
    }
    const float yi = xi + a.alpha * vi;
    xx += xi * xi;
    vv += vi * vi;
    xv += xi * vi;
    yy += yi * yi;
  }
  st = block_status(st);
  xx = block_sum(xx);
  vv = block_sum(vv);
  xv = block_sum(xv);
  yy = block_sum(yy);
  if (threadIdx.x == 0) a.row_status[r] = static_cast<int32_t>(st);
  if (st != KernelStatus::kOk) return;
  const SteerCoefficients k = steer_coefficients(xx, vv, xv, yy, a.alpha, a.form);
  // In place (out == x) is safe: each element is read and written by the same thread, after the sums.
  for (int64_t i = threadIdx.x; i < a.dim; i += blockDim.x) out[i] = steer_apply(x[i], v[i], k);
}

}  // namespace

KernelStatus steer_cuda(const SteerArgs& a, void* stream) {
  if (a.rows == 0) return KernelStatus::kOk;
  if (a.rows < 0 || a.dim < 1 || a.row_status == nullptr) return KernelStatus::kBadArgument;
  steer_kernel<<<static_cast<unsigned int>(a.rows), kSteerThreads, 0, static_cast<cudaStream_t>(stream)>>>(a);
  return check_cuda_launch("steer_kernel");
}

}  // namespace safedec
