// MethodFactory: the shared environment of a method's strategies + the method table's instance.
#include "decoding/strategy_registry.h"

#include <sstream>

#include "core/error.h"

namespace safedec {

PromptRenderer bundle_renderer(const ModelBundle& bundle) {
  const ModelBundle* b = &bundle;
  return [b](const StrategyPrompt& base, const std::optional<std::string>& system) {
    return b->rerender(base, system);
  };
}

MethodFactory::MethodFactory(MethodConfig config, const ModelBundle& target, TraceSink trace)
    : config_(std::move(config)), descriptor_(&method_descriptor(config_.method)) {
  env_.model = target.model;
  env_.pad_id = target.pad_id();
  env_.render = bundle_renderer(target);
  env_.tokenizer = target.tokenizer;
  env_.eos_ids = target.tokenizer->eog_ids();
  env_.trace = std::move(trace);
  if (config_.prefix_cache) env_.prefixes = std::make_shared<PrefixKvStore>();
  const SteerConfig* steer = descriptor_->steering(config_);
  if (steer && steer->enabled) env_.steering = std::make_shared<Steering>(*steer, target.model->config());
  instance_ = descriptor_->instantiate(config_, target);
}

std::unique_ptr<Strategy> MethodFactory::make() const { return instance_->make(env_); }

std::string MethodFactory::describe() const {
  std::string s = config_.method;
  if (!config_.prefix_cache) s += " [prefix cache off]";
  std::string details = descriptor_->describe(config_);
  const std::string loaded = instance_->describe();
  if (!loaded.empty()) details += (details.empty() ? "" : ", ") + loaded;
  if (!details.empty()) s += " (" + details + ")";
  const SteerConfig* steer = descriptor_->steering(config_);
  if (env_.steering && steer && !descriptor_->steering_is_method) {
    std::ostringstream a;
    a << steer->alpha;
    s += " + steer (ICV alpha " + a.str() + ")";
  }
  return s;
}

}  // namespace safedec
