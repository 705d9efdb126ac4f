#include "eval/rejudge.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <chrono>
#include <fstream>
#include <sstream>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <set>

#include "core/error.h"
#include "core/files.h"
#include "core/numbers.h"
#include "core/paths.h"
#include "eval/dataset.h"
#include "eval/metrics.h"
#include "eval/rubric_judge.h"

namespace safedec {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string key3(const std::string& a, const std::string& b, const std::string& c) {
  return a + "\x1f" + b + "\x1f" + c;
}
std::string key_row(const std::string& judge, const std::string& model, const std::string& method,
                    const std::string& dataset, const std::string& id) {
  return judge + "\x1f" + key3(model, method, dataset) + "\x1f" + id;
}

std::string judgements_path(const std::string& dir) { return dir + "/judgements.jsonl"; }

std::string pct(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f%%", 100.0 * x);
  return b;
}

}  // namespace

RunPrompts load_run_prompts(const std::string& dir) {
  const std::string cfg = dir + "/config.resolved.yaml";
  SAFEDEC_CHECK(fs::is_directory(dir), "eval --rejudge: ", dir, " is not a directory; give the --out directory of a ",
                "finished `safedec eval` run.");
  SAFEDEC_CHECK(fs::exists(cfg) && fs::exists(dir + "/generations.jsonl"), "eval --rejudge: ", dir,
                " is not an eval run directory (it needs config.resolved.yaml and generations.jsonl); give the --out ",
                "directory of a `safedec eval` run.");
  YAML::Node root;
  try {
    root = YAML::LoadFile(cfg);
  } catch (const YAML::Exception& e) {
    fail("eval --rejudge: cannot read ", cfg, ": ", e.what());
  }
  SAFEDEC_CHECK(root && root.IsMap() && root["datasets"] && root["datasets"].IsSequence(), "eval --rejudge: ", cfg,
                " has no `datasets` list; is ", dir, " a safedec eval run?");
  RunPrompts r;
  if (YAML::Node j = root["judge"]; j && j.IsSequence() && j.size() > 0) r.primary_judge = j[0].as<std::string>();
  else if (j && j.IsScalar()) r.primary_judge = j.as<std::string>();
  else r.primary_judge = "keyword";
  if (YAML::Node k = root["judge_options"]["keywords"]; k && k.IsScalar()) {
    std::string p = k.as<std::string>();
    if (!p.empty() && !fs::exists(p) && fs::exists(source_dir() + "/" + p)) p = source_dir() + "/" + p;
    r.keywords_path = p;
  }
  DatasetLoadOptions lo;
  lo.limit = root["limit"] ? root["limit"].as<size_t>() : 0;
  lo.seed = root["seed"] ? root["seed"].as<uint64_t>() : 0;
  const DatasetRegistry registry = DatasetRegistry::builtin();
  const size_t run_limit = lo.limit;
  for (const auto& d : root["datasets"]) {
    // A plain name, or {name, limit} where the run gave that set its own limit.
    const std::string name = d.IsMap() ? d["name"].as<std::string>() : d.as<std::string>();
    lo.limit = d.IsMap() && d["limit"] ? d["limit"].as<size_t>() : run_limit;
    const Dataset ds = load_dataset(registry.get(name), lo);
    r.harmful[name] = ds.spec.harmful;
    for (const auto& ex : ds.examples) r.prompt[name + "\x1f" + ex.id] = ex.prompt;
  }
  return r;
}

