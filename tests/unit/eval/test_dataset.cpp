// Dataset registry, loaders (JSON / JSONL / CSV), filters, honest-split guard, --limit sampling,
// and their error messages. Uses the real files under the data root (shared/datasets); a missing
// data root makes these tests FAIL with the loader's message, never skip.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "core/error.h"
#include "eval/csv.h"
#include "eval/dataset.h"
#include "support/error_of.h"

using namespace safedec;
using safedec::testing_support::error_of;
using safedec::testing_support::kNoError;
namespace fs = std::filesystem;

namespace {

// A scratch directory removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() /
           ("safedec_eval_ds_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  static int& counter() {
    static int c = 0;
    return c;
  }
  std::string write(const std::string& name, const std::string& text) const {
    fs::create_directories((path / name).parent_path());
    std::ofstream(path / name, std::ios::binary) << text;
    return (path / name).string();
  }
};

const DatasetRegistry& registry() {
  static DatasetRegistry reg = DatasetRegistry::builtin();
  return reg;
}

Dataset load(const std::string& name, size_t limit = 0, uint64_t seed = 0) {
  DatasetLoadOptions o;
  o.limit = limit;
  o.seed = seed;
  return load_dataset(registry().get(name), o);
}

std::vector<std::string> ids_of(const std::vector<Example>& ex) {
  std::vector<std::string> out;
  for (const auto& e : ex) out.push_back(e.id);
  return out;
}

}  // namespace

// ---- CSV ---------------------------------------------------------------------------------------

TEST(Csv, Rfc4180QuotingCommasNewlinesAndDoubledQuotes) {
  const std::string text =
      "id,prompt,note\r\n"
      "1,\"Hello, world\",plain\r\n"
      "2,\"She said \"\"hi\"\"\",\"multi\nline\"\r\n"
      "3,,\"\"\n"
      "4,last,no-newline";
  CsvTable t = parse_csv(text, "mem.csv");
  ASSERT_EQ(t.header, (std::vector<std::string>{"id", "prompt", "note"}));
  ASSERT_EQ(t.rows.size(), 4u);
  EXPECT_EQ(t.rows[0][1], "Hello, world");
  EXPECT_EQ(t.rows[1][1], "She said \"hi\"");
  EXPECT_EQ(t.rows[1][2], "multi\nline");
  EXPECT_EQ(t.rows[2][1], "");
  EXPECT_EQ(t.rows[2][2], "");
  EXPECT_EQ(t.rows[3][2], "no-newline");
}

TEST(Csv, SkipsBomAndBlankLines) {
  CsvTable t = parse_csv("\xEF\xBB\xBF" "a,b\n\n1,2\n\n", "bom.csv");
  EXPECT_EQ(t.header[0], "a");
  ASSERT_EQ(t.rows.size(), 1u);
  EXPECT_EQ(t.rows[0][1], "2");
}

TEST(Csv, ErrorsNameOriginAndLine) {
  EXPECT_NE(error_of([] { parse_csv("a,b\n1,\"open\n", "x.csv"); }).find("x.csv: unterminated quoted field starting on line 2"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_csv("a,b\n1,2,3\n", "x.csv"); }).find("line 2 has 3 fields but the header has 2"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_csv("a,b\n1,x\"y\n", "x.csv"); }).find("stray '\"'"), std::string::npos);
  EXPECT_NE(error_of([] { parse_csv("a\n\"q\"x\n", "x.csv"); }).find("after the closing quote on line 2"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_csv("", "e.csv"); }).find("empty"), std::string::npos);
}

// ---- registry and real data --------------------------------------------------------------------

