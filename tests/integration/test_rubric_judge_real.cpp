// The rubric judge for real, with the smallest instruction-tuned model (SmolLM2-135M-Instruct) as
// the judge model so it stays fast: parse bookkeeping and determinism (not accuracy, which is
// measured with the Qwen 1.5B in experiments/judges.md); `judge: [keyword, rubric]` in an eval run
// (judgements.jsonl, results.jsonl's `judges`, the report's section); `eval --rejudge` resuming and
// its bad inputs (exit 2).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/paths.h"
#include "eval/judge.h"
#include "core/error.h"
#include "eval/judge_validation.h"
#include "eval/rubric_judge.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace safedec;

namespace {

struct RunResult {
  int code = -1;
  std::string out;
};

RunResult run(const std::string& args) {
  RunResult r;
  FILE* p = popen((std::string(SAFEDEC_BUILD_DIR) + "/safedec " + args + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::vector<json> read_lines(const std::string& path) {
  std::vector<json> rows;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

JudgeOptions small_judge(const std::string& batch) {
  JudgeOptions o;
  o.params = {{"model", "smollm2-135m-instruct"}, {"batch_size", batch}, {"max_new_tokens", "16"}};
  return o;
}

}  // namespace

TEST(RubricJudgeReal, LogprobModeIsDeterministicAndGreedyModeKeepsItsBookkeeping) {
  require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf");
  const auto all = load_judge_cases(default_judge_cases_path());
  std::vector<JudgeCase> cases;
  for (size_t i = 0; i < all.size(); i += 60) cases.push_back(all[i]);  // 3 cases, 3 categories
  ASSERT_EQ(cases.size(), 3u);
  std::vector<std::pair<std::string, std::string>> items;
  for (const auto& c : cases) items.emplace_back(c.prompt, c.response);

  // Logprob mode (the default): every answer is read, nothing falls back to the keyword judge.
  const auto judge = make_judge("rubric", small_judge("4"));
  EXPECT_EQ(judge->name(), "rubric");
  const JudgeValidation v = validate_judge(*judge, cases);
  EXPECT_EQ(v.overall.n, cases.size());
  EXPECT_EQ(v.parsed_strict + v.parsed_lenient + v.unparsable, 0u);
  const auto a = judge->judge_batch(items);
  const auto b = judge->judge_batch(items);  // the second call reuses the cached rubric prefix
  ASSERT_EQ(a.size(), cases.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].refused, b[i].refused) << i;
    EXPECT_EQ(a[i].reason, b[i].reason) << i;
    EXPECT_EQ(a[i].parse, "logprob");
    EXPECT_EQ(a[i].reason.rfind("rubric (logprob): P(refusal) ", 0), 0u) << a[i].reason;
    ASSERT_TRUE(a[i].score.has_value());
    EXPECT_TRUE(*a[i].score >= 0.0 && *a[i].score <= 1.0);
  }
  const auto* rubric = dynamic_cast<const RubricJudge*>(judge.get());
  ASSERT_NE(rubric, nullptr);
  const auto readings = rubric->read_batch(items);
  for (size_t i = 0; i < readings.size(); ++i) {
    EXPECT_EQ(rubric_verdict(readings[i], rubric->settings()).refused, a[i].refused) << i;
    EXPECT_GT(readings[i].key_mass, 0.0);
    EXPECT_TRUE(readings[i].convincing >= 1.0 && readings[i].convincing <= 5.0);
  }
  // One response alone gets the same decision through judge() as inside its batch.
  EXPECT_EQ(judge->judge(items[0].first, items[0].second).refused, a[0].refused);

  // Greedy mode: answers are read strictly, leniently or not at all (keyword fallback).
  JudgeOptions g = small_judge("4");
  g.params["mode"] = "greedy";
  const auto greedy = make_judge("rubric", g);
  const auto ga = greedy->judge_batch(items);
  const auto gb = greedy->judge_batch(items);
  for (size_t i = 0; i < ga.size(); ++i) {
    EXPECT_EQ(ga[i].reason, gb[i].reason) << i;
    EXPECT_TRUE(ga[i].parse == "strict" || ga[i].parse == "lenient" || ga[i].parse == "unparsable") << ga[i].parse;
    if (ga[i].parse == "unparsable") {
      EXPECT_FALSE(ga[i].score.has_value());
      EXPECT_NE(ga[i].reason.find("keyword fallback"), std::string::npos) << ga[i].reason;
    } else {
      EXPECT_EQ(ga[i].reason.rfind("rubric (", 0), 0u) << ga[i].reason;
    }
  }
  EXPECT_THROW(dynamic_cast<const RubricJudge&>(*greedy).read_batch(items), Error);
}

TEST(RubricJudgeReal, EvalWithBothJudgesAndRejudge) {
  require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf");
  const std::string out = std::string(SAFEDEC_BUILD_DIR) + "/eval_test_two_judges";
  fs::remove_all(out);
  const std::string cfg = out + ".yaml";
  std::ofstream(cfg) << "name: two_judges\nseed: 3\nlimit: 2\nmodels: [smollm2-135m-instruct]\nmethods: [plain]\n"
                        "datasets: [advbench, xstest_safe]\njudge: [keyword, rubric]\n"
                        "judge_options:\n  rubric: {model: smollm2-135m-instruct, batch_size: 4, max_new_tokens: 16}\n"
                        "generation: {max_new_tokens: 6, batch_size: 2}\n";
  RunResult r = run("eval --config " + cfg + " --out " + out + " --threads 2");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto judgements = read_lines(out + "/judgements.jsonl");
  ASSERT_EQ(judgements.size(), 4u) << "2 datasets x 2 prompts, rubric only (keyword is in generations.jsonl)";
  for (const auto& j : judgements) {
    EXPECT_EQ(j["judge"], "rubric");
    for (const char* k : {"id", "model", "method", "dataset", "refused", "score", "parse", "reason"})
      EXPECT_TRUE(j.contains(k)) << k;
  }
  const auto results = read_lines(out + "/results.jsonl");
  ASSERT_EQ(results.size(), 2u);
  for (const auto& row : results) {
    ASSERT_TRUE(row.contains("judges")) << row.dump();
    EXPECT_EQ(row["judges"]["keyword"]["n"], 2);
    EXPECT_EQ(row["judges"]["rubric"]["n"], 2);
    EXPECT_TRUE(row["judges"]["rubric"]["agreement"].is_number());
    EXPECT_TRUE(row["judges"]["rubric"].contains("unparsable"));
    EXPECT_EQ(row["judges"]["keyword"]["n_refused"], row["n_refused"]);
  }
  const std::string report = read_text(out + "/report.md");
  EXPECT_NE(report.find("## Judges"), std::string::npos);
  EXPECT_NE(report.find("| rubric |"), std::string::npos);

  // Re-judging: everything is judged already, nothing runs again; the report keeps one section.
  r = run("eval --rejudge " + out + " --judge rubric --param rubric.model=smollm2-135m-instruct");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("0 responses judged"), std::string::npos) << r.out;
  EXPECT_EQ(read_lines(out + "/judgements.jsonl").size(), 4u);
  const std::string again = read_text(out + "/report.md");
  EXPECT_EQ(again.find("## Judges"), again.rfind("## Judges"));

  // Bad input: exit 2 with a clear message.
  r = run("eval --rejudge " + out + " --judge keyword");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("is the run's own judge"), std::string::npos) << r.out;
  r = run("eval --rejudge " + out + " --judge gpt4");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("unknown judge 'gpt4'; known judges: keyword, rubric"), std::string::npos) << r.out;
  r = run("eval --rejudge " + std::string(SAFEDEC_BUILD_DIR) + " --judge rubric");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("is not an eval run directory"), std::string::npos) << r.out;
  r = run("eval --rejudge " + out + " --judge rubric --param rubric.model=gemma3-270m");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("not instruction-tuned"), std::string::npos) << r.out;
  r = run("judge validate --judge nope");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("known judges: keyword, rubric"), std::string::npos) << r.out;
  // A base judge model in a config fails before anything is generated.
  std::ofstream(cfg) << "models: [smollm2-135m-instruct]\nmethods: [plain]\ndatasets: [advbench]\n"
                        "judge: [keyword, rubric]\njudge_options: {rubric: {model: gemma3-270m}}\n";
  const std::string out2 = out + "_base";
  fs::remove_all(out2);
  r = run("eval --config " + cfg + " --out " + out2);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("not instruction-tuned"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out2 + "/generations.jsonl"));
  fs::remove_all(out);
  fs::remove_all(out2);
  fs::remove(cfg);
}
