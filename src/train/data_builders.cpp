// The training-data builders. All three share one machine: a list of answer jobs (id, prompt,
// system prompt) that the model answers with plain batched decoding, each answer judged and
// appended as one JSON line; then a builder-specific pass turns the answers (and static pool data)
// into data.jsonl.
//
// Resume: jobs are cut into fixed batches of generation.batch_size in job order. A batch whose
// answers are all on disk is skipped; any other batch is generated whole (same prompts, same
// padding, same per-batch sampling seed as in an uninterrupted run) and only its missing answers
// are appended. So a killed and resumed build writes the same bytes as one that never stopped.
#include "train/data_builders.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <tuple>

#include "core/error.h"
#include "core/jsonl.h"
#include "core/model_registry.h"
#include "core/paths.h"
#include "decoding/generator.h"
#include "decoding/plain_strategy.h"
#include "eval/progress.h"
#include "eval/results_io.h"
#include "eval/run_dir.h"
#include "core/sha256.h"
#include "model/prefix_cache.h"
#include "train/prompt_wrappers.h"

namespace safedec {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Keys of a response row (responses.jsonl; self_responses' data.jsonl).
const std::vector<std::string> kResponseKeys = {"id",          "stage",  "dataset",  "source_id",    "harmful",
                                                "prompt",      "system_mode", "system", "response", "refused",
                                                "judge_reason", "new_tokens", "finish_reason"};

// One prompt the model answers.
struct Job {
  std::string id;     // unique in the build
  std::string stage;  // self | harmful | anchor | safe | opposite | null
  std::string dataset, source_id, prompt;
  bool harmful = false;
  SystemPrompt system;
  std::string wrapper;  // acd_anchors: the wrapper `prompt` was put in ("" = none)
};

// A source with its loaded rows.
struct Loaded {
  DataSource source;
  Dataset data;
};

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// Per-batch sampling seed: a function of the configured seed and the batch index only, so a
// resumed batch draws what it drew the first time.
uint64_t batch_seed(uint64_t seed, size_t batch) { return sample_key(seed, "batch:" + std::to_string(batch)); }

std::string system_text(const SystemPrompt& s, const ModelBundle& bundle) {
  switch (s.mode) {
    case SystemPrompt::Mode::None: return "";
    case SystemPrompt::Mode::Default: return bundle.chat->default_system();
    case SystemPrompt::Mode::Text: return s.text;
  }
  return "";
}

// Checks one row read back from a response file; `where` names the file and line.
void check_response_row(const json& j, const std::string& where) {
  SAFEDEC_CHECK(j.is_object(), where, ": expected a JSON object");
  for (const auto& k : kResponseKeys) SAFEDEC_CHECK(j.contains(k), where, ": missing key '", k, "'");
  for (const char* k : {"id", "stage", "dataset", "source_id", "prompt", "system_mode", "system", "response",
                        "judge_reason", "finish_reason"})
    SAFEDEC_CHECK(j.at(k).is_string(), where, ": key '", k, "' must be a string");
  SAFEDEC_CHECK(j.at("refused").is_boolean() && j.at("harmful").is_boolean(), where,
                ": keys 'refused' and 'harmful' must be true or false");
  SAFEDEC_CHECK(j.at("new_tokens").is_number_integer(), where, ": key 'new_tokens' must be an integer");
}

// Reads a JSONL file line by line (so errors name the 1-based line), ignoring a torn last line.
std::vector<std::pair<int64_t, json>> read_lines(const std::string& path) {
  std::vector<std::pair<int64_t, json>> out;
  if (!file_exists(path)) return out;
  const JsonlReadResult r = read_jsonl(path, /*missing_ok=*/true);  // throws naming a corrupt line
  // read_jsonl skips blank lines; recount so messages name real line numbers.
  std::ifstream in(path, std::ios::binary);
  std::string line;
  int64_t line_no = 0;
  size_t next = 0;
  while (next < r.rows.size() && std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    out.emplace_back(line_no, r.rows[next++]);
  }
  return out;
}

// The answering machine: plain decoding of job batches, judged, appended, resumable.
class Answerer {
 public:
  Answerer(const DataBuildConfig& config, const ModelBundle& bundle, const Judge& judge, std::ostream& log,
           const DataBuildOptions& options)
      : config_(config), bundle_(bundle), judge_(judge), log_(log), options_(options),
        prefixes_(std::make_shared<PrefixKvStore>()) {}

  // Every job's answer row, by id; missing answers are generated and appended to `path`.
  std::map<std::string, json> run(const std::vector<Job>& jobs, const std::string& path, const std::string& label) {
    std::string diag;
    if (repair_torn_tail(path, &diag)) log_ << "[data] resume: " << diag << "\n";
    std::map<std::string, const Job*> by_id;
    for (const auto& j : jobs) {
      const bool fresh = by_id.emplace(j.id, &j).second;
      SAFEDEC_ASSERT(fresh, "duplicate job id ", j.id);
    }
    std::map<std::string, json> rows;
    for (auto& [line_no, row] : read_lines(path)) {
      const std::string where = path + " line " + std::to_string(line_no);
      check_response_row(row, where);
      const std::string id = row.at("id").get<std::string>();
      SAFEDEC_CHECK(by_id.count(id), where, ": answer '", id, "' is not one this config asks for; the file belongs ",
                    "to another build (use --force to start over)");
      SAFEDEC_CHECK(!rows.count(id), where, ": answer '", id, "' appears twice; the file was edited or mixed ",
                    "(use --force to start over)");
      rows.emplace(id, std::move(row));
    }

    const size_t B = static_cast<size_t>(config_.generation.batch_size);
    ProgressOptions po;
    po.out = &log_;
    ProgressBar bar(label, jobs.size(), po);
    bar.skip(rows.size(), rows.empty() ? "" : "resumed");
    for (size_t first = 0, batch = 0; first < jobs.size(); first += B, ++batch) {
      const size_t last = std::min(jobs.size(), first + B);
      bool missing = false;
      for (size_t i = first; i < last; ++i) missing = missing || !rows.count(jobs[i].id);
      if (!missing) continue;
      std::vector<StrategyPrompt> prompts;
      for (size_t i = first; i < last; ++i)
        prompts.push_back(bundle_.make_prompt(jobs[i].id, jobs[i].prompt, jobs[i].system.for_render()));
      GenerationOptions gopt = bundle_.generation_options();
      gopt.max_new_tokens = config_.generation.max_new_tokens;
      gopt.sampling = config_.generation.sampling;
      gopt.sampling.seed = batch_seed(config_.generation.sampling.seed, batch);
      Generator gen(gopt);
      std::vector<GenerationResult> results;
      GenerationStats stats;
      {
        torch::InferenceMode guard;
        PlainStrategy strategy(bundle_.model, bundle_.pad_id(), prefixes_);
        results = gen.run(strategy, prompts, &stats);
      }
      SAFEDEC_ASSERT(results.size() == last - first, "generator returned ", results.size(), " results for ",
                     last - first, " prompts");
      size_t written = 0;
      for (size_t i = first; i < last; ++i) {
        const Job& job = jobs[i];
        if (rows.count(job.id)) continue;  // on disk from before the kill
        const GenerationResult& r = results[i - first];
        const Verdict v = judge_.judge(job.prompt, r.text);
        json row = {{"id", job.id},
                    {"stage", job.stage},
                    {"dataset", job.dataset},
                    {"source_id", job.source_id},
                    {"harmful", job.harmful},
                    {"prompt", job.prompt},
                    {"system_mode", job.system.mode_name()},
                    {"system", system_text(job.system, bundle_)},
                    {"response", r.text},
                    {"refused", v.refused},
                    {"judge_reason", v.reason},
                    {"new_tokens", static_cast<int64_t>(r.tokens.size())},
                    {"finish_reason", r.finish_reason}};
        append_jsonl(path, row);
        // Keep what a reader of the file gets back (invalid UTF-8 replaced), so a resumed build and
        // an uninterrupted one derive data.jsonl from identical rows.
        rows.emplace(job.id, json::parse(row.dump(-1, ' ', false, json::error_handler_t::replace)));
        ++written;
      }
      generated_ += written;
      const double rate = stats.decode_seconds > 0 ? stats.new_tokens / stats.decode_seconds : 0.0;
      char note[48];
      std::snprintf(note, sizeof note, "%.1f tok/s", rate);
      bar.tick(written, note);
      if (options_.after_batch) options_.after_batch(rows.size());
    }
    bar.finish();
    return rows;
  }

  size_t generated() const { return generated_; }

 private:
  const DataBuildConfig& config_;
  const ModelBundle& bundle_;
  const Judge& judge_;
  std::ostream& log_;
  const DataBuildOptions& options_;
  std::shared_ptr<PrefixKvStore> prefixes_;
  size_t generated_ = 0;
};

std::vector<Loaded> load_sources(const std::vector<DataSource>& sources, const DatasetRegistry& registry,
                                 const std::string& data_root) {
  std::vector<Loaded> out;
  for (const auto& s : sources) {
    const DatasetSpec& spec = registry.get(s.dataset);
    // The parser checked this already; a config built in code must not bypass the split rule.
    check_dataset_use(spec, DatasetUse::Train);
    DatasetLoadOptions lo;
    lo.data_root = data_root;
    lo.limit = s.limit;
    lo.seed = s.seed;
    out.push_back({s, load_dataset(spec, lo)});
  }
  return out;
}

Job make_job(const std::string& stage, const Loaded& l, const Example& ex, const SystemPrompt& system,
             bool id_with_stage = true) {
  Job j;
  j.stage = stage;
  j.dataset = l.source.dataset;
  j.source_id = ex.id;
  j.id = (id_with_stage ? stage + "/" : std::string()) + j.dataset + "/" + ex.id;
  j.prompt = ex.prompt;
  j.harmful = l.data.spec.harmful;
  j.system = system;
  return j;
}

// What a builder produced.
struct Built {
  std::vector<json> rows;  // data.jsonl (empty for self_responses: its rows are the answers)
  json counts = json::object();
  bool rows_are_answers = false;
};

// ---- self_responses --------------------------------------------------------------------------

Built build_self_responses(const DataBuildConfig& c, const std::vector<Loaded>& sources, Answerer& answerer,
                           const std::string& data_path) {
  std::vector<Job> jobs;
  for (const auto& l : sources)
    for (const auto& ex : l.data.examples) jobs.push_back(make_job("self", l, ex, c.system, /*id_with_stage=*/false));
  const auto rows = answerer.run(jobs, data_path, "[data] " + c.name + ": answers");
  Built b;
  b.rows_are_answers = true;
  size_t refused = 0;
  for (const auto& l : sources) {
    json d = {{"rows", 0}, {"refused", 0}, {"complied", 0}, {"harmful", l.data.spec.harmful}};
    for (const auto& ex : l.data.examples) {
      const bool r = rows.at(l.source.dataset + "/" + ex.id).at("refused").get<bool>();
      d["rows"] = d["rows"].get<int64_t>() + 1;
      d[r ? "refused" : "complied"] = d[r ? "refused" : "complied"].get<int64_t>() + 1;
      refused += r;
    }
    b.counts["datasets"][l.source.dataset] = d;
  }
  b.counts["rows"] = jobs.size();
  b.counts["refused"] = refused;
  b.counts["complied"] = jobs.size() - refused;
  return b;
}

// ---- deep_alignment --------------------------------------------------------------------------

// Answers of a finished self_responses build, by (dataset, source id).
std::map<std::pair<std::string, std::string>, json> read_previous_answers(const std::string& dir,
                                                                         std::vector<std::string>& files) {
  const std::string manifest_path = dir + "/manifest.json";
  const std::string data_path = dir + "/data.jsonl";
  SAFEDEC_CHECK(file_exists(manifest_path) && file_exists(data_path), "deep_alignment.harmful_answers.from: ", dir,
                " holds no finished data build (manifest.json and data.jsonl); build it first with ",
                "safedec data build --config <a self_responses config> --out ", dir);
  json m;
  try {
    std::ifstream in(manifest_path);
    m = json::parse(in);
  } catch (const json::exception& e) {
    fail(manifest_path, " is not valid JSON: ", e.what());
  }
  SAFEDEC_CHECK(m.value("builder", "") == "self_responses", "deep_alignment.harmful_answers.from: ", dir,
                " was made by the builder '", m.value("builder", "?"), "'; it must be a self_responses build");
  SAFEDEC_CHECK(m.value("status", "") == "complete", "deep_alignment.harmful_answers.from: the build in ", dir,
                " is not finished (status '", m.value("status", "?"), "'); resume it first");
  std::map<std::pair<std::string, std::string>, json> out;
  for_each_jsonl_line(data_path, "self_responses output", [&](const json& j, int64_t line) {
    const std::string where = data_path + " line " + std::to_string(line);
    check_response_row(j, where);
    out[{j.at("dataset").get<std::string>(), j.at("source_id").get<std::string>()}] = j;
  });
  files.push_back(data_path);
  return out;
}

json& counter(json& obj, const std::string& key) {
  if (!obj.contains(key)) obj[key] = 0;
  return obj[key];
}
void bump(json& obj, const std::string& key) { counter(obj, key) = counter(obj, key).get<int64_t>() + 1; }

Built build_deep_alignment(const DataBuildConfig& c, const std::vector<Loaded>& refusals,
                           const std::vector<Loaded>& pairs, const std::vector<Loaded>& anchors, const Judge& judge,
                           Answerer& answerer, const std::string& responses_path,
                           const std::map<std::pair<std::string, std::string>, json>* previous) {
  Built b;
  json& safety_counts = b.counts["safety"];
  safety_counts = json::object();
  // 1. Written refusals the judge agrees are refusals.
  std::vector<std::pair<const Loaded*, const Example*>> kept, sensitive;
  for (const auto& l : refusals) {
    json& d = safety_counts[l.source.dataset];
    d = {{"rows", 0}, {"kept", 0}, {"dropped_reference_not_refusal", 0}, {"dropped_model_refused", 0},
         {"dropped_no_answer", 0}};
    for (const auto& ex : l.data.examples) {
      bump(d, "rows");
      if (!judge.judge(ex.prompt, ex.reference.value_or("")).refused) {
        // A careful helpful reply to a sensitive-sounding request: an anchor when asked for.
        bump(d, c.deep_alignment.sensitive_anchors ? "to_sensitive_anchor" : "dropped_reference_not_refusal");
        if (c.deep_alignment.sensitive_anchors && ex.reference && !ex.reference->empty()) sensitive.emplace_back(&l, &ex);
        continue;
      }
      kept.emplace_back(&l, &ex);
    }
  }
  // 2. The model's own answers: to those instructions (unless read from a previous build) and to
  //    the anchors.
  std::vector<Job> jobs;
  if (!previous)
    for (const auto& [l, ex] : kept) jobs.push_back(make_job("harmful", *l, *ex, c.system));
  for (const auto& l : anchors)
    for (const auto& ex : l.data.examples) jobs.push_back(make_job("anchor", l, ex, c.system));
  const auto answers = answerer.run(jobs, responses_path, "[data] " + c.name + ": answers");

  size_t safety_rows = 0, anchor_rows = 0;
  for (const auto& [l, ex] : kept) {
    json& d = safety_counts[l->source.dataset];
    const json* answer = nullptr;
    if (previous) {
      auto it = previous->find({l->source.dataset, ex->id});
      if (it != previous->end()) answer = &it->second;
    } else {
      answer = &answers.at("harmful/" + l->source.dataset + "/" + ex->id);
    }
    if (!answer) {
      bump(d, "dropped_no_answer");
      continue;
    }
    if (answer->at("refused").get<bool>()) {
      bump(d, "dropped_model_refused");
      continue;
    }
    bump(d, "kept");
    b.rows.push_back({{"id", "safety/" + l->source.dataset + "/" + ex->id},
                      {"kind", "safety"},
                      {"instruction", ex->prompt},
                      {"harmful_answer", answer->at("response")},
                      {"refusal", *ex->reference},
                      {"dataset", l->source.dataset},
                      {"source_id", ex->id},
                      {"harmful_answer_source", "model"},
                      {"refusal_source", "reference"}});
    ++safety_rows;
  }
  // 3. Pools with chosen/rejected replies: rejected = harmful answer, chosen = refusal, when the
  //    judge agrees with both roles.
  for (const auto& l : pairs) {
    json& d = safety_counts[l.source.dataset];
    d = {{"rows", 0}, {"kept", 0}, {"dropped_rejected_is_refusal", 0}, {"dropped_chosen_not_refusal", 0}};
    for (const auto& ex : l.data.examples) {
      bump(d, "rows");
      const std::string& chosen = ex.extra.at("chosen");
      const std::string& rejected = ex.extra.at("rejected");
      if (judge.judge(ex.prompt, rejected).refused) {
        bump(d, "dropped_rejected_is_refusal");
        continue;
      }
      if (!judge.judge(ex.prompt, chosen).refused) {
        bump(d, "dropped_chosen_not_refusal");
        continue;
      }
      bump(d, "kept");
      b.rows.push_back({{"id", "safety/" + l.source.dataset + "/" + ex.id},
                        {"kind", "safety"},
                        {"instruction", ex.prompt},
                        {"harmful_answer", rejected},
                        {"refusal", chosen},
                        {"dataset", l.source.dataset},
                        {"source_id", ex.id},
                        {"harmful_answer_source", "rejected"},
                        {"refusal_source", "chosen"}});
      ++safety_rows;
    }
  }
  // 4. Utility anchors: the model's own answers to benign instructions, refusals dropped.
  json& anchor_counts = b.counts["anchors"];
  anchor_counts = json::object();
  for (const auto& l : anchors) {
    json& d = anchor_counts[l.source.dataset];
    d = {{"rows", 0}, {"kept", 0}, {"dropped_refused", 0}};
    for (const auto& ex : l.data.examples) {
      bump(d, "rows");
      const json& a = answers.at("anchor/" + l.source.dataset + "/" + ex.id);
      if (a.at("refused").get<bool>()) {
        bump(d, "dropped_refused");
        continue;
      }
      bump(d, "kept");
      b.rows.push_back({{"id", "anchor/" + l.source.dataset + "/" + ex.id},
                        {"kind", "anchor"},
                        {"instruction", ex.prompt},
                        {"response", a.at("response")},
                        {"dataset", l.source.dataset},
                        {"source_id", ex.id},
                        {"finish_reason", a.at("finish_reason")}});
      ++anchor_rows;
    }
  }
  // 5. Sensitive anchors: the pool's own written non-refusing replies (no generation).
  for (const auto& [l, ex] : sensitive) {
    b.rows.push_back({{"id", "anchor/sensitive/" + l->source.dataset + "/" + ex->id},
                      {"kind", "anchor"},
                      {"instruction", ex->prompt},
                      {"response", *ex->reference},
                      {"dataset", l->source.dataset},
                      {"source_id", ex->id},
                      {"finish_reason", "reference"}});
    ++anchor_rows;
  }
  b.counts["sensitive_anchor_rows"] = sensitive.size();
  b.counts["safety_rows"] = safety_rows;
  b.counts["anchor_rows"] = anchor_rows;
  b.counts["rows"] = safety_rows + anchor_rows;
  b.counts["answers"] = jobs.size();
  SAFEDEC_CHECK(safety_rows > 0, "deep_alignment: no safety triplet was kept (counts: ", safety_counts.dump(),
                "): every instruction lost its refusal (the judge did not see the written reply as a refusal) or ",
                "its harmful answer (the model refused, or the reply was a refusal). Add sources or use more rows.");
  SAFEDEC_CHECK(anchors.empty() || anchor_rows > 0, "deep_alignment: no utility anchor was kept (counts: ",
                anchor_counts.dump(), "): the model refused every benign instruction.");
  return b;
}

// ---- acd_anchors -----------------------------------------------------------------------------

Built build_acd_anchors(const DataBuildConfig& c, const std::vector<Loaded>& harmful,
                        const std::vector<Loaded>& benign, const std::vector<Loaded>& written, const Judge& judge,
                        Answerer& answerer, const std::string& responses_path) {
  const std::string judge_name = judge.name();
  const auto& a = c.acd_anchors;
  // The instruction as the model sees it: wrapped or not by a seeded function of its source alone,
  // so the three answers to one instruction share its wrapping.
  const bool wrapping = a.wrap_probability > 0;
  auto wrapped = [&](const std::string& dataset, const Example& ex) -> std::pair<std::string, std::string> {
    const auto w = acd_anchor_wrapper(a.wrap_probability, a.wrap_seed, dataset, ex.id);
    if (!w) return {ex.prompt, ""};
    const uint64_t noise = sample_key(a.wrap_seed, "acd_wrap_noise:" + dataset + "/" + ex.id);
    return {wrap_prompt(ex.prompt, *w, noise), prompt_wrapper_names()[*w]};
  };
  const std::vector<std::pair<std::string, SystemPrompt>> kinds = {
      {"safe", SystemPrompt::with_text(a.safe_prompt)},
      {"opposite", SystemPrompt::with_text(a.opposite_prompt)},
      {"null", a.null_system}};
  // System-major order: consecutive batches share a system turn (computed once, PrefixKvStore).
  std::vector<Job> jobs;
  size_t n_harmful = 0, n_benign = 0;
  for (const auto& l : harmful) n_harmful += l.data.examples.size();
  for (const auto& l : benign) n_benign += l.data.examples.size();
  for (const auto& [kind, system] : kinds) {
    for (const auto* group : {&harmful, &benign})
      for (const auto& l : *group)
        for (const auto& ex : l.data.examples) {
          Job j = make_job(kind, l, ex, system);
          std::tie(j.prompt, j.wrapper) = wrapped(l.source.dataset, ex);
          jobs.push_back(std::move(j));
        }
  }
  const auto answers = answerer.run(jobs, responses_path, "[data] " + c.name + ": answers");

  Built b;
  json by_system = json::object();
  json wrapped_rows = {{"D_HR", 0}, {"D_HA", 0}, {"D_S", 0}};
  size_t hr = 0, ha = 0, s = 0, dropped = 0;
  for (const auto& job : jobs) {
    const json& ans = answers.at(job.id);
    const bool refused = ans.at("refused").get<bool>();
    json& d = by_system[job.stage];
    std::string subset;
    if (job.harmful) {
      subset = refused ? "D_HR" : "D_HA";
      bump(d, refused ? "harmful_refused" : "harmful_complied");
      (refused ? hr : ha) += 1;
    } else if (!refused) {
      subset = "D_S";
      bump(d, "benign_answered");
      ++s;
    } else {
      bump(d, "benign_refused");
      ++dropped;
      continue;
    }
    b.rows.push_back({{"id", job.id},
                      {"subset", subset},
                      {"instruction", job.prompt},
                      {"response", ans.at("response")},
                      {"harmful", job.harmful},
                      {"system_kind", job.stage},
                      {"dataset", job.dataset},
                      {"source_id", job.source_id},
                      {"judge_reason", ans.at("judge_reason")},
                      {"new_tokens", ans.at("new_tokens")},
                      {"finish_reason", ans.at("finish_reason")}});
    if (wrapping) {
      b.rows.back()["wrapper"] = job.wrapper.empty() ? "none" : job.wrapper;
      if (!job.wrapper.empty()) bump(wrapped_rows, subset);
    }
  }
  // Written refusals (no generation): the rows the judge sees as refusals join D_HR.
  size_t hr_written = 0, written_rows = 0;
  for (const auto& l : written) {
    for (const auto& ex : l.data.examples) {
      ++written_rows;
      const std::string reply = ex.reference.value_or("");
      // The judge reads the reply against the instruction as written (the reply was written for it).
      if (reply.empty() || !judge.judge(ex.prompt, reply).refused) continue;
      const auto [instruction, wrapper] = wrapped(l.source.dataset, ex);
      b.rows.push_back({{"id", "written/" + l.source.dataset + "/" + ex.id},
                        {"subset", "D_HR"},
                        {"instruction", instruction},
                        {"response", reply},
                        {"harmful", true},
                        {"system_kind", "written"},
                        {"dataset", l.source.dataset},
                        {"source_id", ex.id},
                        {"finish_reason", "reference"}});
      if (wrapping) {
        b.rows.back()["wrapper"] = wrapper.empty() ? "none" : wrapper;
        if (!wrapper.empty()) bump(wrapped_rows, "D_HR");
      }
      ++hr;
      ++hr_written;
    }
  }
  b.counts = {{"harmful_instructions", n_harmful},
              {"benign_instructions", n_benign},
              {"answers", jobs.size()},
              {"written_refusal_rows", written_rows},
              {"D_HR_written", hr_written},
              {"D_HR", hr},
              {"D_HA", ha},
              {"D_S", s},
              {"dropped_benign_refusals", dropped},
              {"rows", b.rows.size()},
              {"by_system", by_system}};
  if (wrapping) {
    // Instructions put in a wrapper (each counted once, whatever the system prompt) and rows of each
    // subset whose instruction is wrapped.
    size_t wrapped_harmful = 0, wrapped_benign = 0, wrapped_written = 0;
    for (const auto* group : {&harmful, &benign, &written})
      for (const auto& l : *group)
        for (const auto& ex : l.data.examples) {
          if (!acd_anchor_wrapper(a.wrap_probability, a.wrap_seed, l.source.dataset, ex.id)) continue;
          (group == &harmful ? wrapped_harmful : group == &benign ? wrapped_benign : wrapped_written) += 1;
        }
    b.counts["wrapped_instructions"] = {
        {"harmful", wrapped_harmful}, {"benign", wrapped_benign}, {"written_refusals", wrapped_written}};
    b.counts["wrapped_rows"] = wrapped_rows;
  }
  const std::string kept_note = "; the " + std::to_string(jobs.size()) + " answers stay in " + responses_path +
                                " and data.jsonl was not written";
  SAFEDEC_CHECK(hr > 0, "acd_anchors: the subset D_HR (harmful instruction + refusing response) is empty: the ", judge_name,
                " judge saw none of the ", 3 * n_harmful, " answers to the ", n_harmful,
                " harmful instructions (under the safe, opposite and null system prompts) as a refusal, so ",
                "L_SP has no refusals to learn and L_AP none to unlearn. Use a stronger safe_prompt, more harmful ",
                "instructions, or another judge", kept_note);
  SAFEDEC_CHECK(ha > 0, "acd_anchors: the subset D_HA (harmful instruction + complying response) is empty: the ", judge_name,
                " judge saw every one of the ", 3 * n_harmful, " answers to the ", n_harmful,
                " harmful instructions as a refusal, so L_AP has no compliance to learn. Use a stronger ",
                "opposite_prompt, more harmful instructions, or another judge", kept_note);
  SAFEDEC_CHECK(s > 0, "acd_anchors: the subset D_S (benign instruction + non-refusing response) is empty: the ", judge_name,
                " judge saw every one of the ", 3 * n_benign, " answers to the ", n_benign,
                " benign instructions as a refusal. Use other benign instructions or another judge", kept_note);
  return b;
}

std::string write_rows(const std::vector<json>& rows) {
  std::string text;
  for (const auto& r : rows) text += r.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  return text;
}

}  // namespace

std::string default_data_dir(const std::string& name) { return source_dir() + "/.cache/data/" + name; }

std::optional<size_t> acd_anchor_wrapper(double probability, uint64_t seed, const std::string& dataset,
                                         const std::string& source_id) {
  if (probability <= 0) return std::nullopt;
  const uint64_t key = sample_key(seed, "acd_wrap:" + dataset + "/" + source_id);
  // The top 53 bits as a uniform draw in [0, 1); the low bits pick the wrapper.
  if (static_cast<double>(key >> 11) * 0x1.0p-53 >= probability) return std::nullopt;
  return static_cast<size_t>(key % prompt_wrapper_names().size());
}

DataBuildSummary run_data_build(DataBuildConfig config, const DataBuildOptions& options) {
  const double t0 = now_seconds();
  std::ostream& log = options.log ? *options.log : std::cerr;
  if (options.threads > 0) torch::set_num_threads(options.threads);
  const DatasetRegistry builtin = options.registry ? DatasetRegistry() : DatasetRegistry::builtin();
  const DatasetRegistry& registry = options.registry ? *options.registry : builtin;

  // Inputs first: a missing or malformed data file, an evaluation set or an unusable previous
  // build fails before the model is loaded or anything is written.
  auto load = [&](const std::vector<DataSource>& s) { return load_sources(s, registry, options.data_root); };
  std::vector<Loaded> list_a, list_b, list_c;
  if (config.builder == "self_responses") {
    list_a = load(config.self_responses.sources);
  } else if (config.builder == "deep_alignment") {
    list_a = load(config.deep_alignment.refusals);
    list_b = load(config.deep_alignment.pairs);
    list_c = load(config.deep_alignment.anchors);
  } else if (config.builder == "acd_anchors") {
    list_a = load(config.acd_anchors.harmful);
    list_b = load(config.acd_anchors.benign);
    list_c = load(config.acd_anchors.written_refusals);
  } else {
    fail("unknown builder '", config.builder, "'");
  }
  std::vector<std::string> dataset_files;
  for (const auto* group : {&list_a, &list_b, &list_c})
    for (const auto& l : *group)
      for (const auto& f : l.data.files)
        if (std::find(dataset_files.begin(), dataset_files.end(), f) == dataset_files.end()) dataset_files.push_back(f);
  std::map<std::pair<std::string, std::string>, json> previous;
  const bool from_previous = config.builder == "deep_alignment" && config.deep_alignment.harmful_answers != "self";
  std::string previous_dir;
  if (from_previous) {
    previous_dir = config.deep_alignment.harmful_answers;
    if (!fs::exists(previous_dir) && previous_dir[0] != '/' && fs::exists(source_dir() + "/" + previous_dir))
      previous_dir = source_dir() + "/" + previous_dir;
    previous = read_previous_answers(previous_dir, dataset_files);
  }
  const auto judge = make_judge(config.judge, config.judge_options);

  // The output directory refuses another config unless force. A directory that already holds a
  // build is checked before the model loads (a refusal costs nothing); a new one is created only
  // after the model loaded, so a model that fails to load leaves nothing behind.
  const std::string out = options.out_dir.empty() ? default_data_dir(config.name) : options.out_dir;
  const std::string data_path = out + "/data.jsonl";
  const std::string responses_path = out + "/responses.jsonl";
  auto open_out = [&] {
    // Lock an existing directory before --force deletes anything in it, so a second writer is refused
    // before it touches the first one's files (RunDirectory::open then shares this process's lock).
    std::shared_ptr<RunDirLock> lock;
    std::error_code lock_ec;
    if (fs::is_directory(out, lock_ec)) lock = RunDirLock::acquire(out);
    if (options.force) {
      std::error_code ec;
      fs::remove(data_path, ec);
      fs::remove(responses_path, ec);
    }
    RunDirOptions ro;
    ro.resume = options.resume;
    ro.force = options.force;
    return RunDirectory::open(out, config.resolved(), ro);
  };
  std::optional<RunDirectory> opened;
  if (file_exists(out + "/config.resolved.yaml")) opened = open_out();

  log << "[data] " << config.name << ": builder " << config.builder << ", model " << config.model << "\n";
  ModelBundle bundle = options.load_model ? options.load_model(config.model, config.chat_template)
                                          : load_model_bundle(config.model, LoadOptions{}, config.chat_template);
  if (!opened) opened = open_out();
  const RunDirectory& run = *opened;
  if (run.resumed() && config.builder != "self_responses" && file_exists(data_path)) {
    // data.jsonl is derived in full at the end; the answers are the resumable state.
    std::error_code ec;
    fs::remove(data_path, ec);
  }

  ManifestInputs mi;
  for (const auto& s : config.sources()) mi.seeds["sample:" + s.dataset] = s.seed;
  mi.seeds["sampling"] = config.generation.sampling.seed;
  if (!bundle.entry.path.empty() && fs::exists(bundle.entry.path) && !fs::is_directory(bundle.entry.path))
    mi.model_files.push_back(bundle.entry.path);
  else if (!bundle.entry.path.empty() && fs::is_directory(bundle.entry.path))
    for (const auto& e : fs::recursive_directory_iterator(bundle.entry.path))
      if (e.is_regular_file()) mi.model_files.push_back(e.path().string());
  std::sort(mi.model_files.begin(), mi.model_files.end());
  mi.dataset_files = dataset_files;
  const std::string keywords =
      config.judge_options.keywords_path.empty() ? default_keyword_list_path() : config.judge_options.keywords_path;
  if (config.judge == "keyword" && fs::exists(keywords))
    mi.extra["judge_keywords"] = {{"path", fs::absolute(keywords).string()}, {"sha256", sha256_file(keywords)}};
  mi.extra["torch_version"] = TORCH_VERSION;
  mi.extra["threads"] = torch::get_num_threads();
  mi.extra["command"] = options.command;
  mi.extra["config_source"] = config.source;
  mi.extra["resumed"] = run.resumed();
  if (from_previous) mi.extra["harmful_answers_from"] = fs::absolute(previous_dir).lexically_normal().string();
  const json base_manifest = build_manifest(mi);
  const std::string config_text = canonical_yaml(config.resolved());
  auto write_manifest = [&](const std::string& status, const json& counts, const std::string& error) {
    json m = base_manifest;
    m["builder"] = config.builder;
    m["name"] = config.name;
    m["status"] = status;
    m["model_name"] = config.model;
    m["counts"] = counts;
    m["config"] = config_text;
    m["files"] = {{"data", "data.jsonl"},
                  {"responses", config.builder == "self_responses" ? "data.jsonl" : "responses.jsonl"},
                  {"config", "config.resolved.yaml"}};
    m["seconds"] = now_seconds() - t0;
    if (!error.empty()) m["error"] = error;
    write_file_atomic(run.manifest_path(), m.dump(2) + "\n");
  };
  write_manifest("running", nullptr, "");

  Answerer answerer(config, bundle, *judge, log, options);
  Built built;
  try {
    if (config.builder == "self_responses") {
      built = build_self_responses(config, list_a, answerer, data_path);
    } else if (config.builder == "deep_alignment") {
      built = build_deep_alignment(config, list_a, list_b, list_c, *judge, answerer, responses_path,
                                   from_previous ? &previous : nullptr);
    } else {
      built = build_acd_anchors(config, list_a, list_b, list_c, *judge, answerer, responses_path);
    }
  } catch (const Error& e) {
    write_manifest("failed", nullptr, e.what());
    throw;
  }
  size_t rows = 0;
  if (built.rows_are_answers) {
    rows = built.counts.at("rows").get<size_t>();
  } else {
    write_file_atomic(data_path, write_rows(built.rows));
    rows = built.rows.size();
  }
  write_manifest("complete", built.counts, "");

  DataBuildSummary s;
  s.out_dir = run.path();
  s.data_path = data_path;
  s.manifest_path = run.manifest_path();
  s.counts = built.counts;
  s.rows = rows;
  s.generated = answerer.generated();
  s.resumed = run.resumed();
  s.seconds = now_seconds() - t0;
  log << "[data] " << config.name << ": " << rows << " rows in " << data_path << " (" << s.generated
      << " answers generated now, " << static_cast<int64_t>(s.seconds) << " s)\n";
  return s;
}

}  // namespace safedec
