// Several judges on the same generations. The eval's first judge decides `refused` in
// generations.jsonl as it generates; every further judge (and `safedec eval --rejudge DIR --judge
// NAME`) runs afterwards over the finished generations, batched, without generating again, and
// appends one row per response to DIR/judgements.jsonl (id, model, method, dataset, judge, refused,
// score, parse, reason; resumable: responses a judge already judged are skipped). Per-cell
// summaries (ASR / refusal rate per judge, agreement with the first judge, unparsable share, mean
// score) go into results.jsonl (a `judges` object on each row, rewritten atomically) and the report.
#pragma once
#include <cstddef>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "eval/eval_config.h"
#include "eval/judge.h"
#include "eval/results_io.h"

namespace safedec {

// One judge's figures on one (model, method, dataset) cell.
struct JudgeCellSummary {
  std::string model, method, dataset, judge;
  bool harmful = false;
  size_t n = 0, n_refused = 0;
  std::optional<double> asr;            // harmful datasets: 1 - refusal rate
  double refusal_rate = 0;
  std::optional<double> agreement;      // share of responses where it agrees with the primary judge
  size_t n_unparsable = 0, n_lenient = 0;
  std::optional<double> mean_score;     // mean graded score over responses that have one
};

// Reads a run directory's config.resolved.yaml and rebuilds its datasets' prompts (same limit and
// seed), so judges can see (prompt, response). Throws safedec::Error (a user error) when `dir` is
// not a run directory.
struct RunPrompts {
  std::string primary_judge;                       // the run's first judge
  std::string keywords_path;                       // the run's keyword list ("" = default)
  std::map<std::string, bool> harmful;             // dataset -> harmful
  std::map<std::string, std::string> prompt;       // dataset + '\x1f' + id -> prompt text
};
RunPrompts load_run_prompts(const std::string& dir);

struct RejudgeOptions {
  std::string run_dir;
  std::vector<std::string> judges;                  // names; each must differ from the primary judge
  std::map<std::string, JudgeOptions> options;      // per judge name (missing: defaults)
  std::vector<std::string> methods, datasets;       // only these cells' responses (empty = every cell)
  size_t chunk = 64;                                // responses per judge_batch call (one append each)
  std::ostream* log = nullptr;                      // progress (counts only; default std::cerr)
};

struct RejudgeSummary {
  size_t judged_now = 0;        // responses judged by this call (all judges)
  double seconds = 0;           // time spent judging
  std::vector<JudgeCellSummary> cells;  // every judge (primary first) x every cell with generations
};

// Judges every generation of the run that a listed judge has not judged yet, then rewrites the
// per-cell summaries into results.jsonl. A judge name equal to the run's primary judge is refused.
// A judge parameter `per_cell: N` (any further judge; taken out before the judge is created) judges
// only the first N responses of each cell, in the run's order: the datasets' seeded subsample, so
// every method of a dataset is judged on the same ids. Costly model judges use it in short runs.
RejudgeSummary rejudge_run(const RejudgeOptions& options);

// The per-cell summaries from generations.jsonl (primary judge) and judgements.jsonl (others),
// nothing judged. Cells in first-seen order of generations.jsonl; judges: primary first, then sorted.
std::vector<JudgeCellSummary> summarize_judges(const std::string& run_dir, const RunPrompts& run);

// Adds a `judges` object ({judge: {n_refused, refusal_rate, asr, agreement, unparsable, lenient,
// mean_score}}) to every row of results.jsonl that has summaries; atomic rewrite.
void write_judges_into_results(const std::string& run_dir, const std::vector<JudgeCellSummary>& cells);

// Before an eval generates anything: every further judge of `config` (judges[1..]) can be created
// (parameters, judge model and its chat template; weights are not loaded). Throws safedec::Error.
void check_further_judges(const EvalConfig& config);

// The eval's judge phase after generation: runs config.judges[1..] over the run's generations
// (unless `judge_now` is false, e.g. --report-only), writes the per-cell summaries into
// results.jsonl and returns the report's judges section ("" when no further judge has judged the run).
std::string run_further_judges(const EvalConfig& config, const std::string& run_dir, bool judge_now,
                               std::ostream& log);

// Puts `section` into DIR/report.md in place of an earlier "## Judges" section (before "## Plots",
// else at the end); atomic rewrite. Used by `eval --rejudge`, which has no eval config to re-render with.
void replace_judges_section(const std::string& run_dir, const std::string& section);

// Takes `per_cell` out of a further judge's params: 0 when absent; throws for a value that is not a
// positive integer.
size_t take_per_cell(JudgeOptions& options, const std::string& judge);

// Markdown section comparing the judges per cell ("" when only one judge has figures), then each
// judge's pooled figures per (model, method): ASR over the harmful datasets and refusal rate on the
// others, with Wilson 95% intervals, over the responses that judge saw.
std::string judges_markdown(const std::vector<JudgeCellSummary>& cells);

}  // namespace safedec
