// Teacher-forced reference NLL through a strategy: exact sums for a scripted strategy, ragged
// reference lengths drop rows at the right step, impossible tokens are floored and counted.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "core/error.h"
#include "eval/ref_nll.h"

using namespace safedec;

namespace {
// Scores depend only on the row's original index and step; records what was fed.
class ScriptedStrategy : public Strategy {
 public:
  explicit ScriptedStrategy(int64_t vocab) : vocab_(vocab) {}
  std::string name() const override { return "scripted"; }
  void start(const std::vector<StrategyPrompt>& prompts, int64_t max_new_tokens) override {
    rows_.clear();
    for (size_t i = 0; i < prompts.size(); ++i) rows_.push_back(static_cast<int64_t>(i));
    max_new_ = max_new_tokens;
    fed_.assign(prompts.size(), {});
  }
  torch::Tensor next_scores(int64_t step) override {
    torch::Tensor s = torch::zeros({static_cast<int64_t>(rows_.size()), vocab_});
    for (size_t r = 0; r < rows_.size(); ++r) {
      // Row 0: uniform. Row 1: token 2 has logit log(3) (p = 3/(V+2)), token V-1 impossible.
      if (rows_[r] == 1) {
        s[r][2] = std::log(3.0f);
        s[r][vocab_ - 1] = -std::numeric_limits<float>::infinity();
      }
      s[r] += static_cast<float>(step);  // a per-row shift must not matter
    }
    return s;
  }
  void advance(const std::vector<int32_t>& tokens) override {
    ASSERT_EQ(tokens.size(), rows_.size());
    for (size_t r = 0; r < rows_.size(); ++r) fed_[static_cast<size_t>(rows_[r])].push_back(tokens[r]);
  }
  void keep_rows(const std::vector<int64_t>& keep) override {
    std::vector<int64_t> next;
    for (int64_t k : keep) next.push_back(rows_[static_cast<size_t>(k)]);
    rows_ = next;
  }
  int64_t vocab_;
  int64_t max_new_ = 0;
  std::vector<int64_t> rows_;
  std::vector<std::vector<int32_t>> fed_;
};
}  // namespace

TEST(RefNll, ExactSumsRaggedLengthsAndFloor) {
  const int64_t V = 10;
  ScriptedStrategy s(V);
  std::vector<StrategyPrompt> prompts(2);
  prompts[0].id = "a";
  prompts[1].id = "b";
  const std::vector<std::vector<int32_t>> refs = {{1, 4, 7}, {2, 9}};
  auto out = teacher_forced_nll(s, prompts, refs);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(s.max_new_, 3) << "caches are sized for the longest reference";
  EXPECT_EQ(out[0].tokens, 3);
  EXPECT_NEAR(out[0].nll_sum, 3 * std::log(10.0), 1e-5);
  EXPECT_EQ(out[0].floored, 0);
  EXPECT_EQ(out[1].tokens, 2);
  // Row 1's distribution: V-1 = 9 finite tokens, token 2 weighted 3 -> Z = 8 + 3 = 11.
  EXPECT_NEAR(out[1].nll_sum, -std::log(3.0 / 11.0) + kRefNllFloor, 1e-5);
  EXPECT_EQ(out[1].floored, 1) << "token 9 is impossible for row b";
  // Every reference token but the last is fed back; row b leaves after its 2 tokens.
  EXPECT_EQ(s.fed_[0], (std::vector<int32_t>{1, 4}));
  EXPECT_EQ(s.fed_[1], (std::vector<int32_t>{2}));
}

TEST(RefNll, RejectsEmptyReferencesAndMismatchedSizes) {
  ScriptedStrategy s(5);
  std::vector<StrategyPrompt> prompts(1);
  EXPECT_THROW(teacher_forced_nll(s, prompts, {{}}), Error);
  EXPECT_THROW(teacher_forced_nll(s, prompts, {{1}, {2}}), Error);
  EXPECT_THROW(teacher_forced_nll(s, {}, {}), Error);
}
