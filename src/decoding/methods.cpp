// The method table (see methods.h): plain, safedecoding, ngsd, acd, steer.
#include "decoding/methods.h"

#include <algorithm>
#include <sstream>

#include "artifacts/typed.h"
#include "core/error.h"
#include "decoding/plain_strategy.h"
#include "decoding/strategies/acd.h"
#include "decoding/strategies/ngsd.h"
#include "decoding/strategies/risk.h"
#include "decoding/strategies/safedecoding.h"
#include "decoding/strategies/steer.h"
#include "decoding/strategy_registry.h"

namespace safedec {

namespace {

std::string num(double x) {
  std::ostringstream s;
  s << x;
  return s.str();
}

SteerConfig parse_steer(const YAML::Node& node, const std::string& where, bool enabled_default) {
  SteerConfig s;
  s.enabled = enabled_default;
  YamlKeys r(node, where, "`steer`", /*optional=*/true);
  r.read("enabled", s.enabled);
  r.read("icv", s.icv);
  r.read("alpha", s.alpha);
  r.read("form", s.form);
  r.finish();
  if (node && node.IsMap() && !node["enabled"]) s.enabled = true;  // a present sub-config turns steering on
  return s;
}

void dump_steer(YAML::Emitter& e, const SteerConfig& s) {
  e << YAML::Key << "steer" << YAML::Value << YAML::BeginMap << YAML::Key << "enabled" << YAML::Value << s.enabled
    << YAML::Key << "icv" << YAML::Value << s.icv << YAML::Key << "alpha" << YAML::Value << s.alpha << YAML::Key
    << "form" << YAML::Value << s.form << YAML::EndMap;
}

void add_steer_artifact(std::vector<MethodArtifactRef>& out, const SteerConfig& s) {
  if (s.enabled) out.push_back({"steer.icv", s.icv});
}

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

// ---- plain ----
class PlainInstance : public MethodInstance {
 public:
  std::unique_ptr<Strategy> make(const StrategyEnv& env) const override {
    return std::make_unique<PlainStrategy>(env.model, env.pad_id, env.prefixes);
  }
};

MethodDescriptor plain_method() {
  MethodDescriptor d;
  d.name = "plain";
  d.summary = "the target alone (greedy or sampled)";
  d.parse = [](YamlKeys&, MethodConfig&, const std::string&) {};
  d.dump = [](YAML::Emitter&, const MethodConfig&) {};
  d.artifacts = [](const MethodConfig&) { return std::vector<MethodArtifactRef>{}; };
  d.models = [](const MethodConfig&) { return std::vector<std::string>{}; };
  d.steering = [](const MethodConfig&) -> const SteerConfig* { return nullptr; };
  d.describe = [](const MethodConfig&) { return std::string(); };
  d.instantiate = [](const MethodConfig&, const ModelBundle&) { return std::make_unique<PlainInstance>(); };
  d.prompted_expert = [](const MethodConfig&) { return std::optional<std::string>(); };
  return d;
}

// ---- SafeDecoding ----
class SafeDecodingInstance : public MethodInstance {
 public:
  SafeDecodingInstance(const MethodConfig& c, const ModelBundle& target) : config_(c.safedecoding) {
    if (config_.expert == "lora") adapter_ = load_lora_adapter(config_.adapter, target.model->config());
  }
  std::unique_ptr<Strategy> make(const StrategyEnv& env) const override {
    return std::make_unique<SafeDecodingStrategy>(env, config_, adapter_);
  }