std::vector<JudgeCellSummary> summarize_judges(const std::string& run_dir, const RunPrompts& run) {
  const std::vector<GenerationRow> gens = read_generations(run_dir + "/generations.jsonl");
  // Other judges' verdicts by (judge, cell, id); the last row wins.
  std::map<std::string, json> other;
  std::set<std::string> judge_names;
  for (const auto& j : read_jsonl(judgements_path(run_dir), /*missing_ok=*/true).rows) {
    const std::string judge = j.value("judge", "");
    judge_names.insert(judge);
    other[key_row(judge, j.value("model", ""), j.value("method", ""), j.value("dataset", ""), j.value("id", ""))] = j;
  }
  std::vector<std::string> cell_order;
  std::map<std::string, std::vector<const GenerationRow*>> by_cell;
  for (const auto& g : gens) {
    const std::string k = key3(g.model, g.method, g.dataset);
    if (!by_cell.count(k)) cell_order.push_back(k);
    by_cell[k].push_back(&g);
  }
  std::vector<JudgeCellSummary> out;
  for (const auto& k : cell_order) {
    const auto& rows = by_cell[k];
    const GenerationRow& first = *rows.front();
    const bool harmful = run.harmful.count(first.dataset) ? run.harmful.at(first.dataset) : false;
    JudgeCellSummary p;
    p.model = first.model;
    p.method = first.method;
    p.dataset = first.dataset;
    p.judge = run.primary_judge;
    p.harmful = harmful;
    for (const auto* g : rows)
      if (g->refused) {
        ++p.n;
        p.n_refused += *g->refused ? 1 : 0;
      }
    if (p.n > 0) {
      p.refusal_rate = static_cast<double>(p.n_refused) / static_cast<double>(p.n);
      if (harmful) p.asr = 1.0 - p.refusal_rate;
    }
    out.push_back(p);
    for (const auto& judge : judge_names) {
      if (judge == run.primary_judge) continue;
      JudgeCellSummary s = p;
      s.judge = judge;
      s.n = s.n_refused = 0;
      s.asr.reset();
      size_t agree = 0, both = 0, scored = 0;
      double score_sum = 0;
      for (const auto* g : rows) {
        auto it = other.find(key_row(judge, g->model, g->method, g->dataset, g->id));
        if (it == other.end()) continue;
        const bool refused = it->second.value("refused", false);
        ++s.n;
        s.n_refused += refused ? 1 : 0;
        const std::string parse = it->second.value("parse", "");
        if (parse == "unparsable") ++s.n_unparsable;
        if (parse == "lenient") ++s.n_lenient;
        if (it->second.contains("score") && it->second["score"].is_number()) {
          score_sum += it->second["score"].get<double>();
          ++scored;
        }
        if (g->refused) {
          ++both;
          agree += (*g->refused == refused) ? 1 : 0;
        }
      }
      if (s.n == 0) continue;
      s.refusal_rate = static_cast<double>(s.n_refused) / static_cast<double>(s.n);
      if (harmful) s.asr = 1.0 - s.refusal_rate;
      if (both > 0) s.agreement = static_cast<double>(agree) / static_cast<double>(both);
      if (scored > 0) s.mean_score = score_sum / static_cast<double>(scored);
      out.push_back(s);
    }
  }
  return out;
}

void write_judges_into_results(const std::string& run_dir, const std::vector<JudgeCellSummary>& cells) {
  const std::string path = run_dir + "/results.jsonl";
  if (!fs::exists(path)) return;
  std::map<std::string, json> by_cell;
  for (const auto& c : cells) {
    json j;
    j["n"] = c.n;
    j["n_refused"] = c.n_refused;
    j["refusal_rate"] = c.refusal_rate;
    j["asr"] = c.asr ? json(*c.asr) : json(nullptr);
    j["agreement"] = c.agreement ? json(*c.agreement) : json(nullptr);
    j["unparsable"] = c.n_unparsable;
    j["lenient"] = c.n_lenient;
    j["mean_score"] = c.mean_score ? json(*c.mean_score) : json(nullptr);
    by_cell[key3(c.model, c.method, c.dataset)][c.judge] = j;
  }
  const JsonlReadResult rows = read_jsonl(path);
  std::string text;
  for (json row : rows.rows) {
    auto it = by_cell.find(key3(row.value("model", ""), row.value("method", ""), row.value("dataset", "")));
    if (it != by_cell.end() && it->second.size() > 1) row["judges"] = it->second;
    text += row.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  }
  write_file_atomic(path, text);
}

