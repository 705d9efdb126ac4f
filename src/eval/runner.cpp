#include "eval/runner.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "artifacts/artifact.h"
#include "core/context_overflow.h"
#include "core/error.h"
#include "core/jsonl.h"
#include "decoding/model_bundle.h"
#include "decoding/strategy_registry.h"
#include "decoding/timing.h"
#include "eval/paired_speed.h"
#include "eval/progress.h"
#include "eval/rejudge.h"
#include "eval/ref_nll.h"
#include "eval/report.h"
#include "eval/run_dir.h"
#include "core/sha256.h"
#include "dist/dist.h"
#include "artifacts/harm_vector.h"

namespace safedec {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Cell {
  size_t model = 0, method = 0, dataset = 0;
};

std::string cell_key(const std::string& model, const std::string& method, const std::string& dataset) {
  return model + "\x1f" + method + "\x1f" + dataset;
}

// A file, or every regular file under a directory (HF model directories, PEFT adapters).
void add_files(const std::string& path, std::vector<std::string>& out) {
  if (path.empty() || !fs::exists(path)) return;
  if (fs::is_directory(path)) {
    std::vector<std::string> files;
    for (const auto& e : fs::recursive_directory_iterator(path))
      if (e.is_regular_file()) files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    out.insert(out.end(), files.begin(), files.end());
  } else {
    out.push_back(path);
  }
}

// The command that makes a missing artifact, from the conventional path it was configured with.
std::string how_to_make(const std::string& what, const std::string& path) {
  if (what.find("icv") != std::string::npos) return "; make it with: safedec icv extract --model <model> --out " + path;
  // .cache/train/<config>/artifact is what `safedec train --config configs/train/<config>.yaml` writes.
  const std::string marker = ".cache/train/";
  const size_t at = path.find(marker);
  if (at != std::string::npos) {
    std::string rest = path.substr(at + marker.size());
    const std::string config = rest.substr(0, rest.find('/'));
    if (!config.empty()) return "; make it with: safedec train --config configs/train/" + config + ".yaml";
  }
  return "; make it with safedec train (configs/train/)";
}

// Every file a method reads, resolved; a missing artifact is an error before anything runs.
std::vector<std::string> method_artifacts(const EvalMethodSpec& m) {
  std::vector<std::string> files;
  const MethodDescriptor& d = method_descriptor(m.config.method);
  for (const auto& [what, path] : d.artifacts(m.config)) {
    SAFEDEC_CHECK(!path.empty(), "method ", m.label, ": `", what, "` is not set");
    const std::string resolved = resolve_artifact_path(path);
    if (!fs::exists(resolved))
      fail("method ", m.label, ": the artifact `", what, ": ", path, "` does not exist (relative paths are tried ",
           "against the current directory and the source tree)", how_to_make(what, path));
    add_files(resolved, files);
  }
  for (const auto& model : d.models(m.config)) add_files(resolve_model(model).path, files);
  return files;
}

std::string fmt_rate(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3f", x);
  return b;
}

// Pooled ASR over the harmful datasets of one (model, method), and the over-refusal rate.
SweepPoint sweep_point(const std::vector<ResultRow>& rows, const std::string& model, const std::string& method,
                       double value, const std::string& probe) {
  SweepPoint p;
  p.value = value;
  size_t n = 0, refused = 0;
  for (const auto& r : rows) {
    if (r.model != model || r.method != method) continue;
    if (r.metrics.asr) {
      n += r.metrics.n;
      refused += r.metrics.n_refused;
    }
    if (r.dataset == probe && r.metrics.n > 0) p.over_refusal = r.metrics.refusal_rate;
  }
  if (n > 0) p.asr = 1.0 - static_cast<double>(refused) / static_cast<double>(n);
  return p;
}

// Per-row decode seconds: the batch's decode time shared in proportion to each row's new tokens
// (rows of one batch decode together, so only the share is meaningful).
std::vector<double> share_seconds(const std::vector<GenerationResult>& results, double seconds) {
  size_t total = 0;
  for (const auto& r : results) total += r.tokens.size();
  std::vector<double> out(results.size(), 0.0);
  for (size_t i = 0; i < results.size(); ++i)
    out[i] = total == 0 ? seconds / static_cast<double>(results.size())
                        : seconds * static_cast<double>(results[i].tokens.size()) / static_cast<double>(total);
  return out;
}

// Swappable trace destination: one JSONL file per (model, method, dataset) cell.
struct TraceFile {
  std::shared_ptr<std::ofstream> out;
};

std::optional<GateTrace> read_gate_trace(const std::string& path, double theta, const std::string& caption) {
  if (!fs::exists(path)) return std::nullopt;
  GateTrace t;
  t.theta = theta;
  std::string first_id;
  std::map<int64_t, json> by_step;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("id") || !j.contains("step")) continue;
    const std::string id = j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump();
    if (first_id.empty()) first_id = id;
    if (id != first_id) continue;
    by_step[j["step"].get<int64_t>()] = j;
  }
  if (by_step.empty()) return std::nullopt;
  for (const auto& [step, j] : by_step) {
    t.tv.push_back(j.value("tv", 0.0));
    t.potential.push_back(j.value("potential", 0.0));
    t.spike.push_back(j.value("spike", false));
  }
  t.caption = caption + " #" + first_id;
  return t;
}

// Sharded evaluation (src/dist): the directory where rank r appends its generations, reference-NLL rows
// and gate traces before rank 0 merges them into the run's usual files.
std::string shard_dir(const std::string& run_path, int rank) {
  return run_path + "/shards/rank-" + std::to_string(rank);
}