 private:
  SafeDecodingConfig config_;
  std::shared_ptr<const LoraAdapter> adapter_;
};

MethodDescriptor safedecoding_method() {
  MethodDescriptor d;
  d.name = "safedecoding";
  d.summary = "SafeDecoding: target + expert rows mixed over their top-k intersection for the first m tokens";
  d.parse = [](YamlKeys& r, MethodConfig& c, const std::string&) {
    auto& s = c.safedecoding;
    r.read("expert", s.expert);
    r.read("adapter", s.adapter);
    r.read("expert_system", s.expert_system);
    r.read("m", s.m);
    r.read("alpha", s.alpha);
    r.read("c", s.c);
    s.validate();
  };
  d.dump = [](YAML::Emitter& e, const MethodConfig& c) {
    const auto& s = c.safedecoding;
    e << YAML::Key << "expert" << YAML::Value << s.expert << YAML::Key << "adapter" << YAML::Value << s.adapter
      << YAML::Key << "expert_system" << YAML::Value << s.expert_system << YAML::Key << "m" << YAML::Value << s.m
      << YAML::Key << "alpha" << YAML::Value << s.alpha << YAML::Key << "c" << YAML::Value << s.c;
  };
  d.artifacts = [](const MethodConfig& c) {
    std::vector<MethodArtifactRef> a;
    if (c.safedecoding.expert == "lora") a.push_back({"adapter", c.safedecoding.adapter});
    return a;
  };
  d.models = [](const MethodConfig&) { return std::vector<std::string>{}; };
  d.steering = [](const MethodConfig&) -> const SteerConfig* { return nullptr; };
  d.describe = [](const MethodConfig& c) {
    const auto& s = c.safedecoding;
    return "expert " + s.expert + (s.expert == "lora" ? " " + s.adapter : std::string()) + ", m " +
           std::to_string(s.m) + ", alpha " + num(s.alpha) + ", c " + std::to_string(s.c);
  };
  d.instantiate = [](const MethodConfig& c, const ModelBundle& t) {
    return std::make_unique<SafeDecodingInstance>(c, t);
  };
  d.prompted_expert = [](const MethodConfig& c) {
    return c.safedecoding.expert == "system_prompt" ? std::optional<std::string>(c.safedecoding.expert_system)
                                                    : std::nullopt;
  };
  return d;
}

// ---- NGSD ----
class NgsdInstance : public MethodInstance {
 public:
  NgsdInstance(const MethodConfig& c, const ModelBundle& target) : config_(c.ngsd) {
    const auto& mc = target.model->config();
    if (!config_.gate.empty()) {
      // A calibrated gate replaces the hand-set LIF parameters.
      const GateCalibration g = load_gate_calibration(config_.gate, mc);
      config_.tau = g.tau;
      config_.theta = g.theta;
      config_.reset = g.reset;
    }
    const auto& n = config_;
    if (n.expert == "system_prompt") {
      // The target itself, prompted to be safe: same weights, its own rows and KV cache.
      expert_ = target.model;
      const ModelBundle* b = &target;
      const std::string sys = n.expert_system;
      render_ = [b, sys](const StrategyPrompt& base, const std::optional<std::string>&) {
        return b->rerender(base, sys);
      };
    } else if (n.expert == "self_truncated") {
      const int64_t k = n.expert_layers > 0 ? n.expert_layers : std::max<int64_t>(1, mc.n_layers / 3);
      SAFEDEC_CHECK(k <= mc.n_layers, "ngsd: `expert_layers` is ", k, " but the target has only ", mc.n_layers,
                    " layers");
      expert_ = target.model->truncated(k);  // same tokenizer and template: the target's rendering
    } else if (n.expert == "lora") {
      // The target + the trained adapter on the expert rows; same tokenizer and rendering.
      expert_ = target.model;
      lora_ = load_lora_adapter(n.expert_adapter, mc);
    } else {
      const bool trained = n.expert == "trained";
      const std::string base = trained ? expert_base_model(n.expert_weights) : n.expert_model;
      LoadOptions lo;
      lo.device = target.model->device();
      if (trained) lo.max_layers = expert_layers(n.expert_weights);
      bundle_ = std::make_shared<ModelBundle>(load_model_bundle(base, lo));
      if (trained) load_expert_weights_into(*bundle_->model, n.expert_weights);
      check_same_vocabulary(*target.tokenizer, *bundle_->tokenizer, base);
      SAFEDEC_CHECK(bundle_->model->config().vocab_size == mc.vocab_size, "ngsd: the expert ", base, " has ",
                    bundle_->model->config().vocab_size, " output logits but the target has ", mc.vocab_size);
      expert_ = bundle_->model;
      render_ = bundle_renderer(*bundle_);
    }
  }
  std::unique_ptr<Strategy> make(const StrategyEnv& env) const override {
    return std::make_unique<NgsdStrategy>(env, config_, expert_, render_, make_risk_estimator(config_, env), lora_);
  }
  std::string describe() const override {
    std::string s = "expert " + config_.expert + " with " + std::to_string(expert_->config().n_layers) + " layers";
    if (config_.expert == "system_prompt") s += " = the target with a safety system prompt";
    if (config_.expert == "lora") s += " = the target + LoRA " + config_.expert_adapter;
    if (config_.expert == "trained") s += " from " + config_.expert_weights;
    s += ", LIF tau " + num(config_.tau) + " theta " + num(config_.theta) + " reset " + num(config_.reset);
    if (!config_.gate.empty()) s += " (gate " + config_.gate + ")";
    s += ", risk " + config_.risk + (config_.risk == "fixed" ? " alpha " + num(config_.alpha) : "");
    if (config_.risk == "probe") s += " " + config_.probe;
    return s;
  }

