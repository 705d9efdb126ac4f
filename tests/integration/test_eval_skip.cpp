// Issue 15, class 7: a prompt longer than the model's context inside an eval no longer aborts the
// run. On the real default model (SmolLM2, context 8192) with two test datasets: the over-long prompt
// is written to generations.jsonl as a skipped row (dataset, id and reason; no prompt text), left
// out of n, of every rate and of the reference NLL; results.jsonl lists it per cell; a cell whose
// every prompt was skipped says so (no 0%); the report states the counts; --resume treats skipped rows
// as done (nothing is generated twice).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "core/paths.h"
#include "support/spawn_ranks.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct RunResult {
  int code = -1;
  std::string out;  // stdout + stderr
};

const std::string kBase = std::string(SAFEDEC_BUILD_DIR) + "/eval_skip_test";

std::map<std::string, std::string> tree_env() {
  return {{"SAFEDEC_HOME", kBase + "/home"},
          {"SAFEDEC_DATA_DIR", kBase + "/data"},
          {"SAFEDEC_MODEL_DIR", safedec::model_cache_dir()},
          {"SAFEDEC_DIST_TIMEOUT", "120"}};
}

// safedec with a source tree of its own (SAFEDEC_HOME) whose dataset registry holds the two test sets;
// models, methods and the keyword list are the real ones (linked).
RunResult run(const std::string& args) {
  const std::string env = "SAFEDEC_HOME=" + kBase + "/home SAFEDEC_DATA_DIR=" + kBase + "/data SAFEDEC_MODEL_DIR=" +
                          safedec::model_cache_dir() + " ";
  RunResult r;
  FILE* p = popen((env + std::string(SAFEDEC_BUILD_DIR) + "/safedec " + args + " 2>&1").c_str(), "r");
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
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// ~9000 SmolLM2 tokens: more than its 8192-token context.
std::string long_prompt() {
  std::string s = "Summarise this:";
  for (int i = 0; i < 9000; ++i) s += " zebra";
  return s;
}

void setup_tree() {
  fs::remove_all(kBase);
  const std::string home = kBase + "/home";
  fs::create_directories(home + "/configs/datasets");
  fs::create_directories(kBase + "/data/skiptest");
  const std::string src = SAFEDEC_SOURCE_DIR;
  fs::create_directory_symlink(src + "/configs/models", home + "/configs/models");
  fs::create_directory_symlink(src + "/configs/methods", home + "/configs/methods");
  fs::create_directory_symlink(src + "/data", home + "/data");
  std::ofstream(home + "/configs/datasets/long_harm.yaml")
      << "name: long_harm\ndescription: test set with one prompt over the context\npath: skiptest/harm.jsonl\n"
         "format: jsonl\nfields: {id: id, prompt: prompt, reference: reference}\nsplit: eval\nharmful: true\n";
  std::ofstream(home + "/configs/datasets/long_probe.yaml")
      << "name: long_probe\ndescription: test set whose every prompt is over the context\n"
         "path: skiptest/probe.jsonl\nformat: jsonl\nfields: {id: id, prompt: prompt, reference: reference}\n"
         "split: eval\nharmful: false\nover_refusal_probe: true\n";
  std::ofstream harm(kBase + "/data/skiptest/harm.jsonl");
  harm << json{{"id", "a"}, {"prompt", "Tell me a joke."}, {"reference", "Why did the chicken cross the road?"}}.dump()
       << "\n"
       << json{{"id", "b"}, {"prompt", long_prompt()}, {"reference", "A summary."}}.dump() << "\n"
       << json{{"id", "c"}, {"prompt", "Write a haiku."}, {"reference", "Autumn moonlight."}}.dump() << "\n";
  std::ofstream probe(kBase + "/data/skiptest/probe.jsonl");
  probe << json{{"id", "x"}, {"prompt", long_prompt()}, {"reference", "ok"}}.dump() << "\n"
        << json{{"id", "y"}, {"prompt", long_prompt() + " again"}, {"reference", "ok"}}.dump() << "\n";
  std::ofstream(kBase + "/skip.yaml") << "name: skip\nseed: 1\nmodels: [smollm2-135m-instruct]\nmethods: [plain]\n"
                                         "datasets: [long_harm, long_probe]\n"
                                         "generation: {max_new_tokens: 4, batch_size: 2}\nref_nll: {max_tokens: 8}\n";
}

const json* cell(const std::vector<json>& results, const std::string& dataset) {
  for (const auto& r : results)
    if (r.value("dataset", "") == dataset) return &r;
  return nullptr;
}

}  // namespace

