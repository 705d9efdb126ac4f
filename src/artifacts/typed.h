// The typed artifacts (see artifact.h for the directory contract): one load and one save per kind,
// each checked against the ModelConfig it is used with. Loaders also read the bare files earlier
// safedec versions wrote (a .safetensors file without a directory or manifest; checked by shape only).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "artifacts/artifact.h"
#include "model/causal_lm.h"
#include "model/lora.h"

namespace safedec {

// ---- ACD soft prompts: SP [L, d] and AP [L', d] in the target's input-embedding space ----
struct SoftPrompts {
  torch::Tensor sp, ap;
  std::string source;
};
SoftPrompts load_soft_prompts(const std::string& path, const ModelConfig& model);
void write_soft_prompts(ArtifactWriter& writer, const SoftPrompts& prompts);

// ---- LoRA adapter (PEFT layout: adapter_config.json + adapter_model.safetensors) ----
// Reads a PEFT adapter directory (with or without a safedec manifest.json; with one, the model is
// checked) and checks every factor's shape against the model.
std::shared_ptr<LoraAdapter> load_lora_adapter(const std::string& dir, const ModelConfig& model);
// Writes adapter_config.json (peft_type LORA, task_type CAUSAL_LM, r, lora_alpha, lora_dropout,
// target_modules, base_model_name_or_path) and adapter_model.safetensors with PEFT's key names.
void write_lora_adapter(ArtifactWriter& writer, const LoraAdapter& adapter, const std::string& base_model_name_or_path);
// The same two PEFT files written into the existing directory `dir` (no manifest): a plain PEFT
// adapter directory (`safedec export peft`). Returns the adapter_config.json written.
nlohmann::json write_peft_adapter(const std::string& dir, const LoraAdapter& adapter,
                                  const std::string& base_model_name_or_path);

// ---- expert weights: a fine-tuned copy of a model (or of its first K layers) ----
// params: {"base_model": registered name or path, "layers": K}; file weights.safetensors holds every
// tensor of CausalLM::named_parameters().
void write_expert_weights(ArtifactWriter& writer, const CausalLM& expert, const std::string& base_model);
// Loads the base model's first K layers and replaces every weight with the artifact's.
std::shared_ptr<CausalLM> load_expert_weights(const std::string& dir, const LoadOptions& options = {});
// Replaces every weight of `model` (the base model loaded with max_layers = K) with the artifact's.
void load_expert_weights_into(CausalLM& model, const std::string& dir);
// The base model (registered name or path) and layer count K an expert-weights artifact was made from.
std::string expert_base_model(const std::string& dir);
int64_t expert_layers(const std::string& dir);

// ---- Safe-Align in-context safety vector: icv [n_layers, hidden] ----
torch::Tensor load_icv(const std::string& path, const ModelConfig& model);
void write_icv(ArtifactWriter& writer, const torch::Tensor& icv);

// ---- Safety Arithmetic harm vector: pruned tau'_H tensors named like CausalLM::named_parameters() ----
struct HarmVector {
  std::map<std::string, torch::Tensor> tau;
  double lambda = 3.0;  // the default strength recorded by training (params.lambda)
};
HarmVector load_harm_vector(const std::string& path, const ModelConfig& model);
void write_harm_vector(ArtifactWriter& writer, const HarmVector& harm);

// ---- NGSD risk probe: r = 10 * sigmoid(w . feature + b), feature = the prompt's hidden state ----
struct RiskProbe {
  torch::Tensor weight;  // [d]
  torch::Tensor bias;    // [1]
  int64_t layer = -1;    // -1: the final-normed hidden state; l >= 0: the residual after layer l
  // last: the prompt's last token; user_mean: the mean over the last `window` tokens that end the
  // final user text (StrategyPrompt::user_end), which reach back into the template for short texts.
  std::string pooling = "last";
  int64_t window = 64;
};
// The pooling names a risk probe may use.
const std::vector<std::string>& risk_probe_poolings();
RiskProbe load_risk_probe(const std::string& path, const ModelConfig& model);
void write_risk_probe(ArtifactWriter& writer, const RiskProbe& probe);

// ---- NGSD gate calibration: the LIF parameters chosen on benign anchor prompts ----
struct GateCalibration {
  double tau = 8.0, theta = 1.0, reset = 0.6;
  double target_fire_rate = 0.0;  // the share of benign tokens the gate may fire on
};
GateCalibration load_gate_calibration(const std::string& path, const ModelConfig& model);
void write_gate_calibration(ArtifactWriter& writer, const GateCalibration& gate);

}  // namespace safedec
