// `safedec data build` end to end on the real default model (SmolLM2-135M-Instruct, a few prompts
// and tokens): the output directory, no prompt or response on the console, a SIGKILLed build
// resumed to the same file, and bad input exiting 2 with a message that says where.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

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

std::string base() { return std::string(SAFEDEC_BUILD_DIR) + "/data_build_test_"; }

std::string write_config(const std::string& name, const std::string& text) {
  const std::string path = base() + name + ".yaml";
  std::ofstream(path) << text;
  return path;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<json> rows_of(const std::string& path) {
  std::vector<json> rows;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

std::string self_config(const std::string& name, int harmful, int benign, int batch) {
  return "name: " + name +
         "\nbuilder: self_responses\nmodel: smollm2-135m-instruct\n"
         "generation: {max_new_tokens: 6, batch_size: " +
         std::to_string(batch) + "}\nself_responses:\n  sources:\n    - {dataset: catqa, limit: " +
         std::to_string(harmful) + ", seed: 5}\n    - {dataset: benign_instructions, limit: " + std::to_string(benign) +
         ", seed: 5}\n";
}

}  // namespace

TEST(DataBuildCli, SelfResponsesOnTheRealModelKeepPromptsOffTheConsole) {
  const std::string out = base() + "self";
  fs::remove_all(out);
  const std::string cfg = write_config("self", self_config("cli_self", 2, 1, 3));
  const RunResult r = run("data build --config " + cfg + " --out " + out + " --threads 2");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto rows = rows_of(out + "/data.jsonl");
  ASSERT_EQ(rows.size(), 3u) << r.out;
  for (const auto& row : rows) {
    EXPECT_FALSE(row.at("prompt").get<std::string>().empty());
    EXPECT_EQ(r.out.find(row.at("prompt").get<std::string>()), std::string::npos) << "a prompt reached the console";
    const std::string response = row.at("response");
    if (response.size() >= 12) EXPECT_EQ(r.out.find(response), std::string::npos) << "a response reached the console";
    EXPECT_EQ(row.at("system_mode"), "default");
    EXPECT_NE(row.at("system").get<std::string>().find("SmolLM"), std::string::npos) << "the template's default line";
  }
  EXPECT_NE(r.out.find("3 rows"), std::string::npos) << r.out;
  std::ifstream in(out + "/manifest.json");
  const json m = json::parse(in);
  EXPECT_EQ(m.at("status"), "complete");
  ASSERT_EQ(m.at("models").size(), 1u);
  EXPECT_EQ(m.at("models")[0].at("sha256").get<std::string>().size(), 64u);
  EXPECT_EQ(m.at("model_name"), "smollm2-135m-instruct");
}

TEST(DataBuildCli, SigkilledBuildResumesToTheSameFile) {
  const std::string whole = base() + "whole", killed = base() + "killed";
  fs::remove_all(whole);
  fs::remove_all(killed);
  const std::string cfg = write_config("kill", self_config("cli_kill", 3, 3, 2));
  ASSERT_EQ(run("data build --config " + cfg + " --out " + whole + " --threads 2").code, 0);
  ASSERT_EQ(rows_of(whole + "/data.jsonl").size(), 6u);

  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 1);
    ::dup2(devnull, 2);
    ::execl(exe().c_str(), exe().c_str(), "data", "build", "--config", cfg.c_str(), "--out", killed.c_str(),
            "--threads", "2", static_cast<char*>(nullptr));
    _exit(127);
  }
  // Kill as soon as the first answers are on disk (or give up after 120 s).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(killed + "/data.jsonl") && fs::file_size(killed + "/data.jsonl") > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  const size_t before = rows_of(killed + "/data.jsonl").size();
  EXPECT_GT(before, 0u);
  EXPECT_LT(before, 6u) << "the kill came too late to test anything";

  const RunResult again = run("data build --config " + cfg + " --out " + killed + " --threads 2");
  EXPECT_EQ(again.code, 2) << "an existing build needs --resume: " << again.out;
  const RunResult r = run("data build --config " + cfg + " --out " + killed + " --threads 2 --resume --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(read_file(killed + "/data.jsonl"), read_file(whole + "/data.jsonl"));
}

TEST(DataBuildCli, BadInputExitsTwoAndSaysWhere) {
  const std::string out = base() + "bad";
  fs::remove_all(out);
  const std::string typo = write_config("typo", self_config("cli_bad", 1, 1, 2) + "genration: {}\n");
  RunResult r = run("data build --config " + typo + " --out " + out);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find(typo + ":9:1: unknown key `genration`"), std::string::npos) << r.out;

  const std::string eval_set = write_config(
      "evalset", "name: cli_bad\nbuilder: self_responses\nself_responses:\n  sources: [{dataset: gcg, limit: 1}]\n");
  r = run("data build --config " + eval_set + " --out " + out);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find(eval_set + ":4:13: refusing to train on dataset 'gcg'"), std::string::npos) << r.out;

  const std::string builder = write_config("builder", "name: cli_bad\nbuilder: harm_vector\n");
  r = run("data build --config " + builder + " --out " + out);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("known builders: acd_anchors, deep_alignment, self_responses"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out)) << "nothing written for bad input";

  // A directory that holds another build.
  const std::string first = write_config("first", self_config("cli_dir", 1, 1, 2));
  ASSERT_EQ(run("data build --config " + first + " --out " + out + " --threads 2").code, 0);
  const std::string second = write_config("second", self_config("cli_dir", 1, 2, 2));
  r = run("data build --config " + second + " --out " + out + " --resume");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("different resolved config"), std::string::npos) << r.out;
  EXPECT_EQ(rows_of(out + "/data.jsonl").size(), 2u) << "the first build is untouched";
}
