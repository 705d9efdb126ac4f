// The training loop (see trainer.h). AdamW follows torch.optim.AdamW (foreach=False, amsgrad=False):
//   p <- p * (1 - lr * wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
//   p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// in fp32, so a run here and a PyTorch run with the same gradients take the same steps.
#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>
#include <random>
#include <sstream>

#include "core/error.h"
#include "core/files.h"
#include "dist/dist.h"
#include "eval/progress.h"
#include "eval/svg.h"
#include "io/safetensors.h"

namespace safedec {

double global_grad_norm(const std::vector<TrainParam>& params) {
  torch::NoGradGuard ng;
  double sq = 0;
  for (const auto& p : params) {
    if (!p.tensor.grad().defined()) continue;
    const double n = p.tensor.grad().norm().item<double>();
    sq += n * n;
  }
  return std::sqrt(sq);
}

void clip_and_adamw_step(std::vector<TrainParam>& params, std::vector<torch::Tensor>& exp_avg,
                         std::vector<torch::Tensor>& exp_avg_sq, const OptimConfig& o, double lr, int64_t step,
                         double gnorm) {
  torch::NoGradGuard ng;
  const double clip = (o.clip_grad_norm > 0 && gnorm > o.clip_grad_norm) ? o.clip_grad_norm / (gnorm + 1e-6) : 1.0;
  const double bc1 = 1.0 - std::pow(o.beta1, static_cast<double>(step));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(o.beta2, static_cast<double>(step)));
  for (size_t i = 0; i < params.size(); ++i) {
    auto& p = params[i].tensor;
    if (!p.grad().defined()) continue;
    torch::Tensor g = p.mutable_grad();
    if (clip != 1.0) g.mul_(clip);  // in place, as clip_grad_norm_
    if (params[i].decay && o.weight_decay > 0) p.mul_(1.0 - lr * o.weight_decay);
    exp_avg[i].lerp_(g, 1.0 - o.beta1);
    exp_avg_sq[i].mul_(o.beta2).addcmul_(g, g, 1.0 - o.beta2);
    const torch::Tensor denom = exp_avg_sq[i].sqrt().div_(bc2_sqrt).add_(o.eps);
    p.addcdiv_(exp_avg[i], denom, -lr / bc1);
  }
}

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string step_dir_name(int64_t step) {
  char b[32];
  std::snprintf(b, sizeof b, "step-%08lld", static_cast<long long>(step));
  return b;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SAFEDEC_CHECK(in.good(), "cannot open ", path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_f32(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  std::vector<torch::Tensor> keep;
  std::vector<SafetensorsWriteTensor> out;
  for (const auto& [name, t] : tensors) {
    torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    keep.push_back(c);
    SafetensorsWriteTensor w;
    w.name = name;
    w.shape = std::vector<int64_t>(c.sizes().begin(), c.sizes().end());
    w.data = c.data_ptr<float>();
    w.nbytes = static_cast<size_t>(c.numel()) * sizeof(float);
    out.push_back(w);
  }
  write_safetensors(path, out);
}

std::string fmt(double x, int prec = 4) {
  std::ostringstream s;
  s.precision(prec);
  s << x;
  return s.str();
}

}  // namespace

uint64_t mix_seed(uint64_t seed, uint64_t salt) {
  // SplitMix64 over seed ^ golden * salt: independent streams for (seed, salt) pairs.
  uint64_t z = seed ^ (0x9E3779B97F4A7C15ULL * (salt + 1));
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

void OptimConfig::validate(const std::string& where) const {
  SAFEDEC_CHECK(std::isfinite(lr) && lr > 0 && lr < 1, where, ": `lr` must be in (0, 1), got ", lr);
  SAFEDEC_CHECK(std::isfinite(weight_decay) && weight_decay >= 0 && weight_decay < 1, where,
                ": `weight_decay` must be in [0, 1), got ", weight_decay);
  SAFEDEC_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, where, ": `beta1`/`beta2` must be in [0, 1)");
  SAFEDEC_CHECK(eps > 0 && std::isfinite(eps), where, ": `eps` must be > 0");
  SAFEDEC_CHECK(schedule == "constant" || schedule == "linear" || schedule == "cosine", where,
                ": `schedule` must be one of constant, linear, cosine; got '", schedule, "'");
  SAFEDEC_CHECK(warmup_steps >= 0, where, ": `warmup_steps` must be >= 0, got ", warmup_steps);
  SAFEDEC_CHECK(warmup_ratio >= 0 && warmup_ratio < 1, where, ": `warmup_ratio` must be in [0, 1), got ",
                warmup_ratio);
  SAFEDEC_CHECK(std::isfinite(clip_grad_norm) && clip_grad_norm >= 0, where,
                ": `clip_grad_norm` must be >= 0 (0 = off), got ", clip_grad_norm);
}

void TrainLoopConfig::validate(const std::string& where) const {
  SAFEDEC_CHECK(epochs >= 1 && epochs <= 100000, where, ": `epochs` must be in [1, 100000], got ", epochs);
  SAFEDEC_CHECK(max_steps >= 0, where, ": `max_steps` must be >= 0 (0 = from epochs), got ", max_steps);
  SAFEDEC_CHECK(batch_size >= 1 && batch_size <= 65536, where, ": `batch_size` must be in [1, 65536], got ",
                batch_size);
  SAFEDEC_CHECK(micro_batch_size >= 0 && micro_batch_size <= batch_size, where,
                ": `micro_batch_size` must be in [0, batch_size] (0 = batch_size), got ", micro_batch_size);
  SAFEDEC_CHECK(checkpoint_every >= 0, where, ": `checkpoint_every` must be >= 0, got ", checkpoint_every);
  SAFEDEC_CHECK(keep_checkpoints >= 1, where, ": `keep_checkpoints` must be >= 1, got ", keep_checkpoints);
  optim.validate(where);
}

json StepLog::to_json(const std::vector<std::string>& names) const {
  json t = json::object();
  for (size_t i = 0; i < terms.size() && i < names.size(); ++i) t[names[i]] = terms[i];
  return {{"step", step},       {"epoch", epoch},   {"loss", loss},       {"terms", t},
          {"lr", lr},           {"grad_norm", grad_norm}, {"tokens", tokens}, {"seconds", seconds}};
}

json TrainResult::metrics() const {
  json m = {{"steps", steps}, {"resumed_from", resumed_from}, {"seconds", seconds},
            {"tokens_per_second", tokens_per_second}};
  if (!log.empty()) {
    m["loss_first"] = log.front().loss;
    m["loss_last"] = log.back().loss;
    // Mean over the last 10% of steps (at least 1): less noisy than the last step.
    const size_t n = std::max<size_t>(1, log.size() / 10);
    double s = 0;
    for (size_t i = log.size() - n; i < log.size(); ++i) s += log[i].loss;
    m["loss_final_mean"] = s / static_cast<double>(n);
  }
  return m;
}

Trainer::Trainer(TrainTask& task, TrainLoopConfig config, std::string run_dir, std::string config_hash)
    : task_(task), config_(std::move(config)), run_dir_(std::move(run_dir)), config_hash_(std::move(config_hash)) {
  config_.validate("train");
  SAFEDEC_CHECK(task_.size() >= 1, "train: the training set is empty");
  params_ = task_.parameters();
  SAFEDEC_CHECK(!params_.empty(), "train: nothing to train (no parameters)");
  for (auto& p : params_) {
    SAFEDEC_CHECK(p.tensor.defined() && p.tensor.is_floating_point(), "train: parameter ", p.name,
                  " is not a floating-point tensor");
    SAFEDEC_CHECK(p.tensor.scalar_type() == torch::kFloat32, "train: parameter ", p.name,
                  " must be fp32 for training, got ", p.tensor.scalar_type());
    p.tensor.requires_grad_(true);
    exp_avg_.push_back(torch::zeros_like(p.tensor));
    exp_avg_sq_.push_back(torch::zeros_like(p.tensor));
  }
  group_ = dist_group();
  if (group_ && group_->world_size() > 1)
    SAFEDEC_CHECK(config_.batch_size % group_->world_size() == 0, "train: `batch_size` ", config_.batch_size,
                  " is not a multiple of WORLD_SIZE ", group_->world_size(),
                  ": every rank takes an equal share of each global batch; use a batch_size divisible by ",
                  group_->world_size(), " or launch another number of ranks");
}

int64_t Trainer::steps_per_epoch() const {
  return (task_.size() + config_.batch_size - 1) / config_.batch_size;
}

int64_t Trainer::total_steps() const {
  return config_.max_steps > 0 ? config_.max_steps : config_.epochs * steps_per_epoch();
}

double Trainer::lr_at(int64_t step) const {
  const auto& o = config_.optim;
  const int64_t total = total_steps();
  const int64_t warm = o.warmup_steps > 0 ? o.warmup_steps
                                          : static_cast<int64_t>(std::floor(o.warmup_ratio * static_cast<double>(total)));
  // HF transformers' schedules: step s (0-based s = step - 1) during warmup gets lr * s / warm;
  // after it, linear: lr * (total - s) / (total - warm), cosine: lr * 0.5 (1 + cos(pi * progress)).
  const double s = static_cast<double>(step - 1);
  if (warm > 0 && step - 1 < warm) return o.lr * s / static_cast<double>(warm);
  if (o.schedule == "constant") return o.lr;
  const double span = std::max<double>(1.0, static_cast<double>(total - warm));
  const double progress = (s - static_cast<double>(warm)) / span;
  if (o.schedule == "linear") return o.lr * std::max(0.0, 1.0 - progress);
  return o.lr * 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
}

std::vector<int64_t> Trainer::batch_at(int64_t step) const {
  const int64_t spe = steps_per_epoch();
  const int64_t epoch = (step - 1) / spe, index = (step - 1) % spe;
  const int64_t n = task_.size();
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  if (config_.shuffle) {
    // Fisher-Yates with a SplitMix-seeded mt19937_64: the same permutation on every platform.
    std::mt19937_64 rng(mix_seed(config_.seed, 1000003ULL + static_cast<uint64_t>(epoch)));
    for (int64_t i = n - 1; i > 0; --i) {
      const int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
      std::swap(order[i], order[j]);
    }
  }
  const int64_t lo = index * config_.batch_size, hi = std::min(n, lo + config_.batch_size);
  return std::vector<int64_t>(order.begin() + lo, order.begin() + hi);
}

void Trainer::save_checkpoint(int64_t step, const std::vector<StepLog>& log) {
  const std::string root = run_dir_ + "/checkpoints";
  fs::create_directories(root);
  const std::string final_dir = root + "/" + step_dir_name(step);
  const std::string tmp = final_dir + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  std::vector<std::pair<std::string, torch::Tensor>> p, m, v;
  for (size_t i = 0; i < params_.size(); ++i) {
    p.emplace_back(params_[i].name, params_[i].tensor);
    m.emplace_back(params_[i].name, exp_avg_[i]);
    v.emplace_back(params_[i].name, exp_avg_sq_[i]);
  }
  write_f32(tmp + "/params.safetensors", p);
  write_f32(tmp + "/adam_m.safetensors", m);
  write_f32(tmp + "/adam_v.safetensors", v);
  json logj = json::array();
  for (const auto& s : log) logj.push_back(s.to_json(task_.term_names()));
  json state = {{"step", step},
                {"config_hash", config_hash_},
                {"seed", config_.seed},
                {"world_size", group_ ? group_->world_size() : 1},
                {"log", logj}};
  // state.json last: a checkpoint directory without it is incomplete and ignored.
  write_file_atomic(tmp + "/state.json", state.dump() + "\n");
  fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir);
  fsync_directory(root);
  // Keep the newest keep_checkpoints.
  std::vector<std::string> all;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.rfind("step-", 0) == 0 && n.find(".tmp") == std::string::npos) all.push_back(n);
  }
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i + static_cast<size_t>(config_.keep_checkpoints) < all.size(); ++i)
    fs::remove_all(root + "/" + all[i], ec);
}