// Appends to `main_path` the rows of the cell (model, method, dataset) that the ranks wrote to their
// shard files (`file` in each shard directory) and main_path lacks, in the order of `ids` (the
// dataset's order, as one process writes them). Returns the rows appended.
std::vector<json> merge_shard_rows(const std::string& run_path, int world, const std::string& file,
                                   const std::string& main_path, const std::string& model, const std::string& method,
                                   const std::string& dataset, const std::vector<std::string>& ids) {
  auto in_cell = [&](const json& j) {
    return j.value("model", "") == model && j.value("method", "") == method && j.value("dataset", "") == dataset &&
           j.contains("id") && j["id"].is_string();
  };
  std::set<std::string> have;
  for (const auto& j : read_jsonl(main_path, /*missing_ok=*/true).rows)
    if (in_cell(j)) have.insert(j["id"].get<std::string>());
  std::map<std::string, json> from_shards;
  for (int r = 0; r < world; ++r)
    for (auto& j : read_jsonl(shard_dir(run_path, r) + "/" + file, /*missing_ok=*/true).rows) {
      if (!in_cell(j)) continue;
      const std::string id = j["id"].get<std::string>();
      if (!have.count(id)) from_shards[id] = std::move(j);
    }
  std::vector<json> out;
  for (const auto& id : ids) {
    auto it = from_shards.find(id);
    if (it == from_shards.end()) continue;
    append_jsonl(main_path, it->second);
    out.push_back(std::move(it->second));
  }
  return out;
}

// Why a prompt of `prompt_tokens` tokens cannot be generated with `max_new` new tokens in a context
// of `context` positions, or "" when it fits (context <= 0: unknown, no limit).
std::string context_skip_reason(size_t prompt_tokens, int64_t max_new, int64_t context) {
  const int64_t n = static_cast<int64_t>(prompt_tokens);
  if (context <= 0 || n + max_new <= context) return "";
  if (n > context)
    return "prompt is " + std::to_string(n) + " tokens, over the model's context " + std::to_string(context);
  return "prompt is " + std::to_string(n) + " tokens and max_new_tokens is " + std::to_string(max_new) + ": " +
         std::to_string(n + max_new) + " positions, over the model's context " + std::to_string(context);
}

// The prompts of `prompts` that the method cannot prefill alone because they (with what the method
// adds: a system prompt, soft-prompt vectors, an expert's own template) overflow the context, as
// index -> the prefill's reason. Only called after a batch overflowed, so it is off the usual path.
std::map<size_t, std::string> overflowing_prompts(MethodFactory& factory, const std::vector<StrategyPrompt>& prompts,
                                                  int64_t extra_slots) {
  std::map<size_t, std::string> out;
  for (size_t i = 0; i < prompts.size(); ++i) {
    try {
      torch::InferenceMode guard;
      auto strategy = factory.make();
      strategy->start({prompts[i]}, extra_slots);
    } catch (const ContextOverflow& e) {
      out[i] = e.what();
    }
  }
  return out;
}

// The skipped prompts of one cell, in dataset order, as (id, reason).
std::vector<std::pair<std::string, std::string>> skipped_in_cell(const std::vector<GenerationRow>& rows,
                                                                 const std::string& model,
                                                                 const std::string& method, const Dataset& ds) {
  std::map<std::string, std::string> reason;
  for (const auto& g : rows)
    if (g.skipped && g.model == model && g.method == method && g.dataset == ds.spec.name) reason[g.id] = *g.skipped;
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& ex : ds.examples) {
    auto it = reason.find(ex.id);
    if (it != reason.end()) out.emplace_back(ex.id, it->second);
  }
  return out;
}

}  // namespace

std::string format_results_table(const std::vector<ResultRow>& rows) {
  size_t wm = 5, wd = 7, wmod = 5;
  for (const auto& r : rows) {
    wm = std::max(wm, r.method.size());
    wd = std::max(wd, r.dataset.size());
    wmod = std::max(wmod, r.model.size());
  }
  std::ostringstream o;
  char buf[512];
  std::snprintf(buf, sizeof buf, "%-*s  %-*s  %-*s  %5s  %8s  %15s  %6s  %7s  %8s  %9s\n", static_cast<int>(wmod),
                "model", static_cast<int>(wm), "method", static_cast<int>(wd), "dataset", "n", "refusal", "95% CI",
                "ASR", "ref_nll", "new_tok", "dec_tok/s");
  o << buf;
  for (const auto& r : rows) {
    const auto& m = r.metrics;
    const std::string ci = m.n == 0 ? "all skipped" : "[" + fmt_rate(m.refusal_ci95.lo) + "," + fmt_rate(m.refusal_ci95.hi) + "]";
    const std::string asr = m.asr ? fmt_rate(*m.asr) : "-";
    char nll[32] = "-", rate[32] = "-";
    if (m.ref_nll) std::snprintf(nll, sizeof nll, "%.3f", *m.ref_nll);
    if (m.decode_tok_s) std::snprintf(rate, sizeof rate, "%.1f", *m.decode_tok_s);
    std::snprintf(buf, sizeof buf, "%-*s  %-*s  %-*s  %5zu  %8s  %15s  %6s  %7s  %8.1f  %9s\n",
                  static_cast<int>(wmod), r.model.c_str(), static_cast<int>(wm), r.method.c_str(),
                  static_cast<int>(wd), r.dataset.c_str(), m.n, m.n == 0 ? "-" : fmt_rate(m.refusal_rate).c_str(), ci.c_str(),
                  asr.c_str(), nll, m.mean_new_tokens, rate);
    o << buf;
  }
  for (const auto& r : rows)
    if (r.metrics.n_skipped > 0)
      o << "skipped: " << r.model << " / " << r.method << " / " << r.dataset << ": " << r.metrics.n_skipped
        << " prompt(s) longer than the model's context, left out of every figure (results.jsonl 'skipped')\n";
  return o.str();
}

