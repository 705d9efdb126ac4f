// NGSD decoding (methods.md 1, step B). Per step: I_t = TV(p_b, p_e); v = (1 - 1/tau) v + I_t; a
// spike (v >= theta) soft-resets v *= reset and mixes p_b + alpha (p_e - p_b) on the union of both
// top-64 sets (ngsd_step). The returned scores are log of the mixed score renormalised over the
// vocabulary (log p_b on rows that did not spike), so greedy decoding picks the reference's token and
// sampling draws from the renormalised score. v starts at 0 for every prompt. alpha per prompt comes
// from the risk estimator (step A). Optional early stop as in the reference, except that control
// characters such as "\n" do not trigger it (the reference's bug).
// Multi-turn chats: the target and the expert both render the whole conversation (system, earlier
// user/assistant turns, final user turn + generation prompt), the expert with its own template. The
// risk probe reads the final hidden state of the target rendering's last token, i.e. the generation
// prompt after the final user turn, so it sees the history as context; self-reflection asks about the
// final user turn with the history before it (risk.cpp).
#include "decoding/strategies/ngsd.h"

#include <algorithm>
#include <cctype>

#include "core/error.h"
#include "decoding/plain_strategy.h"
#include "kernels/ops.h"

namespace safedec {

const std::vector<std::string>& ngsd_refusal_phrases() {
  static const std::vector<std::string> phrases = {
      "i cannot", "i can't", "i can not", "i'm sorry", "i am sorry", "i apologize", "i'm unable", "i am unable",
      "i won't", "i will not", "as an ai", "i'm not able", "i am not able", "cannot fulfill", "cannot assist",
      "not appropriate"};
  return phrases;
}

NgsdStrategy::NgsdStrategy(StrategyEnv env, NgsdConfig config, std::shared_ptr<const CausalLM> expert,
                           PromptRenderer expert_render, std::unique_ptr<RiskEstimator> risk,
                           std::shared_ptr<const LoraAdapter> expert_lora)
    : env_(std::move(env)),
      config_(std::move(config)),
      expert_(std::move(expert)),
      expert_render_(std::move(expert_render)),
      risk_estimator_(std::move(risk)),
      expert_lora_(std::move(expert_lora)) {
  if (expert_lora_) expert_hooks_.loras = {LoraBinding{expert_lora_, torch::Tensor()}};
  config_.validate();
  SAFEDEC_CHECK(env_.model && expert_, "ngsd: needs a target and an expert model");
  SAFEDEC_CHECK(risk_estimator_, "ngsd: no risk estimator given");
  SAFEDEC_CHECK(expert_->config().vocab_size == env_.model->config().vocab_size, "ngsd: the expert's vocabulary (",
                expert_->config().vocab_size, " tokens) differs from the target's (", env_.model->config().vocab_size,
                "); NGSD mixes next-token probabilities, so both must share one vocabulary");
  SAFEDEC_CHECK(!config_.early_stop || (env_.tokenizer && !env_.eos_ids.empty()),
                "ngsd: `early_stop` needs the target's tokenizer and an end-of-sequence id");
}

const ForwardHooks* NgsdStrategy::joint_hooks(int64_t A) {
  if (!expert_lora_) return nullptr;
  auto mask = torch::zeros({2 * A}, torch::kFloat32);
  mask.narrow(0, A, A).fill_(1.0f);
  joint_hooks_.loras = {LoraBinding{expert_lora_, mask.to(env_.model->device())}};
  return &joint_hooks_;
}

void NgsdStrategy::start(const std::vector<StrategyPrompt>& prompts, int64_t max_new_tokens) {
  traced_.start(prompts);
  const int64_t B = static_cast<int64_t>(prompts.size());
  std::vector<BranchRow> target_rows, expert_rows;
  for (const auto& p : prompts) {
    target_rows.push_back(prompt_row(p));
    expert_rows.push_back(
        expert_render_ ? prompt_row(expert_render_(p, p.has_system ? std::optional<std::string>(p.system) : std::nullopt))
                       : prompt_row(p));
  }
  const ForwardHooks* hooks = env_.steering ? env_.steering->hooks() : nullptr;
  torch::Tensor hidden;
  // Steering applies to the target branch only, so a shared forward needs it off.
  joint_ = expert_.get() == env_.model.get() && hooks == nullptr;
  if (joint_) {
    std::vector<BranchRow> rows = target_rows;
    rows.insert(rows.end(), expert_rows.begin(), expert_rows.end());
    torch::Tensor l = prefill_rows(*env_.model, rows, max_new_tokens, env_.pad_id, cache_b_, joint_hooks(B),
                                   risk_estimator_->needs_hidden() ? &hidden : nullptr, env_.prefixes.get());
    l_b_ = l.narrow(0, 0, B);
    l_e_ = l.narrow(0, B, B);
    if (hidden.defined()) hidden = hidden.narrow(0, 0, B);
  } else {
    l_b_ = prefill_rows(*env_.model, target_rows, max_new_tokens, env_.pad_id, cache_b_, hooks,
                        risk_estimator_->needs_hidden() ? &hidden : nullptr, env_.prefixes.get());
    l_e_ = prefill_rows(*expert_, expert_rows, max_new_tokens, env_.pad_id, cache_e_,
                        expert_lora_ ? &expert_hooks_ : nullptr, nullptr, env_.prefixes.get());
  }
  // Step A after the prefill (the probe reads the prompt's last hidden state).
  auto est = risk_estimator_->estimate(prompts, hidden);
  std::vector<float> a;
  risk_.clear();
  for (const auto& e : est) {
    a.push_back(static_cast<float>(e.alpha));
    risk_.push_back(e.risk);
  }
  alpha_ = torch::tensor(a, torch::kFloat32).to(l_b_.device());
  v_ = torch::zeros({B}, torch::TensorOptions().dtype(torch::kFloat32).device(l_b_.device()));
  generated_.assign(B, {});
  stop_limit_.assign(B, -1);
  spikes_ = gated_tokens_ = 0;
}

bool ngsd_early_stop(const std::vector<int32_t>& gen,
                     const std::function<std::string(const std::vector<int32_t>&)>& decode, int64_t& limit) {
  const int64_t n = static_cast<int64_t>(gen.size());
  if (limit < 0) {
    // From 128 to 256 generated tokens, every 7 tokens, look for a refusal in the last 64 tokens.
    if (n >= 128 && n <= 256 && (n - 128) % 7 == 0) {
      std::string tail = decode(std::vector<int32_t>(gen.end() - 64, gen.end()));
      for (auto& c : tail) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      for (const auto& phrase : ngsd_refusal_phrases())
        if (tail.find(phrase) != std::string::npos) {
          limit = n + 128;
          break;
        }
    }
    return false;
  }
  if (n >= limit) return true;
  // Stop right after a token that decodes exactly to ".", "!" or "?" (not on "\n": the reference bug).
  const std::string last = decode({gen.back()});
  return last == "." || last == "!" || last == "?";
}

torch::Tensor NgsdStrategy::next_scores(int64_t step) {
  NgsdGateParams gate;
  gate.tau = static_cast<float>(config_.tau);
  gate.theta = static_cast<float>(config_.theta);
  gate.reset = static_cast<float>(config_.reset);
  gate.top_k = config_.top_k;
  NgsdStepOutput out =
      ngsd_step(l_b_.to(torch::kFloat32), l_e_.to(torch::kFloat32), alpha_, v_, gate, /*want_probs=*/true);
  // log of the renormalised score: the generator's argmax equals the kernel's choice (both take the
  // lowest index on ties) and sampling draws from the renormalised score.
  torch::Tensor scores = config_.follow_target ? torch::log_softmax(l_b_.to(torch::kFloat32), -1) : out.probs.log();
  auto spike = out.spike.to(torch::kCPU);
  const int64_t A = scores.size(0);
  spikes_ += spike.sum().item<int64_t>();
  gated_tokens_ += A;
  if (env_.trace) {
    // flip: whether mixing at this row's alpha would change the greedy token if the gate fired here
    // (the same kernel with a threshold every potential reaches, on a scratch potential).
    NgsdGateParams always = gate;
    always.theta = -1.0f;
    auto scratch = v_.clone();
    auto forced = ngsd_step(l_b_.to(torch::kFloat32), l_e_.to(torch::kFloat32), alpha_, scratch, always);
    auto flip = forced.choice.ne(l_b_.argmax(-1)).to(torch::kCPU);
    auto tv = out.tv.to(torch::kCPU);
    auto v = v_.to(torch::kCPU);
    auto al = alpha_.to(torch::kCPU);
    for (int64_t r = 0; r < A; ++r)
      env_.trace({{"method", "ngsd"},
                  {"id", traced_.ids()[r]},
                  {"step", step},
                  {"tv", tv[r].item<float>()},
                  {"potential", v[r].item<float>()},
                  {"spike", spike[r].item<bool>()},
                  {"flip", flip[r].item<bool>()},
                  {"alpha", al[r].item<float>()}});
  }
  if (config_.early_stop) {
    for (int64_t r = 0; r < A; ++r) {
      if (alpha_[r].item<float>() < 0.5f) continue;  // the reference stops early only when alpha >= 0.5
      auto tok = env_.tokenizer;
      auto decode = [tok](const std::vector<int32_t>& ids) { return tok->decode(ids, /*skip_special=*/true); };
      if (!ngsd_early_stop(generated_[r], decode, stop_limit_[r])) continue;
      // End this row now: only the end-of-sequence token remains possible.
      scores[r].fill_(-std::numeric_limits<float>::infinity());
      scores[r][env_.eos_ids.front()] = 0.0f;
    }
  }
  return scores;
}

void NgsdStrategy::advance(const std::vector<int32_t>& tokens) {
  const ForwardHooks* hooks = env_.steering ? env_.steering->hooks() : nullptr;
  if (joint_) {
    const int64_t A = static_cast<int64_t>(tokens.size());
    torch::Tensor l = step_rows(*env_.model, repeat_tokens(tokens, 2), cache_b_, joint_hooks(A));
    l_b_ = l.narrow(0, 0, A);
    l_e_ = l.narrow(0, A, A);
  } else {
    l_b_ = step_rows(*env_.model, tokens, cache_b_, hooks);
    l_e_ = step_rows(*expert_, tokens, cache_e_, expert_lora_ ? &expert_hooks_ : nullptr);
  }
  for (size_t r = 0; r < tokens.size(); ++r) generated_[r].push_back(tokens[r]);
  ++traced_.step;
}

void NgsdStrategy::keep_rows(const std::vector<int64_t>& rows) {
  if (joint_) {
    const int64_t A = l_b_.size(0);
    std::vector<int64_t> both(rows);
    for (int64_t r : rows) both.push_back(r + A);
    keep_cache_rows(cache_b_, both);
  } else {
    keep_cache_rows(cache_b_, rows);
    keep_cache_rows(cache_e_, rows);
  }
  auto idx = index_tensor(rows).to(l_b_.device());
  l_b_ = l_b_.index_select(0, idx);
  l_e_ = l_e_.index_select(0, idx);
  alpha_ = alpha_.index_select(0, idx);
  v_ = v_.index_select(0, idx).contiguous();
  std::vector<std::vector<int32_t>> g;
  std::vector<int64_t> lim;
  std::vector<double> risk;
  for (int64_t r : rows) {
    g.push_back(std::move(generated_[r]));
    lim.push_back(stop_limit_[r]);
    risk.push_back(risk_[r]);
  }
  generated_.swap(g);
  stop_limit_.swap(lim);
  risk_.swap(risk);
  traced_.keep(rows);
}

}  // namespace safedec