int64_t Trainer::load_checkpoint(std::vector<StepLog>& log) {
  const std::string root = run_dir_ + "/checkpoints";
  if (!fs::is_directory(root)) return 0;
  std::vector<std::string> all;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.rfind("step-", 0) == 0 && n.find(".tmp") == std::string::npos &&
        fs::is_regular_file(e.path() / "state.json"))
      all.push_back(n);
  }
  if (all.empty()) return 0;
  std::sort(all.begin(), all.end());
  const std::string dir = root + "/" + all.back();
  const std::string state_path = dir + "/state.json";
  json state;
  try {
    state = json::parse(read_text(state_path));
  } catch (const json::exception& e) {
    fail("the checkpoint ", state_path, " is not valid JSON (", e.what(), "); the checkpoint is corrupt: delete ", dir,
         " to resume from the one before it, or start over with --force");
  }
  auto bad_state = [&](const std::string& what) {
    fail("the checkpoint ", state_path, " ", what, "; the checkpoint is corrupt: delete ", dir,
         " to resume from the one before it, or start over with --force");
  };
  if (!state.is_object()) bad_state("is not a JSON object");
  if (!state.contains("step") || !state["step"].is_number_integer()) bad_state("has no integer `step`");
  if (!state.contains("log") || !state["log"].is_array()) bad_state("has no `log` list");
  if (!state.contains("config_hash") || !state["config_hash"].is_string()) bad_state("has no `config_hash`");
  SAFEDEC_CHECK(state["config_hash"].get<std::string>() == config_hash_, "cannot resume from ", dir,
                ": it was written by a run with another resolved config (start a new run directory or use --force)");
  const int64_t step = state["step"].get<int64_t>();
  SAFEDEC_CHECK(step >= 1 && step <= total_steps(), "the checkpoint ", dir, " is at step ", step,
                " but this run has ", total_steps(), " steps");
  // Every tensor the run trains, with the run's shape, stored as floats and finite: a checkpoint of
  // another model (or a truncated, retyped or NaN-filled file) is refused naming the file and tensor.
  auto load_into = [&](const std::string& file, std::vector<torch::Tensor>& dst, bool params) {
    const std::string path = dir + "/" + file;
    auto f = SafetensorsFile::open(path);
    torch::NoGradGuard ng;
    for (size_t i = 0; i < params_.size(); ++i) {
      const SafetensorsTensor* t = f->find(params_[i].name);
      SAFEDEC_CHECK(t != nullptr, "the checkpoint ", path, " has no tensor '", params_[i].name,
                    "' (was it written for another model or configuration?)");
      SAFEDEC_CHECK(t->dtype == SafetensorsDtype::F32, "the checkpoint tensor '", params_[i].name, "' in ", path,
                    " is stored as ", safetensors_dtype_name(t->dtype), " (safedec writes F32); the checkpoint is corrupt");
      torch::Tensor& target = params ? params_[i].tensor : dst[i];
      SAFEDEC_CHECK(torch::IntArrayRef(t->shape) == target.sizes(), "the checkpoint tensor '", params_[i].name, "' in ",
                    path, " has shape ", torch::IntArrayRef(t->shape), " but the run's is ", target.sizes(),
                    ": the checkpoint was written for another model");
      std::vector<float> data = safetensors_to_float32(*t);
      torch::Tensor x = torch::from_blob(data.data(), t->shape, torch::kFloat32);
      SAFEDEC_CHECK(torch::isfinite(x).all().item<bool>(), "the checkpoint tensor '", params_[i].name, "' in ", path,
                    " holds NaN/Inf values; the checkpoint is corrupt");
      target.copy_(x);
    }
  };
  std::vector<torch::Tensor> none;
  load_into("params.safetensors", none, true);
  load_into("adam_m.safetensors", exp_avg_, false);
  load_into("adam_v.safetensors", exp_avg_sq_, false);
  log.clear();
  const auto names = task_.term_names();
  try {
    for (const auto& j : state.at("log")) {
      StepLog s;
      s.step = j.at("step").get<int64_t>();
      s.epoch = j.value("epoch", int64_t{0});
      s.loss = j.at("loss").get<double>();
      for (const auto& n : names) s.terms.push_back(j.at("terms").value(n, 0.0));
      s.lr = j.value("lr", 0.0);
      s.grad_norm = j.value("grad_norm", 0.0);
      s.tokens = j.value("tokens", int64_t{0});
      s.seconds = j.value("seconds", 0.0);
      log.push_back(s);
    }
  } catch (const json::exception& e) {
    bad_state(std::string("has a malformed `log` entry (") + e.what() + ")");
  }
  return step;
}