 private:
  NgsdConfig config_;
  std::shared_ptr<const CausalLM> expert_;
  PromptRenderer render_;
  std::shared_ptr<const LoraAdapter> lora_;
  std::shared_ptr<ModelBundle> bundle_;
};

MethodDescriptor ngsd_method() {
  MethodDescriptor d;
  d.name = "ngsd";
  d.summary = "NGSD: a LIF neuron on TV(target, expert) gates mixing in a safety expert, strength from a risk estimate";
  d.parse = [](YamlKeys& r, MethodConfig& c, const std::string& where) {
    auto& n = c.ngsd;
    r.read("expert", n.expert);
    r.read("expert_model", n.expert_model);
    r.read("expert_adapter", n.expert_adapter);
    r.read("expert_weights", n.expert_weights);
    r.read("gate", n.gate);
    r.read("expert_system", n.expert_system);
    r.read("expert_layers", n.expert_layers);
    r.read("tau", n.tau);
    r.read("theta", n.theta);
    r.read("reset", n.reset);
    r.read("top_k", n.top_k);
    r.read("risk", n.risk);
    r.read("alpha", n.alpha);
    r.read("probe", n.probe);
    r.read("reflection_max_tokens", n.reflection_max_tokens);
    r.read("early_stop", n.early_stop);
    n.steer = parse_steer(r.get("steer"), where, false);
    n.validate();
  };
  d.dump = [](YAML::Emitter& e, const MethodConfig& c) {
    const auto& n = c.ngsd;
    e << YAML::Key << "expert" << YAML::Value << n.expert << YAML::Key << "expert_model" << YAML::Value
      << n.expert_model << YAML::Key << "expert_adapter" << YAML::Value << n.expert_adapter << YAML::Key
      << "expert_weights" << YAML::Value << n.expert_weights << YAML::Key << "gate" << YAML::Value << n.gate
      << YAML::Key << "expert_system" << YAML::Value << n.expert_system << YAML::Key << "expert_layers"
      << YAML::Value << n.expert_layers << YAML::Key << "tau" << YAML::Value << n.tau << YAML::Key << "theta"
      << YAML::Value << n.theta << YAML::Key << "reset" << YAML::Value << n.reset << YAML::Key << "top_k"
      << YAML::Value << n.top_k << YAML::Key << "risk" << YAML::Value << n.risk << YAML::Key << "alpha"
      << YAML::Value << n.alpha << YAML::Key << "probe" << YAML::Value << n.probe << YAML::Key
      << "reflection_max_tokens" << YAML::Value << n.reflection_max_tokens << YAML::Key << "early_stop"
      << YAML::Value << n.early_stop;
    dump_steer(e, n.steer);
  };
  d.artifacts = [](const MethodConfig& c) {
    std::vector<MethodArtifactRef> a;
    const auto& n = c.ngsd;
    if (n.risk == "probe") a.push_back({"probe", n.probe});
    if (n.expert == "lora") a.push_back({"expert_adapter", n.expert_adapter});
    if (n.expert == "trained") a.push_back({"expert_weights", n.expert_weights});
    if (!n.gate.empty()) a.push_back({"gate", n.gate});
    add_steer_artifact(a, n.steer);
    return a;
  };
  d.models = [](const MethodConfig& c) {
    return c.ngsd.expert == "model" ? std::vector<std::string>{c.ngsd.expert_model} : std::vector<std::string>{};
  };
  d.steering = [](const MethodConfig& c) -> const SteerConfig* { return &c.ngsd.steer; };
  d.describe = [](const MethodConfig&) { return std::string(); };  // the instance describes what it loaded
  d.instantiate = [](const MethodConfig& c, const ModelBundle& t) { return std::make_unique<NgsdInstance>(c, t); };
  d.gate_trace = true;
  d.prompted_expert = [](const MethodConfig& c) {
    return c.ngsd.expert == "system_prompt" ? std::optional<std::string>(c.ngsd.expert_system) : std::nullopt;
  };
  return d;
}

// ---- ACD ----
class AcdInstance : public MethodInstance {
 public:
  AcdInstance(const MethodConfig& c, const ModelBundle& target) : config_(c.acd) {
    if (config_.prompts == "soft") {
      const SoftPrompts p = load_soft_prompts(config_.soft_prompts, target.model->config());
      sp_ = p.sp;
      ap_ = p.ap;
    }
  }
  std::unique_ptr<Strategy> make(const StrategyEnv& env) const override {
    return std::make_unique<AcdStrategy>(env, config_, sp_, ap_);
  }

