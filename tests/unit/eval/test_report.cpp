// SVG writer, chart layout helpers, the four report plots, and report.md rendering.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>

#include "core/error.h"
#include "eval/report.h"
#include "eval/svg.h"

using namespace safedec;
namespace fs = std::filesystem;

namespace {

// Minimal XML well-formedness check: every start tag is closed in order, attributes are quoted,
// and '&' only starts an entity. Returns "" when fine, else a description.
std::string xml_problem(const std::string& s) {
  std::vector<std::string> stack;
  size_t i = s.find("<svg");
  if (i == std::string::npos) return "no <svg> element";
  while (i < s.size()) {
    const size_t lt = s.find('<', i);
    const std::string text = s.substr(i, (lt == std::string::npos ? s.size() : lt) - i);
    for (size_t a = text.find('&'); a != std::string::npos; a = text.find('&', a + 1))
      if (!std::regex_search(text.substr(a), std::regex("^&(amp|lt|gt|quot|apos);")))
        return "bare '&' in text";
    if (lt == std::string::npos) break;
    const size_t gt = s.find('>', lt);
    if (gt == std::string::npos) return "unterminated tag";
    std::string tag = s.substr(lt + 1, gt - lt - 1);
    if (tag.empty()) return "empty tag";
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (stack.empty() || stack.back() != name) return "mismatched </" + name + ">";
      stack.pop_back();
    } else if (tag.back() != '/') {
      stack.push_back(tag.substr(0, tag.find(' ')));
    }
    size_t quotes = std::count(tag.begin(), tag.end(), '"');
    if (quotes % 2) return "odd number of quotes in <" + tag + ">";
    i = gt + 1;
  }
  return stack.empty() ? "" : "unclosed <" + stack.back() + ">";
}

size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
  return n;
}

ResultRow row(const std::string& method, const std::string& dataset, size_t n, size_t refused,
              bool harmful, bool probe, double tok_s) {
  MetricsAccumulator acc(harmful, probe);
  for (size_t i = 0; i < n; ++i) acc.add(i < refused, 20, 20.0 / tok_s);
  return ResultRow{"smollm2", method, dataset, "keyword", acc.summary()};
}

std::vector<ResultRow> sample_rows() {
  return {row("plain", "advbench", 50, 10, true, false, 30.0),
          row("plain", "gcg", 30, 6, true, false, 30.0),
          row("plain", "xstest_safe", 40, 4, false, true, 30.0),
          row("plain", "alpaca_eval_test", 20, 0, false, false, 30.0),
          row("ngsd", "advbench", 50, 45, true, false, 20.0),
          row("ngsd", "gcg", 30, 27, true, false, 20.0),
          row("ngsd", "xstest_safe", 40, 12, false, true, 20.0),
          row("safedecoding", "advbench", 50, 40, true, false, 28.0),
          row("safedecoding", "xstest_safe", 40, 8, false, true, 28.0)};
}

}  // namespace

TEST(Svg, NiceTicksAndFormatting) {
  const auto t = nice_ticks(0, 1);
  ASSERT_EQ(t.size(), 6u);
  EXPECT_NEAR(t[1], 0.2, 1e-12);
  EXPECT_NEAR(t.back(), 1.0, 1e-12);
  const auto u = nice_ticks(-3, 17);
  EXPECT_LE(u.front(), -3);
  EXPECT_GE(u.back(), 17);
  EXPECT_NEAR(u[1] - u[0], 5.0, 1e-12);
  EXPECT_EQ(format_tick(0.25, 0.05, false), "0.25");
  EXPECT_EQ(format_tick(0.25, 0.1, true), "25%");
  EXPECT_EQ(format_tick(10, 5, false), "10");
  EXPECT_EQ(format_tick(-0.0, 0.2, false), "0.0");
  EXPECT_THROW(nice_ticks(1, 1), Error);
  EXPECT_EQ(xml_escape("a<b & \"c\">'"), "a&lt;b &amp; &quot;c&quot;&gt;&apos;");
}

