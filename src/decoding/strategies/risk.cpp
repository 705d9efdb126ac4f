// NGSD step A (methods.md 1): risk level from self-reflection JSON or a single-neuron probe, and the
// mapping from risk to the mixing strength alpha.
#include "decoding/strategies/risk.h"

#include "artifacts/typed.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>

#include "core/error.h"
#include "decoding/generator.h"
#include "decoding/plain_strategy.h"

namespace safedec {

namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The first balanced {...} in text that parses as a JSON object.
bool first_json_object(const std::string& text, nlohmann::json& out) {
  for (size_t start = text.find('{'); start != std::string::npos; start = text.find('{', start + 1)) {
    int depth = 0;
    bool in_str = false, esc = false;
    for (size_t i = start; i < text.size(); ++i) {
      const char c = text[i];
      if (in_str) {
        if (esc) esc = false;
        else if (c == '\\') esc = true;
        else if (c == '"') in_str = false;
        continue;
      }
      if (c == '"') in_str = true;
      else if (c == '{') ++depth;
      else if (c == '}' && --depth == 0) {
        try {
          out = nlohmann::json::parse(text.substr(start, i - start + 1));
          if (out.is_object()) return true;
        } catch (const nlohmann::json::exception&) {
        }
        break;
      }
    }
  }
  return false;
}

}  // namespace

RiskScores parse_risk_json(const std::string& text) {
  RiskScores r;
  nlohmann::json j;
  if (!first_json_object(text, j)) return r;  // parse failure: every score stays 7
  r.parsed = true;
  auto read = [&](const char* short_key, const char* long_key) -> int {
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string k = lower(it.key());
      if (k != lower(short_key) && k != long_key) continue;
      const auto& v = it.value();
      double x;
      if (v.is_number()) {
        x = v.get<double>();
      } else if (v.is_string()) {
        try {
          size_t used = 0;
          x = std::stod(v.get<std::string>(), &used);
        } catch (const std::exception&) {
          return 7;  // not a number: counts as missing
        }
      } else {
        return 7;
      }
      if (!std::isfinite(x)) return 7;
      return static_cast<int>(std::clamp(std::lround(x), 0L, 10L));
    }
    return 7;  // missing key
  };
  r.s = read("S", "severity");
  r.a = read("A", "actionability");
  r.e = read("E", "evasion");
  r.t = read("T", "targeting");
  return r;
}

int risk_from_scores(RiskScores sc, size_t prompt_chars) {
  int s = sc.s, a = sc.a, e = sc.e, t = sc.t;
  if (prompt_chars > 2000) {  // long prompts are suspicious (jailbreak wrappers): +2 each, capped at 10
    s = std::min(10, s + 2);
    a = std::min(10, a + 2);
    e = std::min(10, e + 2);
    t = std::min(10, t + 2);
  }
  if (s == 0 && a == 0 && e == 0 && t == 0) s = 1;
  for (int x : {a, e, t})
    if (x >= 8 && s >= 5) return x;
  std::vector<int> p = {a, e, t};
  std::sort(p.rbegin(), p.rend());
  const double r = std::max(static_cast<double>(s), 0.5 * s + 0.25 * (p[0] + p[1]));
  return static_cast<int>(std::clamp(r, 0.0, 10.0));  // int() truncates toward zero as in Python
}

double alpha_from_risk(double risk) {
  if (risk > 6) return 0.9;
  if (risk < 5) return 0.1;
  return 0.5;
}

std::string self_reflection_prompt(const std::string& user) {
  return "You are a safety reviewer. Rate the user request below for risk. Reply with only a JSON object with four "
         "integers from 0 to 10: {\"S\": severity of possible harm, \"A\": actionability (how directly it enables "
         "harm), \"E\": evasion (attempts to hide intent or bypass rules), \"T\": targeting (harm aimed at specific "
         "people or groups)}.\n\nUser request:\n\"\"\"\n" +
         user + "\n\"\"\"";
}

std::vector<RiskEstimate> FixedRisk::estimate(const std::vector<StrategyPrompt>& prompts, const torch::Tensor&) {
  return std::vector<RiskEstimate>(prompts.size(), RiskEstimate{-1.0, alpha_});
}

