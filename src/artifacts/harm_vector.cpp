// HDR (Hazra et al. 2024, methods.md 3a): theta' = theta_t - lambda * tau'_H where tau'_H keeps the
// global top-k% of |theta_H - theta_b|. This file applies an artifact and offers the global pruning.
#include "artifacts/harm_vector.h"

#include <map>

#include "core/error.h"

namespace safedec {

int64_t apply_harm_vector(CausalLM& model, const HarmVector& harm, double lambda) {
  SAFEDEC_CHECK(std::isfinite(lambda), "HDR: lambda must be finite, got ", lambda);
  std::map<std::string, torch::Tensor> params;
  for (auto& kv : model.named_parameters()) params[kv.first] = kv.second;
  torch::NoGradGuard no_grad;
  int64_t edited = 0;
  for (const auto& [name, tau] : harm.tau) {
    auto it = params.find(name);
    if (it == params.end()) {
      std::string known;
      int shown = 0;
      for (const auto& kv : params)
        if (shown++ < 6) known += (known.empty() ? "" : ", ") + kv.first;
      fail("HDR: the harm vector has tensor '", name, "' that the model does not have (model names look like ", known,
           ", ...)");
    }
    torch::Tensor& w = it->second;
    SAFEDEC_CHECK(tau.sizes() == w.sizes(), "HDR: tensor '", name, "' of the harm vector has shape ", tau.sizes(),
                  " but the model's is ", w.sizes());
    w.sub_((tau * lambda).to(w.device(), w.scalar_type()));
    ++edited;
  }
  SAFEDEC_CHECK(edited > 0, "HDR: the harm vector holds no tensors");
  return edited;
}

int64_t apply_harm_vector(CausalLM& model, const std::string& path, double lambda) {
  return apply_harm_vector(model, load_harm_vector(path, model.config()), lambda);
}

double prune_harm_vector_global(std::vector<torch::Tensor>& tau, double fraction) {
  SAFEDEC_CHECK(fraction > 0.0 && fraction <= 1.0, "HDR: the kept fraction must be in (0, 1], got ", fraction);
  int64_t total = 0;
  for (const auto& t : tau) total += t.numel();
  SAFEDEC_CHECK(total > 0, "HDR: empty harm vector");
  const int64_t k = std::max<int64_t>(1, static_cast<int64_t>(fraction * static_cast<double>(total)));
  // The k-th largest |tau| over every tensor (small models: one concatenated copy is fine).
  std::vector<torch::Tensor> flat;
  for (const auto& t : tau) flat.push_back(t.detach().abs().reshape({-1}).to(torch::kFloat32).to(torch::kCPU));
  const double threshold = std::get<0>(torch::cat(flat).topk(k)).min().item<double>();
  torch::NoGradGuard no_grad;
  for (auto& t : tau) t.mul_((t.abs() >= threshold).to(t.scalar_type()));
  return threshold;
}

}  // namespace safedec