RejudgeSummary rejudge_run(const RejudgeOptions& o) {
  std::ostream& log = o.log ? *o.log : std::cerr;
  const RunPrompts run = load_run_prompts(o.run_dir);
  SAFEDEC_CHECK(!o.judges.empty(), "eval --rejudge: name at least one judge with --judge (known: ", [] {
    std::string k;
    for (const auto& n : JudgeRegistry::global().names()) k += (k.empty() ? "" : ", ") + n;
    return k;
  }(), ").");
  for (const auto& name : o.judges) {
    SAFEDEC_CHECK(JudgeRegistry::global().contains(name), "unknown judge '", name, "'; known judges: ", [] {
      std::string k;
      for (const auto& n : JudgeRegistry::global().names()) k += (k.empty() ? "" : ", ") + n;
      return k;
    }(), ".");
    SAFEDEC_CHECK(name != run.primary_judge, "eval --rejudge: '", name, "' is the run's own judge (its verdicts are in ",
                  "generations.jsonl); name another judge.");
    // Bad parameters or a base judge model are refused even when nothing is left to judge.
    JudgeOptions jo = o.options.count(name) ? o.options.at(name) : JudgeOptions{};
    take_per_cell(jo, name);
    if (name == "rubric") check_rubric_judge(jo);
    else make_judge(name, jo);
  }
  const std::vector<GenerationRow> gens = read_generations(o.run_dir + "/generations.jsonl");
  const auto wanted = [](const std::vector<std::string>& list, const std::string& name) {
    return list.empty() || std::find(list.begin(), list.end(), name) != list.end();
  };
  for (const auto& [list, what] : {std::pair{&o.methods, "method"}, std::pair{&o.datasets, "dataset"}})
    for (const auto& name : *list) {
      bool found = false;
      std::string known;
      std::set<std::string> seen;
      for (const auto& g : gens) {
        const std::string& v = std::string(what) == "method" ? g.method : g.dataset;
        found = found || v == name;
        if (seen.insert(v).second) known += (known.empty() ? "" : ", ") + v;
      }
      SAFEDEC_CHECK(found, "eval --rejudge: the run has no ", what, " '", name, "'; its ", what, "s: ", known, ".");
    }
  repair_torn_tail(judgements_path(o.run_dir));
  std::set<std::string> done;
  for (const auto& j : read_jsonl(judgements_path(o.run_dir), /*missing_ok=*/true).rows)
    done.insert(key_row(j.value("judge", ""), j.value("model", ""), j.value("method", ""), j.value("dataset", ""),
                        j.value("id", "")));
  RejudgeSummary summary;
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& name : o.judges) {
    JudgeOptions jo = o.options.count(name) ? o.options.at(name) : JudgeOptions{};
    const size_t per_cell = take_per_cell(jo, name);
    std::vector<const GenerationRow*> todo;
    std::map<std::string, size_t> taken;  // responses of each cell within the per_cell cap
    for (const auto& g : gens) {
      if (g.skipped) continue;  // a skipped prompt (over the context) has no response to judge
      if (!wanted(o.methods, g.method) || !wanted(o.datasets, g.dataset)) continue;
      if (per_cell > 0 && taken[key3(g.model, g.method, g.dataset)]++ >= per_cell) continue;
      if (!done.count(key_row(name, g.model, g.method, g.dataset, g.id))) todo.push_back(&g);
    }
    if (todo.empty()) continue;
    if (jo.keywords_path.empty()) jo.keywords_path = run.keywords_path;
    log << "[judge] " << name << ": loading\n";
    const auto judge = make_judge(name, jo);
    const auto t_judge = std::chrono::steady_clock::now();
    const size_t chunk = std::max<size_t>(1, o.chunk);
    for (size_t first = 0; first < todo.size(); first += chunk) {
      const size_t last = std::min(todo.size(), first + chunk);
      std::vector<std::pair<std::string, std::string>> items;
      for (size_t i = first; i < last; ++i) {
        auto it = run.prompt.find(todo[i]->dataset + "\x1f" + todo[i]->id);
        SAFEDEC_CHECK(it != run.prompt.end(), "eval --rejudge: generation '", todo[i]->id, "' of dataset ",
                      todo[i]->dataset, " has no prompt in the run's datasets (was the data changed since the run?).");
        items.emplace_back(it->second, todo[i]->output);
      }
      const std::vector<Verdict> verdicts = judge->judge_batch(items);
      for (size_t i = first; i < last; ++i) {
        const Verdict& v = verdicts[i - first];
        json row{{"id", todo[i]->id},          {"model", todo[i]->model},   {"method", todo[i]->method},
                 {"dataset", todo[i]->dataset}, {"judge", name},             {"refused", v.refused},
                 {"score", v.score ? json(*v.score) : json(nullptr)},       {"parse", v.parse},
                 {"reason", v.reason}};
        append_jsonl(judgements_path(o.run_dir), row);
      }
      summary.judged_now += last - first;
      const double spent = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_judge).count();
      const double rate = spent > 0 ? static_cast<double>(last) / spent : 0.0;
      char eta[64];
      std::snprintf(eta, sizeof eta, "%.3f/s, ETA %.0f s", rate,
                    rate > 0 ? static_cast<double>(todo.size() - last) / rate : 0.0);
      log << "[judge] " << name << ": " << last << "/" << todo.size() << " responses, " << eta << "\n";
    }
  }
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  summary.cells = summarize_judges(o.run_dir, run);
  write_judges_into_results(o.run_dir, summary.cells);
  return summary;
}

