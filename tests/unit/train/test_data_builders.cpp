// The training-data builders on a tiny random model with the tiny Llama-3 tokenizer from the golden
// files: rows, ids and fields of every builder, resume after a simulated kill (torn last line
// included) writes the same bytes as an uninterrupted build, the honest-split rule, config errors
// with FILE:LINE:COLUMN, the empty-ACD-subset error, ACD's seeded wrapping of a share of its
// instructions, and that no prompt or response reaches the log.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/paths.h"
#include "support/error_of.h"
#include "tokenizer/chat_template.h"
#include "eval/run_dir.h"
#include "train/data_builders.h"
#include "train/data_config.h"
#include "train/prompt_wrappers.h"

using namespace safedec;
using safedec::testing_support::error_of;
using safedec::testing_support::kNoError;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const DatasetRegistry& registry() {
  static DatasetRegistry reg = DatasetRegistry::builtin();
  return reg;
}

// A random-weight Llama model over the tiny Llama-3 tokenizer (414 tokens, llama3 template); its
// context holds the wrapped instructions, which that near byte-level tokenizer makes ~700 tokens long.
ModelBundle tiny_bundle() {
  static std::shared_ptr<Tokenizer> tok = [] {
    const std::string path = std::string(SAFEDEC_SOURCE_DIR) + "/tests/oracle/golden/tokenizer_tiny_llama3/tokenizer.json";
    SAFEDEC_CHECK(file_exists(path), "test fixture missing: ", path);
    return std::shared_ptr<Tokenizer>(load_tokenizer(path));
  }();
  static std::shared_ptr<CausalLM> model = [] {
    ModelConfig c;
    c.architecture = "llama";
    c.n_layers = 2;
    c.hidden_size = 32;
    c.intermediate_size = 64;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 8;
    c.vocab_size = tok->vocab_size();
    c.context_length = 4096;
    c.rope_theta = 10000;
    return CausalLM::random(c, /*seed=*/3, /*std=*/0.5);
  }();
  ModelBundle b;
  b.entry.name = "tiny-random";
  b.entry.chat_template = "llama3";
  b.tokenizer = tok;
  b.model = model;
  b.chat = std::make_shared<ChatTemplate>(*tok, "llama3");
  return b;
}

// Judges for tests (registered once): one never refuses, one refuses by the parity of the bytes.
void register_test_judges() {
  static bool done = [] {
    struct Never : Judge {
      std::string name() const override { return "test_never"; }
      Verdict judge(const std::string&, const std::string&) const override { return {false, "never", ""}; }
    };
    struct Parity : Judge {
      std::string name() const override { return "test_parity"; }
      Verdict judge(const std::string&, const std::string& r) const override {
        unsigned sum = 0;
        for (unsigned char c : r) sum += c;
        return {sum % 2 == 1, sum % 2 == 1 ? "odd" : "even", ""};
      }
    };
    JudgeRegistry::global().register_judge("test_never", [](const JudgeOptions&) { return std::make_unique<Never>(); });
    JudgeRegistry::global().register_judge("test_parity",
                                           [](const JudgeOptions&) { return std::make_unique<Parity>(); });
    return true;
  }();
  (void)done;
}

