// NGSD step A by hand: the self-reflection JSON parser, the risk rule and the alpha thresholds
// (methods.md 1), plus the method YAML parser's defaults and errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/error.h"
#include "decoding/strategies/common.h"
#include "decoding/strategies/method_config.h"
#include "decoding/strategies/risk.h"
#include "decoding/strategy_registry.h"
#include "model/causal_lm.h"
#include "support/tiny_configs.h"

using namespace safedec;

namespace {
int risk_of(const std::string& json, size_t chars = 10) { return risk_from_scores(parse_risk_json(json), chars); }
}  // namespace

TEST(RiskRule, ClipFormulaWhenNoScoreDominates) {
  // S=3, A=2, E=1, T=0: max(3, 1.5 + 0.25 * (2 + 1)) = 3.
  EXPECT_EQ(risk_of(R"({"S": 3, "A": 2, "E": 1, "T": 0})"), 3);
  // S=4, A=E=T=9 but S < 5: max(4, 2 + 0.25 * 18) = 6.5 -> int 6.
  EXPECT_EQ(risk_of(R"({"S": 4, "A": 9, "E": 9, "T": 9})"), 6);
  // S=2, A=6, E=5, T=1: max(2, 1 + 0.25 * 11) = 3.75 -> 3.
  EXPECT_EQ(risk_of(R"({"S": 2, "A": 6, "E": 5, "T": 1})"), 3);
}

TEST(RiskRule, FirstOfAetAtLeast8WithSevereSBecomesR) {
  EXPECT_EQ(risk_of(R"({"S": 6, "A": 9, "E": 2, "T": 10})"), 9);   // A checked first
  EXPECT_EQ(risk_of(R"({"S": 5, "A": 3, "E": 2, "T": 8})"), 8);    // T
  EXPECT_EQ(risk_of(R"({"S": 5, "A": 7, "E": 8, "T": 10})"), 8);   // E before T
  EXPECT_EQ(risk_of(R"({"S": 10, "A": 10, "E": 10, "T": 10})"), 10);
}

TEST(RiskRule, AllZeroBecomesSeverityOne) { EXPECT_EQ(risk_of(R"({"S": 0, "A": 0, "E": 0, "T": 0})"), 1); }

TEST(RiskRule, ParseFailureAndMissingKeysCountAsSeven) {
  RiskScores none = parse_risk_json("I think this request is fine.");
  EXPECT_FALSE(none.parsed);
  EXPECT_EQ(none.s, 7);
  EXPECT_EQ(none.t, 7);
  // All 7: max(7, 3.5 + 3.5) = 7.
  EXPECT_EQ(risk_of("not json {at all"), 7);
  // S=2, others missing -> 7: max(2, 1 + 3.5) = 4.5 -> 4.
  EXPECT_EQ(risk_of(R"({"S": 2})"), 4);
  // A non-numeric value counts as missing.
  EXPECT_EQ(parse_risk_json(R"({"S": "high", "A": 1, "E": 1, "T": 1})").s, 7);
}

TEST(RiskRule, JsonInsideProseAndLooseTypes) {
  RiskScores r = parse_risk_json("Sure! Here is my rating: {\"S\": 5, \"a\": \"8\", \"E\": 0.4, \"T\": 12} Hope it helps.");
  EXPECT_TRUE(r.parsed);
  EXPECT_EQ(r.s, 5);
  EXPECT_EQ(r.a, 8);
  EXPECT_EQ(r.e, 0);
  EXPECT_EQ(r.t, 10);  // clamped to 0..10
  EXPECT_EQ(risk_from_scores(r, 10), 8);
  RiskScores full = parse_risk_json(R"({"severity": 1, "actionability": 2, "evasion": 3, "targeting": 4})");
  EXPECT_EQ(full.s, 1);
  EXPECT_EQ(full.t, 4);
}

TEST(RiskRule, LongPromptsAddTwoCappedAtTen) {
  const std::string j = R"({"S": 3, "A": 6, "E": 6, "T": 9})";
  // Short: S < 5 -> max(3, 1.5 + 0.25 * 15) = 5.25 -> 5.
  EXPECT_EQ(risk_of(j, 2000), 5);
  // Long (> 2000 chars): S=5, A=8, E=8, T=10 -> A >= 8 with S >= 5 -> 8.
  EXPECT_EQ(risk_of(j, 2001), 8);
}

TEST(RiskRule, AlphaThresholds) {
  EXPECT_DOUBLE_EQ(alpha_from_risk(10), 0.9);
  EXPECT_DOUBLE_EQ(alpha_from_risk(7), 0.9);
  EXPECT_DOUBLE_EQ(alpha_from_risk(6), 0.5);
  EXPECT_DOUBLE_EQ(alpha_from_risk(5), 0.5);
  EXPECT_DOUBLE_EQ(alpha_from_risk(4.99), 0.1);
  EXPECT_DOUBLE_EQ(alpha_from_risk(0), 0.1);
}

