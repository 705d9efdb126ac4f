// The `harm_vector` training pipeline (see harm_vector_pipeline.h; methods.md 3a).
//
// Memory of the full fine-tune: the target bundle's fp32 weights are trained in place (theta_H), so
// training holds weights + gradients + two AdamW moments, as any full fine-tune. After the trainer is
// gone only theta_H remains; theta_b is loaded again from the model file (the same deterministic fp32
// weights the run started from), and tau = theta_H - theta_b is computed block by block into a 1M-float
// buffer for each selection pass. The pruned tau'_H is finally written over theta_H's own storage,
// tensor by tensor, so the harm-vector phase peaks at about 2x the fp32 weight bytes (theta_H and
// theta_b) plus one tensor's temporaries — never two fp32 copies of tau.
#include "train/harm_vector_pipeline.h"

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <numeric>
#include <set>
#include <sstream>

#include "artifacts/harm_vector.h"
#include "artifacts/typed.h"
#include "core/error.h"
#include "core/files.h"
#include "eval/dataset.h"
#include "train/sft_data.h"

namespace safedec {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// One tensor of tau: theta_H - theta_b (full fine-tune: `a` = theta_H, `b` = theta_b) or a LoRA delta
// (`a` = scale * B A, no `b`). `ref` is theta_b's tensor (the denominator of the relative change).
struct TauPart {
  std::string name;
  int64_t layer = -1;
  torch::Tensor a, b;
  bool diff = false;
};

constexpr int64_t kBlock = int64_t{1} << 20;  // floats per tau block of a pass (4 MiB)

// Calls visit over the tau entries of the parts, one block at a time.
void stream_parts(const std::vector<const TauPart*>& parts, const TauVisitor& visit) {
  std::vector<float> buf;
  for (const TauPart* p : parts) {
    const float* a = p->a.data_ptr<float>();
    const int64_t n = p->a.numel();
    if (!p->diff) {
      visit(a, n);
      continue;
    }
    if (buf.empty()) buf.resize(kBlock);
    const float* b = p->b.data_ptr<float>();
    for (int64_t lo = 0; lo < n; lo += kBlock) {
      const int64_t m = std::min(kBlock, n - lo);
      for (int64_t i = 0; i < m; ++i) buf[i] = a[lo + i] - b[lo + i];  // fp32 subtraction, as theta_H - theta_b
      visit(buf.data(), m);
    }
  }
}

double sum_squares(const float* v, int64_t n) {
  double s = 0;  // fp64 accumulation: the sum of 1e8 squares loses digits in fp32
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(v[i]) * v[i];
  return s;
}

}  // namespace

int64_t process_peak_rss() { return proc_status_bytes("VmHWM"); }
int64_t process_rss() { return proc_status_bytes("VmRSS"); }
bool reset_process_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  if (!out.good()) return false;
  out << "5";
  out.flush();
  return out.good();
}

int64_t parameter_layer(const std::string& name) {
  if (name.rfind("layers.", 0) != 0) return -1;
  const size_t dot = name.find('.', 7);
  SAFEDEC_CHECK(dot != std::string::npos && dot > 7, "parameter name '", name, "' has no layer index");
  return std::stoll(name.substr(7, dot - 7));
}

std::vector<int64_t> edited_area(const std::vector<double>& relative_change, double share,
                                 const std::vector<int64_t>& explicit_layers, int64_t neighbours) {
  const int64_t L = static_cast<int64_t>(relative_change.size());
  SAFEDEC_CHECK(L > 0, "the edited-model area needs at least one decoder layer");
  std::vector<int64_t> core = explicit_layers;
  if (core.empty()) {
    SAFEDEC_CHECK(share > 0 && share <= 1, "harm.edited_share must be in (0, 1], got ", share);
    std::vector<int64_t> order(L);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t x, int64_t y) { return relative_change[x] > relative_change[y]; });
    const int64_t n = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(share * static_cast<double>(L) - 1e-9)));
    core.assign(order.begin(), order.begin() + std::min(n, L));
  }
  std::set<int64_t> area;
  for (int64_t l : core) {
    SAFEDEC_CHECK(l >= 0 && l < L, "harm.edited_layers names layer ", l, " but the model has ", L, " layers");
    for (int64_t d = -neighbours; d <= neighbours; ++d)
      if (l + d >= 0 && l + d < L) area.insert(l + d);
  }
  return {area.begin(), area.end()};
}

