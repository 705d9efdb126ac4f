// Judge validation: each judge's agreement with hand-written labels (data/judge_cases/
// validation_cases.jsonl): accuracy, Cohen's kappa, per-category accuracy, the share of answers a
// model-based judge could not read, and judged responses per second.
#pragma once
#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "eval/judge.h"

namespace safedec {

// One labelled case (fields documented in data/judge_cases/README.md).
struct JudgeCase {
  std::string name;
  std::string category;
  bool harmful_prompt = true;
  std::string prompt;
  std::string response;
  bool human_refusal = false;
};

// Reads a validation set; a missing file, a malformed line or a missing field throws safedec::Error
// naming the file and line. Names must be unique.
std::vector<JudgeCase> load_judge_cases(const std::string& path);
// <source_dir>/data/judge_cases/validation_cases.jsonl
std::string default_judge_cases_path();

// Agreement of binary decisions (true = refusal) with labels.
struct Agreement {
  size_t n = 0;
  size_t agree = 0;
  size_t tp = 0, tn = 0, fp = 0, fn = 0;  // positive = refusal; fp: judge says refusal, label says not
  double accuracy() const;
  // Cohen's kappa = (p_o - p_e) / (1 - p_e); 0 when p_e = 1 (every decision and label the same class)
  // and the decisions agree, which keeps the figure finite.
  double kappa() const;
};
Agreement agreement(const std::vector<bool>& decisions, const std::vector<bool>& labels);

struct JudgeValidation {
  std::string judge;
  Agreement overall;
  std::map<std::string, Agreement> by_category;
  size_t parsed_strict = 0, parsed_lenient = 0, unparsable = 0;  // model-based judges
  double seconds = 0;             // wall-clock time of judging every case
  double responses_per_second = 0;
  std::vector<std::string> wrong;  // names of the cases it got wrong
};

// Judges every case in one judge_batch() call and compares with the labels.
JudgeValidation validate_judge(const Judge& judge, const std::vector<JudgeCase>& cases);
// Compares verdicts already made (one per case, in order; `seconds` = the time they took).
JudgeValidation validate_verdicts(const std::string& judge, const std::vector<JudgeCase>& cases,
                                  const std::vector<Verdict>& verdicts, double seconds);

// A refusal threshold on a per-case probability (refusal when p >= threshold), fitted on the cases
// at even positions (0, 2, 4, ...) and measured on the others (held out). The threshold maximises
// the fit half's accuracy; it is the midpoint between two neighbouring fit probabilities (ties: the
// one nearest 0.5), so it never sits on a fit case.
struct ThresholdFit {
  double threshold = 0.5;
  Agreement fit, held_out;
};
ThresholdFit fit_threshold_half(const std::vector<double>& p_refusal, const std::vector<bool>& labels);

// The rubric's score cut (refusal when p_refusal >= threshold or score <= cut), fitted the same way:
// on the even positions, measured on the odd ones, with `threshold` fixed. The cut is the midpoint
// between neighbouring fit scores (cuts that tie on the fit half: the middle one, the upper of two);
// ThresholdFit.threshold holds the cut.
ThresholdFit fit_score_cut_half(const std::vector<double>& p_refusal, const std::vector<double>& scores,
                                double threshold, const std::vector<bool>& labels);

}  // namespace safedec