TEST(Svg, XyChartMapsDataIntoThePlotAreaAndIsWellFormed) {
  XyChart c;
  c.title = "T & <test>";
  c.x = {"x", 0.0, 10.0, false};
  c.y = {"y", 0.0, 1.0, true};
  XySeries s;
  s.label = "series \"one\"";
  s.x = {0, 5, 10};
  s.y = {0, 0.5, 1};
  c.series = {s};
  c.hlines = {{0.5, "half"}};
  const std::string svg = render_xy_chart(c);
  EXPECT_EQ(xml_problem(svg), "");
  EXPECT_NE(svg.find("T &amp; &lt;test&gt;"), std::string::npos);
  EXPECT_NE(svg.find(">100%<"), std::string::npos) << "percent ticks";
  // Plot area: left 78, right 760-190-20 = 550, top 52, bottom 460-62 = 398. The middle point
  // (5, 0.5) must land at the centre of that area.
  EXPECT_NE(svg.find("points=\"78,398 314,225 550,52\""), std::string::npos) << svg.substr(0, 2000);
  XySeries bad = s;
  bad.y.pop_back();
  c.series = {bad};
  EXPECT_THROW(render_xy_chart(c), Error);
}

TEST(Svg, BarChartHasOneBarPerValueAndLegend) {
  BarChart b;
  b.title = "bars";
  b.groups = {"advbench", "gcg", "autodan"};
  b.series = {"plain", "ngsd"};
  b.values = {{0.2, 0.5, std::nan("")}, {0.1, 0.05, 0.0}};
  b.y = {"ASR", 0.0, std::nullopt, true};
  const std::string svg = render_bar_chart(b);
  EXPECT_EQ(xml_problem(svg), "");
  EXPECT_EQ(count(svg, "fill=\"#0072B2\""), 2u + 1u) << "2 bars + 1 legend swatch for plain";
  EXPECT_EQ(count(svg, "fill=\"#D55E00\""), 3u + 1u);
  EXPECT_NE(svg.find(">n/a<"), std::string::npos) << "a missing value is marked";
  b.values[0].pop_back();
  EXPECT_THROW(render_bar_chart(b), Error);
}

TEST(ReportPlots, SafetyVsOverRefusalAndAsrBars) {
  const auto rows = sample_rows();
  const std::string scatter = plot_safety_vs_over_refusal(rows, "smollm2");
  EXPECT_EQ(xml_problem(scatter), "");
  for (const char* m : {">plain<", ">ngsd<", ">safedecoding<"}) EXPECT_NE(scatter.find(m), std::string::npos) << m;
  EXPECT_NE(scatter.find("mean ASR over advbench, gcg"), std::string::npos);
  const std::string bars = plot_asr_by_dataset(rows, "smollm2");
  EXPECT_EQ(xml_problem(bars), "");
  EXPECT_NE(bars.find(">gcg<"), std::string::npos);
  EXPECT_EQ(bars.find(">xstest_safe<"), std::string::npos) << "benign sets have no ASR bar";
  EXPECT_THROW(plot_safety_vs_over_refusal(rows, "other-model"), Error);
}

TEST(ReportPlots, SweepAndGateTrace) {
  // The NGSD paper's reported alpha sweep (specs/methods.md section 1) as example data.
  const std::vector<double> alpha = {0, 0.1, 0.25, 0.35, 0.5, 0.65, 0.75, 0.9};
  const std::vector<double> asr = {76, 72, 76, 60, 22, 16, 8, 2};
  const std::vector<double> usable = {79.2, 75.2, 75.0, 75.1, 68.4, 59.4, 56.4, 53.2};
  std::vector<SweepPoint> pts;
  for (size_t i = 0; i < alpha.size(); ++i) pts.push_back({alpha[i], asr[i] / 100, 1 - usable[i] / 100});
  const std::string sweep = plot_parameter_sweep("alpha", pts);
  EXPECT_EQ(xml_problem(sweep), "");
  EXPECT_EQ(count(sweep, "<polyline"), 2u);
  EXPECT_NE(sweep.find(">Over-refusal<"), std::string::npos);

  GateTrace g;
  for (int i = 0; i < 10; ++i) {
    g.tv.push_back(i == 3 || i == 4 ? 0.9 : 0.05);
    g.potential.push_back(i * 0.1);
    g.spike.push_back(i == 3 || i == 4 || i == 9);
  }
  g.caption = "synthetic";
  const std::string gate = plot_gate_trace(g);
  EXPECT_EQ(xml_problem(gate), "");
  EXPECT_NE(gate.find("3 of 10 tokens gated (30.0%)"), std::string::npos);
  EXPECT_NE(gate.find("threshold θ = 1.00"), std::string::npos);
  g.spike.pop_back();
  EXPECT_THROW(plot_gate_trace(g), Error);
}

