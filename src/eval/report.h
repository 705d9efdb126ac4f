// The evaluation report: report.md (results table with the judge named, plus plots) and the SVG
// plots themselves: safety vs over-refusal per method, ASR per attack set, a parameter sweep, and
// NGSD gate activity along one response.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "eval/paired_speed.h"
#include "eval/results_io.h"

namespace safedec {

struct ModelConfig;

// Scatter: one point per method of `model`; x = over-refusal (refusal rate on the over-refusal probe
// dataset, default xstest_safe), y = mean ASR over the harmful datasets present (lower-left is
// better). Error bars: Wilson 95% of the ASR when one harmful set is present. Throws if no method has
// both numbers.
std::string plot_safety_vs_over_refusal(const std::vector<ResultRow>& rows, const std::string& model,
                                        const std::string& over_refusal_dataset = "xstest_safe");

// Grouped bars: ASR (with Wilson 95% bars) per harmful dataset (groups) and method (bars) of `model`.
std::string plot_asr_by_dataset(const std::vector<ResultRow>& rows, const std::string& model);

// One point of a parameter sweep (e.g. NGSD alpha): the ASR and over-refusal measured at `value`.
struct SweepPoint {
  double value = 0;
  std::optional<double> asr;
  std::optional<double> over_refusal;
};

// Curves of ASR and over-refusal against the swept parameter.
std::string plot_parameter_sweep(const std::string& parameter, const std::vector<SweepPoint>& points,
                                 const std::string& title = "");

// NGSD gate state along one response, one entry per generated token.
struct GateTrace {
  std::vector<double> tv;         // I_t, total-variation distance between target and expert, [0, 1]
  std::vector<double> potential;  // v_t of the LIF unit before the soft reset
  std::vector<bool> spike;        // gate fired at this token
  double theta = 1.0;             // firing threshold
  std::string caption;            // e.g. "advbench #17, SmolLM2-135M + expert"
};

// Lines for TV distance and potential, the threshold, and shaded bands where the gate fired.
std::string plot_gate_trace(const GateTrace& trace);

// What goes into report.md.
struct ReportInputs {
  std::string title = "safedec evaluation report";
  std::vector<ResultRow> rows;
  std::string judge_note;      // shown under the table; default explains the keyword judge
  std::string over_refusal_dataset = "xstest_safe";
  std::string baseline_method = "plain";  // for the unpaired ATGR (decode time per token relative to it)
  // Paired speed against plain (eval/paired_speed.h), per (model, method); empty: not measured.
  std::vector<PairedSpeed> paired_speed;
  std::string speed_note;      // how it was measured (one sentence fragment)
  std::vector<std::pair<std::string, std::vector<SweepPoint>>> sweeps;  // (parameter, points)
  std::optional<GateTrace> gate_trace;
  std::string run_info;        // free text (command, manifest summary)
  std::string judges_section;  // Markdown comparing several judges (eval/rejudge.h), after the results
  // Model label -> parameter count; with two or more models the report draws scale plots.
  std::map<std::string, int64_t> model_parameters;
};

// Markdown for the report (the table and links to plots/<name>.svg). Pure: no files touched.
std::string render_report_markdown(const ReportInputs& inputs,
                                   const std::vector<std::string>& plot_files);

// Writes <dir>/report.md and the plots that the data supports into <dir>/plots/ (atomically);
// returns the plot paths relative to dir.
std::vector<std::string> write_report(const std::string& dir, const ReportInputs& inputs);

// report_scales.cpp. Parameters of a model config (embeddings, layers, norms, untied head).
int64_t parameter_count(const ModelConfig& config);
// A registered model or path: the GGUF tensor table's element count, or the HF config's formula.
int64_t model_parameter_count(const std::string& name_or_path);
// With >= 2 sized models: (name, SVG) of pooled ASR, over-refusal and reference NLL against
// log10(parameters), one line per method (the first judge's numbers).
std::vector<std::pair<std::string, std::string>> render_scale_plots(const ReportInputs& inputs);

}  // namespace safedec