void Trainer::write_log(const std::vector<StepLog>& log) const {
  std::string text;
  for (const auto& s : log) text += s.to_json(task_.term_names()).dump() + "\n";
  write_file_atomic(run_dir_ + "/train_log.jsonl", text);
  if (!log.empty()) write_loss_curve(run_dir_ + "/loss_curve.svg", log, task_.term_names(), "Training loss");
}

TrainResult Trainer::run(bool resume) {
  if (!group_ || group_->is_main()) fs::create_directories(run_dir_);
  TrainResult result;
  std::vector<StepLog> log;
  int64_t start = 0;
  const bool main_rank = !group_ || group_->is_main();
  const int world = group_ ? group_->world_size() : 1;
  const int rank = group_ ? group_->rank() : 0;
  if (!group_) {
    if (resume) start = load_checkpoint(log);
  } else {
    // Rank 0 reads the checkpoint and sends the step (-1: it failed) and the state to every rank, so
    // all ranks start from identical parameters and moments, fresh or resumed.
    std::string load_error;
    if (main_rank && resume) {
      try {
        start = load_checkpoint(log);
      } catch (const Error& e) {
        load_error = e.what();
        start = -1;
      }
    }
    torch::Tensor st = torch::tensor({start}, torch::kInt64);
    group_->broadcast({st}, 0);
    start = st.item<int64_t>();
    if (start < 0) {
      if (main_rank) throw Error(load_error);
      fail("train: rank 0 could not load the checkpoint of ", run_dir_, " (its error says why)");
    }
    std::vector<torch::Tensor> state;
    for (size_t i = 0; i < params_.size(); ++i) {
      state.push_back(params_[i].tensor.detach());
      state.push_back(exp_avg_[i]);
      state.push_back(exp_avg_sq_[i]);
    }
    group_->broadcast(state, 0);
  }
  result.resumed_from = start;
  const int64_t total = total_steps();
  const int64_t micro = config_.micro_batch_size > 0 ? config_.micro_batch_size : config_.batch_size;
  const auto names = task_.term_names();
  const auto weights = task_.term_weights();
  const auto& o = config_.optim;
  static std::ostream null_stream(nullptr);  // the other ranks report nothing
  ProgressOptions po;
  if (!main_rank) po.out = &null_stream;
  ProgressBar bar("train", static_cast<size_t>(total), po);
  if (start > 0) bar.skip(static_cast<size_t>(start), "resumed");
  const double t_run = now_s();
  int64_t run_tokens = 0;
  for (int64_t step = start + 1; step <= total; ++step) {
    const double t0 = now_s();
    torch::manual_seed(mix_seed(config_.seed, static_cast<uint64_t>(step)));  // dropout stream of this step
    const std::vector<int64_t> global_batch = batch_at(step);
    // Normalisers of the whole (global) batch; this rank runs its contiguous shard of it.
    const std::vector<double> norm = task_.units(global_batch);
    SAFEDEC_CHECK(norm.size() == names.size(), "train: the task returned ", norm.size(), " normalisers for ",
                  names.size(), " loss terms");
    const auto [shard_lo, shard_hi] = shard_range(static_cast<int64_t>(global_batch.size()), rank, world);
    const std::vector<int64_t> batch(global_batch.begin() + shard_lo, global_batch.begin() + shard_hi);
    for (auto& p : params_) p.tensor.mutable_grad() = torch::Tensor();
    std::vector<double> sums(names.size(), 0.0);
    int64_t tokens = 0;
    for (size_t lo = 0; lo < batch.size(); lo += static_cast<size_t>(micro)) {
      std::vector<int64_t> mb(batch.begin() + lo, batch.begin() + std::min(batch.size(), lo + micro));
      MicroResult r = task_.forward_backward(mb, norm);
      for (size_t k = 0; k < sums.size() && k < r.term_sums.size(); ++k) {
        SAFEDEC_CHECK(std::isfinite(r.term_sums[k]), "training diverged: the ", names[k], " loss is ",
                      r.term_sums[k], " at step ", step, " (micro-batch starting at example ", mb.front(),
                      "); lower the learning rate or check the data. The last checkpoint is intact.");
        sums[k] += r.term_sums[k];
      }
      tokens += r.tokens;
    }
    if (group_) {
      // Loss sums, tokens and which parameters got a gradient anywhere, then the gradients (bucketed).
      torch::Tensor stats = torch::zeros({static_cast<int64_t>(sums.size() + 1 + params_.size())}, torch::kFloat64);
      auto sa = stats.accessor<double, 1>();
      for (size_t k = 0; k < sums.size(); ++k) sa[k] = sums[k];
      sa[sums.size()] = static_cast<double>(tokens);
      for (size_t i = 0; i < params_.size(); ++i)
        sa[sums.size() + 1 + i] = params_[i].tensor.grad().defined() ? 1.0 : 0.0;
      group_->all_reduce_sum({stats});
      for (size_t k = 0; k < sums.size(); ++k) sums[k] = sa[k];
      tokens = static_cast<int64_t>(std::llround(sa[sums.size()]));
      std::vector<torch::Tensor> grads;
      for (size_t i = 0; i < params_.size(); ++i) {
        if (sa[sums.size() + 1 + i] == 0.0) continue;  // no rank produced one: stays undefined, as in one process
        auto& p = params_[i].tensor;
        if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
        grads.push_back(p.mutable_grad());
      }
      group_->all_reduce_sum(grads);
      for (size_t k = 0; k < sums.size(); ++k)
        SAFEDEC_CHECK(std::isfinite(sums[k]), "training diverged: the ", names[k], " loss is ", sums[k], " at step ",
                      step, " on another rank; lower the learning rate or check the data. The last checkpoint is intact.");
    }
    // Gradient norm (global L2 over every parameter), NaN/Inf check, clipping, AdamW.
    const double gnorm = global_grad_norm(params_);
    SAFEDEC_CHECK(std::isfinite(gnorm), "training diverged: the gradient norm is ", gnorm, " at step ", step,
                  "; lower the learning rate or check the data. The last checkpoint is intact.");
    const double lr = lr_at(step);
    clip_and_adamw_step(params_, exp_avg_, exp_avg_sq_, o, lr, step, gnorm);
    StepLog s;
    s.step = step;
    s.epoch = (step - 1) / steps_per_epoch();
    s.terms.resize(names.size());
    for (size_t k = 0; k < names.size(); ++k) {
      s.terms[k] = norm[k] > 0 ? sums[k] / norm[k] : 0.0;
      s.loss += weights[k] * s.terms[k];
    }
    s.lr = lr;
    s.grad_norm = gnorm;
    s.tokens = tokens;
    s.seconds = now_s() - t0;
    log.push_back(s);
    run_tokens += tokens;
    const double elapsed = now_s() - t_run;
    bar.tick(1, "loss " + fmt(s.loss) + " lr " + fmt(lr, 3) + " " +
                    fmt(static_cast<double>(run_tokens) / std::max(1e-9, elapsed), 4) + " tok/s");
    const bool last = step == total;
    const bool stop = config_.stop_after > 0 && step >= config_.stop_after && !last;
    if (main_rank && ((config_.checkpoint_every > 0 && step % config_.checkpoint_every == 0) || last || stop)) {
      save_checkpoint(step, log);
      write_log(log);
    }
    if (stop) {
      result.stopped_early = true;
      break;
    }
  }
  bar.finish();
  for (auto& p : params_) {
    p.tensor.mutable_grad() = torch::Tensor();
    p.tensor.requires_grad_(false);
  }
  result.steps = log.empty() ? start : log.back().step;
  result.log = log;
  result.seconds = now_s() - t_run;
  result.tokens_per_second = static_cast<double>(run_tokens) / std::max(1e-9, result.seconds);
  if (main_rank && !result.stopped_early && !log.empty()) write_log(log);
  return result;
}

void write_loss_curve(const std::string& path, const std::vector<StepLog>& log, const std::vector<std::string>& terms,
                      const std::string& title) {
  XyChart c;
  c.title = title;
  c.subtitle = std::to_string(log.size()) + " optimiser steps";
  c.x.label = "step";
  c.y.label = "loss (token mean per step)";
  XySeries total;
  total.label = terms.size() > 1 ? "total" : terms.empty() ? "loss" : terms[0];
  total.markers = log.size() <= 60;
  for (const auto& s : log) {
    total.x.push_back(static_cast<double>(s.step));
    total.y.push_back(s.loss);
  }
  c.series.push_back(total);
  if (terms.size() > 1) {
    for (size_t k = 0; k < terms.size(); ++k) {
      XySeries t;
      t.label = terms[k];
      t.markers = false;
      t.dash = "6,4";
      for (const auto& s : log) {
        t.x.push_back(static_cast<double>(s.step));
        t.y.push_back(k < s.terms.size() ? s.terms[k] : 0.0);
      }
      c.series.push_back(t);
    }
  }
  write_file_atomic(path, render_xy_chart(c));
}

}  // namespace safedec
