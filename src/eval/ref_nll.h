// Reference negative log-likelihood, teacher-forced through a decoding strategy: the utility
// measure of the harness. At every step the strategy's own next-token distribution (its combined
// scores, renormalised with a softmax, before any sampling processors) scores the reference token,
// which is then fed to every branch instead of a sampled one.
#pragma once

#include <cstdint>
#include <vector>

#include "decoding/strategy.h"

namespace safedec {

struct RefNll {
  double nll_sum = 0.0;     // sum over the reference tokens of -log p(token)
  int64_t tokens = 0;       // reference tokens scored
  int64_t floored = 0;      // tokens the strategy made (nearly) impossible, scored at the floor
};

// -log p is capped at this value (p = 1e-9): strategies that restrict the support (SafeDecoding's
// intersection, NGSD's top-k union) give some reference tokens probability 0, which would make the
// mean infinite; such tokens are counted in RefNll::floored and reported.
constexpr double kRefNllFloor = 20.723265836946411;  // -log(1e-9)

// Scores `references[i]` (token ids, non-empty) as the continuation of `prompts[i]`; one batch.
std::vector<RefNll> teacher_forced_nll(Strategy& strategy, const std::vector<StrategyPrompt>& prompts,
                                       const std::vector<std::vector<int32_t>>& references);

}  // namespace safedec