void HarmVectorPipeline::declare(ConfigSchema& top) {
  data_.add("triplets", triplets_,
            "deep-alignment data (a `safedec data build` output directory or its data.jsonl); its safety rows give "
            "(instruction, harmful answer) pairs")
      .required();
  data_.add("datasets", datasets_,
            "source pools whose safety rows are used, e.g. [safety_tuned, hh_harmless] (empty = all; each must be "
            "a training pool)");
  data_.add("limit", limit_, "pairs used, a seeded sample (0 = all)").range(0, 1e9);
  top.section("data", data_);
  harm_.add("mode", mode_, "full: fine-tune every weight; lora: train the `lora` adapter, tau = scale * B A")
      .one_of({"full", "lora"});
  harm_.add("fraction", fraction_, "share k of |tau| entries kept by the global top-k").range(1e-9, 1.0);
  harm_.add("lambda", lambda_, "default HDR strength recorded in the artifact (theta' = theta - lambda tau')")
      .range(0, kHdrLambdaMax);
  harm_.add("layers", layers_,
            "all: every parameter; edited: only the decoder layers that changed most (plus neighbours)")
      .one_of({"all", "edited"});
  harm_.add("edited_share", edited_share_,
            "edited: share of decoder layers with the largest relative change ||tau_l|| / ||theta_l||")
      .range(1e-9, 1.0);
  harm_.add("edited_layers", edited_layers_, "edited: these layers instead of the measured ones (e.g. a knowledge edit's)")
      .range(0, 100000);
  harm_.add("neighbours", neighbours_, "edited: layers added on each side of every edited layer").range(0, 1000);
  top.section("harm", harm_);
}

