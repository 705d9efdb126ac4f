// The safety strategies on a small random-weight model: each reduces to plain decoding in its
// neutral setting (ACD with identical branches and alpha 0, NGSD with expert == target, SafeDecoding
// with expert == target, steer with alpha 0), each is the same batched as one prompt at a time, and
// soft-prompt splicing equals feeding the same embeddings as tokens.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "artifacts/typed.h"
#include "core/error.h"
#include "decoding/generator.h"
#include "decoding/plain_strategy.h"
#include "decoding/strategies/acd.h"
#include "decoding/strategies/ngsd.h"
#include "decoding/strategies/safedecoding.h"
#include "decoding/strategies/steer.h"
#include "io/safetensors.h"

using namespace safedec;

namespace {

std::shared_ptr<CausalLM> tiny_model() {
  ModelConfig c;
  c.architecture = "llama";
  c.n_layers = 3;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 50;
  c.context_length = 128;
  c.rope_theta = 10000;
  // A larger init makes the random model's argmax depend on context.
  return CausalLM::random(c, /*seed=*/11, /*std=*/0.5);
}

StrategyPrompt prompt(std::vector<int32_t> ids, std::string id) {
  StrategyPrompt p;
  p.id = std::move(id);
  p.ids = std::move(ids);
  p.user = "u";
  return p;
}

std::vector<StrategyPrompt> mixed_prompts() {
  return {prompt({1, 2, 3}, "a"), prompt({4, 5, 6, 7, 8, 9, 10}, "b"), prompt({11}, "c"), prompt({12, 13, 14, 15}, "d")};
}

// A fake chat template: the system text becomes a token prefix (its length and first letter), so
// branches with different system texts see different, deterministic contexts.
StrategyPrompt fake_render(const StrategyPrompt& base, const std::optional<std::string>& system) {
  StrategyPrompt p = base;
  std::vector<int32_t> prefix;
  if (system && !system->empty()) {
    prefix.push_back(static_cast<int32_t>(20 + system->size() % 20));
    prefix.push_back(static_cast<int32_t>(static_cast<unsigned char>((*system)[0]) % 50));
  }
  p.ids.insert(p.ids.begin(), prefix.begin(), prefix.end());
  p.system_begin = 0;
  p.system_end = static_cast<int64_t>(prefix.size());
  return p;
}

StrategyEnv env_of(std::shared_ptr<CausalLM> model, bool render = false) {
  StrategyEnv e;
  e.model = model;
  e.pad_id = 0;
  if (render) e.render = fake_render;
  return e;
}

std::vector<GenerationResult> run(Strategy& s, const std::vector<StrategyPrompt>& prompts, int64_t n = 10,
                                  double temperature = 0.0) {
  GenerationOptions opt;
  opt.max_new_tokens = n;
  opt.sampling.temperature = temperature;
  opt.sampling.seed = 5;
  Generator gen(opt);
  return gen.run(s, prompts);
}

std::vector<GenerationResult> plain(std::shared_ptr<CausalLM> model, const std::vector<StrategyPrompt>& prompts,
                                    int64_t n = 10, double temperature = 0.0) {
  PlainStrategy s(model);
  return run(s, prompts, n, temperature);
}

void expect_same_tokens(const std::vector<GenerationResult>& a, const std::vector<GenerationResult>& b,
                        const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].tokens, b[i].tokens) << what << ", prompt " << i;
}

// Runs a freshly made strategy on all prompts at once and on each prompt alone.
template <typename Make>
void expect_batched_equals_single(Make make, const std::string& what, int64_t n = 10) {
  auto prompts = mixed_prompts();
  auto s = make();
  auto together = run(*s, prompts, n);
  std::set<std::vector<int32_t>> distinct;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto one = make();
    auto alone = run(*one, {prompts[i]}, n);
    EXPECT_EQ(together[i].tokens, alone[0].tokens) << what << ": prompt " << i << " batched vs alone";
    distinct.insert(alone[0].tokens);
  }
  EXPECT_GT(distinct.size(), 1u) << what << ": outputs do not depend on the prompt; the test proves nothing";
}

}  // namespace

TEST(AcdStrategy, IdenticalBranchesWithAlphaZeroEqualPlain) {
  torch::InferenceMode guard;
  auto model = tiny_model();
  AcdConfig cfg;
  cfg.alpha = 0.0;
  AcdStrategy acd(env_of(model), cfg);  // no renderer: both branches are the prompt itself
  expect_same_tokens(run(acd, mixed_prompts()), plain(model, mixed_prompts()), "acd alpha 0");
  AcdStrategy acd_sampled(env_of(model), cfg);
  expect_same_tokens(run(acd_sampled, mixed_prompts(), 10, 0.8), plain(model, mixed_prompts(), 10, 0.8),
                     "acd alpha 0 sampled");
}