size_t take_per_cell(JudgeOptions& options, const std::string& judge) {
  auto it = options.params.find("per_cell");
  if (it == options.params.end()) return 0;
  const std::string text = it->second;
  options.params.erase(it);
  return static_cast<size_t>(
      parse_int_in_range(text, 1, 1000000000, "judge '" + judge + "': per_cell (responses judged per cell)"));
}

void check_further_judges(const EvalConfig& config) {
  for (size_t i = 1; i < config.judges.size(); ++i) {
    JudgeOptions o = config.options_for(config.judges[i]);
    take_per_cell(o, config.judges[i]);
    if (config.judges[i] == "rubric") check_rubric_judge(o);
    else make_judge(config.judges[i], o);  // cheap judges: creating one checks its options
  }
}

std::string run_further_judges(const EvalConfig& config, const std::string& run_dir, bool judge_now,
                               std::ostream& log) {
  if (judge_now && config.judges.size() > 1) {
    RejudgeOptions o;
    o.run_dir = run_dir;
    o.log = &log;
    for (size_t i = 1; i < config.judges.size(); ++i) {
      o.judges.push_back(config.judges[i]);
      o.options[config.judges[i]] = config.options_for(config.judges[i]);
    }
    const RejudgeSummary s = rejudge_run(o);
    if (s.judged_now > 0)
      log << "[eval] judges: " << s.judged_now << " responses judged in " << s.seconds << " s\n";
    return judges_markdown(s.cells);
  }
  if (!fs::exists(judgements_path(run_dir))) return "";  // only the first judge (or nothing) judged this run
  return judges_markdown(summarize_judges(run_dir, load_run_prompts(run_dir)));
}

void replace_judges_section(const std::string& run_dir, const std::string& section) {
  const std::string path = run_dir + "/report.md";
  std::string md;
  if (fs::exists(path)) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    md = ss.str();
  }
  // Drop an earlier judges section (up to the next "## " heading).
  const size_t at = md.find("## Judges\n");
  if (at != std::string::npos) {
    const size_t next = md.find("\n## ", at + 1);
    md.erase(at, next == std::string::npos ? std::string::npos : next + 1 - at);
  }
  const size_t plots = md.find("## Plots\n");
  md.insert(plots == std::string::npos ? md.size() : plots, section);
  write_file_atomic(path, md);
}

