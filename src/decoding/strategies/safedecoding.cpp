// SafeDecoding: for the first m tokens, C = top_k(p_b) ∩ top_k(p_e) grown to c candidates and
// q = p_b + alpha (p_e - p_b) on C (safedecoding_mix); the returned scores are log q (-inf off C),
// so greedy picks argmax q and sampling draws from q renormalised over C. The expert is either the
// target with a safety system prompt in its rows (training-free variant) or the target + a LoRA
// adapter bound to the expert rows of the same batch. After m tokens the expert rows are dropped.
#include "decoding/strategies/safedecoding.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <regex>

#include "core/error.h"
#include "core/paths.h"
#include "decoding/plain_strategy.h"
#include "io/safetensors.h"
#include "kernels/ops.h"

namespace safedec {

std::shared_ptr<LoraAdapter> load_peft_adapter(const std::string& dir, const ModelConfig& model) {
  const std::string cfg_path = dir + "/adapter_config.json";
  std::ifstream in(cfg_path);
  SAFEDEC_CHECK(in.good(), "cannot open the PEFT adapter config ", cfg_path);
  nlohmann::json cfg;
  try {
    in >> cfg;
  } catch (const nlohmann::json::exception& e) {
    fail("the PEFT adapter config ", cfg_path, " is not valid JSON: ", e.what());
  }
  SAFEDEC_CHECK(cfg.contains("r") && cfg["r"].is_number_integer() && cfg["r"].get<int64_t>() >= 1, cfg_path,
                ": needs an integer rank `r` >= 1");
  LoraAdapter::Options opt;
  opt.rank = cfg["r"].get<int64_t>();
  opt.alpha = cfg.contains("lora_alpha") && cfg["lora_alpha"].is_number() ? cfg["lora_alpha"].get<double>()
                                                                          : static_cast<double>(opt.rank);
  // Factors are set one by one below (no random initialisation needed).
  auto adapter = std::make_shared<LoraAdapter>();
  const std::string weights = dir + "/adapter_model.safetensors";
  auto file = SafetensorsFile::open(weights);
  // base_model.model.model.layers.<l>.(self_attn|mlp).<name>.lora_(A|B).weight, or ...lm_head.lora_*
  const std::regex layer_re(R"(^base_model\.model\.model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$)");
  const std::regex head_re(R"(^base_model\.model\.lm_head\.lora_([AB])\.weight$)");
  std::map<std::pair<int64_t, int>, LoraFactors> found;
  const double scale = opt.alpha / static_cast<double>(opt.rank);
  for (const auto& t : file->tensors()) {
    std::smatch m;
    int64_t layer = -1;
    LinearKind kind = LinearKind::LmHead;
    std::string ab;
    if (std::regex_match(t.name, m, layer_re)) {
      layer = std::stoll(m[1].str());
      kind = linear_kind_from_name(m[2].str());
      ab = m[3].str();
      SAFEDEC_CHECK(layer < model.n_layers, weights, ": tensor ", t.name, " names layer ", layer, " but the model has ",
                    model.n_layers);
    } else if (std::regex_match(t.name, m, head_re)) {
      kind = LinearKind::LmHead;
      ab = m[1].str();
    } else {
      fail(weights, ": tensor '", t.name, "' is not a LoRA factor this loader understands (expected ",
           "base_model.model.model.layers.<l>.self_attn|mlp.<proj>.lora_A|B.weight)");
    }
    std::vector<float> data = safetensors_to_float32(t);
    torch::Tensor x = torch::from_blob(data.data(), t.shape, torch::kFloat32).clone();
    auto [out_f, in_f] = linear_shape(model, kind);
    auto& f = found[{layer, static_cast<int>(kind)}];
    f.scale = scale;
    if (ab == "A") {
      SAFEDEC_CHECK(x.dim() == 2 && x.size(0) == opt.rank && x.size(1) == in_f, weights, ": ", t.name, " must be [",
                    opt.rank, ", ", in_f, "], got ", x.sizes());
      f.a = x;
    } else {
      SAFEDEC_CHECK(x.dim() == 2 && x.size(0) == out_f && x.size(1) == opt.rank, weights, ": ", t.name, " must be [",
                    out_f, ", ", opt.rank, "], got ", x.sizes());
      f.b = x;
    }
  }
  SAFEDEC_CHECK(!found.empty(), weights, " holds no LoRA factors");
  for (auto& [key, f] : found) {
    SAFEDEC_CHECK(f.a.defined() && f.b.defined(), weights, ": layer ", key.first, " ",
                  linear_kind_name(static_cast<LinearKind>(key.second)), " has only one of lora_A / lora_B");
    adapter->set(key.first, static_cast<LinearKind>(key.second), f);
  }
  return adapter;
}

SafeDecodingStrategy::SafeDecodingStrategy(StrategyEnv env, SafeDecodingConfig config,
                                           std::shared_ptr<const LoraAdapter> adapter)
    : env_(std::move(env)), config_(std::move(config)), adapter_(std::move(adapter)) {
  config_.validate();
  SAFEDEC_CHECK(env_.model, "safedecoding: no target model given");
  SAFEDEC_CHECK(config_.expert != "lora" || adapter_, "safedecoding: `expert: lora` but no adapter was loaded");
}

const ForwardHooks* SafeDecodingStrategy::hooks() {
  // Without expert LoRA rows the hooks are the factory's (stable for its PrefixKvStore, which keys
  // prefixes by the hooks' address) or none.
  if (!(expert_on_ && adapter_)) return env_.steering ? env_.steering->hooks() : nullptr;
  hooks_ = env_.steering ? *env_.steering->hooks() : ForwardHooks{};
  {
    auto mask = torch::zeros({2 * rows_}, torch::kFloat32);
    mask.narrow(0, rows_, rows_).fill_(1.0f);
    hooks_.loras = {LoraBinding{adapter_, mask.to(env_.model->device())}};
  }
  return &hooks_;
}

void SafeDecodingStrategy::start(const std::vector<StrategyPrompt>& prompts, int64_t max_new_tokens) {
  traced_.start(prompts);
  rows_ = static_cast<int64_t>(prompts.size());
  fed_ = 0;
  expert_on_ = true;
  std::vector<BranchRow> rows;
  for (const auto& p : prompts) rows.push_back(prompt_row(p));
  for (const auto& p : prompts) {
    // LoRA expert (or token prompts in tests): the same rendering.
    rows.push_back(config_.expert == "system_prompt" && env_.render ? prompt_row(env_.render(p, config_.expert_system))
                                                                    : prompt_row(p));
  }
  // (A LoRA expert's hooks act on some rows only; prefill_rows then computes every prefix itself.)
  logits_ = prefill_rows(*env_.model, rows, max_new_tokens, env_.pad_id, cache_, hooks(), nullptr,
                         env_.prefixes.get());
}

torch::Tensor SafeDecodingStrategy::next_scores(int64_t step) {
  if (!expert_on_) {
    torch::Tensor scores = logits_.to(torch::kFloat32);
    if (env_.trace)
      for (int64_t r = 0; r < rows_; ++r)
        env_.trace({{"method", "safedecoding"}, {"id", traced_.ids()[r]}, {"step", step}, {"mixing", false}});
    return scores;
  }
  torch::Tensor l_b = logits_.narrow(0, 0, rows_).to(torch::kFloat32);
  torch::Tensor l_e = logits_.narrow(0, rows_, rows_).to(torch::kFloat32);
  SafeDecodingOutput out = safedecoding_mix(l_b, l_e, config_.c, config_.alpha, /*want_probs=*/true);
  if (env_.trace) {
    auto k = out.k.to(torch::kCPU);
    for (int64_t r = 0; r < rows_; ++r)
      env_.trace({{"method", "safedecoding"},
                  {"id", traced_.ids()[r]},
                  {"step", step},
                  {"mixing", true},
                  {"k", k[r].item<int64_t>()}});
  }
  // log q: the sampler and processors work on log-probabilities; tokens outside C get -inf.
  return out.probs.log();
}

void SafeDecodingStrategy::advance(const std::vector<int32_t>& tokens) {
  ++fed_;
  ++traced_.step;
  if (expert_on_ && fed_ >= config_.m) {
    // The mixing window is over: drop the expert rows, the base continues alone.
    std::vector<int64_t> base(rows_);
    for (int64_t r = 0; r < rows_; ++r) base[r] = r;
    keep_cache_rows(cache_, base);
    expert_on_ = false;
  }
  logits_ = step_rows(*env_.model, expert_on_ ? repeat_tokens(tokens, 2) : tokens, cache_, hooks());
}

void SafeDecodingStrategy::keep_rows(const std::vector<int64_t>& rows) {
  std::vector<int64_t> idx(rows);
  if (expert_on_)
    for (int64_t r : rows) idx.push_back(r + rows_);
  keep_cache_rows(cache_, idx);
  logits_ = logits_.index_select(0, index_tensor(idx).to(logits_.device()));
  rows_ = static_cast<int64_t>(rows.size());
  traced_.keep(rows);
}

}  // namespace safedec