TEST(AcdStrategy, ContrastChangesTheOutputAndBatchesExactly) {
  torch::InferenceMode guard;
  auto model = tiny_model();
  AcdConfig cfg;  // alpha 0.5, manual safe vs opposite prompts (fake template: different prefixes)
  AcdStrategy acd(env_of(model, true), cfg);
  auto out = run(acd, mixed_prompts());
  auto base = plain(model, mixed_prompts());
  int differ = 0;
  for (size_t i = 0; i < out.size(); ++i) differ += out[i].tokens != base[i].tokens;
  EXPECT_GT(differ, 0) << "the contrast never changed a token";
  expect_batched_equals_single([&] { return std::make_unique<AcdStrategy>(env_of(model, true), cfg); }, "acd");
  for (const char* v : {"null_ap", "sp_null"}) {
    AcdConfig c2 = cfg;
    c2.variant = v;
    expect_batched_equals_single([&] { return std::make_unique<AcdStrategy>(env_of(model, true), c2); }, v);
  }
}

TEST(AcdStrategy, TraceHasTopFiveOfBothBranches) {
  torch::InferenceMode guard;
  auto model = tiny_model();
  std::vector<nlohmann::json> lines;
  auto env = env_of(model, true);
  env.trace = [&](const nlohmann::json& j) { lines.push_back(j); };
  AcdStrategy acd(env, AcdConfig{});
  run(acd, mixed_prompts(), 3);
  ASSERT_EQ(lines.size(), 12u);  // 4 prompts x 3 steps
  EXPECT_EQ(lines[0]["top5_sp"].size(), 5u);
  EXPECT_EQ(lines[0]["top5_ap"].size(), 5u);
  EXPECT_EQ(lines[0]["id"], "a");
  EXPECT_EQ(lines.back()["step"], 2);
}

TEST(AcdStrategy, SoftPromptSplicingEqualsTheSameEmbeddingsAsTokens) {
  torch::InferenceMode guard;
  auto model = tiny_model();
  // Row with ids [1, 7, 8, 2, 3] vs row [1, 2, 3] with embed([7, 8]) spliced before index 1.
  KvCache c1, c2;
  auto as_tokens = prefill_rows(*model, {BranchRow{{1, 7, 8, 2, 3}, {}, -1}, BranchRow{{4, 5}, {}, -1}}, 4, 0, c1);
  auto soft = model->embed(torch::tensor({{7L, 8L}})).squeeze(0);
  auto spliced = prefill_rows(*model, {BranchRow{{1, 2, 3}, soft, 1}, BranchRow{{4, 5}, {}, -1}}, 4, 0, c2);
  EXPECT_TRUE(torch::allclose(as_tokens, spliced, 1e-4, 1e-4));
  // And the decode steps after it agree too.
  auto n1 = step_rows(*model, {9, 9}, c1);
  auto n2 = step_rows(*model, {9, 9}, c2);
  EXPECT_TRUE(torch::allclose(n1, n2, 1e-4, 1e-4));
}

TEST(NgsdStrategy, ExpertIdenticalToTargetNeverFiresAndEqualsPlain) {
  torch::InferenceMode guard;
  auto model = tiny_model();
  NgsdConfig cfg;
  cfg.alpha = 0.9;
  NgsdStrategy ngsd(env_of(model), cfg, model, nullptr, std::make_unique<FixedRisk>(0.9));
  auto out = run(ngsd, mixed_prompts());
  expect_same_tokens(out, plain(model, mixed_prompts()), "ngsd expert == target");
  EXPECT_EQ(ngsd.spikes(), 0);
  EXPECT_GT(ngsd.gated_tokens(), 0);
}

TEST(NgsdStrategy, DifferentExpertFiresAndBatchesExactly) {
  torch::InferenceMode guard;
  auto model = tiny_model();
  auto expert = model->truncated(1);
  NgsdConfig cfg;
  cfg.alpha = 0.9;
  std::vector<nlohmann::json> lines;
  auto env = env_of(model);
  env.trace = [&](const nlohmann::json& j) { lines.push_back(j); };
  NgsdStrategy ngsd(env, cfg, expert, nullptr, std::make_unique<FixedRisk>(0.9));
  run(ngsd, mixed_prompts());
  EXPECT_GT(ngsd.spikes(), 0) << "a 1-layer expert of a random 3-layer model should disagree enough to fire";
  ASSERT_FALSE(lines.empty());
  for (const auto& j : lines) {
    EXPECT_GE(j["tv"].get<double>(), 0.0);
    EXPECT_LE(j["tv"].get<double>(), 1.0 + 1e-6);
    EXPECT_NEAR(j["alpha"].get<double>(), 0.9, 1e-6);
  }
  expect_batched_equals_single(
      [&] { return std::make_unique<NgsdStrategy>(env_of(model), cfg, expert, nullptr, std::make_unique<FixedRisk>(0.9)); },
      "ngsd");
}

