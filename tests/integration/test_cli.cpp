// The safedec executable on the real default model: good runs print what they promise, bad input
// gives a clear message and exit code 2.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "core/paths.h"
#include "io/gguf.h"

namespace {

struct RunResult {
  int code = -1;
  std::string out;  // stdout and stderr together
};

std::string exe() { return std::string(SAFEDEC_BUILD_DIR) + "/safedec"; }

RunResult run(const std::string& args) {
  RunResult r;
  // Callers that want stdout alone pass their own "2>/dev/null".
  std::string cmd = exe() + " " + args + (args.find("2>/dev/null") == std::string::npos ? " 2>&1" : "");
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string smollm2() { return safedec::require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf"); }

std::string tmp_path(const std::string& name) { return std::string(SAFEDEC_BUILD_DIR) + "/cli_test_" + name; }

}  // namespace

TEST(Cli, InspectReportsTheDefaultModel) {
  auto r = run("inspect " + smollm2() + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["architecture"], "llama");
  EXPECT_EQ(j["layers"], 30);
  EXPECT_EQ(j["hidden_size"], 576);
  EXPECT_EQ(j["vocab_size"], 49152);
  EXPECT_EQ(j["vocab_type"], "bpe-byte-level");
  EXPECT_EQ(j["chat_template"], "chatml");
  EXPECT_EQ(j["tensor_types"]["Q4_1"]["tensors"], 210);
}

TEST(Cli, GenerateJsonAnswersSensibly) {
  auto r = run("generate --model smollm2-135m-instruct --prompt 'What is the capital of France?' "
               "--max-new-tokens 24 --json 2>/dev/null");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["id"], "0");
  EXPECT_NE(j["text"].get<std::string>().find("Paris"), std::string::npos) << j["text"];
  EXPECT_FALSE(j["token_ids"].empty());
  EXPECT_TRUE(j["finish_reason"] == "eos" || j["finish_reason"] == "length");
}

TEST(Cli, PromptsFileBatchesGiveOneLinePerPrompt) {
  const std::string path = tmp_path("prompts.jsonl");
  {
    std::ofstream f(path);
    f << R"({"id": "a", "prompt": "Name a primary colour."})" << "\n"
      << R"({"id": "b", "prompt": "What is 2 + 2?", "system": "You are a terse assistant."})" << "\n"
      << R"({"id": "c", "prompt": "Say hello in French."})" << "\n";
  }
  auto r = run("generate --prompts-file " + path + " --batch-size 2 --max-new-tokens 8 --json 2>/dev/null");
  ASSERT_EQ(r.code, 0) << r.out;
  std::vector<std::string> ids;
  size_t start = 0;
  while (start < r.out.size()) {
    size_t end = r.out.find('\n', start);
    auto j = nlohmann::json::parse(r.out.substr(start, end - start));
    ids.push_back(j["id"]);
    EXPECT_LE(j["token_ids"].size(), 8u);
    start = end + 1;
  }
  EXPECT_EQ(ids, (std::vector<std::string>{"a", "b", "c"}));
}

TEST(Cli, BadSamplingArgumentsExitWithTwo) {
  for (const char* bad : {"--temperature -1", "--top-p 0", "--top-p 1.5", "--batch-size 0", "--min-p 1"}) {
    auto r = run(std::string("generate --prompt hi --max-new-tokens 2 ") + bad);
    EXPECT_EQ(r.code, 2) << bad << ": " << r.out;
    EXPECT_NE(r.out.find("error:"), std::string::npos) << r.out;
  }
}

TEST(Cli, EmptyPromptAndUnknownModelExitWithTwo) {
  auto r = run("generate --prompt '' --max-new-tokens 2");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("empty"), std::string::npos) << r.out;
  r = run("generate --model no-such-model --prompt hi");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("smollm2-135m-instruct"), std::string::npos) << "the error should list known names: " << r.out;
}

TEST(Cli, PromptOverTheContextWindowNamesBothLengths) {
  const std::string path = tmp_path("long.jsonl");
  {
    std::string words;
    for (int i = 0; i < 9000; ++i) words += " cat";
    std::ofstream f(path);
    f << nlohmann::json{{"id", "long"}, {"prompt", words}}.dump() << "\n";
  }
  auto r = run("generate --prompts-file " + path + " --max-new-tokens 4");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("8192"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("context window"), std::string::npos) << r.out;
}

TEST(Cli, TruncatedOrMissingModelFileExitsWithTwoNamingTheFile) {
  const std::string cut = tmp_path("truncated.gguf");
  {
    std::ifstream in(smollm2(), std::ios::binary);
    std::vector<char> head(1 << 20);
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    std::ofstream out(cut, std::ios::binary);
    out.write(head.data(), static_cast<std::streamsize>(head.size()));
  }
  auto r = run("inspect " + cut);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find(cut), std::string::npos) << r.out;
  r = run("generate --model " + cut + " --prompt hi");
  EXPECT_EQ(r.code, 2) << r.out;
  r = run("inspect /nonexistent/model.gguf");
  EXPECT_EQ(r.code, 2) << r.out;
}

