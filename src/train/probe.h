// The NGSD gating neuron as trained units (methods.md 1, issue: the risk estimator and the gate):
//  - ProbeTask: logistic regression r = sigmoid(w . h + b) on a prompt's hidden state, harmful (1) vs
//    benign (0) training-pool prompts, trained by the common Trainer (BCE, per-example mean). Features
//    are standardised inside the task and the scaling is folded back into (w, b) at the end.
//  - LIF calibration: the threshold theta (tau and reset fixed) at which the leaky integrate-and-fire
//    unit fires on at most a target share of the tokens of benign prompts, from recorded TV inputs.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "train/trainer.h"

namespace safedec {

class ProbeTask : public TrainTask {
 public:
  // features [N, d] fp32, labels [N] (1 = harmful).
  ProbeTask(torch::Tensor features, torch::Tensor labels);
  std::vector<TrainParam> parameters() override;
  int64_t size() const override { return features_.size(0); }
  std::vector<std::string> term_names() const override { return {"bce"}; }
  std::vector<double> units(const std::vector<int64_t>& batch) const override;
  MicroResult forward_backward(const std::vector<int64_t>& micro, const std::vector<double>& norm) override;
  // (weight [d], bias [1]) on the raw (unstandardised) features.
  std::pair<torch::Tensor, torch::Tensor> raw_probe() const;
  // Probabilities for raw features [M, d].
  torch::Tensor predict(const torch::Tensor& raw_features) const;

 private:
  torch::Tensor features_, labels_, mean_, std_;
  torch::Tensor weight_, bias_;
};

// Area under the ROC curve of scores for labels (1 = positive); ties count half.
double auroc(const std::vector<double>& scores, const std::vector<int>& labels);

// LIF dynamics over one sequence of inputs: v = (1 - 1/tau) v + I; spike if v >= theta, then v *= reset.
// Returns the number of spikes.
int64_t lif_spikes(const std::vector<float>& inputs, double tau, double theta, double reset);
// Share of all tokens that spike.
double lif_fire_rate(const std::vector<std::vector<float>>& sequences, double tau, double theta, double reset);
// Share of all tokens that spike at a token marked in `marks` (marks[i][t] != 0; one mark per input):
// with NGSD's per-token "flip" marks, the share of tokens whose greedy choice the gate changes.
double lif_marked_rate(const std::vector<std::vector<float>>& sequences,
                       const std::vector<std::vector<uint8_t>>& marks, double tau, double theta, double reset);
// The smallest theta in (0, tau] (bisection, 60 steps) whose fire rate (or, with marks, marked-spike
// rate) is <= target_rate. The rates are not strictly monotone in theta under the soft reset; the result
// always meets the target.
double calibrate_lif_theta(const std::vector<std::vector<float>>& sequences, double tau, double reset,
                           double target_rate, const std::vector<std::vector<uint8_t>>* marks = nullptr);
// The largest theta in [theta_lo, tau] (bisection, 60 steps) whose marked-spike rate on `sequences` is
// still at least `keep` (in (0, 1]) times its rate at theta_lo: the sparsest gate that keeps that share
// of the token changes theta_lo makes. theta_lo itself when its rate is 0. The result always meets the
// bound.
double sparsest_lif_theta(const std::vector<std::vector<float>>& sequences,
                          const std::vector<std::vector<uint8_t>>& marks, double tau, double reset, double theta_lo,
                          double keep);

}  // namespace safedec
