// The training pipelines (see pipeline.h). Each pipeline declares its config keys once (ConfigSchema),
// loads only training-split data (check_dataset_use), and writes its artifact through ArtifactWriter.
#include "train/pipeline.h"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <set>

#include "artifacts/typed.h"
#include "core/config_schema.h"
#include "core/error.h"
#include "core/files.h"
#include "core/jsonl.h"
#include "core/numbers.h"
#include "core/paths.h"
#include "core/sha256.h"
#include "dist/dist.h"
#include "decoding/generator.h"
#include "decoding/model_bundle.h"
#include "decoding/strategies/common.h"
#include "decoding/strategies/risk.h"
#include "decoding/strategy_registry.h"
#include "eval/dataset.h"
#include "eval/judge.h"
#include "eval/progress.h"
#include "eval/run_dir.h"
#include "eval/svg.h"
#include "train/harm_vector_pipeline.h"
#include "train/lm_task.h"
#include "train/probe.h"
#include "train/prompt_wrappers.h"
#include "train/sft_data.h"
#include "train/trainer.h"

namespace safedec {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// ---- settings every pipeline shares ----
struct LoraSettings {
  int64_t r = 16;
  double alpha = 64;
  double dropout = 0.1;
  std::vector<std::string> targets = {"q_proj", "v_proj"};
  std::vector<int64_t> layers;
};

struct CommonConfig {
  std::string name, pipeline, model = "smollm2-135m-instruct";
  uint64_t seed = 0;
  int64_t threads = 0;
  TrainLoopConfig loop;
  std::string schedule = "linear";
  int64_t max_seq_len = 384;
  bool activation_checkpointing = false;
  LoraSettings lora;
};

struct RunContext {
  CommonConfig common;
  std::string config_path, run_dir, config_hash;
  TrainRunOptions options;
  std::vector<std::string> dataset_files, model_files;
  json counts = json::object();
  std::vector<std::string> data_ids;
  std::shared_ptr<ModelBundle> target;
  std::string artifact_dir() const { return run_dir + "/artifact"; }
};

void declare_train(ConfigSchema& t, CommonConfig& c) {
  auto& l = c.loop;
  auto& o = l.optim;
  t.add("epochs", l.epochs, "passes over the training set").range(1, 100000);
  t.add("max_steps", l.max_steps, "stop after this many optimiser steps (0 = from epochs)").range(0, 1e9);
  t.add("batch_size", l.batch_size, "examples per optimiser step").range(1, 65536);
  t.add("micro_batch_size", l.micro_batch_size, "examples per forward/backward; smaller = gradient accumulation (0 = batch_size)")
      .range(0, 65536);
  t.add("lr", o.lr, "peak learning rate (AdamW)").range(1e-9, 1.0);
  t.add("weight_decay", o.weight_decay, "decoupled weight decay").range(0, 0.99);
  t.add("beta1", o.beta1, "AdamW beta1").range(0, 0.999999);
  t.add("beta2", o.beta2, "AdamW beta2").range(0, 0.999999);
  t.add("schedule", o.schedule, "learning-rate schedule after warmup").one_of({"constant", "linear", "cosine"});
  t.add("warmup_steps", o.warmup_steps, "linear warmup steps (overrides warmup_ratio)").range(0, 1e9);
  t.add("warmup_ratio", o.warmup_ratio, "warmup as a share of all steps").range(0, 0.99);
  t.add("clip_grad_norm", o.clip_grad_norm, "global gradient-norm clip (0 = off)").range(0, 1e6);
  t.add("checkpoint_every", l.checkpoint_every, "steps between checkpoints (0 = only at the end)").range(0, 1e9);
  t.add("keep_checkpoints", l.keep_checkpoints, "checkpoints kept").range(1, 1000);
  t.add("max_seq_len", c.max_seq_len, "tokens per training sequence (prompt + response)").range(8, 32768);
  t.add("activation_checkpointing", c.activation_checkpointing, "recompute layers in the backward pass (less memory)");
  t.add("shuffle", l.shuffle, "seeded shuffling of the examples every epoch");
}

void declare_lora(ConfigSchema& s, LoraSettings& l) {
  s.add("r", l.r, "LoRA rank").range(1, 4096);
  s.add("alpha", l.alpha, "LoRA alpha (scale = alpha / r)").range(1e-6, 1e6);
  s.add("dropout", l.dropout, "dropout on the adapter input while training").range(0, 0.95);
  s.add("targets", l.targets, "linear layers with an adapter")
      .one_of({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"});
  s.add("layers", l.layers, "decoder layers with adapters (empty = all)").range(0, 100000);
}

std::shared_ptr<LoraAdapter> make_lora(const LoraSettings& s, const ModelConfig& cfg, uint64_t seed) {
  LoraAdapter::Options o;
  o.rank = s.r;
  o.alpha = s.alpha;
  o.dropout = s.dropout;
  o.targets = s.targets;
  o.layers = s.layers;
  o.seed = seed;
  for (int64_t l : s.layers)
    SAFEDEC_CHECK(l < cfg.n_layers, "lora.layers names layer ", l, " but ", cfg.name, " has ", cfg.n_layers);
  return std::make_shared<LoraAdapter>(cfg, o);
}

// Loads a training-split dataset by name (an evaluation set is refused by the split rule).
std::vector<Example> load_train_dataset(RunContext& ctx, const std::string& name, size_t limit, uint64_t seed) {
  const DatasetRegistry reg = DatasetRegistry::builtin();
  const DatasetSpec& spec = reg.get(name);
  check_dataset_use(spec, DatasetUse::Train);
  DatasetLoadOptions lo;
  lo.limit = limit;
  lo.seed = seed;
  Dataset d = load_dataset(spec, lo);
  for (const auto& f : d.files)
    if (std::find(ctx.dataset_files.begin(), ctx.dataset_files.end(), f) == ctx.dataset_files.end())
      ctx.dataset_files.push_back(f);
  ctx.counts["rows." + name] = d.examples.size();
  for (const auto& e : d.examples) ctx.data_ids.push_back(name + "/" + e.id);
  return d.examples;
}

ArtifactManifest new_manifest(const RunContext& ctx, ArtifactKind kind, const ModelConfig& model,
                              const std::string& model_file) {
  ArtifactManifest m;
  m.kind = kind;
  m.model = ModelIdentity::of(model, model_file.empty() ? std::string() : sha256_path(model_file));
  YAML::Node cfg = YAML::LoadFile(ctx.run_dir + "/config.resolved.yaml");
  // The resolved config as JSON text (YAML stays the source of truth in the run directory).
  m.training_config = {{"config", canonical_yaml(cfg)}, {"config_sha256", ctx.config_hash}};
  m.data_ids_sha256 = data_ids_hash(ctx.data_ids);
  m.seed = ctx.common.seed;
  return m;
}

double mean_nll(LmTask& task, int64_t micro, const std::string& label) {
  double s = 0, n = 0;
  ProgressBar bar(label, static_cast<size_t>(task.size()));
  for (int64_t lo = 0; lo < task.size(); lo += micro) {
    std::vector<int64_t> idx;
    for (int64_t i = lo; i < std::min(task.size(), lo + micro); ++i) idx.push_back(i);
    auto [sums, counts] = task.evaluate(idx);
    for (size_t k = 0; k < sums.size(); ++k) {
      s += sums[k];
      n += counts[k];
    }
    bar.tick(idx.size());
  }
  bar.finish();
  return n > 0 ? s / n : 0.0;
}

// Runs the trainer over an LmTask and records its metrics.
TrainResult train_lm(RunContext& ctx, LmTask& task, json& metrics) {
  TrainLoopConfig loop = ctx.common.loop;
  loop.seed = ctx.common.seed;
  loop.stop_after = ctx.options.stop_after;
  const int64_t micro = loop.micro_batch_size > 0 ? loop.micro_batch_size : loop.batch_size;
  int64_t targets = 0;
  for (const auto& e : task.examples()) targets += e.target_count();
  std::cerr << "[train] " << task.size() << " examples, " << targets << " target tokens\n";
  // Under torchrun only rank 0 reports the before/after NLL (the other ranks' metrics are discarded).
  const auto group = dist_group();
  const bool reports = !group || group->is_main();
  if (reports && (ctx.options.resume == false || !fs::exists(ctx.run_dir + "/checkpoints")))
    metrics["nll_before"] = mean_nll(task, micro, "nll before");
  Trainer trainer(task, loop, ctx.run_dir, ctx.config_hash);
  TrainResult r = trainer.run(ctx.options.resume);
  metrics["train"] = r.metrics();
  metrics["examples"] = task.size();
  metrics["target_tokens"] = targets;
  if (reports && !r.stopped_early) metrics["nll_after"] = mean_nll(task, micro, "nll after");
  return r;
}

// ---------------------------------------------------------------------------------------------
// The pipelines.
class Pipeline {
 public:
  virtual ~Pipeline() = default;
  virtual void declare(ConfigSchema& top) = 0;
  // Trains and writes the artifact; returns metrics. Returns false in `complete` when stopped early.
  virtual bool run(RunContext& ctx, json& metrics) = 0;
};

// SafeDecoding's expert (methods.md 4): LoRA r 16 / alpha 64 / dropout 0.1 on the target, trained on
// the refusal_sft pairs rendered with the target's chat template.
class SafeDecodingExpert : public Pipeline {
 public:
  void declare(ConfigSchema& top) override {
    data_.add("dataset", dataset_, "training-split dataset of \"USER: ... ASSISTANT: ...\" texts").required();
    data_.add("limit", limit_, "rows used (0 = all)").range(0, 1e9);
    data_.add("anchors", anchors_,
              "optional utility anchors: a deep_alignment `safedec data build` directory whose anchor rows "
              "(benign instruction -> the model's own answer) are trained beside the refusals (\"\" = none, "
              "the reference recipe)");
    data_.add("anchor_limit", anchor_limit_, "anchor rows used (0 = all)").range(0, 1e9);
    top.section("data", data_);
  }
  bool run(RunContext& ctx, json& metrics) override {
    auto& b = *ctx.target;
    const auto rows = load_train_dataset(ctx, dataset_, static_cast<size_t>(limit_), ctx.common.seed);
    std::vector<LmExample> ex;
    for (const auto& r : rows) {
      auto [user, answer] = split_vicuna_text(r.prompt, dataset_ + " row " + r.id);
      ex.push_back(chat_example(b, r.id, user, answer, std::nullopt, {}, ctx.common.max_seq_len));
    }
    if (!anchors_.empty()) {
      std::string path = resolve_artifact_path(anchors_);
      if (fs::is_directory(path)) path += "/data.jsonl";
      SAFEDEC_CHECK(fs::is_regular_file(path), "safedecoding_expert: the anchor file ", path,
                    " does not exist; build it with: safedec data build --config configs/data/deep_alignment.yaml");
      ctx.dataset_files.push_back(path);
      int64_t n = 0;
      for (const auto& r : read_alignment_rows(path)) {
        if (r.kind != "anchor" || (anchor_limit_ > 0 && n >= anchor_limit_)) continue;
        ex.push_back(chat_example(b, r.id, r.instruction, r.response, std::nullopt, {}, ctx.common.max_seq_len));
        ctx.data_ids.push_back(r.id);
        ++n;
      }
      SAFEDEC_CHECK(n > 0, "safedecoding_expert: ", path, " holds no anchor rows");
      ctx.counts["anchor_rows"] = n;
    }
    auto lora = make_lora(ctx.common.lora, b.model->config(), ctx.common.seed);
    LmTaskOptions opt;
    opt.lora = lora;
    opt.activation_checkpointing = ctx.common.activation_checkpointing;
    LmTask task(b.model, std::move(ex), opt);
    TrainResult r = train_lm(ctx, task, metrics);
    if (r.stopped_early) return false;
    ArtifactWriter w(ctx.artifact_dir(), new_manifest(ctx, ArtifactKind::Lora, b.model->config(), b.entry.path), true);
    w.manifest().metrics = metrics;
    write_lora_adapter(w, *lora, b.entry.name);
    w.commit();
    return true;
  }

 private:
  ConfigSchema data_{"`data`"};
  std::string dataset_ = "refusal_sft_vicuna";
  int64_t limit_ = 0;
  std::string anchors_;
  int64_t anchor_limit_ = 0;
};

// NGSD's safety expert (methods.md 1): deep-alignment SFT on (instruction, harmful prefix, refusal)
// examples + utility anchors.
class NgsdExpert : public Pipeline {
 public:
  void declare(ConfigSchema& top) override {
    data_.add("triplets", triplets_, "deep-alignment data: a `safedec data build` output directory or its data.jsonl")
        .required();
    data_.add("prefix_probability", aug_.prefix_probability, "share of safety examples with a harmful prefix")
        .range(0, 1);
    data_.add("max_prefix_tokens", aug_.max_prefix_tokens, "k ~ U[1, min(this, len)] harmful tokens").range(1, 4096);
    data_.add("wrap_probability", wrap_probability_,
              "share of rows (safety and anchor alike) whose instruction is put in an adversarial-style wrapper "
              "(src/train/prompt_wrappers.h), seeded per row id")
        .range(0, 1);
    data_.add("limit_safety", limit_safety_, "safety rows used (0 = all)").range(0, 1e9);
    data_.add("limit_anchor", limit_anchor_, "anchor rows used (0 = all)").range(0, 1e9);
    top.section("data", data_);
    expert_.add("kind", kind_, "lora: adapter on the target; truncated: first `layers` layers of the target, "
                               "fully fine-tuned; model: full fine-tune of `model`")
        .one_of({"lora", "truncated", "model"});
    expert_.add("layers", layers_, "truncated: layers kept").range(1, 100000);
    expert_.add("model", expert_model_, "model: the expert's base (registered name or path)");
    expert_.add("freeze_embeddings", freeze_embeddings_, "truncated/model: keep the token embeddings and head frozen");
    top.section("expert", expert_);
  }
  bool run(RunContext& ctx, json& metrics) override {
    std::string path = resolve_artifact_path(triplets_);
    if (fs::is_directory(path)) path += "/data.jsonl";
    SAFEDEC_CHECK(fs::is_regular_file(path), "ngsd_expert: the triplets file ", path,
                  " does not exist; build it with: safedec data build --config configs/data/deep_alignment.yaml");
    auto rows = read_alignment_rows(path);
    ctx.dataset_files.push_back(path);
    std::vector<AlignmentRow> safety, anchor;
    for (auto& r : rows) (r.kind == "safety" ? safety : anchor).push_back(std::move(r));
    if (limit_safety_ > 0 && static_cast<int64_t>(safety.size()) > limit_safety_) safety.resize(limit_safety_);
    if (limit_anchor_ > 0 && static_cast<int64_t>(anchor.size()) > limit_anchor_) anchor.resize(limit_anchor_);
    SAFEDEC_CHECK(!safety.empty(), "ngsd_expert: ", path, " holds no safety rows");
    rows = safety;
    rows.insert(rows.end(), anchor.begin(), anchor.end());
    for (const auto& r : rows) ctx.data_ids.push_back(r.id);
    ctx.counts["safety_rows"] = safety.size();
    ctx.counts["anchor_rows"] = anchor.size();

    // The model that is trained, and the bundle whose chat template renders its examples.
    std::shared_ptr<ModelBundle> expert_bundle = ctx.target;
    std::shared_ptr<CausalLM> model;
    std::shared_ptr<LoraAdapter> lora;
    LmTaskOptions opt;
    opt.activation_checkpointing = ctx.common.activation_checkpointing;
    opt.freeze_embeddings = freeze_embeddings_;
    const auto tcfg = ctx.target->model->config();  // a copy: a separate expert releases the target
    if (kind_ == "lora") {
      model = ctx.target->model;
      lora = make_lora(ctx.common.lora, tcfg, ctx.common.seed);
      opt.lora = lora;
    } else if (kind_ == "truncated") {
      SAFEDEC_CHECK(layers_ <= tcfg.n_layers, "ngsd_expert: expert.layers is ", layers_, " but the target has ",
                    tcfg.n_layers);
      model = ctx.target->model->truncated(layers_)->deep_copy();
      opt.train_full = true;
    } else {
      SAFEDEC_CHECK(!expert_model_.empty(), "ngsd_expert: expert.kind model needs expert.model");
      // A separate expert never runs the target: its fp32 weights (6 GB for the 1.5B) are released
      // before the expert is loaded, so they add nothing to the run's peak memory. Its entry (name,
      // file) stays for the manifest.
      ctx.target->model.reset();
      LoadOptions fp32;
      fp32.weights = LoadOptions::Weights::Fp32;
      expert_bundle = std::make_shared<ModelBundle>(load_model_bundle(expert_model_, fp32));
      ctx.model_files.push_back(expert_bundle->entry.path);
      SAFEDEC_CHECK(expert_bundle->model->config().vocab_size == tcfg.vocab_size, "ngsd_expert: the expert ",
                    expert_model_, " has a vocabulary of ", expert_bundle->model->config().vocab_size,
                    " but the target has ", tcfg.vocab_size, "; NGSD needs a shared vocabulary");
      model = expert_bundle->model;
      opt.train_full = true;
    }
    if (wrap_probability_ > 0) {
      // The same wrappers on refusals and anchors: the expert learns to read through a wrapper, not to
      // refuse whatever is wrapped.
      int64_t wrapped = 0;
      const size_t n_wrappers = prompt_wrapper_names().size();
      for (auto& r : rows) {
        const uint64_t key = sample_key(ctx.common.seed, r.id + "#wrap");
        if (static_cast<double>(key >> 11) * 0x1.0p-53 >= wrap_probability_) continue;
        r.instruction = wrap_prompt(r.instruction, key % n_wrappers, sample_key(ctx.common.seed, r.id + "#noise"));
        ++wrapped;
      }
      ctx.counts["wrapped_rows"] = wrapped;
      metrics["wrapped_rows"] = wrapped;
    }
    int64_t augmented = 0;
    auto ex = deep_alignment_examples(*expert_bundle, rows, aug_, ctx.common.max_seq_len, &augmented);
    ctx.counts["augmented_safety_examples"] = augmented;
    metrics["augmented_safety_examples"] = augmented;
    LmTask task(model, std::move(ex), opt);
    TrainResult r = train_lm(ctx, task, metrics);
    if (r.stopped_early) return false;
    if (kind_ == "lora") {
      ArtifactWriter w(ctx.artifact_dir(), new_manifest(ctx, ArtifactKind::Lora, tcfg, ctx.target->entry.path), true);
      w.manifest().metrics = metrics;
      write_lora_adapter(w, *lora, ctx.target->entry.name);
      w.commit();
    } else {
      const auto& base = kind_ == "truncated" ? *ctx.target : *expert_bundle;
      ArtifactWriter w(ctx.artifact_dir(),
                       new_manifest(ctx, ArtifactKind::ExpertWeights, base.model->config(), base.entry.path), true);
      w.manifest().metrics = metrics;
      write_expert_weights(w, *model, base.entry.name);
      w.commit();
    }
    return true;
  }

 private:
  ConfigSchema data_{"`data`"}, expert_{"`expert`"};
  std::string triplets_ = ".cache/data/deep_alignment";
  AugmentOptions aug_;
  double wrap_probability_ = 0.0;
  int64_t limit_safety_ = 0, limit_anchor_ = 0;
  std::string kind_ = "lora";
  int64_t layers_ = 10;
  std::string expert_model_;
  bool freeze_embeddings_ = false;
};

// Prompts of several training datasets, with a label.
struct LabeledPrompt {
  std::string id, text;
  int label = 0;
};

std::vector<LabeledPrompt> labeled_prompts(RunContext& ctx, const std::vector<std::string>& names, int label,
                                           int64_t limit) {
  std::vector<LabeledPrompt> out;
  for (const auto& n : names)
    for (const auto& e : load_train_dataset(ctx, n, static_cast<size_t>(limit), ctx.common.seed))
      out.push_back({n + "/" + e.id, e.prompt, label});
  return out;
}

// Each prompt's probe features (decoding/strategies/risk.h probe_features: the same function NGSD's
// estimator uses), prompts longer than max_tokens keeping their last tokens.
torch::Tensor prompt_features(const ModelBundle& b, const std::vector<LabeledPrompt>& prompts, int64_t batch,
                              int64_t max_tokens, const ProbeFeatureSpec& spec) {
  std::vector<StrategyPrompt> ps;
  for (const auto& lp : prompts) {
    StrategyPrompt p = b.make_prompt(lp.id, lp.text);
    const int64_t cut = static_cast<int64_t>(p.ids.size()) - max_tokens;
    if (cut > 0) {
      p.ids.erase(p.ids.begin(), p.ids.begin() + cut);
      p.user_end = p.user_end - cut >= 1 ? p.user_end - cut : -1;
    }
    ps.push_back(std::move(p));
  }
  ProgressBar bar("features", ps.size());
  std::vector<torch::Tensor> out;
  const size_t chunk = static_cast<size_t>(batch) * 4;  // progress every few forwards
  for (size_t lo = 0; lo < ps.size(); lo += chunk) {
    std::vector<StrategyPrompt> part(ps.begin() + lo, ps.begin() + std::min(ps.size(), lo + chunk));
    out.push_back(probe_features(*b.model, part, spec, b.pad_id(), batch));
    bar.tick(part.size());
  }
  bar.finish();
  return torch::cat(out);
}

// NGSD's risk neuron: logistic regression on the prompt's hidden state (harmful 1 / benign 0).
class RiskProbePipeline : public Pipeline {
 public:
  void declare(ConfigSchema& top) override {
    data_.add("harmful", harmful_, "training-split datasets of harmful prompts").required();
    data_.add("benign", benign_, "training-split datasets of benign prompts").required();
    data_.add("limit_per_dataset", limit_, "prompts per dataset (seeded sample, 0 = all)").range(0, 1e9);
    data_.add("holdout", holdout_, "share held out for AUROC").range(0.05, 0.5);
    data_.add("batch_size", batch_, "prompts per feature-extraction forward").range(1, 1024);
    data_.add("max_prompt_tokens", max_tokens_, "prompts longer than this keep their last tokens").range(8, 32768);
    data_.add("benign_answered", answered_,
              "training-split datasets with a written reply (e.g. safety_tuned) whose rows the keyword judge does "
              "not see as refused: sensitive-sounding requests that deserve an answer, labelled benign");
    data_.add("harmful_refused_only", refused_only_,
              "drop harmful-pool rows whose own written reply (safety_tuned) the keyword judge does not see as a "
              "refusal: sensitive-sounding requests that deserve an answer are not labelled harmful");
    data_.add("limit_answered", limit_answered_, "rows per benign_answered dataset (seeded sample, 0 = all)")
        .range(0, 1e9);
    data_.add("augment", augment_, "none, or wrappers: add copies of every prompt in adversarial-style wrappers "
                                   "(src/train/prompt_wrappers.h), harmful and benign alike, with their labels")
        .one_of({"none", "wrappers"});
    data_.add("augment_copies", copies_, "wrapped copies per prompt (augment: wrappers)").range(1, 16);
    top.section("data", data_);
    probe_.add("layer", spec_.layer, "hidden state the probe reads: -1 = final-normed, l = the residual after layer l")
        .range(-1, 1023);
    probe_.add("pooling", spec_.pooling, "last: the prompt's last token; user_mean: the mean over the last `window` "
                                        "tokens of the user text")
        .one_of(risk_probe_poolings());
    probe_.add("window", spec_.window, "user_mean: tokens averaged (ending with the user text)").range(1, 32768);
    top.section("probe", probe_);
  }
  bool run(RunContext& ctx, json& metrics) override {
    auto& b = *ctx.target;
    auto prompts = labeled_prompts(ctx, harmful_, 1, limit_);
    if (refused_only_) {
      // A harmful-pool row whose own written reply is not a refusal (safety_tuned's careful answers to
      // sensitive-sounding requests) is not labelled harmful: it would teach the probe that such
      // wording alone is risky.
      const auto judge = make_judge("keyword");
      std::map<std::string, std::string> reference;  // "<dataset>/<id>" -> written reply
      for (const auto& n : harmful_)
        for (const auto& e : load_train_dataset(ctx, n, static_cast<size_t>(limit_), ctx.common.seed))
          if (e.reference) reference[n + "/" + e.id] = *e.reference;
      size_t dropped = 0;
      prompts.erase(std::remove_if(prompts.begin(), prompts.end(),
                                   [&](const LabeledPrompt& p) {
                                     auto it = reference.find(p.id);
                                     const bool drop = it != reference.end() && !judge->judge(p.text, it->second).refused;
                                     dropped += drop ? 1 : 0;
                                     return drop;
                                   }),
                    prompts.end());
      ctx.counts["harmful_dropped_answered_reference"] = dropped;
    }
    const size_t n_harm = prompts.size();
    auto ben = labeled_prompts(ctx, benign_, 0, limit_);
    if (!answered_.empty()) {
      const auto judge = make_judge("keyword");
      std::set<std::string> harmful_ids;  // a row sampled as harmful is never also a benign one
      for (const auto& p : prompts) harmful_ids.insert(p.id);
      for (const auto& n : answered_) {
        std::vector<Example> kept;
        for (auto& e : load_train_dataset(ctx, n, 0, ctx.common.seed)) {
          SAFEDEC_CHECK(e.reference.has_value(), "risk_probe: data.benign_answered dataset '", n,
                        "' has no reference reply to judge (row ", e.id, ")");
          if (!judge->judge(e.prompt, *e.reference).refused && !harmful_ids.count(n + "/" + e.id))
            kept.push_back(std::move(e));
        }
        std::sort(kept.begin(), kept.end(), [&](const Example& a, const Example& c) {
          return sample_key(ctx.common.seed, a.id) < sample_key(ctx.common.seed, c.id);
        });
        if (limit_answered_ > 0 && static_cast<int64_t>(kept.size()) > limit_answered_) kept.resize(limit_answered_);
        ctx.counts["answered_rows." + n] = kept.size();
        for (const auto& e : kept) ben.push_back({n + "/answered/" + e.id, e.prompt, 0});
      }
    }
    prompts.insert(prompts.end(), ben.begin(), ben.end());
    ctx.counts["harmful_prompts"] = n_harm;
    ctx.counts["benign_prompts"] = ben.size();
    // Held-out split by a seeded key of the id (the same split on every run).
    std::vector<size_t> order(prompts.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](size_t a, size_t c) {
      return sample_key(ctx.common.seed, prompts[a].id) < sample_key(ctx.common.seed, prompts[c].id);
    });
    const size_t n_hold = static_cast<size_t>(holdout_ * static_cast<double>(prompts.size()));
    std::vector<int64_t> train_idx, hold_idx;
    for (size_t i = 0; i < order.size(); ++i) (i < n_hold ? hold_idx : train_idx).push_back(order[i]);
    // Wrapped copies follow their source prompt into its part, so no held-out prompt is seen wrapped in
    // training; the held-out copies are scored separately (holdout_wrapped).
    std::vector<int64_t> hold_wrapped_idx;
    if (augment_ == "wrappers") {
      std::vector<uint8_t> held(prompts.size(), 0);
      for (int64_t i : hold_idx) held[static_cast<size_t>(i)] = 1;
      const size_t n_orig = prompts.size();
      const size_t n_wrappers = prompt_wrapper_names().size();
      for (size_t i = 0; i < n_orig; ++i)
        for (int64_t c = 0; c < copies_; ++c) {
          const std::string tag = prompts[i].id + "#wrap" + std::to_string(c);
          // Copies of one prompt take distinct wrappers (while there are enough).
          const size_t w = (sample_key(ctx.common.seed, prompts[i].id) + static_cast<uint64_t>(c)) % n_wrappers;
          prompts.push_back({tag, wrap_prompt(prompts[i].text, w, sample_key(ctx.common.seed, tag)), prompts[i].label});
          (held[i] ? hold_wrapped_idx : train_idx).push_back(static_cast<int64_t>(prompts.size() - 1));
        }
      ctx.counts["wrapped_prompts"] = prompts.size() - n_orig;
    }
    std::cerr << "[train] risk probe: " << n_harm << " harmful + " << ben.size() << " benign prompts, "
              << hold_idx.size() << " held out" << (augment_ == "wrappers" ? ", with wrapped copies" : "") << "\n";
    SAFEDEC_CHECK(spec_.layer < b.model->config().n_layers, ctx.config_path, ": probe.layer ", spec_.layer,
                  " is not a layer of ", b.model->config().name, " (", b.model->config().n_layers,
                  " layers; -1 = the final-normed state)");
    torch::Tensor feats = prompt_features(b, prompts, batch_, max_tokens_, spec_);
    std::vector<float> lab;
    for (const auto& p : prompts) lab.push_back(static_cast<float>(p.label));
    torch::Tensor labels = torch::tensor(lab);
    auto tr = torch::tensor(train_idx, torch::kInt64), ho = torch::tensor(hold_idx, torch::kInt64);
    ProbeTask task(feats.index_select(0, tr), labels.index_select(0, tr));
    TrainLoopConfig loop = ctx.common.loop;
    loop.seed = ctx.common.seed;
    loop.stop_after = ctx.options.stop_after;
    if (loop.batch_size > static_cast<int64_t>(train_idx.size())) loop.batch_size = static_cast<int64_t>(train_idx.size());
    if (loop.micro_batch_size > loop.batch_size) loop.micro_batch_size = 0;
    Trainer trainer(task, loop, ctx.run_dir, ctx.config_hash);
    TrainResult r = trainer.run(ctx.options.resume);
    metrics["train"] = r.metrics();
    if (r.stopped_early) return false;
    auto evaluate = [&](const torch::Tensor& idx, const std::string& part) {
      auto p = task.predict(feats.index_select(0, idx));
      std::vector<double> s;
      std::vector<int> l;
      int64_t correct = 0, harm = 0, harm_high = 0, benign = 0, benign_low = 0;
      for (int64_t i = 0; i < idx.size(0); ++i) {
        const double prob = p[i].item<double>();
        const int y = prompts[idx[i].item<int64_t>()].label;
        s.push_back(prob);
        l.push_back(y);
        correct += ((prob >= 0.5) == (y == 1)) ? 1 : 0;
        const double risk = 10.0 * prob;  // NGSD's r; alpha 0.9 for r > 6, 0.1 for r < 5
        if (y) {
          ++harm;
          harm_high += risk > 6 ? 1 : 0;
        } else {
          ++benign;
          benign_low += risk < 5 ? 1 : 0;
        }
      }
      metrics[part] = {{"auroc", auroc(s, l)},
                       {"accuracy", static_cast<double>(correct) / static_cast<double>(idx.size(0))},
                       {"harmful_alpha_0.9_share", harm ? static_cast<double>(harm_high) / harm : 0.0},
                       {"benign_alpha_0.1_share", benign ? static_cast<double>(benign_low) / benign : 0.0},
                       {"n", idx.size(0)}};
    };
    evaluate(tr, "train_split");
    evaluate(ho, "holdout");
    if (!hold_wrapped_idx.empty()) evaluate(torch::tensor(hold_wrapped_idx, torch::kInt64), "holdout_wrapped");
    std::cerr << "[train] risk probe held-out AUROC " << metrics["holdout"]["auroc"].get<double>() << ", accuracy "
              << metrics["holdout"]["accuracy"].get<double>() << "\n";
    auto [w, bias] = task.raw_probe();
    RiskProbe probe{w, bias, spec_.layer, spec_.pooling, spec_.window};
    ArtifactWriter aw(ctx.artifact_dir(), new_manifest(ctx, ArtifactKind::RiskProbe, b.model->config(), b.entry.path),
                      true);
    aw.manifest().metrics = metrics;
    write_risk_probe(aw, probe);
    aw.commit();
    return true;
  }

 private:
  ConfigSchema data_{"`data`"}, probe_{"`probe`"};
  ProbeFeatureSpec spec_;
  std::vector<std::string> harmful_, benign_;
  std::vector<std::string> answered_;
  int64_t limit_ = 300, batch_ = 16, max_tokens_ = 512, copies_ = 1, limit_answered_ = 0;
  bool refused_only_ = false;
  std::string augment_ = "none";
  double holdout_ = 0.2;
};

// LIF calibration (methods.md 1): NGSD with the configured expert and risk estimator decodes benign
// (and harmful) training prompts along the target's own greedy path (follow_target: the gate and the
// mixing are computed but not applied). Each token records its TV distance and whether a spike there
// would change the greedy token at the prompt's alpha ("flip"). objective fire_rate: the smallest theta
// at which the gate fires on at most `target_fire_rate` of the benign tokens; flip_rate: the smallest
// theta at which spikes change at most that share of benign tokens (with a risk probe, a low-risk prompt
// mixes with alpha 0.1, which rarely changes a token, so the gate may fire more often).
class NgsdGatePipeline : public Pipeline {
 public:
  void declare(ConfigSchema& top) override {
    data_.add("benign", benign_, "training-split datasets of benign prompts").required();
    data_.add("harmful", harmful_, "training-split datasets of harmful prompts (fire rate reported)");
    data_.add("limit_per_dataset", limit_, "prompts per dataset (seeded sample)").range(1, 1e9);
    data_.add("max_new_tokens", max_new_, "tokens decoded per prompt").range(1, 4096);
    data_.add("batch_size", batch_, "prompts per batch").range(1, 256);
    top.section("data", data_);
    gate_.add("target_fire_rate", target_rate_, "share of benign tokens the gate may fire on (or change)")
        .range(0, 0.99);
    gate_.add("objective", objective_, "what target_fire_rate bounds on benign tokens")
        .one_of({"flip_rate", "fire_rate"});
    gate_.add("keep_harmful", keep_harmful_,
              "flip_rate: raise theta while the harmful token changes stay at least this share of those at the "
              "lowest admissible theta (1 = keep that theta)")
        .range(0.01, 1);
    gate_.add("tau", tau_, "LIF time constant (kept)").range(1.0001, 1e6);
    gate_.add("reset", reset_, "soft-reset factor (kept)").range(0, 1);
    top.section("gate", gate_);
    top.passthrough("ngsd", "the NGSD method settings whose expert is calibrated (keys of configs/methods/ngsd.yaml)");
    top_ = &top;
  }
  bool run(RunContext& ctx, json& metrics) override {
    auto& b = *ctx.target;
    MethodConfig mc = parse_method_config("ngsd", top_->node("ngsd"), ctx.config_path);
    mc.ngsd.follow_target = true;  // record along the target's own path
    mc.ngsd.gate.clear();
    std::map<std::string, std::vector<float>> tv;
    std::map<std::string, std::vector<uint8_t>> flip;
    MethodFactory factory(mc, b, [&](const json& j) {
      if (j.value("method", "") != "ngsd") return;
      const auto id = j.at("id").get<std::string>();
      tv[id].push_back(j.at("tv").get<float>());
      flip[id].push_back(j.at("flip").get<bool>() ? 1 : 0);
    });
    struct Traces {
      std::vector<std::vector<float>> tv;
      std::vector<std::vector<uint8_t>> flip;
    };
    auto decode = [&](const std::vector<LabeledPrompt>& prompts, const std::string& what) {
      Traces seqs;
      GenerationOptions go = b.generation_options();
      go.max_new_tokens = max_new_;
      Generator gen(go);
      ProgressBar bar("gate " + what, prompts.size());
      torch::InferenceMode guard;
      for (size_t lo = 0; lo < prompts.size(); lo += static_cast<size_t>(batch_)) {
        std::vector<StrategyPrompt> sp;
        for (size_t i = lo; i < std::min(prompts.size(), lo + batch_); ++i)
          sp.push_back(b.make_prompt(prompts[i].id, prompts[i].text));
        tv.clear();
        flip.clear();
        auto strategy = factory.make();
        gen.run(*strategy, sp);
        for (const auto& p : sp) {
          seqs.tv.push_back(tv[p.id]);
          seqs.flip.push_back(flip[p.id]);
        }
        bar.tick(sp.size());
      }
      bar.finish();
      return seqs;
    };
    const Traces bt = decode(labeled_prompts(ctx, benign_, 0, limit_), "benign");
    Traces ht;
    if (!harmful_.empty()) ht = decode(labeled_prompts(ctx, harmful_, 1, limit_), "harmful");
    const auto& benign = bt.tv;
    const auto& harmful = ht.tv;
    const bool by_flip = objective_ == "flip_rate";
    const double theta_admissible = calibrate_lif_theta(benign, tau_, reset_, target_rate_, by_flip ? &bt.flip : nullptr);
    // The lowest admissible theta may be 0 (always fire) when the expert, at the prompts' alpha, rarely
    // changes a benign token. The sparsest gate that keeps `keep_harmful` of the harmful token changes
    // changes still fewer benign tokens; kept only while it meets the benign bound too.
    double theta = theta_admissible;
    if (by_flip && !harmful.empty() && keep_harmful_ < 1.0) {
      const double sparse = sparsest_lif_theta(harmful, ht.flip, tau_, reset_, theta_admissible, keep_harmful_);
      if (lif_marked_rate(benign, bt.flip, tau_, sparse, reset_) <= target_rate_) theta = sparse;
    }
    metrics["theta_lowest_admissible"] = theta_admissible;
    metrics["keep_harmful"] = keep_harmful_;
    // Share of prompts with a token-changing spike among the first `n` tokens.
    auto prompts_changed_within = [&](const Traces& t, size_t n) {
      int64_t hit = 0;
      for (size_t i = 0; i < t.tv.size(); ++i) {
        std::vector<float> head(t.tv[i].begin(), t.tv[i].begin() + std::min(n, t.tv[i].size()));
        std::vector<uint8_t> marks(t.flip[i].begin(), t.flip[i].begin() + static_cast<int64_t>(head.size()));
        hit += lif_marked_rate({head}, {marks}, tau_, theta, reset_) > 0 ? 1 : 0;
      }
      return t.tv.empty() ? 0.0 : static_cast<double>(hit) / static_cast<double>(t.tv.size());
    };
    auto mean_tv = [](const std::vector<std::vector<float>>& s) {
      double sum = 0, n = 0;
      for (const auto& x : s)
        for (float v : x) {
          sum += v;
          n += 1;
        }
      return n > 0 ? sum / n : 0.0;
    };
    auto first_tv = [](const std::vector<std::vector<float>>& s) {
      double sum = 0, n = 0;
      for (const auto& x : s)
        if (!x.empty()) {
          sum += x[0];
          n += 1;
        }
      return n > 0 ? sum / n : 0.0;
    };
    metrics["theta"] = theta;
    metrics["objective"] = objective_;
    metrics["benign_fire_rate"] = lif_fire_rate(benign, tau_, theta, reset_);
    metrics["benign_flip_rate"] = lif_marked_rate(benign, bt.flip, tau_, theta, reset_);
    metrics["benign_prompts_changed_in_first_4_tokens"] = prompts_changed_within(bt, 4);
    metrics["benign_fire_rate_at_theta_1"] = lif_fire_rate(benign, tau_, 1.0, reset_);
    metrics["benign_mean_tv"] = mean_tv(benign);
    metrics["benign_first_token_tv"] = first_tv(benign);
    if (!harmful.empty()) {
      metrics["harmful_fire_rate"] = lif_fire_rate(harmful, tau_, theta, reset_);
      metrics["harmful_flip_rate"] = lif_marked_rate(harmful, ht.flip, tau_, theta, reset_);
      metrics["harmful_prompts_changed_in_first_4_tokens"] = prompts_changed_within(ht, 4);
      metrics["harmful_fire_rate_at_theta_1"] = lif_fire_rate(harmful, tau_, 1.0, reset_);
      metrics["harmful_mean_tv"] = mean_tv(harmful);
      metrics["harmful_first_token_tv"] = first_tv(harmful);
      int64_t fired_first = 0;
      for (const auto& x : harmful) fired_first += (!x.empty() && x[0] >= theta) ? 1 : 0;
      metrics["harmful_prompts_firing_on_token_1"] = static_cast<double>(fired_first) / harmful.size();
    }
    std::cerr << "[train] gate (" << objective_ << "): theta " << theta << " (tau " << tau_ << ", reset " << reset_
              << "), benign fire rate " << metrics["benign_fire_rate"].get<double>() << ", token-changing "
              << metrics["benign_flip_rate"].get<double>()
              << (harmful.empty() ? std::string()
                                  : "; harmful " + std::to_string(metrics["harmful_fire_rate"].get<double>()) +
                                        ", token-changing " + std::to_string(metrics["harmful_flip_rate"].get<double>()))
              << "\n";
    write_fire_rate_plot(ctx.run_dir + "/gate_calibration.svg", bt, ht, theta);
    ArtifactWriter w(ctx.artifact_dir(),
                     new_manifest(ctx, ArtifactKind::GateCalibration, b.model->config(), b.entry.path), true);
    w.manifest().metrics = metrics;
    w.manifest().params["expert"] = mc.ngsd.expert;
    w.manifest().params["expert_adapter"] = mc.ngsd.expert_adapter;
    w.manifest().params["expert_weights"] = mc.ngsd.expert_weights;
    w.manifest().params["risk"] = mc.ngsd.risk;
    w.manifest().params["probe"] = mc.ngsd.probe;
    write_gate_calibration(w, GateCalibration{tau_, theta, reset_, target_rate_});
    w.commit();
    return true;
  }

 private:
  template <class Traces>
  void write_fire_rate_plot(const std::string& path, const Traces& benign, const Traces& harmful,
                            double theta) const {
    XyChart c;
    c.title = "LIF gate fire rate against the threshold theta";
    c.subtitle = "tau " + std::to_string(tau_) + ", reset " + std::to_string(reset_) + "; chosen theta " +
                 std::to_string(theta);
    c.x.label = "theta";
    c.y.label = "share of tokens that fire";
    c.y.percent = true;
    auto curve = [&](const Traces& s, bool changed, const std::string& label) {
      XySeries x;
      x.label = label;
      x.markers = false;
      for (int i = 1; i <= 60; ++i) {
        const double t = tau_ * i / 60.0 * 0.5;
        x.x.push_back(t);
        x.y.push_back(changed ? lif_marked_rate(s.tv, s.flip, tau_, t, reset_) : lif_fire_rate(s.tv, tau_, t, reset_));
      }
      return x;
    };
    c.series.push_back(curve(benign, false, "benign: fires"));
    c.series.push_back(curve(benign, true, "benign: fires and changes the token"));
    if (!harmful.tv.empty()) {
      c.series.push_back(curve(harmful, false, "harmful: fires"));
      c.series.push_back(curve(harmful, true, "harmful: fires and changes the token"));
    }
    c.hlines.push_back(HLine{target_rate_, "target benign rate (" + objective_ + ")"});
    write_file_atomic(path, render_xy_chart(c));
  }

  ConfigSchema data_{"`data`"}, gate_{"`gate`"};
  ConfigSchema* top_ = nullptr;
  std::vector<std::string> benign_, harmful_;
  int64_t limit_ = 24, max_new_ = 32, batch_ = 8;
  std::string objective_ = "flip_rate";
  double target_rate_ = 0.05, tau_ = 8.0, reset_ = 0.6, keep_harmful_ = 1.0;
};

// ACD's opposite prompt optimisation (methods.md 2): SP and AP start as the target's own input
// embeddings of the safe and opposite system texts and are spliced into the system slot exactly as
// AcdStrategy splices them (the template rendered with an explicit empty system text, the prompt at
// system_begin); the model is frozen. Two independent runs:
//   L_SP = NLL(D_HR | SP) + UL(D_HA | SP) + NLL(D_S | SP),  L_AP = NLL(D_HA | AP) + UL(D_HR | AP) + NLL(D_S | AP)
// each term a token mean over its own subset, responses truncated to max_response_tokens.
class AcdPromptsPipeline : public Pipeline {
 public:
  void declare(ConfigSchema& top) override {
    data_.add("anchors", anchors_, "ACD anchor data: a `safedec data build` acd_anchors output directory or its data.jsonl")
        .required();
    data_.add("max_response_tokens", max_response_, "responses are truncated to this many tokens").range(1, 4096);
    data_.add("limit_per_subset", limit_per_subset_,
              "at most this many rows of each of D_HR, D_HA and D_S (a seeded sample; 0 = every row)")
        .range(0, 1000000);
    top.section("data", data_);
    prompts_.add("safe_text", safe_text_, "initial text of the safeguarding prompt SP");
    prompts_.add("opposite_text", opposite_text_, "initial text of the adversarial prompt AP");
    top.section("prompts", prompts_);
  }
  bool run(RunContext& ctx, json& metrics) override {
    auto& b = *ctx.target;
    std::string path = resolve_artifact_path(anchors_);
    if (fs::is_directory(path)) path += "/data.jsonl";
    SAFEDEC_CHECK(fs::is_regular_file(path), "acd_prompts: the anchor file ", path,
                  " does not exist; build it with: safedec data build --config configs/data/acd_anchors.yaml");
    ctx.dataset_files.push_back(path);
    struct Anchor {
      std::string id, subset, instruction, response;
    };
    std::vector<Anchor> rows;
    for_each_jsonl_line(path, "ACD anchor data", [&](const json& j, int64_t line) {
      const std::string where = path + " line " + std::to_string(line);
      for (const char* k : {"id", "subset", "instruction", "response"})
        SAFEDEC_CHECK(j.contains(k) && j[k].is_string(), where, ": needs a string `", k, "`");
      Anchor a{j["id"].get<std::string>(), j["subset"].get<std::string>(), j["instruction"].get<std::string>(),
               j["response"].get<std::string>()};
      SAFEDEC_CHECK(a.subset == "D_HR" || a.subset == "D_HA" || a.subset == "D_S", where,
                    ": `subset` must be D_HR, D_HA or D_S, got '", a.subset, "'");
      rows.push_back(std::move(a));
    });
    std::map<std::string, int64_t> available;
    for (const auto& r : rows) ++available[r.subset];
    if (limit_per_subset_ > 0) {
      // A seeded sample of each subset, kept in file order: a smaller, balanced anchor set (cost).
      std::map<std::string, std::vector<size_t>> of;
      for (size_t i = 0; i < rows.size(); ++i) of[rows[i].subset].push_back(i);
      std::mt19937_64 rng(static_cast<uint64_t>(ctx.common.seed) * 0x9E3779B97F4A7C15ULL + 0xAC0);
      std::vector<bool> keep(rows.size(), false);
      for (auto& [name, idx] : of) {
        std::shuffle(idx.begin(), idx.end(), rng);
        const size_t n = std::min(idx.size(), static_cast<size_t>(limit_per_subset_));
        for (size_t k = 0; k < n; ++k) keep[idx[k]] = true;
      }
      std::vector<Anchor> kept;
      for (size_t i = 0; i < rows.size(); ++i)
        if (keep[i]) kept.push_back(std::move(rows[i]));
      rows = std::move(kept);
    }
    for (const auto& [name, n] : available) ctx.counts[name + "_available"] = n;
    std::map<std::string, int64_t> counts;
    for (const auto& r : rows) {
      ++counts[r.subset];
      ctx.data_ids.push_back(r.id);
    }
    for (const char* s : {"D_HR", "D_HA", "D_S"}) {
      SAFEDEC_CHECK(counts[s] > 0, "acd_prompts: the anchor set ", path, " has no ", s, " rows (",
                    std::string(s) == "D_HR" ? "no harmful instruction was refused"
                    : std::string(s) == "D_HA" ? "no harmful instruction was answered"
                                               : "no benign instruction was answered",
                    "); both prompt losses need all three subsets");
      ctx.counts[s] = counts[s];
    }
    // Examples: the prompt rendered with an explicit empty system slot, the soft prompt spliced there.
    const int32_t eot = end_of_turn_id(*b.tokenizer);
    std::vector<LmExample> base;
    std::vector<std::string> subset;
    for (const auto& r : rows) {
      StrategyPrompt p = b.make_prompt(r.id, r.instruction, std::string());
      SAFEDEC_CHECK(p.system_begin >= 0, "acd_prompts: the chat template of ", b.entry.name,
                    " has no system slot to splice soft prompts into");
      std::vector<int32_t> resp = b.tokenizer->encode(r.response, /*add_special=*/false);
      if (static_cast<int64_t>(resp.size()) > max_response_) resp.resize(max_response_);
      else resp.push_back(eot);  // an answer that ended within the limit ends its turn
      LmExample e;
      e.id = r.id;
      e.ids = p.ids;
      e.ids.insert(e.ids.end(), resp.begin(), resp.end());
      e.target.assign(e.ids.size(), 0);
      for (size_t t = p.ids.size(); t < e.ids.size(); ++t) e.target[t] = 1;
      e.soft_prompt = 0;
      e.embeds_at = p.system_begin;
      base.push_back(std::move(e));
      subset.push_back(r.subset);
    }
    auto init = [&](const std::string& text) {
      torch::NoGradGuard ng;
      std::vector<int32_t> ids = b.tokenizer->encode(text, /*add_special=*/false);
      SAFEDEC_CHECK(!ids.empty(), "acd_prompts: an initial prompt text is empty");
      auto t = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kInt64).view({1, -1});
      return b.model->embed(t)[0].to(torch::kFloat32).clone();
    };
    torch::Tensor sp = init(safe_text_), ap = init(opposite_text_);
    // One run per prompt: terms (NLL on its own subset, UL on the opposite one, NLL on D_S).
    auto train_prompt = [&](torch::Tensor prompt, const std::string& wanted, const std::string& unwanted,
                            const std::string& tag) -> bool {
      std::vector<LmExample> ex = base;
      for (size_t i = 0; i < ex.size(); ++i)
        ex[i].term = subset[i] == wanted ? 0 : subset[i] == unwanted ? 1 : 2;
      LmTaskOptions opt;
      opt.soft_prompts = {prompt};
      opt.terms = {LossTerm{"nll_" + wanted, "nll", 1.0}, LossTerm{"ul_" + unwanted, "ul", 1.0},
                   LossTerm{"nll_D_S", "nll", 1.0}};
      opt.activation_checkpointing = ctx.common.activation_checkpointing;
      LmTask task(b.model, std::move(ex), opt);
      TrainLoopConfig loop = ctx.common.loop;
      loop.seed = ctx.common.seed;
      loop.stop_after = ctx.options.stop_after;
      const std::string dir = ctx.run_dir + "/" + tag;
      json m;
      Trainer trainer(task, loop, dir, ctx.config_hash);
      TrainResult r = trainer.run(ctx.options.resume);
      m["train"] = r.metrics();
      metrics[tag] = m;
      return !r.stopped_early;
    };
    const bool done_sp = train_prompt(sp, "D_HR", "D_HA", "sp");
    if (!done_sp) return false;
    const bool done_ap = train_prompt(ap, "D_HA", "D_HR", "ap");
    if (!done_ap) return false;
    ArtifactWriter w(ctx.artifact_dir(), new_manifest(ctx, ArtifactKind::SoftPrompts, b.model->config(), b.entry.path),
                     true);
    w.manifest().metrics = metrics;
    write_soft_prompts(w, SoftPrompts{sp, ap, ""});
    w.commit();
    return true;
  }

 private:
  ConfigSchema data_{"`data`"}, prompts_{"`prompts`"};
  std::string anchors_ = ".cache/data/acd_anchors";
  int64_t max_response_ = 100, limit_per_subset_ = 0;
  std::string safe_text_ = kAcdSafePrompt, opposite_text_ = kAcdOppositePrompt;
};

std::unique_ptr<Pipeline> make_pipeline(const std::string& name) {
  if (name == "safedecoding_expert") return std::make_unique<SafeDecodingExpert>();
  if (name == "ngsd_expert") return std::make_unique<NgsdExpert>();
  if (name == "risk_probe") return std::make_unique<RiskProbePipeline>();
  if (name == "ngsd_gate") return std::make_unique<NgsdGatePipeline>();
  if (name == "acd_prompts") return std::make_unique<AcdPromptsPipeline>();
  if (name == "harm_vector") {
    // Safety Arithmetic's harm vector (train/harm_vector_pipeline.cpp), handed this file's shared helpers.
    struct HarmVectorAdapter : Pipeline {
      HarmVectorPipeline p;
      void declare(ConfigSchema& top) override { p.declare(top); }
      bool run(RunContext& ctx, json& metrics) override {
        HarmVectorRunEnv env;
        env.target = ctx.target;
        env.run_dir = ctx.run_dir;
        env.artifact_dir = ctx.artifact_dir();
        env.seed = ctx.common.seed;
        env.max_seq_len = ctx.common.max_seq_len;
        env.activation_checkpointing = ctx.common.activation_checkpointing;
        env.dataset_files = &ctx.dataset_files;
        env.counts = &ctx.counts;
        env.data_ids = &ctx.data_ids;
        env.make_lora = [&](const ModelConfig& cfg) { return make_lora(ctx.common.lora, cfg, ctx.common.seed); };
        env.train = [&](LmTask& task, json& m) { return train_lm(ctx, task, m); };
        env.new_manifest = [&](ArtifactKind kind, const ModelConfig& cfg, const std::string& file) {
          return new_manifest(ctx, kind, cfg, file);
        };
        return p.run(env, metrics);
      }
    };
    return std::make_unique<HarmVectorAdapter>();
  }
  std::string known;
  for (const auto& k : known_pipelines()) known += (known.empty() ? "" : ", ") + k;
  fail("unknown training pipeline '", name, "'; known pipelines: ", known);
}

}  // namespace

