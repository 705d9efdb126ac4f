#include "decoding/timing.h"

#include <torch/torch.h>

#include "core/error.h"

namespace safedec {

TimedGeneration timed_generation(Strategy& strategy, const std::vector<StrategyPrompt>& prompts, int64_t new_tokens,
                                 const SamplingParams& sampling) {
  SAFEDEC_CHECK(!prompts.empty(), "timed_generation: no prompts");
  SAFEDEC_CHECK(new_tokens >= 2, "timed_generation: new_tokens must be >= 2 (got ", new_tokens, ")");
  GenerationOptions opt;
  opt.ignore_eos = true;
  opt.max_new_tokens = new_tokens;
  opt.sampling = sampling;
  Generator gen(opt);
  torch::InferenceMode guard;
  GenerationStats st;
  gen.run(strategy, prompts, &st);
  TimedGeneration t;
  t.rows = static_cast<int64_t>(prompts.size());
  t.new_tokens = new_tokens;
  t.prefill_seconds = st.prefill_seconds;
  t.decode_seconds = st.decode_seconds;
  return t;
}

}  // namespace safedec
