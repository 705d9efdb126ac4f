// Eval configs: grids expand in a stable order with readable labels, method keys overlay the
// method's defaults, bad input names the line/column and lists the known names, train-only sets
// are refused, and the resolved config is stable.
#include <filesystem>

#include <gtest/gtest.h>

#include "core/error.h"
#include "eval/eval_config.h"
#include "eval/run_dir.h"
#include "support/error_of.h"

using namespace safedec;
using safedec::testing_support::error_of;
using safedec::testing_support::kNoError;

namespace {
EvalConfig parse(const std::string& text) { return parse_eval_config(text, "test.yaml", DatasetRegistry::builtin()); }

const char* kGood = R"(name: t
seed: 3
limit: 5
models: [smollm2-135m-instruct]
methods:
  - plain
  - name: acd
    set: {variant: null_ap}
    grid:
      alpha: [0.25, 1.0]
  - name: steer
    label: steer-paper
    set: {form: paper, alpha: 0.2}
datasets: [advbench, xstest_safe, alpaca_eval_test]
generation: {max_new_tokens: 16, batch_size: 2}
ref_nll: {max_tokens: 32}
)";
}  // namespace

TEST(EvalConfig, GridExpandsInStableOrderWithOverrides) {
  EvalConfig c = parse(kGood);
  EXPECT_EQ(c.name, "t");
  EXPECT_EQ(c.seed, 3u);
  EXPECT_EQ(c.limit, 5u);
  ASSERT_EQ(c.models.size(), 1u);
  EXPECT_EQ(c.models[0].label, "smollm2-135m-instruct");
  ASSERT_EQ(c.methods.size(), 4u);
  EXPECT_EQ(c.methods[0].label, "plain");
  EXPECT_EQ(c.methods[1].label, "acd[alpha=0.25]");
  EXPECT_EQ(c.methods[2].label, "acd[alpha=1.0]");
  EXPECT_EQ(c.methods[1].group, "acd");
  EXPECT_DOUBLE_EQ(c.methods[1].config.acd.alpha, 0.25);
  EXPECT_DOUBLE_EQ(c.methods[2].config.acd.alpha, 1.0);
  EXPECT_EQ(c.methods[2].config.acd.variant, "null_ap") << "`set` applies to every grid point";
  EXPECT_EQ(c.methods[1].config.acd.prompts, "manual") << "unset keys keep configs/methods/acd.yaml's values";
  EXPECT_EQ(c.methods[3].label, "steer-paper");
  EXPECT_EQ(c.methods[3].config.steer.form, "paper");
  EXPECT_DOUBLE_EQ(c.methods[3].config.steer.alpha, 0.2);
  EXPECT_EQ(c.datasets, (std::vector<std::string>{"advbench", "xstest_safe", "alpaca_eval_test"}));
  EXPECT_EQ(c.generation.max_new_tokens, 16);
  EXPECT_EQ(c.generation.batch_size, 2);
  EXPECT_TRUE(c.generation.sampling.greedy());
  EXPECT_EQ(c.generation.sampling.seed, 3u) << "the sampling seed defaults to the run seed";
  EXPECT_EQ(c.ref_nll.max_tokens, 32);
}

TEST(EvalConfig, TwoKeyGridIsTheCartesianProductLastKeyFastest) {
  EvalConfig c = parse(R"(models: [smollm2-135m-instruct]
methods:
  - name: ngsd
    grid: {alpha: [0.2, 0.8], tau: [4, 8]}
datasets: [advbench]
)");
  std::vector<std::string> labels;
  for (const auto& m : c.methods) labels.push_back(m.label);
  EXPECT_EQ(labels, (std::vector<std::string>{"ngsd[alpha=0.2,tau=4]", "ngsd[alpha=0.2,tau=8]",
                                              "ngsd[alpha=0.8,tau=4]", "ngsd[alpha=0.8,tau=8]"}));
  EXPECT_DOUBLE_EQ(c.methods[3].config.ngsd.alpha, 0.8);
  EXPECT_DOUBLE_EQ(c.methods[3].config.ngsd.tau, 8.0);
}

TEST(EvalConfig, DottedKeysReachNestedMaps) {
  YAML::Node n = YAML::Load("alpha: 0.5");
  set_dotted(n, "steer.alpha", YAML::Node(0.3));
  set_dotted(n, "steer.icv", YAML::Node("x.safetensors"));
  EXPECT_DOUBLE_EQ(n["steer"]["alpha"].as<double>(), 0.3);
  EXPECT_EQ(n["steer"]["icv"].as<std::string>(), "x.safetensors");
  EXPECT_DOUBLE_EQ(n["alpha"].as<double>(), 0.5);
}

