// Paired speed (eval/paired_speed.h) on synthetic timings: the order inside pairs alternates, the
// reported ATGR is the median of method/plain ratios with its interquartile range, the noisy flag
// follows the configured threshold, speed.jsonl rows read back (a pair written twice counts once),
// and the report prints a noisy figure as unreliable. No test here times anything.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "eval/paired_speed.h"
#include "eval/report.h"
#include "eval/results_io.h"
#include "support/error_of.h"

using namespace safedec;
using safedec::testing_support::error_of;

namespace fs = std::filesystem;

namespace {
// Pairs whose ratios method/plain are `ratios` (plain at 10 ms/token).
std::vector<SpeedPair> pairs_with_ratios(const std::vector<double>& ratios) {
  std::vector<SpeedPair> out;
  for (size_t i = 0; i < ratios.size(); ++i) out.push_back({static_cast<int64_t>(i), 0.010, 0.010 * ratios[i]});
  return out;
}
}  // namespace

TEST(PairedSpeed, OrderAlternatesStartingWithPlain) {
  EXPECT_TRUE(plain_first_in_pair(0));
  EXPECT_FALSE(plain_first_in_pair(1));
  EXPECT_TRUE(plain_first_in_pair(2));
  EXPECT_FALSE(plain_first_in_pair(3));
  int plain_first = 0;
  for (int k = 0; k < 6; ++k) plain_first += plain_first_in_pair(k);
  EXPECT_EQ(plain_first, 3) << "an even number of pairs puts each side first equally often";
}

