// Sharded evaluation: `safedec eval` started as two ranks on 127.0.0.1 (RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT as torchrun sets them) on the real default model. The merged results.jsonl,
// generations.jsonl and ref_nll.jsonl equal a single-process run's (greedy; timings aside), the
// manifest records world_size 2 and the shard files are gone; a rank killed mid-run makes the other
// stop with a clear error and --resume finishes the run to the same results; ranks started with
// different configs are refused before any model is loaded.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "core/paths.h"
#include "support/spawn_ranks.h"

namespace fs = std::filesystem;
using nlohmann::json;
using safedec::testing_support::RankRun;
using safedec::testing_support::spawn_ranks;
using safedec::testing_support::start_ranks;
using safedec::testing_support::wait_ranks;

namespace {

std::string exe() { return std::string(SAFEDEC_BUILD_DIR) + "/safedec"; }
std::string dir(const std::string& name) { return std::string(SAFEDEC_BUILD_DIR) + "/dist_eval_test_" + name; }

// A hung collective gives up after 120 s instead of the default 30 min.
std::map<std::string, std::string> bounded_wait(int) { return {{"SAFEDEC_DIST_TIMEOUT", "120"}}; }

std::vector<json> read_lines(const std::string& path) {
  std::vector<json> rows;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

// 5 prompts per set = 3 batches of 2 over 2 ranks (rank 0: the first two batches, rank 1: the last);
// advbench (harmful) and alpaca_eval_test (reference NLL).
const char* kConfig = R"(name: dist
seed: 3
limit: 5
models: [smollm2-135m-instruct]
methods: [plain]
datasets: [advbench, alpaca_eval_test]
generation: {max_new_tokens: 6, batch_size: 2}
ref_nll: {max_tokens: 8}
)";

std::string config_path() {
  const std::string p = dir("config") + ".yaml";
  std::ofstream(p) << kConfig;
  return p;
}

RankRun run_ranks(const std::string& out, const std::string& role, std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {exe(), "eval", "--config", config_path(), "--out", out, "--threads", "1"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  fs::create_directories(dir("logs"));
  return spawn_ranks(role, 2, dir("logs"), bounded_wait, 900, argv);
}

// The single-process reference run, made once per test process by the binary under test (a copy
// left in the build tree by an older binary would compare two builds, not one and two processes).
std::string reference() {
  const std::string ref = dir("reference");
  static bool made = false;
  if (!made) {
    made = true;
    fs::remove_all(ref);
    const std::string cmd = exe() + " eval --config " + config_path() + " --out " + ref + " --threads 1 > " +
                            dir("reference") + ".log 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << "the single-process run failed: see " << dir("reference") << ".log";
  }
  return ref;
}

std::string gen_key(const json& g) {
  return g["method"].get<std::string>() + "/" + g["dataset"].get<std::string>() + "/" + g["id"].get<std::string>();
}

void expect_same_as_reference(const std::string& out) {
  const std::string ref = reference();
  const auto a = read_lines(ref + "/results.jsonl"), b = read_lines(out + "/results.jsonl");
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);
  for (size_t i = 0; i < a.size(); ++i) {
    json x = a[i], y = b[i];
    x.erase("decode_tok_s");  // a timing
    y.erase("decode_tok_s");
    EXPECT_EQ(x, y) << "cell " << i;  // exactly: ranks batch the prompts as one process does
  }
  // Generations: the same rows in the same order (the dataset's), timings aside.
  const auto ga = read_lines(ref + "/generations.jsonl"), gb = read_lines(out + "/generations.jsonl");
  ASSERT_EQ(ga.size(), 10u);
  ASSERT_EQ(gb.size(), ga.size());
  for (size_t i = 0; i < ga.size(); ++i) {
    EXPECT_EQ(gen_key(ga[i]), gen_key(gb[i])) << "row " << i;
    for (const char* k : {"output", "refused", "new_tokens", "finish_reason", "judge_reason"})
      EXPECT_EQ(ga[i].value(k, json()), gb[i].value(k, json())) << k << " of " << gen_key(ga[i]);
  }
  const auto na = read_lines(ref + "/ref_nll.jsonl"), nb = read_lines(out + "/ref_nll.jsonl");
  ASSERT_EQ(na.size(), nb.size());
  for (size_t i = 0; i < na.size(); ++i) {
    EXPECT_EQ(na[i]["id"], nb[i]["id"]);
    EXPECT_EQ(na[i]["tokens"], nb[i]["tokens"]);
    EXPECT_EQ(na[i]["nll_sum"], nb[i]["nll_sum"]);
  }
  const json manifest = json::parse(std::ifstream(out + "/manifest.json"));
  EXPECT_EQ(manifest["extra"]["world_size"], 2);
  EXPECT_TRUE(fs::exists(out + "/report.md"));
  EXPECT_FALSE(fs::exists(out + "/shards")) << "the shard files are merged and removed";
}

}  // namespace

