// Risk probe training and LIF threshold calibration (see probe.h).
#include "train/probe.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace safedec {

ProbeTask::ProbeTask(torch::Tensor features, torch::Tensor labels) {
  SAFEDEC_CHECK(features.dim() == 2 && features.size(0) >= 2, "ProbeTask: features must be [N >= 2, d]");
  SAFEDEC_CHECK(labels.dim() == 1 && labels.size(0) == features.size(0), "ProbeTask: one label per feature row");
  features_ = features.to(torch::kCPU, torch::kFloat32).contiguous();
  labels_ = labels.to(torch::kCPU, torch::kFloat32).contiguous();
  const double pos = labels_.sum().item<double>();
  SAFEDEC_CHECK(pos >= 1 && pos <= static_cast<double>(labels_.size(0)) - 1,
                "ProbeTask: the probe needs both harmful and benign examples (got ", pos, " harmful of ",
                labels_.size(0), ")");
  SAFEDEC_CHECK(torch::isfinite(features_).all().item<bool>(), "ProbeTask: the features hold NaN/Inf");
  mean_ = features_.mean(0);
  std_ = features_.std(0, /*unbiased=*/false).clamp_min(1e-6);  // constant features stay finite
  features_ = (features_ - mean_) / std_;
  weight_ = torch::zeros({features_.size(1)});
  bias_ = torch::zeros({1});
}

std::vector<TrainParam> ProbeTask::parameters() { return {{"weight", weight_, true}, {"bias", bias_, false}}; }

std::vector<double> ProbeTask::units(const std::vector<int64_t>& batch) const {
  return {static_cast<double>(batch.size())};
}

MicroResult ProbeTask::forward_backward(const std::vector<int64_t>& micro, const std::vector<double>& norm) {
  auto idx = torch::tensor(micro, torch::kInt64);
  auto x = features_.index_select(0, idx);
  auto y = labels_.index_select(0, idx);
  auto logits = x.matmul(weight_) + bias_;
  auto loss = torch::binary_cross_entropy_with_logits(logits, y, {}, {}, at::Reduction::Sum);
  MicroResult r;
  r.term_sums = {loss.item<double>()};
  r.tokens = static_cast<int64_t>(micro.size());
  if (norm[0] > 0) (loss / norm[0]).backward();
  return r;
}

std::pair<torch::Tensor, torch::Tensor> ProbeTask::raw_probe() const {
  torch::NoGradGuard ng;
  // w . (h - mean) / std + b = (w / std) . h + (b - sum(w mean / std))
  auto w = weight_.detach() / std_;
  auto b = bias_.detach() - (w * mean_).sum();
  return {w.clone(), b.reshape({1}).clone()};
}

torch::Tensor ProbeTask::predict(const torch::Tensor& raw_features) const {
  torch::NoGradGuard ng;
  auto [w, b] = raw_probe();
  return torch::sigmoid(raw_features.to(torch::kFloat32).matmul(w) + b);
}

double auroc(const std::vector<double>& scores, const std::vector<int>& labels) {
  SAFEDEC_CHECK(scores.size() == labels.size() && !scores.empty(), "auroc: one label per score");
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  // Mann-Whitney U with average ranks for ties.
  double rank_sum = 0;
  int64_t pos = 0, neg = 0;
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && scores[order[j + 1]] == scores[order[i]]) ++j;
    const double avg_rank = 0.5 * static_cast<double>(i + j) + 1.0;
    for (size_t k = i; k <= j; ++k)
      if (labels[order[k]]) rank_sum += avg_rank;
    i = j + 1;
  }
  for (int l : labels) (l ? pos : neg) += 1;
  SAFEDEC_CHECK(pos > 0 && neg > 0, "auroc: needs both classes");
  return (rank_sum - static_cast<double>(pos) * static_cast<double>(pos + 1) / 2.0) /
         (static_cast<double>(pos) * static_cast<double>(neg));
}