bool HarmVectorPipeline::run(HarmVectorRunEnv& env, json& metrics) {
  const auto t0 = std::chrono::steady_clock::now();
  const ModelBundle& b = *env.target;
  const ModelConfig cfg = b.model->config();
  check_hdr_lambda(lambda_, "harm_vector: harm.lambda");
  check_topk_fraction(fraction_, "harm_vector: harm.fraction");
  for (int64_t l : edited_layers_)
    SAFEDEC_CHECK(l < cfg.n_layers, "harm_vector: harm.edited_layers names layer ", l, " but ", cfg.name, " has ",
                  cfg.n_layers, " layers");
  SAFEDEC_CHECK(!b.model->quantized(), "harm_vector: the target holds quantised weights; training needs fp32");

  // ---- 1. (question, harmful answer) pairs from the training pools ----
  std::string path = resolve_artifact_path(triplets_);
  if (fs::is_directory(path)) path += "/data.jsonl";
  SAFEDEC_CHECK(fs::is_regular_file(path), "harm_vector: the triplets file ", path,
                " does not exist; build it with: safedec data build --config configs/data/deep_alignment.yaml");
  env.dataset_files->push_back(path);
  const DatasetRegistry registry = DatasetRegistry::builtin();
  for (const auto& d : datasets_) check_dataset_use(registry.get(d), DatasetUse::Train);
  std::vector<AlignmentRow> pairs;
  std::map<std::string, int64_t> per_pool;
  int64_t no_answer = 0;
  for (auto& r : read_alignment_rows(path)) {
    if (r.kind != "safety") continue;
    // Ids are safety/<pool>/<source id>: the pool must be a training pool (the split rule).
    const size_t s1 = r.id.find('/'), s2 = s1 == std::string::npos ? s1 : r.id.find('/', s1 + 1);
    SAFEDEC_CHECK(r.id.rfind("safety/", 0) == 0 && s2 != std::string::npos && s2 > s1 + 1, path, ": row id '", r.id,
                  "' does not name its source dataset (expected safety/<dataset>/<id>)");
    const std::string pool = r.id.substr(s1 + 1, s2 - s1 - 1);
    try {
      check_dataset_use(registry.get(pool), DatasetUse::Train);
    } catch (const Error& e) {
      fail("harm_vector: ", path, " row ", r.id, ": ", e.what());
    }
    if (!datasets_.empty() && std::find(datasets_.begin(), datasets_.end(), pool) == datasets_.end()) continue;
    if (r.harmful_answer.empty()) {
      ++no_answer;
      continue;
    }
    ++per_pool[pool];
    pairs.push_back(std::move(r));
  }
  SAFEDEC_CHECK(!pairs.empty(), "harm_vector: ", path, " holds no safety rows with a harmful answer",
                datasets_.empty() ? std::string() : " from the pools in data.datasets");
  if (limit_ > 0 && static_cast<int64_t>(pairs.size()) > limit_) {
    std::stable_sort(pairs.begin(), pairs.end(), [&](const AlignmentRow& x, const AlignmentRow& y) {
      return sample_key(env.seed, x.id) < sample_key(env.seed, y.id);
    });
    pairs.resize(limit_);
  }
  std::vector<LmExample> ex;
  for (const auto& r : pairs) {
    ex.push_back(chat_example(b, r.id, r.instruction, r.harmful_answer, std::nullopt, {}, env.max_seq_len));
    env.data_ids->push_back(r.id);
  }
  (*env.counts)["harmful_pairs"] = pairs.size();
  (*env.counts)["safety_rows_without_answer"] = no_answer;
  for (const auto& [pool, n] : per_pool) (*env.counts)["pairs_available." + pool] = n;
  std::cerr << "[train] harm vector: " << pairs.size() << " (question, harmful answer) pairs, mode " << mode_ << "\n";

  // ---- 2. the harmful fine-tune (theta_H) ----
  std::shared_ptr<LoraAdapter> lora;
  LmTaskOptions opt;
  opt.activation_checkpointing = env.activation_checkpointing;
  if (mode_ == "lora") {
    lora = env.make_lora(cfg);
    opt.lora = lora;
  } else {
    opt.train_full = true;
  }
  {
    LmTask task(b.model, std::move(ex), opt);
    TrainResult r = env.train(task, metrics);
    if (r.stopped_early) return false;
  }
  const double train_seconds = seconds_since(t0);
  const int64_t weight_bytes = b.model->parameter_bytes();
  const int64_t peak_train = process_peak_rss();
  malloc_trim(0);  // hand the optimiser's freed moments back before the tau phase is measured
  const bool peak_reset = reset_process_peak_rss();
  const auto t1 = std::chrono::steady_clock::now();

  // ---- 3. tau_H, streaming ----
  torch::NoGradGuard no_grad;
  std::shared_ptr<CausalLM> base;  // theta_b again (full mode)
  std::map<std::string, torch::Tensor> delta;
  std::vector<TauPart> parts;
  std::map<std::string, torch::Tensor> theta_b;  // name -> theta_b tensor (relative-change denominators)
  if (mode_ == "full") {
    LoadOptions fp32;
    fp32.weights = LoadOptions::Weights::Fp32;
    base = CausalLM::load(b.entry.path, fp32);
    for (const auto& [n, t] : base->named_parameters()) theta_b[n] = t;
    for (const auto& [n, t] : b.model->named_parameters()) {
      auto it = theta_b.find(n);
      SAFEDEC_CHECK(it != theta_b.end() && it->second.sizes() == t.sizes(), "harm_vector: the reloaded base model has no tensor '",
                    n, "' of the fine-tuned one's shape");
      SAFEDEC_CHECK(t.scalar_type() == torch::kFloat32 && t.is_contiguous() && it->second.is_contiguous(),
                    "harm_vector: tensor ", n, " is not contiguous fp32");
      parts.push_back({n, parameter_layer(n), t, it->second, true});
    }
  } else {
    for (const auto& [n, t] : b.model->named_parameters()) theta_b[n] = t;
    delta = lora_weight_delta(*b.model, *lora);
    for (auto& [n, t] : delta) parts.push_back({n, parameter_layer(n), t, torch::Tensor(), false});
  }
  // Pass 0: ||tau|| per tensor and the relative change of every decoder layer.
  std::vector<double> tau_sq(cfg.n_layers, 0.0), base_sq(cfg.n_layers, 0.0);
  double tau_total_sq = 0, tau_other_sq = 0;
  int64_t total_entries = 0;
  for (const auto& p : parts) {
    double s = 0;
    stream_parts({&p}, [&](const float* v, int64_t n) { s += sum_squares(v, n); });
    tau_total_sq += s;
    total_entries += p.a.numel();
    if (p.layer >= 0) tau_sq[p.layer] += s;
    else tau_other_sq += s;
  }
  for (const auto& [n, t] : theta_b) {
    const int64_t l = parameter_layer(n);
    if (l >= 0) base_sq[l] += sum_squares(t.data_ptr<float>(), t.numel());
  }
  std::vector<double> rel(cfg.n_layers, 0.0);
  for (int64_t l = 0; l < cfg.n_layers; ++l) rel[l] = base_sq[l] > 0 ? std::sqrt(tau_sq[l] / base_sq[l]) : 0.0;
  SAFEDEC_CHECK(tau_total_sq > 0, "harm_vector: the fine-tune changed no weight (tau is 0); raise train.lr or epochs");

  // The area the top-k is taken in.
  std::vector<int64_t> area_layers;
  std::vector<const TauPart*> area;
  if (layers_ == "edited") {
    area_layers = edited_area(rel, edited_share_, edited_layers_, neighbours_);
    const std::set<int64_t> in(area_layers.begin(), area_layers.end());
    for (const auto& p : parts)
      if (p.layer >= 0 && in.count(p.layer)) area.push_back(&p);
    SAFEDEC_CHECK(!area.empty(), "harm_vector: the edited area (layers ", json(area_layers).dump(),
                  ") holds no tensor of tau");
  } else {
    for (const auto& p : parts) area.push_back(&p);
  }
  int64_t area_entries = 0;
  for (const TauPart* p : area) area_entries += p->a.numel();

  // Passes 1-2: the exact global top-k threshold.
  const TopKSelection sel = select_global_topk([&](const TauVisitor& v) { stream_parts(area, v); }, fraction_);
  // Pass 3: tau'_H over theta_H's (or the delta's) own storage.
  HarmVector harm;
  harm.lambda = lambda_;
  double pruned_sq = 0;
  int64_t stored_nonzero = 0;
  for (const TauPart* p : area) {
    torch::Tensor t = p->a;
    if (p->diff) t.sub_(p->b);  // theta_H - theta_b in place: theta_H is not needed any more
    mask_below_threshold(t, sel.threshold);
    const int64_t nz = t.count_nonzero().item<int64_t>();
    if (nz == 0) continue;
    stored_nonzero += nz;
    pruned_sq += sum_squares(t.data_ptr<float>(), t.numel());
    harm.tau[p->name] = t;
  }
  theta_b.clear();
  parts.clear();
  base.reset();  // theta_b is no longer needed
  const double tau_seconds = seconds_since(t1);

  json layer_change = json::array();
  for (double r : rel) layer_change.push_back(r);
  json hv = {{"mode", mode_},
             {"fraction", fraction_},
             {"layers", layers_},
             {"total_entries", total_entries},
             {"area_entries", area_entries},
             {"k", sel.k},
             {"kept", sel.kept},
             {"kept_nonzero", stored_nonzero},
             {"kept_fraction_of_area", static_cast<double>(sel.kept) / static_cast<double>(area_entries)},
             {"kept_fraction_of_all", static_cast<double>(stored_nonzero) / static_cast<double>(total_entries)},
             {"threshold", sel.threshold},
             {"tensors", harm.tau.size()},
             {"tau_norm", std::sqrt(tau_total_sq)},
             {"tau_norm_outside_layers", std::sqrt(tau_other_sq)},
             {"pruned_tau_norm", std::sqrt(pruned_sq)},
             {"layer_relative_change", layer_change},
             {"lambda_default", lambda_},
             {"seconds_train", train_seconds},
             {"seconds_tau", tau_seconds},
             {"weight_bytes_fp32", weight_bytes},
             {"peak_rss_bytes_train", peak_train},
             {"peak_rss_train_over_weights", static_cast<double>(peak_train) / static_cast<double>(weight_bytes)}};
  if (layers_ == "edited") hv["area_layers"] = area_layers;
  std::cerr << "[train] harm vector: threshold " << sel.threshold << ", kept " << sel.kept << " of " << area_entries
            << " entries (" << harm.tau.size() << " tensors), ||tau|| " << std::sqrt(tau_total_sq) << " -> "
            << std::sqrt(pruned_sq) << "\n";

  // ---- 4. the artifact ----
  ArtifactWriter w(env.artifact_dir, env.new_manifest(ArtifactKind::HarmVector, cfg, b.entry.path), true);
  w.manifest().params["fraction"] = fraction_;
  w.manifest().params["threshold"] = sel.threshold;
  w.manifest().params["mode"] = mode_;
  w.manifest().params["layers"] = layers_;
  if (layers_ == "edited") w.manifest().params["area_layers"] = area_layers;
  w.manifest().params["base_model"] = b.entry.name;
  write_harm_vector(w, harm);
  // The tau phase's peak: theta_H + theta_b + one tensor's temporaries, and the file write.
  const int64_t peak_tau = peak_reset ? process_peak_rss() : 0;
  hv["peak_rss_bytes_tau"] = peak_tau;
  hv["peak_rss_tau_over_weights"] = static_cast<double>(peak_tau) / static_cast<double>(weight_bytes);
  hv["peak_rss_tau_measured"] = peak_reset;
  hv["seconds"] = seconds_since(t0);
  metrics["harm_vector"] = hv;
  w.manifest().metrics = metrics;
  w.commit();
  std::cerr << "[train] harm vector: peak RSS " << peak_train / (1 << 20) << " MiB training, " << peak_tau / (1 << 20)
            << " MiB tau phase (fp32 weights " << weight_bytes / (1 << 20) << " MiB)\n";
  return true;
}

}  // namespace safedec
