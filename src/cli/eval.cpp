// `safedec eval`: runs an evaluation config (models x methods x datasets) into a run directory and
// prints the results table. Prompts and outputs go to DIR/generations.jsonl, never to the console.
#include <torch/torch.h>

#include <algorithm>
#include <iostream>
#include <sstream>

#include "cli/commands.h"
#include "cli/flags.h"
#include "core/error.h"
#include "eval/eval_config.h"
#include "eval/rejudge.h"
#include "eval/runner.h"

namespace safedec::cli {

namespace {

struct EvalArgs {
  std::string config, out;
  size_t limit = 0;
  bool limit_given = false;  // --limit on the command line wins over the config, 0 (all rows) included
  bool resume = false, force = false, report_only = false;
  std::string rejudge;                // --rejudge DIR: judge a finished run again, generating nothing
  std::string judges;                 // with --rejudge: comma-separated judge names
  std::vector<std::string> params;    // with --rejudge: JUDGE.KEY=VALUE
  int threads = 0;
  std::string methods;   // --methods LABEL[,LABEL]: run only these method columns of the config
  std::string datasets;  // --datasets NAME[,NAME]: run only these datasets of the config
  std::string models;    // --models NAME[,NAME]: run only these models (name or label) of the config
  std::string command;
};

std::vector<std::string> split_commas(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// --methods: keeps the config's method columns whose label or YAML entry (group) is named, in the
// config's order; a name that matches nothing lists the config's labels.
void select_methods(EvalConfig& config, const std::string& list) {
  const auto wanted = split_commas(list);
  SAFEDEC_CHECK(!wanted.empty(), "--methods needs at least one method label, e.g. --methods plain,ngsd");
  std::vector<std::string> labels;
  for (const auto& m : config.methods) labels.push_back(m.label);
  for (const auto& w : wanted) {
    const bool known = std::any_of(config.methods.begin(), config.methods.end(),
                                   [&](const EvalMethodSpec& m) { return m.label == w || m.group == w; });
    SAFEDEC_CHECK(known, "--methods: '", w, "' is not a method of ", config.source, "; its methods are: ", joined(labels));
  }
  std::vector<EvalMethodSpec> kept;
  for (auto& m : config.methods) {
    if (std::find(wanted.begin(), wanted.end(), m.label) != wanted.end() ||
        std::find(wanted.begin(), wanted.end(), m.group) != wanted.end())
      kept.push_back(std::move(m));
  }
  config.methods = std::move(kept);
}

// --datasets: keeps the named datasets of the config, in the config's order.
void select_datasets(EvalConfig& config, const std::string& list) {
  const auto wanted = split_commas(list);
  SAFEDEC_CHECK(!wanted.empty(), "--datasets needs at least one dataset name, e.g. --datasets advbench,xstest_safe");
  for (const auto& w : wanted) {
    SAFEDEC_CHECK(std::find(config.datasets.begin(), config.datasets.end(), w) != config.datasets.end(),
                  "--datasets: '", w, "' is not a dataset of ", config.source, "; its datasets are: ",
                  joined(config.datasets));
  }
  std::vector<std::string> kept;
  for (const auto& d : config.datasets)
    if (std::find(wanted.begin(), wanted.end(), d) != wanted.end()) kept.push_back(d);
  config.datasets = std::move(kept);
}

// --models: keeps the config's models whose label or registered name is named, in the config's order.
void select_models(EvalConfig& config, const std::string& list) {
  const auto wanted = split_commas(list);
  SAFEDEC_CHECK(!wanted.empty(), "--models needs at least one model name, e.g. --models smollm2-135m-instruct");
  std::vector<std::string> labels;
  for (const auto& m : config.models) labels.push_back(m.label.empty() ? m.name : m.label);
  for (const auto& w : wanted) {
    const bool known = std::any_of(config.models.begin(), config.models.end(),
                                   [&](const EvalModelSpec& m) { return m.label == w || m.name == w; });
    SAFEDEC_CHECK(known, "--models: '", w, "' is not a model of ", config.source, "; its models are: ", joined(labels));
  }
  std::vector<EvalModelSpec> kept;
  for (auto& m : config.models)
    if (std::find(wanted.begin(), wanted.end(), m.label) != wanted.end() ||
        std::find(wanted.begin(), wanted.end(), m.name) != wanted.end())
      kept.push_back(std::move(m));
  config.models = std::move(kept);
}

// `eval --rejudge DIR --judge NAME[,NAME]`: further judges over DIR's generations (eval/rejudge.h).
int run_rejudge_command(const EvalArgs& a) {
  SAFEDEC_CHECK(a.config.empty() && a.out.empty() && !a.resume && !a.force && !a.report_only,
                "eval --rejudge DIR takes --judge, --param, --methods, --datasets and --threads only (no --config, ",
                "--out, --resume, --force, --report-only)");
  RejudgeOptions o;
  o.run_dir = a.rejudge;
  // --methods / --datasets: judge only these cells (names checked against the run's generations).
  for (const auto& [list, into] : {std::pair{&a.methods, &o.methods}, std::pair{&a.datasets, &o.datasets}}) {
    std::stringstream ss(*list);
    for (std::string n; std::getline(ss, n, ',');)
      if (!n.empty()) into->push_back(n);
  }
  std::stringstream names(a.judges);
  for (std::string n; std::getline(names, n, ',');)
    if (!n.empty()) o.judges.push_back(n);
  for (const auto& p : a.params) {
    const size_t dot = p.find('.'), eq = p.find('=');
    SAFEDEC_CHECK(dot != std::string::npos && eq != std::string::npos && dot < eq,
                  "eval --rejudge: --param must be JUDGE.KEY=VALUE, e.g. rubric.model=smollm2-135m-instruct (got '", p,
                  "')");
    o.options[p.substr(0, dot)].params[p.substr(dot + 1, eq - dot - 1)] = p.substr(eq + 1);
  }
  for (const auto& kv : o.options)
    SAFEDEC_CHECK(std::find(o.judges.begin(), o.judges.end(), kv.first) != o.judges.end(), "eval --rejudge: --param ",
                  "names judge '", kv.first, "', which is not in --judge ", a.judges);
  const RejudgeSummary s = rejudge_run(o);
  const std::string section = judges_markdown(s.cells);
  replace_judges_section(a.rejudge, section);
  std::cerr << "[eval] rejudge: " << s.judged_now << " responses judged in " << s.seconds << " s; judgements in "
            << a.rejudge << "/judgements.jsonl, per-cell figures in results.jsonl and report.md\n";
  std::cout << section;
  return 0;
}

int run_eval_command(const EvalArgs& a) {
  if (!a.rejudge.empty()) return run_rejudge_command(a);
  SAFEDEC_CHECK(a.judges.empty() && a.params.empty(), "--judge and --param go with --rejudge DIR; a run's judges ",
                "are set in its config (`judge: [keyword, rubric]`)");
  SAFEDEC_CHECK(!a.config.empty() && !a.out.empty(), "eval needs --config FILE and --out DIR (or --rejudge DIR)");
  SAFEDEC_CHECK(int(a.resume) + int(a.force) + int(a.report_only) <= 1,
                "give at most one of --resume, --force and --report-only");
  EvalConfig config = load_eval_config(a.config, DatasetRegistry::builtin());
  if (a.limit_given) {
    config.limit = a.limit;
    config.dataset_limits.clear();
  }
  if (!a.methods.empty()) select_methods(config, a.methods);
  if (!a.datasets.empty()) select_datasets(config, a.datasets);
  if (!a.models.empty()) select_models(config, a.models);
  EvalRunOptions o;
  o.out_dir = a.out;
  o.limit = 0;  // already in config.limit
  o.resume = a.resume;
  o.force = a.force;
  o.report_only = a.report_only;
  o.threads = a.threads;
  o.command = a.command;
  size_t cells = config.models.size() * config.methods.size() * config.datasets.size();
  std::cerr << "[eval] " << config.name << ": " << config.models.size() << " model(s) x " << config.methods.size()
            << " method(s) x " << config.datasets.size() << " dataset(s) = " << cells << " cells, limit "
            << (config.limit > 0 ? std::to_string(config.limit) : std::string("all rows")) << " per dataset"
            << limit_overrides(config) << ", output " << a.out << "\n";
  const EvalRunSummary s = run_eval(config, o);
  std::cout << format_results_table(s.rows);
  std::cout << "judge: " << (s.rows.empty() ? config.judge : s.rows.front().judge) << "; report: " << s.report_path
            << "\n";
  if (a.report_only)
    std::cerr << "[eval] report from the " << s.cells_skipped << " finished of " << s.cells_total << " cells"
              << (s.cells_skipped < s.cells_total ? " (the rest have not run yet)" : "") << "\n";
  else if (s.cells_skipped > 0)
    std::cerr << "[eval] " << s.cells_skipped << " of " << s.cells_total << " cells were already finished (resume)\n";
  return 0;
}

}  // namespace

Runner add_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* cmd = app.add_subcommand("eval", "Evaluate safety methods on datasets (models x methods x datasets)");
  cmd->add_option("--config", a->config, "Eval config YAML (e.g. configs/quickstart.yaml); required unless --rejudge");
  cmd->add_option("--out", a->out, "Run directory (results.jsonl, generations.jsonl, report.md, ...); required unless --rejudge");
  cmd->add_option("--rejudge", a->rejudge, "Judge the generations of the finished run DIR again (no generation)");
  cmd->add_option("--judge", a->judges, "With --rejudge: comma-separated judges, e.g. rubric");
  cmd->add_option("--param", a->params,
                  "With --rejudge: judge parameter JUDGE.KEY=VALUE, e.g. rubric.batch_size=4; JUDGE.per_cell=N judges "
                  "only the first N responses of each cell");
  auto* limit = add_int_flag(cmd, "--limit", a->limit, 0, kMaxCountFlag,
                             "Seeded sample of N prompts per dataset (0 = all rows; overrides the config's limit)");
  cmd->add_flag("--resume", a->resume, "Continue an interrupted run with the same resolved config");
  cmd->add_flag("--force", a->force, "Start over in a directory that holds another run");
  cmd->add_flag("--report-only", a->report_only,
                "Rewrite report.md (and print the table) from the finished cells of DIR; runs nothing");
  cmd->add_option("--methods", a->methods,
                  "Run only these method columns of the config (comma-separated labels or YAML entries); with "
                  "--rejudge: judge only these methods' responses");
  cmd->add_option("--datasets", a->datasets, "Run only these datasets of the config (comma-separated); with --rejudge: judge only "
                  "these datasets' responses");
  cmd->add_option("--models", a->models,
                  "Run only these models of the config (comma-separated registered names or labels)");
  add_threads_flag(cmd, a->threads);
  return [a, limit] {
    a->limit_given = limit->count() > 0;
    a->command = "safedec eval --config " + a->config + " --out " + a->out +
                 (a->limit_given ? " --limit " + std::to_string(a->limit) : std::string()) +
                 (a->methods.empty() ? std::string() : " --methods " + a->methods) +
                 (a->datasets.empty() ? std::string() : " --datasets " + a->datasets) +
                 (a->models.empty() ? std::string() : " --models " + a->models) +
                 (a->resume ? " --resume" : "") + (a->force ? " --force" : "") +
                 (a->report_only ? " --report-only" : "");
    return run_eval_command(*a);
  };
}

}  // namespace safedec::cli
