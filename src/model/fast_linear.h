// fast_linear(): y = x W^T + b, with a bandwidth-bound CPU kernel for the decode case (few rows).
#pragma once
#include <torch/torch.h>

namespace safedec {

class QuantWeight;

// y = x W^T (+ b) for x [..., K], W [N, K]. On CPU fp32 with at most kFastLinearMaxRows rows of x
// and no autograd, uses a hand-written AVX2/FMA kernel that streams W once (MKL's sgemv falls back
// to generic code on AMD CPUs); otherwise at::linear. The kernel's result for a row does not depend
// on how many other rows are in the batch (batch-invariant decoding).
torch::Tensor fast_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b = {});
// The same with the weight possibly kept quantised: q != nullptr computes from q (quant_linear.h;
// w may then be undefined), otherwise fast_linear(x, w, b).
torch::Tensor fast_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, const QuantWeight* q);
constexpr int64_t kFastLinearMaxRows = 16;
// Whether the fast kernel is available on this CPU (AVX2 + FMA) and enabled ($SAFEDEC_FAST_LINEAR != 0).
bool fast_linear_available();

}  // namespace safedec
