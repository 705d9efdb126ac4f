// Prompts skipped for being longer than the model's context (issue 15, class 7), below the runner:
// the generations/results rows round-trip their reason, skipped rows count as done for --resume but
// are left out of every rate, an all-skipped cell has no rate (null, not 0%), and the report and
// its plots say so instead of printing 0%.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "core/error.h"
#include "eval/metrics.h"
#include "eval/report.h"
#include "eval/results_io.h"

using namespace safedec;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

GenerationRow generated(const std::string& id, bool refused) {
  GenerationRow g;
  g.id = id;
  g.model = "m";
  g.method = "plain";
  g.dataset = "advbench";
  g.output = "text";
  g.finish_reason = "eos";
  g.new_tokens = 4;
  g.decode_seconds = 0.5;
  g.refused = refused;
  return g;
}

GenerationRow skipped(const std::string& id) {
  GenerationRow g;
  g.id = id;
  g.model = "m";
  g.method = "plain";
  g.dataset = "advbench";
  g.finish_reason = "skipped";
  g.skipped = "prompt is 9000 tokens, over the model's context 8192";
  return g;
}

}  // namespace

TEST(SkippedRows, GenerationRowRoundTripsTheReason) {
  const json j = to_json(skipped("7"));
  EXPECT_EQ(j["skipped"], "prompt is 9000 tokens, over the model's context 8192");
  EXPECT_FALSE(j.contains("refused"));
  const GenerationRow back = generation_row_from_json(j, "g");
  ASSERT_TRUE(back.skipped.has_value());
  EXPECT_EQ(*back.skipped, *skipped("7").skipped);
  EXPECT_FALSE(generation_row_from_json(to_json(generated("1", true)), "g").skipped.has_value());
}

TEST(SkippedRows, CountAsDoneButNotInTheRates) {
  const std::vector<GenerationRow> rows = {generated("1", true), skipped("2"), generated("3", false), skipped("4")};
  EXPECT_EQ(completed_ids(rows, "m", "plain", "advbench"), (std::set<std::string>{"1", "2", "3", "4"}));
  const MetricsAccumulator acc = accumulate_generations(rows, "m", "plain", "advbench", true, false);
  EXPECT_EQ(acc.count(), 2u);
  EXPECT_EQ(acc.skipped(), 2u);
  const DatasetMetrics m = acc.summary();
  EXPECT_EQ(m.n, 2u);
  EXPECT_EQ(m.n_skipped, 2u);
  EXPECT_DOUBLE_EQ(m.refusal_rate, 0.5);  // 1 of the 2 generated, not 1 of 4
  EXPECT_DOUBLE_EQ(*m.asr, 0.5);
  EXPECT_DOUBLE_EQ(m.mean_new_tokens, 4.0);
}

TEST(SkippedRows, AnAllSkippedCellHasNoRate) {
  MetricsAccumulator acc(/*harmful=*/false, /*over_refusal_probe=*/true);
  acc.add_skipped();
  acc.add_skipped();
  const DatasetMetrics m = acc.summary();
  EXPECT_EQ(m.n, 0u);
  EXPECT_EQ(m.n_skipped, 2u);
  EXPECT_FALSE(m.asr.has_value());
  EXPECT_FALSE(m.over_refusal.has_value());
  // Nothing at all is still an error.
  EXPECT_THROW(MetricsAccumulator(false, false).summary(), Error);

  ResultRow r{"m", "plain", "xstest_safe", "keyword", m, {{"x", "prompt is 9000 tokens"}, {"y", "prompt is 9001 tokens"}}};
  const json j = to_json(r);
  EXPECT_TRUE(j["refusal_rate"].is_null());
  EXPECT_EQ(j["n_skipped"], 2);
  ASSERT_EQ(j["skipped"].size(), 2u);
  EXPECT_EQ(j["skipped"][1]["id"], "y");
  const ResultRow back = result_row_from_json(j, "row");
  EXPECT_EQ(back.metrics.n, 0u);
  EXPECT_EQ(back.metrics.n_skipped, 2u);
  EXPECT_EQ(back.skipped, r.skipped);
  // A row of an older run (no n_skipped, no skipped) still reads, with 0 skipped.
  json old = to_json(ResultRow{"m", "plain", "advbench", "keyword", accumulate_generations({generated("1", true)}, "m",
                                                                                           "plain", "advbench", true,
                                                                                           false)
                                                                         .summary(),
                               {}});
  old.erase("n_skipped");
  EXPECT_EQ(result_row_from_json(old, "old").metrics.n_skipped, 0u);
  // A null rate with n > 0 is still corruption.
  json bad = old;
  bad["refusal_rate"] = nullptr;
  EXPECT_THROW(result_row_from_json(bad, "bad"), Error);
}

TEST(SkippedRows, TheReportStatesTheCountsAndNeverPrintsZeroPercentForAnAllSkippedCell) {
  ReportInputs in;
  in.over_refusal_dataset = "xstest_safe";
  MetricsAccumulator some(true, false);
  some.add(true, 4, 0.5);
  some.add(false, 4, 0.5);
  some.add_skipped();
  MetricsAccumulator all(false, true);
  all.add_skipped();
  all.add_skipped();
  in.rows.push_back({"m", "plain", "advbench", "keyword", some.summary(), {{"3", "prompt is 9000 tokens"}}});
  in.rows.push_back({"m", "plain", "xstest_safe", "keyword", all.summary(), {}});
  const std::string md = render_report_markdown(in, {});
  EXPECT_NE(md.find("| 2 (+1 skipped) | 50.0%"), std::string::npos) << md;
  EXPECT_NE(md.find("| 0 (+2 skipped) | — (all 2 prompts skipped)"), std::string::npos) << md;
  EXPECT_NE(md.find("— (all 2 skipped)"), std::string::npos) << "summary over-refusal: " << md;
  EXPECT_NE(md.find("m / plain / xstest_safe: 2 skipped (all of them: no rate for this cell)"), std::string::npos)
      << md;
  EXPECT_EQ(md.find("| 0.0% ["), std::string::npos) << md;
  // Plots: the all-skipped probe gives no safety-vs-over-refusal point, and writing does not fail.
  const std::string dir = (fs::temp_directory_path() / ("safedec_skip_report_" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  const auto plots = write_report(dir, in);
  for (const auto& p : plots) EXPECT_EQ(p.find("safety_vs_over_refusal"), std::string::npos) << p;
  fs::remove_all(dir);
}
