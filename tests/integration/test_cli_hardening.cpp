// Issue 15 at the command line: every numeric flag has a range (exit 2 with the flag and the range
// named, no wrap-around, no crash), --limit 0 wins over the config, a second writer of a run
// directory is refused naming the holder, method strengths outside their meaning and repeated YAML
// keys are refused, and a directory given as a config file is called a directory.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/numbers.h"
#include "core/run_lock.h"

namespace fs = std::filesystem;

namespace {

struct RunResult {
  int code = -1;
  std::string out;  // stdout and stderr together
};

RunResult run(const std::string& args) {
  RunResult r;
  const std::string cmd = std::string(SAFEDEC_BUILD_DIR) + "/safedec " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  return r;
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::path(SAFEDEC_BUILD_DIR) / ("cli_hardening_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name, const std::string& text) const {
    const std::string p = (path / name).string();
    std::ofstream(p) << text;
    return p;
  }
};

}  // namespace

TEST(CliHardening, NumericFlagsOutsideTheirRangeExitTwoNamingFlagAndRange) {
  const std::string max = std::to_string(safedec::max_threads());
  struct Case {
    std::string args, needle;
  };
  const std::vector<Case> cases = {
      {"generate --prompt Hi --max-new-tokens 2 --threads 100000", "--threads: must be an integer in 1.." + max},
      {"generate --prompt Hi --threads 30000", "--threads"},
      {"generate --prompt Hi --threads 4096", "--threads"},
      {"generate --prompt Hi --threads 0", "--threads: must be an integer in 1.."},
      {"generate --prompt Hi --threads -1", "--threads"},
      {"bench bandwidth --threads 100000", "--threads"},
      {"bench generate --batch 0", "--batch"},
      {"bench generate --repeats -3", "--repeats"},
      {"bench methods --new-tokens 0", "--new-tokens"},
      {"generate --prompt Hi --max-new-tokens 0", "--max-new-tokens"},
      {"generate --prompt Hi --max-new-tokens 99999999999", "--max-new-tokens"},
      {"generate --prompt Hi --batch-size -1", "--batch-size"},
      {"generate --prompt Hi --seed -1", "--seed: must be an integer in 0..9223372036854775807"},
      {"generate --prompt Hi --seed 99999999999999999999999", "--seed"},
      {"generate --prompt Hi --seed 18446744073709551615", "--seed"},
      {"generate --prompt Hi --top-k -1", "--top-k"},
      {"generate --prompt Hi --top-p nan", "--top-p: must be a number in (0, 1]"},
      {"generate --prompt Hi --top-p 0", "--top-p"},
      {"generate --prompt Hi --temperature inf", "--temperature"},
      {"generate --prompt Hi --min-p 1", "--min-p"},
      {"generate --prompt Hi --repetition-penalty 0", "--repetition-penalty"},
      {"generate --prompt Hi --hdr-lambda -1", "--hdr-lambda"},
      {"eval --config x.yaml --out d --limit -1", "--limit: must be an integer in 0.."},
      {"eval --config x.yaml --out d --threads 0", "--threads"},
      {"data build --config x.yaml --limit -1", "--limit"},
      {"train --config x.yaml --stop-after -1", "--stop-after"},
      {"train --config x.yaml --threads 100000", "--threads"},
      {"icv extract --out d --last-tokens 0", "--last-tokens"},
      {"icv extract --out d --limit -5", "--limit"},
      {"demo --max-new-tokens 0", "--max-new-tokens"},
      {"bench train --threads 0", "--threads"},
      {"judge validate --threads 100000", "--threads"},
      {"bench train --seed -1", "--seed"},
      {"bench train --lora-dropout nan", "--lora-dropout"},
  };
  for (const auto& c : cases) {
    const RunResult r = run(c.args);
    EXPECT_EQ(r.code, 2) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find(c.needle), std::string::npos) << c.args << "\n" << r.out;
    EXPECT_EQ(r.out.find("internal error"), std::string::npos) << c.args << "\n" << r.out;
  }
}

TEST(CliHardening, TheLargestSeedAndThreadCountAreAccepted) {
  const RunResult r = run("generate --prompt Hi --max-new-tokens 1 --seed 9223372036854775807 --temperature 0.7 "
                          "--threads " + std::to_string(safedec::max_threads()));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("threads " + std::to_string(safedec::max_threads())), std::string::npos) << r.out;
}

