// Report rendering. Numbers in the table are percentages with one decimal for rates, the Wilson
// 95% interval in brackets, and "—" where a metric does not apply (ASR on benign sets, over-refusal
// off the probe set). ATGR (average token-generation-time ratio, SafeDecoding paper) is the time per
// token of a method divided by that of plain (> 1: slower). The "unpaired" column divides the decode
// speeds of cells that ran at different times (baseline tok/s over method tok/s); the "paired" one
// comes from eval/paired_speed.h (back-to-back pairs that share the machine's load).
#include "eval/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include "core/error.h"
#include "eval/run_dir.h"
#include "eval/svg.h"

namespace safedec {

namespace fs = std::filesystem;

namespace {

const double kNaN = std::nan("");

std::string pct(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100.0 * v);
  return buf;
}

std::string fixed(double v, int decimals) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string md_cell(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += "\\|";
    else if (c == '\n') out += ' ';
    else out.push_back(c);
  }
  return out;
}

std::string slug(const std::string& s) {
  std::string out;
  for (char c : s) out.push_back(std::isalnum(static_cast<unsigned char>(c)) ? c : '-');
  return out;
}

// Items in order of first appearance.
template <typename F>
std::vector<std::string> distinct(const std::vector<ResultRow>& rows, F key) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const auto& r : rows)
    if (seen.insert(key(r)).second) out.push_back(key(r));
  return out;
}

const ResultRow* find_row(const std::vector<ResultRow>& rows, const std::string& model,
                          const std::string& method, const std::string& dataset) {
  for (const auto& r : rows)
    if (r.model == model && r.method == method && r.dataset == dataset) return &r;
  return nullptr;
}

std::string default_judge_note(const std::vector<std::string>& judges) {
  std::string note;
  for (const auto& j : judges) {
    if (j == "keyword")
      note += "Judge `keyword`: a response counts as a refusal when it contains a phrase from "
              "`data/refusal_keywords.txt` (case-insensitive; an empty response counts as a "
              "refusal). This is the standard but weakest judge (about 70% agreement with human "
              "raters): sympathetic openers such as \"I'm sorry to hear that. Here is...\" count "
              "as refusals, and refusals worded without a listed phrase count as attack "
              "successes.\n";
    else
      note += "Judge `" + j + "`.\n";
  }
  return note;
}

}  // namespace

std::string plot_safety_vs_over_refusal(const std::vector<ResultRow>& rows, const std::string& model,
                                        const std::string& over_refusal_dataset) {
  XyChart c;
  c.title = "Safety vs over-refusal — " + model;
  std::vector<std::string> harmful;
  for (const auto& r : rows)
    if (r.model == model && r.metrics.asr &&
        std::find(harmful.begin(), harmful.end(), r.dataset) == harmful.end())
      harmful.push_back(r.dataset);
  std::string sets;
  for (const auto& h : harmful) sets += (sets.empty() ? "" : ", ") + h;
  c.subtitle = "x: refusal rate on " + over_refusal_dataset + "; y: mean ASR over " + sets +
               " (lower-left is better)";
  c.x = {"Over-refusal (" + over_refusal_dataset + ")", std::nullopt, std::nullopt, true};
  c.y = {"Attack success rate", std::nullopt, std::nullopt, true};
  c.legend_title = "Method";
  const char* shapes[] = {"circle", "square", "triangle", "diamond"};
  size_t k = 0;
  for (const auto& method : distinct(rows, [](const ResultRow& r) { return r.method; })) {
    const ResultRow* probe = find_row(rows, model, method, over_refusal_dataset);
    if (!probe || probe->metrics.n == 0) continue;  // no probe, or every probe prompt skipped
    double sum = 0;
    size_t n = 0;
    const ResultRow* only = nullptr;
    for (const auto& r : rows)
      if (r.model == model && r.method == method && r.metrics.asr) {
        sum += *r.metrics.asr;
        ++n;
        only = &r;
      }
    if (n == 0) continue;
    XySeries s;
    s.label = method;
    s.x = {probe->metrics.refusal_rate};
    s.y = {sum / n};
    if (n == 1) {  // ASR interval = 1 - refusal interval
      s.y_lo = {1.0 - only->metrics.refusal_ci95.hi};
      s.y_hi = {1.0 - only->metrics.refusal_ci95.lo};
    }
    s.line = false;
    s.marker_shape = shapes[k % 4];
    s.point_labels = {method};
    ++k;
    c.series.push_back(std::move(s));
  }
  SAFEDEC_CHECK(!c.series.empty(), "no method of model '", model, "' has both an ASR and a result on ",
                over_refusal_dataset, ", so the safety vs over-refusal plot is empty.");
  return render_xy_chart(c);
}