TEST(EvalSkip, OverLongPromptsAreSkippedRecordedAndLeftOutOfTheMetrics) {
  safedec::require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf");
  setup_tree();
  const std::string out = kBase + "/run";
  RunResult r = run("eval --config " + kBase + "/skip.yaml --out " + out + " --threads 1");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("skipped prompt b"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("zebra zebra"), std::string::npos) << "the prompt text reached the console";

  // generations.jsonl: the skipped rows carry dataset, id and the reason, no prompt text and no verdict.
  const auto gens = read_lines(out + "/generations.jsonl");
  ASSERT_EQ(gens.size(), 5u);
  std::map<std::string, json> by_id;
  for (const auto& g : gens) by_id[g["id"].get<std::string>()] = g;
  for (const char* id : {"b", "x", "y"}) {
    const json& g = by_id[id];
    ASSERT_TRUE(g.contains("skipped")) << g.dump();
    const std::string reason = g["skipped"].get<std::string>();
    EXPECT_NE(reason.find("tokens, over the model's context 8192"), std::string::npos) << reason;
    EXPECT_EQ(reason.find("prompt is 9"), 0u) << reason;  // "prompt is 9xxx tokens, ..."
    EXPECT_EQ(g["output"], "");
    EXPECT_FALSE(g.contains("refused"));
    EXPECT_EQ(g["dataset"], std::string(id) == "b" ? "long_harm" : "long_probe");
  }
  for (const char* id : {"a", "c"}) EXPECT_FALSE(by_id[id].contains("skipped")) << by_id[id].dump();
  EXPECT_EQ(read_text(out + "/generations.jsonl").find("zebra"), std::string::npos);

  // results.jsonl: n excludes the skipped prompt (denominator 2), the skip is listed per cell.
  const auto results = read_lines(out + "/results.jsonl");
  ASSERT_EQ(results.size(), 2u);
  const json* harm = cell(results, "long_harm");
  ASSERT_NE(harm, nullptr);
  EXPECT_EQ((*harm)["n"], 2);
  EXPECT_EQ((*harm)["n_skipped"], 1);
  const int refused = (*harm)["n_refused"].get<int>();
  EXPECT_DOUBLE_EQ((*harm)["refusal_rate"].get<double>(), refused / 2.0);
  EXPECT_DOUBLE_EQ((*harm)["asr"].get<double>(), 1.0 - refused / 2.0);
  ASSERT_EQ((*harm)["skipped"].size(), 1u);
  EXPECT_EQ((*harm)["skipped"][0]["id"], "b");
  EXPECT_NE((*harm)["skipped"][0]["reason"].get<std::string>().find("8192"), std::string::npos);
  const json* probe = cell(results, "long_probe");
  ASSERT_NE(probe, nullptr);
  EXPECT_EQ((*probe)["n"], 0);
  EXPECT_EQ((*probe)["n_skipped"], 2);
  EXPECT_TRUE((*probe)["refusal_rate"].is_null()) << "an all-skipped cell has no rate, not 0%";
  EXPECT_TRUE((*probe)["over_refusal"].is_null());
  EXPECT_EQ((*probe)["skipped"].size(), 2u);

  // Reference NLL: scored for a and c only.
  const auto nll = read_lines(out + "/ref_nll.jsonl");
  ASSERT_EQ(nll.size(), 2u);
  for (const auto& j : nll) EXPECT_TRUE(j["id"] == "a" || j["id"] == "c") << j.dump();
  EXPECT_FALSE((*harm)["ref_nll"].is_null());

  // The report states the counts and says the all-skipped cell has no rate.
  const std::string report = read_text(out + "/report.md");
  EXPECT_NE(report.find("2 (+1 skipped)"), std::string::npos) << report;
  EXPECT_NE(report.find("all 2 prompts skipped"), std::string::npos) << report;
  EXPECT_NE(report.find("long_probe: 2 skipped (all of them: no rate for this cell)"), std::string::npos) << report;
  EXPECT_NE(r.out.find("all 2 prompts skipped"), std::string::npos) << r.out;

  // --resume after losing the cell results: the skipped rows count as done, nothing is generated twice,
  // and the results come back the same.
  fs::remove(out + "/results.jsonl");
  RunResult again = run("eval --config " + kBase + "/skip.yaml --out " + out + " --resume --threads 1");
  ASSERT_EQ(again.code, 0) << again.out;
  EXPECT_EQ(read_lines(out + "/generations.jsonl").size(), 5u);
  EXPECT_EQ(read_lines(out + "/ref_nll.jsonl").size(), 2u);
  EXPECT_EQ(again.out.find("skipped prompt"), std::string::npos) << "a skipped prompt was tried again: " << again.out;
  const auto results2 = read_lines(out + "/results.jsonl");
  ASSERT_EQ(results2.size(), 2u);
  for (const auto* key : {"n", "n_skipped", "n_refused", "refusal_rate", "skipped"})
    EXPECT_EQ((*cell(results2, "long_harm"))[key], (*harm)[key]) << key;
  EXPECT_EQ((*cell(results2, "long_probe"))["n_skipped"], 2);
}