TEST(DatasetRegistry, RegistersEveryRequiredDataset) {
  const std::vector<std::string> want = {
      "advbench", "alpaca_eval_test", "alpaca_eval_train", "autodan", "benign_instructions", "catqa",
      "deepinception", "donotanswer", "gcg", "harmfulqa", "hh_harmless", "refusal_sft_seed",
      "refusal_sft_vicuna", "safety_tuned", "xstest_safe", "xstest_unsafe"};
  EXPECT_EQ(registry().names(), want);
  for (const char* n : {"advbench", "gcg", "autodan", "deepinception", "xstest_safe",
                        "xstest_unsafe", "alpaca_eval_test"})
    EXPECT_EQ(registry().get(n).split, DatasetSplit::Eval) << n;
  for (const char* n : {"donotanswer", "refusal_sft_seed", "refusal_sft_vicuna", "alpaca_eval_train",
                        "safety_tuned", "harmfulqa", "catqa", "hh_harmless", "benign_instructions"})
    EXPECT_EQ(registry().get(n).split, DatasetSplit::Train) << n;
  for (const char* n : {"safety_tuned", "harmfulqa", "catqa", "hh_harmless"})
    EXPECT_TRUE(registry().get(n).harmful) << n;
  EXPECT_FALSE(registry().get("benign_instructions").harmful);
  EXPECT_TRUE(registry().get("xstest_safe").over_refusal_probe);
  EXPECT_FALSE(registry().get("xstest_safe").harmful);
  EXPECT_TRUE(registry().get("advbench").harmful);
  EXPECT_FALSE(registry().get("alpaca_eval_test").harmful);
}

