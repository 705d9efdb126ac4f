// Scale plots: parameter counts from a model config equal the tensor tables of real files, and a run
// over several models gets one plot per metric with one line per method, points in size order.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "eval/metrics.h"
#include "eval/report.h"
#include "io/gguf.h"
#include "io/model_config.h"

using namespace safedec;

namespace {

const std::string kGolden = std::string(SAFEDEC_SOURCE_DIR) + "/tests/oracle/golden/";

ResultRow row(const std::string& model, const std::string& method, const std::string& dataset, size_t n,
              size_t refused, bool harmful, std::optional<double> nll = std::nullopt) {
  MetricsAccumulator acc(harmful, dataset == "xstest_safe");
  for (size_t i = 0; i < n; ++i) acc.add(i < refused, 8, 0.1);
  if (nll) acc.add_reference_nll(*nll * 10, 10);
  return ResultRow{model, method, dataset, "keyword", acc.summary()};
}

int64_t tensor_elements(const std::string& path) {
  const auto file = GgufFile::open(path);
  int64_t n = 0;
  for (const auto& t : file->tensors()) n += t.n_elements();
  return n;
}

}  // namespace

// The formula counts exactly the tensors a file holds: tied (llama) and untied-with-biases (qwen2).
TEST(ReportScales, ParameterCountEqualsTheTensorTable) {
  for (const char* name : {"model_tiny_llama.gguf", "model_tiny_qwen2.gguf"}) {
    SCOPED_TRACE(name);
    const auto file = GgufFile::open(kGolden + name);
    EXPECT_EQ(parameter_count(model_config_from_gguf(*file)), tensor_elements(kGolden + name));
    EXPECT_EQ(model_parameter_count(kGolden + name), tensor_elements(kGolden + name));
  }
}

TEST(ReportScales, OnePlotPerMetricWithOneLinePerMethod) {
  ReportInputs in;
  for (const char* model : {"big", "small"}) {
    for (const char* method : {"plain", "ngsd"}) {
      in.rows.push_back(row(model, method, "advbench", 20, std::string(method) == "ngsd" ? 15 : 2, true));
      in.rows.push_back(row(model, method, "xstest_safe", 20, 1, false));
      in.rows.push_back(row(model, method, "alpaca_eval_test", 20, 0, false, 1.5));
    }
  }
  in.model_parameters = {{"small", 135000000}, {"big", 1500000000}};
  const auto plots = render_scale_plots(in);
  ASSERT_EQ(plots.size(), 3u);
  EXPECT_EQ(plots[0].first, "scale_asr");
  EXPECT_EQ(plots[1].first, "scale_over_refusal");
  EXPECT_EQ(plots[2].first, "scale_ref_nll");
  for (const auto& [name, svg] : plots) {
    SCOPED_TRACE(name);
    EXPECT_NE(svg.find("<svg"), std::string::npos);
    EXPECT_NE(svg.find(">plain<"), std::string::npos);
    EXPECT_NE(svg.find(">ngsd<"), std::string::npos);
    EXPECT_NE(svg.find(">small<"), std::string::npos) << "points carry the model names";
  }
  // One model, or models of unknown size: no scale plot.
  in.model_parameters = {{"small", 135000000}};
  EXPECT_TRUE(render_scale_plots(in).empty());
}