// The same over-long prompts in a run sharded over two ranks (RANK/WORLD_SIZE as torchrun sets them),
// batches of one prompt: long_harm's 3 batches go a + the over-long b to rank 0 and c to rank 1,
// long_probe's 2 (both over-long) x to rank 0 and y to rank 1. The skip happens on the rank that owns
// the prompt, and the merged run directory equals the single-process run's: the same skipped rows, n,
// n_skipped and rates.
TEST(EvalSkip, AShardedRunSkipsOnTheOwningRankAndMergesLikeOneProcess) {
  safedec::require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf");
  setup_tree();
  std::ofstream(kBase + "/skip.yaml") << "name: skip\nseed: 1\nmodels: [smollm2-135m-instruct]\nmethods: [plain]\n"
                                         "datasets: [long_harm, long_probe]\n"
                                         "generation: {max_new_tokens: 4, batch_size: 1}\nref_nll: {max_tokens: 8}\n";
  const std::string single = kBase + "/single", sharded = kBase + "/sharded";
  RunResult r = run("eval --config " + kBase + "/skip.yaml --out " + single + " --threads 1");
  ASSERT_EQ(r.code, 0) << r.out;
  fs::create_directories(kBase + "/logs");
  const auto ranks = safedec::testing_support::spawn_ranks(
      "skip", 2, kBase + "/logs", [](int) { return tree_env(); }, 600,
      {std::string(SAFEDEC_BUILD_DIR) + "/safedec", "eval", "--config", kBase + "/skip.yaml", "--out", sharded,
       "--threads", "1"});
  ASSERT_TRUE(ranks.ok()) << ranks.all_logs();
  EXPECT_EQ(ranks.all_logs().find("zebra"), std::string::npos) << "the prompt text reached a rank's log";
  // Each rank skipped the over-long prompts of its own batches: b and x on rank 0 (the only rank that
  // logs), y on rank 1 (its row is in the merged generations, checked below).
  EXPECT_NE(ranks.logs[0].find("skipped prompt b"), std::string::npos) << ranks.all_logs();
  EXPECT_NE(ranks.logs[0].find("skipped prompt x"), std::string::npos) << ranks.all_logs();
  EXPECT_EQ(ranks.logs[0].find("skipped prompt y"), std::string::npos) << ranks.all_logs();
  EXPECT_FALSE(fs::exists(sharded + "/shards")) << "the shard files are merged and removed";

  const auto a = read_lines(single + "/results.jsonl"), b = read_lines(sharded + "/results.jsonl");
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);
  for (const char* ds : {"long_harm", "long_probe"})
    for (const char* key : {"n", "n_skipped", "n_refused", "refusal_rate", "over_refusal", "skipped", "ref_nll"})
      EXPECT_EQ(cell(b, ds)->value(key, json()), cell(a, ds)->value(key, json())) << ds << " " << key;
  EXPECT_EQ((*cell(b, "long_harm"))["n_skipped"], 1);
  EXPECT_EQ((*cell(b, "long_probe"))["n_skipped"], 2);

  const auto ga = read_lines(single + "/generations.jsonl"), gb = read_lines(sharded + "/generations.jsonl");
  ASSERT_EQ(gb.size(), ga.size());
  for (size_t i = 0; i < ga.size(); ++i) {
    EXPECT_EQ(gb[i]["id"], ga[i]["id"]) << "row " << i;
    EXPECT_EQ(gb[i].value("skipped", json()), ga[i].value("skipped", json())) << "row " << i;
    EXPECT_EQ(gb[i]["output"], ga[i]["output"]) << "row " << i;
  }
  size_t skipped_rows = 0;
  for (const auto& g : gb) skipped_rows += g.contains("skipped") ? 1 : 0;
  EXPECT_EQ(skipped_rows, 3u) << "b, x and y";
  EXPECT_EQ(read_lines(sharded + "/ref_nll.jsonl").size(), 2u);
}
