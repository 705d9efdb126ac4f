// MethodFactory: what one configured method needs besides the target (ICV steering, the method's
// loaded artifacts via the method table in methods.h), built once and reused for many batches.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "decoding/methods.h"
#include "decoding/model_bundle.h"
#include "decoding/strategies/method_config.h"
#include "decoding/strategy.h"

namespace safedec {

class MethodFactory {
 public:
  MethodFactory(MethodConfig config, const ModelBundle& target, TraceSink trace = {});
  const MethodConfig& config() const { return config_; }
  const MethodDescriptor& descriptor() const { return *descriptor_; }
  // A fresh strategy for one batch.
  std::unique_ptr<Strategy> make() const;
  // A one-line description for logs.
  std::string describe() const;
  // The store of system-turn keys/values shared by this factory's strategies (null if prefix_cache is off).
  const PrefixKvStore* prefixes() const { return env_.prefixes.get(); }

 private:
  MethodConfig config_;
  const MethodDescriptor* descriptor_;
  StrategyEnv env_;
  std::unique_ptr<MethodInstance> instance_;
};

// Renders a prompt's user turn for `bundle` with another system text.
PromptRenderer bundle_renderer(const ModelBundle& bundle);

}  // namespace safedec
