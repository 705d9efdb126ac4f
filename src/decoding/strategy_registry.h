// Strategy registry: creates a decoding strategy by method name from a MethodConfig and the loaded
// target (ModelBundle); an unknown name lists the known ones.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "decoding/model_bundle.h"
#include "decoding/strategies/method_config.h"
#include "decoding/strategy.h"

namespace safedec {

// plain, safedecoding, ngsd, acd, steer.
std::vector<std::string> known_methods();
// Throws safedec::Error listing known_methods() for an unknown name.
void check_method_name(const std::string& name);

// Everything a method needs besides the target, loaded once and reused for many batches
// (expert models, adapters, soft prompts, ICVs, risk estimators are built per strategy).
class MethodFactory {
 public:
  MethodFactory(MethodConfig config, const ModelBundle& target, TraceSink trace = {});
  const MethodConfig& config() const { return config_; }
  // A fresh strategy for one batch.
  std::unique_ptr<Strategy> make() const;
  // A one-line description for logs.
  std::string describe() const;
  // The store of system-turn keys/values shared by this factory's strategies (null if prefix_cache is off).
  const PrefixKvStore* prefixes() const { return env_.prefixes.get(); }

 private:
  MethodConfig config_;
  const ModelBundle& target_;
  StrategyEnv env_;
  std::shared_ptr<const LoraAdapter> adapter_;
  torch::Tensor sp_, ap_;
  std::shared_ptr<const CausalLM> expert_;
  PromptRenderer expert_render_;
  std::shared_ptr<ModelBundle> expert_bundle_;
};

// Renders a prompt's user turn for `bundle` with another system text.
PromptRenderer bundle_renderer(const ModelBundle& bundle);

}  // namespace safedec
