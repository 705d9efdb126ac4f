// `safedec train --config configs/train/<name>.yaml [--out DIR]`: runs a training pipeline
// (src/train/pipeline.h) into a run directory and prints where the artifact is.
#include <torch/torch.h>

#include <iostream>

#include "cli/commands.h"
#include "cli/flags.h"
#include "core/error.h"
#include "train/pipeline.h"

namespace safedec::cli {

namespace {

struct TrainArgs {
  std::string config, out;
  bool resume = false, force = false;
  int threads = 0;
  int64_t stop_after = 0;
  bool json = false;
};

int run_train_command(const TrainArgs& a) {
  SAFEDEC_CHECK(!(a.resume && a.force), "give at most one of --resume and --force");
  SAFEDEC_CHECK(a.threads >= 0 && a.threads <= 1024, "--threads must be in [0, 1024] (0 = all cores), got ",
                a.threads);
  SAFEDEC_CHECK(a.stop_after >= 0, "--stop-after must be >= 0, got ", a.stop_after);
  if (a.threads > 0) torch::set_num_threads(a.threads);
  TrainRunOptions o;
  o.out = a.out;
  o.resume = a.resume;
  o.force = a.force;
  o.stop_after = a.stop_after;
  const TrainRunResult r = run_train_config(a.config, o);
  if (a.json) {
    std::cout << nlohmann::json{{"run_dir", r.run_dir}, {"artifact", r.artifact}, {"complete", r.complete},
                                {"metrics", r.metrics}}
                     .dump()
              << "\n";
  } else {
    std::cout << (r.complete ? "artifact: " + r.artifact : "stopped early; continue with --resume") << "\n"
              << "run directory: " << r.run_dir << "\n";
  }
  return 0;
}

}  // namespace

Runner add_train(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  auto* cmd = app.add_subcommand("train", "Train an artifact (LoRA/full expert, risk probe, gate, ...) from a YAML config");
  cmd->add_option("--config", a->config, "Train config YAML (configs/train/*.yaml)")->required();
  cmd->add_option("--out", a->out, "Run directory (default: .cache/train/<config name>)");
  cmd->add_flag("--resume", a->resume, "Continue a killed run from its newest checkpoint");
  cmd->add_flag("--force", a->force, "Start over in a directory that holds another run");
  add_threads_flag(cmd, a->threads, "CPU threads (default: all cores; the config's `threads` if set)");
  add_int_flag(cmd, "--stop-after", a->stop_after, 0, kMaxCountFlag,
               "Stop after this optimiser step as if killed (for resume tests)");
  cmd->add_flag("--json", a->json, "Print the result as one JSON object");
  return [a] { return run_train_command(*a); };
}

}  // namespace safedec::cli
