// In-context safety vector (ICV) extraction for Safe-Align (Safety Arithmetic, methods.md 3b):
// per (unsafe, safe) demonstration pair the difference of every layer's residual output averaged
// over the last 4 tokens (or the last token), then PCA's first component (sign-fixed) + the mean.
#pragma once
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/causal_lm.h"
#include "tokenizer/tokenizer.h"

namespace safedec {

// One demonstration pair for the same question.
struct IcvPair {
  std::string question;
  std::string unsafe_answer;  // a compliance-style answer
  std::string safe_answer;    // a refusal
};

struct IcvOptions {
  int64_t last_tokens = 4;  // positions averaged at the end of each string (the code's choice)
  bool last_token_only = false;  // the paper's reading: the last token only
};

// Reads a JSONL file of {"question", "unsafe", "safe"} objects (errors name the line).
std::vector<IcvPair> read_icv_pairs(const std::string& path);
// "Question: {q}\nAnswer: {a}".
std::string icv_demo_text(const std::string& question, const std::string& answer);
// Every layer's residual output for one token sequence, averaged over its last n positions: [L, d].
torch::Tensor layer_states(const CausalLM& model, const std::vector<int32_t>& ids, int64_t last_n);
// PCA direction of the rows of diffs [N, F]: the first principal component of the centred rows, its
// sign fixed so that the largest-magnitude entry of its score column is positive (the ICV code's
// svd_flip), plus the mean row. A centred matrix without variance contributes no component.
torch::Tensor icv_direction(const torch::Tensor& diffs);
// The ICV [L, d] of a model from demonstration pairs, run one string at a time with BOS.
torch::Tensor extract_icv(const CausalLM& model, const Tokenizer& tokenizer, const std::vector<IcvPair>& pairs,
                          const IcvOptions& options = {});
// Writes an ICV artifact directory (icv.safetensors {"icv": [L, d]} + manifest.json for `model`, with
// `params` recorded); returns its path. An existing directory is refused unless `overwrite`.
std::string save_icv(const std::string& dir, const torch::Tensor& icv, const ModelConfig& model,
                     const nlohmann::json& params = nlohmann::json::object(), bool overwrite = false);

}  // namespace safedec
