// Evaluation run configuration (`safedec eval --config FILE`): models x methods (with parameter
// grids) x datasets, generation settings, judge and reference-NLL settings. Parsed from YAML in
// one place, validated with line/column messages, expanded into a stable list of cells and
// rendered back as the resolved config that a run directory records.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "decoding/processors.h"
#include "decoding/strategies/method_config.h"
#include "eval/dataset.h"
#include "eval/judge.h"

namespace safedec {

struct EvalModelSpec {
  std::string name;           // registered name (configs/models) or a model path
  std::string label;          // name in results (default: name)
  std::string hdr;            // optional harm-vector artifact subtracted at load (HDR)
  double hdr_lambda = 3.0;
  std::string chat_template;  // "" = the registry's choice
  std::string weights;        // "" = the registry's choice | fp32 | quantized (GGUF blocks, inference only)
};

// One method variant = one column of results. A `grid` entry in the YAML expands into several.
struct EvalMethodSpec {
  std::string label;        // unique; e.g. "acd" or "acd[alpha=0.25]"
  std::string name;         // the registered method (plain, acd, ...)
  MethodConfig config;      // fully resolved
  std::string group;        // the YAML entry it came from (label without grid values)
  std::vector<std::pair<std::string, std::string>> grid;  // this variant's grid values, in order
};

struct EvalGenerationSettings {
  int64_t max_new_tokens = 128;
  int64_t batch_size = 8;
  SamplingParams sampling;  // default greedy
};

struct EvalRefNllSettings {
  bool enabled = true;      // on datasets that have references (alpaca_eval_test)
  int64_t max_tokens = 128; // reference answers are truncated to this many tokens
};

// Paired speed measurement (eval/paired_speed.h): after a model's cells, each method against plain
// decoding in `pairs` interleaved pairs of timed batches on the first `prompts` prompts of the first
// dataset, `new_tokens` forced tokens per row. `speed: off` (or no `speed` key) skips it.
struct EvalSpeedSettings {
  bool enabled = false;
  int64_t pairs = 5;
  int64_t prompts = 4;
  int64_t new_tokens = 32;
  double noisy_spread = 0.25;  // interquartile range of the pair ratios / their median above this: "noisy"
};

struct EvalConfig {
  std::string name = "eval";
  uint64_t seed = 0;        // dataset subsampling (and sampling, unless generation.seed is set)
  size_t limit = 0;         // per dataset; 0 = every row
  std::vector<EvalModelSpec> models;
  std::vector<EvalMethodSpec> methods;
  std::vector<std::string> datasets;
  // `datasets: [advbench, {name: xstest_safe, limit: 100}]`: a per-dataset limit replaces `limit` for
  // that set (e.g. enough xstest_safe rows for a narrow over-refusal interval). `--limit N` on the
  // command line replaces all of them.
  std::map<std::string, size_t> dataset_limits;
  size_t limit_for(const std::string& dataset) const {
    const auto it = dataset_limits.find(dataset);
    return it == dataset_limits.end() ? limit : it->second;
  }
  std::string judge = "keyword";               // the first judge: decides `refused` in generations.jsonl
  std::vector<std::string> judges{"keyword"};  // `judge: NAME` or `judge: [NAME, ...]`; judges[0] == judge
  JudgeOptions judge_options;                  // keyword list for every judge; params: the first judge's
  // `judge_options: {<judge name>: {key: value}}`: parameters of one judge (e.g. rubric: {model: ...}).
  std::map<std::string, std::map<std::string, std::string>> judge_params;
  // The options a judge of this config is created with.
  JudgeOptions options_for(const std::string& judge_name) const;
  EvalGenerationSettings generation;
  EvalRefNllSettings ref_nll;
  EvalSpeedSettings speed;
  std::string source;       // the YAML file, for messages

  // The resolved configuration: every default filled in, every method config expanded.
  YAML::Node resolved() const;
};

// " (xstest_safe: 100, ...)" for the sets with their own limit, "" when none: for logs and reports.
std::string limit_overrides(const EvalConfig& config);

// Parses an eval config. Malformed YAML and bad values throw safedec::Error naming the source,
// line and column; unknown dataset/method/judge names list the known ones; train-only datasets
// are refused. `registry` resolves dataset names.
EvalConfig parse_eval_config(const std::string& yaml_text, const std::string& source,
                             const DatasetRegistry& registry);
EvalConfig load_eval_config(const std::string& path, const DatasetRegistry& registry);

// Overlays `value` at a dotted key ("steer.alpha") of a YAML mapping.
void set_dotted(YAML::Node& node, const std::string& dotted_key, const YAML::Node& value);

}  // namespace safedec