TEST(NgsdStrategy, FollowTargetTracesWhetherASpikeWouldChangeTheToken) {
  // follow_target (the gate calibration's mode) decodes the target's own greedy tokens; its trace's
  // `flip` at step 0 says whether mixing would change the first token, which an NGSD decode whose gate
  // fires on every token shows directly.
  torch::InferenceMode guard;
  auto model = tiny_model();
  auto expert = model->truncated(1);
  NgsdConfig cfg;
  cfg.theta = 1e-6;  // fires on every token
  std::vector<nlohmann::json> lines;
  auto env = env_of(model);
  env.trace = [&](const nlohmann::json& j) { lines.push_back(j); };
  NgsdConfig follow = cfg;
  follow.follow_target = true;
  NgsdStrategy observer(env, follow, expert, nullptr, std::make_unique<FixedRisk>(0.9));
  auto prompts = mixed_prompts();
  auto observed = run(observer, prompts);
  auto base = plain(model, prompts);
  expect_same_tokens(observed, base, "ngsd follow_target");
  EXPECT_GT(observer.spikes(), 0);
  NgsdStrategy mixing(env_of(model), cfg, expert, nullptr, std::make_unique<FixedRisk>(0.9));
  auto mixed = run(mixing, prompts);
  int64_t flips = 0, checked = 0;
  for (const auto& j : lines) {
    if (j["step"].get<int64_t>() != 0) continue;
    size_t i = 0;
    while (prompts[i].id != j["id"].get<std::string>()) ++i;
    const bool changed = mixed[i].tokens.at(0) != base[i].tokens.at(0);
    EXPECT_EQ(j["flip"].get<bool>(), changed) << "prompt " << prompts[i].id;
    flips += changed ? 1 : 0;
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int64_t>(prompts.size()));
  EXPECT_GT(flips, 0) << "alpha 0.9 with a 1-layer expert should change some first token; the test proves nothing";
}

TEST(NgsdStrategy, RefusesAnExpertWithAnotherVocabulary) {
  auto model = tiny_model();
  ModelConfig c = model->config();
  c.vocab_size = 60;
  auto other = CausalLM::random(c, 1, 0.5);
  try {
    NgsdStrategy s(env_of(model), NgsdConfig{}, other, nullptr, std::make_unique<FixedRisk>(0.5));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("vocabulary"), std::string::npos) << e.what();
  }
}

TEST(SafeDecodingStrategy, ExpertEqualToTargetEqualsPlain) {
  torch::InferenceMode guard;
  auto model = tiny_model();
  SafeDecodingStrategy sd(env_of(model), SafeDecodingConfig{});  // no renderer: expert rows = the same prompt
  expect_same_tokens(run(sd, mixed_prompts()), plain(model, mixed_prompts()), "safedecoding expert == target");
  // A LoRA expert whose B factors are zero is the target itself, too.
  LoraAdapter::Options o;
  o.rank = 2;
  o.targets = {"q_proj", "down_proj"};
  auto zero = std::make_shared<LoraAdapter>(model->config(), o);
  SafeDecodingConfig lc;
  lc.expert = "lora";
  lc.adapter = "unused";
  SafeDecodingStrategy sd_lora(env_of(model), lc, zero);
  expect_same_tokens(run(sd_lora, mixed_prompts()), plain(model, mixed_prompts()), "safedecoding zero LoRA");
}

TEST(SafeDecodingStrategy, OnlyTheFirstMTokensAreMixedAndBatchesExactly) {
  torch::InferenceMode guard;
  auto model = tiny_model();
  std::vector<nlohmann::json> lines;
  auto env = env_of(model, true);
  env.trace = [&](const nlohmann::json& j) { lines.push_back(j); };
  SafeDecodingConfig cfg;
  SafeDecodingStrategy sd(env, cfg);
  run(sd, mixed_prompts(), 5);
  ASSERT_EQ(lines.size(), 20u);
  for (const auto& j : lines) {
    EXPECT_EQ(j["mixing"].get<bool>(), j["step"].get<int64_t>() < 2) << j.dump();
    if (j["mixing"].get<bool>()) EXPECT_GE(j["k"].get<int64_t>(), 5);
  }
  expect_batched_equals_single([&] { return std::make_unique<SafeDecodingStrategy>(env_of(model, true), cfg); },
                               "safedecoding");
}

