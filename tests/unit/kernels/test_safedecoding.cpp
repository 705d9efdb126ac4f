// SafeDecoding intersection mix: fused kernel vs the literal ATen loop on random rows, the k growth on a
// constructed case by hand, ties, small vocabularies, errors.
#include <cmath>
#include <limits>

#include "kernel_test_util.h"
#include "kernels/reference.h"

namespace safedec::test {
namespace {

// q = p_b + 3 (p_e - p_b) = 3 p_e - 2 p_b cancels where p_e ~ 2/3 p_b, so a relative difference e
// between two softmax implementations (e <= fp32_sum_rtol(vocab): each normaliser sums the vocabulary)
// becomes an absolute difference of up to (3 p_e + 2 p_b) e / sum(q) in the renormalised row; compare
// probabilities (they sum to 1) to 5e-6 plus (1 + 2 alpha) e. The choice and k are compared exactly.
double prob_atol(int64_t vocab, double alpha = 3.0) { return 5e-6 + (1.0 + 2.0 * alpha) * fp32_sum_rtol(vocab); }

class SafeDecoding : public KernelDeviceTest {
 protected:
  SafeDecodingOutput mix(const torch::Tensor& l_b, const torch::Tensor& l_e, int64_t c = 5, double alpha = 3.0) {
    return safedecoding_mix(on_device(l_b), on_device(l_e), c, alpha, true);
  }
};

TEST_P(SafeDecoding, MatchesReferenceOnRandomRows) {
  uint64_t seed = 300;
  int64_t grown = 0;
  for (int64_t rows : kBatches) {
    for (int64_t vocab : kVocabs) {
      for (bool correlated : {true, false}) {
        SCOPED_TRACE("rows " + std::to_string(rows) + ", vocab " + std::to_string(vocab) +
                     (correlated ? ", correlated expert" : ", independent expert"));
        const auto l_b = random_logits(rows, vocab, seed++);
        const auto l_e = correlated ? correlated_logits(l_b, seed++, 1.0) : random_logits(rows, vocab, seed++);
        const auto got = mix(l_b, l_e);
        const auto ref = safedecoding_reference(l_b, l_e, 5, 3.0);
        EXPECT_TRUE(all_equal(got.k, ref.k));
        EXPECT_TRUE(all_equal(got.choice, ref.choice));
        EXPECT_TRUE(all_close(got.probs, ref.probs, 1e-5, prob_atol(vocab)));
        grown += (ref.k > 5).sum().item<int64_t>();
      }
    }
  }
  EXPECT_GT(grown, 10);  // the growth loop ran well past k = c on many rows
}

TEST_P(SafeDecoding, KGrowthOnAConstructedCase) {
  // V = 12, p_b decreasing with the index, p_e increasing (the mirror image): rank_b(x) = x, rank_e(x) = 11 - x.
  //   k = 5: {0..4} ∩ {7..11} = {}      k = 6: {0..5} ∩ {6..11} = {}     k = 7: {5, 6}
  //   k = 8: {4, 5, 6, 7}               k = 9: {3..8}, 6 >= 5 -> stop with k = 9 and |C| = 6.
  const auto x = torch::arange(12, torch::kFloat32);
  const auto l_b = (-0.3f * x).unsqueeze(0);
  const auto l_e = (-0.3f * (11.0f - x)).unsqueeze(0);
  const auto out = mix(l_b, l_e);
  EXPECT_EQ(out.k.cpu()[0].item<int64_t>(), 9);
  // q = max(p_b + 3 (p_e - p_b), 1e-8) on C: with p_e[x] = p_b[11 - x], q[x] = 3 p_b[11 - x] - 2 p_b[x], which is
  // negative (floored to 1e-8) for x = 3, 4 and grows with x after that: the choice is token 8.
  const auto p_b = torch::softmax(l_b[0].to(torch::kFloat64), 0);
  auto q = torch::zeros({12}, torch::kFloat64);
  for (int64_t t = 3; t <= 8; ++t) {
    q[t] = std::max(3.0 * p_b[11 - t].item<double>() - 2.0 * p_b[t].item<double>(), 1e-8);
  }
  EXPECT_LT(q[4].item<double>(), 1e-7);
  EXPECT_EQ(out.choice.cpu()[0].item<int64_t>(), 8);
  EXPECT_TRUE(all_close(out.probs[0], q / q.sum(), 1e-5, 1e-9));
  // Outside C the probability row is exactly 0.
  const auto probs = out.probs.cpu()[0];
  for (int64_t t : {0, 1, 2, 9, 10, 11}) EXPECT_EQ(probs[t].item<float>(), 0.0f) << "token " << t;
  for (int64_t t = 3; t <= 8; ++t) EXPECT_GT(probs[t].item<float>(), 0.0f) << "token " << t;
}

TEST_P(SafeDecoding, AgreeingExpertStopsAtKEqualsC) {
  // Identical rows: top_5 ∩ top_5 = top_5, q = p_b there (p_e = p_b), renormalised; argmax p_b.
  const auto l_b = random_logits(3, 111, 21);
  const auto out = mix(l_b, l_b);
  EXPECT_TRUE(all_equal(out.k, torch::full({3}, 5, torch::kInt64)));
  EXPECT_TRUE(all_equal(out.choice, l_b.argmax(-1)));
  const auto p_b = torch::softmax(l_b, -1);
  const auto in_c = top_k_mask_reference(p_b, 5);
  const auto q = torch::where(in_c, p_b, torch::zeros_like(p_b));
  EXPECT_TRUE(all_close(out.probs, q / q.sum(-1, true), 1e-5, 1e-9));
}

TEST_P(SafeDecoding, TiesResolveToTheLowestIndex) {
  // Uniform rows: every token tied, so top_5 = {0..4} for both, C = {0..4}, q = 0.2 each, choice 0.
  const auto flat = torch::zeros({2, 10});
  const auto out = mix(flat, flat);
  EXPECT_TRUE(all_equal(out.k, torch::full({2}, 5, torch::kInt64)));
  EXPECT_TRUE(all_equal(out.choice, torch::zeros({2}, torch::kInt64)));
  auto expected = torch::zeros({2, 10});
  expected.narrow(1, 0, 5).fill_(0.2f);
  EXPECT_TRUE(all_close(out.probs, expected, 1e-6, 0));
  // A planted tie between the top tokens 2 and 6 of otherwise random rows.
  auto l_b = random_logits(4, 49152, 22);
  auto l_e = correlated_logits(l_b, 23, 0.3);
  for (int64_t r = 0; r < 4; ++r) {
    const float top = std::max(l_b[r].max().item<float>(), l_e[r].max().item<float>()) + 2.0f;
    l_b[r][2] = top;
    l_b[r][6] = top;
    l_e[r][2] = top;
    l_e[r][6] = top;
  }
  const auto got = mix(l_b, l_e);
  EXPECT_TRUE(all_equal(got.choice, torch::full({4}, 2, torch::kInt64)));
  const auto ref = safedecoding_reference(l_b, l_e, 5, 3.0);
  EXPECT_TRUE(all_equal(ref.choice, got.choice));
  EXPECT_TRUE(all_equal(got.k, ref.k));
  EXPECT_TRUE(all_close(got.probs, ref.probs, 1e-5, prob_atol(49152)));
}

TEST_P(SafeDecoding, SmallVocabulariesClampC) {
  // V = 3 < c = 5: c becomes 3, k = 3, C is the whole vocabulary.
  const auto l_b = torch::tensor({{0.0f, 1.0f, 2.0f}});
  const auto l_e = torch::tensor({{2.0f, 1.0f, 0.0f}});
  const auto out = mix(l_b, l_e);
  EXPECT_EQ(out.k.cpu()[0].item<int64_t>(), 3);
  const auto ref = safedecoding_reference(l_b, l_e, 5, 3.0);
  EXPECT_TRUE(all_close(out.probs, ref.probs, 1e-6, 1e-9));
  EXPECT_EQ(out.choice.cpu()[0].item<int64_t>(), 0);  // the expert's favourite, amplified by alpha = 3
  // V = 1: the only token, with probability 1.
  const auto one = mix(torch::zeros({2, 1}), torch::ones({2, 1}));
  EXPECT_TRUE(all_equal(one.k, torch::ones({2}, torch::kInt64)));
  EXPECT_TRUE(all_equal(one.choice, torch::zeros({2}, torch::kInt64)));
  EXPECT_TRUE(all_close(one.probs, torch::ones({2, 1}), 0, 0));
}

TEST_P(SafeDecoding, NonFiniteLogitsRaise) {
  auto l_b = random_logits(4, 19, 31);
  auto l_e = random_logits(4, 19, 32);
  l_e[2][7] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(throws_error_containing([&] { mix(l_b, l_e); }, "NaN logit in row 2 (safedecoding_mix)"));
  l_e[2][7] = 0.0f;
  l_b[0][0] = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(throws_error_containing([&] { mix(l_b, l_e); }, "+inf logit in row 0 (safedecoding_mix)"));
  EXPECT_TRUE(throws_error_containing([&] { mix(l_e, l_e, 0); }, "c must be >= 1"));
}

SAFEDEC_KERNEL_DEVICES(SafeDecoding);

}  // namespace
}  // namespace safedec::test
