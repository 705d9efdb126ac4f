// Helpers shared by the kernel tests: the device parameter (CPU always, CUDA only in a CUDA build),
// random logit rows, and comparisons that name the first mismatching index.
#pragma once
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>

#include "core/error.h"
#include "kernels/ops.h"

namespace safedec::test {

// The test bodies are parameterised over the device they run on.
class KernelDeviceTest : public ::testing::TestWithParam<torch::DeviceType> {
 protected:
  void SetUp() override {
    if (GetParam() == torch::kCUDA && !torch::cuda::is_available()) {
      GTEST_SKIP() << "this is a CUDA build but no CUDA device is visible; the CUDA instantiation needs a GPU";
    }
  }
  torch::Device device() const { return torch::Device(GetParam()); }
  // Inputs are made on the CPU (deterministic generator) and moved to the device under test.
  torch::Tensor on_device(const torch::Tensor& t) const { return t.to(device()); }
};

inline std::string device_name(const ::testing::TestParamInfo<torch::DeviceType>& info) {
  return info.param == torch::kCUDA ? "Cuda" : "Cpu";
}

// Instantiates a KernelDeviceTest suite for the CPU and, in a CUDA build, for CUDA.
#ifdef SAFEDEC_WITH_CUDA
#define SAFEDEC_KERNEL_DEVICES(Suite)                                                                      \
  INSTANTIATE_TEST_SUITE_P(Devices, Suite, ::testing::Values(torch::kCPU, torch::kCUDA),                   \
                           ::safedec::test::device_name)
#else
#define SAFEDEC_KERNEL_DEVICES(Suite) \
  INSTANTIATE_TEST_SUITE_P(Devices, Suite, ::testing::Values(torch::kCPU), ::safedec::test::device_name)
#endif

// Relative fp32 error of a sum of n terms accumulated as running sums in a fixed number of SIMD
// lanes (the fused kernels) against another order (ATen's reductions): each lane's rounding errors
// walk like sqrt(n/lanes) eps, bounded here by 2 sqrt(n) eps relative to the sum of |terms|. A
// softmax normaliser, a total-variation distance and the like over a vocabulary have this error, so
// their tolerances grow with the vocabulary (about 1e-4 at Qwen's 151936) and must not be fixed at
// one machine's figures.
inline double fp32_sum_rtol(int64_t n) {
  return 2.0 * std::sqrt(static_cast<double>(std::max<int64_t>(n, 1))) * 1.1920929e-7;
}

inline const int64_t kBatches[] = {1, 3, 8};
inline const int64_t kVocabs[] = {1, 19, 111, 49152, 151936};

// Logits that look like a language model's: a few large values on a normal background.
inline torch::Tensor random_logits(int64_t rows, int64_t vocab, uint64_t seed, double scale = 3.0) {
  torch::manual_seed(seed);
  auto l = torch::randn({rows, vocab}) * scale;
  // a peaked head: some tokens well above the rest, like a confident model
  const int64_t heads = std::min<int64_t>(vocab, 8);
  auto idx = torch::randint(vocab, {rows, heads}, torch::kInt64);
  l.scatter_add_(1, idx, torch::rand({rows, heads}) * 8.0);
  return l;
}

// An expert that mostly agrees with the base: the base plus moderate noise.
inline torch::Tensor correlated_logits(const torch::Tensor& base, uint64_t seed, double noise = 1.0) {
  torch::manual_seed(seed);
  return base + torch::randn(base.sizes()) * noise;
}

// Element-wise |a - b| <= atol + rtol |b|; on failure, a message with the first bad (row, index).
inline ::testing::AssertionResult all_close(const torch::Tensor& actual, const torch::Tensor& expected,
                                            double rtol, double atol) {
  auto a = actual.to(torch::kCPU, torch::kFloat64).contiguous();
  auto e = expected.to(torch::kCPU, torch::kFloat64).contiguous();
  if (a.sizes() != e.sizes()) {
    return ::testing::AssertionFailure() << "shape " << a.sizes() << " != expected " << e.sizes();
  }
  const auto both_inf = (a == e) & torch::isinf(e);
  const auto bad = (((a - e).abs() > atol + rtol * e.abs()) | (torch::isnan(a) != torch::isnan(e))) & ~both_inf;
  const int64_t n_bad = bad.sum().item<int64_t>();
  if (n_bad == 0) return ::testing::AssertionSuccess();
  const int64_t flat = bad.reshape({-1}).nonzero()[0][0].item<int64_t>();
  const int64_t cols = a.dim() >= 2 ? a.size(-1) : a.numel();
  std::ostringstream msg;
  msg << n_bad << " mismatching element(s); first at row " << flat / cols << ", index " << flat % cols
      << ": got " << a.reshape({-1})[flat].item<double>() << ", expected " << e.reshape({-1})[flat].item<double>()
      << " (rtol " << rtol << ", atol " << atol << ")";
  return ::testing::AssertionFailure() << msg.str();
}

// Integer tensors must match exactly; the message names the first differing position.
inline ::testing::AssertionResult all_equal(const torch::Tensor& actual, const torch::Tensor& expected) {
  auto a = actual.to(torch::kCPU, torch::kInt64).reshape({-1});
  auto e = expected.to(torch::kCPU, torch::kInt64).reshape({-1});
  if (a.numel() != e.numel()) return ::testing::AssertionFailure() << "size " << a.numel() << " != " << e.numel();
  const auto bad = (a != e).nonzero();
  if (bad.size(0) == 0) return ::testing::AssertionSuccess();
  const int64_t i = bad[0][0].item<int64_t>();
  return ::testing::AssertionFailure() << bad.size(0) << " mismatch(es); first at position " << i << ": got "
                                       << a[i].item<int64_t>() << ", expected " << e[i].item<int64_t>();
}

// Runs f and checks that it throws safedec::Error whose message contains `needle`.
template <typename F>
::testing::AssertionResult throws_error_containing(F&& f, const std::string& needle) {
  try {
    f();
  } catch (const safedec::Error& e) {
    if (std::string(e.what()).find(needle) != std::string::npos) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "message \"" << e.what() << "\" does not contain \"" << needle << "\"";
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-safedec exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

}  // namespace safedec::test
