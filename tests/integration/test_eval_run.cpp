// `safedec eval` end to end on the real default model: the run directory holds what the issue
// promises, prompts never reach the console, a killed run resumes to the same results as an
// uninterrupted one, and bad configs exit 2 with a clear message.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "core/paths.h"
#include "eval/dataset.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct RunResult {
  int code = -1;
  std::string out;  // stdout + stderr
};

std::string exe() { return std::string(SAFEDEC_BUILD_DIR) + "/safedec"; }

RunResult run(const std::string& args) {
  RunResult r;
  FILE* p = popen((exe() + " " + args + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string dir(const std::string& name) {
  const std::string d = std::string(SAFEDEC_BUILD_DIR) + "/eval_test_" + name;
  return d;
}

std::string write_config(const std::string& name, const std::string& text) {
  const std::string path = dir(name) + ".yaml";
  std::ofstream(path) << text;
  return path;
}

std::vector<json> read_lines(const std::string& path) {
  std::vector<json> rows;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

size_t count_lines(const std::string& path) {
  std::ifstream in(path);
  size_t n = 0;
  std::string line;
  while (std::getline(in, line)) n += !line.empty();
  return n;
}

// plain + a two-point ACD alpha sweep, one harmful set, the over-refusal probe and the utility set.
const char* kSmall = R"(name: small
seed: 7
limit: 3
models: [smollm2-135m-instruct]
methods:
  - plain
  - name: acd
    grid: {alpha: [0.25, 1.0]}
datasets: [advbench, xstest_safe, alpaca_eval_test]
generation: {max_new_tokens: 8, batch_size: 2}
ref_nll: {max_tokens: 12}
)";

}  // namespace

TEST(EvalRun, WritesResultsGenerationsReportAndNeverPrintsPrompts) {
  safedec::require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf");
  const std::string out = dir("small");
  fs::remove_all(out);
  const std::string cfg = write_config("small", kSmall);
  RunResult r = run("eval --config " + cfg + " --out " + out + " --threads 1");
  ASSERT_EQ(r.code, 0) << r.out;

  auto results = read_lines(out + "/results.jsonl");
  ASSERT_EQ(results.size(), 9u) << "3 methods x 3 datasets";
  for (const auto& j : results) {
    for (const char* k : {"model", "method", "dataset", "judge", "n", "refusal_rate", "refusal_ci95", "asr",
                          "ref_nll", "mean_new_tokens", "decode_tok_s"})
      EXPECT_TRUE(j.contains(k)) << "missing key " << k << " in " << j.dump();
    EXPECT_EQ(j["n"], 3);
    EXPECT_EQ(j["judge"], "keyword");
    const auto ci = j["refusal_ci95"];
    EXPECT_LE(ci[0].get<double>(), j["refusal_rate"].get<double>());
    EXPECT_GE(ci[1].get<double>(), j["refusal_rate"].get<double>());
    const std::string ds = j["dataset"];
    EXPECT_EQ(j["asr"].is_null(), ds != "advbench") << j.dump();
    EXPECT_EQ(j["ref_nll"].is_null(), ds != "alpaca_eval_test") << j.dump();
    if (ds == "alpaca_eval_test") {
      EXPECT_GT(j["ref_nll"].get<double>(), 0.0);
      EXPECT_LE(j["ref_nll"].get<double>(), 20.8) << "at most the floor -log(1e-9)";
      if (j["method"] == "plain") EXPECT_LT(j["ref_nll"].get<double>(), 5.0) << "the model itself reads references well";
    }
  }
  // Method order is the config's: plain, then the sweep in the listed order.
  EXPECT_EQ(results[0]["method"], "plain");
  EXPECT_EQ(results[3]["method"], "acd[alpha=0.25]");
  EXPECT_EQ(results[6]["method"], "acd[alpha=1.0]");

  auto gens = read_lines(out + "/generations.jsonl");
  ASSERT_EQ(gens.size(), 27u);
  for (const auto& g : gens)
    for (const char* k : {"id", "model", "method", "dataset", "output", "finish_reason"})
      EXPECT_TRUE(g.contains(k)) << k;
  for (const char* f : {"/config.resolved.yaml", "/manifest.json", "/report.md", "/ref_nll.jsonl",
                        "/plots/asr_by_dataset.svg", "/plots/safety_vs_over_refusal.svg", "/plots/sweep_acd-alpha.svg"})
    EXPECT_TRUE(fs::exists(out + f)) << f;
  const json manifest = json::parse(std::ifstream(out + "/manifest.json"));
  EXPECT_EQ(manifest["seeds"]["sample"], 7);
  EXPECT_EQ(manifest["models"].size(), 1u);
  EXPECT_EQ(manifest["models"][0]["sha256"].get<std::string>().size(), 64u);
  EXPECT_EQ(manifest["datasets"].size(), 3u);
  // eval re-executes itself with passive OpenMP waits (cli/main.cpp) unless a policy was given.
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  const bool user_set = policy || std::getenv("GOMP_SPINCOUNT");
  EXPECT_EQ(manifest["environment"]["OMP_WAIT_POLICY"], user_set ? (policy ? json(policy) : json(nullptr)) : json("PASSIVE"))
      << manifest["environment"].dump();

  std::stringstream report;
  report << std::ifstream(out + "/report.md").rdbuf();
  EXPECT_NE(report.str().find("acd[alpha=0.25]"), std::string::npos);
  EXPECT_NE(report.str().find("keyword"), std::string::npos) << "the report names its judge";

  // The console shows the table, never a prompt or an output.
  EXPECT_NE(r.out.find("acd[alpha=1.0]"), std::string::npos) << r.out;
  safedec::DatasetLoadOptions lo;
  lo.limit = 3;
  lo.seed = 7;
  const auto reg = safedec::DatasetRegistry::builtin();
  for (const char* name : {"advbench", "xstest_safe", "alpaca_eval_test"})
    for (const auto& ex : safedec::load_dataset(reg.get(name), lo).examples)
      EXPECT_EQ(r.out.find(ex.prompt.substr(0, 40)), std::string::npos) << "a prompt of " << name << " was printed";
  for (const auto& g : gens) {
    const std::string o = g["output"];
    if (o.size() >= 24) EXPECT_EQ(r.out.find(o.substr(0, 24)), std::string::npos) << "an output was printed";
  }

  // Same directory, same config: refused without --resume; with --resume nothing is redone.
  RunResult again = run("eval --config " + cfg + " --out " + out + " --threads 1");
  EXPECT_EQ(again.code, 2) << again.out;
  EXPECT_NE(again.out.find("resume"), std::string::npos) << again.out;
  RunResult resumed = run("eval --config " + cfg + " --out " + out + " --resume --threads 1");
  ASSERT_EQ(resumed.code, 0) << resumed.out;
  EXPECT_NE(resumed.out.find("9 of 9 cells were already finished"), std::string::npos) << resumed.out;
  EXPECT_EQ(count_lines(out + "/generations.jsonl"), 27u);

  // A different config in the same directory is refused (names the difference) unless --force.
  RunResult other = run("eval --config " + cfg + " --out " + out + " --limit 2 --resume --threads 1");
  EXPECT_EQ(other.code, 2) << other.out;
  EXPECT_NE(other.out.find("different resolved config"), std::string::npos) << other.out;
  EXPECT_NE(other.out.find("limit"), std::string::npos) << other.out;
}

TEST(EvalRun, KilledRunResumesToTheSameResults) {
  safedec::require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf");
  const char* cfg_text = R"(name: kill
seed: 1
limit: 6
models: [smollm2-135m-instruct]
methods: [plain, safedecoding]
datasets: [xstest_safe, alpaca_eval_test]
generation: {max_new_tokens: 10, batch_size: 2}
ref_nll: {max_tokens: 8}
)";
  const std::string cfg = write_config("kill", cfg_text);
  const std::string ref = dir("kill_reference"), out = dir("kill");
  fs::remove_all(ref);
  fs::remove_all(out);
  RunResult full = run("eval --config " + cfg + " --out " + ref + " --threads 1");
  ASSERT_EQ(full.code, 0) << full.out;

  // Start the same run and kill -9 it once some generations of the second cell exist.
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int devnull = ::open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    dup2(devnull, 2);
    execl(exe().c_str(), "safedec", "eval", "--config", cfg.c_str(), "--out", out.c_str(), "--threads", "1",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  bool killed = false;
  while (std::chrono::steady_clock::now() < deadline) {
    if (count_lines(out + "/generations.jsonl") >= 9) {  // cell 1 done (6) + part of cell 2
      kill(pid, SIGKILL);
      killed = true;
      break;
    }
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(killed) << "the run ended before it could be killed";
  const size_t before = count_lines(out + "/generations.jsonl");
  EXPECT_LT(count_lines(out + "/results.jsonl"), 4u) << "the run was interrupted";

  RunResult resumed = run("eval --config " + cfg + " --out " + out + " --resume --threads 1");
  ASSERT_EQ(resumed.code, 0) << resumed.out;
  auto a = read_lines(ref + "/results.jsonl");
  auto b = read_lines(out + "/results.jsonl");
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), 4u);
  std::map<std::string, json> by_cell;
  for (const auto& j : b) by_cell[j["method"].get<std::string>() + "/" + j["dataset"].get<std::string>()] = j;
  for (const auto& j : a) {
    const json& k = by_cell.at(j["method"].get<std::string>() + "/" + j["dataset"].get<std::string>());
    for (const char* key : {"n", "refusal_rate", "asr", "mean_new_tokens"}) EXPECT_EQ(j[key], k[key]) << key;
    if (!j["ref_nll"].is_null()) EXPECT_NEAR(j["ref_nll"].get<double>(), k["ref_nll"].get<double>(), 1e-4);
  }
  // Outputs per id are identical (greedy), and nothing written before the kill was redone.
  std::map<std::string, std::string> outputs;
  for (const auto& g : read_lines(ref + "/generations.jsonl"))
    outputs[g["method"].get<std::string>() + "/" + g["dataset"].get<std::string>() + "/" + g["id"].get<std::string>()] =
        g["output"];
  auto gens = read_lines(out + "/generations.jsonl");
  EXPECT_EQ(gens.size(), 24u) << "no duplicates after resume (" << before << " lines existed before)";
  for (const auto& g : gens)
    EXPECT_EQ(g["output"], outputs.at(g["method"].get<std::string>() + "/" + g["dataset"].get<std::string>() + "/" +
                                      g["id"].get<std::string>()));
}

TEST(EvalRun, BadConfigsExitTwoWithClearMessages) {
  const std::string out = dir("bad");
  fs::remove_all(out);
  RunResult r = run("eval --config " + write_config("bad_yaml", "models: [smollm2-135m-instruct\n") + " --out " + out);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("malformed YAML"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("bad_yaml.yaml:"), std::string::npos) << r.out;

  r = run("eval --config " +
          write_config("bad_ds", "models: [smollm2-135m-instruct]\nmethods: [plain]\ndatasets: [advbench, nope]\n") +
          " --out " + out);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("unknown dataset 'nope'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("alpaca_eval_test"), std::string::npos) << "lists the known ones: " << r.out;

  r = run("eval --config " +
          write_config("bad_train", "models: [smollm2-135m-instruct]\nmethods: [plain]\ndatasets: [alpaca_eval_train]\n") +
          " --out " + out);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("alpaca_eval_train"), std::string::npos) << r.out;

  r = run("eval --config " + dir("does_not_exist") + ".yaml --out " + out);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("cannot open the eval config"), std::string::npos) << r.out;

  // An empty data file: the dataset is named and nothing is run.
  const std::string root = dir("empty_root");
  fs::remove_all(root);
  fs::create_directories(root + "/xstest");
  std::ofstream(root + "/xstest/xstest.json") << "[]";
  write_config("empty", "models: [smollm2-135m-instruct]\nmethods: [plain]\ndatasets: [xstest_safe]\n");
  const std::string cmd = "SAFEDEC_DATA_DIR=" + root + " " + exe() + " eval --config " + dir("empty") +
                          ".yaml --out " + out + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_TRUE(p);
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
  const int status = pclose(p);
  EXPECT_EQ(WIFEXITED(status) ? WEXITSTATUS(status) : -1, 2) << text;
  EXPECT_NE(text.find("xstest_safe"), std::string::npos) << text;
  EXPECT_FALSE(fs::exists(out + "/results.jsonl")) << "nothing is written for a bad dataset";
}