std::vector<std::string> known_pipelines() {
  return {"safedecoding_expert", "ngsd_expert", "risk_probe", "ngsd_gate", "acd_prompts", "harm_vector"};
}

std::string default_train_dir(const std::string& config_path) {
  return source_dir() + "/.cache/train/" + fs::path(config_path).stem().string();
}

TrainRunResult run_train_config(const std::string& config_path, const TrainRunOptions& options) {
  SAFEDEC_CHECK(file_exists(config_path), "the train config ", config_path, " does not exist");
  YAML::Node node;
  try {
    node = YAML::LoadFile(config_path);
  } catch (const YAML::Exception& e) {
    fail(config_path, ":", e.mark.line + 1, ":", e.mark.column + 1, ": malformed YAML: ", e.msg);
  }
  SAFEDEC_CHECK(node.IsMap(), config_path, ": the train config must be a YAML mapping");
  SAFEDEC_CHECK(node["pipeline"] && node["pipeline"].IsScalar(), config_path,
                ": the train config needs `pipeline:` (one of ", [] {
                  std::string k;
                  for (const auto& p : known_pipelines()) k += (k.empty() ? "" : ", ") + p;
                  return k;
                }(), ")");
  auto pipeline = make_pipeline(node["pipeline"].Scalar());

  RunContext ctx;
  ctx.config_path = config_path;
  ctx.options = options;
  CommonConfig& c = ctx.common;
  c.name = fs::path(config_path).stem().string();
  ConfigSchema top("the train config"), train("`train`"), lora("`lora`");
  top.add("name", c.name, "run name");
  top.add("pipeline", c.pipeline, "what is trained").one_of(known_pipelines());
  top.add("model", c.model, "the target model (registered name or path)");
  top.add("seed", c.seed, "seed of shuffling, initialisation, augmentation and dropout");
  // The CLI's --threads cap (core/numbers.h max_threads: 4 x hardware threads, at most 256); 0 = not set.
  top.add("threads", c.threads, "CPU threads (0 = LibTorch's default, else 1..4 x this machine's hardware threads, at most 256)")
      .range(0, max_threads());
  declare_train(train, c);
  top.section("train", train);
  declare_lora(lora, c.lora);
  top.section("lora", lora);
  pipeline->declare(top);
  top.parse(node, config_path);
  c.loop.validate(config_path + " (train)");

  const YAML::Node resolved = top.dump();
  ctx.config_hash = sha256_hex(canonical_yaml(resolved));
  ctx.run_dir = options.out.empty() ? default_train_dir(config_path) : options.out;
  TrainRunResult result;
  result.run_dir = ctx.run_dir;
  // Data parallel (torchrun, src/dist): every rank runs the pipeline with its shard of each batch
  // (Trainer); rank 0 alone owns the run directory. The others work in a scratch directory of their
  // own, removed at the end, so nothing they write reaches the run.
  std::shared_ptr<DistGroup> group = dist_group();
  if (group && group->world_size() < 2) group = nullptr;
  struct Scratch {
    std::string dir;
    ~Scratch() {
      std::error_code ec;
      if (!dir.empty()) fs::remove_all(dir, ec);
    }
  } scratch;
  if (group) {
    group->check_same("the resolved train config, --out and flags (sha256)",
                      sha256_hex(ctx.config_hash + "\n" + ctx.run_dir + "\n" + std::to_string(options.resume) +
                                 std::to_string(options.force) + std::to_string(options.stop_after)));
    if (!group->is_main()) {
      scratch.dir = (fs::temp_directory_path() / ("safedec-train-rank" + std::to_string(group->rank()) + "-" +
                                                  std::to_string(static_cast<long long>(::getpid()))))
                        .string();
      fs::remove_all(scratch.dir);
      ctx.run_dir = scratch.dir;
    }
  }
  RunDirOptions ro;
  ro.resume = options.resume && scratch.dir.empty();
  ro.force = options.force;
  std::optional<RunDirectory> rd_opened;
  std::string verdict = "run";
  try {
    rd_opened = RunDirectory::open(ctx.run_dir, resolved, ro);
    if (rd_opened->resumed() && is_artifact_dir(ctx.artifact_dir()) && fs::exists(ctx.run_dir + "/metrics.json"))
      verdict = "complete";
  } catch (const Error&) {
    if (group) group->all_gather("failed");
    throw;
  }
  if (group) {
    const auto all = group->all_gather(verdict);
    SAFEDEC_CHECK(all[0] != "failed", "train: rank 0 could not open the run directory ", result.run_dir,
                  " (its error says why)");
    verdict = all[0];  // rank 0's run directory decides
  }
  RunDirectory& rd = *rd_opened;
  if (verdict == "complete") {
    const std::string artifact = result.run_dir + "/artifact";
    std::cerr << "[train] " << result.run_dir << " is complete; artifact " << artifact << "\n";
    result.artifact = artifact;
    result.complete = true;
    return result;
  }
  if (c.threads > 0) torch::set_num_threads(static_cast<int>(c.threads));
  const auto t0 = std::chrono::steady_clock::now();
  LoadOptions fp32;
  fp32.weights = LoadOptions::Weights::Fp32;  // training differentiates through fp32 weights only
  ctx.target = std::make_shared<ModelBundle>(load_model_bundle(c.model, fp32));
  ctx.model_files.push_back(ctx.target->entry.path);
  std::cerr << "[train] " << c.pipeline << " on " << ctx.target->entry.name << " -> " << ctx.run_dir << "\n";
  json metrics = json::object();
  const bool complete = pipeline->run(ctx, metrics);
  metrics["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  metrics["counts"] = ctx.counts;
  ManifestInputs mi;
  mi.seeds = {{"train", c.seed}};
  mi.model_files = ctx.model_files;
  mi.dataset_files = ctx.dataset_files;
  mi.extra = {{"pipeline", c.pipeline}, {"complete", complete}, {"counts", ctx.counts},
              {"data_ids_sha256", data_ids_hash(ctx.data_ids)}, {"torch_threads", torch::get_num_threads()}};
  if (group) mi.extra["world_size"] = group->world_size();
  rd.write_manifest(mi);
  result.metrics = metrics;
  result.complete = complete;
  if (complete) {
    write_file_atomic(ctx.run_dir + "/metrics.json", metrics.dump(2) + "\n");
    result.artifact = result.run_dir + "/artifact";
    std::cerr << "[train] artifact " << result.artifact << "\n";
  } else {
    std::cerr << "[train] stopped after step " << options.stop_after << "; continue with --resume\n";
  }
  return result;
}

}  // namespace safedec