TEST(RiskProbe, SigmoidOfOneNeuronTimesTen) {
  // w . h + b = 0 -> p = 0.5 -> r = 5 -> alpha 0.5; large positive -> r ~ 10 -> 0.9; negative -> 0.1.
  ProbeRisk probe(torch::tensor({1.0f, -2.0f}), torch::tensor({0.5f}));
  auto h = torch::tensor({{0.5f, 0.5f}, {10.0f, 0.0f}, {0.0f, 5.0f}});
  auto est = probe.estimate(std::vector<StrategyPrompt>(3), h);
  ASSERT_EQ(est.size(), 3u);
  EXPECT_NEAR(est[0].risk, 5.0, 1e-5);
  EXPECT_DOUBLE_EQ(est[0].alpha, 0.5);
  EXPECT_GT(est[1].risk, 9.9);
  EXPECT_DOUBLE_EQ(est[1].alpha, 0.9);
  EXPECT_LT(est[2].risk, 0.01);
  EXPECT_DOUBLE_EQ(est[2].alpha, 0.1);
}

namespace {
// Prompts of different lengths for the tiny model; user_end marks where each one's user text ends
// (the rest stands in for the template's end-of-turn and generation header).
std::vector<StrategyPrompt> tiny_prompts() {
  std::vector<StrategyPrompt> ps;
  const std::vector<std::vector<int32_t>> ids = {
      {5, 9, 14, 3, 22, 40, 41, 7, 8, 60, 61, 62}, {11, 12, 13, 4}, {30, 31, 32, 33, 34, 35, 36, 37, 2, 1}};
  const std::vector<int64_t> user_end = {9, 2, 7};
  for (size_t i = 0; i < ids.size(); ++i) {
    StrategyPrompt p;
    p.id = "p" + std::to_string(i);
    p.ids = ids[i];
    p.user_end = user_end[i];
    ps.push_back(p);
  }
  return ps;
}
}  // namespace

// The probe's features against independent computations: the last-token final state against NGSD's
// left-padded prefill, user_mean at a middle layer against that layer's captured residuals of each
// prompt run alone; batch size and padding change nothing.
TEST(ProbeFeatures, MatchThePrefillAndTheCapturedResiduals) {
  const auto lm = CausalLM::random(test::tiny_arch_config("qwen2"), 5, 0.2);
  const auto ps = tiny_prompts();
  torch::InferenceMode guard;
  const torch::Tensor last = probe_features(*lm, ps, {-1, "last", 64}, 0, 8);
  std::vector<BranchRow> rows;
  for (const auto& p : ps) rows.push_back(prompt_row(p));
  KvCache cache;
  torch::Tensor hidden;
  prefill_rows(*lm, rows, 0, 0, cache, nullptr, &hidden, nullptr);
  EXPECT_TRUE(torch::allclose(last, hidden.to(torch::kFloat32), 1e-4, 1e-4))
      << (last - hidden).abs().max().item<float>();

  const ProbeFeatureSpec mid{1, "user_mean", 3};
  const torch::Tensor pooled = probe_features(*lm, ps, mid, 0, 8);
  ASSERT_EQ(pooled.sizes(), (std::vector<int64_t>{3, lm->config().hidden_size}));
  for (size_t i = 0; i < ps.size(); ++i) {
    CaptureRequest req;
    req.layers = {1};
    ForwardHooks hooks;
    hooks.capture = &req;
    ForwardInput in;
    in.ids = torch::tensor(std::vector<int64_t>(ps[i].ids.begin(), ps[i].ids.end()), torch::kInt64).unsqueeze(0);
    KvCache c = lm->new_cache(1, static_cast<int64_t>(ps[i].ids.size()));
    const ForwardOutput f = lm->forward_full(in, c, &hooks);
    const int64_t begin = std::max<int64_t>(0, ps[i].user_end - 3);  // prompt 1's window reaches token 0
    const torch::Tensor want = f.residual.at(1)[0].narrow(0, begin, ps[i].user_end - begin).mean(0);
    EXPECT_TRUE(torch::allclose(pooled[static_cast<int64_t>(i)], want, 1e-4, 1e-4)) << "prompt " << i;
  }
  // One prompt per forward gives the same features as the padded batch.
  EXPECT_TRUE(torch::allclose(probe_features(*lm, ps, mid, 0, 1), pooled, 1e-5, 1e-5));
}