TEST(SteerStrategy, AlphaZeroEqualsPlainAndSteeringIsLive) {
  torch::InferenceMode guard;
  auto model = tiny_model();
  auto icv = torch::randn({3, 32}, torch::TensorOptions().dtype(torch::kFloat32)) * 2.0;
  auto zero = std::make_shared<Steering>(icv, 0.0, SteerForm::kCode);
  SteerStrategy s0(env_of(model), zero);
  expect_same_tokens(run(s0, mixed_prompts()), plain(model, mixed_prompts()), "steer alpha 0");
  auto paper0 = std::make_shared<Steering>(icv, 0.0, SteerForm::kPaper);
  SteerStrategy p0(env_of(model), paper0);
  expect_same_tokens(run(p0, mixed_prompts()), plain(model, mixed_prompts()), "steer paper form alpha 0");
  auto strong = std::make_shared<Steering>(icv, 8.0, SteerForm::kCode);
  SteerStrategy s1(env_of(model), strong);
  auto out = run(s1, mixed_prompts());
  auto base = plain(model, mixed_prompts());
  int differ = 0;
  for (size_t i = 0; i < out.size(); ++i) differ += out[i].tokens != base[i].tokens;
  EXPECT_GT(differ, 0) << "strong steering never changed a token";
  expect_batched_equals_single([&] { return std::make_unique<SteerStrategy>(env_of(model), strong); }, "steer");
}

TEST(SteerStrategy, BothFormsMoveTheMlpOutputAwayFromTheIcv) {
  // The ICV is h(unsafe) - h(safe): the code form and the paper form (h + alpha ICV with the paper's
  // safe-pointing ICV, i.e. minus ours) must both lower the output's component along it.
  torch::InferenceMode guard;
  torch::manual_seed(3);
  const auto icv = torch::randn({2, 32});
  const auto x = torch::randn({5, 32});
  for (SteerForm form : {SteerForm::kCode, SteerForm::kPaper}) {
    Steering st(icv, 0.5, form);
    ASSERT_TRUE(st.hooks()->mlp_transform);
    for (int64_t layer = 0; layer < 2; ++layer) {
      const auto v = icv[layer] / icv[layer].norm();
      const auto y = st.hooks()->mlp_transform(layer, x);
      const auto before = torch::matmul(x / x.norm(2, -1, true), v);
      const auto after = torch::matmul(y / y.norm(2, -1, true), v);
      EXPECT_TRUE((after < before).all().item<bool>())
          << (form == SteerForm::kPaper ? "paper" : "code") << " form, layer " << layer << ": cosine with the ICV "
          << before << " -> " << after;
      EXPECT_TRUE(torch::allclose(y.norm(2, -1), x.norm(2, -1), 1e-4, 1e-5));  // both forms keep |x|
    }
  }
}

TEST(StackedStrategies, SteerInsideAcdAndNgsdBatchesExactly) {
  torch::InferenceMode guard;
  auto model = tiny_model();
  auto icv = torch::randn({3, 32}) * 2.0;
  auto steering = std::make_shared<Steering>(icv, 4.0, SteerForm::kCode);
  auto env = env_of(model, true);
  env.steering = steering;
  expect_batched_equals_single([&] { return std::make_unique<AcdStrategy>(env, AcdConfig{}); }, "steer + acd");
  auto expert = model->truncated(1);
  NgsdConfig n;
  expect_batched_equals_single(
      [&] { return std::make_unique<NgsdStrategy>(env, n, expert, nullptr, std::make_unique<FixedRisk>(0.5)); },
      "steer + ngsd");
  // Steering inside ACD with alpha 0 and identical branches equals the steer strategy alone.
  auto env_plain = env_of(model);
  env_plain.steering = steering;
  AcdConfig a0;
  a0.alpha = 0.0;
  AcdStrategy acd(env_plain, a0);
  SteerStrategy st(env_of(model), steering);
  expect_same_tokens(run(acd, mixed_prompts()), run(st, mixed_prompts()), "steer + acd(alpha 0) vs steer");
}

TEST(AcdStrategy, SoftPromptsEqualToTheManualPromptsEmbeddingsGiveTheSameTokens) {
  torch::InferenceMode guard;
  auto model = tiny_model();
  AcdConfig manual;
  AcdStrategy m(env_of(model, true), manual);
  auto expected = run(m, mixed_prompts());
  // The fake template turns a system text into two prefix tokens; soft prompts made of exactly those
  // tokens' input embeddings, spliced into the (empty) system slot, must decode identically.
  auto prefix = [&](const std::string& text) {
    auto p = fake_render(prompt({}, "x"), text).ids;
    std::vector<int64_t> ids(p.begin(), p.end());
    return model->embed(torch::tensor(ids).view({1, -1})).squeeze(0);
  };
  AcdConfig soft;
  soft.prompts = "soft";
  soft.soft_prompts = "in-memory";
  AcdStrategy s(env_of(model, true), soft, prefix(manual.safe_prompt), prefix(manual.opposite_prompt));
  expect_same_tokens(run(s, mixed_prompts()), expected, "soft == manual");
}