TEST(EvalConfig, MalformedYamlNamesLineAndColumn) {
  const std::string m = error_of([] { parse("models: [smollm2-135m-instruct\nmethods: [plain]\n"); });
  EXPECT_NE(m.find("test.yaml:"), std::string::npos) << m;
  EXPECT_NE(m.find("malformed YAML"), std::string::npos) << m;
  const std::string tab = error_of([] { parse("models:\n\t- x\n"); });
  EXPECT_NE(tab.find("malformed YAML"), std::string::npos) << tab;
}

TEST(EvalConfig, UnknownKeysNamesAndTrainSetsAreRefused) {
  const std::string base = "models: [smollm2-135m-instruct]\nmethods: [plain]\ndatasets: [advbench]\n";
  std::string m = error_of([&] { parse(base + "limt: 4\n"); });
  EXPECT_NE(m.find("test.yaml:4:1"), std::string::npos) << "line and column of the bad key: " << m;
  EXPECT_NE(m.find("unknown key `limt`"), std::string::npos) << m;

  m = error_of([] { parse("models: [smollm2-135m-instruct]\nmethods: [plain]\ndatasets: [advbenc]\n"); });
  EXPECT_NE(m.find("unknown dataset 'advbenc'"), std::string::npos) << m;
  EXPECT_NE(m.find("xstest_safe"), std::string::npos) << "lists the known datasets: " << m;
  EXPECT_NE(m.find("test.yaml:3:"), std::string::npos) << m;

  m = error_of([] { parse("models: [smollm2-135m-instruct]\nmethods: [plian]\ndatasets: [advbench]\n"); });
  EXPECT_NE(m.find("unknown method 'plian'"), std::string::npos) << m;
  EXPECT_NE(m.find("safedecoding"), std::string::npos) << m;

  m = error_of([] { parse("models: [no-such-model]\nmethods: [plain]\ndatasets: [advbench]\n"); });
  EXPECT_NE(m.find("unknown model 'no-such-model'"), std::string::npos) << m;
  EXPECT_NE(m.find("smollm2-135m-instruct"), std::string::npos) << m;

  m = error_of([] { parse("models: [smollm2-135m-instruct]\nmethods: [plain]\ndatasets: [donotanswer]\n"); });
  EXPECT_NE(m.find("donotanswer"), std::string::npos) << m;
  EXPECT_NE(m.find("train"), std::string::npos) << "evaluating on a training pool is refused: " << m;
  for (const std::string pool : {"safety_tuned", "harmfulqa", "catqa", "hh_harmless", "benign_instructions"}) {
    m = error_of([&] { parse("models: [smollm2-135m-instruct]\nmethods: [plain]\ndatasets: [" + pool + "]\n"); });
    EXPECT_NE(m.find("test.yaml:3:12: refusing to evaluate on dataset '" + pool + "'"), std::string::npos) << m;
  }

  m = error_of([&] { parse(base + "judge: gpt4\n"); });
  EXPECT_NE(m.find("unknown judge 'gpt4'"), std::string::npos) << m;
  EXPECT_NE(m.find("keyword"), std::string::npos) << m;

  m = error_of([] {
    parse("models: [smollm2-135m-instruct]\nmethods:\n  - name: acd\n    set: {alpah: 1}\ndatasets: [advbench]\n");
  });
  EXPECT_NE(m.find("alpah"), std::string::npos) << "method keys are checked by the method parser: " << m;

  m = error_of([] {
    parse("models: [smollm2-135m-instruct]\nmethods: [plain, plain]\ndatasets: [advbench]\n");
  });
  EXPECT_NE(m.find("appears twice"), std::string::npos) << m;

  m = error_of([&] { parse(base + "generation: {batch_size: 0}\n"); });
  EXPECT_NE(m.find("batch_size"), std::string::npos) << m;

  m = error_of([] { parse("methods: [plain]\ndatasets: [advbench]\n"); });
  EXPECT_NE(m.find("`models`"), std::string::npos) << m;
}

TEST(EvalConfig, ResolvedConfigIsCompleteAndStable) {
  const std::string a = canonical_yaml(parse(kGood).resolved());
  const std::string b = canonical_yaml(parse(std::string("# same values, other layout\n") + kGood).resolved());
  EXPECT_EQ(a, b);
  EXPECT_NE(a.find("acd[alpha=0.25]"), std::string::npos);
  EXPECT_NE(a.find("opposite_prompt"), std::string::npos) << "method defaults are written out";
  EXPECT_NE(a.find("max_new_tokens: 16"), std::string::npos) << a;
  std::string changed = kGood;
  changed.replace(changed.find("limit: 5"), 8, "limit: 6");
  EXPECT_NE(a, canonical_yaml(parse(changed).resolved()));
}

