// `safedec bench generate`: prefill and decode throughput of the runtime on synthetic prompts of
// an exact token length, with forced output lengths (EOS ignored), median over repeats.
// `safedec bench methods`: the same for every safety method on the same chat prompts, with the
// token-generation-time ratio to plain decoding (ATGR), plus reference-style SafeDecoding and NGSD
// that recompute the whole prefix every step without a KV cache (as the public Python code does).
#include <nlohmann/json.hpp>
#include <sys/resource.h>
#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <sstream>
#include <chrono>
#include <iostream>

#include "cli/commands.h"
#include "cli/flags.h"
#include "core/error.h"
#include "decoding/model_bundle.h"
#include "decoding/plain_strategy.h"
#include "decoding/strategies/common.h"
#include "decoding/strategy_registry.h"
#include "decoding/timing.h"
#include "eval/dataset.h"
#include "kernels/ops.h"
#include "model/quant_kernels.h"

namespace safedec::cli {

namespace {

struct BenchArgs {
  std::string model = "smollm2-135m-instruct";
  int64_t batch = 1, prompt_tokens = 128, new_tokens = 64, repeats = 3;
  int threads = 0;
  bool json = false;
  std::string weights = "config";  // config | fp32 | quantized
};

LoadOptions weights_options(const std::string& w) {
  LoadOptions o;
  if (w == "fp32") o.weights = LoadOptions::Weights::Fp32;
  else if (w == "quantized") o.weights = LoadOptions::Weights::Quantized;
  else SAFEDEC_CHECK(w == "config", "--weights must be config, fp32 or quantized (got '", w, "')");
  return o;
}

std::string weights_label(const CausalLM& lm) {
  return lm.quantized() ? std::string("quantized/") + quant::isa_name(quant::best_isa()) : "fp32";
}

double peak_rss_mb() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;  // Linux reports KiB
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Benign filler text; row r starts at a different word so rows differ.
std::vector<StrategyPrompt> synthetic_prompts(const ModelBundle& b, int64_t batch, int64_t tokens) {
  const std::string text =
      "The history of astronomy spans thousands of years. Early observers tracked the motions of the sun, "
      "the moon and the planets, built calendars for farming, and named the constellations. Later, telescopes "
      "revealed moons around Jupiter, the phases of Venus and countless faint stars in the Milky Way. ";
  std::string long_text;
  while (static_cast<int64_t>(long_text.size()) < tokens * 8) long_text += text;
  std::vector<int32_t> all = b.tokenizer->encode(long_text, /*add_special=*/false);
  SAFEDEC_CHECK(static_cast<int64_t>(all.size()) >= tokens + batch, "synthetic prompt too short");
  std::vector<StrategyPrompt> out;
  for (int64_t r = 0; r < batch; ++r) {
    StrategyPrompt p;
    p.id = std::to_string(r);
    p.ids.assign(all.begin() + r, all.begin() + r + tokens);
    out.push_back(std::move(p));
  }
  return out;
}

int run_bench_generate(const BenchArgs& a) {
  SAFEDEC_CHECK(a.batch >= 1, "--batch must be at least 1 (got ", a.batch, ")");
  SAFEDEC_CHECK(a.prompt_tokens >= 1 && a.new_tokens >= 2, "--prompt-tokens must be >= 1 and --new-tokens >= 2");
  SAFEDEC_CHECK(a.repeats >= 1, "--repeats must be at least 1");
  if (a.threads > 0) torch::set_num_threads(a.threads);
  ModelBundle bundle = load_model_bundle(a.model, weights_options(a.weights));
  auto prompts = synthetic_prompts(bundle, a.batch, a.prompt_tokens);
  GenerationOptions opt;
  opt.ignore_eos = true;
  torch::InferenceMode guard;
  {  // warm-up: allocator, thread pool, rope tables
    opt.max_new_tokens = 4;
    Generator warm(opt);
    PlainStrategy s(bundle.model, bundle.pad_id());
    warm.run(s, prompts);
  }
  opt.max_new_tokens = a.new_tokens;
  Generator gen(opt);
  std::vector<double> prefill, decode;
  for (int64_t i = 0; i < a.repeats; ++i) {
    PlainStrategy s(bundle.model, bundle.pad_id());
    GenerationStats st;
    gen.run(s, prompts, &st);
    // decode_seconds covers the new_tokens - 1 forward steps after the prefill's first token.
    prefill.push_back(st.prefill_seconds);
    decode.push_back(st.decode_seconds / static_cast<double>(a.new_tokens - 1));
    std::cerr << "[bench] repeat " << i + 1 << "/" << a.repeats << ": prefill " << st.prefill_seconds * 1e3
              << " ms, decode " << decode.back() * 1e3 << " ms/step\n";
  }
  const double step_s = median(decode), prefill_s = median(prefill);
  nlohmann::json j = {{"model", bundle.entry.name},
                      {"batch", a.batch},
                      {"prompt_tokens", a.prompt_tokens},
                      {"new_tokens", a.new_tokens},
                      {"prefill_tok_s", a.batch * a.prompt_tokens / prefill_s},
                      {"decode_tok_s", a.batch / step_s},
                      {"ms_per_token", step_s * 1e3},
                      {"peak_rss_mb", peak_rss_mb()},
                      {"weights", weights_label(*bundle.model)},
                      {"threads", torch::get_num_threads()}};
  std::cout << (a.json ? j.dump() : j.dump(2)) << "\n";
  return 0;
}

// Memory-copy bandwidth (GB/s, counting bytes read + written) of a buffer far larger than the
// caches, best of several passes, and the decode bandwidth floor it implies for a model: every
// decode step must stream all weights the forward multiplies with (the tied embedding once, as the
// LM head; an untied embedding table is only looked up; quantised linears by their block bytes) at
// least once. Also a read-only figure (a sum over the buffer), which most CPUs stream faster.
int run_bench_bandwidth(const BenchArgs& a) {
  if (a.threads > 0) torch::set_num_threads(a.threads);
  const int64_t n = int64_t(1) << 28;  // 1 GiB of fp32 per buffer
  auto src = torch::ones({n}, torch::kFloat32);
  auto dst = torch::empty({n}, torch::kFloat32);
  double best = 0, best_read = 0;
  for (int i = 0; i < 5; ++i) {
    auto t = std::chrono::steady_clock::now();
    dst.copy_(src);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    best = std::max(best, 2.0 * n * 4 / s / 1e9);
    t = std::chrono::steady_clock::now();
    volatile float sink = src.sum().item<float>();
    (void)sink;
    s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    best_read = std::max(best_read, 1.0 * n * 4 / s / 1e9);
  }
  src.reset();
  dst.reset();
  ModelBundle bundle = load_model_bundle(a.model, weights_options(a.weights));
  const double weight_bytes = static_cast<double>(bundle.model->weight_stream_bytes());
  const double floor_s = weight_bytes / (best * 1e9 / 2.0);  // a step reads weights; copy GB/s counts read+write
  const double floor_read_s = weight_bytes / (best_read * 1e9);
  nlohmann::json j = {{"model", bundle.entry.name},
                      {"copy_gb_s", best},
                      {"read_gb_s", best / 2.0},
                      {"weight_bytes", weight_bytes},
                      {"floor_ms_per_step", floor_s * 1e3},
                      {"floor_decode_tok_s_batch1", 1.0 / floor_s},
                      {"sum_read_gb_s", best_read},
                      {"floor_decode_tok_s_batch1_sum_read", 1.0 / floor_read_s},
                      {"weights", weights_label(*bundle.model)},
                      {"threads", torch::get_num_threads()}};
  std::cout << (a.json ? j.dump() : j.dump(2)) << "\n";
  return 0;
}

struct MethodsArgs {
  std::string model = "smollm2-135m-instruct";
  std::string methods = "plain,safedecoding,ngsd,acd,steer";
  int64_t batch = 1, prompt_tokens = 64, new_tokens = 64, repeats = 3;
  int threads = 0;
  bool json = false, reference = true;
  int64_t reference_repeats = 1;  // the no-cache reference runs are slow
  std::string prefix_cache = "on";  // on | off | both (each method with and without the PrefixKvStore)
  bool grouped_prefill = true;      // rows of very different lengths prefill in separate forwards
  std::string dataset;              // non-empty: the first `batch` prompts of this evaluation set's seeded sample
};

// `batch` chat prompts of an evaluation set (its seeded --limit sample, seed 0), never printed.
std::vector<StrategyPrompt> dataset_prompts(const ModelBundle& b, const std::string& name, int64_t batch) {
  const DatasetRegistry registry = DatasetRegistry::builtin();
  const DatasetSpec& spec = registry.get(name);
  check_dataset_use(spec, DatasetUse::Evaluate);
  DatasetLoadOptions o;
  o.limit = static_cast<size_t>(batch);
  Dataset d = load_dataset(spec, o);
  SAFEDEC_CHECK(static_cast<int64_t>(d.examples.size()) == batch, "the dataset ", name, " has only ",
                d.examples.size(), " prompts but --batch is ", batch);
  std::vector<StrategyPrompt> out;
  for (const auto& e : d.examples)
    out.push_back(b.make_prompt(e.id, e.prompt, e.system.empty() ? std::nullopt : std::optional<std::string>(e.system)));
  return out;
}

// Chat prompts whose user text is ~`tokens` tokens of benign filler (row r starts r words later).
std::vector<StrategyPrompt> chat_prompts(const ModelBundle& b, int64_t batch, int64_t tokens) {
  auto raw = synthetic_prompts(b, batch, tokens);
  std::vector<StrategyPrompt> out;
  for (auto& p : raw) out.push_back(b.make_prompt(p.id, b.tokenizer->decode(p.ids, true)));
  return out;
}

// Reference-style decoding without a KV cache: every step re-runs the whole prefix (prompt +
// generated tokens) through the model(s), as the public SafeDecoding and NGSD code does.
// SafeDecoding: base + expert rows for the first m tokens, then (like the reference's final
// generate() call) the base continues with a cache. NGSD: target and expert every step.
class RecomputeStrategy : public Strategy {
 public:
  RecomputeStrategy(std::string method, const MethodConfig& cfg, StrategyEnv env, std::shared_ptr<const CausalLM> expert)
      : method_(std::move(method)), cfg_(cfg), env_(std::move(env)), expert_(std::move(expert)) {}
  std::string name() const override { return method_ + "_nocache"; }
  void start(const std::vector<StrategyPrompt>& prompts, int64_t max_new_tokens) override {
    base_.clear();
    expert_rows_.clear();
    const std::optional<std::string> expert_system = method_descriptor(method_).prompted_expert(cfg_);
    for (const auto& p : prompts) {
      base_.push_back(p.ids);
      expert_rows_.push_back(expert_system && env_.render ? env_.render(p, *expert_system).ids : p.ids);
    }
    max_new_ = max_new_tokens;
    fed_ = 0;
    v_ = torch::zeros({static_cast<int64_t>(prompts.size())}, torch::kFloat32);
  }
  torch::Tensor next_scores(int64_t) override {
    const int64_t B = static_cast<int64_t>(base_.size());
    auto rows = [](const std::vector<std::vector<int32_t>>& ids) {
      std::vector<BranchRow> r;
      for (const auto& x : ids) r.push_back(BranchRow{x, {}, -1});
      return r;
    };
    if (method_ == "safedecoding") {
      if (fed_ >= cfg_.safedecoding.m) {
        if (!cached_.defined()) {
          cached_logits_ = prefill_rows(*env_.model, rows(base_), max_new_, env_.pad_id, cached_);
        }
        return cached_logits_;
      }
      auto all = rows(base_);
      for (auto& r : rows(expert_rows_)) all.push_back(r);
      KvCache scratch;
      torch::Tensor l = prefill_rows(*env_.model, all, 0, env_.pad_id, scratch);
      auto out = safedecoding_mix(l.narrow(0, 0, B), l.narrow(0, B, B), cfg_.safedecoding.c, cfg_.safedecoding.alpha);
      return out.probs.log();
    }
    KvCache scratch_b, scratch_e;
    torch::Tensor lb = prefill_rows(*env_.model, rows(base_), 0, env_.pad_id, scratch_b);
    torch::Tensor le = prefill_rows(*expert_, rows(expert_rows_), 0, env_.pad_id, scratch_e);
    NgsdGateParams gate;
    auto out = ngsd_step(lb, le, torch::full({B}, static_cast<float>(cfg_.ngsd.alpha)), v_, gate, true);
    return out.probs.log();
  }
  void advance(const std::vector<int32_t>& tokens) override {
    for (size_t r = 0; r < tokens.size(); ++r) {
      base_[r].push_back(tokens[r]);
      expert_rows_[r].push_back(tokens[r]);
    }
    ++fed_;
    if (cached_.defined()) cached_logits_ = step_rows(*env_.model, tokens, cached_);
  }
  void keep_rows(const std::vector<int64_t>& rows) override {
    fail("the reference-style benchmark strategy runs with forced lengths only (no row may finish early)");
  }

