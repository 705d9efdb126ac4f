// `safedec train --config configs/train/<name>.yaml`: the training pipelines that make safedec's
// artifacts from the training pools, each a YAML-configured run:
//   safedecoding_expert  LoRA expert on refusal_sft (methods.md 4)
//   ngsd_expert          NGSD's safety expert (deep-alignment SFT, methods.md 1): a LoRA on the
//                        target, a fine-tuned truncated self-expert, or a full fine-tune of a smaller
//                        same-vocabulary model
//   risk_probe           NGSD's risk neuron: logistic regression on the prompt's hidden state
//   ngsd_gate            LIF calibration: the threshold at which the gate fires on at most a given
//                        share of benign tokens
// A run directory holds config.resolved.yaml, manifest.json, metrics.json, train_log.jsonl,
// loss_curve.svg, checkpoints/ and artifact/ (the trained artifact, written atomically). A killed run
// continues with --resume; a directory with another config is refused unless --force.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace safedec {

struct TrainRunOptions {
  std::string out;       // run directory; "" = .cache/train/<config name>
  bool resume = false;   // continue a killed run (or return a finished one)
  bool force = false;    // start over in a directory that holds another run
  int64_t stop_after = 0;  // tests: stop after this optimiser step as if killed
};

struct TrainRunResult {
  std::string run_dir;
  std::string artifact;  // run_dir/artifact ("" when the run stopped early)
  nlohmann::json metrics = nlohmann::json::object();
  bool complete = false;
};

std::vector<std::string> known_pipelines();
// Parses the config (FILE:LINE:COLUMN errors, unknown keys refused) and runs its pipeline.
TrainRunResult run_train_config(const std::string& config_path, const TrainRunOptions& options);
// The default run directory of a config (.cache/train/<name> under the source tree).
std::string default_train_dir(const std::string& config_path);

}  // namespace safedec
