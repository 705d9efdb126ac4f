// LoRA adapters (Hu et al. 2021): y = W x + (alpha / r) * B (A dropout(x)), on any linear layer of a
// CausalLM, with a per-row selector so one batch can mix "base" rows and "adapter" rows.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/model_config.h"

namespace safedec {

// The linear layers of a decoder layer (HF names q_proj ... down_proj) plus the LM head.
enum class LinearKind { Q, K, V, O, Gate, Up, Down, LmHead };
const char* linear_kind_name(LinearKind k);          // "q_proj", ..., "lm_head"
LinearKind linear_kind_from_name(const std::string& name);  // throws listing the known names
// {out_features, in_features} of a linear layer of a model with this config.
std::pair<int64_t, int64_t> linear_shape(const ModelConfig& cfg, LinearKind k);

// Low-rank factors of one linear layer: A [r, in], B [out, r]; delta = scale * B A x.
struct LoraFactors {
  torch::Tensor a;
  torch::Tensor b;
  double scale = 1.0;  // alpha / r
};

// One LoRA adapter: factors for a set of (layer, linear) targets. PEFT's initialisation: A ~
// kaiming-uniform(a = sqrt(5)) i.e. U(-1/sqrt(in), 1/sqrt(in)), B = 0, so a new adapter is a no-op.
class LoraAdapter {
 public:
  struct Options {
    int64_t rank = 8;
    double alpha = 16.0;
    double dropout = 0.0;  // applied to the adapter input only while ForwardHooks::training
    std::vector<std::string> targets = {"q_proj", "v_proj"};  // HF linear names, or "lm_head"
    std::vector<int64_t> layers;  // empty = every layer
    uint64_t seed = 0;
  };
  LoraAdapter() = default;
  // An empty adapter with these options (factors are added with set(), e.g. when reading a file).
  explicit LoraAdapter(const Options& options) : options_(options) {}
  LoraAdapter(const ModelConfig& cfg, const Options& options, torch::TensorOptions tensor_options = {});

  const Options& options() const { return options_; }
  // nullptr when the adapter does not touch this linear (layer -1 for the LM head).
  const LoraFactors* find(int64_t layer, LinearKind kind) const;
  LoraFactors* find(int64_t layer, LinearKind kind);
  // Adds (or replaces) factors for one target, e.g. when reading a PEFT adapter.
  void set(int64_t layer, LinearKind kind, LoraFactors factors);
  // All A and B tensors (for an optimizer; set requires_grad yourself).
  std::vector<torch::Tensor> parameters() const;
  // PEFT names: base_model.model.model.layers.<l>.self_attn.q_proj.lora_A.weight, ...
  std::vector<std::pair<std::string, torch::Tensor>> named_parameters() const;

 private:
  Options options_;
  std::map<std::pair<int64_t, int>, LoraFactors> factors_;
};

// An adapter active on some rows of a batch: rows is a [B] bool/float tensor (1 = the adapter
// applies to that row, a fraction scales it), undefined = every row.
struct LoraBinding {
  std::shared_ptr<const LoraAdapter> adapter;
  torch::Tensor rows;
};

// y += sum over bindings of row_mask * scale * B (A dropout(x)) for the given (layer, kind).
// x: [B, T, in], y: [B, T, out]. Returns y unchanged when no binding targets this linear.
torch::Tensor apply_lora(const std::vector<LoraBinding>& bindings, int64_t layer, LinearKind kind,
                         const torch::Tensor& x, torch::Tensor y, bool training);

}  // namespace safedec
