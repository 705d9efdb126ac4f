// NGSD step B: fused kernel vs the ATen reference on random rows, planted ties, the LIF firing sequence
// for given TV distances, the union top-k mix on a tiny vocabulary by hand, inactive rows, errors.
#include <cmath>
#include <limits>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/reference.h"

namespace safedec::test {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

class NgsdStep : public KernelDeviceTest {
 protected:
  // One step on the device under test; v is updated in place and returned on the CPU.
  NgsdStepOutput step(const torch::Tensor& l_b, const torch::Tensor& l_e, const torch::Tensor& alpha,
                      torch::Tensor& v, const NgsdGateParams& gate = {}, bool probs = true,
                      const torch::Tensor& active = {}) {
    auto v_dev = on_device(v);
    auto out = ngsd_step(on_device(l_b), on_device(l_e), on_device(alpha), v_dev, gate, probs,
                         active.defined() ? on_device(active) : active);
    v = v_dev.cpu();
    return out;
  }
};

// Choices must agree; where they differ the two tokens must score the same in the reference (a near-tie
// decided by the last bit of a differently ordered sum), which is reported.
::testing::AssertionResult same_choice_up_to_ties(const torch::Tensor& got, const torch::Tensor& want,
                                                  const torch::Tensor& ref_scores) {
  auto g = got.cpu();
  for (int64_t r = 0; r < g.size(0); ++r) {
    const int64_t a = g[r].item<int64_t>();
    const int64_t b = want[r].item<int64_t>();
    if (a == b) continue;
    const double sa = ref_scores[r][a].item<double>();
    const double sb = ref_scores[r][b].item<double>();
    if (std::abs(sa - sb) > 1e-6 * std::abs(sb)) {
      return ::testing::AssertionFailure() << "row " << r << ": chose " << a << " (reference score " << sa
                                           << ") but the reference chose " << b << " (score " << sb << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

TEST_P(NgsdStep, MatchesReferenceOnRandomRows) {
  uint64_t seed = 100;
  int64_t fired = 0, quiet = 0, mix_changed_choice = 0;
  for (int64_t rows : kBatches) {
    for (int64_t vocab : kVocabs) {
      for (bool correlated : {true, false}) {
        SCOPED_TRACE("rows " + std::to_string(rows) + ", vocab " + std::to_string(vocab) +
                     (correlated ? ", correlated expert" : ", independent expert"));
        const auto l_b = random_logits(rows, vocab, seed++);
        const auto l_e = correlated ? correlated_logits(l_b, seed++, 2.0) : random_logits(rows, vocab, seed++);
        torch::manual_seed(seed++);
        const auto alpha = 0.1 + 0.8 * torch::rand({rows});
        const auto v_prev = 1.2 * torch::rand({rows});  // some rows fire, some do not
        auto v = v_prev.clone();
        const auto got = step(l_b, l_e, alpha, v);
        const auto ref = ngsd_step_reference(l_b, l_e, alpha, v_prev, NgsdGateParams{});
        // TV = 0.5 sum_v |p_b - p_e| sums `vocab` terms (and so does each softmax), v follows from it.
        const double tv_rtol = 1e-5 + fp32_sum_rtol(vocab);
        EXPECT_TRUE(all_close(got.tv, ref.tv, tv_rtol, 1e-6));
        EXPECT_TRUE(all_close(v, ref.v, tv_rtol, 1e-6));
        EXPECT_TRUE(all_equal(got.spike, ref.spike));
        EXPECT_TRUE(same_choice_up_to_ties(got.choice, ref.choice, ref.probs));
        EXPECT_TRUE(all_close(got.probs, ref.probs, 1e-4, 1e-8));
        const auto spikes = ref.spike.sum().item<int64_t>();
        fired += spikes;
        quiet += rows - spikes;
        mix_changed_choice += (ref.spike & (ref.choice != l_b.argmax(-1))).sum().item<int64_t>();
      }
    }
  }
  // The random cases exercise both gate outcomes and cases where the mix changes the token.
  EXPECT_GT(fired, 5);
  EXPECT_GT(quiet, 5);
  EXPECT_GT(mix_changed_choice, 2);
}

TEST_P(NgsdStep, PlantedTiesResolveToTheLowestIndex) {
  uint64_t seed = 900;
  for (int64_t vocab : {19, 111, 49152}) {
    SCOPED_TRACE("vocab " + std::to_string(vocab));
    auto l_b = random_logits(8, vocab, seed++);
    auto l_e = correlated_logits(l_b, seed++, 0.5);
    // Duplicate each row's top base logit at another position (before or after it), in both rows, so the
    // two tokens have bit-identical probabilities and mixed scores.
    for (int64_t r = 0; r < 8; ++r) {
      const int64_t top = l_b[r].argmax().item<int64_t>();
      const int64_t twin = (top + 1 + r * 7) % vocab;
      if (twin == top) continue;
      l_b[r][twin] = l_b[r][top].item<float>();
      l_e[r][twin] = l_e[r][top].item<float>();
    }
    const auto alpha = torch::full({8}, 0.5);
    const auto v_prev = torch::tensor({0.f, 2.f, 0.f, 2.f, 0.f, 2.f, 0.f, 2.f});  // odd rows fire
    auto v = v_prev.clone();
    const auto got = step(l_b, l_e, alpha, v);
    const auto ref = ngsd_step_reference(l_b, l_e, alpha, v_prev, NgsdGateParams{});
    EXPECT_TRUE(all_equal(got.choice, ref.choice));
    EXPECT_TRUE(all_equal(got.spike, ref.spike));
  }
  // By hand: tokens 1, 2 and 4 tie; without a spike the choice is argmax p_b = 1.
  const auto l_b = torch::tensor({{1.f, 5.f, 5.f, 0.f, 5.f}});
  auto v = torch::zeros({1});
  EXPECT_EQ(step(l_b, l_b, torch::full({1}, 0.5), v).choice.cpu()[0].item<int64_t>(), 1);
  // With a spike and an expert that ties tokens 1 and 2 as well (and favours 0 less): 1.
  const auto l_b2 = torch::tensor({{-2.f, 3.f, 3.f, 1.f}});
  const auto l_e2 = torch::tensor({{2.5f, 3.f, 3.f, 1.f}});
  auto v2 = torch::full({1}, 2.0f);
  const auto out2 = step(l_b2, l_e2, torch::full({1}, 0.5), v2);
  EXPECT_TRUE(out2.spike.cpu()[0].item<bool>());
  EXPECT_EQ(out2.choice.cpu()[0].item<int64_t>(), 1);
}

TEST_P(NgsdStep, TopKBoundaryTiesKeepTheLowestIndices) {
  // Uniform base (every token tied) and an expert that is uniform except token 70, which it dislikes:
  // top_64(p_b) = top_64(p_e) = tokens 0..63 (the lowest indices among ties), so C = 0..63 and only those
  // are mixed. The mix raises them (p_e > p_b there), so the probability row shows C exactly.
  auto l_b = torch::zeros({1, 100});
  auto l_e = torch::zeros({1, 100});
  l_e[0][70] = -5.0f;
  auto v = torch::full({1}, 2.0f);
  const auto out = step(l_b, l_e, torch::full({1}, 0.5), v);
  ASSERT_TRUE(out.spike.cpu()[0].item<bool>());
  const auto probs = out.probs.cpu()[0];
  const float in_c = probs[0].item<float>();
  const float out_c = probs[99].item<float>();
  EXPECT_GT(in_c, out_c);
  for (int64_t x = 0; x < 100; ++x) {
    EXPECT_EQ(probs[x].item<float>(), x < 64 ? in_c : out_c) << "token " << x;
  }
  EXPECT_EQ(out.choice.cpu()[0].item<int64_t>(), 0);
  const auto ref = ngsd_step_reference(l_b, l_e, torch::full({1}, 0.5), torch::full({1}, 2.0f), NgsdGateParams{});
  EXPECT_TRUE(all_close(out.probs, ref.probs, 1e-6, 0));
}

TEST_P(NgsdStep, UnionTopKMixByHand) {
  // V = 6, top_k = 2, alpha = 0.5, logits = log probabilities:
  //   p_b = (0.40, 0.30, 0.10, 0.10, 0.05, 0.05)   top_2 = {0, 1}
  //   p_e = (0.05, 0.05, 0.10, 0.50, 0.10, 0.20)   top_2 = {3, 5}
  //   C = {0, 1, 3, 5}: score = (0.225, 0.175, [0.10], 0.30, [0.05], 0.125), choice 3 (tokens 2 and 4 keep p_b)
  //   TV = 0.5 (0.35 + 0.25 + 0 + 0.40 + 0.05 + 0.15) = 0.6; v = 0.875 * 2 + 0.6 = 2.35 fires -> 0.6 * 2.35
  const auto l_b = torch::log(torch::tensor({{0.40f, 0.30f, 0.10f, 0.10f, 0.05f, 0.05f}}));
  const auto l_e = torch::log(torch::tensor({{0.05f, 0.05f, 0.10f, 0.50f, 0.10f, 0.20f}}));
  NgsdGateParams gate;
  gate.top_k = 2;
  auto v = torch::full({1}, 2.0f);
  const auto out = step(l_b, l_e, torch::full({1}, 0.5), v, gate);
  EXPECT_NEAR(out.tv.cpu()[0].item<float>(), 0.6f, 1e-6);
  EXPECT_TRUE(out.spike.cpu()[0].item<bool>());
  EXPECT_NEAR(v[0].item<float>(), 0.6f * 2.35f, 1e-6);
  EXPECT_EQ(out.choice.cpu()[0].item<int64_t>(), 3);
  const auto expected = torch::tensor({{0.225f, 0.175f, 0.10f, 0.30f, 0.05f, 0.125f}}) / 0.975f;
  EXPECT_TRUE(all_close(out.probs, expected, 1e-5, 1e-7));

  // Same rows without a spike (v = 0: 0.6 < 1): plain argmax p_b = 0, probabilities = p_b.
  auto v0 = torch::zeros({1});
  const auto quiet = step(l_b, l_e, torch::full({1}, 0.5), v0, gate);
  EXPECT_FALSE(quiet.spike.cpu()[0].item<bool>());
  EXPECT_NEAR(v0[0].item<float>(), 0.6f, 1e-6);
  EXPECT_EQ(quiet.choice.cpu()[0].item<int64_t>(), 0);
  EXPECT_TRUE(all_close(quiet.probs, torch::softmax(l_b, -1), 1e-6, 1e-8));

  // With the default top_k = 64 > V every token is a candidate: score = (0.225, 0.175, 0.1, 0.3, 0.075, 0.125).
  auto v1 = torch::full({1}, 2.0f);
  const auto all = step(l_b, l_e, torch::full({1}, 0.5), v1);
  EXPECT_TRUE(all_close(all.probs, torch::tensor({{0.225f, 0.175f, 0.10f, 0.30f, 0.075f, 0.125f}}), 1e-5, 1e-7));
}

// A two-token row pair whose TV distance is `tv`: p_b = (1, 0), p_e = (1 - tv, tv).
std::pair<torch::Tensor, torch::Tensor> rows_with_tv(float tv) {
  const auto l_b = torch::tensor({{0.0f, kNegInf}});
  const auto l_e = torch::tensor({{std::log(1.0f - tv), std::log(tv)}});
  return {l_b, l_e};
}

TEST_P(NgsdStep, LifFiringSequenceForConstantTvDistances) {
  // Constant I = 0.2: v_t = 0.875 v + 0.2 -> 0.2, 0.375, 0.528, 0.662, 0.779, 0.882, 0.972, 1.050 fires at t = 8
  // (reset to 0.630), then 0.751, 0.857, 0.950, 1.031 fires at t = 12, and every 4 steps after that.
  auto [l_b, l_e] = rows_with_tv(0.2f);
  auto v = torch::zeros({1});
  std::vector<int> fired;
  std::vector<float> potentials;
  for (int s = 1; s <= 20; ++s) {
    auto out = step(l_b, l_e, torch::full({1}, 0.5), v, NgsdGateParams{}, false);
    if (out.spike.cpu()[0].item<bool>()) fired.push_back(s);
    potentials.push_back(v[0].item<float>());
  }
  EXPECT_EQ(fired, (std::vector<int>{8, 12, 16, 20}));
  const float expected_first[] = {0.2f,      0.375f,    0.528125f, 0.662109f, 0.779346f,
                                  0.881927f, 0.971687f, 0.630135f, 0.751369f, 0.857447f};
  for (int i = 0; i < 10; ++i) EXPECT_NEAR(potentials[i], expected_first[i], 2e-5) << "step " << i + 1;

  // I = 0.126 > theta / tau: v tends to 1.008 and first reaches 1 at t = 37 (0.99976 at t = 36).
  {
    auto [b, e] = rows_with_tv(0.126f);
    auto v2 = torch::zeros({1});
    int first = 0;
    for (int s = 1; s <= 60 && first == 0; ++s) {
      if (step(b, e, torch::full({1}, 0.5), v2, NgsdGateParams{}, false).spike.cpu()[0].item<bool>()) first = s;
    }
    EXPECT_EQ(first, 37);
  }
  // I = 0.124 < theta / tau: v tends to 0.992 and never fires (300 steps here). I = 0.125 exactly is the
  // boundary: v = 1 - 0.875^t approaches 1 from below and never fires either.
  for (float tv : {0.124f, 0.125f}) {
    auto [b, e] = rows_with_tv(tv);
    auto v3 = torch::zeros({1});
    bool any = false;
    for (int s = 1; s <= 300; ++s) {
      any |= step(b, e, torch::full({1}, 0.5), v3, NgsdGateParams{}, false).spike.cpu()[0].item<bool>();
    }
    EXPECT_FALSE(any) << "constant TV " << tv;
    EXPECT_NEAR(v3[0].item<float>(), tv * 8.0f, 2e-4);
  }
  // One step with I = 1 (disjoint supports) fires at once from rest: v = 1 >= 1, reset to 0.6.
  {
    const auto b = torch::tensor({{0.0f, kNegInf}});
    const auto e = torch::tensor({{kNegInf, 0.0f}});
    auto v4 = torch::zeros({1});
    const auto out = step(b, e, torch::full({1}, 0.9), v4);
    EXPECT_FLOAT_EQ(out.tv.cpu()[0].item<float>(), 1.0f);
    EXPECT_TRUE(out.spike.cpu()[0].item<bool>());
    EXPECT_FLOAT_EQ(v4[0].item<float>(), 0.6f);
    // score = (0.1, 0.9): the expert's token wins.
    EXPECT_EQ(out.choice.cpu()[0].item<int64_t>(), 1);
  }
}

TEST_P(NgsdStep, InactiveRowsTakeArgmaxAndKeepTheirPotential) {
  auto l_b = random_logits(3, 111, 5);
  auto l_e = random_logits(3, 111, 6);
  l_e[1][4] = std::numeric_limits<float>::quiet_NaN();  // row 1 is inactive: its expert row is never read
  const auto active = torch::tensor({true, false, true});
  const auto v_prev = torch::tensor({2.0f, 2.0f, 0.0f});
  auto v = v_prev.clone();
  const auto out = step(l_b, l_e, torch::full({3}, 0.9), v, NgsdGateParams{}, true, active);
  EXPECT_FLOAT_EQ(v[1].item<float>(), 2.0f);
  EXPECT_FALSE(out.spike.cpu()[1].item<bool>());
  EXPECT_EQ(out.tv.cpu()[1].item<float>(), 0.0f);
  EXPECT_EQ(out.choice.cpu()[1].item<int64_t>(), l_b[1].argmax().item<int64_t>());
  l_e[1][4] = 0.0f;
  const auto ref = ngsd_step_reference(l_b, l_e, torch::full({3}, 0.9), v_prev, NgsdGateParams{}, active);
  EXPECT_TRUE(all_equal(out.choice, ref.choice));
  EXPECT_TRUE(all_equal(out.spike, ref.spike));
  EXPECT_TRUE(all_close(v, ref.v, 1e-6, 1e-7));
  EXPECT_TRUE(all_close(out.probs, ref.probs, 1e-5, 1e-8));
}

TEST_P(NgsdStep, NonFiniteLogitsRaise) {
  auto l_b = random_logits(4, 111, 8);
  auto l_e = random_logits(4, 111, 9);
  l_e[3][100] = std::numeric_limits<float>::quiet_NaN();
  auto v = torch::zeros({4});
  EXPECT_TRUE(throws_error_containing([&] { step(l_b, l_e, torch::full({4}, 0.5), v); },
                                      "NaN logit in row 3 (ngsd_step)"));
  l_e[3][100] = 0.0f;
  l_b[1][0] = std::numeric_limits<float>::quiet_NaN();
  l_b[2][0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(throws_error_containing([&] { step(l_b, l_e, torch::full({4}, 0.5), v); },
                                      "NaN logit in row 1 (ngsd_step)"));  // the lowest failing row
  l_b[1][0] = 0.0f;
  l_b[2][0] = 0.0f;
  l_b[0].fill_(kNegInf);
  EXPECT_TRUE(throws_error_containing([&] { step(l_b, l_e, torch::full({4}, 0.5), v); },
                                      "every logit in row 0 is -inf"));
}

TEST_P(NgsdStep, BadArgumentsRaise) {
  const auto l_b = on_device(random_logits(2, 19, 1));
  const auto l_e = on_device(random_logits(2, 19, 2));
  auto v = on_device(torch::zeros({2}));
  const auto alpha = on_device(torch::full({2}, 0.5));
  NgsdGateParams gate;
  gate.tau = 0.5f;
  EXPECT_TRUE(throws_error_containing([&] { ngsd_step(l_b, l_e, alpha, v, gate); }, "tau must be >= 1"));
  EXPECT_TRUE(throws_error_containing([&] { ngsd_step(l_b, l_e, alpha, on_device(torch::zeros({3}))); },
                                      "one value per row"));
  EXPECT_TRUE(throws_error_containing(
      [&] { ngsd_step(l_b, l_e, on_device(torch::tensor({0.5f, NAN})), v); }, "alpha contains a NaN"));
}

SAFEDEC_KERNEL_DEVICES(NgsdStep);

}  // namespace
}  // namespace safedec::test