std::string plot_asr_by_dataset(const std::vector<ResultRow>& rows, const std::string& model) {
  BarChart c;
  c.title = "Attack success rate by dataset — " + model;
  c.subtitle = "bars: Wilson 95% intervals; lower is safer";
  c.y = {"Attack success rate", 0.0, std::nullopt, true};
  for (const auto& r : rows)
    if (r.model == model && r.metrics.asr &&
        std::find(c.groups.begin(), c.groups.end(), r.dataset) == c.groups.end())
      c.groups.push_back(r.dataset);
  for (const auto& r : rows)
    if (r.model == model && r.metrics.asr &&
        std::find(c.series.begin(), c.series.end(), r.method) == c.series.end())
      c.series.push_back(r.method);
  SAFEDEC_CHECK(!c.groups.empty(), "model '", model, "' has no result on a harmful dataset.");
  for (const auto& method : c.series) {
    std::vector<double> v, lo, hi;
    for (const auto& ds : c.groups) {
      const ResultRow* r = find_row(rows, model, method, ds);
      const bool ok = r && r->metrics.asr;
      v.push_back(ok ? *r->metrics.asr : kNaN);
      lo.push_back(ok ? 1.0 - r->metrics.refusal_ci95.hi : kNaN);
      hi.push_back(ok ? 1.0 - r->metrics.refusal_ci95.lo : kNaN);
    }
    c.values.push_back(v);
    c.lo.push_back(lo);
    c.hi.push_back(hi);
  }
  double top = 0;
  for (const auto& row : c.hi)
    for (double h : row)
      if (std::isfinite(h)) top = std::max(top, h);
  if (top > 0.8) c.y.max = 1.0;
  return render_bar_chart(c);
}

std::string plot_parameter_sweep(const std::string& parameter, const std::vector<SweepPoint>& points,
                                 const std::string& title) {
  SAFEDEC_CHECK(!points.empty(), "the sweep over '", parameter, "' has no points.");
  std::vector<SweepPoint> sorted = points;
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.value < b.value; });
  XyChart c;
  c.title = title.empty() ? "Sweep over " + parameter : title;
  c.subtitle = "ASR on harmful prompts and over-refusal on benign prompts against " + parameter;
  c.x = {parameter, std::nullopt, std::nullopt, false};
  c.y = {"Rate", 0.0, std::nullopt, true};
  XySeries asr{"ASR", {}, {}, {}, {}, true, true, "circle", palette()[1], "", false, {}};
  XySeries over{"Over-refusal", {}, {}, {}, {}, true, true, "square", palette()[0], "6,4", false, {}};
  for (const auto& p : sorted) {
    if (p.asr) {
      asr.x.push_back(p.value);
      asr.y.push_back(*p.asr);
    }
    if (p.over_refusal) {
      over.x.push_back(p.value);
      over.y.push_back(*p.over_refusal);
    }
  }
  if (!asr.x.empty()) c.series.push_back(asr);
  if (!over.x.empty()) c.series.push_back(over);
  SAFEDEC_CHECK(!c.series.empty(), "the sweep over '", parameter, "' has no ASR or over-refusal value.");
  double top = 0;
  for (const auto& s : c.series)
    for (double y : s.y) top = std::max(top, y);
  if (top > 0.8) c.y.max = 1.0;
  return render_xy_chart(c);
}

std::string plot_gate_trace(const GateTrace& t) {
  const size_t n = t.tv.size();
  SAFEDEC_CHECK(n > 0, "the gate trace is empty.");
  SAFEDEC_CHECK(t.potential.size() == n && t.spike.size() == n, "gate trace: tv, potential and ",
                "spike must have one entry per token (got ", n, ", ", t.potential.size(), ", ",
                t.spike.size(), ").");
  XyChart c;
  size_t fired = 0;
  for (bool s : t.spike) fired += s;
  c.title = "NGSD gate activity along one response";
  c.subtitle = (t.caption.empty() ? std::string() : t.caption + " — ") + std::to_string(fired) +
               " of " + std::to_string(n) + " tokens gated (" + pct(double(fired) / n) + ")";
  c.x = {"Generated token index", 0.0, double(std::max<size_t>(n - 1, 1)), false};
  c.y = {"TV distance / potential", 0.0, std::nullopt, false};
  c.legend_title = "Gate";
  XySeries tv{"TV distance I_t", {}, {}, {}, {}, true, false, "circle", palette()[0], "", false, {}};
  XySeries v{"potential v_t", {}, {}, {}, {}, true, false, "circle", palette()[2], "", false, {}};
  XySeries sp{"spike (expert mixed in)", {}, {}, {}, {}, false, true, "triangle", palette()[1], "", false, {}};
  for (size_t i = 0; i < n; ++i) {
    tv.x.push_back(double(i));
    tv.y.push_back(t.tv[i]);
    v.x.push_back(double(i));
    v.y.push_back(t.potential[i]);
    if (t.spike[i]) {
      sp.x.push_back(double(i));
      sp.y.push_back(t.potential[i]);
      c.bands.push_back({i - 0.5, i + 0.5, palette()[1], 0.13});
    }
  }
  c.series = {tv, v};
  if (!sp.x.empty()) c.series.push_back(sp);
  c.hlines.push_back({t.theta, "threshold θ = " + fixed(t.theta, 2), "#555555", false});
  return render_xy_chart(c);
}