TEST(NgsdEarlyStop, ReferenceRuleWithoutTheNewlineBug) {
  // Token 1 = "I cannot", 2 = " word", 3 = ".", 4 = "\n", 5 = "!".
  auto decode = [](const std::vector<int32_t>& ids) {
    static const char* text[] = {"", "I cannot", " word", ".", "\n", "!"};
    std::string s;
    for (int32_t id : ids) s += text[id];
    return s;
  };
  int64_t limit = -1;
  std::vector<int32_t> gen(128, 2);
  EXPECT_FALSE(ngsd_early_stop(gen, decode, limit));
  EXPECT_EQ(limit, -1);  // no refusal in the last 64 tokens
  // A refusal older than the last 64 tokens is not seen.
  std::vector<int32_t> old(128, 2);
  old[10] = 1;
  EXPECT_FALSE(ngsd_early_stop(old, decode, limit));
  EXPECT_EQ(limit, -1);
  // Only checked every 7 tokens from 128: at 130 a fresh refusal is not looked at.
  std::vector<int32_t> off(129, 2);
  off.push_back(1);
  EXPECT_FALSE(ngsd_early_stop(off, decode, limit));
  EXPECT_EQ(limit, -1);
  // At 135 (= 128 + 7) it is: the limit becomes 135 + 128, but the row does not end yet.
  std::vector<int32_t> g(134, 2);
  g.push_back(1);
  EXPECT_FALSE(ngsd_early_stop(g, decode, limit));
  EXPECT_EQ(limit, 263);
  g.push_back(2);
  EXPECT_FALSE(ngsd_early_stop(g, decode, limit));
  g.push_back(4);  // "\n" does not end it (the reference's bug)
  EXPECT_FALSE(ngsd_early_stop(g, decode, limit));
  g.push_back(3);  // "." does
  EXPECT_TRUE(ngsd_early_stop(g, decode, limit));
  // Or the limit is reached.
  int64_t lim2 = 200;
  EXPECT_TRUE(ngsd_early_stop(std::vector<int32_t>(200, 2), decode, lim2));
  EXPECT_FALSE(ngsd_early_stop(std::vector<int32_t>(199, 2), decode, lim2));
  std::vector<int32_t> bang(150, 2);
  bang.push_back(5);
  EXPECT_TRUE(ngsd_early_stop(bang, decode, lim2));
}

TEST(SafeDecodingStrategy, LoadsAPeftAdapterDirectory) {
  torch::InferenceMode guard;
  auto model = tiny_model();
  const std::string dir = ::testing::TempDir() + "/peft_test_adapter";
  std::filesystem::create_directories(dir);
  {
    std::ofstream cfg(dir + "/adapter_config.json");
    cfg << R"({"peft_type": "LORA", "r": 2, "lora_alpha": 8, "target_modules": ["q_proj", "down_proj"]})";
  }
  auto a_q = torch::randn({2, 32}), b_q = torch::randn({32, 2});   // q_proj: in 32, out 4 heads x 8 = 32
  auto a_d = torch::randn({2, 64}), b_d = torch::randn({32, 2});   // down_proj: in 64, out 32
  std::vector<std::pair<std::string, torch::Tensor>> ts = {
      {"base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight", a_q},
      {"base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight", b_q},
      {"base_model.model.model.layers.2.mlp.down_proj.lora_A.weight", a_d},
      {"base_model.model.model.layers.2.mlp.down_proj.lora_B.weight", b_d}};
  std::vector<SafetensorsWriteTensor> w;
  for (auto& [n, t] : ts) {
    t = t.contiguous();
    w.push_back({n, SafetensorsDtype::F32, {t.size(0), t.size(1)}, t.data_ptr<float>(), static_cast<size_t>(t.numel()) * 4});
  }
  write_safetensors(dir + "/adapter_model.safetensors", w);
  auto adapter = load_lora_adapter(dir, model->config());
  const LoraFactors* q = adapter->find(1, LinearKind::Q);
  ASSERT_NE(q, nullptr);
  EXPECT_TRUE(torch::equal(q->a, a_q));
  EXPECT_TRUE(torch::equal(q->b, b_q));
  EXPECT_DOUBLE_EQ(q->scale, 4.0);  // lora_alpha / r
  ASSERT_NE(adapter->find(2, LinearKind::Down), nullptr);
  EXPECT_EQ(adapter->find(0, LinearKind::Q), nullptr);
  // The adapter changes the expert rows, so SafeDecoding's first tokens can differ from plain; it
  // runs and batches exactly.
  SafeDecodingConfig lc;
  lc.expert = "lora";
  lc.adapter = dir;
  std::shared_ptr<const LoraAdapter> shared = adapter;
  expect_batched_equals_single([&] { return std::make_unique<SafeDecodingStrategy>(env_of(model), lc, shared); },
                               "safedecoding lora");
  // A factor with the wrong shape is refused, naming the tensor.
  auto bad = torch::randn({2, 31});
  write_safetensors(dir + "/adapter_model.safetensors",
                    {{"base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight", SafetensorsDtype::F32, {2, 31},
                      bad.data_ptr<float>(), 2 * 31 * 4}});
  EXPECT_THROW(load_lora_adapter(dir, model->config()), Error);
  std::filesystem::remove_all(dir);
}

