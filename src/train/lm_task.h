// LmTask: causal-LM training through the same CausalLM that decodes — a full fine-tune (every weight or
// a chosen subset), LoRA factors, or soft prompts spliced into the input, with per-token loss masks
// and several loss terms (NLL or unlikelihood, each a token mean over its own tokens; methods.md 2).
//
// Batches are right-padded and run without a KV cache (CausalLM::forward_hidden semantics). The LM head
// runs only on target positions, in row chunks whose graphs are freed one at a time. With
// activation checkpointing the layers first run without a graph, keeping only each layer's input;
// the backward pass then recomputes one layer at a time (the CPU RNG is restored per layer so LoRA
// dropout draws the same masks), so memory holds one layer's activations instead of all of them.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/causal_lm.h"
#include "model/lora.h"
#include "train/trainer.h"

namespace safedec {

// One tokenised training sequence.
struct LmExample {
  std::string id;
  std::vector<int32_t> ids;       // the whole sequence (prompt + response)
  std::vector<uint8_t> target;    // same length: 1 where ids[t] is predicted (from position t - 1)
  int term = 0;                   // loss term index
  int soft_prompt = -1;           // index of a soft prompt spliced in before ids[embeds_at]; -1 = none
  int64_t embeds_at = 0;
  int64_t target_count() const;
};

// How a loss term scores target tokens.
struct LossTerm {
  std::string name = "nll";
  std::string kind = "nll";  // nll: -log p(y) | ul: -log(clamp(1 - p(y), min 1e-5)) (unlikelihood)
  double weight = 1.0;
};

struct LmTaskOptions {
  bool activation_checkpointing = false;
  int64_t head_chunk = 512;  // target rows per LM-head chunk
  bool train_full = false;   // every weight of the model (full fine-tune)
  // With train_full: skip the token embeddings / (untied) LM head (frozen), e.g. to save memory.
  bool freeze_embeddings = false;
  std::shared_ptr<LoraAdapter> lora;        // trained LoRA factors (applied to every row)
  std::vector<torch::Tensor> soft_prompts;  // trained [L_i, d] prompts
  std::vector<LossTerm> terms = {LossTerm{}};
};

class LmTask : public TrainTask {
 public:
  LmTask(std::shared_ptr<CausalLM> model, std::vector<LmExample> examples, LmTaskOptions options);
  std::vector<TrainParam> parameters() override;
  int64_t size() const override { return static_cast<int64_t>(examples_.size()); }
  std::vector<std::string> term_names() const override;
  std::vector<double> term_weights() const override;
  std::vector<double> units(const std::vector<int64_t>& batch) const override;
  MicroResult forward_backward(const std::vector<int64_t>& micro, const std::vector<double>& norm) override;

  const std::vector<LmExample>& examples() const { return examples_; }
  // The loss of a micro-batch without gradients (evaluation): per-term sums and target counts.
  std::pair<std::vector<double>, std::vector<double>> evaluate(const std::vector<int64_t>& micro);

 private:
  struct Batch {
    ForwardInput input;
    torch::Tensor rows, cols;     // [N] positions (b, t-1) whose outputs predict a target
    torch::Tensor labels, terms;  // [N] target ids and their term index
    int64_t tokens = 0;
  };
  Batch collate(const std::vector<int64_t>& micro) const;
  // Head + losses on final-normed hidden rows [N, d]; returns per-term sums (graph kept).
  std::vector<torch::Tensor> head_losses(const torch::Tensor& hidden_rows, const torch::Tensor& labels,
                                         const torch::Tensor& terms, const ForwardHooks* hooks) const;

  std::shared_ptr<CausalLM> model_;
  std::vector<LmExample> examples_;
  LmTaskOptions options_;
  ForwardHooks hooks_;
};

}  // namespace safedec
