// `safedec eval`: runs an evaluation config (models x methods x datasets) into a run directory and
// prints the results table. Prompts and outputs go to DIR/generations.jsonl, never to the console.
#include <torch/torch.h>

#include <iostream>

#include "cli/commands.h"
#include "core/error.h"
#include "eval/eval_config.h"
#include "eval/runner.h"

namespace safedec::cli {

namespace {

struct EvalArgs {
  std::string config, out;
  size_t limit = 0;
  bool resume = false, force = false, report_only = false;
  int threads = 0;
  std::string command;
};

int run_eval_command(const EvalArgs& a) {
  SAFEDEC_CHECK(int(a.resume) + int(a.force) + int(a.report_only) <= 1,
                "give at most one of --resume, --force and --report-only");
  const EvalConfig config = load_eval_config(a.config, DatasetRegistry::builtin());
  EvalRunOptions o;
  o.out_dir = a.out;
  o.limit = a.limit;
  o.resume = a.resume;
  o.force = a.force;
  o.report_only = a.report_only;
  o.threads = a.threads;
  o.command = a.command;
  size_t cells = config.models.size() * config.methods.size() * config.datasets.size();
  std::cerr << "[eval] " << config.name << ": " << config.models.size() << " model(s) x " << config.methods.size()
            << " method(s) x " << config.datasets.size() << " dataset(s) = " << cells << " cells, limit "
            << (a.limit > 0 ? a.limit : config.limit) << " per dataset, output " << a.out << "\n";
  const EvalRunSummary s = run_eval(config, o);
  std::cout << format_results_table(s.rows);
  std::cout << "judge: " << (s.rows.empty() ? config.judge : s.rows.front().judge) << "; report: " << s.report_path
            << "\n";
  if (s.cells_skipped > 0)
    std::cerr << "[eval] " << s.cells_skipped << " of " << s.cells_total << " cells were already finished (resume)\n";
  return 0;
}

}  // namespace

Runner add_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* cmd = app.add_subcommand("eval", "Evaluate safety methods on datasets (models x methods x datasets)");
  cmd->add_option("--config", a->config, "Eval config YAML (e.g. configs/quickstart.yaml)")->required();
  cmd->add_option("--out", a->out, "Run directory (results.jsonl, generations.jsonl, report.md, ...)")->required();
  cmd->add_option("--limit", a->limit, "Seeded sample of N prompts per dataset (overrides the config's limit)");
  cmd->add_flag("--resume", a->resume, "Continue an interrupted run with the same resolved config");
  cmd->add_flag("--force", a->force, "Start over in a directory that holds another run");
  cmd->add_flag("--report-only", a->report_only,
                "Rewrite report.md (and print the table) from the finished cells of DIR; runs nothing");
  cmd->add_option("--threads", a->threads, "CPU threads (default: all cores)");
  return [a] {
    a->command = "safedec eval --config " + a->config + " --out " + a->out +
                 (a->limit > 0 ? " --limit " + std::to_string(a->limit) : std::string()) +
                 (a->resume ? " --resume" : "") + (a->force ? " --force" : "") +
                 (a->report_only ? " --report-only" : "");
    return run_eval_command(*a);
  };
}

}  // namespace safedec::cli
