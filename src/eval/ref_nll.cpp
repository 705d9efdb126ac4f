#include "eval/ref_nll.h"

#include <torch/torch.h>

#include <algorithm>

#include "core/error.h"

namespace safedec {

std::vector<RefNll> teacher_forced_nll(Strategy& strategy, const std::vector<StrategyPrompt>& prompts,
                                       const std::vector<std::vector<int32_t>>& references) {
  SAFEDEC_CHECK(!prompts.empty(), "teacher_forced_nll: the batch is empty");
  SAFEDEC_CHECK(prompts.size() == references.size(), "teacher_forced_nll: ", prompts.size(), " prompts but ",
                references.size(), " references");
  int64_t longest = 0;
  for (size_t i = 0; i < references.size(); ++i) {
    SAFEDEC_CHECK(!references[i].empty(), "teacher_forced_nll: the reference of prompt '", prompts[i].id,
                  "' has no tokens");
    longest = std::max<int64_t>(longest, static_cast<int64_t>(references[i].size()));
  }
  std::vector<RefNll> out(prompts.size());
  strategy.start(prompts, longest);
  std::vector<size_t> active(prompts.size());
  for (size_t i = 0; i < active.size(); ++i) active[i] = i;
  for (int64_t step = 0; !active.empty(); ++step) {
    torch::Tensor scores = strategy.next_scores(step).to(torch::kFloat32);
    SAFEDEC_ASSERT(scores.dim() == 2 && scores.size(0) == static_cast<int64_t>(active.size()), "strategy ",
                   strategy.name(), " returned scores of the wrong shape");
    SAFEDEC_CHECK(!torch::isnan(scores).any().item<bool>(), "NaN next-token scores while scoring references (step ",
                  step, ", strategy ", strategy.name(), ")");
    torch::Tensor logp = torch::log_softmax(scores, 1);
    std::vector<int64_t> want(active.size());
    for (size_t r = 0; r < active.size(); ++r) want[r] = references[active[r]][static_cast<size_t>(step)];
    torch::Tensor picked =
        logp.gather(1, torch::tensor(want, torch::kLong).unsqueeze(1)).squeeze(1).to(torch::kDouble).contiguous();
    const double* lp = picked.data_ptr<double>();
    std::vector<int64_t> keep;
    std::vector<int32_t> feed;
    for (size_t r = 0; r < active.size(); ++r) {
      RefNll& o = out[active[r]];
      double nll = -lp[r];
      if (!(nll < kRefNllFloor)) {  // also catches +inf (probability 0)
        nll = kRefNllFloor;
        ++o.floored;
      }
      o.nll_sum += nll;
      ++o.tokens;
      if (step + 1 < static_cast<int64_t>(references[active[r]].size())) {
        keep.push_back(static_cast<int64_t>(r));
        feed.push_back(static_cast<int32_t>(want[r]));
      }
    }
    if (keep.empty()) break;
    if (keep.size() != active.size()) {
      strategy.keep_rows(keep);
      std::vector<size_t> next;
      for (int64_t r : keep) next.push_back(active[r]);
      active.swap(next);
    }
    strategy.advance(feed);
  }
  return out;
}

}  // namespace safedec
