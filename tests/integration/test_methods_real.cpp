// Every safety method on the real SmolLM2-135M-Instruct: a batch of two chat prompts of different
// lengths gives non-empty, finite output (greedy and sampled), stacked methods run, and the
// self-reflection and probe risk estimators produce valid alphas. Harmful prompts are never printed.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "core/error.h"
#include "core/paths.h"
#include "decoding/model_bundle.h"
#include "decoding/strategies/common.h"
#include "decoding/strategies/ngsd.h"
#include "decoding/strategy_registry.h"
#include "io/safetensors.h"
#include "train/icv.h"

using namespace safedec;

namespace {

const ModelBundle& bundle() {
  static ModelBundle b = load_model_bundle("smollm2-135m-instruct");
  return b;
}

std::vector<StrategyPrompt> benign_prompts() {
  return {bundle().make_prompt("short", "What is the capital of France?"),
          bundle().make_prompt("long", "Write two sentences about the history of astronomy, mentioning the telescope "
                                       "and the early observers who tracked the planets.")};
}

// An ICV of the real model from the first 4 default pairs (written once to a temp file).
const std::string& icv_path() {
  static std::string path = [] {
    torch::InferenceMode guard;
    auto pairs = read_icv_pairs(source_dir() + "/data/icv_pairs.jsonl");
    pairs.resize(4);
    auto icv = extract_icv(*bundle().model, *bundle().tokenizer, pairs);
    std::string p = ::testing::TempDir() + "/methods_real_icv";
    save_icv(p, icv, bundle().model->config(), {}, /*overwrite=*/true);
    return p;
  }();
  return path;
}

std::vector<GenerationResult> generate(const MethodConfig& cfg, const std::vector<StrategyPrompt>& prompts,
                                       int64_t n = 16, double temperature = 0.0) {
  MethodFactory f(cfg, bundle());
  GenerationOptions opt = bundle().generation_options();
  opt.max_new_tokens = n;
  opt.sampling.temperature = temperature;
  opt.sampling.seed = 3;
  Generator gen(opt);
  auto s = f.make();
  torch::InferenceMode guard;
  return gen.run(*s, prompts);
}

void expect_text(const std::vector<GenerationResult>& out, const std::string& what) {
  ASSERT_EQ(out.size(), 2u) << what;
  for (const auto& r : out) {
    EXPECT_FALSE(r.tokens.empty()) << what << " " << r.id;
    EXPECT_FALSE(r.text.empty()) << what << " " << r.id;
  }
}

MethodConfig config(const std::string& method, const std::string& yaml) {
  return parse_method_config(method, yaml.empty() ? YAML::Node() : YAML::Load(yaml), "test");
}

}  // namespace

// (Each test stays under 60 s on a loaded 2-core machine; the first one also loads the model.)
TEST(MethodsReal, PlainAndAcdGenerate) {
  expect_text(generate(config("plain", ""), benign_prompts(), 12), "plain");
  expect_text(generate(config("acd", ""), benign_prompts(), 12), "acd");
  expect_text(generate(config("acd", "variant: null_ap"), benign_prompts(), 8), "acd null_ap");
}

TEST(MethodsReal, SafeDecodingGenerates) {
  expect_text(generate(config("safedecoding", ""), benign_prompts(), 12), "safedecoding");
  expect_text(generate(config("safedecoding", ""), benign_prompts(), 8, 0.7), "safedecoding sampled");
}

TEST(MethodsReal, NgsdWithSelfTruncatedExpertGenerates) {
  expect_text(generate(config("ngsd", "expert: self_truncated\nalpha: 0.9"), benign_prompts(), 12), "ngsd");
  expect_text(generate(config("ngsd", "expert: self_truncated\nalpha: 0.5"), benign_prompts(), 12, 0.7),
              "ngsd sampled");
}

TEST(MethodsReal, NgsdWithTheSystemPromptExpertAnswersSensibly) {
  // The default training-free expert: the target prompted to be safe. On a benign factual question
  // the two distributions agree closely, so the answer stays the plain model's.
  ASSERT_EQ(config("ngsd", "").ngsd.expert, "system_prompt") << "the default NGSD expert";
  std::vector<StrategyPrompt> p = {bundle().make_prompt("q", "What is the capital of France?"),
                                   bundle().make_prompt("r", "Name the largest planet in our solar system.")};
  auto out = generate(config("ngsd", "alpha: 0.9"), p, 16);
  auto plain = generate(config("plain", ""), p, 16);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_NE(out[0].text.find("Paris"), std::string::npos) << out[0].text;
  EXPECT_EQ(out[1].text, plain[1].text) << "the gate stays quiet on a benign factual question";
}

TEST(MethodsReal, NgsdSharedForwardEqualsSeparateForwards) {
  // With the system-prompt expert both branches run as one batch; a steering hook with alpha 0 (an
  // identity) forces the two-forward path. Same tokens, same gate, at batch 2 with rows dropping out.
  const std::string icv = "{icv: " + icv_path() + ", alpha: 0.0}";
  auto joint = generate(config("ngsd", "alpha: 0.9"), benign_prompts(), 20);
  auto separate = generate(config("ngsd", "alpha: 0.9\nsteer: " + icv), benign_prompts(), 20);
  ASSERT_EQ(joint.size(), separate.size());
  for (size_t i = 0; i < joint.size(); ++i) EXPECT_EQ(joint[i].tokens, separate[i].tokens) << joint[i].id;
}