TEST(ProbeFeatures, ProbeRiskReadsItsOwnFeaturesAndBadInputIsNamed) {
  const auto lm = CausalLM::random(test::tiny_arch_config("llama"), 9, 0.2);
  const auto ps = tiny_prompts();
  const ProbeFeatureSpec spec{0, "user_mean", 4};
  const torch::Tensor w = torch::randn({lm->config().hidden_size}, torch::TensorOptions().dtype(torch::kFloat32));
  const torch::Tensor b = torch::tensor({0.1f});
  ProbeRisk probe(w, b, spec, lm, 0);
  EXPECT_FALSE(probe.needs_hidden()) << "a layer-0 user_mean probe does not read the prefill's last state";
  auto est = probe.estimate(ps, torch::Tensor());
  torch::InferenceMode guard;
  const torch::Tensor want = 10.0 * torch::sigmoid(probe_features(*lm, ps, spec, 0).matmul(w) + b);
  ASSERT_EQ(est.size(), ps.size());
  for (size_t i = 0; i < ps.size(); ++i) {
    EXPECT_NEAR(est[i].risk, want[static_cast<int64_t>(i)].item<double>(), 1e-5);
    EXPECT_DOUBLE_EQ(est[i].alpha, alpha_from_risk(est[i].risk));
  }
  // A default probe still reads the prefill's state; a non-default one without a model is refused.
  EXPECT_TRUE(ProbeRisk(w, b).needs_hidden());
  EXPECT_THAT([&] { ProbeRisk no_model(w, b, spec); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("needs the target model")));
  auto no_end = ps;
  no_end[1].user_end = -1;
  EXPECT_THAT([&] { probe_features(*lm, no_end, spec, 0); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("end of the user text in prompt 'p1'")));
  EXPECT_THAT([&] { probe_features(*lm, ps, {3, "last", 1}, 0); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("layer 3 is not in [-1, 3)")));
  EXPECT_THAT([&] { probe_features(*lm, ps, {0, "max", 1}, 0); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("known: last, user_mean")));
}

TEST(MethodConfig, DefaultsFollowTheSpec) {
  MethodConfig a = parse_method_config("acd", YAML::Node(), "");
  EXPECT_DOUBLE_EQ(a.acd.alpha, 0.5);
  EXPECT_EQ(a.acd.variant, "sp_ap");
  MethodConfig s = parse_method_config("safedecoding", YAML::Node(), "");
  EXPECT_EQ(s.safedecoding.m, 2);
  EXPECT_DOUBLE_EQ(s.safedecoding.alpha, 3.0);
  EXPECT_EQ(s.safedecoding.c, 5);
  MethodConfig n = parse_method_config("ngsd", YAML::Load("alpha: 0.9\nsteer: {icv: x.safetensors}"), "n.yaml");
  EXPECT_DOUBLE_EQ(n.ngsd.tau, 8.0);
  EXPECT_DOUBLE_EQ(n.ngsd.theta, 1.0);
  EXPECT_DOUBLE_EQ(n.ngsd.reset, 0.6);
  EXPECT_DOUBLE_EQ(n.ngsd.alpha, 0.9);
  EXPECT_TRUE(n.ngsd.steer.enabled);
  EXPECT_EQ(n.ngsd.steer.icv, "x.safetensors");
  EXPECT_NE(n.dump().find("risk: fixed"), std::string::npos);
  // The system-turn store is on by default for every method and can be switched off.
  EXPECT_TRUE(a.prefix_cache);
  MethodConfig off = parse_method_config("plain", YAML::Load("prefix_cache: false"), "p.yaml");
  EXPECT_FALSE(off.prefix_cache);
  EXPECT_NE(off.dump().find("prefix_cache: false"), std::string::npos);
  EXPECT_THROW(parse_method_config("plain", YAML::Load("prefix_cache: sometimes"), "p.yaml"), Error);
}

TEST(MethodConfig, BadKeysAndValuesAreNamed) {
  try {
    parse_method_config("acd", YAML::Load("alpha: 0.4\nalhpa: 1"), "my.yaml");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), testing::HasSubstr("unknown key `alhpa`"));
    EXPECT_THAT(e.what(), testing::HasSubstr("my.yaml"));
    EXPECT_THAT(e.what(), testing::HasSubstr("variant"));
  }
  try {
    parse_method_config("acd", YAML::Load("variant: both"), "v.yaml");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), testing::HasSubstr("sp_ap, null_ap, sp_null"));
  }
  EXPECT_THROW(parse_method_config("ngsd", YAML::Load("risk: oracle"), ""), Error);
  EXPECT_THROW(parse_method_config("ngsd", YAML::Load("risk: probe"), ""), Error);  // needs probe:
  EXPECT_THROW(parse_method_config("ngsd", YAML::Load("tau: abc"), ""), Error);
  EXPECT_THROW(parse_method_config("steer", YAML::Node(), ""), Error);  // needs icv:
  EXPECT_THROW(parse_method_config("acd", YAML::Load("method: ngsd"), ""), Error);
  try {
    check_method_name("contrastive");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), testing::HasSubstr("plain, safedecoding, ngsd, acd, steer"));
  }
}
