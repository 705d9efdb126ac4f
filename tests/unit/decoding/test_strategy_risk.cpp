// NGSD step A by hand: the self-reflection JSON parser, the risk rule and the alpha thresholds
// (methods.md 1), plus the method YAML parser's defaults and errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/error.h"
#include "decoding/strategies/method_config.h"
#include "decoding/strategies/risk.h"
#include "decoding/strategy_registry.h"

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