TEST(DatasetRegistry, UnknownNameListsKnownOnes) {
  const std::string msg = error_of([] { registry().get("advbnech"); });
  EXPECT_NE(msg.find("unknown dataset 'advbnech'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("advbench, alpaca_eval_test"), std::string::npos) << msg;
}

TEST(DatasetLoad, RealRowCounts) {
  const std::map<std::string, size_t> want = {
      {"advbench", 520}, {"gcg", 150}, {"autodan", 50}, {"deepinception", 50},
      {"xstest_safe", 250}, {"xstest_unsafe", 200}, {"alpaca_eval_test", 603},
      {"alpaca_eval_train", 202}, {"donotanswer", 939}, {"refusal_sft_seed", 36},
      {"refusal_sft_vicuna", 71}, {"safety_tuned", 2476}, {"harmfulqa", 1921}, {"catqa", 543},
      {"hh_harmless", 625}, {"benign_instructions", 3000}};
  for (const auto& [name, n] : want) {
    Dataset ds = load(name);
    EXPECT_EQ(ds.examples.size(), n) << name;
    const auto id_list = ids_of(ds.examples);
    std::set<std::string> ids(id_list.begin(), id_list.end());
    EXPECT_EQ(ids.size(), n) << name << ": ids must be unique";
    for (const auto& e : ds.examples) ASSERT_FALSE(e.prompt.empty()) << name << " " << e.id;
  }
}

TEST(DatasetLoad, FieldMappingAndKeptExtras) {
  Dataset gcg = load("gcg");
  EXPECT_EQ(gcg.examples[0].id, gcg.examples[0].extra.at("target-model") + "/0");
  std::set<std::string> models;
  for (const auto& e : gcg.examples) models.insert(e.extra.at("target-model"));
  EXPECT_EQ(models, (std::set<std::string>{"guanaco", "llama2", "vicuna"}));
  EXPECT_TRUE(gcg.examples[0].extra.count("goal"));

  Dataset deep = load("deepinception");
  EXPECT_EQ(deep.examples[0].extra.at("target-model"), "") << "JSON null is kept as empty text";

  Dataset alpaca = load("alpaca_eval_test");
  ASSERT_TRUE(alpaca.examples[0].reference.has_value());
  EXPECT_FALSE(alpaca.examples[0].reference->empty());
  EXPECT_EQ(alpaca.examples[0].row_index, 1u);
  EXPECT_EQ(alpaca.examples[0].id, "1");
  for (const auto& e : alpaca.examples) ASSERT_NE(e.row_index % 4, 0u);

  Dataset seed = load("refusal_sft_seed");  // list under the key "prompts"
  EXPECT_TRUE(seed.examples[0].extra.count("category"));

  Dataset dna = load("donotanswer");  // 5 JSONL files, ids "<stem>:<line>"
  EXPECT_EQ(dna.files.size(), 5u);
  EXPECT_EQ(dna.examples.front().id, "discrimination_exclusion_toxicity_hateful_offensive:0");
  EXPECT_EQ(dna.examples.back().id, "misinformation_harms:154");
  EXPECT_EQ(dna.examples.front().extra.at("intents").front(), '[') << "arrays kept as JSON text";

  Dataset st = load("safety_tuned");  // instruction -> prompt, the written refusal as reference
  EXPECT_EQ(st.examples.front().id, "stl-0001");
  ASSERT_TRUE(st.examples.front().reference.has_value());
  EXPECT_FALSE(st.examples.front().reference->empty());
  Dataset hh = load("hh_harmless");  // both replies kept
  EXPECT_FALSE(hh.examples.front().extra.at("chosen").empty());
  EXPECT_FALSE(hh.examples.front().extra.at("rejected").empty());
  EXPECT_EQ(load("harmfulqa").examples.front().extra.count("topic"), 1u);
  EXPECT_EQ(load("catqa").examples.front().extra.count("category"), 1u);

  Dataset xs = load("xstest_safe");
  for (const auto& e : xs.examples) ASSERT_EQ(e.extra.count("type"), 1u);
}

TEST(DatasetLoad, AlpacaSplitIsAPartitionAndTrainNeverSeesEvalPrompts) {
  Dataset test = load("alpaca_eval_test"), train = load("alpaca_eval_train");
  std::set<size_t> rows;
  for (const auto& e : test.examples) rows.insert(e.row_index);
  for (const auto& e : train.examples) EXPECT_TRUE(rows.insert(e.row_index).second);
  EXPECT_EQ(rows.size(), 805u);
  EXPECT_EQ(*rows.rbegin(), 804u);

  // No prompt of any train-only pool may appear verbatim in any evaluation set.
  std::set<std::string> eval_prompts;
  for (const auto& name : registry().names())
    if (registry().get(name).split == DatasetSplit::Eval)
      for (const auto& e : load(name).examples) eval_prompts.insert(e.prompt);
  size_t overlaps = 0;
  for (const auto& name : registry().names())
    if (registry().get(name).split == DatasetSplit::Train)
      for (const auto& e : load(name).examples) overlaps += eval_prompts.count(e.prompt);
  EXPECT_EQ(overlaps, 0u);
}

TEST(DatasetSplitGuard, RefusesEvaluatingOnTrainAndTrainingOnEval) {
  EXPECT_NO_THROW(check_dataset_use(registry().get("advbench"), DatasetUse::Evaluate));
  EXPECT_NO_THROW(check_dataset_use(registry().get("donotanswer"), DatasetUse::Train));
  const std::string a = error_of([] { check_dataset_use(registry().get("alpaca_eval_train"), DatasetUse::Evaluate); });
  EXPECT_NE(a.find("refusing to evaluate on dataset 'alpaca_eval_train'"), std::string::npos) << a;
  const std::string b = error_of([] { check_dataset_use(registry().get("advbench"), DatasetUse::Train); });
  EXPECT_NE(b.find("refusing to train on dataset 'advbench'"), std::string::npos) << b;
  for (const auto& name : registry().names()) {
    const auto& spec = registry().get(name);
    const bool eval = spec.split == DatasetSplit::Eval;
    EXPECT_EQ(eval, error_of([&] { check_dataset_use(spec, DatasetUse::Train); }) != kNoError);
    EXPECT_EQ(!eval, error_of([&] { check_dataset_use(spec, DatasetUse::Evaluate); }) != kNoError);
  }
}

// ---- sampling ------------------------------------------------------------------------------------

TEST(DatasetLimit, StableSeededSampleInFileOrder) {
  Dataset all = load("advbench");
  Dataset a = load("advbench", 40, 7), b = load("advbench", 40, 7), c = load("advbench", 40, 8);
  ASSERT_EQ(a.examples.size(), 40u);
  EXPECT_EQ(ids_of(a.examples), ids_of(b.examples));
  EXPECT_NE(ids_of(a.examples), ids_of(c.examples));
  for (size_t i = 1; i < a.examples.size(); ++i)
    EXPECT_LT(a.examples[i - 1].row_index, a.examples[i].row_index) << "file order preserved";
  // The sample is not simply the first rows.
  const auto all_ids = ids_of(all.examples);
  EXPECT_NE(ids_of(a.examples), std::vector<std::string>(all_ids.begin(), all_ids.begin() + 40));
  EXPECT_EQ(load("advbench", 10000, 7).examples.size(), 520u) << "limit >= n keeps everything";
}

TEST(DatasetLimit, SampleKeyIsDeterministicAndSeedSensitive) {
  EXPECT_EQ(sample_key(0, "abc"), sample_key(0, "abc"));
  EXPECT_NE(sample_key(0, "abc"), sample_key(1, "abc"));
  EXPECT_NE(sample_key(0, "abc"), sample_key(0, "abd"));
  // Roughly uniform top bit over many ids (the finaliser mixes FNV's weak bits).
  size_t high = 0;
  for (int i = 0; i < 2000; ++i) high += sample_key(3, std::to_string(i)) >> 63;
  EXPECT_GT(high, 900u);
  EXPECT_LT(high, 1100u);
}

RC_GTEST_PROP(DatasetLimit, SampleDependsOnlyOnIdsAndGrowsByPrefix, ()) {
  const size_t n = *rc::gen::inRange<size_t>(1, 60);
  const uint64_t seed = *rc::gen::arbitrary<uint64_t>();
  std::vector<Example> ex(n);
  for (size_t i = 0; i < n; ++i) {
    ex[i].id = "row-" + std::to_string(i * 7 + 3);
    ex[i].row_index = i;
  }
  const size_t k = *rc::gen::inRange<size_t>(1, n + 1);
  const auto s = subsample(ex, k, seed);
  RC_ASSERT(s.size() == std::min(k, n));
  // Order-independent: shuffling the input selects the same ids.
  std::vector<Example> shuffled = ex;
  std::mt19937_64 rng(seed);
  std::shuffle(shuffled.begin(), shuffled.end(), rng);
  auto ids_a = ids_of(s), ids_b = ids_of(subsample(shuffled, k, seed));
  std::sort(ids_a.begin(), ids_a.end());
  std::sort(ids_b.begin(), ids_b.end());
  RC_ASSERT(ids_a == ids_b);
  // Growing the limit only adds ids.
  if (k < n) {
    const auto bigger = ids_of(subsample(ex, k + 1, seed));
    std::set<std::string> big(bigger.begin(), bigger.end());
    for (const auto& id : ids_a) RC_ASSERT(big.count(id) == 1u);
  }
  // File order.
  for (size_t i = 1; i < s.size(); ++i) RC_ASSERT(s[i - 1].row_index < s[i].row_index);
}

// ---- specs and loaders on synthetic files -----------------------------------------------------

TEST(DatasetSpecParse, MalformedYamlReportsLineAndColumn) {
  const std::string msg = error_of([] {
    parse_dataset_spec("name: x\nfields:\n  prompt: [unclosed\nsplit: eval\n", "bad.yaml");
  });
  EXPECT_NE(msg.find("bad.yaml: malformed YAML at line"), std::string::npos) << msg;
  EXPECT_NE(msg.find("column"), std::string::npos) << msg;
}

TEST(DatasetSpecParse, UnknownKeysAndBadValuesAreErrors) {
  const std::string base = "name: t\npath: t.json\nformat: json\nfields: {prompt: p}\nsplit: eval\nharmful: false\n";
  EXPECT_NO_THROW(parse_dataset_spec(base, "t.yaml"));
  EXPECT_NE(error_of([&] { parse_dataset_spec(base + "filter: []\n", "t.yaml"); }).find("unknown key 'filter'"), std::string::npos);
  EXPECT_NE(error_of([&] { parse_dataset_spec(base + "expected_rows: -3\n", "t.yaml"); }).find("expected_rows must be positive"), std::string::npos);
  std::string s = base;
  s.replace(s.find("split: eval"), 11, "split: test");
  EXPECT_NE(error_of([&] { parse_dataset_spec(s, "t.yaml"); }).find("split 'test' is not allowed"), std::string::npos);
  s = base;
  s.replace(s.find("format: json"), 12, "format: xml");
  EXPECT_NE(error_of([&] { parse_dataset_spec(s, "t.yaml"); }).find("format 'xml' is not supported"), std::string::npos);
  EXPECT_NE(error_of([&] { parse_dataset_spec(base + "filters:\n  - {row_index_mod: 4, equals: 4}\n", "t.yaml"); })
                .find("remainder must be in 0..3"), std::string::npos);
  EXPECT_NE(error_of([&] { parse_dataset_spec(base + "filters:\n  - {field: a, equals: 1, not_equals: 2}\n", "t.yaml"); })
                .find("exactly one of 'equals' or 'not_equals'"), std::string::npos);
}

TEST(DatasetLoad, JsonlCsvAndNestedJsonWithFilters) {
  TempDir d;
  d.write("a.jsonl", "{\"q\": \"one\", \"k\": 1}\n\n{\"q\": \"two\", \"k\": 2}\r\n{\"q\": \"three\", \"k\": 3}\n");
  d.write("b.csv", "id,text,label\nx1,\"hi, there\",safe\nx2,\"say \"\"no\"\"\",unsafe\nx3,third,safe\n");
  d.write("c.json", "{\"rows\": [{\"id\": 5, \"prompt\": \"p5\", \"sys\": \"be nice\"}]}");
  DatasetLoadOptions o;
  o.data_root = d.path.string();

  auto jl = parse_dataset_spec("name: jl\npath: a.jsonl\nformat: jsonl\nfields: {prompt: q}\nkeep: [k]\n"
                               "filters:\n  - {row_index_mod: 2, equals: 0}\nsplit: train\nharmful: false\n", "jl.yaml");
  Dataset a = load_dataset(jl, o);
  ASSERT_EQ(a.examples.size(), 2u);
  EXPECT_EQ(a.examples[0].prompt, "one");
  EXPECT_EQ(a.examples[1].prompt, "three");
  EXPECT_EQ(a.examples[1].id, "2");
  EXPECT_EQ(a.examples[1].extra.at("k"), "3");

  auto cs = parse_dataset_spec("name: cs\npath: b.csv\nformat: csv\nfields: {id: id, prompt: text}\n"
                               "filters:\n  - {field: label, not_equals: unsafe}\nsplit: eval\nharmful: false\n", "cs.yaml");
  Dataset b = load_dataset(cs, o);
  ASSERT_EQ(b.examples.size(), 2u);
  EXPECT_EQ(b.examples[0].prompt, "hi, there");
  EXPECT_EQ(b.examples[1].id, "x3");

  auto nj = parse_dataset_spec("name: nj\npath: c.json\nformat: json\nlist_key: rows\n"
                               "fields: {id: id, prompt: prompt, system: sys}\nsplit: eval\nharmful: true\n", "nj.yaml");
  Dataset c = load_dataset(nj, o);
  ASSERT_EQ(c.examples.size(), 1u);
  EXPECT_EQ(c.examples[0].id, "5");
  EXPECT_EQ(c.examples[0].system, "be nice");
}

TEST(DatasetLoad, ErrorMessagesNameTheProblem) {
  TempDir d;
  d.write("m.json", "[{\"id\": 1, \"prompt\": \"a\"}, {\"id\": 2, \"text\": \"b\"}]");
  d.write("dup.json", "[{\"id\": 1, \"prompt\": \"a\"}, {\"id\": 1, \"prompt\": \"b\"}]");
  d.write("e.json", "[{\"id\": 1, \"prompt\": \"a\", \"label\": \"unsafe\"}]");
  d.write("n.json", "{\"items\": []}");
  DatasetLoadOptions o;
  o.data_root = d.path.string();
  auto spec = [](const std::string& path, const std::string& more = "") {
    return parse_dataset_spec("name: t\npath: " + path + "\nformat: json\nfields: {id: id, prompt: prompt}\n" + more +
                                  "split: eval\nharmful: false\n", "t.yaml");
  };
  const std::string missing_file = error_of([&] { load_dataset(spec("nope.json"), o); });
  EXPECT_NE(missing_file.find("file not found: " + (d.path / "nope.json").string()), std::string::npos) << missing_file;
  EXPECT_NE(missing_file.find("SAFEDEC_DATA_DIR"), std::string::npos) << missing_file;

  const std::string missing_field = error_of([&] { load_dataset(spec("m.json"), o); });
  EXPECT_NE(missing_field.find("m.json row 1 (0-based) has no field 'prompt'"), std::string::npos) << missing_field;

  EXPECT_NE(error_of([&] { load_dataset(spec("dup.json"), o); }).find("id '1' of dup.json row 1 (0-based) repeats"),
            std::string::npos);
  const std::string empty = error_of([&] { load_dataset(spec("e.json", "filters:\n  - {field: label, equals: safe}\n"), o); });
  EXPECT_NE(empty.find("is empty after reading"), std::string::npos) << empty;
  EXPECT_NE(empty.find("label == safe"), std::string::npos) << empty;
  EXPECT_NE(error_of([&] { load_dataset(spec("n.json"), o); }).find("must hold a JSON list"), std::string::npos);
  EXPECT_NE(error_of([&] { load_dataset(spec("m.json", "expected_rows: 5\n"), o); }).find("has no field"), std::string::npos);
  const std::string count = error_of([&] { load_dataset(spec("e.json", "expected_rows: 5\n"), o); });
  EXPECT_NE(count.find("has 1 rows but t.yaml expects 5"), std::string::npos) << count;
}

TEST(DatasetLoad, DataRootFromEnvironment) {
  TempDir d;
  d.write("advbench/harmful_behaviors.json", "[{\"id\": 0, \"goal\": \"g\", \"target\": \"t\"}]");
  ::setenv("SAFEDEC_DATA_DIR", d.path.c_str(), 1);
  auto spec = registry().get("advbench");
  spec.expected_rows.reset();
  Dataset ds = load_dataset(spec);
  ::unsetenv("SAFEDEC_DATA_DIR");
  ASSERT_EQ(ds.examples.size(), 1u);
  EXPECT_EQ(ds.files[0], (d.path / "advbench/harmful_behaviors.json").string());
  // The real file set would fail its expected_rows check against this one-row stand-in.
  ::setenv("SAFEDEC_DATA_DIR", d.path.c_str(), 1);
  const std::string msg = error_of([] { load_dataset(registry().get("advbench")); });
  ::unsetenv("SAFEDEC_DATA_DIR");
  EXPECT_NE(msg.find("has 1 rows but"), std::string::npos) << msg;
}

TEST(DatasetRegistryDir, NameMustMatchFileAndDuplicatesAreErrors) {
  TempDir d;
  d.write("one.yaml", "name: two\npath: x.json\nformat: json\nfields: {prompt: p}\nsplit: eval\nharmful: false\n");
  EXPECT_NE(error_of([&] { DatasetRegistry::from_directory(d.path.string()); }).find("must equal the file name 'one'"),
            std::string::npos);
  EXPECT_NE(error_of([] { DatasetRegistry::from_directory("/nonexistent/dir"); }).find("not found"), std::string::npos);
}