TEST(DistEval, TwoRanksMergeToTheSingleProcessResults) {
  safedec::require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf");
  const std::string out = dir("two");
  fs::remove_all(out);
  const RankRun run = run_ranks(out, "two");
  ASSERT_TRUE(run.ok()) << run.all_logs();
  expect_same_as_reference(out);
  // Rank 0 alone prints the table; rank 1 prints nothing but its own failures.
  EXPECT_NE(run.logs[0].find("plain"), std::string::npos) << run.all_logs();
}

TEST(DistEval, AKilledRankStopsTheOtherAndResumeFinishes) {
  safedec::require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf");
  const std::string out = dir("killed");
  fs::remove_all(out);
  std::vector<std::string> argv = {exe(), "eval", "--config", config_path(), "--out", out, "--threads", "1"};
  fs::create_directories(dir("logs"));
  auto started = start_ranks("killed", 2, dir("logs"), bounded_wait, argv);
  // Kill rank 1 (SIGKILL: no goodbye) once it has written its first generation.
  const std::string shard = out + "/shards/rank-1/generations.jsonl";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  bool killed = false;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!read_lines(shard).empty()) {
      ::kill(started.pids[1], SIGKILL);
      killed = true;
      break;
    }
    if (::waitpid(started.pids[1], nullptr, WNOHANG) == started.pids[1]) {
      started.pids[1] = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const RankRun run = wait_ranks(started, 600);
  ASSERT_TRUE(killed) << "rank 1 ended before it could be killed\n" << run.all_logs();
  EXPECT_EQ(run.codes[0], 2) << run.all_logs();
  EXPECT_NE(run.logs[0].find("Another rank probably stopped"), std::string::npos) << run.all_logs();
  EXPECT_LT(read_lines(out + "/results.jsonl").size(), 2u) << "the run was interrupted";

  const RankRun resumed = run_ranks(out, "resumed", {"--resume"});
  ASSERT_TRUE(resumed.ok()) << resumed.all_logs();
  expect_same_as_reference(out);
}

TEST(DistEval, RanksWithDifferentConfigsAreRefused) {
  const std::string out = dir("mismatch");
  fs::remove_all(out);
  fs::create_directories(dir("logs"));
  // Rank 1 gets another --limit: the resolved configs differ.
  const std::string cfg = config_path();
  RankRun run = spawn_ranks("mismatch", 2, dir("logs"),
                            [&](int r) {
                              return std::map<std::string, std::string>{{"SAFEDEC_TEST_LIMIT", r == 0 ? "5" : "4"}};
                            },
                            300, {"/bin/sh", "-c", exe() + " eval --config " + cfg + " --out " + out +
                                                       " --threads 1 --limit $SAFEDEC_TEST_LIMIT"});
  ASSERT_EQ(run.codes.size(), 2u);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(run.codes[r], 2) << run.all_logs();
    EXPECT_NE(run.logs[r].find("the ranks disagree on the resolved eval config"), std::string::npos) << run.all_logs();
  }
  EXPECT_FALSE(fs::exists(out)) << "nothing is written";
}