// ---- Stored prompt prefixes (PrefixKvStore) ----

namespace {

// fp32 agreement of two computations of the same values in a different order (one forward over the
// whole prompt vs stored prefix + the rest; different GEMM shapes pick different kernels and blockings:
// the AVX2 skinny kernel, MKL's AVX-512 or AMX paths). Each dot product then differs by a few ulps of
// its magnitude, and 3 layers of a random large-init model amplify that; measured up to 3.5e-5 on a
// Xeon with AVX-512 + AMX, about 3e-6 on AVX2-only CPUs. The bound is relative to the tensor's scale:
// |a - b| <= 1e-4 * (1 + max |b|) + 1e-4 |b|, about 1000 ulps of the largest value.
bool fp32_close(const torch::Tensor& a, const torch::Tensor& b) {
  const double scale = 1.0 + b.abs().max().item<double>();
  return torch::allclose(a, b, 1e-4, 1e-4 * scale);
}

// Logits and, over the real slots of every row, keys and values agree.
void expect_same_prefill(const torch::Tensor& l1, const KvCache& c1, const torch::Tensor& l2, KvCache& c2,
                         const std::string& what) {
  ASSERT_TRUE(fp32_close(l1, l2)) << what << ": logits differ by " << (l1 - l2).abs().max().item<float>();
  ASSERT_EQ(c1.length(), c2.length()) << what;
  ASSERT_TRUE(torch::equal(c1.pad_offsets(), c2.pad_offsets())) << what;
  KvCache& m1 = const_cast<KvCache&>(c1);
  for (int64_t b = 0; b < c1.batch(); ++b) {
    const int64_t p = c1.pad_offsets()[b].item<int64_t>(), n = c1.length() - p;
    for (int64_t l = 0; l < c1.n_layers(); ++l) {
      EXPECT_TRUE(fp32_close(m1.keys(l)[b].narrow(1, p, n), c2.keys(l)[b].narrow(1, p, n)))
          << what << ": keys of row " << b << " layer " << l << " differ by "
          << (m1.keys(l)[b].narrow(1, p, n) - c2.keys(l)[b].narrow(1, p, n)).abs().max().item<float>();
      EXPECT_TRUE(fp32_close(m1.values(l)[b].narrow(1, p, n), c2.values(l)[b].narrow(1, p, n)))
          << what << ": values of row " << b << " layer " << l;
    }
  }
}

std::vector<BranchRow> prefix_rows(const torch::Tensor& soft) {
  return {
      BranchRow({1, 2, 3, 4, 5, 6}, {}, -1, 4),          // system [1..4] + user [5, 6]
      BranchRow({1, 2, 3, 4, 7, 8, 9, 10, 11}, {}, -1, 4),  // same system, longer user turn
      BranchRow({20, 21, 22, 5}, {}, -1, 3),             // another system turn
      BranchRow({9}, {}, -1, 0),                         // nothing shared, shortest row (padded in the forward)
      BranchRow({1, 2, 3, 4}, {}, -1, 10),               // shared_prefix past the end: the last token is computed
      BranchRow({1, 2, 3, 6, 7}, soft, 2, 4),            // [1, 2] + soft prompt (2 rows) is the shared part
      BranchRow({1, 2, 3, 6, 7}, soft, 2, 3),            // a prefix ending inside the soft prompt: not shared
  };
}

}  // namespace