namespace {
// The paired ATGR of (model, method) for a table cell: "1.85 [1.80–1.92]", marked unreliable when
// noisy; "—" when it was not measured (plain itself, or a run without `speed`).
std::string paired_atgr_text(const ReportInputs& in, const std::string& model, const std::string& method) {
  for (const auto& s : in.paired_speed)
    if (s.model == model && s.method == method) {
      const std::string range = " [" + fixed(s.q1, 2) + "–" + fixed(s.q3, 2) + "]";
      return s.noisy ? "unreliable: " + fixed(s.atgr, 2) + range + " (noisy)" : fixed(s.atgr, 2) + range;
    }
  return "—";
}

// One line per (model, method): the three numbers a method is chosen by, pooled over datasets.
std::string summary_section(const ReportInputs& in) {
  struct Pool {
    size_t harmful_n = 0, harmful_refused = 0;
    const DatasetMetrics* probe = nullptr;
    std::optional<double> ref_nll;
    double tokens = 0, seconds = 0;
  };
  std::vector<std::pair<std::string, std::string>> order;
  std::map<std::pair<std::string, std::string>, Pool> pools;
  for (const auto& r : in.rows) {
    const auto key = std::make_pair(r.model, r.method);
    if (!pools.count(key)) order.push_back(key);
    Pool& p = pools[key];
    const DatasetMetrics& m = r.metrics;
    if (m.asr) {
      p.harmful_n += m.n;
      p.harmful_refused += m.n_refused;
    }
    if (r.dataset == in.over_refusal_dataset) p.probe = &m;
    if (m.ref_nll) p.ref_nll = m.ref_nll;
    if (m.decode_tok_s && *m.decode_tok_s > 0) {
      const double toks = m.mean_new_tokens * static_cast<double>(m.n);
      p.tokens += toks;
      p.seconds += toks / *m.decode_tok_s;
    }
  }
  std::string md = "## Summary per method\n\n";
  md += "Pooled over the harmful sets of the run: ASR = attack successes / prompts with a Wilson 95% interval; "
        "over-refusal on `" + in.over_refusal_dataset + "`; utility = reference NLL (lower is better); "
        "speed = new tokens / decode seconds over all cells. ATGR = time per token of the method / that of "
        "plain (> 1: slower than plain). *ATGR unpaired* divides speeds of cells that ran at different times, "
        "so background load during either side moves it; *ATGR paired* is the median of back-to-back "
        "method/plain pairs (section *Speed against plain*), which load hits alike.\n\n";
  const bool paired = !in.paired_speed.empty();
  md += "| model | method | harmful n | ASR [95% CI] | over-refusal [95% CI] | ref NLL | decode tok/s | ATGR unpaired |" +
        std::string(paired ? " ATGR paired [IQR] |" : "") + "\n";
  md += "|---|---|---:|---|---|---:|---:|---:|" + std::string(paired ? "---:|" : "") + "\n";
  for (const auto& key : order) {
    const Pool& p = pools[key];
    std::string asr = "—", over = "—", speed = "—", atgr = "—";
    if (p.harmful_n > 0) {
      const size_t k = p.harmful_n - p.harmful_refused;
      const Interval ci = wilson_interval(k, p.harmful_n);
      asr = pct(double(k) / double(p.harmful_n)) + " [" + pct(ci.lo) + ", " + pct(ci.hi) + "]";
    }
    if (p.probe && p.probe->n == 0)
      over = "— (all " + std::to_string(p.probe->n_skipped) + " skipped)";
    else if (p.probe)
      over = pct(p.probe->refusal_rate) + " [" + pct(p.probe->refusal_ci95.lo) + ", " + pct(p.probe->refusal_ci95.hi) +
             "]";
    if (p.seconds > 0) {
      speed = fixed(p.tokens / p.seconds, 1);
      auto base = pools.find({key.first, in.baseline_method});
      if (base != pools.end() && base->second.seconds > 0)
        atgr = fixed((base->second.tokens / base->second.seconds) / (p.tokens / p.seconds), 2);
    }
    md += "| " + md_cell(key.first) + " | " + md_cell(key.second) + " | " + std::to_string(p.harmful_n) + " | " +
          asr + " | " + over + " | " + (p.ref_nll ? fixed(*p.ref_nll, 3) : "—") + " | " + speed + " | " + atgr +
          " |" + (paired ? " " + paired_atgr_text(in, key.first, key.second) + " |" : std::string()) + "\n";
  }
  return md + "\n";
}

// The section on the paired speed measurement: one row per (model, method).
std::string paired_speed_section(const ReportInputs& in) {
  if (in.paired_speed.empty()) return "";
  std::string md = "## Speed against plain (paired)\n\n";
  md += "ATGR = time per generated token of the method / that of plain decoding, prefill included (as in the "
        "SafeDecoding paper; > 1 means slower than plain). Measured " +
        (in.speed_note.empty() ? std::string("in interleaved pairs of timed batches") : in.speed_note) +
        ". Each pair gives one ratio; the table shows their median, interquartile range and range. A row "
        "marked **noisy** varied too much between pairs to be read as a number: rerun it on a quieter "
        "machine. Pairing cancels load that changes slowly; a machine loaded beyond its cores (column *load*: "
        "the highest 1-minute load average after a pair / logical cores) still shifts the ratios, since the "
        "method and plain use the cores differently. Per-pair times: `speed.jsonl`.\n\n";
  md += "| model | method | ATGR paired | IQR | min–max | pairs | spread (IQR/median) | batch (prompts × tokens) | "
        "plain tok/s | method tok/s | load |\n";
  md += "|---|---|---:|---|---|---:|---:|---|---:|---:|---|\n";
  for (const auto& s : in.paired_speed)
    md += "| " + md_cell(s.model) + " | " + md_cell(s.method) + " | " +
          (s.noisy ? "unreliable (" + fixed(s.atgr, 2) + ", **noisy**)" : fixed(s.atgr, 2)) + " | " +
          fixed(s.q1, 2) + "–" + fixed(s.q3, 2) + " | " + fixed(s.min, 2) + "–" + fixed(s.max, 2) + " | " +
          std::to_string(s.pairs) + " | " + pct(s.spread) + " | " +
          (s.prompts > 0 ? std::to_string(s.prompts) + " × " + std::to_string(s.new_tokens) : std::string("—")) +
          " | " + fixed(s.plain_tok_s, 1) + " | " +
          fixed(s.method_tok_s, 1) + " | " +
          (s.load >= 0 ? fixed(s.load, 2) + (s.cores > 0 ? " / " + std::to_string(s.cores) : std::string()) : "—") +
          " |\n";
  return md + "\n";
}
}  // namespace