 private:
  AcdConfig config_;
  torch::Tensor sp_, ap_;
};

MethodDescriptor acd_method() {
  MethodDescriptor d;
  d.name = "acd";
  d.summary = "ACD: l_SP - alpha * l_AP over a safeguarding and an adversarial system prompt";
  d.parse = [](YamlKeys& r, MethodConfig& c, const std::string& where) {
    auto& a = c.acd;
    r.read("alpha", a.alpha);
    r.read("prompts", a.prompts);
    r.read("variant", a.variant);
    r.read("safe_prompt", a.safe_prompt);
    r.read("opposite_prompt", a.opposite_prompt);
    r.read("soft_prompts", a.soft_prompts);
    if (a.prompts == "trained") a.prompts = "soft";  // trained soft prompts (safedec train acd_prompts)
    a.steer = parse_steer(r.get("steer"), where, false);
    a.validate();
  };
  d.dump = [](YAML::Emitter& e, const MethodConfig& c) {
    const auto& a = c.acd;
    e << YAML::Key << "alpha" << YAML::Value << a.alpha << YAML::Key << "prompts" << YAML::Value << a.prompts
      << YAML::Key << "variant" << YAML::Value << a.variant << YAML::Key << "safe_prompt" << YAML::Value
      << a.safe_prompt << YAML::Key << "opposite_prompt" << YAML::Value << a.opposite_prompt << YAML::Key
      << "soft_prompts" << YAML::Value << a.soft_prompts;
    dump_steer(e, a.steer);
  };
  d.artifacts = [](const MethodConfig& c) {
    std::vector<MethodArtifactRef> a;
    if (c.acd.prompts == "soft") a.push_back({"soft_prompts", c.acd.soft_prompts});
    add_steer_artifact(a, c.acd.steer);
    return a;
  };
  d.models = [](const MethodConfig&) { return std::vector<std::string>{}; };
  d.steering = [](const MethodConfig& c) -> const SteerConfig* { return &c.acd.steer; };
  d.describe = [](const MethodConfig& c) {
    return "alpha " + num(c.acd.alpha) + ", prompts " + c.acd.prompts + ", variant " + c.acd.variant;
  };
  d.instantiate = [](const MethodConfig& c, const ModelBundle& t) { return std::make_unique<AcdInstance>(c, t); };
  d.prompted_expert = [](const MethodConfig&) { return std::optional<std::string>(); };
  return d;
}

// ---- Safe-Align ICV steering ----
class SteerInstance : public MethodInstance {
 public:
  std::unique_ptr<Strategy> make(const StrategyEnv& env) const override {
    return std::make_unique<SteerStrategy>(env, env.steering);
  }
};

MethodDescriptor steer_method() {
  MethodDescriptor d;
  d.name = "steer";
  d.summary = "Safe-Align: every layer's MLP output steered away from an in-context safety vector";
  d.parse = [](YamlKeys& r, MethodConfig& c, const std::string&) {
    r.allow("enabled");
    c.steer.enabled = true;
    r.read("icv", c.steer.icv);
    r.read("alpha", c.steer.alpha);
    r.read("form", c.steer.form);
    c.steer.validate("steer");
  };
  d.dump = [](YAML::Emitter& e, const MethodConfig& c) {
    e << YAML::Key << "icv" << YAML::Value << c.steer.icv << YAML::Key << "alpha" << YAML::Value << c.steer.alpha
      << YAML::Key << "form" << YAML::Value << c.steer.form;
  };
  d.artifacts = [](const MethodConfig& c) { return std::vector<MethodArtifactRef>{{"icv", c.steer.icv}}; };
  d.models = [](const MethodConfig&) { return std::vector<std::string>{}; };
  d.steering = [](const MethodConfig& c) -> const SteerConfig* { return &c.steer; };
  d.describe = [](const MethodConfig& c) { return "ICV alpha " + num(c.steer.alpha) + ", form " + c.steer.form; };
  d.instantiate = [](const MethodConfig&, const ModelBundle&) { return std::make_unique<SteerInstance>(); };
  d.prompted_expert = [](const MethodConfig&) { return std::optional<std::string>(); };
  d.steering_is_method = true;
  return d;
}

}  // namespace

const std::vector<MethodDescriptor>& method_table() {
  static const std::vector<MethodDescriptor> table = {plain_method(), safedecoding_method(), ngsd_method(),
                                                      acd_method(), steer_method()};
  return table;
}

std::vector<std::string> known_methods() {
  std::vector<std::string> names;
  for (const auto& d : method_table()) names.push_back(d.name);
  return names;
}

const MethodDescriptor& method_descriptor(const std::string& name) {
  for (const auto& d : method_table())
    if (d.name == name) return d;
  std::string list;
  for (const auto& m : known_methods()) list += (list.empty() ? "" : ", ") + m;
  fail("unknown method '", name, "'; known methods: ", list);
}

void check_method_name(const std::string& name) { (void)method_descriptor(name); }

}  // namespace safedec