TEST(EvalRun, ReportOnlyRebuildsTheReportOfAPartialRun) {
  safedec::require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf");
  const std::string out = dir("partial");
  fs::remove_all(out);
  const std::string cfg = write_config("partial", R"(name: partial
limit: 2
models: [smollm2-135m-instruct]
methods: [plain]
datasets: [advbench, xstest_safe]
generation: {max_new_tokens: 4, batch_size: 2}
)");
  ASSERT_EQ(run("eval --config " + cfg + " --out " + out + " --threads 1").code, 0);
  // Drop the second cell's result line, as if the run had been stopped before it finished.
  auto rows = read_lines(out + "/results.jsonl");
  ASSERT_EQ(rows.size(), 2u);
  std::ofstream(out + "/results.jsonl", std::ios::trunc) << rows[0].dump() << "\n";
  fs::remove(out + "/report.md");
  RunResult r = run("eval --config " + cfg + " --out " + out + " --report-only");
  ASSERT_EQ(r.code, 0) << r.out;
  std::stringstream report;
  report << std::ifstream(out + "/report.md").rdbuf();
  EXPECT_NE(report.str().find("1 of 2 cells are finished"), std::string::npos) << report.str();
  // The console line counts the finished cells, not all of them.
  EXPECT_NE(r.out.find("report from the 1 finished of 2 cells (the rest have not run yet)"), std::string::npos) << r.out;
  EXPECT_EQ(read_lines(out + "/results.jsonl").size(), 1u) << "report-only runs nothing";
  EXPECT_EQ(run("eval --config " + cfg + " --out " + dir("no_such_run") + " --report-only").code, 2);
}