 private:
  std::string method_;
  MethodConfig cfg_;
  StrategyEnv env_;
  std::shared_ptr<const CausalLM> expert_;
  std::vector<std::vector<int32_t>> base_, expert_rows_;
  int64_t max_new_ = 0, fed_ = 0;
  torch::Tensor v_;
  KvCache cached_;
  torch::Tensor cached_logits_;
};

int run_bench_methods(const MethodsArgs& a) {
  SAFEDEC_CHECK(a.batch >= 1 && a.new_tokens >= 2 && a.prompt_tokens >= 1 && a.repeats >= 1,
                "--batch >= 1, --new-tokens >= 2, --prompt-tokens >= 1 and --repeats >= 1 are required");
  if (a.threads > 0) torch::set_num_threads(a.threads);
  set_grouped_prefill(a.grouped_prefill);
  std::vector<std::string> methods;
  {
    std::string m;
    std::stringstream ss(a.methods);
    while (std::getline(ss, m, ','))
      if (!m.empty()) methods.push_back(m);
  }
  SAFEDEC_CHECK(!methods.empty(), "--methods is empty");
  SAFEDEC_CHECK(a.prefix_cache == "on" || a.prefix_cache == "off" || a.prefix_cache == "both",
                "--prefix-cache must be on, off or both, got '", a.prefix_cache, "'");
  if (std::find(methods.begin(), methods.end(), "plain") == methods.end()) methods.insert(methods.begin(), "plain");
  for (const auto& m : methods) check_method_name(m);
  ModelBundle bundle = load_model_bundle(a.model);
  auto prompts = a.dataset.empty() ? chat_prompts(bundle, a.batch, a.prompt_tokens)
                                   : dataset_prompts(bundle, a.dataset, a.batch);
  double mean_prompt_tokens = 0;
  for (const auto& p : prompts) mean_prompt_tokens += static_cast<double>(p.ids.size()) / prompts.size();
  std::cerr << "[bench] prompts: " << (a.dataset.empty() ? "benign filler" : a.dataset) << ", " << prompts.size()
            << " rows, mean " << mean_prompt_tokens << " tokens with the chat template\n";
  torch::InferenceMode guard;

  // Every timed configuration; the runs are interleaved (repeat r of every method, then r + 1) so
  // that changes in machine load hit all methods alike.
  struct Entry {
    std::string label, base;  // base: the cached method a reference entry is compared with
    std::function<std::unique_ptr<Strategy>()> make;
    int64_t repeats;
    std::vector<double> total, step, prefill;
    std::string plain = "plain";  // the entry ATGR divides by
    bool prefix_cache = true;
  };
  std::vector<Entry> entries;
  std::vector<std::unique_ptr<MethodFactory>> factories;
  std::map<std::string, MethodConfig> configs;
  for (const bool with_prefixes : {true, false}) {
    if ((with_prefixes && a.prefix_cache == "off") || (!with_prefixes && a.prefix_cache == "on")) continue;
    const std::string suffix = !with_prefixes && a.prefix_cache == "both" ? "[prefix_cache=off]" : "";
    for (const auto& m : methods) {
      MethodConfig cfg = load_method_config(m);
      cfg.prefix_cache = with_prefixes;
      if (with_prefixes || a.prefix_cache == "off") configs[m] = cfg;  // the reference entries copy these
      factories.push_back(std::make_unique<MethodFactory>(cfg, bundle));
      std::cerr << "[bench] method " << factories.back()->describe() << "\n";
      MethodFactory* f = factories.back().get();
      Entry e{m + suffix, "", [f] { return f->make(); }, a.repeats, {}, {}};
      e.plain = "plain" + suffix;
      e.prefix_cache = with_prefixes;
      entries.push_back(std::move(e));
    }
  }
  if (a.reference) {
    StrategyEnv env;
    env.model = bundle.model;
    env.pad_id = bundle.pad_id();
    env.render = bundle_renderer(bundle);
    for (const std::string m : {"safedecoding", "ngsd"}) {
      if (!configs.count(m)) continue;
      const MethodConfig cfg = configs[m];
      std::shared_ptr<const CausalLM> expert;
      if (m == "ngsd") {
        SAFEDEC_CHECK(cfg.ngsd.expert == "self_truncated" || cfg.ngsd.expert == "system_prompt",
                      "the reference-style NGSD timing supports the system_prompt and self_truncated experts only");
        if (cfg.ngsd.expert == "system_prompt") {
          expert = bundle.model;
        } else {
          const int64_t k = cfg.ngsd.expert_layers > 0 ? cfg.ngsd.expert_layers
                                                       : std::max<int64_t>(1, bundle.model->config().n_layers / 3);
          expert = bundle.model->truncated(k);
        }
      }
      entries.push_back({m + "_nocache", m,
                         [m, cfg, env, expert] { return std::make_unique<RecomputeStrategy>(m, cfg, env, expert); },
                         std::min(a.repeats, a.reference_repeats), {}, {}});
    }
  }
  for (auto& e : entries) {  // warm-up: allocator, thread pool, rope tables
    auto s = e.make();
    timed_generation(*s, prompts, 4);
  }
  for (int64_t r = 0; r < a.repeats; ++r) {
    for (auto& e : entries) {
      if (r >= e.repeats) continue;
      auto s = e.make();
      const TimedGeneration t = timed_generation(*s, prompts, a.new_tokens);  // decoding/timing.h
      e.total.push_back(t.total_seconds());
      e.prefill.push_back(t.prefill_seconds);
      e.step.push_back(t.seconds_per_decode_step());
      std::cerr << "[bench] " << e.label << " repeat " << r + 1 << "/" << e.repeats << ": " << e.total.back() * 1e3
                << " ms total, " << e.step.back() * 1e3 << " ms/decode step\n";
    }
  }
  nlohmann::json out = nlohmann::json::array();
  std::map<std::string, std::pair<double, double>> ms_of;  // label -> (ms_per_token, decode step s)
  for (auto& e : entries) {
    // Mean wall time per generated token (prefill included, as ATGR is defined on whole generations).
    const double ms = median(e.total) * 1e3 / static_cast<double>(a.batch * a.new_tokens);
    ms_of[e.label] = {ms, median(e.step)};
  }
  for (auto& e : entries) {
    const auto [ms, step] = ms_of.at(e.label);
    const auto plain = ms_of.at(e.plain);
    nlohmann::json j = {{"method", e.label},
                        {"batch", a.batch},
                        {"prompts", a.dataset.empty() ? std::string("filler") : a.dataset},
                        {"prompt_tokens", a.dataset.empty() ? a.prompt_tokens : int64_t{-1}},
                        {"mean_rendered_prompt_tokens", mean_prompt_tokens},
                        {"new_tokens", a.new_tokens},
                        {"repeats", static_cast<int64_t>(e.total.size())},
                        {"decode_tok_s", a.batch / step},
                        {"ms_per_token", ms},
                        {"atgr", ms / plain.first},
                        {"decode_atgr", step / plain.second},
                        {"prefill_ms", median(e.prefill) * 1e3},
                        {"prefix_cache", e.prefix_cache},
                        {"grouped_prefill", a.grouped_prefill}};
    if (!e.base.empty()) j["speedup_of_cached"] = ms / ms_of.at(e.base).first;
    out.push_back(j);
  }
  std::cout << (a.json ? out.dump() : out.dump(2)) << "\n";
  return 0;
}

}  // namespace

Runner add_bench(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto* bench = app.add_subcommand("bench", "Benchmarks that print figures");
  bench->require_subcommand(1);
  add_bench_train(bench);  // src/cli/bench_train.cpp
  auto* gen = bench->add_subcommand("generate", "Prefill/decode throughput of the runtime (forced lengths)");
  gen->add_option("--model", a->model, "Registered model name or GGUF path")->capture_default_str();
  add_int_flag(gen, "--batch", a->batch, 1, kMaxBatchFlag, "Sequences per batch")->capture_default_str();
  add_int_flag(gen, "--prompt-tokens", a->prompt_tokens, 1, kMaxNewTokensFlag, "Prompt length in tokens")->capture_default_str();
  add_int_flag(gen, "--new-tokens", a->new_tokens, 1, kMaxNewTokensFlag, "Generated tokens per sequence")
      ->capture_default_str();
  add_int_flag(gen, "--repeats", a->repeats, 1, 1000, "Timed runs (the median is reported)")->capture_default_str();
  add_threads_flag(gen, a->threads);
  gen->add_flag("--json", a->json, "One JSON object on one line");
  gen->add_option("--weights", a->weights, "config (the model's configs/models entry), fp32 or quantized")
      ->capture_default_str();
  auto* bw = bench->add_subcommand("bandwidth", "Memory-copy bandwidth and the decode bandwidth floor of a model");
  bw->add_option("--model", a->model, "Registered model name or GGUF path")->capture_default_str();
  add_threads_flag(bw, a->threads);
  bw->add_flag("--json", a->json, "One JSON object on one line");
  bw->add_option("--weights", a->weights, "config (the model's configs/models entry), fp32 or quantized")
      ->capture_default_str();
  auto m = std::make_shared<MethodsArgs>();
  auto* meth = bench->add_subcommand("methods", "Per-token time of each safety method vs plain (ATGR), forced lengths");
  meth->add_option("--model", m->model, "Registered model name or GGUF path")->capture_default_str();
  meth->add_option("--methods", m->methods, "Comma-separated methods (configs/methods/<name>.yaml)")
      ->capture_default_str();
  add_int_flag(meth, "--batch", m->batch, 1, kMaxBatchFlag, "Sequences per batch")->capture_default_str();
  add_int_flag(meth, "--prompt-tokens", m->prompt_tokens, 1, kMaxNewTokensFlag,
               "User-text length in tokens (benign filler prompts)")
      ->capture_default_str();
  meth->add_option("--dataset", m->dataset,
                   "Time on the first --batch prompts of this evaluation set's seeded sample instead of filler "
                   "(configs/datasets; prompts are never printed)");
  add_int_flag(meth, "--new-tokens", m->new_tokens, 1, kMaxNewTokensFlag, "Generated tokens per sequence")
      ->capture_default_str();
  add_int_flag(meth, "--repeats", m->repeats, 1, 1000, "Timed runs (the median is reported)")->capture_default_str();
  add_threads_flag(meth, m->threads);
  meth->add_flag("--json", m->json, "One JSON list on one line");
  add_int_flag(meth, "--reference-repeats", m->reference_repeats, 1, 1000, "Timed runs of the slow no-KV-cache references")
      ->capture_default_str();
  meth->add_option("--prefix-cache", m->prefix_cache,
                   "on: system turns computed once per run (PrefixKvStore); off: whole prompts every batch; "
                   "both: every method both ways (ATGR against plain with the same setting)")
      ->capture_default_str();
  meth->add_flag("!--no-grouped-prefill", m->grouped_prefill,
                 "Prefill every batch in one padded forward (default: rows of very different lengths in groups)");
  meth->add_flag("!--no-reference", m->reference, "Skip the reference-style no-KV-cache SafeDecoding/NGSD timings");
  return [a, gen, bw, m, meth] {
    if (gen->parsed()) return run_bench_generate(*a);
    if (bw->parsed()) return run_bench_bandwidth(*a);
    if (meth->parsed()) return run_bench_methods(*m);
    return 2;
  };
}

}  // namespace safedec::cli
