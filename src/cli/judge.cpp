// `safedec judge validate`: each judge's accuracy and Cohen's kappa against the hand-labelled
// validation cases (data/judge_cases/validation_cases.jsonl), with per-category accuracy, the share
// of unreadable answers of model-based judges and judged responses per second. Prints case names
// only, never prompts or responses.
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.h"
#include "cli/flags.h"
#include "core/error.h"
#include "core/files.h"
#include "eval/results_io.h"
#include "eval/judge.h"
#include "eval/judge_validation.h"
#include "eval/rubric_judge.h"

namespace safedec::cli {

namespace {

struct JudgeArgs {
  std::string judges = "keyword,rubric";
  std::string cases;
  std::vector<std::string> params;  // judge.key=value
  std::string keywords;
  bool json = false;
  bool fit_threshold = false;
  std::string readings;  // rubric (logprob): per-case probabilities to this JSONL file
  std::string from_readings;  // rubric (logprob): decide from a --readings file instead of the model
  int threads = 0;
};

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

// A --readings file back as readings, in the order of `cases` (matched by name; every case needed).
std::vector<RubricReading> load_rubric_readings(const std::string& path, const std::vector<JudgeCase>& cases) {
  const JsonlReadResult file = read_jsonl(path);
  std::map<std::string, RubricReading> by_name;
  for (size_t i = 0; i < file.rows.size(); ++i) {
    const auto& j = file.rows[i];
    const std::string where = path + ":" + std::to_string(i + 1);
    SAFEDEC_CHECK(j.is_object() && j.contains("name") && j["name"].is_string(), where, ": a readings row needs a name");
    RubricReading r;
    for (const auto& [key, into] : {std::pair<const char*, double*>{"p_refusal", &r.p_refusal},
                                    {"key_mass", &r.key_mass},
                                    {"convincing", &r.convincing},
                                    {"specific", &r.specific}}) {
      SAFEDEC_CHECK(j.contains(key) && j[key].is_number() && std::isfinite(j[key].template get<double>()), where,
                    ": a readings row needs a finite number '", key, "'");
      *into = j[key].template get<double>();
    }
    by_name[j["name"].template get<std::string>()] = r;
  }
  std::vector<RubricReading> out;
  for (const auto& c : cases) {
    auto it = by_name.find(c.name);
    SAFEDEC_CHECK(it != by_name.end(), "judge validate: ", path, " has no reading for case '", c.name,
                  "' (was it written for other cases?).");
    out.push_back(it->second);
  }
  return out;
}

int run_validate(const JudgeArgs& a) {
  if (a.threads > 0) torch::set_num_threads(a.threads);
  const std::vector<std::string> names = split_commas(a.judges);
  SAFEDEC_CHECK(!names.empty(), "judge validate: --judge needs at least one judge name (known: ",
                [] {
                  std::string k;
                  for (const auto& n : JudgeRegistry::global().names()) k += (k.empty() ? "" : ", ") + n;
                  return k;
                }(),
                ").");
  std::map<std::string, JudgeOptions> options;
  for (const auto& n : names) {
    if (!JudgeRegistry::global().contains(n)) JudgeRegistry::global().create(n);  // throws, listing the known
    options[n].keywords_path = a.keywords;
  }
  for (const auto& p : a.params) {
    const size_t dot = p.find('.'), eq = p.find('=');
    SAFEDEC_CHECK(dot != std::string::npos && eq != std::string::npos && dot < eq,
                  "judge validate: --param must be JUDGE.KEY=VALUE, e.g. rubric.model=smollm2-135m-instruct (got '", p,
                  "').");
    const std::string judge = p.substr(0, dot);
    SAFEDEC_CHECK(options.count(judge), "judge validate: --param ", p, " names judge '", judge,
                  "', which is not in --judge ", a.judges, ".");
    options[judge].params[p.substr(dot + 1, eq - dot - 1)] = p.substr(eq + 1);
  }
  const std::string path = a.cases.empty() ? default_judge_cases_path() : a.cases;
  const std::vector<JudgeCase> cases = load_judge_cases(path);
  std::cerr << "[judge] " << cases.size() << " labelled cases from " << path << "\n";
  for (const auto& n : names) {
    // --from-readings: the rubric's probabilities come from an earlier run's --readings file (no model).
    const bool replay = !a.from_readings.empty();
    SAFEDEC_CHECK(!replay || n == "rubric", "judge validate: --from-readings replays a rubric judge's readings; ",
                  "judge '", n, "' is not the rubric judge (run it with --judge rubric).");
    std::unique_ptr<Judge> judge;
    std::optional<RubricJudgeSettings> replay_settings;
    if (replay) {
      replay_settings = rubric_settings_from(options[n]);
      SAFEDEC_CHECK(replay_settings->mode == "logprob", "judge validate: --from-readings needs mode logprob.");
    } else {
      std::cerr << "[judge] " << n << ": loading\n";
      judge = make_judge(n, options[n]);
      std::cerr << "[judge] " << n << ": judging " << cases.size() << " cases\n";
    }
    // A rubric judge in logprob mode: readings first (probabilities), then verdicts from them.
    const auto* rubric = dynamic_cast<const RubricJudge*>(judge.get());
    const RubricJudgeSettings* settings = replay ? &*replay_settings : rubric ? &rubric->settings() : nullptr;
    const bool readable = settings && settings->mode == "logprob";
    SAFEDEC_CHECK(readable || (!a.fit_threshold && a.readings.empty()), "judge validate: --fit-threshold and ",
                  "--readings need a rubric judge in mode logprob (judge '", n, "' is not one).");
    JudgeValidation v;
    std::optional<ThresholdFit> fit, cut_fit;
    double mean_mass = -1;
    if (readable) {
      std::vector<std::pair<std::string, std::string>> items;
      for (const auto& c : cases) items.emplace_back(c.prompt, c.response);
      const auto t0 = std::chrono::steady_clock::now();
      const std::vector<RubricReading> rd = replay ? load_rubric_readings(a.from_readings, cases) : rubric->read_batch(items);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::vector<Verdict> verdicts;
      std::vector<double> p;
      std::vector<bool> labels;
      std::string lines;
      mean_mass = 0;
      for (size_t i = 0; i < rd.size(); ++i) {
        verdicts.push_back(rubric_verdict(rd[i], *settings));
        p.push_back(rd[i].p_refusal);
        labels.push_back(cases[i].human_refusal);
        mean_mass += rd[i].key_mass / static_cast<double>(rd.size());
        nlohmann::json j{{"name", cases[i].name},           {"category", cases[i].category},
                         {"human_refusal", cases[i].human_refusal}, {"p_refusal", rd[i].p_refusal},
                         {"key_mass", rd[i].key_mass},       {"convincing", rd[i].convincing},
                         {"specific", rd[i].specific},       {"refused", verdicts.back().refused}};
        lines += j.dump() + "\n";
      }
      v = validate_verdicts(n, cases, verdicts, seconds);
      if (a.fit_threshold) {
        fit = fit_threshold_half(p, labels);
        std::vector<double> scores;
        for (const auto& verdict : verdicts) scores.push_back(verdict.score.value_or(0.0));
        cut_fit = fit_score_cut_half(p, scores, settings->threshold, labels);
      }
      if (!a.readings.empty()) write_file_atomic(a.readings, lines);
    } else {
      v = validate_judge(*judge, cases);
    }
    if (a.json) {
      nlohmann::json j;
      j["judge"] = v.judge;
      j["params"] = options[n].params;
      j["n"] = v.overall.n;
      j["accuracy"] = v.overall.accuracy();
      j["kappa"] = v.overall.kappa();
      j["confusion"] = {{"tp", v.overall.tp}, {"tn", v.overall.tn}, {"fp", v.overall.fp}, {"fn", v.overall.fn}};
      for (const auto& [cat, ag] : v.by_category) j["by_category"][cat] = {{"n", ag.n}, {"accuracy", ag.accuracy()}};
      j["parse"] = {{"strict", v.parsed_strict}, {"lenient", v.parsed_lenient}, {"unparsable", v.unparsable}};
      j["seconds"] = v.seconds;
      j["responses_per_second"] = v.responses_per_second;
      j["wrong"] = v.wrong;
      if (mean_mass >= 0) j["mean_key_mass"] = mean_mass;
      if (fit)
        j["fit_threshold"] = {{"threshold", fit->threshold},
                              {"fit_accuracy", fit->fit.accuracy()},
                              {"held_out_n", fit->held_out.n},
                              {"held_out_accuracy", fit->held_out.accuracy()},
                              {"held_out_kappa", fit->held_out.kappa()},
                              {"held_out_confusion",
                               {{"tp", fit->held_out.tp}, {"tn", fit->held_out.tn}, {"fp", fit->held_out.fp},
                                {"fn", fit->held_out.fn}}}};
      if (cut_fit)
        j["fit_score_cut"] = {{"refusal_max_score", cut_fit->threshold},
                              {"threshold", settings->threshold},
                              {"fit_accuracy", cut_fit->fit.accuracy()},
                              {"held_out_n", cut_fit->held_out.n},
                              {"held_out_accuracy", cut_fit->held_out.accuracy()},
                              {"held_out_kappa", cut_fit->held_out.kappa()}};
      std::cout << j.dump() << "\n";
      continue;
    }
    std::printf("judge %s: n %zu, accuracy %.1f%%, Cohen's kappa %.3f (refusal = positive: tp %zu, tn %zu, fp %zu, fn %zu)\n",
                v.judge.c_str(), v.overall.n, 100.0 * v.overall.accuracy(), v.overall.kappa(), v.overall.tp,
                v.overall.tn, v.overall.fp, v.overall.fn);
    for (const auto& [cat, ag] : v.by_category)
      std::printf("  %-24s n %3zu  accuracy %5.1f%%\n", cat.c_str(), ag.n, 100.0 * ag.accuracy());
    if (v.parsed_strict + v.parsed_lenient + v.unparsable > 0)
      std::printf("  answers: %zu strict, %zu lenient, %zu unparsable (%.1f%%; keyword fallback)\n", v.parsed_strict,
                  v.parsed_lenient, v.unparsable, 100.0 * v.unparsable / static_cast<double>(v.overall.n));
    if (mean_mass >= 0)
      std::printf("  answers: read from next-token probabilities (logprob); mean P(valid key digit) %.3f\n",
                  mean_mass);
    if (fit)
      std::printf("  threshold fitted on the %zu even-numbered cases: %.4f (fit accuracy %.1f%%); held-out %zu cases: "
                  "accuracy %.1f%%, kappa %.3f (tp %zu, tn %zu, fp %zu, fn %zu)\n",
                  fit->fit.n, fit->threshold, 100.0 * fit->fit.accuracy(), fit->held_out.n,
                  100.0 * fit->held_out.accuracy(), fit->held_out.kappa(), fit->held_out.tp, fit->held_out.tn,
                  fit->held_out.fp, fit->held_out.fn);
    if (cut_fit)
      std::printf("  score cut (refusal_max_score, threshold %.3g kept) fitted on the %zu even-numbered cases: %.4f "
                  "(fit accuracy %.1f%%); held-out %zu cases: accuracy %.1f%%, kappa %.3f (tp %zu, tn %zu, fp %zu, "
                  "fn %zu)\n",
                  settings->threshold, cut_fit->fit.n, cut_fit->threshold, 100.0 * cut_fit->fit.accuracy(),
                  cut_fit->held_out.n, 100.0 * cut_fit->held_out.accuracy(), cut_fit->held_out.kappa(),
                  cut_fit->held_out.tp, cut_fit->held_out.tn, cut_fit->held_out.fp, cut_fit->held_out.fn);
    if (replay)
      std::printf("  verdicts from the readings in %s (no model run; speed not measured)\n", a.from_readings.c_str());
    else
      std::printf("  %.1f s, %.2f judged responses/s\n", v.seconds, v.responses_per_second);
    std::string wrong;
    for (const auto& w : v.wrong) wrong += (wrong.empty() ? "" : " ") + w;
    std::printf("  wrong: %s\n", wrong.empty() ? "(none)" : wrong.c_str());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

Runner add_judge(CLI::App& app) {
  auto a = std::make_shared<JudgeArgs>();
  auto* cmd = app.add_subcommand("judge", "Judges: validate them against hand-labelled cases");
  cmd->require_subcommand(1);
  auto* val = cmd->add_subcommand("validate", "Accuracy and Cohen's kappa of judges against labelled cases");
  val->add_option("--judge", a->judges, "Comma-separated judge names")->capture_default_str();
  val->add_option("--cases", a->cases, "Labelled cases JSONL (default data/judge_cases/validation_cases.jsonl)");
  val->add_option("--param", a->params, "Judge parameter JUDGE.KEY=VALUE, e.g. rubric.model=smollm2-135m-instruct");
  val->add_option("--keywords", a->keywords, "Refusal keyword list (default data/refusal_keywords.txt)");
  val->add_flag("--json", a->json, "One JSON object per judge");
  val->add_flag("--fit-threshold", a->fit_threshold,
                "Rubric (logprob): fit the refusal threshold, and the score cut at the set threshold, on the "
                "even-numbered cases; report the others");
  val->add_option("--readings", a->readings,
                  "Rubric (logprob): write each case's probabilities (name, label, P(refusal); no texts) to this JSONL");
  val->add_option("--from-readings", a->from_readings,
                  "Rubric (logprob): decide from a --readings file of an earlier run (same cases) instead of "
                  "running the judge model, e.g. to try --param rubric.threshold / refusal_max_score / score");
  add_threads_flag(val, a->threads);
  return [a] { return run_validate(*a); };
}

}  // namespace safedec::cli