// A fresh directory under the build tree, removed at the end of the test.
struct TempDir {
  std::string path;
  TempDir() {
    std::string tmpl = std::string(SAFEDEC_BUILD_DIR) + "/data_builders_test_XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    SAFEDEC_CHECK(::mkdtemp(buf.data()) != nullptr, "mkdtemp failed");
    path = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

DataBuildConfig parse(const std::string& text) {
  register_test_judges();
  DataConfigChecks checks;
  checks.resolve_model = false;  // the tiny model is not registered
  return parse_data_build_config(text, "test.yaml", registry(), checks);
}

std::string parse_error(const std::string& text, bool resolve_model = false) {
  register_test_judges();
  return error_of([&] {
    DataConfigChecks checks;
    checks.resolve_model = resolve_model;
    parse_data_build_config(text, "test.yaml", registry(), checks);
  });
}

DataBuildOptions tiny_options(const std::string& out, std::ostream* log) {
  DataBuildOptions o;
  o.out_dir = out;
  o.log = log;
  o.load_model = [](const std::string&, const std::string&) { return tiny_bundle(); };
  return o;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<json> read_rows(const std::string& path) {
  std::vector<json> rows;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

const char* kSelf = R"(name: self_test
builder: self_responses
model: tiny-random
system: none
generation: {max_new_tokens: 5, batch_size: 2, temperature: 0.0, seed: 3}
self_responses:
  sources:
    - {dataset: harmfulqa, limit: 3, seed: 1}
    - {dataset: benign_instructions, limit: 2, seed: 1}
)";

}  // namespace

TEST(DataSelfResponses, RowsCarryIdsSourcesPromptsAndVerdicts) {
  TempDir dir;
  std::ostringstream log;
  const DataBuildConfig config = parse(kSelf);
  const DataBuildSummary s = run_data_build(config, tiny_options(dir.path, &log));
  const auto rows = read_rows(dir / "data.jsonl");
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_EQ(s.rows, 5u);
  EXPECT_EQ(s.generated, 5u);

  // Rows follow the sources in order, each the seeded sample load_dataset gives.
  std::vector<std::pair<std::string, Example>> want;
  for (const auto& [name, limit] : std::vector<std::pair<std::string, size_t>>{{"harmfulqa", 3}, {"benign_instructions", 2}}) {
    DatasetLoadOptions lo;
    lo.limit = limit;
    lo.seed = 1;
    for (const auto& ex : load_dataset(registry().get(name), lo).examples) want.emplace_back(name, ex);
  }
  const auto keyword = make_judge("keyword");
  std::set<std::string> ids;
  for (size_t i = 0; i < rows.size(); ++i) {
    const json& r = rows[i];
    const auto& [dataset, ex] = want[i];
    EXPECT_EQ(r.at("id"), dataset + "/" + ex.id);
    EXPECT_EQ(r.at("dataset"), dataset);
    EXPECT_EQ(r.at("source_id"), ex.id);
    EXPECT_EQ(r.at("prompt"), ex.prompt);
    EXPECT_EQ(r.at("harmful"), dataset == "harmfulqa");
    EXPECT_EQ(r.at("stage"), "self");
    EXPECT_EQ(r.at("system_mode"), "none");
    EXPECT_EQ(r.at("system"), "");
    EXPECT_LE(r.at("new_tokens").get<int64_t>(), 5);
    EXPECT_TRUE(r.at("finish_reason") == "eos" || r.at("finish_reason") == "length") << r.at("finish_reason");
    const Verdict v = keyword->judge(ex.prompt, r.at("response").get<std::string>());
    EXPECT_EQ(r.at("refused").get<bool>(), v.refused);
    EXPECT_EQ(r.at("judge_reason"), v.reason);
    ids.insert(r.at("id").get<std::string>());
  }
  EXPECT_EQ(ids.size(), rows.size());

  const json m = read_json(dir / "manifest.json");
  EXPECT_EQ(m.at("builder"), "self_responses");
  EXPECT_EQ(m.at("status"), "complete");
  EXPECT_EQ(m.at("counts").at("rows"), 5);
  EXPECT_EQ(m.at("counts").at("datasets").at("harmfulqa").at("rows"), 3);
  EXPECT_EQ(m.at("counts").at("refused").get<int64_t>() + m.at("counts").at("complied").get<int64_t>(), 5);
  EXPECT_EQ(m.at("seeds").at("sample:harmfulqa"), 1);
  EXPECT_EQ(m.at("datasets").size(), 2u);
  for (const auto& d : m.at("datasets")) EXPECT_EQ(d.at("sha256").get<std::string>().size(), 64u);
  EXPECT_TRUE(m.contains("git_commit"));
  EXPECT_NE(m.at("config").get<std::string>().find("builder: self_responses"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir / "config.resolved.yaml"));
}

TEST(DataSelfResponses, KilledAndResumedBuildWritesTheSameFile) {
  // Sampled, so the per-batch seeds must also survive the resume.
  std::string text = kSelf;
  text.replace(text.find("temperature: 0.0"), 16, "temperature: 0.9");
  const DataBuildConfig config = parse(text);
  std::ostringstream log;
  TempDir whole, killed;
  run_data_build(config, tiny_options(whole.path, &log));

  // Kill after the second batch (4 of 5 rows), then tear the last line as a crash inside write(2) would.
  DataBuildOptions o = tiny_options(killed.path, &log);
  o.after_batch = [](size_t rows) {
    if (rows >= 4) throw std::runtime_error("simulated kill");
  };
  EXPECT_THROW(run_data_build(config, o), std::runtime_error);
  const std::string partial = read_file(killed / "data.jsonl");
  ASSERT_EQ(std::count(partial.begin(), partial.end(), '\n'), 4);
  fs::resize_file(killed / "data.jsonl", partial.size() - 20);  // row 4 loses its end (and newline)

  // Without --resume the directory is refused; with it the build finishes.
  EXPECT_NE(error_of([&] { run_data_build(config, tiny_options(killed.path, &log)); }).find("resume"),
            std::string::npos);
  DataBuildOptions r = tiny_options(killed.path, &log);
  r.resume = true;
  const DataBuildSummary s = run_data_build(config, r);
  EXPECT_TRUE(s.resumed);
  EXPECT_EQ(s.generated, 2u) << "rows 4 (torn) and 5 are generated again, rows 1-3 are kept";
  EXPECT_EQ(read_file(killed / "data.jsonl"), read_file(whole / "data.jsonl"));
  std::set<std::string> ids;
  for (const auto& row : read_rows(killed / "data.jsonl"))
    EXPECT_TRUE(ids.insert(row.at("id").get<std::string>()).second) << row.at("id");
  EXPECT_EQ(ids.size(), 5u);
  EXPECT_NE(log.str().find("torn last line"), std::string::npos) << "the repair is reported";

  // A finished build resumed again generates nothing and keeps the file.
  const DataBuildSummary again = run_data_build(config, r);
  EXPECT_EQ(again.generated, 0u);
  EXPECT_EQ(read_file(killed / "data.jsonl"), read_file(whole / "data.jsonl"));
}

TEST(DataSelfResponses, AnotherConfigInTheSameDirectoryIsRefusedUnlessForced) {
  TempDir dir;
  std::ostringstream log;
  run_data_build(parse(kSelf), tiny_options(dir.path, &log));
  std::string other = kSelf;
  other.replace(other.find("max_new_tokens: 5"), 17, "max_new_tokens: 3");
  DataBuildOptions o = tiny_options(dir.path, &log);
  o.resume = true;
  const std::string msg = error_of([&] { run_data_build(parse(other), o); });
  EXPECT_NE(msg.find("different resolved config"), std::string::npos) << msg;
  EXPECT_NE(msg.find("max_new_tokens"), std::string::npos) << "names the first differing line: " << msg;
  EXPECT_EQ(read_rows(dir / "data.jsonl").size(), 5u) << "the old build is untouched";
  o.resume = false;
  o.force = true;
  run_data_build(parse(other), o);
  for (const auto& row : read_rows(dir / "data.jsonl")) EXPECT_LE(row.at("new_tokens").get<int64_t>(), 3);
}

TEST(DataSelfResponses, NoPromptOrResponseReachesTheLog) {
  TempDir dir;
  std::ostringstream log;
  std::ostringstream cerr_capture;
  auto* old = std::cerr.rdbuf(cerr_capture.rdbuf());
  try {
    run_data_build(parse(kSelf), tiny_options(dir.path, &log));
  } catch (...) {
    std::cerr.rdbuf(old);
    throw;
  }
  std::cerr.rdbuf(old);
  const std::string all = log.str() + cerr_capture.str();
  EXPECT_NE(log.str().find("self_test"), std::string::npos) << "the log has progress: " << log.str();
  for (const auto& row : read_rows(dir / "data.jsonl")) {
    EXPECT_EQ(all.find(row.at("prompt").get<std::string>()), std::string::npos) << "a prompt reached the log";
    const std::string response = row.at("response");
    if (response.size() >= 8) EXPECT_EQ(all.find(response), std::string::npos) << "a response reached the log";
  }
}

TEST(DataConfig, EvaluationSetsAreRefusedAsSources) {
  const std::string msg = parse_error(R"(name: x
builder: self_responses
self_responses:
  sources:
    - {dataset: harmfulqa, limit: 2}
    - {dataset: advbench, limit: 2}
)");
  EXPECT_NE(msg.find("test.yaml:6:7: refusing to train on dataset 'advbench'"), std::string::npos) << msg;
  const std::string anchors = parse_error(R"(name: x
builder: deep_alignment
deep_alignment:
  refusals: [safety_tuned]
  anchors: [alpaca_eval_test]
)");
  EXPECT_NE(anchors.find("refusing to train on dataset 'alpaca_eval_test'"), std::string::npos) << anchors;

  // A config assembled in code cannot bypass the rule either.
  DataBuildConfig c = parse(kSelf);
  c.self_responses.sources[0].dataset = "xstest_unsafe";
  std::ostringstream log;
  TempDir dir;
  const std::string run_msg = error_of([&] { run_data_build(c, tiny_options(dir.path, &log)); });
  EXPECT_NE(run_msg.find("refusing to train on dataset 'xstest_unsafe'"), std::string::npos) << run_msg;
  EXPECT_FALSE(fs::exists(dir / "config.resolved.yaml")) << "nothing written";
}

TEST(DataConfig, BadConfigsNameTheirPosition) {
  const std::string good = "name: x\nbuilder: self_responses\nself_responses:\n  sources: [harmfulqa]\n";
  EXPECT_NO_THROW(parse(good));
  struct Case {
    std::string text, want;
  };
  const std::vector<Case> cases = {
      {"name: x\nbuilder: [self_responses\n", "test.yaml:3:1: malformed YAML"},
      {good + "sourcez: 1\n", "test.yaml:5:1: unknown key `sourcez` in the data-build config"},
      {good + "generation: {max_new_token: 4}\n", "test.yaml:5:14: unknown key `max_new_token` in `generation`"},
      {good + "generation: {batch_size: many}\n", "`generation` key `batch_size` has a value of the wrong type"},
      {good + "generation: {max_new_tokens: 0}\n", "test.yaml:5:13: generation.max_new_tokens must be >= 1"},
      {"name: x\nbuilder: selfish\n", "test.yaml:2:10: unknown builder 'selfish'; known builders: acd_anchors, "
                                      "deep_alignment, self_responses"},
      {"name: x\nbuilder: self_responses\nself_responses:\n  sources: [harmfull]\n",
       "test.yaml:4:13: unknown dataset 'harmfull'; known datasets: advbench"},
      {"name: x\nbuilder: self_responses\nself_responses:\n  sources: [{dataset: catqa, limit: -2}]\n",
       "test.yaml:4:37: a `self_responses.sources` entry key `limit` must be >= 0"},
      {"name: x\nbuilder: self_responses\nself_responses:\n  sources: [catqa, catqa]\n", "listed twice"},
      {"name: x\nbuilder: self_responses\n", "needs its settings under `self_responses:`"},
      {good + "acd_anchors: {harmful: [catqa]}\n", "test.yaml:5:14: `acd_anchors` settings belong to the builder "
                                                   "acd_anchors"},
      {good + "system: polite\n", "test.yaml:5:9: `system` must be none, default or {text: \"...\"}"},
      {good + "judge: oracle\n", "test.yaml:5:8: unknown judge 'oracle'; known judges: keyword"},
      {"name: a/b\nbuilder: self_responses\nself_responses:\n  sources: [catqa]\n", "test.yaml:1:7: `name` 'a/b'"},
      {"name: x\nbuilder: acd_anchors\nacd_anchors:\n  harmful: [benign_instructions]\n  benign: [catqa]\n",
       "test.yaml:4:13: `acd_anchors.harmful` needs harmful instructions, but dataset 'benign_instructions'"},
      {"name: x\nbuilder: deep_alignment\ndeep_alignment:\n  refusals: [harmfulqa]\n",
       "needs a dataset whose `fields.reference` holds a refusal"},
      {"name: x\nbuilder: deep_alignment\ndeep_alignment:\n  pairs: [safety_tuned]\n",
       "needs a dataset that keeps `chosen` and `rejected`"},
      {"name: x\nbuilder: deep_alignment\ndeep_alignment:\n  refusals: [safety_tuned]\n  harmful_answers: mine\n",
       "test.yaml:5:20: `deep_alignment.harmful_answers` must be `self` or {from: DIR}"},
  };
  for (const auto& c : cases) {
    const std::string msg = parse_error(c.text);
    EXPECT_NE(msg.find(c.want), std::string::npos) << "config:\n" << c.text << "\nmessage: " << msg;
  }
  const std::string model = parse_error(good + "model: smollm3-9b\n", /*resolve_model=*/true);
  EXPECT_NE(model.find("test.yaml:5:8: unknown model 'smollm3-9b'"), std::string::npos) << model;
  EXPECT_NE(model.find("smollm2-135m-instruct"), std::string::npos) << "lists the registered models: " << model;
}

TEST(DataConfig, ResolvedConfigFillsEveryDefault) {
  const DataBuildConfig c = parse("name: acd\nbuilder: acd_anchors\nacd_anchors:\n  harmful: [catqa]\n  benign: "
                                  "[benign_instructions]\n");
  const std::string text = canonical_yaml(c.resolved());
  for (const char* key : {"safe_prompt: You are a helpful, respectful", "opposite_prompt: You are a helpless",
                          "null_system: none", "max_new_tokens: 64", "keywords: data/refusal_keywords.txt"})
    EXPECT_NE(text.find(key), std::string::npos) << key << " missing from\n" << text;
  DataBuildConfig capped = c;
  capped.cap_sources(7);
  EXPECT_EQ(capped.acd_anchors.harmful[0].limit, 7u);
  EXPECT_NE(canonical_yaml(capped.resolved()), text) << "--limit is part of the resolved config";
}

TEST(DataDeepAlignment, TripletsAndAnchorsWithCounts) {
  TempDir dir;
  std::ostringstream log;
  const DataBuildConfig config = parse(R"(name: deep_test
builder: deep_alignment
generation: {max_new_tokens: 6, batch_size: 4}
deep_alignment:
  refusals: [{dataset: safety_tuned, limit: 12, seed: 2}]
  pairs: [{dataset: hh_harmless, limit: 60, seed: 2}]
  anchors: [{dataset: benign_instructions, limit: 3}, {dataset: alpaca_eval_train, limit: 2}]
)");
  const DataBuildSummary s = run_data_build(config, tiny_options(dir.path, &log));
  const auto rows = read_rows(dir / "data.jsonl");
  const auto answers = read_rows(dir / "responses.jsonl");
  std::map<std::string, json> answer_by_id;
  for (const auto& a : answers) answer_by_id[a.at("id").get<std::string>()] = a;
  const auto judge = make_judge("keyword");

  DatasetLoadOptions lo;
  lo.limit = 12;
  lo.seed = 2;
  const Dataset st = load_dataset(registry().get("safety_tuned"), lo);
  size_t st_refusals = 0;
  for (const auto& ex : st.examples) st_refusals += judge->judge(ex.prompt, *ex.reference).refused;
  EXPECT_EQ(answers.size(), st_refusals + 5) << "one answer per kept safety_tuned row and per anchor";

  size_t safety = 0, anchors = 0, from_model = 0, from_pairs = 0;
  std::set<std::string> ids;
  for (const auto& r : rows) {
    EXPECT_TRUE(ids.insert(r.at("id").get<std::string>()).second) << r.at("id");
    if (r.at("kind") == "safety") {
      ++safety;
      for (const char* k : {"instruction", "harmful_answer", "refusal", "dataset", "source_id"})
        EXPECT_TRUE(r.at(k).is_string()) << k;
      EXPECT_TRUE(judge->judge(r.at("instruction"), r.at("refusal")).refused) << r.at("id");
      EXPECT_FALSE(judge->judge(r.at("instruction"), r.at("harmful_answer")).refused) << r.at("id");
      if (r.at("harmful_answer_source") == "model") {
        ++from_model;
        EXPECT_EQ(r.at("dataset"), "safety_tuned");
        const json& a = answer_by_id.at("harmful/safety_tuned/" + r.at("source_id").get<std::string>());
        EXPECT_EQ(r.at("harmful_answer"), a.at("response"));
        EXPECT_FALSE(a.at("refused").get<bool>());
      } else {
        ++from_pairs;
        EXPECT_EQ(r.at("harmful_answer_source"), "rejected");
        EXPECT_EQ(r.at("refusal_source"), "chosen");
      }
    } else {
      ASSERT_EQ(r.at("kind"), "anchor");
      ++anchors;
      const json& a = answer_by_id.at(r.at("id").get<std::string>());  // anchor/<dataset>/<id> is also the answer's id
      EXPECT_EQ(r.at("response"), a.at("response"));
      EXPECT_EQ(r.at("instruction"), a.at("prompt"));
      EXPECT_FALSE(a.at("refused").get<bool>());
    }
  }
  EXPECT_GT(from_pairs, 0u) << "hh_harmless pairs give triplets without any generation";
  const json& c = s.counts;
  EXPECT_EQ(c.at("safety_rows"), safety);
  EXPECT_EQ(c.at("anchor_rows"), anchors);
  EXPECT_EQ(c.at("rows"), rows.size());
  const json& stc = c.at("safety").at("safety_tuned");
  EXPECT_EQ(stc.at("rows"), 12);
  EXPECT_EQ(stc.at("dropped_reference_not_refusal").get<size_t>(), 12 - st_refusals);
  EXPECT_EQ(stc.at("kept").get<size_t>() + stc.at("dropped_model_refused").get<size_t>(), st_refusals);
  EXPECT_EQ(stc.at("kept").get<size_t>(), from_model);
  const json& hh = c.at("safety").at("hh_harmless");
  EXPECT_EQ(hh.at("rows"), 60);
  EXPECT_EQ(hh.at("kept").get<size_t>() + hh.at("dropped_rejected_is_refusal").get<size_t>() +
                hh.at("dropped_chosen_not_refusal").get<size_t>(),
            60u);
  EXPECT_EQ(hh.at("kept").get<size_t>(), from_pairs);
  EXPECT_EQ(c.at("anchors").at("benign_instructions").at("rows"), 3);
  EXPECT_EQ(read_json(dir / "manifest.json").at("counts"), c);
}

// sensitive_anchors: the safety_tuned rows whose written reply is not a refusal become utility anchors
// with that very reply (no generation), and every other row is as without the option.
TEST(DataDeepAlignment, SensitiveAnchorsKeepTheWrittenNonRefusingReplies) {
  TempDir dir;
  std::ostringstream log;
  const DataBuildConfig config = parse(R"(name: deep_sensitive
builder: deep_alignment
generation: {max_new_tokens: 6, batch_size: 4}
deep_alignment:
  refusals: [{dataset: safety_tuned, limit: 40, seed: 3}]
  sensitive_anchors: true
)");
  EXPECT_TRUE(config.resolved()["deep_alignment"]["sensitive_anchors"].as<bool>());
  const DataBuildSummary s = run_data_build(config, tiny_options(dir.path, &log));
  const auto judge = make_judge("keyword");
  DatasetLoadOptions lo;
  lo.limit = 40;
  lo.seed = 3;
  const Dataset st = load_dataset(registry().get("safety_tuned"), lo);
  std::map<std::string, std::string> answered;  // id -> written non-refusing reply
  for (const auto& ex : st.examples)
    if (!judge->judge(ex.prompt, *ex.reference).refused) answered[ex.id] = *ex.reference;
  ASSERT_GT(answered.size(), 0u) << "the seeded sample should hold some careful answers";
  size_t sensitive = 0;
  for (const auto& r : read_rows(dir / "data.jsonl")) {
    if (r.at("id").get<std::string>().rfind("anchor/sensitive/", 0) != 0) continue;
    ++sensitive;
    EXPECT_EQ(r.at("kind"), "anchor");
    EXPECT_EQ(r.at("response"), answered.at(r.at("source_id").get<std::string>()));
    EXPECT_FALSE(judge->judge(r.at("instruction"), r.at("response")).refused);
  }
  EXPECT_EQ(sensitive, answered.size());
  EXPECT_EQ(s.counts.at("sensitive_anchor_rows").get<size_t>(), answered.size());
  EXPECT_EQ(s.counts.at("safety").at("safety_tuned").at("to_sensitive_anchor").get<size_t>(), answered.size());
  EXPECT_EQ(s.generated, 40 - answered.size()) << "only the refused rows' instructions are answered by the model";
}

TEST(DataDeepAlignment, HarmfulAnswersFromAPreviousSelfResponsesBuild) {
  TempDir prev, dir;
  std::ostringstream log;
  run_data_build(parse(R"(name: prev
builder: self_responses
generation: {max_new_tokens: 6, batch_size: 4}
self_responses:
  sources: [{dataset: safety_tuned, limit: 10, seed: 4}]
)"),
                 tiny_options(prev.path, &log));
  const std::string cfg = "name: deep_from\nbuilder: deep_alignment\ngeneration: {max_new_tokens: 6, batch_size: 4}\n"
                          "deep_alignment:\n  refusals: [{dataset: safety_tuned, limit: 10, seed: 4}]\n"
                          "  harmful_answers: {from: " + prev.path + "}\n";
  const DataBuildSummary s = run_data_build(parse(cfg), tiny_options(dir.path, &log));
  EXPECT_EQ(s.generated, 0u) << "nothing to answer: the harmful answers come from the previous build";
  std::map<std::string, json> previous;
  for (const auto& r : read_rows(prev / "data.jsonl")) previous[r.at("source_id").get<std::string>()] = r;
  for (const auto& r : read_rows(dir / "data.jsonl")) {
    const json& p = previous.at(r.at("source_id").get<std::string>());
    EXPECT_EQ(r.at("harmful_answer"), p.at("response"));
    EXPECT_FALSE(p.at("refused").get<bool>());
  }
  const json m = read_json(dir / "manifest.json");
  bool hashed = false;
  for (const auto& d : m.at("datasets")) hashed = hashed || d.at("path") == fs::absolute(prev / "data.jsonl").string();
  EXPECT_TRUE(hashed) << "the previous build's data.jsonl is recorded with its sha256";

  // A bad line in the previous build's file is named.
  {
    std::string text = read_file(prev / "data.jsonl");
    const size_t second = text.find('\n') + 1;
    text.insert(second, "{\"id\": oops\n");
    std::ofstream(prev / "data.jsonl", std::ios::binary) << text;
  }
  TempDir dir2;
  const std::string msg = error_of([&] { run_data_build(parse(cfg), tiny_options(dir2.path, &log)); });
  EXPECT_NE(msg.find("data.jsonl line 2 is not valid JSON"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dir2 / "config.resolved.yaml")) << "nothing written";
}

TEST(DataAcdAnchors, ThreeSystemPromptsSplitIntoTheSubsets) {
  TempDir dir;
  std::ostringstream log;
  const DataBuildConfig config = parse(R"(name: acd_test
builder: acd_anchors
judge: test_parity
generation: {max_new_tokens: 5, batch_size: 4}
acd_anchors:
  harmful: [{dataset: catqa, limit: 2}, {dataset: harmfulqa, limit: 2}]
  benign: [{dataset: benign_instructions, limit: 3}]
  safe_prompt: Be safe.
  null_system: default
)");
  const DataBuildSummary s = run_data_build(config, tiny_options(dir.path, &log));
  const auto answers = read_rows(dir / "responses.jsonl");
  ASSERT_EQ(answers.size(), 3u * 7u);
  std::map<std::string, json> by_id;
  std::map<std::string, size_t> per_kind;
  for (const auto& a : answers) {
    by_id[a.at("id").get<std::string>()] = a;
    per_kind[a.at("stage").get<std::string>()]++;
    if (a.at("stage") == "safe") EXPECT_EQ(a.at("system"), "Be safe.");
    if (a.at("stage") == "opposite") EXPECT_EQ(a.at("system").get<std::string>().rfind("You are a helpless", 0), 0u);
    if (a.at("stage") == "null") EXPECT_EQ(a.at("system_mode"), "default");
  }
  EXPECT_EQ(per_kind, (std::map<std::string, size_t>{{"null", 7}, {"opposite", 7}, {"safe", 7}}));
  size_t hr = 0, ha = 0, ds = 0;
  for (const auto& r : read_rows(dir / "data.jsonl")) {
    const json& a = by_id.at(r.at("id").get<std::string>());
    const bool refused = a.at("refused").get<bool>();
    EXPECT_EQ(r.at("response"), a.at("response"));
    EXPECT_EQ(r.at("instruction"), a.at("prompt"));
    EXPECT_EQ(r.at("system_kind"), a.at("stage"));
    if (a.at("harmful").get<bool>()) {
      EXPECT_EQ(r.at("subset"), refused ? "D_HR" : "D_HA");
    } else {
      EXPECT_FALSE(refused) << "benign refusals are dropped";
      EXPECT_EQ(r.at("subset"), "D_S");
    }
    hr += r.at("subset") == "D_HR";
    ha += r.at("subset") == "D_HA";
    ds += r.at("subset") == "D_S";
  }
  EXPECT_GT(hr, 0u);
  EXPECT_GT(ha, 0u);
  EXPECT_GT(ds, 0u);
  EXPECT_EQ(s.counts.at("D_HR"), hr);
  EXPECT_EQ(s.counts.at("D_HA"), ha);
  EXPECT_EQ(s.counts.at("D_S"), ds);
  EXPECT_EQ(hr + ha, 3u * 4u);
  EXPECT_EQ(ds + s.counts.at("dropped_benign_refusals").get<size_t>(), 3u * 3u);
  EXPECT_EQ(read_json(dir / "manifest.json").at("status"), "complete");
}

// Written refusals (safety_tuned) join D_HR as they are, with no generation; the judge decides which
// written replies are refusals. The tiny random model's own answers are never refusals to the
// keyword judge, so every D_HR row here is a written one.
TEST(DataAcdAnchors, WrittenRefusalsJoinDHrWithoutGeneration) {
  TempDir dir;
  std::ostringstream log;
  const DataBuildConfig config = parse(R"(name: acd_written
builder: acd_anchors
judge: keyword
generation: {max_new_tokens: 4, batch_size: 4}
acd_anchors:
  harmful: [{dataset: catqa, limit: 2}]
  benign: [{dataset: benign_instructions, limit: 2}]
  written_refusals: [{dataset: safety_tuned, limit: 6, seed: 0}]
)");
  const DataBuildSummary s = run_data_build(config, tiny_options(dir.path, &log));
  EXPECT_EQ(read_rows(dir / "responses.jsonl").size(), 3u * 4u) << "written refusals are not generated";
  size_t written = 0, hr = 0;
  for (const auto& r : read_rows(dir / "data.jsonl")) {
    if (r.at("subset") == "D_HR") ++hr;
    if (r.at("system_kind") != "written") continue;
    ++written;
    EXPECT_EQ(r.at("subset"), "D_HR");
    EXPECT_EQ(r.at("dataset"), "safety_tuned");
    EXPECT_EQ(r.at("id").get<std::string>().rfind("written/safety_tuned/", 0), 0u);
    EXPECT_FALSE(r.at("response").get<std::string>().empty());
  }
  EXPECT_GT(written, 0u) << "the keyword judge sees most of safety_tuned's written replies as refusals";
  EXPECT_LE(written, 6u);
  EXPECT_EQ(s.counts.at("written_refusal_rows"), 6u);
  EXPECT_EQ(s.counts.at("D_HR_written"), written);
  EXPECT_EQ(s.counts.at("D_HR"), hr);
  // A list that is not harmful with written refusals is refused at parse time.
  const std::string msg = error_of([&] {
    parse("name: x\nbuilder: acd_anchors\nacd_anchors:\n  harmful: [catqa]\n  benign: [benign_instructions]\n"
          "  written_refusals: [benign_instructions]\n");
  });
  EXPECT_NE(msg.find("`acd_anchors.written_refusals` needs harmful instructions with written refusals"),
            std::string::npos)
      << msg;
}

TEST(DataAcdAnchors, AnEmptySubsetIsAnErrorThatSaysWhichAndWhy) {
  TempDir dir;
  std::ostringstream log;
  const DataBuildConfig config = parse(R"(name: acd_empty
builder: acd_anchors
judge: test_never
generation: {max_new_tokens: 3, batch_size: 4}
acd_anchors:
  harmful: [{dataset: catqa, limit: 2}]
  benign: [{dataset: benign_instructions, limit: 2}]
)");
  const std::string msg = error_of([&] { run_data_build(config, tiny_options(dir.path, &log)); });
  EXPECT_NE(msg.find("the subset D_HR (harmful instruction + refusing response) is empty"), std::string::npos) << msg;
  EXPECT_NE(msg.find("none of the 6 answers to the 2 harmful instructions"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dir / "data.jsonl")) << "no half-made data";
  EXPECT_EQ(read_rows(dir / "responses.jsonl").size(), 12u) << "the answers are kept";
  const json m = read_json(dir / "manifest.json");
  EXPECT_EQ(m.at("status"), "failed");
  EXPECT_NE(m.at("error").get<std::string>().find("D_HR"), std::string::npos);
}

// acd_anchors.wrap_probability: the choice is a seeded function of (seed, dataset, id) that wraps
// the configured share of instructions and uses every wrapper.
TEST(DataAcdAnchors, WrapChoiceIsSeededDeterministicAndRespectsTheShare) {
  constexpr size_t kN = 4000;
  const size_t n_wrappers = prompt_wrapper_names().size();
  for (const double p : {0.25, 0.5, 0.8}) {
    size_t wrapped = 0, differs = 0;
    std::vector<size_t> per_wrapper(n_wrappers, 0);
    for (size_t i = 0; i < kN; ++i) {
      const std::string id = "row" + std::to_string(i);
      const auto w = acd_anchor_wrapper(p, 11, "catqa", id);
      EXPECT_EQ(w, acd_anchor_wrapper(p, 11, "catqa", id)) << "deterministic";
      if (w) {
        ++wrapped;
        ASSERT_LT(*w, n_wrappers);
        ++per_wrapper[*w];
      }
      differs += w.has_value() != acd_anchor_wrapper(p, 12, "catqa", id).has_value();
    }
    // Binomial(4000, p): the share is within 0.03 of p (more than 3.9 standard deviations).
    EXPECT_NEAR(static_cast<double>(wrapped) / kN, p, 0.03) << "p " << p;
    for (size_t k = 0; k < n_wrappers; ++k)
      EXPECT_NEAR(static_cast<double>(per_wrapper[k]) / wrapped, 1.0 / n_wrappers, 0.04)
          << "wrapper " << prompt_wrapper_names()[k] << " at p " << p;
    // Another seed picks another set (expected disagreement 2p(1-p) of the rows).
    EXPECT_GT(differs, static_cast<size_t>(kN * p * (1 - p)));
  }
  // Nested shares: a row wrapped at p is wrapped at every larger p (one uniform draw per row).
  for (size_t i = 0; i < 500; ++i) {
    const std::string id = "n" + std::to_string(i);
    if (acd_anchor_wrapper(0.3, 5, "harmfulqa", id)) EXPECT_TRUE(acd_anchor_wrapper(0.6, 5, "harmfulqa", id));
  }
  EXPECT_FALSE(acd_anchor_wrapper(0.0, 5, "catqa", "x"));
  EXPECT_TRUE(acd_anchor_wrapper(1.0, 5, "catqa", "x"));
}

// A build with wrap_probability: harmful, benign and written-refusal instructions are wrapped in the
// share asked for, each instruction the same way under the three system prompts, D_HR, D_HA and D_S
// all hold wrapped rows, and a second build writes the same bytes.
TEST(DataAcdAnchors, WrapProbabilityWrapsAShareOfEverySubsetTheSameWayEachRun) {
  const std::string yaml = R"(name: acd_wrap
builder: acd_anchors
judge: test_parity
generation: {max_new_tokens: 3, batch_size: 8}
acd_anchors:
  harmful: [{dataset: catqa, limit: 12}, {dataset: harmfulqa, limit: 12}]
  benign: [{dataset: benign_instructions, limit: 16}]
  written_refusals: [{dataset: safety_tuned, limit: 16, seed: 0}]
  wrap_probability: 0.5
  wrap_seed: 9
)";
  const DataBuildConfig config = parse(yaml);
  EXPECT_DOUBLE_EQ(config.acd_anchors.wrap_probability, 0.5);
  EXPECT_EQ(config.acd_anchors.wrap_seed, 9u);
  TempDir dir, dir2;
  std::ostringstream log, log2;
  const DataBuildSummary s = run_data_build(config, tiny_options(dir.path, &log));
  run_data_build(parse(yaml), tiny_options(dir2.path, &log2));
  EXPECT_EQ(read_file(dir / "data.jsonl"), read_file(dir2 / "data.jsonl")) << "deterministic";
  EXPECT_EQ(read_file(dir / "responses.jsonl"), read_file(dir2 / "responses.jsonl")) << "deterministic";

  // The originals, by dataset/id, for comparison.
  std::map<std::string, std::string> original;
  for (const std::string ds : {"catqa", "harmfulqa", "benign_instructions", "safety_tuned"})
    for (const auto& ex : load_dataset(registry().get(ds)).examples) original[ds + "/" + ex.id] = ex.prompt;
  std::map<std::string, std::set<std::string>> seen_as;  // dataset/id -> instructions under its system prompts
  std::map<std::string, size_t> wrapped_in_subset;
  size_t wrapped_written = 0, written = 0;
  for (const auto& r : read_rows(dir / "data.jsonl")) {
    const std::string key = r.at("dataset").get<std::string>() + "/" + r.at("source_id").get<std::string>();
    ASSERT_TRUE(original.count(key)) << key;
    const std::string& orig = original.at(key);
    const std::string instruction = r.at("instruction").get<std::string>();
    const auto w = acd_anchor_wrapper(0.5, 9, r.at("dataset").get<std::string>(), r.at("source_id").get<std::string>());
    ASSERT_TRUE(r.contains("wrapper"));
    if (w) {
      EXPECT_EQ(r.at("wrapper"), prompt_wrapper_names()[*w]);
      EXPECT_NE(instruction, orig);
      EXPECT_NE(instruction.find(orig), std::string::npos) << "the wrapper keeps the request";
      ++wrapped_in_subset[r.at("subset").get<std::string>()];
    } else {
      EXPECT_EQ(r.at("wrapper"), "none");
      EXPECT_EQ(instruction, orig);
    }
    seen_as[key].insert(instruction);
    if (r.at("system_kind") == "written") {
      ++written;
      wrapped_written += w.has_value();
    }
  }
  for (const auto& [key, forms] : seen_as) EXPECT_EQ(forms.size(), 1u) << key << ": one wrapping per instruction";
  EXPECT_GT(wrapped_in_subset["D_HR"], 0u);
  EXPECT_GT(wrapped_in_subset["D_HA"], 0u);
  EXPECT_GT(wrapped_in_subset["D_S"], 0u) << "benign instructions are wrapped too";
  EXPECT_GT(written, 0u);
  EXPECT_GT(wrapped_written, 0u);
  EXPECT_LT(wrapped_written, written);
  // The share over all 56 instructions: Binomial(56, 0.5) lies in [16, 40] with probability > 0.999.
  const json& wi = s.counts.at("wrapped_instructions");
  const size_t n_wrapped =
      wi.at("harmful").get<size_t>() + wi.at("benign").get<size_t>() + wi.at("written_refusals").get<size_t>();
  EXPECT_GE(n_wrapped, 16u);
  EXPECT_LE(n_wrapped, 40u);
  EXPECT_GT(wi.at("harmful").get<size_t>(), 0u);
  EXPECT_GT(wi.at("benign").get<size_t>(), 0u);
  for (const char* sub : {"D_HR", "D_HA", "D_S"})
    EXPECT_EQ(s.counts.at("wrapped_rows").at(sub).get<size_t>(), wrapped_in_subset[sub]) << sub;
  EXPECT_EQ(config.resolved()["acd_anchors"]["wrap_probability"].as<double>(), 0.5) << "recorded";
  EXPECT_EQ(config.resolved()["acd_anchors"]["wrap_seed"].as<uint64_t>(), 9u) << "recorded";
  // No wrapped prompt reaches the log either.
  for (const auto& r : read_rows(dir / "data.jsonl"))
    EXPECT_EQ(log.str().find(r.at("instruction").get<std::string>()), std::string::npos);

  // Off by default: nothing wrapped, no wrapper field, the resolved config as before the option.
  const DataBuildConfig plain = parse(R"(name: acd_plain
builder: acd_anchors
acd_anchors:
  harmful: [catqa]
  benign: [benign_instructions]
)");
  EXPECT_EQ(plain.acd_anchors.wrap_probability, 0.0);
  EXPECT_FALSE(plain.resolved()["acd_anchors"]["wrap_probability"]);
  // Bad values are named with their position.
  const std::string base = "name: x\nbuilder: acd_anchors\nacd_anchors:\n  harmful: [catqa]\n  benign: [benign_instructions]\n";
  EXPECT_NE(parse_error(base + "  wrap_probability: 1.5\n").find("test.yaml:6:21: acd_anchors.wrap_probability must be a share between 0 and 1"),
            std::string::npos)
      << parse_error(base + "  wrap_probability: 1.5\n");
  EXPECT_NE(parse_error(base + "  wrap_probability: half\n").find("test.yaml:6:21"), std::string::npos)
      << parse_error(base + "  wrap_probability: half\n");
  EXPECT_NE(parse_error(base + "  wrap_seed: -3\n").find("test.yaml:6:14"), std::string::npos)
      << parse_error(base + "  wrap_seed: -3\n");
}

TEST(DataConfig, ADataFileWithABadLineIsNamedAndNothingIsWritten) {
  TempDir root;
  fs::create_directories(root / "specs");
  fs::create_directories(root / "pool");
  std::ofstream(root / "specs/mini_pool.yaml") << "name: mini_pool\npath: pool/rows.jsonl\nformat: jsonl\n"
                                                  "fields: {id: id, prompt: q}\nsplit: train\nharmful: true\n";
  std::ofstream(root / "pool/rows.jsonl") << "{\"id\": \"a\", \"q\": \"first\"}\n{\"id\": \"b\", \"q\": \"second\"}\n"
                                             "{\"id\": \"c\", \"q\": \n";
  const DatasetRegistry mini = DatasetRegistry::from_directory(root / "specs");
  DataConfigChecks checks;
  checks.resolve_model = false;
  const DataBuildConfig config = parse_data_build_config(
      "name: mini\nbuilder: self_responses\nself_responses:\n  sources: [mini_pool]\n", "mini.yaml", mini, checks);
  std::ostringstream log;
  DataBuildOptions o = tiny_options(root / "out", &log);
  o.registry = &mini;
  o.data_root = root.path;
  const std::string msg = error_of([&] { run_data_build(config, o); });
  EXPECT_NE(msg.find("rows.jsonl line 3 is not valid JSON"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(root / "out")) << "nothing written";
}