// A models entry may choose the weights (the registry's choice otherwise); the choice is written to
// the resolved config only when made, so run directories from before the key resume unchanged.
TEST(EvalConfig, ModelWeightsAreChosenPerEntryAndChecked) {
  const std::string tail = "methods: [plain]\ndatasets: [advbench]\n";
  EvalConfig c = parse("models:\n  - {name: smollm2-135m-instruct, weights: quantized}\n" + tail);
  ASSERT_EQ(c.models.size(), 1u);
  EXPECT_EQ(c.models[0].weights, "quantized");
  EXPECT_NE(canonical_yaml(c.resolved()).find("weights: quantized"), std::string::npos);
  EXPECT_EQ(canonical_yaml(parse("models: [smollm2-135m-instruct]\n" + tail).resolved()).find("weights:"),
            std::string::npos);
  std::string m = error_of([&] { parse("models:\n  - {name: smollm2-135m-instruct, weights: int4}\n" + tail); });
  EXPECT_NE(m.find("test.yaml:2:5"), std::string::npos) << m;
  EXPECT_NE(m.find("'int4'; allowed: fp32, quantized"), std::string::npos) << m;
  m = error_of([&] {
    parse("models:\n  - {name: smollm2-135m-instruct, weights: quantized, hdr: x.safetensors}\n" + tail);
  });
  EXPECT_NE(m.find("cannot be combined with `weights: quantized`"), std::string::npos) << m;
}

// The shipped eval configs parse, and the main job's trained methods point at the artifacts that
// scripts/run.sh builds (the run.sh loop over configs/train/<name>.yaml writes .cache/train/<name>/).
TEST(EvalConfig, ShippedConfigsUseTheTrainedArtifacts) {
  const std::string root = SAFEDEC_SOURCE_DIR;
  for (const char* file : {"/configs/quickstart.yaml", "/configs/full.yaml"}) {
    SCOPED_TRACE(file);
    const EvalConfig c = load_eval_config(root + file, DatasetRegistry::builtin());
    const EvalMethodSpec* sd = nullptr;
    const EvalMethodSpec* ngsd = nullptr;
    for (const auto& m : c.methods) {
      if (m.label == "safedecoding_lora") sd = &m;
      if (m.label == "ngsd_trained") ngsd = &m;
    }
    ASSERT_NE(sd, nullptr) << "no method labelled safedecoding_lora";
    ASSERT_NE(ngsd, nullptr) << "no method labelled ngsd_trained";
    EXPECT_EQ(sd->config.safedecoding.expert, "lora");
    EXPECT_EQ(sd->config.safedecoding.adapter, ".cache/train/safedecoding_expert/artifact");
    EXPECT_EQ(ngsd->config.ngsd.expert, "lora");
    EXPECT_EQ(ngsd->config.ngsd.expert_adapter, ".cache/train/ngsd_expert/artifact");
    EXPECT_EQ(ngsd->config.ngsd.risk, "probe");
    EXPECT_EQ(ngsd->config.ngsd.probe, ".cache/train/risk_probe/artifact");
    EXPECT_EQ(ngsd->config.ngsd.gate, ".cache/train/ngsd_gate/artifact");
  }
}

// Every evaluation config shipped in configs/ (quickstart, full and the experiment configs) parses,
// with its method keys checked, so a renamed key cannot leave a config that only fails at run time.
TEST(EvalConfig, EveryShippedEvalConfigParses) {
  const std::string root = SAFEDEC_SOURCE_DIR;
  int parsed = 0;
  for (const auto& e : std::filesystem::directory_iterator(root + "/configs")) {
    if (e.path().extension() != ".yaml") continue;
    SCOPED_TRACE(e.path().string());
    const EvalConfig c = load_eval_config(e.path().string(), DatasetRegistry::builtin());
    EXPECT_FALSE(c.methods.empty());
    EXPECT_FALSE(c.datasets.empty());
    ++parsed;
  }
  EXPECT_GE(parsed, 5) << "configs/ should hold quickstart, full and the experiment configs";
}

