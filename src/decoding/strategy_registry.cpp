// Method name -> strategy, with the per-method loading (adapters, soft prompts, experts, ICVs).
#include "decoding/strategy_registry.h"

#include "core/error.h"
#include "decoding/plain_strategy.h"
#include "decoding/strategies/acd.h"
#include "decoding/strategies/ngsd.h"
#include "decoding/strategies/safedecoding.h"
#include "decoding/strategies/steer.h"

namespace safedec {

std::vector<std::string> known_methods() { return {"plain", "safedecoding", "ngsd", "acd", "steer"}; }

void check_method_name(const std::string& name) {
  auto k = known_methods();
  if (std::find(k.begin(), k.end(), name) != k.end()) return;
  std::string list;
  for (const auto& m : k) list += (list.empty() ? "" : ", ") + m;
  fail("unknown method '", name, "'; known methods: ", list);
}

PromptRenderer bundle_renderer(const ModelBundle& bundle) {
  const ModelBundle* b = &bundle;
  return [b](const StrategyPrompt& base, const std::optional<std::string>& system) {
    return b->make_prompt(base.id, base.user, system);
  };
}

namespace {

// Refuses an expert whose vocabulary differs from the target's (same size and same spellings).
void check_same_vocabulary(const Tokenizer& target, const Tokenizer& expert, const std::string& expert_name) {
  SAFEDEC_CHECK(target.vocab_size() == expert.vocab_size(), "ngsd: the expert ", expert_name, " has a vocabulary of ",
                expert.vocab_size(), " tokens but the target has ", target.vocab_size(),
                "; NGSD needs an expert that shares the target's vocabulary exactly");
  for (int64_t i = 0; i < target.vocab_size(); ++i) {
    const auto id = static_cast<int32_t>(i);
    SAFEDEC_CHECK(target.token_text(id) == expert.token_text(id), "ngsd: the expert ", expert_name,
                  " spells token ", id, " '", expert.token_text(id), "' but the target spells it '",
                  target.token_text(id), "'; NGSD needs an expert that shares the target's vocabulary exactly");
  }
}

}  // namespace

MethodFactory::MethodFactory(MethodConfig config, const ModelBundle& target, TraceSink trace)
    : config_(std::move(config)), target_(target) {
  check_method_name(config_.method);
  env_.model = target.model;
  env_.pad_id = target.pad_id();
  env_.render = bundle_renderer(target);
  env_.tokenizer = target.tokenizer;
  env_.eos_ids = target.tokenizer->eog_ids();
  env_.trace = std::move(trace);
  if (config_.prefix_cache) env_.prefixes = std::make_shared<PrefixKvStore>();
  const auto& mc = target.model->config();
  const SteerConfig* steer = config_.method == "acd"    ? &config_.acd.steer
                             : config_.method == "ngsd" ? &config_.ngsd.steer
                             : config_.method == "steer" ? &config_.steer
                                                         : nullptr;
  if (steer && steer->enabled) env_.steering = std::make_shared<Steering>(*steer, mc);
  if (config_.method == "acd" && config_.acd.prompts == "soft")
    std::tie(sp_, ap_) = load_soft_prompts(config_.acd.soft_prompts, mc.hidden_size);
  if (config_.method == "safedecoding" && config_.safedecoding.expert == "lora")
    adapter_ = load_peft_adapter(config_.safedecoding.adapter, mc);
  if (config_.method == "ngsd") {
    const auto& n = config_.ngsd;
    if (n.expert == "system_prompt") {
      // The target itself, prompted to be safe: same weights, its own rows and KV cache.
      expert_ = target.model;
      const ModelBundle* b = &target;
      const std::string sys = n.expert_system;
      expert_render_ = [b, sys](const StrategyPrompt& base, const std::optional<std::string>&) {
        return b->make_prompt(base.id, base.user, sys);
      };
    } else if (n.expert == "self_truncated") {
      const int64_t k = n.expert_layers > 0 ? n.expert_layers : std::max<int64_t>(1, mc.n_layers / 3);
      SAFEDEC_CHECK(k <= mc.n_layers, "ngsd: `expert_layers` is ", k, " but the target has only ", mc.n_layers,
                    " layers");
      expert_ = target.model->truncated(k);
      // Same tokenizer and template: the expert reuses the target's rendering.
    } else {
      expert_bundle_ = std::make_shared<ModelBundle>(load_model_bundle(n.expert_model));
      check_same_vocabulary(*target.tokenizer, *expert_bundle_->tokenizer, n.expert_model);
      SAFEDEC_CHECK(expert_bundle_->model->config().vocab_size == mc.vocab_size, "ngsd: the expert ", n.expert_model,
                    " has ", expert_bundle_->model->config().vocab_size, " output logits but the target has ",
                    mc.vocab_size);
      expert_ = expert_bundle_->model;
      expert_render_ = bundle_renderer(*expert_bundle_);
    }
  }
}

std::unique_ptr<Strategy> MethodFactory::make() const {
  const auto& m = config_.method;
  if (m == "plain") return std::make_unique<PlainStrategy>(env_.model, env_.pad_id, env_.prefixes);
  if (m == "acd") return std::make_unique<AcdStrategy>(env_, config_.acd, sp_, ap_);
  if (m == "safedecoding") return std::make_unique<SafeDecodingStrategy>(env_, config_.safedecoding, adapter_);
  if (m == "ngsd")
    return std::make_unique<NgsdStrategy>(env_, config_.ngsd, expert_, expert_render_,
                                          make_risk_estimator(config_.ngsd, env_));
  if (m == "steer") return std::make_unique<SteerStrategy>(env_, env_.steering);
  check_method_name(m);
  fail("method '", m, "' is registered but has no factory");
}

std::string MethodFactory::describe() const {
  const auto& m = config_.method;
  std::string s = m;
  if (!config_.prefix_cache) s += " [prefix cache off]";
  if (m == "acd")
    s += " (alpha " + std::to_string(config_.acd.alpha) + ", prompts " + config_.acd.prompts + ", variant " +
         config_.acd.variant + ")";
  if (m == "safedecoding")
    s += " (expert " + config_.safedecoding.expert + ", m " + std::to_string(config_.safedecoding.m) + ", alpha " +
         std::to_string(config_.safedecoding.alpha) + ", c " + std::to_string(config_.safedecoding.c) + ")";
  if (m == "ngsd")
    s += " (expert " + config_.ngsd.expert + " with " + std::to_string(expert_->config().n_layers) +
         " layers" + (config_.ngsd.expert == "system_prompt" ? " = the target with a safety system prompt" : "") +
         ", risk " +
         config_.ngsd.risk + (config_.ngsd.risk == "fixed" ? " alpha " + std::to_string(config_.ngsd.alpha) : "") + ")";
  if (m == "steer") s += " (ICV alpha " + std::to_string(config_.steer.alpha) + ", form " + config_.steer.form + ")";
  else if (env_.steering) s += " + steer (ICV alpha " + std::to_string(m == "acd" ? config_.acd.steer.alpha : config_.ngsd.steer.alpha) + ")";
  return s;
}

}  // namespace safedec
