// `safedec bench train`: training throughput (tokens/s) and peak memory of full and LoRA fine-tunes,
// on synthetic right-padded batches, through the same LmTask the trainer drives and the trainer's
// AdamW update. experiments/bench_train_torch.py is the PyTorch eager counterpart (same batches, same
// hyper-parameters, same JSON keys); experiments/bench_train.sh runs both interleaved.
//
// What one timed step is: collate + forward + backward (LmTask::forward_backward over the whole batch,
// token-mean NLL) + global-norm gradient clipping + AdamW, as in Trainer::run. Warm-up steps run the
// same way and are not timed. Tokens counted are the real (non-pad) tokens of the batch.
//
// Synthetic data: row b of every batch has L_b = T - floor(b T / 4B) tokens (the first row is full
// length, the last about 3/4 of it: right padding to T), every token after the first is a target, and
// token (s, b, t) is splitmix64-derived from the seed, so the Python script builds identical batches.
//
// Memory: peak RSS is the process's own (getrusage ru_maxrss = VmHWM, loading included). The training
// peak is measured apart from the loading one by resetting the kernel's high-water mark
// (/proc/self/clear_refs "5") after the model is loaded and malloc_trim'd; `--mode both` runs each mode
// in its own child process (this executable again) so one mode's peak never includes the other's.
#include <malloc.h>
#include <nlohmann/json.hpp>
#include <sys/resource.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/flags.h"
#include "core/error.h"
#include "core/files.h"
#include "core/model_registry.h"
#include "model/causal_lm.h"
#include "model/lora.h"
#include "train/lm_task.h"
#include "train/trainer.h"

