// Timed generation with forced lengths: every row generates exactly `new_tokens` tokens (EOS
// ignored), so two strategies timed on the same prompts produce the same number of tokens and their
// times per token compare directly. Shared by `safedec bench methods` and the paired speed
// measurement of `safedec eval` (eval/paired_speed.h).
#pragma once

#include <cstdint>
#include <vector>

#include "decoding/generator.h"
#include "decoding/strategy.h"

namespace safedec {

struct TimedGeneration {
  int64_t rows = 0;
  int64_t new_tokens = 0;        // per row
  double prefill_seconds = 0;    // start() + the first token's scores
  double decode_seconds = 0;     // the new_tokens - 1 steps after it
  double total_seconds() const { return prefill_seconds + decode_seconds; }
  // Wall time per generated token, prefill included (ATGR is defined on whole generations).
  double seconds_per_token() const { return total_seconds() / static_cast<double>(rows * new_tokens); }
  // Wall time of one decode step of the whole batch.
  double seconds_per_decode_step() const {
    return new_tokens > 1 ? decode_seconds / static_cast<double>(new_tokens - 1) : 0.0;
  }
};

// Runs `strategy` over `prompts` as one batch with exactly `new_tokens` (>= 2) new tokens per row,
// sampling with `sampling` (default greedy), under torch::InferenceMode.
TimedGeneration timed_generation(Strategy& strategy, const std::vector<StrategyPrompt>& prompts, int64_t new_tokens,
                                 const SamplingParams& sampling = {});

}  // namespace safedec
