// Harm Direction Removal (Safety Arithmetic 3a, methods.md): a pruned harm vector applied to a loaded
// model, theta' = theta - lambda * tau'_H (lambda = 3), a zero-cost weight edit; and the global
// top-k pruning that makes tau'_H from tau_H.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "artifacts/typed.h"
#include "model/causal_lm.h"

namespace safedec {

// Subtracts lambda * tau from the model's weights in place. Tensors are named like
// CausalLM::named_parameters() ("embed", "layers.3.wqkv", ...) with the same shapes; unknown names
// or shape mismatches throw naming the tensor. Returns the number of edited tensors. Weights shared
// with other models (truncated experts) change with it.
int64_t apply_harm_vector(CausalLM& model, const HarmVector& harm, double lambda);
// The same from an artifact (directory or a bare safetensors file).
int64_t apply_harm_vector(CausalLM& model, const std::string& path, double lambda = 3.0);

// Keeps the top `fraction` of |tau| entries globally over all tensors (ties at the threshold
// kept), zeroing the rest in place; returns the threshold.
double prune_harm_vector_global(std::vector<torch::Tensor>& tau, double fraction = 0.1);

}  // namespace safedec