TEST(CliHardening, LimitZeroOnTheCommandLineWinsOverTheConfig) {
  TempDir d;
  const std::string cfg = d.file("eval.yaml",
                                 "name: hardening\nlimit: 3\nmodels: [smollm2-135m-instruct]\nmethods: [plain]\n"
                                 "datasets: [advbench]\njudge: keyword\n");
  // --report-only runs nothing; the header line shows the limit that the run would use.
  const RunResult given = run("eval --config " + cfg + " --out " + (d.path / "run0").string() + " --limit 0 --report-only");
  EXPECT_NE(given.out.find("limit all rows per dataset"), std::string::npos) << given.out;
  const RunResult config = run("eval --config " + cfg + " --out " + (d.path / "run1").string() + " --report-only");
  EXPECT_NE(config.out.find("limit 3 per dataset"), std::string::npos) << config.out;
}

TEST(CliHardening, ASecondWriterOfARunDirectoryIsRefusedNamingTheHolder) {
  TempDir d;
  const std::string out = (d.path / "run").string();
  fs::create_directories(out);
  const std::string cfg = d.file("eval.yaml",
                                 "name: hardening_lock\nlimit: 1\nmodels: [smollm2-135m-instruct]\nmethods: [plain]\n"
                                 "datasets: [advbench]\njudge: keyword\ngeneration: {max_new_tokens: 2}\n");
  {
    auto held = safedec::RunDirLock::acquire(out, "the test");  // this process holds the directory
    const RunResult r = run("eval --config " + cfg + " --out " + out);
    EXPECT_EQ(r.code, 2) << r.out;
    EXPECT_NE(r.out.find("in use by another process (pid " + std::to_string(::getpid()) + ": the test)"),
              std::string::npos)
        << r.out;
    EXPECT_FALSE(fs::exists(out + "/results.jsonl")) << "the refused run wrote results";
    const RunResult t =
        run("train --config " + std::string(SAFEDEC_SOURCE_DIR) + "/configs/train/risk_probe.yaml --out " + out);
    EXPECT_EQ(t.code, 2) << t.out;
    EXPECT_NE(t.out.find("in use by another process"), std::string::npos) << t.out;
  }
  // Released: the same command now runs.
  const RunResult ok = run("eval --config " + cfg + " --out " + out);
  EXPECT_EQ(ok.code, 0) << ok.out;
  EXPECT_TRUE(fs::exists(out + "/results.jsonl"));
}

TEST(CliHardening, MethodStrengthsOutsideTheirMeaningAreRefused) {
  TempDir d;
  struct Case {
    std::string method, yaml, needle;
  };
  const std::vector<Case> cases = {
      {"acd", "alpha: -5\n", "acd: `alpha` must be in [0, 10]"},
      {"steer", "icv: x.safetensors\nalpha: -100\n", "`alpha` must be in [0, 100]"},
      {"ngsd", "alpha: 1.5\n", "ngsd: `alpha` must be in [0, 1]"},
      {"ngsd", "tau: .nan\n", "ngsd: `tau`"},
      {"ngsd", "reset: 2\n", "ngsd: `reset`"},
      {"safedecoding", "alpha: -3\n", "safedecoding: `alpha`"},
      {"safedecoding", "m: 0\n", "safedecoding: `m`"},
  };
  int n = 0;
  for (const auto& c : cases) {
    const std::string f = d.file("m" + std::to_string(n++) + ".yaml", c.yaml);
    const RunResult r = run("generate --prompt Hi --method " + c.method + " --method-config " + f);
    EXPECT_EQ(r.code, 2) << c.yaml << r.out;
    EXPECT_NE(r.out.find(c.needle), std::string::npos) << c.yaml << r.out;
  }
}

TEST(CliHardening, RepeatedYamlKeysAndDirectoriesAsConfigFilesAreRefused) {
  TempDir d;
  const std::string dup = d.file("dup.yaml", "alpha: 0.5\nvariant: sp_ap\nalpha: 0.7\n");
  const RunResult r = run("generate --prompt Hi --method acd --method-config " + dup);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find(dup + ":3:1: the key `alpha` appears twice"), std::string::npos) << r.out;
  const RunResult dir = run("generate --prompt Hi --method acd --method-config " + d.path.string());
  EXPECT_EQ(dir.code, 2) << dir.out;
  EXPECT_NE(dir.out.find("is a directory"), std::string::npos) << dir.out;
  const std::string eval_dup = d.file("eval.yaml", "name: a\nlimit: 1\nlimit: 2\nmodels: [smollm2-135m-instruct]\n"
                                                   "methods: [plain]\ndatasets: [advbench]\n");
  const RunResult e = run("eval --config " + eval_dup + " --out " + (d.path / "run").string());
  EXPECT_EQ(e.code, 2) << e.out;
  EXPECT_NE(e.out.find("appears twice"), std::string::npos) << e.out;
  const RunResult edir = run("eval --config " + d.path.string() + " --out " + (d.path / "run").string());
  EXPECT_EQ(edir.code, 2) << edir.out;
  EXPECT_NE(edir.out.find("is a directory"), std::string::npos) << edir.out;
}