TEST(EvalConfig, SpeedSettingsAreReadAndCheckedWithLineAndColumn) {
  const std::string base = "models: [smollm2-135m-instruct]\nmethods: [plain, acd]\ndatasets: [advbench]\n";
  EvalConfig c = parse(base);
  EXPECT_FALSE(c.speed.enabled) << "no `speed` key: no paired measurement";
  EXPECT_FALSE(c.resolved()["speed"]) << "and the resolved config of such a run is unchanged";
  c = parse(base + "speed: on\n");
  EXPECT_TRUE(c.speed.enabled);
  EXPECT_EQ(c.speed.pairs, 5);
  EXPECT_EQ(c.speed.new_tokens, 32);
  EXPECT_FALSE(parse(base + "speed: off\n").speed.enabled);
  c = parse(base + "speed: {pairs: 3, prompts: 2, new_tokens: 16, noisy_spread: 0.4}\n");
  EXPECT_TRUE(c.speed.enabled);
  EXPECT_EQ(c.speed.pairs, 3);
  EXPECT_EQ(c.speed.prompts, 2);
  EXPECT_EQ(c.speed.new_tokens, 16);
  EXPECT_DOUBLE_EQ(c.speed.noisy_spread, 0.4);
  EXPECT_EQ(c.resolved()["speed"]["pairs"].as<int>(), 3);
  EXPECT_DOUBLE_EQ(c.resolved()["speed"]["noisy_spread"].as<double>(), 0.4);

  std::string m = error_of([&] { parse(base + "speed: {pairs: 3, pears: 2}\n"); });
  EXPECT_NE(m.find("test.yaml:4:"), std::string::npos) << m;
  EXPECT_NE(m.find("unknown key `pears`"), std::string::npos) << m;
  m = error_of([&] { parse(base + "speed: sometimes\n"); });
  EXPECT_NE(m.find("test.yaml:4:8: `speed` must be off, on or a mapping"), std::string::npos) << m;
  m = error_of([&] { parse(base + "speed: [1, 2]\n"); });
  EXPECT_NE(m.find("`speed` must be off, on or a mapping"), std::string::npos) << m;
  m = error_of([&] { parse(base + "speed: {pairs: 0}\n"); });
  EXPECT_NE(m.find("test.yaml:4:8: speed.pairs must be in 1..1000 (got 0)"), std::string::npos) << m;
  m = error_of([&] { parse(base + "speed: {prompts: 0}\n"); });
  EXPECT_NE(m.find("speed.prompts must be in 1..1024"), std::string::npos) << m;
  m = error_of([&] { parse(base + "speed: {new_tokens: 1}\n"); });
  EXPECT_NE(m.find("speed.new_tokens must be in 2..4096 (got 1)"), std::string::npos) << m;
  m = error_of([&] { parse(base + "speed: {noisy_spread: -0.1}\n"); });
  EXPECT_NE(m.find("speed.noisy_spread must be a number > 0"), std::string::npos) << m;
  m = error_of([&] { parse(base + "speed: {pairs: many}\n"); });
  EXPECT_NE(m.find("`speed` key `pairs` has a value of the wrong type ('many')"), std::string::npos) << m;
}

// A datasets entry may carry its own limit (e.g. enough xstest_safe rows for a narrow over-refusal
// interval); plain names keep the run's limit and stay plain in the resolved config, so run
// directories from before the key resume unchanged.
TEST(EvalConfig, DatasetsMayCarryTheirOwnLimit) {
  const std::string head = "limit: 20\nmodels: [smollm2-135m-instruct]\nmethods: [plain]\n";
  EvalConfig c = parse(head + "datasets:\n  - advbench\n  - {name: xstest_safe, limit: 100}\n  - {name: gcg, limit: 0}\n");
  ASSERT_EQ(c.datasets, (std::vector<std::string>{"advbench", "xstest_safe", "gcg"}));
  EXPECT_EQ(c.limit_for("advbench"), 20u);
  EXPECT_EQ(c.limit_for("xstest_safe"), 100u);
  EXPECT_EQ(c.limit_for("gcg"), 0u) << "0 = every row, as for the run's limit";
  EXPECT_EQ(limit_overrides(c), " (xstest_safe: 100, gcg: all rows)");
  const std::string resolved = canonical_yaml(c.resolved());
  EXPECT_NE(resolved.find("- advbench"), std::string::npos) << resolved;
  EXPECT_NE(resolved.find("limit: 100"), std::string::npos) << resolved;
  EXPECT_EQ(limit_overrides(parse(head + "datasets: [advbench]\n")), "");
  EXPECT_EQ(canonical_yaml(parse(head + "datasets: [advbench, xstest_safe, gcg]\n").resolved()).find("name: xstest_safe"),
            std::string::npos);

  std::string m = error_of([&] { parse(head + "datasets:\n  - {name: xstest_safe, limt: 100}\n"); });
  EXPECT_NE(m.find("limt"), std::string::npos) << m;
  m = error_of([&] { parse(head + "datasets:\n  - {name: xstest_safe}\n"); });
  EXPECT_NE(m.find("without a `limit`"), std::string::npos) << m;
  EXPECT_NE(m.find("test.yaml:5:5"), std::string::npos) << m;
  m = error_of([&] { parse(head + "datasets:\n  - {name: nosuchset, limit: 3}\n"); });
  EXPECT_NE(m.find("unknown dataset 'nosuchset'"), std::string::npos) << m;
  m = error_of([&] { parse(head + "datasets:\n  - {name: xstest_safe, limit: -4}\n"); });
  EXPECT_NE(m.find("test.yaml:5"), std::string::npos) << m;
}
