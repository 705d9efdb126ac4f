#include "eval/judge_validation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <set>

#include "core/error.h"
#include "core/jsonl.h"
#include "core/paths.h"

namespace safedec {

using nlohmann::json;

std::string default_judge_cases_path() { return source_dir() + "/data/judge_cases/validation_cases.jsonl"; }

std::vector<JudgeCase> load_judge_cases(const std::string& path) {
  SAFEDEC_CHECK(file_exists(path), "judge validation cases not found: ", path,
                " (the default is data/judge_cases/validation_cases.jsonl).");
  std::vector<JudgeCase> out;
  std::set<std::string> names;
  for_each_jsonl_line(path, "judge validation cases", [&](const json& j, int64_t line) {
    auto str = [&](const char* key) {
      SAFEDEC_CHECK(j.contains(key) && j[key].is_string(), path, ":", line, ": key '", key,
                    "' is missing or not a string.");
      return j[key].get<std::string>();
    };
    auto flag = [&](const char* key) {
      SAFEDEC_CHECK(j.contains(key) && j[key].is_boolean(), path, ":", line, ": key '", key,
                    "' is missing or not true/false.");
      return j[key].get<bool>();
    };
    JudgeCase c;
    c.name = str("name");
    c.category = str("category");
    c.harmful_prompt = flag("harmful_prompt");
    c.prompt = str("prompt");
    c.response = str("response");
    c.human_refusal = flag("human_refusal");
    SAFEDEC_CHECK(names.insert(c.name).second, path, ":", line, ": case name '", c.name, "' appears twice.");
    out.push_back(std::move(c));
  });
  SAFEDEC_CHECK(!out.empty(), "judge validation cases ", path, " holds no case.");
  return out;
}

double Agreement::accuracy() const { return n == 0 ? 0.0 : static_cast<double>(agree) / static_cast<double>(n); }

double Agreement::kappa() const {
  if (n == 0) return 0.0;
  const double N = static_cast<double>(n);
  const double po = static_cast<double>(agree) / N;
  const double judge_pos = static_cast<double>(tp + fp) / N, label_pos = static_cast<double>(tp + fn) / N;
  const double pe = judge_pos * label_pos + (1.0 - judge_pos) * (1.0 - label_pos);
  if (pe >= 1.0) return 0.0;
  return (po - pe) / (1.0 - pe);
}

Agreement agreement(const std::vector<bool>& decisions, const std::vector<bool>& labels) {
  SAFEDEC_CHECK(decisions.size() == labels.size(), "agreement: ", decisions.size(), " decisions but ",
                labels.size(), " labels.");
  Agreement a;
  for (size_t i = 0; i < decisions.size(); ++i) {
    ++a.n;
    const bool d = decisions[i], l = labels[i];
    if (d == l) ++a.agree;
    if (d && l) ++a.tp;
    else if (!d && !l) ++a.tn;
    else if (d && !l) ++a.fp;
    else ++a.fn;
  }
  return a;
}

JudgeValidation validate_judge(const Judge& judge, const std::vector<JudgeCase>& cases) {
  std::vector<std::pair<std::string, std::string>> items;
  for (const auto& c : cases) items.emplace_back(c.prompt, c.response);
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<Verdict> verdicts = judge.judge_batch(items);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return validate_verdicts(judge.name(), cases, verdicts, seconds);
}

JudgeValidation validate_verdicts(const std::string& judge, const std::vector<JudgeCase>& cases,
                                  const std::vector<Verdict>& verdicts, double seconds) {
  JudgeValidation v;
  v.judge = judge;
  v.seconds = seconds;
  v.responses_per_second = v.seconds > 0 ? static_cast<double>(cases.size()) / v.seconds : 0.0;
  SAFEDEC_ASSERT(verdicts.size() == cases.size(), "judge_batch returned the wrong number of verdicts");
  std::vector<bool> decisions, labels;
  std::map<std::string, std::pair<std::vector<bool>, std::vector<bool>>> per;
  for (size_t i = 0; i < cases.size(); ++i) {
    decisions.push_back(verdicts[i].refused);
    labels.push_back(cases[i].human_refusal);
    per[cases[i].category].first.push_back(verdicts[i].refused);
    per[cases[i].category].second.push_back(cases[i].human_refusal);
    if (verdicts[i].refused != cases[i].human_refusal) v.wrong.push_back(cases[i].name);
    if (verdicts[i].parse == "strict") ++v.parsed_strict;
    else if (verdicts[i].parse == "lenient") ++v.parsed_lenient;
    else if (verdicts[i].parse == "unparsable") ++v.unparsable;
  }
  v.overall = agreement(decisions, labels);
  for (const auto& [cat, dl] : per) v.by_category[cat] = agreement(dl.first, dl.second);
  return v;
}

ThresholdFit fit_threshold_half(const std::vector<double>& p_refusal, const std::vector<bool>& labels) {
  SAFEDEC_CHECK(p_refusal.size() == labels.size() && p_refusal.size() >= 2, "fit_threshold_half: ",
                p_refusal.size(), " probabilities and ", labels.size(), " labels (need the same number, at least 2).");
  std::vector<double> fit_p, held_p;
  std::vector<bool> fit_l, held_l;
  for (size_t i = 0; i < p_refusal.size(); ++i) {
    (i % 2 == 0 ? fit_p : held_p).push_back(p_refusal[i]);
    (i % 2 == 0 ? fit_l : held_l).push_back(labels[i]);
  }
  std::vector<double> sorted = fit_p;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  // Candidates: below every fit probability, between neighbours, above every one.
  std::vector<double> cand{sorted.front() / 2.0};
  for (size_t k = 0; k + 1 < sorted.size(); ++k) cand.push_back((sorted[k] + sorted[k + 1]) / 2.0);
  cand.push_back((sorted.back() + 1.0) / 2.0);
  auto decide = [](const std::vector<double>& p, double t) {
    std::vector<bool> d;
    for (double x : p) d.push_back(x >= t);
    return d;
  };
  ThresholdFit best;
  bool have = false;
  for (double t : cand) {
    const Agreement a = agreement(decide(fit_p, t), fit_l);
    if (!have || a.agree > best.fit.agree ||
        (a.agree == best.fit.agree && std::abs(t - 0.5) < std::abs(best.threshold - 0.5))) {
      best.threshold = t;
      best.fit = a;
      have = true;
    }
  }
  best.held_out = agreement(decide(held_p, best.threshold), held_l);
  return best;
}

ThresholdFit fit_score_cut_half(const std::vector<double>& p_refusal, const std::vector<double>& scores,
                                double threshold, const std::vector<bool>& labels) {
  SAFEDEC_CHECK(p_refusal.size() == labels.size() && scores.size() == labels.size() && labels.size() >= 2,
                "fit_score_cut_half: ", p_refusal.size(), " probabilities, ", scores.size(), " scores and ",
                labels.size(), " labels (need the same number, at least 2).");
  auto decide = [&](bool fit_half, double cut) {
    std::vector<bool> d, l;
    for (size_t i = fit_half ? 0 : 1; i < labels.size(); i += 2) {
      d.push_back(p_refusal[i] >= threshold || scores[i] <= cut);
      l.push_back(labels[i]);
    }
    return agreement(d, l);
  };
  std::vector<double> sorted;
  for (size_t i = 0; i < scores.size(); i += 2) sorted.push_back(scores[i]);
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  std::vector<double> cand{-1.0};  // no cut
  for (size_t k = 0; k + 1 < sorted.size(); ++k) cand.push_back((sorted[k] + sorted[k + 1]) / 2.0);
  cand.push_back(sorted.back() + 1.0);
  // Several cuts can tie on the fit half; take the middle one of them (the upper one of two), so the
  // choice does not lean to either end of the tied range.
  size_t best_agree = 0;
  for (double c : cand) best_agree = std::max(best_agree, decide(true, c).agree);
  std::vector<double> tied;
  for (double c : cand)
    if (decide(true, c).agree == best_agree) tied.push_back(c);
  ThresholdFit best;
  best.threshold = tied[tied.size() / 2];
  best.fit = decide(true, best.threshold);
  best.held_out = decide(false, best.threshold);
  return best;
}

}  // namespace safedec
