// The Trainer: one optimisation loop for everything safedec trains (full fine-tunes, LoRA factors,
// soft prompts, probes). A TrainTask says which tensors are trained and computes the loss of a
// micro-batch (forward + backward); the Trainer owns the rest: seeded shuffling, gradient
// accumulation with token-mean normalisation over the whole optimiser batch, AdamW with warmup +
// linear/cosine decay, gradient clipping, NaN/Inf checks, progress on stderr, atomic checkpoints every
// N steps with exact resume, and the loss log + loss-curve SVG of the run directory.
//
// Reproducibility: the example order of epoch e is a permutation seeded by (seed, e), and the global
// torch RNG (dropout) is reseeded from (seed, step) before every optimiser step, so a run resumed
// from a checkpoint takes exactly the steps an uninterrupted run takes.
//
// Data parallel (src/dist: launched under torchrun with WORLD_SIZE > 1): every rank builds the same
// global batch, takes its contiguous shard of it (batch_size must be a multiple of WORLD_SIZE), and
// backpropagates with the global batch's normalisers; the gradients (bucketed), loss sums and token
// counts are summed over the ranks before clipping and AdamW, so every rank takes the step a single
// process takes with the same global batch. Rank 0 alone reads and writes checkpoints, the log and the
// curve; it broadcasts the starting parameters and optimiser state (fresh or resumed) to the others.
#pragma once
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace safedec {

class DistGroup;

// AdamW (decoupled weight decay, Loshchilov & Hutter; PyTorch's update order) and the LR schedule.
struct OptimConfig {
  double lr = 1e-4;
  double weight_decay = 0.0;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  std::string schedule = "linear";  // constant | linear | cosine (decay to 0 after warmup)
  int64_t warmup_steps = 0;         // steps of linear warmup from 0 (overrides warmup_ratio when > 0)
  double warmup_ratio = 0.0;        // share of the total steps
  double clip_grad_norm = 1.0;      // global L2 norm; 0 = no clipping
  void validate(const std::string& where) const;
};

struct TrainLoopConfig {
  int64_t epochs = 1;
  int64_t max_steps = 0;          // 0: epochs * ceil(N / batch_size); > 0: stop after this many steps
  int64_t batch_size = 8;         // examples per optimiser step
  int64_t micro_batch_size = 0;   // examples per forward/backward (0 = batch_size); smaller = accumulation
  int64_t checkpoint_every = 0;   // steps between checkpoints (0 = none until the end)
  int64_t keep_checkpoints = 2;   // most recent checkpoints kept
  int64_t stop_after = 0;         // > 0: stop (as if killed) after this step, for resume tests
  uint64_t seed = 0;
  bool shuffle = true;
  OptimConfig optim;
  void validate(const std::string& where) const;
};

// One trained tensor (a leaf with requires_grad set by the trainer).
struct TrainParam {
  std::string name;
  torch::Tensor tensor;
  bool decay = true;  // weight decay applies (norms, biases and soft prompts usually don't)
};

// The optimiser update the Trainer applies after its micro-batches, shared with `safedec bench train`.
// Global L2 norm of the gradients, as torch.nn.utils.clip_grad_norm_ (a per-tensor norm, no copies).
double global_grad_norm(const std::vector<TrainParam>& params);
// Scales the gradients in place by the clip factor of `gnorm` (clip / (gnorm + 1e-6) when above the
// limit, as clip_grad_norm_), then one AdamW step as torch.optim.AdamW's single-tensor path (decoupled
// weight decay on `decay` parameters, bias-corrected moments). `step` counts from 1.
void clip_and_adamw_step(std::vector<TrainParam>& params, std::vector<torch::Tensor>& exp_avg,
                         std::vector<torch::Tensor>& exp_avg_sq, const OptimConfig& o, double lr, int64_t step,
                         double gnorm);

// What one micro-batch contributed (loss sums, not means).
struct MicroResult {
  std::vector<double> term_sums;  // per loss term: sum of per-token (or per-example) losses
  int64_t tokens = 0;             // tokens processed (for tokens/s)
};

// The trained object and its loss; the Trainer runs the loop.
class TrainTask {
 public:
  virtual ~TrainTask() = default;
  // The tensors to optimise (the trainer sets requires_grad; everything else stays frozen).
  virtual std::vector<TrainParam> parameters() = 0;
  virtual int64_t size() const = 0;  // number of examples
  virtual std::vector<std::string> term_names() const { return {"loss"}; }
  virtual std::vector<double> term_weights() const { return std::vector<double>(term_names().size(), 1.0); }
  // Normalisers of the optimiser batch: per term, the number of units (target tokens, examples)
  // its mean is taken over. Terms with 0 units contribute nothing.
  virtual std::vector<double> units(const std::vector<int64_t>& batch) const = 0;
  // Forward + backward of a micro-batch: backpropagates sum_k w_k * (sum of term k's losses in the
  // micro-batch) / norm[k], so accumulating all micro-batches gives the batch's token means.
  virtual MicroResult forward_backward(const std::vector<int64_t>& micro, const std::vector<double>& norm) = 0;
};

// One logged optimiser step.
struct StepLog {
  int64_t step = 0;  // 1-based
  int64_t epoch = 0;
  double loss = 0;
  std::vector<double> terms;
  double lr = 0, grad_norm = 0;
  int64_t tokens = 0;
  double seconds = 0;  // wall time of the step
  nlohmann::json to_json(const std::vector<std::string>& names) const;
};

struct TrainResult {
  int64_t steps = 0;           // steps completed (total, including resumed ones)
  int64_t resumed_from = 0;    // checkpoint step the run continued from (0 = fresh)
  bool stopped_early = false;  // stop_after reached
  std::vector<StepLog> log;
  double seconds = 0;          // wall time of this invocation
  double tokens_per_second = 0;
  nlohmann::json metrics() const;  // final/first loss, steps, tokens/s, ...
};

class Trainer {
 public:
  // run_dir holds checkpoints/, train_log.jsonl and loss_curve.svg; config_hash identifies the
  // resolved config so that a resume with another config is refused.
  Trainer(TrainTask& task, TrainLoopConfig config, std::string run_dir, std::string config_hash);
  // Trains from scratch, or from the newest complete checkpoint when `resume`.
  TrainResult run(bool resume);
  int64_t total_steps() const;
  int64_t steps_per_epoch() const;
  // Learning rate of 1-based step s.
  double lr_at(int64_t step) const;
  // The examples of 1-based step s (the same on every run with this seed).
  std::vector<int64_t> batch_at(int64_t step) const;

 private:
  void save_checkpoint(int64_t step, const std::vector<StepLog>& log);
  int64_t load_checkpoint(std::vector<StepLog>& log);  // returns the step, 0 if none
  void write_log(const std::vector<StepLog>& log) const;

  TrainTask& task_;
  TrainLoopConfig config_;
  std::string run_dir_, config_hash_;
  std::vector<TrainParam> params_;
  std::vector<torch::Tensor> exp_avg_, exp_avg_sq_;
  std::shared_ptr<DistGroup> group_;  // data-parallel ranks (nullptr = one process)
};

// Runs fn with torch's CPU RNG seeded from (seed, salt), as the trainer does for every step.
uint64_t mix_seed(uint64_t seed, uint64_t salt);

// Writes the loss curve of a training log as an SVG line chart (loss per step, one line per term).
void write_loss_curve(const std::string& path, const std::vector<StepLog>& log, const std::vector<std::string>& terms,
                      const std::string& title);

}  // namespace safedec
