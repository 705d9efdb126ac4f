// fast_linear(): y = x W^T + b, with a bandwidth-bound CPU kernel for the decode case (few rows).
#pragma once
#include <torch/torch.h>

namespace safedec {

class QuantWeight;

// y = x W^T (+ b) for x [..., K], W [N, K]. On CPU fp32 without autograd and with few rows of x
// (at most kFastLinearMaxRows, or up to 64 where the AVX-512 register-tiled kernel runs), uses
// hand-written kernels that stream W once (AVX2/FMA, or AVX-512 picked at run time; MKL's sgemv falls
// back to generic code on AMD CPUs; fast_linear.cpp describes the blocking); otherwise at::linear.
// A row's result does not depend on how many other rows are in the batch nor on the path taken
// (batch-invariant decoding). $SAFEDEC_FAST_LINEAR = 0 | avx2 | avx512 caps the path.
torch::Tensor fast_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b = {});
// The same with the weight possibly kept quantised: q != nullptr computes from q (quant_linear.h;
// w may then be undefined), otherwise fast_linear(x, w, b).
torch::Tensor fast_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, const QuantWeight* q);
constexpr int64_t kFastLinearMaxRows = 16;
// Whether a fast kernel is available on this CPU (AVX2 + FMA at least) and enabled ($SAFEDEC_FAST_LINEAR != 0).
bool fast_linear_available();

}  // namespace safedec