TEST(MethodsReal, StoredSystemTurnsGiveTheSameTokensAsWholePrompts) {
  // prefix_cache (default on) computes each branch's system turn once per factory; the first batch
  // computes and stores it, the second batch takes it from the store. Both equal whole-prompt prefill.
  const std::string icv = "icv: " + icv_path();
  for (const auto& [method, yaml] : std::vector<std::pair<std::string, std::string>>{
           {"plain", ""}, {"acd", ""}, {"safedecoding", ""}, {"ngsd", "alpha: 0.9"}, {"steer", icv}}) {
    auto whole = generate(config(method, yaml + (yaml.empty() ? "" : "\n") + "prefix_cache: false"), benign_prompts(), 16);
    MethodFactory f(config(method, yaml), bundle());
    GenerationOptions opt = bundle().generation_options();
    opt.max_new_tokens = 16;
    Generator gen(opt);
    torch::InferenceMode guard;
    for (int batch = 0; batch < 2; ++batch) {
      auto s = f.make();
      auto out = gen.run(*s, benign_prompts());
      ASSERT_EQ(out.size(), whole.size());
      for (size_t i = 0; i < out.size(); ++i)
        EXPECT_EQ(out[i].tokens, whole[i].tokens) << method << " batch " << batch << " prompt " << out[i].id;
    }
    ASSERT_NE(f.prefixes(), nullptr) << method;
    EXPECT_GT(f.prefixes()->hits(), 0) << method << ": the second batch must take its system turns from the store";
  }
}

TEST(MethodsReal, GroupedPrefillGivesTheSameTokensAsOnePaddedForward) {
  // The two benign prompts differ by ~20 tokens after their stored system turns, so the prefill
  // runs them in two forwards (prefill_groups) and stacks the caches.
  for (const std::string method : {"plain", "acd", "safedecoding"}) {
    set_grouped_prefill(false);
    auto one = generate(config(method, ""), benign_prompts(), 16);
    set_grouped_prefill(true);
    auto grouped = generate(config(method, ""), benign_prompts(), 16);
    ASSERT_EQ(one.size(), grouped.size());
    for (size_t i = 0; i < one.size(); ++i) EXPECT_EQ(one[i].tokens, grouped[i].tokens) << method << " " << one[i].id;
  }
}

TEST(MethodsReal, SteerAndStackedSteerGenerate) {
  const std::string icv = "{icv: " + icv_path() + "}";
  expect_text(generate(config("steer", "icv: " + icv_path()), benign_prompts(), 12), "steer");
  expect_text(generate(config("acd", "steer: " + icv), benign_prompts(), 8), "steer + acd");
  expect_text(generate(config("ngsd", "steer: " + icv), benign_prompts(), 8), "steer + ngsd");
}

TEST(MethodsReal, RiskEstimatorsGiveValidAlphas) {
  torch::InferenceMode guard;
  StrategyEnv env;
  env.model = bundle().model;
  env.pad_id = bundle().pad_id();
  env.render = bundle_renderer(bundle());
  env.tokenizer = bundle().tokenizer;
  env.eos_ids = bundle().tokenizer->eog_ids();
  SelfReflectionRisk reflect(env, 48);
  auto prompts = benign_prompts();
  auto est = reflect.estimate(prompts, {});
  ASSERT_EQ(est.size(), 2u);
  for (size_t i = 0; i < est.size(); ++i) {
    EXPECT_GE(est[i].risk, 0.0);
    EXPECT_LE(est[i].risk, 10.0);
    EXPECT_EQ(est[i].alpha, alpha_from_risk(est[i].risk));
    // The rule applied to what the model actually wrote.
    EXPECT_EQ(est[i].risk, risk_from_scores(parse_risk_json(reflect.last_answers()[i]), prompts[i].user.size()));
  }
  // Probe: a weight file with w = 0, b = logit(0.7) -> r = 7 -> alpha 0.9 for every prompt.
  const int64_t d = bundle().model->config().hidden_size;
  std::vector<float> w(d, 0.0f);
  float b = std::log(0.7f / 0.3f);
  const std::string path = ::testing::TempDir() + "/probe.safetensors";
  write_safetensors(path, {{"weight", SafetensorsDtype::F32, {d}, w.data(), w.size() * 4},
                           {"bias", SafetensorsDtype::F32, {1}, &b, 4}});
  MethodConfig cfg = config("ngsd", "risk: probe\nprobe: " + path);
  MethodFactory f(cfg, bundle());
  auto s = f.make();
  s->start(prompts, 4);  // step A runs in start()
  auto* ngsd = dynamic_cast<NgsdStrategy*>(s.get());
  ASSERT_NE(ngsd, nullptr);
  ASSERT_EQ(ngsd->risk().size(), 2u);
  EXPECT_NEAR(ngsd->risk()[0], 7.0, 1e-4);
  EXPECT_FLOAT_EQ(ngsd->alpha()[0].item<float>(), 0.9f);
  EXPECT_TRUE(torch::isfinite(ngsd->next_scores(0)).any().item<bool>());
  std::remove(path.c_str());
}