TEST(PrefixKvStore, PrefillWithStoredPrefixesEqualsTheWholePrefill) {
  torch::InferenceMode guard;
  auto model = tiny_model();
  auto soft = model->embed(torch::tensor({{13L, 17L}})).squeeze(0) * 0.7;
  auto rows = prefix_rows(soft);
  ForwardHooks steer;
  steer.mlp_transform = [](int64_t layer, const torch::Tensor& m) { return layer == 1 ? m * 0.5 + 0.1 : m; };
  for (const ForwardHooks* hooks : std::vector<const ForwardHooks*>{nullptr, &steer}) {
    const std::string what = hooks ? "steered" : "plain";
    PrefixKvStore store;
    KvCache whole, cached;
    auto l_whole = prefill_rows(*model, rows, 5, 0, whole, hooks);
    auto l_cached = prefill_rows(*model, rows, 5, 0, cached, hooks, nullptr, &store);
    EXPECT_EQ(store.misses(), 4) << what << ": 4 distinct shared prefixes (3 token ones + the soft one)";
    EXPECT_EQ(store.hits(), 1) << what << ": the second row reuses the first row's system turn";
    expect_same_prefill(l_whole, whole, l_cached, cached, what);
    // The next batch takes every prefix from the store, and decoding continues identically.
    KvCache again;
    auto l_again = prefill_rows(*model, rows, 5, 0, again, hooks, nullptr, &store);
    EXPECT_EQ(store.misses(), 4) << what;
    EXPECT_EQ(store.hits(), 6) << what;
    expect_same_prefill(l_whole, whole, l_again, again, what + ", second batch");
    for (int step = 0; step < 3; ++step) {
      std::vector<int32_t> t(rows.size(), static_cast<int32_t>(30 + step));
      auto a = step_rows(*model, t, whole, hooks);
      auto b = step_rows(*model, t, again, hooks);
      EXPECT_TRUE(fp32_close(a, b)) << what << ": decode step " << step << " differs by " << (a - b).abs().max().item<float>() << " (logits up to " << a.abs().max().item<float>() << ")";
    }
  }
}

TEST(PrefixKvStore, OnlyRowsWithASharedPrefixSkipWorkAndTheForwardShrinks) {
  torch::InferenceMode guard;
  auto model = tiny_model();
  PrefixKvStore store;
  // Two rows of 9 positions whose first 6 are shared: the forward runs 3 columns, the cache holds 9.
  std::vector<BranchRow> rows{BranchRow({1, 2, 3, 4, 5, 6, 7, 8, 9}, {}, -1, 6),
                              BranchRow({1, 2, 3, 4, 5, 6, 10, 11, 12}, {}, -1, 6)};
  KvCache cache;
  int64_t seen_T = -1;
  ForwardHooks probe;
  probe.mlp_transform = [&](int64_t, const torch::Tensor& m) {
    seen_T = m.size(1);
    return m;
  };
  prefill_rows(*model, rows, 2, 0, cache, &probe, nullptr, &store);  // miss: the prefix runs alone (6), then 3
  EXPECT_EQ(seen_T, 3);
  EXPECT_EQ(cache.length(), 9);
  EXPECT_EQ(cache.pad_offsets()[0].item<int64_t>(), 0);
}

TEST(PrefixKvStore, EvictsTheLeastRecentlyUsedAndRefusesRowDependentHooks) {
  torch::InferenceMode guard;
  auto model = tiny_model();
  PrefixKvStore store(2);
  auto get = [&](std::vector<int32_t> ids) { return store.get(*model, nullptr, PrefixSpec{std::move(ids), {}, -1}); };
  auto a = get({1, 2});
  get({3, 4});
  EXPECT_EQ(get({1, 2}).get(), a.get());  // hit: [1, 2] is now the most recent
  get({5, 6});                            // evicts [3, 4]
  EXPECT_EQ(store.size(), 2u);
  EXPECT_EQ(store.misses(), 3);
  get({1, 2});
  EXPECT_EQ(store.misses(), 3) << "[1, 2] must have survived";
  get({3, 4});
  EXPECT_EQ(store.misses(), 4) << "[3, 4] must have been evicted";
  EXPECT_EQ(a->length, 2);
  EXPECT_EQ(a->keys.size(), 3u);

  ForwardHooks lora;
  lora.loras.push_back(LoraBinding{});
  EXPECT_FALSE(PrefixKvStore::usable_with(&lora));
  CaptureRequest cap;
  ForwardHooks capture;
  capture.capture = &cap;
  EXPECT_FALSE(PrefixKvStore::usable_with(&capture));
  EXPECT_TRUE(PrefixKvStore::usable_with(nullptr));
  EXPECT_THROW(store.get(*model, &lora, PrefixSpec{{1, 2}, {}, -1}), Error);
}

