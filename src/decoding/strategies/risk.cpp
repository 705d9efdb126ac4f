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

ProbeRisk::ProbeRisk(torch::Tensor weight, torch::Tensor bias)
    : weight_(weight.to(torch::kFloat32).reshape({-1})), bias_(bias.to(torch::kFloat32).reshape({-1})) {
  SAFEDEC_CHECK(bias_.numel() == 1, "the risk probe's bias must hold one value, got ", bias_.numel());
}

std::unique_ptr<ProbeRisk> ProbeRisk::load(const std::string& path, const ModelConfig& model) {
  RiskProbe p = load_risk_probe(path, model);
  SAFEDEC_CHECK(p.layer == -1, "the risk probe ", path, " reads layer ", p.layer,
                "; NGSD's probe estimator uses the final-normed hidden state (layer -1)");
  return std::make_unique<ProbeRisk>(p.weight, p.bias);
}

std::vector<RiskEstimate> ProbeRisk::estimate(const std::vector<StrategyPrompt>& prompts,
                                              const torch::Tensor& last_hidden) {
  SAFEDEC_CHECK(last_hidden.defined() && last_hidden.dim() == 2 && last_hidden.size(1) == weight_.numel(),
                "the risk probe needs hidden states [B, ", weight_.numel(), "]");
  auto h = last_hidden.to(torch::kFloat32).to(torch::kCPU);
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
  if (config.risk == "probe") return ProbeRisk::load(config.probe, env.model->config());
  fail("ngsd: unknown risk estimator '", config.risk, "'; known: fixed, self_reflection, probe");
}

}  // namespace safedec