namespace {
// LIF over one sequence; counts the spikes at tokens with mark != 0 (all tokens when marks is null).
int64_t lif_count(const std::vector<float>& inputs, const std::vector<uint8_t>* marks, double tau, double theta,
                  double reset) {
  double v = 0;
  int64_t spikes = 0;
  const double leak = 1.0 - 1.0 / tau;
  for (size_t t = 0; t < inputs.size(); ++t) {
    v = leak * v + static_cast<double>(inputs[t]);
    if (v >= theta) {
      if (!marks || (*marks)[t]) ++spikes;
      v *= reset;
    }
  }
  return spikes;
}

double lif_rate(const std::vector<std::vector<float>>& sequences, const std::vector<std::vector<uint8_t>>* marks,
                double tau, double theta, double reset) {
  int64_t spikes = 0, tokens = 0;
  for (size_t i = 0; i < sequences.size(); ++i) {
    spikes += lif_count(sequences[i], marks ? &(*marks)[i] : nullptr, tau, theta, reset);
    tokens += static_cast<int64_t>(sequences[i].size());
  }
  return tokens > 0 ? static_cast<double>(spikes) / static_cast<double>(tokens) : 0.0;
}
}  // namespace

int64_t lif_spikes(const std::vector<float>& inputs, double tau, double theta, double reset) {
  return lif_count(inputs, nullptr, tau, theta, reset);
}

double lif_fire_rate(const std::vector<std::vector<float>>& sequences, double tau, double theta, double reset) {
  return lif_rate(sequences, nullptr, tau, theta, reset);
}

double lif_marked_rate(const std::vector<std::vector<float>>& sequences,
                       const std::vector<std::vector<uint8_t>>& marks, double tau, double theta, double reset) {
  SAFEDEC_CHECK(marks.size() == sequences.size(), "LIF marked rate: ", marks.size(), " mark sequences for ",
                sequences.size(), " input sequences");
  for (size_t i = 0; i < marks.size(); ++i)
    SAFEDEC_CHECK(marks[i].size() == sequences[i].size(), "LIF marked rate: sequence ", i, " has ",
                  sequences[i].size(), " inputs but ", marks[i].size(), " marks");
  return lif_rate(sequences, &marks, tau, theta, reset);
}

double calibrate_lif_theta(const std::vector<std::vector<float>>& sequences, double tau, double reset,
                           double target_rate, const std::vector<std::vector<uint8_t>>* marks) {
  SAFEDEC_CHECK(tau > 1.0 && reset >= 0.0 && reset <= 1.0, "LIF calibration: tau must be > 1 and reset in [0, 1]");
  SAFEDEC_CHECK(target_rate >= 0.0 && target_rate < 1.0, "LIF calibration: the target fire rate must be in [0, 1)");
  auto rate = [&](double theta) {
    return marks ? lif_marked_rate(sequences, *marks, tau, theta, reset) : lif_fire_rate(sequences, tau, theta, reset);
  };
  // With inputs in [0, 1] the potential never exceeds tau, so theta = tau (+ eps) never fires.
  double lo = 0.0, hi = tau + 1e-6;
  if (rate(hi) > target_rate) return hi;
  for (int i = 0; i < 60; ++i) {
    const double mid = 0.5 * (lo + hi);
    if (rate(mid) <= target_rate)
      hi = mid;
    else
      lo = mid;
  }
  return hi;
}

double sparsest_lif_theta(const std::vector<std::vector<float>>& sequences,
                          const std::vector<std::vector<uint8_t>>& marks, double tau, double reset, double theta_lo,
                          double keep) {
  SAFEDEC_CHECK(tau > 1.0 && reset >= 0.0 && reset <= 1.0, "LIF calibration: tau must be > 1 and reset in [0, 1]");
  SAFEDEC_CHECK(keep > 0.0 && keep <= 1.0, "LIF calibration: the kept share of token changes must be in (0, 1]");
  SAFEDEC_CHECK(theta_lo >= 0.0 && theta_lo <= tau + 1e-6, "LIF calibration: theta_lo must be in [0, tau]");
  const double bound = keep * lif_marked_rate(sequences, marks, tau, theta_lo, reset);
  if (bound <= 0.0) return theta_lo;
  double lo = theta_lo, hi = tau + 1e-6;  // lo meets the bound; hi never fires
  for (int i = 0; i < 60; ++i) {
    const double mid = 0.5 * (lo + hi);
    if (lif_marked_rate(sequences, marks, tau, mid, reset) >= bound)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

}  // namespace safedec
