// The evaluation runner behind `safedec eval`: runs every (model, method, dataset) cell of an
// EvalConfig in a stable order, appends generations and per-cell results atomically to a run
// directory, skips finished work on --resume (within a cell too: generations already written are
// not redone), and writes report.md with its plots. Prompts and outputs never go to the console.
#pragma once

#include <cstddef>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "eval/eval_config.h"
#include "eval/results_io.h"

namespace safedec {

struct EvalRunOptions {
  std::string out_dir;
  size_t limit = 0;        // > 0 overrides the config's `limit` (and becomes part of the resolved config)
  bool resume = false;
  bool force = false;
  bool report_only = false;  // rewrite report.md from the finished cells of an existing run; runs nothing
  int threads = 0;         // 0 = LibTorch's default
  std::string command;     // the command line, recorded in the manifest and the report
  std::ostream* log = nullptr;  // progress and per-cell summaries (default std::cerr)
  // Test hook: called after each generation batch is written (cell index, prompts done in the cell).
  std::function<void(size_t, size_t)> after_batch;
};

struct EvalRunSummary {
  std::vector<ResultRow> rows;  // every cell of the config, in cell order
  size_t cells_total = 0;
  size_t cells_skipped = 0;     // already finished when the run started (resume; with --report-only: finished)
  std::string report_path;
};

EvalRunSummary run_eval(EvalConfig config, const EvalRunOptions& options);

// The results as a plain-text table (one line per cell), for the console.
std::string format_results_table(const std::vector<ResultRow>& rows);

}  // namespace safedec