TEST(PrefixKvStore, EveryStrategyDecodesTheSameTokensWithAndWithoutTheStore) {
  torch::InferenceMode guard;
  auto model = tiny_model();
  // Prompts that carry a 3-token "default system turn"; fake_render replaces it for other branches.
  std::vector<StrategyPrompt> prompts;
  int i = 0;
  for (auto p : mixed_prompts()) {
    p.ids.insert(p.ids.begin(), {30, 31, 32});
    p.system_begin = 0;
    p.system_end = 3;
    p.id = "p" + std::to_string(i++);
    prompts.push_back(p);
  }
  auto icv = torch::randn({3, 32}, torch::TensorOptions().dtype(torch::kFloat32)) * 0.3;
  auto steering = std::make_shared<Steering>(icv, 0.5, SteerForm::kCode);
  auto store = std::make_shared<PrefixKvStore>();
  auto make_all = [&](bool with_store) {
    std::vector<std::pair<std::string, std::unique_ptr<Strategy>>> s;
    StrategyEnv env = env_of(model, true);
    if (with_store) env.prefixes = store;
    s.emplace_back("plain", std::make_unique<PlainStrategy>(model, 0, env.prefixes));
    s.emplace_back("acd", std::make_unique<AcdStrategy>(env, AcdConfig{}));
    s.emplace_back("safedecoding", std::make_unique<SafeDecodingStrategy>(env, SafeDecodingConfig{}));
    NgsdConfig n;
    n.alpha = 0.9;
    auto expert_render = [](const StrategyPrompt& p, const std::optional<std::string>&) {
      return fake_render(p, std::string("a safety prompt"));
    };
    s.emplace_back("ngsd", std::make_unique<NgsdStrategy>(env, n, model, expert_render, std::make_unique<FixedRisk>(0.9)));
    StrategyEnv steered = env;
    steered.steering = steering;
    s.emplace_back("steer", std::make_unique<SteerStrategy>(steered, steering));
    return s;
  };
  // Two rounds of fresh strategies sharing one store: the second round takes every prefix from it
  // (the first round's strategies stay alive, so no address of theirs can be reused by the second).
  std::vector<std::vector<std::pair<std::string, std::unique_ptr<Strategy>>>> alive;
  int64_t misses_after_first = 0;
  for (int round = 0; round < 2; ++round) {
    auto with = make_all(true), without = make_all(false);
    for (size_t k = 0; k < with.size(); ++k)
      expect_same_tokens(run(*with[k].second, prompts), run(*without[k].second, prompts),
                         with[k].first + " with vs without stored prefixes, round " + std::to_string(round));
    if (round == 0) misses_after_first = store->misses();
    alive.push_back(std::move(with));
  }
  EXPECT_EQ(store->misses(), misses_after_first) << "the second round must find every system turn in the store";
  EXPECT_GE(store->size(), 3u) << "default, safe/opposite (ACD) and safety (SafeDecoding/NGSD) system turns";
}

// ---- Grouped prefill (rows of very different lengths in separate forwards) ----

TEST(GroupedPrefill, GroupsMinimiseComputedPositionsPlusAForwardCost) {
  using G = std::vector<std::vector<int64_t>>;
  EXPECT_EQ(prefill_groups({10, 10, 10}, 8), (G{{0, 1, 2}}));
  EXPECT_EQ(prefill_groups({100, 2}, 8), (G{{1}, {0}}));      // 2 + 8 + 100 + 8 < 2 x 100 + 8
  EXPECT_EQ(prefill_groups({12, 10}, 8), (G{{0, 1}}));        // 2 x 12 + 8 < 10 + 8 + 12 + 8
  EXPECT_EQ(prefill_groups({5, 40, 6, 41}, 8), (G{{0, 2}, {1, 3}}));
  EXPECT_EQ(prefill_groups({7}, 8), (G{{0}}));
  EXPECT_EQ(prefill_groups({5, 40, 6, 41}, 1000), (G{{0, 1, 2, 3}}));  // forwards too dear to split
}

TEST(GroupedPrefill, EqualsOnePaddedForwardAndDecodesTheSame) {
  torch::InferenceMode guard;
  auto model = tiny_model();
  std::vector<BranchRow> rows{BranchRow({1, 2}), BranchRow(std::vector<int32_t>(30, 7)), BranchRow({3}),
                              BranchRow(std::vector<int32_t>(28, 9))};
  ASSERT_EQ(prefill_groups({2, 30, 1, 28}, kPrefillForwardCost).size(), 2u) << "the case must split";
  KvCache one, grouped;
  set_grouped_prefill(false);
  auto l_one = prefill_rows(*model, rows, 4, 0, one);
  set_grouped_prefill(true);
  torch::Tensor hidden;
  auto l_grouped = prefill_rows(*model, rows, 4, 0, grouped, nullptr, &hidden);
  expect_same_prefill(l_one, one, l_grouped, grouped, "grouped");
  EXPECT_EQ(hidden.size(0), 4);
  for (int step = 0; step < 3; ++step) {
    std::vector<int32_t> t{11, 12, 13, 14};
    auto a = step_rows(*model, t, one);
    auto b = step_rows(*model, t, grouped);
    EXPECT_TRUE(fp32_close(a, b)) << "decode step " << step;
  }
}
