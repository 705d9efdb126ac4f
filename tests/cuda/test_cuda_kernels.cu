// Standalone check of the CUDA kernels against the fused CPU row kernels (no LibTorch, no GoogleTest):
// random rows of awkward sizes go through each CUDA launcher and through the same kernel's CPU row function,
// and the outputs are compared, printing the first mismatching index. Needs a GPU to run (exit code 2
// without one); scripts/check_cuda.sh only compiles and links it.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "device_buffer.h"
#include "kernels/cuda_kernels.h"
#include "kernels/row_kernels.h"

using namespace safedec;

namespace {

int g_failures = 0;
char g_case[160] = "";  // the shape of the case being checked, printed with every failure

template <typename... Args>
void set_case(const char* format, Args... args) {
  std::snprintf(g_case, sizeof g_case, format, args...);
}

using cuda_test::cuda_ok;
using cuda_test::DeviceBuffer;


std::vector<float> random_rows(int64_t rows, int64_t n, uint32_t seed, float scale = 3.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> out(static_cast<size_t>(rows * n));
  for (auto& x : out) x = normal(rng);
  return out;
}

// How the tied-logit cases shape their rows: every value rounded to an integer (about 20 distinct values per
// row, so the top-k thresholds fall inside runs of equal probabilities), or a row of all-equal logits.
enum class Ties { kNone, kRounded, kConstant };

const char* ties_name(Ties t) {
  switch (t) {
    case Ties::kNone: return "normal";
    case Ties::kRounded: return "rounded";
    case Ties::kConstant: return "constant";
  }
  return "?";
}

void round_all(std::vector<float>& v) {
  for (auto& x : v) x = std::round(x);
}

// The base row of a tied case: rounded N(0, 3^2) logits, or all 0.5.
std::vector<float> tied_base(int64_t rows, int64_t n, uint32_t seed, Ties ties) {
  auto lb = random_rows(rows, n, seed);
  if (ties == Ties::kRounded) round_all(lb);
  if (ties == Ties::kConstant) std::fill(lb.begin(), lb.end(), 0.5f);
  return lb;
}

// The expert row of a tied case. Agreeing: the base plus N(0, 2^2) noise, rounded; for the constant case the
// even rows are the same all-equal row and the odd rows rounded noise. Unrelated: an independent rounded row.
std::vector<float> tied_expert(const std::vector<float>& lb, int64_t rows, int64_t n, uint32_t seed, Ties ties,
                               bool agrees) {
  auto le = random_rows(rows, n, seed, agrees ? 2.0f : 3.0f);
  if (agrees) {
    for (size_t i = 0; i < le.size(); ++i) le[i] += lb[i];
  }
  round_all(le);
  if (ties == Ties::kConstant && agrees) {
    for (int64_t r = 0; r < rows; r += 2) {
      std::fill(le.begin() + r * n, le.begin() + (r + 1) * n, 0.5f);
    }
  }
  return le;
}

void check(bool ok, const char* test, const char* what) {
  if (!ok) {
    ++g_failures;
    std::printf("FAIL %s [%s]: %s\n", test, g_case, what);
  }
}

// Compares float arrays with |a - b| <= atol + rtol |b|; prints the first mismatching index.
void check_close(const std::vector<float>& got, const std::vector<float>& want, double rtol, double atol,
                 const char* test, const char* what) {
  for (size_t i = 0; i < want.size(); ++i) {
    const double a = got[i];
    const double b = want[i];
    const bool same_special = (std::isinf(a) && a == b) || (std::isnan(a) && std::isnan(b));
    if (!same_special && !(std::abs(a - b) <= atol + rtol * std::abs(b))) {
      ++g_failures;
      std::printf("FAIL %s [%s]: %s first mismatch at index %zu: got %.9g, expected %.9g\n", test, g_case, what, i, a,
                  b);
      return;
    }
  }
}

template <typename T>
void check_equal(const std::vector<T>& got, const std::vector<T>& want, const char* test, const char* what) {
  for (size_t i = 0; i < want.size(); ++i) {
    if (got[i] != want[i]) {
      ++g_failures;
      std::printf("FAIL %s [%s]: %s first mismatch at index %zu: got %lld, expected %lld\n", test, g_case, what, i,
                  static_cast<long long>(got[i]), static_cast<long long>(want[i]));
      return;
    }
  }
}

void test_contrastive(int64_t rows, int64_t n) {
  set_case("rows %lld, vocab %lld", static_cast<long long>(rows), static_cast<long long>(n));
  auto sp = random_rows(rows, n, 1);
  auto ap = random_rows(rows, n, 2);
  if (rows > 1) ap[static_cast<size_t>(n + n / 2)] = NAN;  // row 1 must report kNanInput
  std::vector<float> alpha(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) alpha[static_cast<size_t>(r)] = 0.25f + 0.1f * r;
  if (rows > 4) {
    // The row's status is merged over the blocks of a row: +inf first and NaN last (different blocks for a
    // long row) must give NaN, the worse one; +inf alone gives kInfInput; a NaN alpha gives kBadArgument
    // and leaves the row unwritten (d_out starts as zeros, like the CPU's output).
    ap[static_cast<size_t>(2 * n)] = INFINITY;
    sp[static_cast<size_t>(3 * n - 1)] = NAN;
    sp[static_cast<size_t>(4 * n - 1)] = INFINITY;
    alpha[4] = NAN;
  }
  DeviceBuffer<float> d_sp(sp), d_ap(ap), d_alpha(alpha), d_out(std::vector<float>(sp.size(), 0.0f));
  DeviceBuffer<int32_t> d_status(static_cast<size_t>(rows));
  ContrastiveArgs a;
  a.sp_stride = a.ap_stride = a.out_stride = n;
  a.alpha_stride = 1;
  a.temperature = 0.7f;
  a.rows = rows;
  a.vocab = n;
  ContrastiveArgs d = a;
  d.l_sp = d_sp.ptr;
  d.l_ap = d_ap.ptr;
  d.out = d_out.ptr;
  d.alpha = d_alpha.ptr;
  d.row_status = d_status.ptr;
  check(contrastive_cuda(d, nullptr) == KernelStatus::kOk, "contrastive", "launch");
  cuda_ok(cudaDeviceSynchronize(), "contrastive");
  std::vector<float> out(sp.size());
  std::vector<int32_t> status(static_cast<size_t>(rows));
  a.l_sp = sp.data();
  a.l_ap = ap.data();
  a.out = out.data();
  a.alpha = alpha.data();
  for (int64_t r = 0; r < rows; ++r) status[static_cast<size_t>(r)] = static_cast<int32_t>(contrastive_row(a, r));
  check_equal(d_status.host(), status, "contrastive", "row status");
  if (rows > 1) check(status[1] == static_cast<int32_t>(KernelStatus::kNanInput), "contrastive", "NaN row 1");
  if (rows > 4) {
    check(status[2] == static_cast<int32_t>(KernelStatus::kNanInput), "contrastive", "+inf and NaN row 2");
    check(status[3] == static_cast<int32_t>(KernelStatus::kInfInput), "contrastive", "+inf row 3");
    check(status[4] == static_cast<int32_t>(KernelStatus::kBadArgument), "contrastive", "NaN alpha row 4");
  }
  check_close(d_out.host(), out, 1e-6, 1e-6, "contrastive", "output");
}

void test_ngsd(int64_t rows, int64_t n, bool probs, Ties ties = Ties::kNone) {
  set_case("rows %lld, vocab %lld, probs %d, %s logits", static_cast<long long>(rows), static_cast<long long>(n),
           probs ? 1 : 0, ties_name(ties));
  const auto lb = ties == Ties::kNone ? random_rows(rows, n, 10) : tied_base(rows, n, 10, ties);
  auto le = lb;
  if (ties == Ties::kNone) {
    std::mt19937 rng(11);
    std::normal_distribution<float> noise(0.0f, 2.0f);
    for (auto& x : le) x += noise(rng);
  } else {
    le = tied_expert(lb, rows, n, 11, ties, true);
  }
  std::vector<float> alpha(static_cast<size_t>(rows)), v(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    alpha[static_cast<size_t>(r)] = 0.1f + 0.2f * static_cast<float>(r % 5);
    v[static_cast<size_t>(r)] = (r % 2) ? 2.0f : 0.1f;  // odd rows fire
  }
  std::vector<uint8_t> active(static_cast<size_t>(rows), 1);
  if (rows > 2) active[2] = 0;
  DeviceBuffer<float> d_lb(lb), d_le(le), d_alpha(alpha), d_v(v), d_tv(static_cast<size_t>(rows));
  DeviceBuffer<float> d_probs(static_cast<size_t>(rows * n)), d_work(static_cast<size_t>(2 * rows * n));
  DeviceBuffer<int64_t> d_choice(static_cast<size_t>(rows));
  DeviceBuffer<uint8_t> d_spike(static_cast<size_t>(rows)), d_active(active);
  DeviceBuffer<int32_t> d_status(static_cast<size_t>(rows));
  NgsdStepArgs a;
  a.b_stride = a.e_stride = a.probs_stride = n;
  a.alpha_stride = 1;
  a.rows = rows;
  a.vocab = n;
  NgsdStepArgs d = a;
  d.l_b = d_lb.ptr;
  d.l_e = d_le.ptr;
  d.alpha = d_alpha.ptr;
  d.active = d_active.ptr;
  d.v = d_v.ptr;
  d.choice = d_choice.ptr;
  d.tv = d_tv.ptr;
  d.spike = d_spike.ptr;
  d.probs = probs ? d_probs.ptr : nullptr;
  d.row_status = d_status.ptr;
  d.workspace = d_work.ptr;
  check(ngsd_step_cuda(d, nullptr) == KernelStatus::kOk, "ngsd_step", "launch");
  cuda_ok(cudaDeviceSynchronize(), "ngsd_step");

  std::vector<float> tv(static_cast<size_t>(rows)), out_probs(static_cast<size_t>(rows * n));
  std::vector<int64_t> choice(static_cast<size_t>(rows));
  std::vector<uint8_t> spike(static_cast<size_t>(rows));
  std::vector<int32_t> status(static_cast<size_t>(rows));
  a.l_b = lb.data();
  a.l_e = le.data();
  a.alpha = alpha.data();
  a.active = active.data();
  a.v = v.data();
  a.choice = choice.data();
  a.tv = tv.data();
  a.spike = spike.data();
  a.probs = probs ? out_probs.data() : nullptr;
  RowScratch scratch;
  for (int64_t r = 0; r < rows; ++r) status[static_cast<size_t>(r)] = static_cast<int32_t>(ngsd_step_row(a, r, scratch));
  check_equal(d_status.host(), status, "ngsd_step", "row status");
  check_equal(d_choice.host(), choice, "ngsd_step", "choice");
  check_equal(d_spike.host(), spike, "ngsd_step", "spike");
  check_close(d_tv.host(), tv, 1e-5, 1e-6, "ngsd_step", "tv");
  check_close(d_v.host(), v, 1e-5, 1e-6, "ngsd_step", "v");
  if (probs) check_close(d_probs.host(), out_probs, 1e-4, 1e-8, "ngsd_step", "probs");
}

void test_safedecoding(int64_t rows, int64_t n, bool correlated, Ties ties = Ties::kNone, int64_t c = 5) {
  set_case("rows %lld, vocab %lld, %s, %s logits, c %lld", static_cast<long long>(rows), static_cast<long long>(n),
           correlated ? "agreeing" : "unrelated", ties_name(ties), static_cast<long long>(c));
  const auto lb = ties == Ties::kNone ? random_rows(rows, n, 20) : tied_base(rows, n, 20, ties);
  auto le = correlated ? lb : random_rows(rows, n, 21);
  if (ties != Ties::kNone) {
    le = tied_expert(lb, rows, n, 21, ties, correlated);
  } else if (correlated) {
    std::mt19937 rng(22);
    std::normal_distribution<float> noise(0.0f, 1.0f);
    for (auto& x : le) x += noise(rng);
  }
  DeviceBuffer<float> d_lb(lb), d_le(le), d_probs(static_cast<size_t>(rows * n)),
      d_work(static_cast<size_t>(2 * rows * n));
  DeviceBuffer<int64_t> d_choice(static_cast<size_t>(rows)), d_k(static_cast<size_t>(rows));
  DeviceBuffer<int32_t> d_status(static_cast<size_t>(rows));
  SafeDecodingArgs a;
  a.b_stride = a.e_stride = a.probs_stride = n;
  a.rows = rows;
  a.vocab = n;
  a.params.c = c;
  SafeDecodingArgs d = a;
  d.l_b = d_lb.ptr;
  d.l_e = d_le.ptr;
  d.choice = d_choice.ptr;
  d.k = d_k.ptr;
  d.probs = d_probs.ptr;
  d.row_status = d_status.ptr;
  d.workspace = d_work.ptr;
  check(safedecoding_cuda(d, nullptr) == KernelStatus::kOk, "safedecoding", "launch");
  cuda_ok(cudaDeviceSynchronize(), "safedecoding");
  std::vector<float> probs(static_cast<size_t>(rows * n));
  std::vector<int64_t> choice(static_cast<size_t>(rows)), k(static_cast<size_t>(rows));
  std::vector<int32_t> status(static_cast<size_t>(rows));
  a.l_b = lb.data();
  a.l_e = le.data();
  a.choice = choice.data();
  a.k = k.data();
  a.probs = probs.data();
  RowScratch scratch;
  for (int64_t r = 0; r < rows; ++r) {
    status[static_cast<size_t>(r)] = static_cast<int32_t>(safedecoding_row(a, r, scratch));
  }
  check_equal(d_status.host(), status, "safedecoding", "row status");
  check_equal(d_k.host(), k, "safedecoding", "k");
  if (ties == Ties::kConstant && correlated) {
    // Two all-equal rows: both top lists are the lowest indices, so C_k = {0 .. k-1} and k = c exactly.
    const auto gpu_k = d_k.host();
    for (int64_t r = 0; r < rows; r += 2) {
      check(gpu_k[static_cast<size_t>(r)] == std::min(c, n), "safedecoding", "k = c on two all-equal rows");
    }
  }
  check_equal(d_choice.host(), choice, "safedecoding", "choice");
  check_close(d_probs.host(), probs, 1e-5, 5e-6, "safedecoding", "probs");
}

void test_steer(int64_t rows, int64_t dim, SteerForm form, bool shared_v) {
  set_case("rows %lld, dim %lld, form %d, shared v %d", static_cast<long long>(rows), static_cast<long long>(dim),
           static_cast<int>(form), shared_v ? 1 : 0);
  const auto x = random_rows(rows, dim, 30);
  const auto v = random_rows(shared_v ? 1 : rows, dim, 31);
  DeviceBuffer<float> d_x(x), d_v(v), d_out(x.size());
  DeviceBuffer<int32_t> d_status(static_cast<size_t>(rows));
  SteerArgs a;
  a.x_stride = a.out_stride = dim;
  a.v_stride = shared_v ? 0 : dim;
  a.rows = rows;
  a.dim = dim;
  a.alpha = 0.12f;
  a.form = form;
  SteerArgs d = a;
  d.x = d_x.ptr;
  d.v = d_v.ptr;
  d.out = d_out.ptr;
  d.row_status = d_status.ptr;
  check(steer_cuda(d, nullptr) == KernelStatus::kOk, "steer", "launch");
  cuda_ok(cudaDeviceSynchronize(), "steer");
  std::vector<float> out(x.size());
  a.x = x.data();
  a.v = v.data();
  a.out = out.data();
  for (int64_t r = 0; r < rows; ++r) check(steer_row(a, r) == KernelStatus::kOk, "steer", "cpu row status");
  check_close(d_out.host(), out, 1e-5, 1e-5, "steer", "output");
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "test_cuda_kernels: no CUDA device is visible; this program needs a GPU\n");
    return 2;
  }
  for (int64_t n : {1, 19, 111, 49152, 151936}) {
    for (int64_t rows : {1, 3, 8}) {
      test_contrastive(rows, n);
      test_ngsd(rows, n, true);
      test_ngsd(rows, n, false);
      test_safedecoding(rows, n, true);
      test_safedecoding(rows, n, false);
    }
  }
  // Rows wider than the contrastive kernel's blocks, a large batch, and more rows than the grid's y limit.
  for (int64_t n : {49152, 151936}) test_contrastive(64, n);
  test_contrastive(70000, 3);
  // Tied probabilities (the top-k thresholds fall inside runs of equal values; the radix select's early
  // exit and SafeDecoding's k search must still give the CPU's exact sets), batch 1 and 64.
  for (int64_t n : {49152, 151936}) {
    for (int64_t rows : {1, 64}) {
      for (Ties ties : {Ties::kRounded, Ties::kConstant}) {
        test_ngsd(rows, n, true, ties);
        for (int64_t c : {1, 5, 50}) {
          test_safedecoding(rows, n, true, ties, c);
          test_safedecoding(rows, n, false, ties, c);
        }
      }
      // Untied rows with the smallest and a large c: c = 50 on unrelated rows needs k of a few thousand
      // (beyond the shared-memory top lists at vocabulary 151936: the bisection fallback).
      for (int64_t c : {1, 50}) {
        test_safedecoding(rows, n, true, Ties::kNone, c);
        test_safedecoding(rows, n, false, Ties::kNone, c);
      }
    }
  }
  for (int64_t dim : {1, 19, 576, 4096}) {
    for (SteerForm form : {SteerForm::kCode, SteerForm::kPaper}) {
      test_steer(3, dim, form, true);
      test_steer(3, dim, form, false);
    }
  }
  std::printf("%s: %d failure(s)\n", g_failures == 0 ? "PASS" : "FAIL", g_failures);
  return g_failures == 0 ? 0 : 1;
}