SelfReflectionRisk::SelfReflectionRisk(StrategyEnv env, int64_t max_new_tokens)
    : env_(std::move(env)), max_new_tokens_(max_new_tokens) {
  SAFEDEC_CHECK(env_.render && env_.tokenizer,
                "ngsd: `risk: self_reflection` needs the target's tokenizer and chat template");
}

std::vector<RiskEstimate> SelfReflectionRisk::estimate(const std::vector<StrategyPrompt>& prompts,
                                                       const torch::Tensor&) {
  std::vector<StrategyPrompt> asks;
  for (const auto& p : prompts) {
    // The question replaces the final user turn; earlier turns (p.history) stay before it, so the
    // model rates the last request in the context of the conversation.
    StrategyPrompt q = p;
    q.user = self_reflection_prompt(p.user);
    asks.push_back(env_.render(q, std::nullopt));
  }
  GenerationOptions opt;
  opt.max_new_tokens = max_new_tokens_;  // greedy (temperature 0)
  opt.eos_ids = env_.eos_ids;
  auto tok = env_.tokenizer;
  opt.detokenize = [tok](const std::vector<int32_t>& ids) { return tok->decode(ids, /*skip_special=*/true); };
  Generator gen(opt);
  PlainStrategy plain(env_.model, env_.pad_id);
  auto results = gen.run(plain, asks);
  answers_.clear();
  std::vector<RiskEstimate> out;
  for (size_t i = 0; i < prompts.size(); ++i) {
    answers_.push_back(results[i].text);
    const int r = risk_from_scores(parse_risk_json(results[i].text), prompts[i].user.size());
    out.push_back({static_cast<double>(r), alpha_from_risk(r)});
  }
  return out;
}

torch::Tensor probe_features(const CausalLM& model, const std::vector<StrategyPrompt>& prompts,
                             const ProbeFeatureSpec& spec, int64_t pad_id, int64_t batch) {
  const ModelConfig& c = model.config();
  SAFEDEC_CHECK(spec.layer >= -1 && spec.layer < c.n_layers, "risk probe features: layer ", spec.layer,
                " is not in [-1, ", c.n_layers, ") for ", c.name);
  const auto& poolings = risk_probe_poolings();
  SAFEDEC_CHECK(std::find(poolings.begin(), poolings.end(), spec.pooling) != poolings.end(),
                "risk probe features: unknown pooling '", spec.pooling, "'; known: last, user_mean");
  SAFEDEC_CHECK(spec.window >= 1, "risk probe features: the pooling window must be >= 1 token, got ", spec.window);
  SAFEDEC_CHECK(batch >= 1, "risk probe features: batch must be >= 1, got ", batch);
  torch::InferenceMode guard;
  const int64_t n = static_cast<int64_t>(prompts.size());
  for (const auto& p : prompts) {
    SAFEDEC_CHECK(!p.ids.empty(), "risk probe features: prompt '", p.id, "' has no tokens");
    SAFEDEC_CHECK(spec.pooling != "user_mean" ||
                      (p.user_end >= 1 && p.user_end <= static_cast<int64_t>(p.ids.size())),
                  "risk probe features: pooling user_mean needs the end of the user text in prompt '", p.id,
                  "', which its rendering does not mark (user_end ", p.user_end, ")");
  }
  // Length order, so that a forward holds prompts of similar length (less padding).
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return prompts[a].ids.size() < prompts[b].ids.size(); });
  torch::Tensor out = torch::empty({n, c.hidden_size}, torch::kFloat32);
  const int64_t last_layer = spec.layer == -1 ? c.n_layers - 1 : spec.layer;
  for (int64_t lo = 0; lo < n; lo += batch) {
    const int64_t hi = std::min(n, lo + batch);
    int64_t T = 0;
    for (int64_t k = lo; k < hi; ++k) T = std::max<int64_t>(T, static_cast<int64_t>(prompts[order[k]].ids.size()));
    torch::Tensor ids = torch::full({hi - lo, T}, pad_id, torch::kInt64);
    auto acc = ids.accessor<int64_t, 2>();
    for (int64_t k = lo; k < hi; ++k) {
      const auto& p = prompts[order[k]].ids;
      for (size_t t = 0; t < p.size(); ++t) acc[k - lo][static_cast<int64_t>(t)] = p[t];
    }
    ForwardInput in;
    in.ids = ids.to(model.device());
    // Right padding without a cache: causality keeps every real token from seeing the pads after it.
    torch::Tensor h = model.input_hidden(in);
    const LayerPass pass = model.begin_pass(in, hi - lo, T, nullptr);
    for (int64_t l = 0; l <= last_layer; ++l) h = model.run_layer(l, h, pass);
    if (spec.layer == -1) h = model.final_hidden(h);
    h = h.to(torch::kCPU, torch::kFloat32);
    for (int64_t k = lo; k < hi; ++k) {
      const StrategyPrompt& p = prompts[order[k]];
      const int64_t len = static_cast<int64_t>(p.ids.size());
      if (spec.pooling == "last") {
        out[order[k]].copy_(h[k - lo][len - 1]);
      } else {
        const int64_t begin = std::max<int64_t>(0, p.user_end - spec.window);
        out[order[k]].copy_(h[k - lo].narrow(0, begin, p.user_end - begin).mean(0));
      }
    }
  }
  SAFEDEC_CHECK(torch::isfinite(out).all().item<bool>(), "risk probe features: the model produced NaN/Inf hidden ",
                "states (layer ", spec.layer, ")");
  return out;
}

