// Run directories: config comparison (resume / force / refuse), atomic file replacement, manifest
// contents with SHA-256 of inputs; SHA-256 itself against the FIPS 180-4 / NIST test vectors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "core/error.h"
#include "core/paths.h"
#include "eval/results_io.h"
#include "eval/run_dir.h"
#include "core/sha256.h"
#include "support/error_of.h"

using namespace safedec;
using safedec::testing_support::error_of;
using safedec::testing_support::kNoError;
namespace fs = std::filesystem;

namespace {
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("safedec_eval_run_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
  }
  ~TempDir() { fs::remove_all(path); }
};
YAML::Node config(double alpha) {
  return YAML::Load("model: smollm2\nmethod:\n  name: ngsd\n  alpha: " + std::to_string(alpha) +
                    "\ndatasets: [advbench, xstest_safe]\nseed: 1\n");
}
}  // namespace

TEST(Sha256, NistVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, IncrementalEqualsOneShotAtAwkwardChunkSizes) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data.push_back(char(i * 31 + 7));
  const std::string want = sha256_hex(data);
  for (size_t chunk : {1, 3, 55, 56, 63, 64, 65, 127, 999}) {
    Sha256 h;
    for (size_t i = 0; i < data.size(); i += chunk) h.update(data.substr(i, chunk));
    EXPECT_EQ(h.hex_digest(), want) << chunk;
  }
  const auto path = fs::temp_directory_path() / ("sha_" + std::to_string(::getpid()));
  std::ofstream(path, std::ios::binary) << data;
  EXPECT_EQ(sha256_file(path.string()), want);
  fs::remove(path);
  EXPECT_THROW(sha256_file("/nonexistent/file"), Error);
}

TEST(WriteFileAtomic, ReplacesWholeFileAndLeavesNoTemporaries) {
  TempDir d("atomic");
  fs::create_directories(d.path);
  const std::string f = (d.path / "x.json").string();
  write_file_atomic(f, "first");
  write_file_atomic(f, "second, longer content");
  std::ifstream in(f);
  std::string s((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(s, "second, longer content");
  size_t entries = 0;
  for (auto it = fs::directory_iterator(d.path); it != fs::directory_iterator(); ++it) ++entries;
  EXPECT_EQ(entries, 1u);
  EXPECT_THROW(write_file_atomic((d.path / "missing_dir" / "x").string(), "y"), Error);
}

TEST(RunDirectory, FreshResumeRefuseAndForce) {
  TempDir d("lifecycle");
  RunDirectory rd = RunDirectory::open(d.path.string(), config(0.5));
  EXPECT_FALSE(rd.resumed());
  ASSERT_TRUE(file_exists(rd.config_path()));
  append_jsonl(rd.results_path(), {{"x", 1}});

  // Same config: needs resume.
  EXPECT_NE(error_of([&] { RunDirectory::open(d.path.string(), config(0.5)); }).find("resume to continue"),
            std::string::npos);
  RunDirOptions resume;
  resume.resume = true;
  RunDirectory again = RunDirectory::open(d.path.string(), config(0.5), resume);
  EXPECT_TRUE(again.resumed());
  EXPECT_EQ(read_jsonl(again.results_path()).rows.size(), 1u) << "resume keeps results";

  // Comments and formatting do not matter; values do.
  YAML::Node reformatted = YAML::Load("# a comment\nmodel:   smollm2\nmethod: {name: ngsd, alpha: " +
                                      std::to_string(0.5) + "}\ndatasets:\n  - advbench\n  - xstest_safe\nseed: 1\n");
  EXPECT_TRUE(RunDirectory::open(d.path.string(), reformatted, resume).resumed());

  const std::string diff = error_of([&] { RunDirectory::open(d.path.string(), config(0.9), resume); });
  EXPECT_NE(diff.find("different resolved config"), std::string::npos) << diff;
  EXPECT_NE(diff.find("alpha"), std::string::npos) << "names the differing line: " << diff;

  std::ofstream(d.path / "notes.txt") << "keep me";
  RunDirOptions force;
  force.force = true;
  RunDirectory fresh = RunDirectory::open(d.path.string(), config(0.9), force);
  EXPECT_FALSE(fresh.resumed());
  EXPECT_FALSE(file_exists(fresh.results_path())) << "force discards the old results";
  EXPECT_TRUE(file_exists((d.path / "notes.txt").string())) << "force leaves unrelated files alone";
  EXPECT_NE(YAML::LoadFile(fresh.config_path())["method"]["alpha"].as<std::string>().find("0.9"), std::string::npos);
}

TEST(RunDirectory, ManifestRecordsVersionHostSeedsAndHashes) {
  TempDir d("manifest");
  RunDirectory rd = RunDirectory::open(d.path.string(), config(0.5));
  const std::string model = (d.path / "fake-model.gguf").string();
  std::ofstream(model, std::ios::binary) << "abc";
  ManifestInputs in;
  in.seeds = {{"sample", 7}, {"decode", 1234}};
  in.model_files = {model};
  in.dataset_files = {data_dir() + "/advbench/harmful_behaviors.json"};
  in.extra = {{"note", "unit test"}};
  const nlohmann::json m = rd.write_manifest(in);
  const nlohmann::json disk = nlohmann::json::parse(std::ifstream(rd.manifest_path()));
  EXPECT_EQ(m, disk);
  EXPECT_EQ(disk["safedec_version"], SAFEDEC_VERSION);
  EXPECT_FALSE(disk["hostname"].get<std::string>().empty());
  EXPECT_TRUE(std::regex_match(disk["created_utc"].get<std::string>(),
                               std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")));
  EXPECT_EQ(disk["seeds"]["decode"], 1234);
  EXPECT_EQ(disk["models"][0]["sha256"], "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(disk["models"][0]["bytes"], 3);
  EXPECT_EQ(disk["datasets"][0]["sha256"].get<std::string>().size(), 64u);
  EXPECT_EQ(disk["extra"]["note"], "unit test");
  if (fs::exists(fs::path(source_dir()) / ".git")) {
    ASSERT_TRUE(disk["git_commit"].is_string());
    EXPECT_TRUE(std::regex_match(disk["git_commit"].get<std::string>(), std::regex("[0-9a-f]{40}")));
    EXPECT_TRUE(disk["git_dirty"].is_boolean());
  }
  in.model_files = {"/nonexistent/model.gguf"};
  EXPECT_NE(error_of([&] { rd.write_manifest(in); }).find("model file not found: /nonexistent/model.gguf"),
            std::string::npos);
}

// A run that failed after recording its config but before writing anything else (bad data found
// late) left nothing to continue: opening it again without resume starts it as new, so the second
// try reports the real error again instead of "resume to continue".
TEST(RunDirectory, ADirectoryHoldingOnlyItsConfigStartsAgainWithoutResume) {
  TempDir d("only_config");
  {
    RunDirectory first = RunDirectory::open(d.path.string(), config(0.5));
    EXPECT_FALSE(first.resumed());
  }
  RunDirectory again = RunDirectory::open(d.path.string(), config(0.5));
  EXPECT_FALSE(again.resumed());
  append_jsonl(again.results_path(), {{"x", 1}});
  EXPECT_NE(error_of([&] { RunDirectory::open(d.path.string(), config(0.5)); }).find("resume to continue"),
            std::string::npos)
      << "once anything else is written, the same config needs resume";
}
