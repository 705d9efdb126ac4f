// Scale plots for runs over several models (configs/scales.yaml): pooled ASR, over-refusal and
// reference NLL against the model's parameter count, one SVG per metric and one line per method,
// so a reader sees at a glance whether a method's effect holds as the model grows.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "core/error.h"
#include "core/model_registry.h"
#include "eval/metrics.h"
#include "eval/report.h"
#include "eval/svg.h"
#include "io/gguf.h"
#include "io/model_config.h"

namespace safedec {

namespace fs = std::filesystem;

int64_t parameter_count(const ModelConfig& c) {
  const int64_t h = c.hidden_size, hd = c.head_dim > 0 ? c.head_dim : (c.n_heads ? h / c.n_heads : 0);
  const int64_t q = c.n_heads * hd, kv = c.n_kv_heads * hd;
  int64_t layer = h * q + 2 * h * kv + q * h  // q, k, v, o
                  + 3 * h * c.intermediate_size  // gate, up, down
                  + 2 * h;                       // the two RMSNorm gains
  if (c.attention_bias) layer += q + 2 * kv;
  int64_t n = c.vocab_size * h + c.n_layers * layer + h;  // embeddings, layers, final norm
  if (!c.tie_word_embeddings) n += c.vocab_size * h;
  return n;
}

int64_t model_parameter_count(const std::string& name_or_path) {
  const ModelEntry e = resolve_model(name_or_path);
  if (fs::is_directory(e.path)) return parameter_count(model_config_from_hf_json(e.path + "/config.json"));
  // GGUF: the tensor table's element counts, exactly as `safedec inspect` reports them.
  const auto file = GgufFile::open(e.path);
  int64_t n = 0;
  for (const auto& t : file->tensors()) n += t.n_elements();
  return n;
}

std::vector<std::pair<std::string, std::string>> render_scale_plots(const ReportInputs& in) {
  std::vector<std::pair<std::string, std::string>> out;
  if (in.rows.empty()) return out;
  // Models with a known size, smallest first.
  std::vector<std::pair<int64_t, std::string>> models;
  std::set<std::string> seen;
  std::vector<std::string> methods;
  std::set<std::string> seen_methods;
  for (const auto& r : in.rows) {
    if (seen_methods.insert(r.method).second) methods.push_back(r.method);
    if (!seen.insert(r.model).second) continue;
    auto it = in.model_parameters.find(r.model);
    if (it != in.model_parameters.end() && it->second > 0) models.emplace_back(it->second, r.model);
  }
  if (models.size() < 2) return out;
  std::sort(models.begin(), models.end());
  // One judge's numbers (the first of the run) so that lines are comparable.
  const std::string judge = in.rows.front().judge;
  struct Pool {
    size_t harmful_n = 0, harmful_refused = 0;
    const DatasetMetrics* over = nullptr;
    std::optional<double> ref_nll;
  };
  std::map<std::pair<std::string, std::string>, Pool> pools;
  for (const auto& r : in.rows) {
    if (r.judge != judge) continue;
    Pool& p = pools[{r.model, r.method}];
    if (r.metrics.asr) {
      p.harmful_n += r.metrics.n;
      p.harmful_refused += r.metrics.n_refused;
    }
    if (r.dataset == in.over_refusal_dataset) p.over = &r.metrics;
    if (r.metrics.ref_nll) p.ref_nll = r.metrics.ref_nll;
  }
  struct Metric {
    std::string key, title, axis;
    bool percent;
  };
  const std::vector<Metric> metrics = {
      {"asr", "Pooled attack success rate vs model size", "ASR (harmful sets pooled)", true},
      {"over_refusal", "Over-refusal on " + in.over_refusal_dataset + " vs model size", "refusal rate", true},
      {"ref_nll", "Reference NLL on the utility set vs model size", "mean NLL per token (nats)", false}};
  for (const auto& m : metrics) {
    XyChart c;
    c.title = m.title;
    c.subtitle = "judge " + judge + "; x: log10 of the parameter count; bars: Wilson 95% intervals";
    c.x = {"log10(parameters)", std::nullopt, std::nullopt, false};
    c.y = {m.axis, std::nullopt, std::nullopt, m.percent};
    c.legend_title = "method";
    for (const auto& method : methods) {
      XySeries s;
      s.label = method;
      for (const auto& [params, model] : models) {
        auto it = pools.find({model, method});
        if (it == pools.end()) continue;
        const Pool& p = it->second;
        std::optional<double> y;
        Interval ci{};
        if (m.key == "asr" && p.harmful_n > 0) {
          const size_t k = p.harmful_n - p.harmful_refused;
          y = static_cast<double>(k) / static_cast<double>(p.harmful_n);
          ci = wilson_interval(k, p.harmful_n);
        } else if (m.key == "over_refusal" && p.over) {
          y = p.over->refusal_rate;
          ci = p.over->refusal_ci95;
        } else if (m.key == "ref_nll" && p.ref_nll) {
          y = *p.ref_nll;
        }
        if (!y) continue;
        s.x.push_back(std::log10(static_cast<double>(params)));
        s.y.push_back(*y);
        if (m.percent) {
          s.y_lo.push_back(ci.lo);
          s.y_hi.push_back(ci.hi);
        }
        s.point_labels.push_back(c.series.empty() ? model : "");
      }
      if (!s.x.empty()) c.series.push_back(std::move(s));
    }
    if (!c.series.empty()) out.emplace_back("scale_" + m.key, render_xy_chart(c));
  }
  return out;
}

}  // namespace safedec