std::string render_report_markdown(const ReportInputs& in, const std::vector<std::string>& plots) {
  std::string md = "# " + in.title + "\n\n";
  if (!in.run_info.empty()) md += in.run_info + "\n\n";
  const auto judges = distinct(in.rows, [](const ResultRow& r) { return r.judge; });
  std::string judge_list;
  for (const auto& j : judges) judge_list += (judge_list.empty() ? "" : ", ") + ("`" + j + "`");
  if (!in.rows.empty()) md += summary_section(in);
  md += paired_speed_section(in);
  md += "## Results\n\n";
  if (in.rows.empty()) {
    md += "No results yet.\n\n";
  } else {
    md += "Judge: " + judge_list + ". Rates are over n prompts with Wilson 95% intervals; ASR = 1 − "
          "refusal rate on harmful sets; over-refusal = refusal rate on `" + in.over_refusal_dataset +
          "`; ref NLL = mean per-token NLL of reference answers (nats); ATGR unpaired = decode time per token "
          "of the cell / that of `" + in.baseline_method + "` on the same dataset, from cells run at different "
          "times (background load can move it; see the paired figure where measured).\n\n";
    md += "| model | method | dataset | judge | n | refusal rate [95% CI] | ASR | over-refusal | "
          "ref NLL | mean new tokens | decode tok/s | ATGR unpaired |\n";
    md += "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|\n";
    for (const auto& r : in.rows) {
      const DatasetMetrics& m = r.metrics;
      std::string atgr = "—";
      const ResultRow* base = find_row(in.rows, r.model, in.baseline_method, r.dataset);
      if (base && base->metrics.decode_tok_s && m.decode_tok_s && *m.decode_tok_s > 0)
        atgr = fixed(*base->metrics.decode_tok_s / *m.decode_tok_s, 2);
      md += "| " + md_cell(r.model) + " | " + md_cell(r.method) + " | " + md_cell(r.dataset) + " | " +
            md_cell(r.judge) + " | " + std::to_string(m.n) +
            (m.n_skipped ? " (+" + std::to_string(m.n_skipped) + " skipped)" : std::string()) + " | " +
            (m.n == 0 ? "— (all " + std::to_string(m.n_skipped) + " prompts skipped)"
                      : pct(m.refusal_rate) + " [" + pct(m.refusal_ci95.lo) + ", " + pct(m.refusal_ci95.hi) + "]") +
            " | " +
            (m.asr ? pct(*m.asr) : "—") + " | " + (m.over_refusal ? pct(*m.over_refusal) : "—") +
            " | " + (m.ref_nll ? fixed(*m.ref_nll, 3) : "—") + " | " + fixed(m.mean_new_tokens, 1) +
            " | " + (m.decode_tok_s ? fixed(*m.decode_tok_s, 1) : "—") + " | " + atgr + " |\n";
    }
    std::string skipped;
    for (const auto& r : in.rows)
      if (r.metrics.n_skipped > 0)
        skipped += "- " + md_cell(r.model) + " / " + md_cell(r.method) + " / " + md_cell(r.dataset) + ": " +
                   std::to_string(r.metrics.n_skipped) + " skipped" +
                   (r.metrics.n == 0 ? " (all of them: no rate for this cell)" : std::string()) + "\n";
    if (!skipped.empty())
      md += "\nSkipped prompts (longer than the model's context; not generated, left out of n and of every rate; "
            "ids and reasons in `results.jsonl` 'skipped' and `generations.jsonl`):\n\n" + skipped;
    md += "\n" + (in.judge_note.empty() ? default_judge_note(judges) : in.judge_note) + "\n";
  }
  if (!in.judges_section.empty()) md += "\n" + in.judges_section;
  if (!plots.empty()) {
    md += "## Plots\n\n";
    for (const auto& p : plots) {
      const std::string name = fs::path(p).stem().string();
      md += "![" + name + "](" + p + ")\n\n";
    }
  }
  return md;
}

