// Configuration of the training-data builders (`safedec data build --config configs/data/<name>.yaml`):
// which builder, which model answers, which training pools feed it, how it generates and judges.
// Parsed from YAML in one place with FILE:LINE:COLUMN messages (YamlKeys); every dataset is checked
// against the honest split (DatasetUse::Train) before anything runs; resolved() is what the output
// directory records and what a resume must match.
#pragma once
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "decoding/processors.h"
#include "eval/dataset.h"
#include "eval/judge.h"

namespace safedec {

// The builders: self_responses, deep_alignment, acd_anchors.
std::vector<std::string> known_data_builders();

// One training pool feeding a builder: `limit` rows of `dataset` (0 = every row), chosen by the
// seeded, stable sample of eval/dataset.h (subsample).
struct DataSource {
  std::string dataset;
  size_t limit = 0;
  uint64_t seed = 0;
  std::string where;  // FILE:LINE:COLUMN of the entry, for messages
};

// What fills the model's system slot when it answers.
//  none:    an explicit, empty system slot (no system text at all, not even the template's default)
//  default: what the chat template does without a system message (SmolLM2: its own default line)
//  text:    the given text
struct SystemPrompt {
  enum class Mode { None, Default, Text };
  Mode mode = Mode::Default;
  std::string text;  // Mode::Text only

  static SystemPrompt none() { return {Mode::None, ""}; }
  static SystemPrompt with_text(std::string t) { return {Mode::Text, std::move(t)}; }
  std::string mode_name() const;  // "none" | "default" | "text"
  // The argument of ModelBundle::make_prompt: "" for none, nullopt for default, the text otherwise.
  std::optional<std::string> for_render() const;
  YAML::Node to_yaml() const;  // none | default | {text: ...}
};

// Generation settings of every pass a builder runs (plain decoding, batched).
struct DataGenerationSettings {
  int64_t max_new_tokens = 64;
  int64_t batch_size = 8;
  SamplingParams sampling;  // temperature 0 = greedy; seeded per batch when sampling
};

// self_responses: the model answers the prompts of `sources`.
struct SelfResponsesSettings {
  std::vector<DataSource> sources;
};

// deep_alignment (methods.md 1, Qi et al. 2024): safety triplets + utility anchors.
struct DeepAlignmentSettings {
  // Instructions whose dataset reference is a written refusal (safety_tuned). Rows whose reference
  // the judge does not see as a refusal are dropped.
  std::vector<DataSource> refusals;
  // Where the harmful answers to those instructions come from: "self" (the builder lets the model
  // answer them) or the directory of a finished self_responses build that answered them.
  std::string harmful_answers = "self";
  // Pools with `chosen` and `rejected` replies kept (hh_harmless): harmful answer = rejected (when
  // the judge does not see it as a refusal), refusal = chosen (only when the judge sees it as one).
  std::vector<DataSource> pairs;
  // Benign instructions answered by the model; its refusals are dropped.
  std::vector<DataSource> anchors;
  // Rows of `refusals` whose written reply the judge does NOT see as a refusal (safety_tuned's careful
  // helpful answers to sensitive-sounding requests) become utility anchors with that written reply,
  // instead of being dropped: they teach the expert to answer such requests (over-refusal).
  bool sensitive_anchors = false;
};

// acd_anchors (methods.md 2): harmful + benign instructions, each answered under three system
// prompts, split by the judge into D_HR, D_HA and D_S.
struct AcdAnchorSettings {
  std::vector<DataSource> harmful;
  std::vector<DataSource> benign;
  std::string safe_prompt;      // default: kAcdSafePrompt
  std::string opposite_prompt;  // default: kAcdOppositePrompt
  SystemPrompt null_system = SystemPrompt::none();  // the "no system prompt" answers: none | default
  // Optional harmful instructions with written refusals (safety_tuned): rows whose reply the judge
  // sees as a refusal join D_HR as they are (system_kind "written"), no generation. For a target
  // that almost never refuses under any system prompt (SmolLM2-135M: 10 of 300 harmful answers),
  // D_HR is otherwise too small for L_SP to learn refusing.
  std::vector<DataSource> written_refusals;
  // Share (0..1) of the instructions (harmful, benign and written-refusal ones alike) put in one of
  // the adversarial-style wrappers of train/prompt_wrappers.h before they are answered, so that the
  // soft prompts see role-play / jailbreak framings in D_HR, D_HA and D_S (benign ones too, so that a
  // wrapper alone never means "refuse"). An instruction is wrapped, and by which wrapper, as a seeded
  // function of (wrap_seed, dataset, source id): the same under the three system prompts, the same in
  // every run. 0 (the default) wraps nothing and leaves the resolved config as it was.
  double wrap_probability = 0.0;
  uint64_t wrap_seed = 0;
};

struct DataBuildConfig {
  std::string name;
  std::string builder;
  std::string model = "smollm2-135m-instruct";  // registered name (configs/models) or a model path
  std::string chat_template;                    // "" = the registry's choice
  std::string judge = "keyword";
  JudgeOptions judge_options;
  SystemPrompt system;  // self_responses and deep_alignment answers
  DataGenerationSettings generation;
  SelfResponsesSettings self_responses;
  DeepAlignmentSettings deep_alignment;
  AcdAnchorSettings acd_anchors;
  std::string source;  // the YAML file, for messages

  // Every source of the active builder, in the order the builder uses them.
  std::vector<DataSource> sources() const;
  // Caps every source of the active builder at `limit` rows (0 = no change); used by --limit.
  void cap_sources(size_t limit);
  // The resolved configuration: every default filled in (prompt texts included).
  YAML::Node resolved() const;
};

// Checks the parser does besides the YAML itself.
struct DataConfigChecks {
  bool resolve_model = true;  // the model name must be registered or an existing path
};

// Parses a builder config. Malformed YAML, unknown keys and bad values throw safedec::Error with
// SOURCE:LINE:COLUMN; unknown builder, dataset, judge and model names list the known ones; an
// evaluation set used as a source is refused by the honest-split rule.
DataBuildConfig parse_data_build_config(const std::string& yaml_text, const std::string& source,
                                        const DatasetRegistry& registry, const DataConfigChecks& checks = {});
DataBuildConfig load_data_build_config(const std::string& path, const DatasetRegistry& registry,
                                       const DataConfigChecks& checks = {});

}  // namespace safedec