namespace safedec::cli {

namespace {

using nlohmann::json;

struct BenchTrainArgs {
  std::string model = "smollm2-135m-instruct";
  std::string mode = "both";  // full | lora | both
  int64_t batch = 4, seq_len = 128, steps = 5, warmup = 1;
  int threads = 0;
  int64_t lora_r = 16;
  double lora_alpha = 64.0, lora_dropout = 0.0;
  std::string lora_targets = "q_proj,v_proj";
  bool activation_checkpointing = false;
  double lr = 1e-4, weight_decay = 0.0, clip_grad_norm = 1.0;
  uint64_t seed = 0;
  bool json = false;
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// SplitMix64 finaliser; token(s, b, t) = mix(mix(mix(mix(seed) ^ s) ^ b) ^ t) % V (same in Python).
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

int64_t row_length(int64_t T, int64_t B, int64_t b) { return T - (b * T) / (4 * B); }

std::vector<LmExample> synthetic_examples(const BenchTrainArgs& a, int64_t vocab, int64_t n_steps) {
  std::vector<LmExample> out;
  const uint64_t s0 = splitmix64(a.seed);
  for (int64_t s = 0; s < n_steps; ++s) {
    const uint64_t ks = splitmix64(s0 ^ static_cast<uint64_t>(s));
    for (int64_t b = 0; b < a.batch; ++b) {
      const uint64_t kb = splitmix64(ks ^ static_cast<uint64_t>(b));
      LmExample e;
      e.id = "s" + std::to_string(s) + "b" + std::to_string(b);
      const int64_t L = row_length(a.seq_len, a.batch, b);
      for (int64_t t = 0; t < L; ++t)
        e.ids.push_back(static_cast<int32_t>(splitmix64(kb ^ static_cast<uint64_t>(t)) % static_cast<uint64_t>(vocab)));
      e.target.assign(L, 1);
      e.target[0] = 0;
      out.push_back(std::move(e));
    }
  }
  return out;
}

// Resets the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); false when refused.
bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  if (!out.good()) return false;
  out << "5";
  out.flush();
  return out.good();
}

int64_t process_peak_rss_bytes() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;  // Linux reports KiB
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double quantile_of(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos)), hi = std::min(v.size() - 1, lo + 1);
  return v[lo] + (pos - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

std::vector<std::string> split_csv(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// One mode in this process.
json run_one_mode(const BenchTrainArgs& a, const std::string& mode) {
  if (a.threads > 0) torch::set_num_threads(a.threads);
  const ModelEntry entry = resolve_model(a.model);
  LoadOptions lo;
  lo.weights = LoadOptions::Weights::Fp32;  // training needs fp32 weights
  const double t_load = now_s();
  std::shared_ptr<CausalLM> lm = CausalLM::load(entry.path, lo);
  const double load_s = now_s() - t_load;
  const ModelConfig& cfg = lm->config();
  const int64_t weight_bytes = lm->parameter_bytes();
  int64_t weight_params = 0;
  for (const auto& [name, t] : lm->named_parameters()) weight_params += t.numel();

  LmTaskOptions opt;
  opt.activation_checkpointing = a.activation_checkpointing;
  opt.train_full = mode == "full";
  if (mode == "lora") {
    LoraAdapter::Options lora;
    lora.rank = a.lora_r;
    lora.alpha = a.lora_alpha;
    lora.dropout = a.lora_dropout;
    lora.targets = split_csv(a.lora_targets);
    lora.seed = a.seed;
    opt.lora = std::make_shared<LoraAdapter>(cfg, lora, torch::TensorOptions().dtype(torch::kFloat32));
  }
  const int64_t n_steps = a.warmup + a.steps;
  LmTask task(lm, synthetic_examples(a, cfg.vocab_size, n_steps), opt);

  // The trainer's parameter set-up: trained leaves get requires_grad and zeroed AdamW moments.
  std::vector<TrainParam> params = task.parameters();
  std::vector<torch::Tensor> exp_avg, exp_avg_sq;
  int64_t trained_params = 0;
  for (auto& p : params) {
    p.tensor.requires_grad_(true);
    exp_avg.push_back(torch::zeros_like(p.tensor));
    exp_avg_sq.push_back(torch::zeros_like(p.tensor));
    trained_params += p.tensor.numel();
  }
  // The loading peak stays in ru_maxrss; the training peak starts from the RSS after loading.
  malloc_trim(0);
  const int64_t rss_after_load = proc_status_bytes("VmRSS");
  const bool peak_reset = reset_peak_rss();

  OptimConfig o;
  o.lr = a.lr;
  o.weight_decay = a.weight_decay;
  o.clip_grad_norm = a.clip_grad_norm;
  o.validate("bench train");
  std::vector<double> step_s, fwd_bwd_s, optim_s, losses;
  int64_t tokens_per_step = 0;
  for (int64_t s = 0; s < n_steps; ++s) {
    std::vector<int64_t> micro;
    for (int64_t b = 0; b < a.batch; ++b) micro.push_back(s * a.batch + b);
    const std::vector<double> norm = task.units(micro);
    const double t0 = now_s();
    for (auto& p : params) p.tensor.mutable_grad() = torch::Tensor();
    MicroResult r = task.forward_backward(micro, norm);
    const double t1 = now_s();
    // Trainer::run's update (the same functions): global L2 gradient norm, clipping, AdamW.
    const double gnorm = global_grad_norm(params);
    SAFEDEC_CHECK(std::isfinite(gnorm) && std::isfinite(r.term_sums[0]), "bench train: non-finite loss or gradient at step ",
                  s + 1, " (loss sum ", r.term_sums[0], ", gradient norm ", gnorm, ")");
    clip_and_adamw_step(params, exp_avg, exp_avg_sq, o, o.lr, s + 1, gnorm);
    const double t2 = now_s();
    tokens_per_step = r.tokens;
    losses.push_back(r.term_sums[0] / norm[0]);
    if (s < a.warmup) continue;
    step_s.push_back(t2 - t0);
    fwd_bwd_s.push_back(t1 - t0);
    optim_s.push_back(t2 - t1);
    std::cerr << "bench train [" << mode << "] step " << (s - a.warmup + 1) << "/" << a.steps << ": "
              << static_cast<double>(r.tokens) / (t2 - t0) << " tok/s, loss " << losses.back() << "\n";
  }
  std::vector<double> tok_s;
  for (double t : step_s) tok_s.push_back(static_cast<double>(tokens_per_step) / t);
  const int64_t peak = process_peak_rss_bytes();
  const int64_t train_peak = peak_reset ? proc_status_bytes("VmHWM") : peak;
  const double mib = 1024.0 * 1024.0;
  json j = {{"bench", "train"},
            {"framework", "safedec"},
            {"model", a.model},
            {"mode", mode},
            {"batch", a.batch},
            {"seq_len", a.seq_len},
            {"steps", a.steps},
            {"warmup", a.warmup},
            {"threads", torch::get_num_threads()},
            {"activation_checkpointing", a.activation_checkpointing},
            {"tokens_per_step", tokens_per_step},
            {"tokens_per_s", median_of(tok_s)},
            {"tokens_per_s_min", *std::min_element(tok_s.begin(), tok_s.end())},
            {"tokens_per_s_max", *std::max_element(tok_s.begin(), tok_s.end())},
            {"tokens_per_s_q25", quantile_of(tok_s, 0.25)},
            {"tokens_per_s_q75", quantile_of(tok_s, 0.75)},
            {"step_s", median_of(step_s)},
            {"fwd_bwd_s", median_of(fwd_bwd_s)},
            {"optim_s", median_of(optim_s)},
            {"load_s", load_s},
            {"loss_first", losses.front()},
            {"loss_last", losses.back()},
            {"weight_params", weight_params},
            {"trained_params", trained_params},
            {"weight_bytes_fp32", weight_bytes},
            {"rss_after_load_mb", static_cast<double>(rss_after_load) / mib},
            {"peak_rss_mb", static_cast<double>(peak) / mib},
            {"train_peak_rss_mb", static_cast<double>(train_peak) / mib},
            {"peak_rss_over_weights", static_cast<double>(peak) / static_cast<double>(weight_bytes)},
            {"train_peak_rss_over_weights", static_cast<double>(train_peak) / static_cast<double>(weight_bytes)},
            {"peak_reset", peak_reset}};
  if (mode == "lora")
    j["lora"] = {{"r", a.lora_r}, {"alpha", a.lora_alpha}, {"dropout", a.lora_dropout},
                 {"targets", split_csv(a.lora_targets)}};
  return j;
}

// Runs one mode in a child process (this executable, --mode MODE --json) and returns its JSON.
json run_mode_in_child(const BenchTrainArgs& a, const std::string& mode) {
  // Resolved here: inside popen's shell, /proc/self/exe would name the shell.
  std::error_code ec;
  const std::string exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  SAFEDEC_CHECK(!ec && !exe.empty(), "bench train: cannot find this executable (/proc/self/exe) to run one mode per "
                "process; run --mode full and --mode lora separately");
  std::ostringstream cmd;
  cmd.precision(17);
  cmd << shell_quote(exe) << " bench train --json --mode " << mode << " --model " << shell_quote(a.model) << " --batch "
      << a.batch << " --seq-len " << a.seq_len << " --steps " << a.steps << " --warmup " << a.warmup
      << (a.threads > 0 ? " --threads " + std::to_string(a.threads) : std::string()) << " --lora-r " << a.lora_r
      << " --lora-alpha " << a.lora_alpha << " --lora-dropout "
      << a.lora_dropout << " --lora-targets " << shell_quote(a.lora_targets) << " --lr " << a.lr
      << " --weight-decay " << a.weight_decay << " --clip-grad-norm " << a.clip_grad_norm << " --seed " << a.seed
      << (a.activation_checkpointing ? " --activation-checkpointing" : "");
  FILE* p = popen(cmd.str().c_str(), "r");
  SAFEDEC_CHECK(p != nullptr, "bench train: cannot start the child process for mode ", mode);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  SAFEDEC_CHECK(status == 0, "bench train: the ", mode, " run failed (exit status ", status,
                "); its message is above");
  try {
    return json::parse(out);
  } catch (const json::exception& e) {
    fail("bench train: the ", mode, " run printed no JSON object: ", e.what());
  }
}

void print_human(const json& j) {
  std::printf("%-6s %s  batch %lld x seq %lld, %lld steps (+%lld warm-up), %lld threads%s\n",
              j["mode"].get<std::string>().c_str(), j["model"].get<std::string>().c_str(),
              static_cast<long long>(j["batch"].get<int64_t>()), static_cast<long long>(j["seq_len"].get<int64_t>()),
              static_cast<long long>(j["steps"].get<int64_t>()), static_cast<long long>(j["warmup"].get<int64_t>()),
              static_cast<long long>(j["threads"].get<int64_t>()),
              j["activation_checkpointing"].get<bool>() ? ", activation checkpointing" : "");
  std::printf("  tokens/s %.1f (min %.1f, max %.1f) | step %.3f s = fwd+bwd %.3f + optimiser %.3f\n",
              j["tokens_per_s"].get<double>(), j["tokens_per_s_min"].get<double>(),
              j["tokens_per_s_max"].get<double>(), j["step_s"].get<double>(), j["fwd_bwd_s"].get<double>(),
              j["optim_s"].get<double>());
  std::printf("  trained %lld of %lld params | fp32 weights %.1f MiB | peak RSS %.1f MiB (%.2fx weights), "
              "training peak %.1f MiB (%.2fx)\n",
              static_cast<long long>(j["trained_params"].get<int64_t>()),
              static_cast<long long>(j["weight_params"].get<int64_t>()),
              static_cast<double>(j["weight_bytes_fp32"].get<int64_t>()) / (1024.0 * 1024.0),
              j["peak_rss_mb"].get<double>(), j["peak_rss_over_weights"].get<double>(),
              j["train_peak_rss_mb"].get<double>(), j["train_peak_rss_over_weights"].get<double>());
}

int run_bench_train(const BenchTrainArgs& a) {
  std::vector<std::string> modes;
  if (a.mode == "both") modes = {"full", "lora"};
  else modes = {a.mode};
  for (const auto& t : split_csv(a.lora_targets)) linear_kind_from_name(t);  // unknown names list the known ones
  SAFEDEC_CHECK(!split_csv(a.lora_targets).empty(), "--lora-targets must name at least one linear layer");
  for (const auto& mode : modes) {
    const json j = modes.size() == 1 ? run_one_mode(a, mode) : run_mode_in_child(a, mode);
    if (a.json) std::cout << j.dump() << "\n";
    else print_human(j);
    std::cout.flush();
  }
  return 0;
}

}  // namespace

// Registered from add_bench with one line. main() dispatches on the top-level subcommands only (the
// bench runner knows generate/bandwidth/methods), so this subcommand runs from its own CLI11
// callback, which runs after parsing and validation are complete; it maps errors to the exit codes
// main() uses (2 user error, 1 internal) and ends the process with that code.
void add_bench_train(CLI::App* bench) {
  auto a = std::make_shared<BenchTrainArgs>();
  auto* cmd = bench->add_subcommand(
      "train", "Training tokens/s and peak RSS of full and LoRA fine-tunes (synthetic batches, timed AdamW steps)");
  cmd->add_option("--model", a->model, "Registered model name or GGUF/HF path")->capture_default_str();
  cmd->add_option("--mode", a->mode, "full, lora, or both (each mode in its own process)")
      ->check(CLI::IsMember({"full", "lora", "both"}))
      ->capture_default_str();
  add_int_flag(cmd, "--batch", a->batch, 1, 1024, "Sequences per optimiser step")->capture_default_str();
  add_int_flag(cmd, "--seq-len", a->seq_len, 2, 32768, "Tokens of the longest row (rows are right-padded to it)")
      ->capture_default_str();
  add_int_flag(cmd, "--steps", a->steps, 1, 100000, "Timed optimiser steps")->capture_default_str();
  add_int_flag(cmd, "--warmup", a->warmup, 0, 1000, "Untimed steps first")->capture_default_str();
  add_threads_flag(cmd, a->threads, "CPU threads (default: LibTorch's, all cores)");
  add_int_flag(cmd, "--lora-r", a->lora_r, 1, 4096, "LoRA rank")->capture_default_str();
  add_real_flag(cmd, "--lora-alpha", a->lora_alpha, 1e-6, 1e6, "LoRA alpha (scale alpha / r)")->capture_default_str();
  add_real_flag(cmd, "--lora-dropout", a->lora_dropout, 0.0, 0.99, "LoRA input dropout")->capture_default_str();
  cmd->add_option("--lora-targets", a->lora_targets, "Comma-separated HF linear names (q_proj,...,down_proj,lm_head)")
      ->capture_default_str();
  cmd->add_flag("--activation-checkpointing", a->activation_checkpointing,
                "Recompute each layer in the backward pass (memory for time)");
  add_real_flag(cmd, "--lr", a->lr, 1e-12, 0.999, "AdamW learning rate")->capture_default_str();
  add_real_flag(cmd, "--weight-decay", a->weight_decay, 0.0, 0.999, "AdamW weight decay (not on norms and biases)")
      ->capture_default_str();
  add_real_flag(cmd, "--clip-grad-norm", a->clip_grad_norm, 0.0, 1e6, "Global gradient-norm clip (0 = off)")
      ->capture_default_str();
  add_seed_flag(cmd, a->seed, "Seed of the synthetic tokens and the LoRA initialisation")->capture_default_str();
  cmd->add_flag("--json", a->json, "One JSON object per mode, one per line");
  cmd->callback([a] {
    int code = 0;
    try {
      code = run_bench_train(*a);
    } catch (const safedec::Error& e) {
      std::cerr << "error: " << e.what() << "\n";
      code = 2;
    } catch (const std::exception& e) {
      std::cerr << "internal error: " << e.what() << "\n";
      code = 1;
    }
    std::cout.flush();
    std::cerr.flush();
    std::exit(code);
  });
}

}  // namespace safedec::cli