TEST(EvalRun, MissingArtifactFailsBeforeAnyCellRuns) {
  const std::string out = dir("no_icv");
  fs::remove_all(out);
  const std::string cfg = write_config("no_icv", R"(models: [smollm2-135m-instruct]
methods:
  - plain
  - name: steer
    set: {icv: /nonexistent/icv.safetensors}
datasets: [advbench]
)");
  RunResult r = run("eval --config " + cfg + " --out " + out);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("/nonexistent/icv.safetensors"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("safedec icv extract"), std::string::npos) << "says how to make it: " << r.out;
  EXPECT_FALSE(fs::exists(out + "/results.jsonl")) << "plain did not run first";
}

// The paired speed measurement (config `speed`) on the real model: one speed.jsonl row per pair of
// every non-plain method, ratios finite and positive (their values are not asserted: they are
// timings), the report's paired section, and a resumed run that runs only the missing pair.
TEST(EvalRun, PairedSpeedRowsExistAndAResumeRunsOnlyMissingPairs) {
  safedec::require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf");
  const std::string out = dir("speed");
  fs::remove_all(out);
  const std::string cfg = write_config("speed", R"(name: speed
limit: 2
models: [smollm2-135m-instruct]
methods: [plain, acd]
datasets: [advbench]
generation: {max_new_tokens: 4, batch_size: 2}
speed: {pairs: 3, prompts: 2, new_tokens: 4}
)");
  RunResult r = run("eval --config " + cfg + " --out " + out + " --threads 1");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("[eval] speed: acd ATGR (paired"), std::string::npos) << r.out;
  auto rows = read_lines(out + "/speed.jsonl");
  ASSERT_EQ(rows.size(), 3u) << "3 pairs of acd; plain is not compared with itself";
  for (size_t i = 0; i < rows.size(); ++i) {
    const json& j = rows[i];
    EXPECT_EQ(j["model"], "smollm2-135m-instruct");
    EXPECT_EQ(j["method"], "acd");
    EXPECT_EQ(j["pair"], static_cast<int64_t>(i));
    EXPECT_EQ(j["order"], i % 2 == 0 ? "plain_first" : "method_first");
    EXPECT_EQ(j["dataset"], "advbench");
    EXPECT_EQ(j["prompts"], 2);
    EXPECT_EQ(j["new_tokens"], 4);
    for (const char* k : {"plain_s_per_token", "method_s_per_token", "ratio"}) {
      const double v = j[k].get<double>();
      EXPECT_TRUE(std::isfinite(v) && v > 0) << k << " = " << v;
    }
  }
  std::stringstream report;
  report << std::ifstream(out + "/report.md").rdbuf();
  EXPECT_NE(report.str().find("## Speed against plain (paired)"), std::string::npos) << report.str();
  EXPECT_NE(report.str().find("| smollm2-135m-instruct | acd | "), std::string::npos) << report.str();
  EXPECT_NE(report.str().find("ATGR unpaired | ATGR paired [IQR] |"), std::string::npos) << report.str();

  // Drop the last pair, as if the run had been stopped during it: --resume runs that pair only.
  std::ofstream(out + "/speed.jsonl", std::ios::trunc) << rows[0].dump() << "\n" << rows[1].dump() << "\n";
  RunResult resumed = run("eval --config " + cfg + " --out " + out + " --resume --threads 1");
  ASSERT_EQ(resumed.code, 0) << resumed.out;
  auto after = read_lines(out + "/speed.jsonl");
  ASSERT_EQ(after.size(), 3u) << "finished pairs were not redone";
  EXPECT_EQ(after[0], rows[0]);
  EXPECT_EQ(after[1], rows[1]);
  EXPECT_EQ(after[2]["pair"], 2);
  // A finished run resumed again runs nothing.
  resumed = run("eval --config " + cfg + " --out " + out + " --resume --threads 1");
  ASSERT_EQ(resumed.code, 0) << resumed.out;
  EXPECT_EQ(read_lines(out + "/speed.jsonl").size(), 3u);
  EXPECT_EQ(resumed.out.find("loading model"), std::string::npos) << resumed.out;
}