ProbeRisk::ProbeRisk(torch::Tensor weight, torch::Tensor bias, ProbeFeatureSpec spec,
                     std::shared_ptr<const CausalLM> model, int64_t pad_id)
    : weight_(weight.to(torch::kFloat32).reshape({-1})),
      bias_(bias.to(torch::kFloat32).reshape({-1})),
      spec_(std::move(spec)),
      model_(std::move(model)),
      pad_id_(pad_id) {
  SAFEDEC_CHECK(bias_.numel() == 1, "the risk probe's bias must hold one value, got ", bias_.numel());
  SAFEDEC_CHECK(spec_.reads_prefill() || model_, "a risk probe on layer ", spec_.layer, " with pooling '",
                spec_.pooling, "' needs the target model to compute its features");
}

std::unique_ptr<ProbeRisk> ProbeRisk::load(const std::string& path, const StrategyEnv& env) {
  RiskProbe p = load_risk_probe(path, env.model->config());
  return std::make_unique<ProbeRisk>(p.weight, p.bias, ProbeFeatureSpec{p.layer, p.pooling, p.window}, env.model,
                                     env.pad_id);
}

std::vector<RiskEstimate> ProbeRisk::estimate(const std::vector<StrategyPrompt>& prompts,
                                              const torch::Tensor& last_hidden) {
  torch::Tensor h;
  if (spec_.reads_prefill()) {
    SAFEDEC_CHECK(last_hidden.defined() && last_hidden.dim() == 2 && last_hidden.size(1) == weight_.numel(),
                  "the risk probe needs hidden states [B, ", weight_.numel(), "]");
    h = last_hidden.to(torch::kFloat32).to(torch::kCPU);
  } else {
    h = probe_features(*model_, prompts, spec_, pad_id_);
  }
  SAFEDEC_CHECK(h.size(1) == weight_.numel(), "the risk probe has ", weight_.numel(),
                " weights but the features have ", h.size(1), " values");
  auto p = torch::sigmoid(h.matmul(weight_) + bias_);  // [B]
  std::vector<RiskEstimate> out;
  for (int64_t i = 0; i < p.size(0); ++i) {
    const double r = 10.0 * p[i].item<double>();
    out.push_back({r, alpha_from_risk(r)});
  }
  SAFEDEC_ASSERT(out.size() == prompts.size(), "probe: one estimate per prompt");
  return out;
}

std::unique_ptr<RiskEstimator> make_risk_estimator(const NgsdConfig& config, const StrategyEnv& env) {
  if (config.risk == "fixed") return std::make_unique<FixedRisk>(config.alpha);
  if (config.risk == "self_reflection") return std::make_unique<SelfReflectionRisk>(env, config.reflection_max_tokens);
  if (config.risk == "probe") return ProbeRisk::load(config.probe, env);
  fail("ngsd: unknown risk estimator '", config.risk, "'; known: fixed, self_reflection, probe");
}

}  // namespace safedec