TEST(Report, MarkdownTableNamesJudgeAndComputesAtgr) {
  ReportInputs in;
  in.rows = sample_rows();
  const std::string md = render_report_markdown(in, {"plots/asr_by_dataset.svg"});
  EXPECT_NE(md.find("Judge: `keyword`"), std::string::npos);
  EXPECT_NE(md.find("weakest judge"), std::string::npos);
  // ngsd advbench: 45/50 refused -> ASR 10.0%, ATGR = 30 / 20 = 1.50.
  EXPECT_NE(md.find("| smollm2 | ngsd | advbench | keyword | 50 | 90.0% ["), std::string::npos) << md;
  EXPECT_NE(md.find("| 10.0% | — | — | 20.0 | 20.0 | 1.50 |"), std::string::npos) << md;
  // xstest_safe: over-refusal shown, ASR not applicable.
  EXPECT_NE(md.find("| smollm2 | plain | xstest_safe | keyword | 40 | 10.0% ["), std::string::npos);
  EXPECT_NE(md.find("| — | 10.0% | — | 20.0 | 30.0 | 1.00 |"), std::string::npos) << md;
  EXPECT_NE(md.find("![asr_by_dataset](plots/asr_by_dataset.svg)"), std::string::npos);
}

TEST(Report, SummaryPoolsHarmfulSetsPerMethod) {
  ReportInputs in;
  in.rows = sample_rows();
  const std::string md = render_report_markdown(in, {});
  ASSERT_NE(md.find("## Summary per method"), std::string::npos) << md;
  EXPECT_LT(md.find("## Summary per method"), md.find("## Results")) << "the summary comes first";
  // ngsd: advbench 45/50 + gcg 27/30 refused -> 8 successes of 80 = 10.0%; over-refusal 12/40; all
  // cells at 20 tok/s against plain's 30 -> ATGR 1.50.
  const Interval ci = wilson_interval(8, 80);
  char expect[256];
  std::snprintf(expect, sizeof expect, "| smollm2 | ngsd | 80 | 10.0%% [%.1f%%, %.1f%%] | 30.0%% [", 100 * ci.lo,
                100 * ci.hi);
  EXPECT_NE(md.find(expect), std::string::npos) << expect << "\n" << md;
  EXPECT_NE(md.find("| 20.0 | 1.50 |"), std::string::npos) << md;
  // plain: 16 refused of 80 -> ASR 80.0%, its own ATGR 1.00.
  EXPECT_NE(md.find("| smollm2 | plain | 80 | 80.0% ["), std::string::npos) << md;
  EXPECT_NE(md.find("| 30.0 | 1.00 |"), std::string::npos) << md;
}

TEST(Report, WriteReportCreatesFilesTheDataSupports) {
  const fs::path dir = fs::temp_directory_path() / ("safedec_eval_report_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  ReportInputs in;
  in.rows = sample_rows();
  in.sweeps = {{"alpha", {{0.1, 0.7, 0.2}, {0.5, 0.3, 0.3}, {0.9, 0.05, 0.45}}}};
  GateTrace g{{0.1, 0.8, 0.2}, {0.1, 1.2, 0.4}, {false, true, false}, 1.0, ""};
  in.gate_trace = g;
  const auto plots = write_report(dir.string(), in);
  EXPECT_EQ(plots, (std::vector<std::string>{"plots/asr_by_dataset.svg", "plots/safety_vs_over_refusal.svg",
                                             "plots/sweep_alpha.svg", "plots/gate_trace.svg"}));
  for (const auto& p : plots) EXPECT_TRUE(fs::exists(dir / p)) << p;
  std::ifstream md(dir / "report.md");
  const std::string text((std::istreambuf_iterator<char>(md)), {});
  EXPECT_NE(text.find("![gate_trace](plots/gate_trace.svg)"), std::string::npos);
  fs::remove_all(dir);
}