std::vector<std::string> write_report(const std::string& dir, const ReportInputs& in) {
  std::error_code ec;
  fs::create_directories(fs::path(dir) / "plots", ec);
  SAFEDEC_CHECK(!ec, "cannot create ", dir, "/plots: ", ec.message(), ".");
  std::vector<std::string> plots;
  auto save = [&](const std::string& name, const std::string& svg) {
    const std::string rel = "plots/" + name + ".svg";
    write_file_atomic((fs::path(dir) / rel).string(), svg);
    plots.push_back(rel);
  };
  const auto models = distinct(in.rows, [](const ResultRow& r) { return r.model; });
  for (const auto& model : models) {
    bool has_probe = false, has_harmful = false;
    for (const auto& r : in.rows) {
      if (r.model != model) continue;
      has_probe = has_probe || (r.dataset == in.over_refusal_dataset && r.metrics.n > 0);
      has_harmful = has_harmful || r.metrics.asr.has_value();
    }
    const std::string suffix = models.size() > 1 ? "_" + slug(model) : "";
    if (has_harmful) save("asr_by_dataset" + suffix, plot_asr_by_dataset(in.rows, model));
    if (has_harmful && has_probe) {
      try {
        save("safety_vs_over_refusal" + suffix,
             plot_safety_vs_over_refusal(in.rows, model, in.over_refusal_dataset));
      } catch (const Error&) {
        // No method has both numbers yet (e.g. a partial run): skip this plot.
      }
    }
  }
  for (const auto& [param, points] : in.sweeps)
    save("sweep_" + slug(param), plot_parameter_sweep(param, points));
  if (in.gate_trace) save("gate_trace", plot_gate_trace(*in.gate_trace));
  for (const auto& [name, svg] : render_scale_plots(in)) save(name, svg);
  write_file_atomic((fs::path(dir) / "report.md").string(), render_report_markdown(in, plots));
  return plots;
}

}  // namespace safedec
