// The method table: one descriptor per safety method — its name, how its YAML keys are read and
// written, the artifacts and extra models it needs, its ICV-steering sub-config, and how it loads what
// it needs once per run and makes a strategy per batch. Every caller (config parsing, MethodFactory,
// the eval runner, benchmarks) asks this table, so adding a method touches one place (methods.cpp)
// plus its config struct in method_config.h.
#pragma once
#include <yaml-cpp/yaml.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/yaml_keys.h"
#include "decoding/model_bundle.h"
#include "decoding/strategies/common.h"
#include "decoding/strategies/method_config.h"
#include "decoding/strategy.h"

namespace safedec {

// An artifact a configured method reads: the config key that names it and its path.
struct MethodArtifactRef {
  std::string key;
  std::string path;
};

// What a method loaded for a run (experts, adapters, soft prompts); makes one strategy per batch.
class MethodInstance {
 public:
  virtual ~MethodInstance() = default;
  virtual std::unique_ptr<Strategy> make(const StrategyEnv& env) const = 0;
  // Details of what was loaded, appended to the method's description ("" = nothing to add).
  virtual std::string describe() const { return ""; }
};

struct MethodDescriptor {
  std::string name;
  std::string summary;
  // Reads the method's own keys from `r` into `c` and validates them (`where` names the source).
  std::function<void(YamlKeys& r, MethodConfig& c, const std::string& where)> parse;
  // Writes the method's own keys (the resolved config).
  std::function<void(YAML::Emitter& e, const MethodConfig& c)> dump;
  // Artifacts and other model files the configured method reads.
  std::function<std::vector<MethodArtifactRef>(const MethodConfig& c)> artifacts;
  std::function<std::vector<std::string>(const MethodConfig& c)> models;
  // The method's ICV steering settings (nullptr when it has none).
  std::function<const SteerConfig*(const MethodConfig& c)> steering;
  // One line of its settings for logs.
  std::function<std::string(const MethodConfig& c)> describe;
  // Loads what the method needs once per run.
  std::function<std::unique_ptr<MethodInstance>(const MethodConfig& c, const ModelBundle& target)> instantiate;
  // The method writes NGSD's per-token gate trace (TV, potential, spikes).
  bool gate_trace = false;
  // The steering settings are the method itself (steer), not a sub-config of another method.
  bool steering_is_method = false;
  // For an expert that is the target with a system prompt: that system text (benchmarks' reference
  // timing builds the expert rows from it); nullopt otherwise.
  std::function<std::optional<std::string>(const MethodConfig& c)> prompted_expert;
};

// Every method, in a stable order: plain, safedecoding, ngsd, acd, steer.
const std::vector<MethodDescriptor>& method_table();
// The descriptor of `name`; an unknown name throws listing the known ones.
const MethodDescriptor& method_descriptor(const std::string& name);
std::vector<std::string> known_methods();
void check_method_name(const std::string& name);

}  // namespace safedec
