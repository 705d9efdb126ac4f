// Issue 15, class 7: the one YAML reader refuses repeated keys (with FILE:LINE:COLUMN) at any
// depth, a config path that is a directory is called a directory, and JSON parse errors keep the
// position but never quote the file's content (a dataset line can be a harmful prompt).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/jsonl.h"
#include "core/yaml_keys.h"

namespace fs = std::filesystem;
using namespace safedec;

namespace {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(ConfigHardening, RepeatedKeysAreRefusedWithTheirPosition) {
  const YAML::Node top = YAML::Load("a: 1\nb: 2\na: 3\n");
  const std::string err = error_of([&] { YamlKeys k(top, "c.yaml", "the config"); });
  EXPECT_NE(err.find("c.yaml:3:1: the key `a` appears twice"), std::string::npos) << err;
  // Deeper mappings, also inside sequences.
  const YAML::Node deep = YAML::Load("x:\n  - {p: 1, q: 2, p: 5}\n");
  EXPECT_NE(error_of([&] { YamlKeys k(deep, "d.yaml", "the config"); }).find("`p` appears twice"), std::string::npos);
  // Distinct keys pass.
  EXPECT_EQ(error_of([&] { YamlKeys k(YAML::Load("a: 1\nb: {a: 2}\n"), "ok.yaml", "the config"); }), "");
}

TEST(ConfigHardening, LoadYamlFileNamesDirectoriesMissingFilesAndRepeats) {
  const fs::path dir = fs::temp_directory_path() / ("safedec_cfg_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  EXPECT_NE(error_of([&] { load_yaml_file(dir.string(), "the method config file"); }).find("is a directory"),
            std::string::npos);
  EXPECT_NE(error_of([&] { load_yaml_file((dir / "none.yaml").string(), "the method config file"); })
                .find("does not exist"),
            std::string::npos);
  const std::string dup = (dir / "dup.yaml").string();
  std::ofstream(dup) << "k: 1\nk: 2\n";
  EXPECT_NE(error_of([&] { load_yaml_file(dup, "the method config file"); }).find(dup + ":2:1"), std::string::npos);
  const std::string bad = (dir / "bad.yaml").string();
  std::ofstream(bad) << "k: [1, 2\n";
  EXPECT_NE(error_of([&] { load_yaml_file(bad, "the method config file"); }).find("malformed YAML"), std::string::npos);
  fs::remove_all(dir);
}

TEST(ConfigHardening, JsonErrorsDoNotQuoteTheContent) {
  const std::string secret = "how to build a dangerous thing";
  for (const std::string text : {"{\"prompt\": \"" + secret + "\" oops}", "{\"prompt\": \"" + secret,
                                 "[\"" + secret + "\", ]", secret}) {
    try {
      (void)nlohmann::json::parse(text);
      ADD_FAILURE() << "parsed: " << text;
    } catch (const nlohmann::json::exception& e) {
      const std::string msg = json_error_without_content(e);
      EXPECT_EQ(msg.find("dangerous"), std::string::npos) << msg;
      EXPECT_EQ(msg.find("build"), std::string::npos) << msg;
      EXPECT_NE(msg.find("line 1"), std::string::npos) << msg;
    }
  }
  // And through the JSONL reader.
  const std::string path = (fs::temp_directory_path() / ("safedec_jsonl_" + std::to_string(::getpid()))).string();
  std::ofstream(path) << "{\"prompt\": \"ok\"}\n{\"prompt\": \"" << secret << "\n";
  const std::string err = error_of([&] { for_each_jsonl_line(path, "prompts file", [](const nlohmann::json&, int64_t) {}); });
  EXPECT_NE(err.find("line 2 is not valid JSON"), std::string::npos) << err;
  EXPECT_EQ(err.find("dangerous"), std::string::npos) << err;
  fs::remove(path);
}
