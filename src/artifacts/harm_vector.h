// Harm Direction Removal (Safety Arithmetic 3a, methods.md): a pruned harm vector applied to a loaded
// model, theta' = theta - lambda * tau'_H (lambda = 3), a zero-cost weight edit; the global top-k
// selection that makes tau'_H from tau_H, in streaming passes that never hold a second copy of tau;
// and the tau of a LoRA fine-tune (scale * B A, placed in the fused weight layout).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "artifacts/typed.h"
#include "model/causal_lm.h"
#include "model/lora.h"

namespace safedec {

// lambda is refused outside [0, kHdrLambdaMax]: the paper uses 0.1 .. 6; a negative lambda adds the
// harm direction instead of removing it.
constexpr double kHdrLambdaMax = 20.0;
void check_hdr_lambda(double lambda, const std::string& where);
// The kept fraction k of the global top-k must be in (0, 1].
void check_topk_fraction(double fraction, const std::string& where);

// Subtracts lambda * tau from the model's weights in place. Tensors are named like
// CausalLM::named_parameters() ("embed", "layers.3.wqkv", ...) with the same shapes; unknown names
// or shape mismatches throw naming the tensor. Returns the number of edited tensors. Weights shared
// with other models (truncated experts) change with it.
int64_t apply_harm_vector(CausalLM& model, const HarmVector& harm, double lambda);
// The same from an artifact (directory or a bare safetensors file).
int64_t apply_harm_vector(CausalLM& model, const std::string& path, double lambda = 3.0);

// ---- streaming exact global top-k of |tau| ----
// One pass over tau: the stream calls `visit(values, n)` for each contiguous fp32 block of tau
// entries (a whole tensor or a chunk of one), in any order, materialising at most one block at a
// time. The selection calls the stream twice.
using TauVisitor = std::function<void(const float* values, int64_t n)>;
using TauStream = std::function<void(const TauVisitor& visit)>;

struct TopKSelection {
  int64_t total = 0;     // entries visited
  int64_t k = 0;         // max(1, floor(fraction * total))
  int64_t kept = 0;      // entries with |tau| >= threshold (k, or more when values tie at the threshold)
  int64_t kept_nonzero = 0;  // of those, entries that are not 0 (what the edit actually changes)
  double threshold = 0;  // the k-th largest |tau| (exactly: it equals a value of |tau|)
};
// The k-th largest |tau| over every entry of the stream, by a two-pass radix select on the fp32 bit
// patterns (|x| orders like its bits for x >= 0): pass 1 counts the top 16 bits (65536 bins), pass 2
// the low 16 bits inside the bin that holds the k-th largest. Memory: two 65536-bin histograms;
// result identical to sorting. NaN/Inf entries are refused.
TopKSelection select_global_topk(const TauStream& stream, double fraction);

// Keeps the top `fraction` of |tau| entries globally over all tensors (ties at the threshold
// kept), zeroing the rest in place; returns the threshold. Uses select_global_topk (no concatenated copy).
double prune_harm_vector_global(std::vector<torch::Tensor>& tau, double fraction = 0.1);

// Zeroes every entry of an fp32 contiguous CPU tensor with |x| < threshold, in place (no temporaries).
void mask_below_threshold(torch::Tensor& t, double threshold);

// ---- LoRA fine-tunes ----
// The weight change of a LoRA adapter, scale * B A, as tensors named and shaped like
// CausalLM::named_parameters() (q/k/v go into their rows of the fused wqkv, gate/up into w_gate_up);
// tensors the adapter does not touch are absent. An adapter on the LM head of a model whose head is
// tied to the embeddings is refused (the edit would change the embeddings too).
std::map<std::string, torch::Tensor> lora_weight_delta(const CausalLM& model, const LoraAdapter& adapter);

}  // namespace safedec