namespace {

// Methods whose speed is measured against plain decoding: every column that is not plain itself.
std::vector<size_t> speed_methods(const EvalConfig& config) {
  std::vector<size_t> out;
  if (!config.speed.enabled) return out;
  for (size_t i = 0; i < config.methods.size(); ++i)
    if (config.methods[i].name != "plain") out.push_back(i);
  return out;
}

bool speed_pending(const EvalConfig& config, const std::string& model, const std::string& path) {
  for (size_t me : speed_methods(config))
    if (static_cast<int64_t>(finished_speed_pairs(path, model, config.methods[me].label).size()) < config.speed.pairs)
      return true;
  return false;
}

// The paired speed measurement of one model (eval/paired_speed.h): for every non-plain method,
// the pairs not yet in speed.jsonl, each a plain batch and a method batch on the same prompts with
// the same forced length, in alternating order; one row per finished pair.
void run_paired_speed(const EvalConfig& config, const ModelBundle& bundle, const EvalModelSpec& model_spec,
                      const Dataset& ds, const std::string& path, std::ostream& log) {
  const EvalSpeedSettings& sp = config.speed;
  const int64_t context = bundle.model->config().context_length;
  std::vector<StrategyPrompt> prompts;  // the first prompts of the dataset that fit with new_tokens
  for (const auto& ex : ds.examples) {
    if (static_cast<int64_t>(prompts.size()) >= sp.prompts) break;
    StrategyPrompt p = bundle.make_prompt(ex.id, ex.prompt,
                                          ex.system.empty() ? std::nullopt : std::optional<std::string>(ex.system));
    if (!context_skip_reason(p.ids.size(), sp.new_tokens, context).empty()) continue;
    prompts.push_back(std::move(p));
  }
  if (prompts.empty()) {
    log << "[eval] speed: no prompt of " << ds.spec.name << " fits the context with " << sp.new_tokens
        << " new tokens; no paired speed for " << model_spec.label << "\n";
    return;
  }
  const EvalMethodSpec* plain_spec = nullptr;
  for (const auto& m : config.methods)
    if (m.name == "plain" && !plain_spec) plain_spec = &m;
  MethodFactory plain(plain_spec ? plain_spec->config : load_method_config("plain"), bundle);
  const int64_t P = static_cast<int64_t>(prompts.size());
  auto time_one = [&](const MethodFactory& f, int64_t n) {
    auto s = f.make();
    return timed_generation(*s, prompts, n, config.generation.sampling);
  };
  time_one(plain, std::min<int64_t>(4, sp.new_tokens));  // warm-up: allocator, thread pool, rope tables
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t me : speed_methods(config)) {
    const EvalMethodSpec& method = config.methods[me];
    const std::vector<int64_t> done = finished_speed_pairs(path, model_spec.label, method.label);
    if (static_cast<int64_t>(done.size()) >= sp.pairs) continue;
    MethodFactory factory(method.config, bundle);
    try {
      time_one(factory, std::min<int64_t>(4, sp.new_tokens));  // warm-up (and its prefix cache)
    } catch (const ContextOverflow& e) {
      log << "[eval] speed: " << method.label << " leaves out: the method lengthens a prompt past the context ("
          << e.what() << ")\n";
      continue;
    }
    for (int64_t k = 0; k < sp.pairs; ++k) {
      if (std::find(done.begin(), done.end(), k) != done.end()) continue;
      TimedGeneration tp, tm;
      if (plain_first_in_pair(k)) {
        tp = time_one(plain, sp.new_tokens);
        tm = time_one(factory, sp.new_tokens);
      } else {
        tm = time_one(factory, sp.new_tokens);
        tp = time_one(plain, sp.new_tokens);
      }
      SpeedPair pr;
      pr.pair = k;
      pr.plain_s_per_token = tp.seconds_per_token();
      pr.method_s_per_token = tm.seconds_per_token();
      double load[1] = {-1.0};
      if (getloadavg(load, 1) != 1) load[0] = -1.0;
      append_jsonl(path, speed_row_json(model_spec.label, method.label, ds.spec.name, P, sp.new_tokens, pr,
                                        tp.seconds_per_decode_step(), tm.seconds_per_decode_step(), load[0],
                                        static_cast<int64_t>(std::thread::hardware_concurrency())));
    }
    for (const auto& s : read_paired_speed(path, sp.noisy_spread))
      if (s.model == model_spec.label && s.method == method.label)
        log << "[eval] speed: " << method.label << " ATGR (paired, method/plain time per token) " << fmt_rate(s.atgr)
            << " [IQR " << fmt_rate(s.q1) << "-" << fmt_rate(s.q3) << "] over " << s.pairs << " pairs"
            << (s.noisy ? " NOISY" : "") << "\n";
  }
  log << "[eval] speed: " << model_spec.label << " measured in "
      << fmt_rate(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()) << " s (" << P
      << " prompts of " << ds.spec.name << ", " << sp.new_tokens << " forced tokens, " << sp.pairs << " pairs)\n";
}

}  // namespace