TEST(Cli, NanInAWeightIsRefusedAtLoadNamingTheTensor) {
  // Copy the real model and plant a NaN in an fp32 norm weight.
  const std::string src = smollm2(), bad = tmp_path("nan.gguf");
  size_t offset = 0;
  std::string tensor;
  {
    auto f = safedec::GgufFile::open(src);
    const auto& t = f->tensor("blk.3.ffn_norm.weight");
    ASSERT_EQ(t.type, safedec::GgmlType::F32);
    std::ifstream probe(src, std::ios::binary);
    // The tensor's data pointer lies inside the mapping; its file offset is found by searching
    // for its first 16 bytes after the header.
    std::vector<char> all((std::istreambuf_iterator<char>(probe)), std::istreambuf_iterator<char>());
    auto it = std::search(all.begin(), all.end(), reinterpret_cast<const char*>(t.data),
                          reinterpret_cast<const char*>(t.data) + 16);
    ASSERT_NE(it, all.end());
    offset = static_cast<size_t>(it - all.begin()) + 4 * 7;
    tensor = t.name;
    float nan = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(all.data() + offset, &nan, 4);
    std::ofstream out(bad, std::ios::binary);
    out.write(all.data(), static_cast<std::streamsize>(all.size()));
  }
  auto r = run("generate --model " + bad + " --prompt hi --max-new-tokens 2");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find(tensor), std::string::npos) << r.out;
  std::remove(bad.c_str());
}

TEST(Cli, UnknownSubcommandOrOptionExitsWithTwo) {
  EXPECT_EQ(run("frobnicate").code, 2);
  EXPECT_EQ(run("generate --no-such-flag").code, 2);
  EXPECT_EQ(run("--help").code, 0);
}

TEST(Cli, MalformedPromptsFileNamesTheLine) {
  const std::string path = tmp_path("bad.jsonl");
  {
    std::ofstream f(path);
    f << R"({"id": "a", "prompt": "Hello"})" << "\n\n" << R"({"id": "b", "prompt": )" << "\n";
  }
  auto r = run("generate --prompts-file " + path + " --max-new-tokens 2");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("line 3"), std::string::npos) << r.out;
  {
    std::ofstream f(path);
    f << R"({"id": "a", "text": "Hello"})" << "\n";
  }
  r = run("generate --prompts-file " + path + " --max-new-tokens 2");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("\"prompt\""), std::string::npos) << r.out;
}

// `eval --methods` / `--datasets` / `--models` select columns, datasets and models of a config (the header line shows the
// counts; --report-only runs nothing); a name the config lacks is refused listing the config's names.
TEST(Cli, EvalMethodsDatasetsAndModelsSelectFromTheConfig) {
  const std::string cfg = tmp_path("select.yaml");
  std::ofstream(cfg) << "name: select\nlimit: 2\nmodels: [smollm2-135m-instruct, {name: smollm2-135m-instruct, label: small_q, weights: quantized}]\n"
                        "methods: [plain, {name: acd, label: acd_half, set: {alpha: 0.5}}, {name: steer, grid: {alpha: [0.1, 0.2]}}]\n"
                        "datasets: [advbench, xstest_safe, alpaca_eval_test]\njudge: keyword\n";
  const std::string out = tmp_path("select_run");
  std::filesystem::remove_all(out);
  auto all = run("eval --config " + cfg + " --out " + out + " --report-only");
  EXPECT_NE(all.out.find("2 model(s) x 4 method(s) x 3 dataset(s) = 24 cells"), std::string::npos) << all.out;
  auto some = run("eval --config " + cfg + " --out " + out +
                  " --report-only --methods acd_half,plain --datasets xstest_safe --models small_q");
  EXPECT_NE(some.out.find("1 model(s) x 2 method(s) x 1 dataset(s) = 2 cells"), std::string::npos) << some.out;
  // A grid entry is selected whole by its YAML entry's name, or one variant by its label.
  auto group = run("eval --config " + cfg + " --out " + out + " --report-only --methods steer");
  EXPECT_NE(group.out.find("x 2 method(s) x 3 dataset(s)"), std::string::npos) << group.out;
  auto variant = run("eval --config " + cfg + " --out " + out + " --report-only --methods 'steer[alpha=0.2]'");
  EXPECT_NE(variant.out.find("x 1 method(s) x 3 dataset(s)"), std::string::npos) << variant.out;
  auto bad_method = run("eval --config " + cfg + " --out " + out + " --methods ngsd");
  EXPECT_EQ(bad_method.code, 2) << bad_method.out;
  EXPECT_NE(bad_method.out.find("its methods are: plain, acd_half, steer[alpha=0.1], steer[alpha=0.2]"),
            std::string::npos)
      << bad_method.out;
  auto bad_model = run("eval --config " + cfg + " --out " + out + " --models gemma3-270m");
  EXPECT_EQ(bad_model.code, 2) << bad_model.out;
  EXPECT_NE(bad_model.out.find("its models are: smollm2-135m-instruct, small_q"), std::string::npos) << bad_model.out;
  auto bad_set = run("eval --config " + cfg + " --out " + out + " --datasets gcg");
  EXPECT_EQ(bad_set.code, 2) << bad_set.out;
  EXPECT_NE(bad_set.out.find("its datasets are: advbench, xstest_safe, alpaca_eval_test"), std::string::npos)
      << bad_set.out;
  std::filesystem::remove_all(out);
  std::filesystem::remove(cfg);
}