TEST(PairedSpeed, QuantilesInterpolateLinearly) {
  EXPECT_DOUBLE_EQ(sample_quantile({3, 1, 2}, 0.5), 2.0);
  EXPECT_DOUBLE_EQ(sample_quantile({1, 2, 3, 4}, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(sample_quantile({1, 2, 3, 4, 5}, 0.25), 2.0);
  EXPECT_DOUBLE_EQ(sample_quantile({1, 2, 3, 4, 5}, 0.75), 4.0);
  EXPECT_DOUBLE_EQ(sample_quantile({7}, 0.25), 7.0);
  EXPECT_THROW(sample_quantile({}, 0.5), Error);
}

TEST(PairedSpeed, MedianRatioIsMethodOverPlainWithItsSpread) {
  // Ratios 1.9, 2.0, 2.1, 2.0, 2.2 -> sorted 1.9 2.0 2.0 2.1 2.2: median 2.0, q1 2.0, q3 2.1.
  const PairedSpeed s = summarize_speed_pairs(pairs_with_ratios({1.9, 2.0, 2.1, 2.0, 2.2}), 0.25);
  EXPECT_EQ(s.pairs, 5u);
  EXPECT_NEAR(s.atgr, 2.0, 1e-12) << "> 1: the method is slower than plain";
  EXPECT_NEAR(s.q1, 2.0, 1e-12);
  EXPECT_NEAR(s.q3, 2.1, 1e-12);
  EXPECT_NEAR(s.min, 1.9, 1e-12);
  EXPECT_NEAR(s.max, 2.2, 1e-12);
  EXPECT_NEAR(s.spread, 0.05, 1e-12);
  EXPECT_FALSE(s.noisy);
  EXPECT_NEAR(s.plain_tok_s, 100.0, 1e-9);
  EXPECT_NEAR(s.method_tok_s, 50.0, 1e-9);

  // Plain slowed by load in one pair only: the ratio of that pair is off, the median is not.
  std::vector<SpeedPair> p = pairs_with_ratios({2.0, 2.0, 2.0, 2.0, 2.0});
  p[2].plain_s_per_token *= 8;  // plain ran 8x slower in pair 2 (background load)
  const PairedSpeed loaded = summarize_speed_pairs(p, 0.25);
  EXPECT_NEAR(loaded.atgr, 2.0, 1e-12);
  EXPECT_NEAR(loaded.min, 0.25, 1e-12);
  EXPECT_FALSE(loaded.noisy) << "one outlier of five stays outside the interquartile range";
}

TEST(PairedSpeed, NoisyWhenTheInterquartileRangeExceedsTheThreshold) {
  // Ratios 1, 1.5, 2, 2.5, 3: median 2, IQR 1.5..2.5 -> spread 0.5.
  const auto p = pairs_with_ratios({1.0, 3.0, 2.0, 1.5, 2.5});
  EXPECT_TRUE(summarize_speed_pairs(p, 0.25).noisy);
  EXPECT_TRUE(summarize_speed_pairs(p, 0.49).noisy);
  EXPECT_FALSE(summarize_speed_pairs(p, 0.5).noisy) << "the threshold itself is not noisy";
  EXPECT_FALSE(summarize_speed_pairs(p, 0.75).noisy);
  EXPECT_NEAR(summarize_speed_pairs(p, 0.25).spread, 0.5, 1e-12);
  // A single pair has no spread.
  const PairedSpeed one = summarize_speed_pairs(pairs_with_ratios({1.3}), 0.01);
  EXPECT_NEAR(one.atgr, 1.3, 1e-12);
  EXPECT_FALSE(one.noisy);
}

TEST(PairedSpeed, RefusesEmptyAndNonPositiveTimings) {
  EXPECT_NE(error_of([] { summarize_speed_pairs({}, 0.25); }).find("no finished pairs"), std::string::npos);
  std::vector<SpeedPair> p = pairs_with_ratios({1.0, 2.0});
  p[1].plain_s_per_token = 0;
  EXPECT_NE(error_of([&] { summarize_speed_pairs(p, 0.25); }).find("pair 1"), std::string::npos);
  p[1].plain_s_per_token = std::nan("");
  EXPECT_THROW(summarize_speed_pairs(p, 0.25), Error);
}

TEST(PairedSpeed, RowsReadBackPerModelAndMethodAndARepeatedPairCountsOnce) {
  const std::string path =
      (fs::temp_directory_path() / ("safedec_speed_" + std::to_string(::getpid()) + ".jsonl")).string();
  fs::remove(path);
  EXPECT_TRUE(read_paired_speed(path, 0.25).empty()) << "no file: nothing measured";
  const std::vector<double> ratios = {1.5, 1.6, 1.4};
  for (const auto& pr : pairs_with_ratios(ratios))
    append_jsonl(path, speed_row_json("m", "acd", "advbench", 4, 32, pr, 0.02, 0.03));
  append_jsonl(path, speed_row_json("m", "steer", "advbench", 4, 32, {0, 0.01, 0.011}, 0.02, 0.021, 2.5, 2));
  // Pair 1 of acd written again (a resumed run that redid it): the last row wins.
  append_jsonl(path, speed_row_json("m", "acd", "advbench", 4, 32, {1, 0.01, 0.017}, 0.02, 0.03));
  const auto all = read_paired_speed(path, 0.25);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].method, "acd");
  EXPECT_EQ(all[0].pairs, 3u);
  EXPECT_NEAR(all[0].atgr, 1.5, 1e-9);  // ratios 1.5, 1.7, 1.4
  EXPECT_NEAR(all[0].max, 1.7, 1e-9);
  EXPECT_EQ(all[0].prompts, 4);
  EXPECT_EQ(all[0].new_tokens, 32);
  EXPECT_EQ(all[0].load, -1.0) << "rows without a load average";
  EXPECT_EQ(all[1].method, "steer");
  EXPECT_DOUBLE_EQ(all[1].load, 2.5);
  EXPECT_EQ(all[1].cores, 2);
  EXPECT_NEAR(all[1].atgr, 1.1, 1e-9);
  EXPECT_EQ(finished_speed_pairs(path, "m", "acd"), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_TRUE(finished_speed_pairs(path, "m", "plain").empty());
  std::ofstream(path, std::ios::app) << "{\"model\": \"m\"}\n";
  EXPECT_NE(error_of([&] { read_paired_speed(path, 0.25); }).find("is not a speed row"), std::string::npos);
  fs::remove(path);
}

TEST(PairedSpeed, ReportPrintsPairedFiguresAndMarksNoisyOnesUnreliable) {
  ResultRow plain, acd, steer;
  plain.model = acd.model = steer.model = "m";
  plain.dataset = acd.dataset = steer.dataset = "advbench";
  plain.method = "plain";
  acd.method = "acd";
  steer.method = "steer";
  for (ResultRow* r : {&plain, &acd, &steer}) {
    r->judge = "keyword";
    r->metrics.n = 4;
    r->metrics.n_refused = 2;
    r->metrics.refusal_rate = 0.5;
    r->metrics.asr = 0.5;
    r->metrics.mean_new_tokens = 10;
  }
  plain.metrics.decode_tok_s = 10.0;
  acd.metrics.decode_tok_s = 50.0;  // plain's cells ran under load: the unpaired ratio says 0.20
  steer.metrics.decode_tok_s = 9.0;
  ReportInputs in;
  in.rows = {plain, acd, steer};
  PairedSpeed a = summarize_speed_pairs(pairs_with_ratios({1.9, 2.0, 2.1}), 0.25);
  a.model = "m";
  a.method = "acd";
  PairedSpeed s = summarize_speed_pairs(pairs_with_ratios({1.0, 3.0, 2.0}), 0.25);
  s.model = "m";
  s.method = "steer";
  in.paired_speed = {a, s};
  in.speed_note = "in 3 pairs (test)";
  const std::string md = render_report_markdown(in, {});
  EXPECT_NE(md.find("ATGR unpaired | ATGR paired [IQR] |"), std::string::npos) << md;
  EXPECT_NE(md.find("| 0.20 | 2.00 [1.95–2.05] |"), std::string::npos) << "acd: unpaired and paired side by side\n" << md;
  EXPECT_NE(md.find("| unreliable: 2.00 [1.50–2.50] (noisy) |"), std::string::npos) << md;
  EXPECT_NE(md.find("## Speed against plain (paired)"), std::string::npos) << md;
  EXPECT_NE(md.find("> 1 means slower than plain"), std::string::npos) << "the legend states the orientation";
  EXPECT_NE(md.find("| m | steer | unreliable (2.00, **noisy**) | 1.50–2.50 | 1.00–3.00 | 3 | 50.0% |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| m | acd | 2.00 | 1.95–2.05 | 1.90–2.10 | 3 | 5.0% |"), std::string::npos) << md;
  // Without a paired measurement the summary has no paired column and no speed section.
  in.paired_speed.clear();
  const std::string plain_md = render_report_markdown(in, {});
  EXPECT_EQ(plain_md.find("ATGR paired [IQR]"), std::string::npos);
  EXPECT_EQ(plain_md.find("## Speed against plain"), std::string::npos);
}