std::string judges_markdown(const std::vector<JudgeCellSummary>& cells) {
  std::set<std::string> judges;
  for (const auto& c : cells) judges.insert(c.judge);
  if (judges.size() < 2) return "";
  std::string md =
      "## Judges\n\nThe same responses under each judge (`judgements.jsonl`; the first judge's verdicts are in "
      "`generations.jsonl`). ASR on harmful datasets, refusal rate elsewhere; agreement = share of responses on "
      "which the judge agrees with the first judge; unparsable = answers of a model-based judge that could not be "
      "read (the keyword judge decided those); score = mean StrongREJECT-style score in [0, 1].\n\n"
      "| model | method | dataset | judge | n | ASR / refusal | agreement | unparsable | score |\n"
      "|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& c : cells) {
    const std::string rate = c.asr ? "ASR " + pct(*c.asr) : "refusal " + pct(c.refusal_rate);
    md += "| " + c.model + " | " + c.method + " | " + c.dataset + " | " + c.judge + " | " + std::to_string(c.n) +
          " | " + rate + " | " + (c.agreement ? pct(*c.agreement) : std::string("-")) + " | " +
          (c.n > 0 && c.judge != cells.front().judge ? pct(static_cast<double>(c.n_unparsable) / c.n) : "-") + " | " +
          (c.mean_score ? [&] {
            char b[16];
            std::snprintf(b, sizeof b, "%.3f", *c.mean_score);
            return std::string(b);
          }()
                        : std::string("-")) +
          " |\n";
  }
  md += "\n";
  // Pooled per (model, method, judge): what a reader compares across judges.
  struct Pool {
    size_t harm_n = 0, harm_refused = 0;
    std::vector<std::pair<std::string, std::pair<size_t, size_t>>> other;  // dataset -> (refused, n)
  };
  std::vector<std::string> order;
  std::map<std::string, Pool> pools;
  std::map<std::string, std::array<std::string, 3>> names;
  for (const auto& c : cells) {
    const std::string k = key3(c.model, c.method, c.judge);
    if (!pools.count(k)) {
      order.push_back(k);
      names[k] = {c.model, c.method, c.judge};
    }
    Pool& p = pools[k];
    if (c.n == 0) continue;
    if (c.harmful) {
      p.harm_n += c.n;
      p.harm_refused += c.n_refused;
    } else {
      p.other.push_back({c.dataset, {c.n_refused, c.n}});
    }
  }
  const auto rate_ci = [](size_t k, size_t n) -> std::string {
    if (n == 0) return "-";
    const Interval ci = wilson_interval(k, n);
    return pct(static_cast<double>(k) / n) + " [" + pct(ci.lo) + ", " + pct(ci.hi) + "] (n " + std::to_string(n) + ")";
  };
  md += "Pooled per method and judge (Wilson 95% intervals; a judge run with `per_cell` saw fewer responses, see n):\n\n"
        "| model | method | judge | pooled ASR, harmful sets | refusal rate, other sets |\n|---|---|---|---|---|\n";
  for (const auto& k : order) {
    const Pool& p = pools[k];
    const auto& nm = names[k];
    std::string other;
    for (const auto& [dataset, kn] : p.other)
      other += (other.empty() ? "" : "; ") + dataset + " " + rate_ci(kn.first, kn.second);
    md += "| " + nm[0] + " | " + nm[1] + " | " + nm[2] + " | " + rate_ci(p.harm_n - p.harm_refused, p.harm_n) +
          " | " + (other.empty() ? "-" : other) + " |\n";
  }
  return md + "\n";
}

}  // namespace safedec