EvalRunSummary run_eval(EvalConfig config, const EvalRunOptions& options) {
  // Launched as several ranks (torchrun): each generates its share of every cell's prompts into its
  // shard files; rank 0 alone writes the run directory (merging the shards cell by cell), the manifest,
  // results and report. The other ranks log nothing.
  std::shared_ptr<DistGroup> group = dist_group();
  if (group && group->world_size() < 2) group = nullptr;
  const bool main_rank = !group || group->is_main();
  const int world = group ? group->world_size() : 1, rank = group ? group->rank() : 0;
  static std::ostream null_log(nullptr);
  std::ostream& log = !main_rank ? null_log : options.log ? *options.log : std::cerr;
  SAFEDEC_CHECK(!options.out_dir.empty(), "eval: --out DIR is required");
  if (options.limit > 0) {
    config.limit = options.limit;
    config.dataset_limits.clear();
  }
  if (options.threads > 0) torch::set_num_threads(options.threads);

  // Datasets first: a missing or malformed file fails before any model is loaded.
  const DatasetRegistry registry = DatasetRegistry::builtin();
  std::vector<Dataset> datasets;
  for (const auto& name : config.datasets) {
    const DatasetSpec& spec = registry.get(name);
    check_dataset_use(spec, DatasetUse::Evaluate);
    DatasetLoadOptions lo;
    lo.limit = config.limit_for(name);
    lo.seed = config.seed;
    datasets.push_back(load_dataset(spec, lo));
    SAFEDEC_CHECK(!datasets.back().examples.empty(), "dataset '", name, "' has no rows after filtering (files: ",
                  datasets.back().files.empty() ? std::string("none") : datasets.back().files.front(), ")");
  }
  const auto judge = make_judge(config.judge, config.options_for(config.judge));
  check_further_judges(config);  // judges[1..] run after generation (eval/rejudge.h); checked now
  std::vector<std::vector<std::string>> artifacts_of;  // checked now: a missing ICV fails before any cell runs
  for (const auto& m : config.methods) artifacts_of.push_back(method_artifacts(m));
  if (group) {
    // Hash exchange: every rank must run the same resolved config into the same directory.
    const std::string what = canonical_yaml(config.resolved()) + "\nout: " + options.out_dir +
                             "\nresume: " + std::to_string(options.resume) + " force: " + std::to_string(options.force) +
                             " report_only: " + std::to_string(options.report_only);
    group->check_same("the resolved eval config, --out and flags (sha256)", sha256_hex(what));
    const size_t B = static_cast<size_t>(config.generation.batch_size);
    for (const auto& d : datasets) {
      const size_t batches = (d.examples.size() + B - 1) / B;
      SAFEDEC_CHECK(batches >= static_cast<size_t>(world), "eval: dataset '", d.spec.name, "' has ",
                    d.examples.size(), " prompt(s), ", batches, " batch(es) of generation.batch_size ", B,
                    ", but WORLD_SIZE is ", world, ": ranks take whole batches and each needs at least one; launch at "
                    "most ", batches, " ranks, lower the batch size or raise the limit");
    }
  }

  // Cells in a stable order: model, then method, then dataset, as listed in the config.
  std::vector<Cell> cells;
  for (size_t mo = 0; mo < config.models.size(); ++mo)
    for (size_t me = 0; me < config.methods.size(); ++me)
      for (size_t d = 0; d < datasets.size(); ++d) cells.push_back({mo, me, d});

  if (options.report_only)
    SAFEDEC_CHECK(fs::exists(options.out_dir + "/config.resolved.yaml"), "eval --report-only: ", options.out_dir,
                  " holds no run (no config.resolved.yaml)");
  RunDirOptions ro;
  ro.resume = options.resume || options.report_only;
  ro.force = options.force;
  // Rank 0 opens (and on --force clears) the directory; the others wait for its verdict.
  std::optional<RunDirectory> run_opened;
  std::string open_error;
  if (main_rank) {
    try {
      run_opened = RunDirectory::open(options.out_dir, config.resolved(), ro);
      if (group && !run_opened->resumed()) fs::remove_all(run_opened->path() + "/shards");  // a fresh run's
    } catch (const Error& e) {
      if (!group) throw;
      open_error = e.what();
    }
  }
  if (group) {
    const auto verdicts = group->all_gather(main_rank ? (open_error.empty() ? "ok" : "failed") : "");
    if (!open_error.empty()) throw Error(open_error);
    SAFEDEC_CHECK(verdicts[0] == "ok", "eval: rank 0 could not open the run directory ", options.out_dir,
                  " (its error says why)");
    if (options.report_only && !main_rank) return EvalRunSummary{};  // rank 0 writes the report
  }
  const std::string run_path = run_opened ? run_opened->path() : fs::path(options.out_dir).lexically_normal().string();
  const std::string results_path = run_path + "/results.jsonl", generations_path = run_path + "/generations.jsonl";
  const std::string my_shard = group ? shard_dir(run_path, rank) : std::string();
  if (group) fs::create_directories(my_shard);
  // Where this process appends generations and reference-NLL rows: the run's files, or its shard's.
  const std::string gen_out = group ? my_shard + "/generations.jsonl" : generations_path;
  const std::string nll_out = group ? my_shard + "/ref_nll.jsonl" : run_path + "/ref_nll.jsonl";
  const bool resumed = run_opened ? run_opened->resumed() : options.resume;
  if (resumed && !options.report_only) {  // report-only may read a run still being written
    std::string diag;
    if (main_rank)
      for (const auto& p : {results_path, generations_path, run_path + "/ref_nll.jsonl", run_path + "/speed.jsonl"})
        if (repair_torn_tail(p, &diag)) log << "[eval] resume: " << diag << "\n";
    if (group)
      for (const auto& p : {gen_out, nll_out}) repair_torn_tail(p, &diag);
  }
  if (group) group->barrier("eval: run directory ready");

  // Manifest: versions, seeds, hashes of models, datasets and method artifacts.
  if (main_rank && !options.report_only) {
    RunDirectory& run = *run_opened;
    ManifestInputs mi;
    mi.seeds["sample"] = config.seed;
    mi.seeds["sampling"] = config.generation.sampling.seed;
    for (const auto& m : config.models) {
      add_files(resolve_model(m.name).path, mi.model_files);
      add_files(m.hdr, mi.model_files);
    }
    for (const auto& d : datasets) mi.dataset_files.insert(mi.dataset_files.end(), d.files.begin(), d.files.end());
    json artifacts = json::array();
    for (size_t i = 0; i < config.methods.size(); ++i)
      for (const auto& f : artifacts_of[i])
        artifacts.push_back(
            {{"method", config.methods[i].label}, {"path", fs::absolute(f).string()}, {"sha256", sha256_file(f)}});
    mi.extra["artifacts"] = artifacts;
    const std::string keywords =
        config.judge_options.keywords_path.empty() ? default_keyword_list_path() : config.judge_options.keywords_path;
    if (fs::exists(keywords))
      mi.extra["judge_keywords"] = {{"path", fs::absolute(keywords).string()}, {"sha256", sha256_file(keywords)}};
    mi.extra["torch_version"] = TORCH_VERSION;
    mi.extra["threads"] = torch::get_num_threads();
    mi.extra["command"] = options.command;
    mi.extra["config_source"] = config.source;
    mi.extra["resumed"] = run.resumed();
    mi.extra["world_size"] = world;
    run.write_manifest(mi);
  }

  std::set<std::string> done_cells;
  for (const auto& r : read_results(results_path)) done_cells.insert(cell_key(r.model, r.method, r.dataset));
  std::vector<GenerationRow> generations = read_generations(generations_path);
  if (group)  // this rank's rows not merged yet (an interrupted sharded run)
    for (auto& g : read_generations(gen_out)) generations.push_back(std::move(g));

  EvalRunSummary summary;
  summary.cells_total = cells.size();
  const std::string ref_path = run_path + "/ref_nll.jsonl";
  const std::string speed_path = run_path + "/speed.jsonl";
  const std::string trace_dir = main_rank ? run_path + "/traces" : my_shard + "/traces";

  size_t cell_index = 0;
  for (size_t mo = 0; mo < config.models.size(); ++mo) {
    const EvalModelSpec& model_spec = config.models[mo];
    auto cell_done = [&](size_t me, size_t d) {
      return done_cells.count(cell_key(model_spec.label, config.methods[me].label, datasets[d].spec.name)) > 0;
    };
    bool model_needed = false;
    for (size_t me = 0; me < config.methods.size(); ++me)
      for (size_t d = 0; d < datasets.size(); ++d) model_needed = model_needed || !cell_done(me, d);
    const bool speed_todo =
        main_rank && !options.report_only && speed_pending(config, model_spec.label, speed_path);
    model_needed = model_needed || speed_todo;
    if (!model_needed || options.report_only) {
      // --report-only counts the finished cells only (a partial run's report says how partial it is).
      for (size_t me = 0; me < config.methods.size(); ++me)
        for (size_t d = 0; d < datasets.size(); ++d) summary.cells_skipped += cell_done(me, d) ? 1 : 0;
      cell_index += config.methods.size() * datasets.size();
      continue;
    }
    log << "[eval] loading model " << model_spec.label << "\n";
    LoadOptions load_options;
    if (model_spec.weights == "fp32") load_options.weights = LoadOptions::Weights::Fp32;
    if (model_spec.weights == "quantized") load_options.weights = LoadOptions::Weights::Quantized;
    ModelBundle bundle = load_model_bundle(model_spec.name, load_options, model_spec.chat_template);
    if (!model_spec.hdr.empty()) {
      const int64_t n = apply_harm_vector(*bundle.model, model_spec.hdr, model_spec.hdr_lambda);
      log << "[eval] HDR: subtracted " << model_spec.hdr_lambda << " x " << model_spec.hdr << " from " << n
          << " tensors\n";
    }
    for (size_t me = 0; me < config.methods.size(); ++me) {
      const EvalMethodSpec& method = config.methods[me];
      bool method_needed = false;
      for (size_t d = 0; d < datasets.size(); ++d) method_needed = method_needed || !cell_done(me, d);
      if (!method_needed) {
        summary.cells_skipped += datasets.size();
        cell_index += datasets.size();
        continue;
      }
      auto trace = std::make_shared<TraceFile>();
      TraceSink sink;
      if (method_descriptor(method.name).gate_trace)
        sink = [trace](const json& j) {
          if (trace->out) *trace->out << j.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
        };
      MethodFactory factory(method.config, bundle, sink);
      log << "[eval] method " << method.label << ": " << factory.describe() << "\n";

      for (size_t d = 0; d < datasets.size(); ++d, ++cell_index) {
        const Dataset& ds = datasets[d];
        const std::string& dname = ds.spec.name;
        if (cell_done(me, d)) {
          ++summary.cells_skipped;
          continue;
        }
        const std::set<std::string> have = completed_ids(generations, model_spec.label, method.label, dname);
        // This rank's contiguous share of the dataset's prompts (all of them in one process), in whole
        // batches: every batch holds the prompts one process would batch together, so the outputs and
        // scores are the same bit for bit.
        const int64_t n_examples = static_cast<int64_t>(ds.examples.size());
        const int64_t batch_n = config.generation.batch_size;
        const auto [batch_lo, batch_hi] = shard_range((n_examples + batch_n - 1) / batch_n, rank, world);
        const int64_t shard_lo = std::min(n_examples, batch_lo * batch_n);
        const int64_t shard_hi = std::min(n_examples, batch_hi * batch_n);
        std::vector<const Example*> todo;
        size_t have_in_shard = 0;
        for (int64_t i = shard_lo; i < shard_hi; ++i) {
          const Example& ex = ds.examples[static_cast<size_t>(i)];
          if (!have.count(ex.id)) todo.push_back(&ex);
          else ++have_in_shard;
        }
        if (sink) {
          fs::create_directories(trace_dir);
          trace->out = std::make_shared<std::ofstream>(
              trace_dir + "/" + model_spec.label + "__" + method.label + "__" + dname + ".jsonl", std::ios::app);
        }
        const std::string label = "[" + std::to_string(cell_index + 1) + "/" + std::to_string(cells.size()) + "] " +
                                  method.label + " x " + dname;
        const bool want_nll = config.ref_nll.enabled && !ds.spec.reference_field.empty();
        const size_t shard_n = static_cast<size_t>(shard_hi - shard_lo);
        ProgressOptions popt;
        if (!main_rank) popt.out = &null_log;
        ProgressBar bar(label + (group ? " (rank 0 of " + std::to_string(world) + ")" : ""),
                        shard_n * (want_nll ? 2 : 1), popt);
        bar.skip(have_in_shard, have_in_shard == 0 ? "" : "resumed");

        GenerationOptions gopt = bundle.generation_options();
        gopt.max_new_tokens = config.generation.max_new_tokens;
        gopt.sampling = config.generation.sampling;
        Generator gen(gopt);
        const size_t B = static_cast<size_t>(config.generation.batch_size);
        const int64_t context = bundle.model->config().context_length;
        size_t done_in_cell = have_in_shard;
        // A prompt that does not fit the context is not generated: its row records why (no prompt text),
        // counts as done for --resume and is left out of every metric.
        auto skip = [&](const Example& ex, const std::string& reason) {
          GenerationRow g;
          g.id = ex.id;
          g.model = model_spec.label;
          g.method = method.label;
          g.dataset = dname;
          g.finish_reason = "skipped";
          g.skipped = reason;
          append_jsonl(gen_out, to_json(g));
          generations.push_back(std::move(g));
          log << "[eval] " << method.label << " x " << dname << ": skipped prompt " << ex.id << " (" << reason
              << ")\n";
        };
        for (size_t first = 0; first < todo.size(); first += B) {
          const size_t last = std::min(todo.size(), first + B);
          std::vector<StrategyPrompt> prompts;
          std::vector<const Example*> batch;  // the examples of `prompts`
          for (size_t i = first; i < last; ++i) {
            const Example& ex = *todo[i];
            StrategyPrompt p = bundle.make_prompt(
                ex.id, ex.prompt, ex.system.empty() ? std::nullopt : std::optional<std::string>(ex.system));
            const std::string reason = context_skip_reason(p.ids.size(), gopt.max_new_tokens, context);
            if (!reason.empty()) {
              skip(ex, reason);
              continue;
            }
            prompts.push_back(std::move(p));
            batch.push_back(&ex);
          }
          std::vector<GenerationResult> results;
          GenerationStats stats;
          if (!prompts.empty()) {
            try {
              torch::InferenceMode guard;
              auto strategy = factory.make();
              results = gen.run(*strategy, prompts, &stats);
            } catch (const ContextOverflow&) {
              // The method made some prompt longer than the context: find which, skip them, run the rest.
              const auto over = overflowing_prompts(factory, prompts, gopt.max_new_tokens);
              if (over.empty()) throw;
              std::vector<StrategyPrompt> kept;
              std::vector<const Example*> kept_batch;
              for (size_t i = 0; i < prompts.size(); ++i) {
                auto it = over.find(i);
                if (it != over.end()) {
                  skip(*batch[i], it->second);
                } else {
                  kept.push_back(std::move(prompts[i]));
                  kept_batch.push_back(batch[i]);
                }
              }
              prompts = std::move(kept);
              batch = std::move(kept_batch);
              stats = GenerationStats{};
              if (!prompts.empty()) {
                torch::InferenceMode guard;
                auto strategy = factory.make();
                results = gen.run(*strategy, prompts, &stats);
              }
            }
          }
          const auto secs = share_seconds(results, stats.decode_seconds);
          std::vector<std::pair<std::string, std::string>> judged;  // one batched call (model-based judges)
          for (size_t i = 0; i < results.size(); ++i) judged.emplace_back(batch[i]->prompt, results[i].text);
          const std::vector<Verdict> verdicts =
              judged.empty() ? std::vector<Verdict>{} : judge->judge_batch(judged);
          for (size_t i = 0; i < results.size(); ++i) {
            const Example& ex = *batch[i];
            const Verdict& v = verdicts[i];
            GenerationRow g;
            g.id = ex.id;
            g.model = model_spec.label;
            g.method = method.label;
            g.dataset = dname;
            g.output = results[i].text;
            g.finish_reason = results[i].finish_reason;
            g.new_tokens = results[i].tokens.size();
            g.decode_seconds = secs[i];
            g.refused = v.refused;
            g.judge_reason = v.reason;
            append_jsonl(gen_out, to_json(g));
            generations.push_back(std::move(g));
          }
          done_in_cell += last - first;
          const double rate = stats.decode_seconds > 0 ? stats.new_tokens / stats.decode_seconds : 0.0;
          char note[48];
          std::snprintf(note, sizeof note, "%.1f tok/s", rate);
          bar.tick(last - first, note);
          if (options.after_batch) options.after_batch(cell_index, done_in_cell);
        }

        // Reference NLL rows already written (the run's file; in a sharded run also this rank's shard file).
        std::map<std::string, RefNll> scored;
        if (want_nll) {
          std::vector<json> rows = read_jsonl(ref_path, /*missing_ok=*/true).rows;
          if (group)
            for (auto& j : read_jsonl(nll_out, /*missing_ok=*/true).rows) rows.push_back(std::move(j));
          for (const auto& j : rows) {
            if (j.value("model", "") != model_spec.label || j.value("method", "") != method.label ||
                j.value("dataset", "") != dname)
              continue;
            RefNll r;
            r.nll_sum = j.at("nll_sum").get<double>();
            r.tokens = j.at("tokens").get<int64_t>();
            r.floored = j.value("floored", int64_t{0});
            scored[j.at("id").get<std::string>()] = r;
          }
          std::set<std::string> skipped_ids;  // prompts over the context: no generation, no NLL either
          for (const auto& g : generations)
            if (g.skipped && g.model == model_spec.label && g.method == method.label && g.dataset == dname)
              skipped_ids.insert(g.id);
          std::vector<const Example*> nll_todo;
          for (int64_t i = shard_lo; i < shard_hi; ++i) {
            const Example& ex = ds.examples[static_cast<size_t>(i)];
            if (!scored.count(ex.id) && !skipped_ids.count(ex.id) && ex.reference && !ex.reference->empty())
              nll_todo.push_back(&ex);
          }
          size_t nll_unscored = 0;  // prompt + reference do not fit the context even with the method's additions
          bar.skip(shard_n - nll_todo.size());  // already scored, or no reference
          for (size_t first = 0; first < nll_todo.size(); first += B) {
            const size_t last = std::min(nll_todo.size(), first + B);
            std::vector<StrategyPrompt> prompts;
            std::vector<std::vector<int32_t>> refs;
            std::vector<const Example*> batch;
            for (size_t i = first; i < last; ++i) {
              const Example& ex = *nll_todo[i];
              std::vector<int32_t> ids = bundle.tokenizer->encode(*ex.reference, /*add_special=*/false);
              if (ids.empty()) continue;
              if (static_cast<int64_t>(ids.size()) > config.ref_nll.max_tokens)
                ids.resize(static_cast<size_t>(config.ref_nll.max_tokens));
              StrategyPrompt p = bundle.make_prompt(
                  ex.id, ex.prompt, ex.system.empty() ? std::nullopt : std::optional<std::string>(ex.system));
              if (context > 0 && static_cast<int64_t>(p.ids.size() + ids.size()) > context) {
                ++nll_unscored;  // the reference does not fit after the prompt
                continue;
              }
              prompts.push_back(std::move(p));
              refs.push_back(std::move(ids));
              batch.push_back(&ex);
            }
            if (!prompts.empty()) {
              std::vector<RefNll> out;
              try {
                torch::InferenceMode guard;
                auto strategy = factory.make();
                out = teacher_forced_nll(*strategy, prompts, refs);
              } catch (const ContextOverflow&) {
                // The method lengthens some prompt past the context: score the rows one by one, leaving
                // out those that overflow alone.
                std::vector<const Example*> kept;
                for (size_t i = 0; i < prompts.size(); ++i) {
                  try {
                    torch::InferenceMode guard;
                    auto strategy = factory.make();
                    out.push_back(teacher_forced_nll(*strategy, {prompts[i]}, {refs[i]}).at(0));
                    kept.push_back(batch[i]);
                  } catch (const ContextOverflow&) {
                    ++nll_unscored;
                  }
                }
                batch = std::move(kept);
              }
              for (size_t i = 0; i < out.size(); ++i) {
                append_jsonl(nll_out, json{{"id", batch[i]->id},
                                            {"model", model_spec.label},
                                            {"method", method.label},
                                            {"dataset", dname},
                                            {"nll_sum", out[i].nll_sum},
                                            {"tokens", out[i].tokens},
                                            {"floored", out[i].floored}});
                scored[batch[i]->id] = out[i];
              }
            }
            bar.tick(last - first, "ref NLL");
          }
          if (nll_unscored > 0)
            log << "[eval] " << method.label << " x " << dname << ": " << nll_unscored
                << " reference answer(s) do not fit the model's context after their prompt and were not scored\n";
        }
        bar.finish();
        if (trace->out) trace->out.reset();
        if (group) {
          // Every rank has written its share of the cell; rank 0 merges the shards in dataset order.
          group->barrier("eval: end of cell " + method.label + " x " + dname);
          if (!main_rank) continue;
          std::vector<std::string> ids;
          for (const auto& ex : ds.examples) ids.push_back(ex.id);
          for (const auto& j : merge_shard_rows(run_path, world, "generations.jsonl", generations_path,
                                                model_spec.label, method.label, dname, ids))
            generations.push_back(generation_row_from_json(j, generations_path));
          if (want_nll) {
            for (const auto& j : merge_shard_rows(run_path, world, "ref_nll.jsonl", ref_path, model_spec.label,
                                                  method.label, dname, ids)) {
              RefNll r;
              r.nll_sum = j.at("nll_sum").get<double>();
              r.tokens = j.at("tokens").get<int64_t>();
              r.floored = j.value("floored", int64_t{0});
              scored[j.at("id").get<std::string>()] = r;
            }
          }
        }
        // Metrics from every generation of the cell (in a sharded run, rank 0 after the merge).
        std::vector<GenerationRow> cell_rows;
        if (group) {
          cell_rows = read_generations(generations_path);
        }
        MetricsAccumulator acc =
            accumulate_generations(group ? cell_rows : generations, model_spec.label, method.label, dname,
                                   ds.spec.harmful, ds.spec.over_refusal_probe);
        if (want_nll) {
          int64_t floored = 0;
          for (const auto& ex : ds.examples) {
            auto it = scored.find(ex.id);
            if (it == scored.end()) continue;
            acc.add_reference_nll(it->second.nll_sum, static_cast<size_t>(it->second.tokens));
            floored += it->second.floored;
          }
          if (floored > 0)
            log << "[eval] " << method.label << " x " << dname << ": " << floored
                << " reference tokens had probability < 1e-9 under the method and were scored at -log(1e-9)\n";
        }
        SAFEDEC_CHECK(acc.count() + acc.skipped() == ds.examples.size(), "internal: cell ", method.label, " x ",
                      dname, " has ", acc.count(), " generations and ", acc.skipped(), " skipped prompts for ",
                      ds.examples.size(), " examples");
        ResultRow row;
        row.model = model_spec.label;
        row.method = method.label;
        row.dataset = dname;
        row.judge = judge->name();
        row.metrics = acc.summary();
        row.skipped = skipped_in_cell(group ? cell_rows : generations, model_spec.label, method.label, ds);
        append_jsonl(results_path, to_json(row));
        done_cells.insert(cell_key(row.model, row.method, row.dataset));
        if (row.metrics.n == 0)
          log << "[eval] " << label << ": all " << row.metrics.n_skipped
              << " prompts skipped (longer than the model's context); no rate\n";
        else
          log << "[eval] " << label << ": n " << row.metrics.n << ", refusal " << fmt_rate(row.metrics.refusal_rate)
              << (row.metrics.n_skipped ? ", " + std::to_string(row.metrics.n_skipped) + " skipped" : std::string())
              << (row.metrics.ref_nll ? ", ref NLL " + fmt_rate(*row.metrics.ref_nll) : std::string()) << "\n";
      }
    }
    // Paired speed against plain (config `speed`), on rank 0 only, after the model's cells.
    if (speed_todo) run_paired_speed(config, bundle, model_spec, datasets.front(), speed_path, log);
  }

  if (group) {
    // A rank that stopped makes this fail (instead of hang) on every other rank.
    group->barrier("eval: end of run");
    if (!main_rank) return summary;  // rank 0 writes the report
    fs::remove_all(run_path + "/shards");  // every row is merged
  }
  RunDirectory& run = *run_opened;
  // Results in cell order (the file holds them in completion order, possibly over several runs).
  std::map<std::string, ResultRow> by_key;
  for (const auto& r : read_results(results_path)) by_key[cell_key(r.model, r.method, r.dataset)] = r;
  for (const auto& c : cells) {
    auto it = by_key.find(cell_key(config.models[c.model].label, config.methods[c.method].label,
                                   datasets[c.dataset].spec.name));
    if (it == by_key.end()) {
      SAFEDEC_CHECK(options.report_only, "internal: no result for a finished cell");
      continue;  // --report-only on an unfinished run: the finished cells only
    }
    summary.rows.push_back(it->second);
  }

  ReportInputs ri;
  if (fs::exists(run_path + "/speed.jsonl")) {
    ri.paired_speed = read_paired_speed(run_path + "/speed.jsonl", config.speed.noisy_spread);
    ri.speed_note = "each method against plain decoding in " + std::to_string(config.speed.pairs) +
                    " interleaved pairs of timed batches (order alternating per pair) on the first prompts of `" +
                    datasets.front().spec.name + "` (up to " + std::to_string(config.speed.prompts) +
                    ", as many as the run's sample holds) with forced new tokens per row (EOS ignored); " +
                    "noisy when the interquartile range of the pair ratios exceeds " +
                    fmt_rate(config.speed.noisy_spread) + " x the median";
  }
  ri.judges_section = run_further_judges(config, run.path(), !options.report_only, log);
  ri.title = "safedec evaluation: " + config.name;
  ri.rows = summary.rows;
  // Parameter sweeps: method entries with a one-key numeric grid, per model.
  for (const auto& m : config.models) {
    std::map<std::string, std::vector<const EvalMethodSpec*>> groups;
    for (const auto& me : config.methods)
      if (me.grid.size() == 1) groups[me.group].push_back(&me);
    for (const auto& [group, members] : groups) {
      if (members.size() < 2) continue;
      std::vector<SweepPoint> pts;
      bool numeric = true;
      for (const auto* me : members) {
        char* end = nullptr;
        const double v = std::strtod(me->grid[0].second.c_str(), &end);
        if (end == me->grid[0].second.c_str()) numeric = false;
        pts.push_back(sweep_point(summary.rows, m.label, me->label, v, "xstest_safe"));
      }
      if (!numeric) continue;
      const std::string name = group + " " + members[0]->grid[0].first + (config.models.size() > 1 ? " " + m.label : "");
      ri.sweeps.emplace_back(name, pts);
    }
  }
  // Gate activity along one response of the first NGSD method on the first harmful dataset.
  for (const auto& me : config.methods) {
    if (!method_descriptor(me.name).gate_trace || ri.gate_trace) continue;
    for (const auto& d : datasets) {
      if (!d.spec.harmful) continue;
      ri.gate_trace = read_gate_trace(
          trace_dir + "/" + config.models[0].label + "__" + me.label + "__" + d.spec.name + ".jsonl",
          me.config.ngsd.theta, config.models[0].label + ", " + me.label + ", " + d.spec.name);
      if (ri.gate_trace) break;
    }
  }
  std::ostringstream info;
  info << "Command: `" << options.command << "`\n\nConfig: `" << config.source << "` (resolved copy: "
       << "`config.resolved.yaml`; versions, seeds and SHA-256 of models, datasets and artifacts: "
       << "`manifest.json`). Per-dataset limit: " << (config.limit == 0 ? std::string("all rows") : std::to_string(config.limit))
       << limit_overrides(config)
       << " (seeded sample, seed " << config.seed << "). Generation: greedy=" << (config.generation.sampling.greedy() ? "yes" : "no")
       << ", max_new_tokens " << config.generation.max_new_tokens << ", batch " << config.generation.batch_size
       << ". Reference NLL: reference answers truncated to " << config.ref_nll.max_tokens
       << " tokens; tokens a method makes impossible are scored at -log(1e-9).";
  if (summary.rows.size() < cells.size())
    info << "\n\n**Partial run:** " << summary.rows.size() << " of " << cells.size()
         << " cells are finished; the others are missing from the table (continue with `--resume`).";
  ri.run_info = info.str();
  if (config.models.size() > 1)  // scale plots: each model's parameter count (GGUF header / HF config)
    for (const auto& m : config.models) {
      try {
        ri.model_parameters[m.label] = model_parameter_count(m.name);
      } catch (const Error& e) {
        log << "[eval] scale plots leave out " << m.label << ": its size is unknown (" << e.what() << ")\n";
      }
    }
  write_report(run.path(), ri);
  summary.report_path = run.report_path();
  return summary;
}

}  // namespace safedec
