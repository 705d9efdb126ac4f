// Configuration of the safety methods as plain structs with defaults (methods.md), parsed from
// YAML in exactly one place (parse_method_config) and checked by one validate() per struct.
#pragma once
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <string>
#include <vector>

#include "decoding/strategies/common.h"

namespace safedec {

// The manual system prompts of the instructive-decoding baseline (methods.md 2).
extern const char* const kAcdSafePrompt;
extern const char* const kAcdOppositePrompt;
// The training-free SafeDecoding expert: the target with this system prompt.
extern const char* const kSafetyExpertPrompt;

// ACD: l = l_SP - alpha * l_AP, two branches that differ only in the system slot.
struct AcdConfig {
  double alpha = 0.5;
  std::string prompts = "manual";  // manual (text system prompts) | soft (= trained: the sp/ap of a soft-prompt
                                   // artifact `soft_prompts`, safedec train configs/train/acd_prompts.yaml)
  std::string variant = "sp_ap";   // sp_ap | null_ap (no system text in the SP branch) | sp_null
  std::string safe_prompt = kAcdSafePrompt;
  std::string opposite_prompt = kAcdOppositePrompt;
  std::string soft_prompts;  // safetensors file with `sp` [L, d] and `ap` [L', d]
  SteerConfig steer;
  void validate() const;
};

// SafeDecoding (methods.md 4): expert rows in the same batch for the first m tokens.
struct SafeDecodingConfig {
  std::string expert = "system_prompt";  // system_prompt (training-free) | lora (a PEFT adapter directory)
  std::string adapter;                   // PEFT adapter directory for expert: lora
  std::string expert_system = kSafetyExpertPrompt;
  int64_t m = 2;
  double alpha = 3.0;
  int64_t c = 5;
  void validate() const;
};

// NGSD (methods.md 1).
struct NgsdConfig {
  // system_prompt: training-free stand-in = the target itself with `expert_system` in the system slot
  //   (its own KV cache; the gate watches how far the safety prompt moves the distribution)
  // self_truncated: the target's first `expert_layers` layers + norm + head (untrained, degenerate)
  // model: a separate same-vocabulary expert (`expert_model`), as it is
  // lora: the target + a trained LoRA adapter (`expert_adapter`, safedec train ngsd_expert)
  // trained: fine-tuned expert weights (`expert_weights`: a truncated self-expert or a smaller model)
  std::string expert = "system_prompt";
  std::string expert_model;               // registered name or path (expert: model)
  std::string expert_adapter;             // LoRA artifact directory (expert: lora)
  std::string expert_weights;             // expert-weights artifact directory (expert: trained)
  std::string gate;                       // optional gate-calibration artifact: its tau/theta/reset replace these
  std::string expert_system = kSafetyExpertPrompt;  // expert: system_prompt
  int64_t expert_layers = 0;              // self_truncated: first k layers; 0 = n_layers / 3
  double tau = 8.0, theta = 1.0, reset = 0.6;
  int64_t top_k = 64;
  std::string risk = "fixed";  // fixed | self_reflection | probe
  double alpha = 0.5;          // risk: fixed
  std::string probe;           // risk: probe -> safetensors with `weight` [d], `bias` [1]
  int64_t reflection_max_tokens = 256;
  bool early_stop = false;
  // Diagnostic, not a YAML key (set by the gate calibration): every step takes the target's own greedy
  // token; the gate, the mixing and (when tracing) whether a spike would change the token are computed
  // and traced but never applied.
  bool follow_target = false;
  SteerConfig steer;
  void validate() const;
};

// One resolved method configuration.
struct MethodConfig {
  std::string method = "plain";  // plain | safedecoding | ngsd | acd | steer
  AcdConfig acd;
  SafeDecodingConfig safedecoding;
  NgsdConfig ngsd;
  SteerConfig steer;  // the `steer` method itself (enabled)
  // Compute each branch's system turn once per run and reuse its keys/values (PrefixKvStore);
  // false: every batch prefills whole prompts (for timing comparisons).
  bool prefix_cache = true;
  std::string source;  // where it came from (for messages)
  // The resolved configuration as YAML text (written next to results).
  std::string dump() const;
};

// Parses `node` (a YAML mapping of the method's keys; an optional `method:` key must agree) for
// `method`. Unknown keys and bad values throw naming the key, the source and the allowed values.
MethodConfig parse_method_config(const std::string& method, const YAML::Node& node, const std::string& source);
// Loads configs/methods/<method>.yaml (or `file` if given; "" = the default file if it exists).
MethodConfig load_method_config(const std::string& method, const std::string& file = "");

}  // namespace safedec
