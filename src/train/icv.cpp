// ICV extraction (Safety Arithmetic / in-context vectors, methods.md 3b): for each pair, h_i =
// h(unsafe) - h(safe) where h is the concatenation over layers of the residual stream after the
// layer, averaged over the last 4 positions (switch: last position) of "Question: q\nAnswer: a" run
// alone with BOS. X = [h_i] (N x L*d); direction = PC1(X - mean X) (sign-fixed as the ICV code's
// svd_flip) + mean X, reshaped to [L, d]. Everything in fp32.
#include "core/jsonl.h"
#include "train/icv.h"

#include "artifacts/typed.h"

#include <nlohmann/json.hpp>

#include <fstream>

#include "core/error.h"
#include "io/safetensors.h"

namespace safedec {

std::vector<IcvPair> read_icv_pairs(const std::string& path) {
  std::vector<IcvPair> pairs;
  for_each_jsonl_line(path, "ICV pairs file", [&](const nlohmann::json& j, int64_t n) {
    for (const char* k : {"question", "unsafe", "safe"})
      SAFEDEC_CHECK(j.is_object() && j.contains(k) && j[k].is_string(), "ICV pairs file ", path, " line ", n,
                    " needs a string field \"", k, "\"");
    pairs.push_back({j["question"].get<std::string>(), j["unsafe"].get<std::string>(), j["safe"].get<std::string>()});
  });
  SAFEDEC_CHECK(!pairs.empty(), "the ICV pairs file ", path, " holds no pairs");
  return pairs;
}

std::string icv_demo_text(const std::string& question, const std::string& answer) {
  return "Question: " + question + "\nAnswer: " + answer;
}

torch::Tensor layer_states(const CausalLM& model, const std::vector<int32_t>& ids, int64_t last_n) {
  SAFEDEC_CHECK(!ids.empty(), "layer_states: empty token sequence");
  const int64_t T = static_cast<int64_t>(ids.size());
  const int64_t n = std::min(last_n, T);
  std::vector<int64_t> v(ids.begin(), ids.end());
  ForwardInput in;
  in.ids = torch::tensor(v, torch::kLong).view({1, T}).to(model.device());
  in.last_only = true;
  CaptureRequest cap;
  cap.residual = true;
  cap.positions = torch::arange(T - n, T, torch::kLong).to(model.device());
  ForwardHooks hooks;
  hooks.capture = &cap;
  KvCache cache = model.new_cache(1, T);
  ForwardOutput out = model.forward_full(in, cache, &hooks);
  const int64_t L = model.config().n_layers;
  std::vector<torch::Tensor> rows;
  for (int64_t l = 0; l < L; ++l) {
    auto it = out.residual.find(l);
    SAFEDEC_ASSERT(it != out.residual.end(), "layer_states: layer ", l, " was not captured");
    rows.push_back(it->second.to(torch::kFloat32).to(torch::kCPU).mean(1).squeeze(0));  // [d]
  }
  return torch::stack(rows);  // [L, d]
}

torch::Tensor icv_direction(const torch::Tensor& diffs) {
  SAFEDEC_CHECK(diffs.dim() == 2 && diffs.size(0) >= 1, "icv_direction: expects [N, F] with N >= 1, got ",
                diffs.sizes());
  torch::Tensor x = diffs.to(torch::kFloat64);  // fp64 SVD: N is small, accuracy is free
  torch::Tensor mean = x.mean(0);
  torch::Tensor xc = x - mean;
  torch::Tensor pc1 = torch::zeros_like(mean);
  if (x.size(0) >= 2) {
    auto [u, s, vh] = torch::linalg_svd(xc, /*full_matrices=*/false);
    // No variance around the mean (all differences equal): there is no principal direction.
    const double scale = std::max(1.0, x.abs().max().item<double>());
    if (s[0].item<double>() > 1e-9 * scale) {
      torch::Tensor u0 = u.select(1, 0);
      const int64_t i = u0.abs().argmax().item<int64_t>();
      const double sign = u0[i].item<double>() >= 0 ? 1.0 : -1.0;
      pc1 = vh[0] * sign;
    }
  }
  return (pc1 + mean).to(torch::kFloat32);
}

torch::Tensor extract_icv(const CausalLM& model, const Tokenizer& tokenizer, const std::vector<IcvPair>& pairs,
                          const IcvOptions& options) {
  SAFEDEC_CHECK(!pairs.empty(), "ICV extraction needs at least one (unsafe, safe) pair");
  SAFEDEC_CHECK(options.last_tokens >= 1, "ICV extraction: last_tokens must be >= 1");
  const int64_t last_n = options.last_token_only ? 1 : options.last_tokens;
  auto encode = [&](const std::string& text) {
    std::vector<int32_t> ids = tokenizer.encode(text, /*add_special=*/false);
    // BOS is always added (as the reference does), whether or not the model's tokenizer adds it.
    if (tokenizer.bos_id() >= 0) ids.insert(ids.begin(), tokenizer.bos_id());
    return ids;
  };
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> diffs;
  for (const auto& p : pairs) {
    torch::Tensor hu = layer_states(model, encode(icv_demo_text(p.question, p.unsafe_answer)), last_n);
    torch::Tensor hs = layer_states(model, encode(icv_demo_text(p.question, p.safe_answer)), last_n);
    diffs.push_back((hu - hs).reshape({-1}));
  }
  const int64_t L = model.config().n_layers, d = model.config().hidden_size;
  return icv_direction(torch::stack(diffs)).reshape({L, d});
}

std::string save_icv(const std::string& dir, const torch::Tensor& icv, const ModelConfig& model,
                     const nlohmann::json& params, bool overwrite) {
  ArtifactManifest m;
  m.kind = ArtifactKind::Icv;
  m.model = ModelIdentity::of(model);
  m.params = params;
  ArtifactWriter w(dir, m, overwrite);
  write_icv(w, icv);
  return w.commit();
}

}  // namespace safedec
