// Causal-LM training task (see lm_task.h).
#include "train/lm_task.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <mutex>

#include "core/error.h"

namespace safedec {

namespace {

// Saves / restores the default CPU generator (dropout) around recomputed layers.
torch::Tensor rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_rng_state(const torch::Tensor& state) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

bool is_norm_or_bias(const std::string& name) {
  return name.find("norm") != std::string::npos || name.find("bqkv") != std::string::npos;
}

}  // namespace

int64_t LmExample::target_count() const {
  int64_t n = 0;
  for (size_t t = 1; t < target.size(); ++t) n += target[t] ? 1 : 0;
  return n;
}

LmTask::LmTask(std::shared_ptr<CausalLM> model, std::vector<LmExample> examples, LmTaskOptions options)
    : model_(std::move(model)), examples_(std::move(examples)), options_(std::move(options)) {
  SAFEDEC_CHECK(model_, "LmTask: no model");
  SAFEDEC_CHECK(!options_.terms.empty(), "LmTask: at least one loss term is needed");
  for (const auto& t : options_.terms)
    SAFEDEC_CHECK(t.kind == "nll" || t.kind == "ul", "LmTask: loss term '", t.name, "' has kind '", t.kind,
                  "'; known kinds: nll, ul");
  SAFEDEC_CHECK(options_.head_chunk >= 1, "LmTask: head_chunk must be >= 1");
  const int64_t V = model_->config().vocab_size, d = model_->config().hidden_size;
  for (const auto& p : options_.soft_prompts)
    SAFEDEC_CHECK(p.defined() && p.dim() == 2 && p.size(1) == d && p.size(0) >= 1, "LmTask: soft prompts must be [L, ",
                  d, "]");
  for (const auto& e : examples_) {
    SAFEDEC_CHECK(e.ids.size() == e.target.size() && !e.ids.empty(), "LmTask: example ", e.id,
                  " has ", e.ids.size(), " ids but ", e.target.size(), " target flags");
    SAFEDEC_CHECK(e.term >= 0 && e.term < static_cast<int>(options_.terms.size()), "LmTask: example ", e.id,
                  " names loss term ", e.term, " of ", options_.terms.size());
    SAFEDEC_CHECK(e.soft_prompt < static_cast<int>(options_.soft_prompts.size()), "LmTask: example ", e.id,
                  " names soft prompt ", e.soft_prompt, " but only ", options_.soft_prompts.size(), " exist");
    SAFEDEC_CHECK(e.soft_prompt < 0 || (e.embeds_at >= 0 && e.embeds_at <= static_cast<int64_t>(e.ids.size())),
                  "LmTask: example ", e.id, " splices its soft prompt at ", e.embeds_at, " outside its ", e.ids.size(),
                  " tokens");
    for (int32_t id : e.ids)
      SAFEDEC_CHECK(id >= 0 && id < V, "LmTask: example ", e.id, " has token id ", id, " outside the vocabulary of ",
                    V);
  }
  if (options_.lora) {
    hooks_.loras = {LoraBinding{options_.lora, torch::Tensor()}};
    hooks_.training = true;
  }
}

std::vector<TrainParam> LmTask::parameters() {
  std::vector<TrainParam> out;
  if (options_.train_full) {
    for (auto& [name, t] : model_->named_parameters()) {
      if (options_.freeze_embeddings && (name == "embed" || name == "lm_head")) continue;
      out.push_back({name, t, !is_norm_or_bias(name)});
    }
  }
  if (options_.lora)
    for (auto& [name, t] : options_.lora->named_parameters()) out.push_back({name, t, true});
  for (size_t i = 0; i < options_.soft_prompts.size(); ++i)
    out.push_back({"soft_prompt." + std::to_string(i), options_.soft_prompts[i], false});
  return out;
}

std::vector<std::string> LmTask::term_names() const {
  std::vector<std::string> n;
  for (const auto& t : options_.terms) n.push_back(t.name);
  return n;
}

std::vector<double> LmTask::term_weights() const {
  std::vector<double> w;
  for (const auto& t : options_.terms) w.push_back(t.weight);
  return w;
}

std::vector<double> LmTask::units(const std::vector<int64_t>& batch) const {
  std::vector<double> u(options_.terms.size(), 0.0);
  for (int64_t i : batch) u[examples_[i].term] += static_cast<double>(examples_[i].target_count());
  return u;
}

LmTask::Batch LmTask::collate(const std::vector<int64_t>& micro) const {
  SAFEDEC_CHECK(!micro.empty(), "LmTask: empty micro-batch");
  const int64_t B = static_cast<int64_t>(micro.size());
  std::vector<int64_t> len(B), shift_at(B, 0), shift(B, 0);
  int64_t T = 0;
  bool soft = false;
  for (int64_t b = 0; b < B; ++b) {
    const LmExample& e = examples_[micro[b]];
    const int64_t L = e.soft_prompt >= 0 ? options_.soft_prompts[e.soft_prompt].size(0) : 0;
    soft = soft || L > 0;
    shift_at[b] = e.embeds_at;
    shift[b] = L;
    len[b] = static_cast<int64_t>(e.ids.size()) + L;
    T = std::max(T, len[b]);
  }
  Batch out;
  // Right padding with each row's last id (a valid id; pads only follow real tokens, see LayerPass).
  auto ids = torch::zeros({B, T}, torch::kInt64);
  auto acc = ids.accessor<int64_t, 2>();
  std::vector<int64_t> rows, cols, labels, terms;
  for (int64_t b = 0; b < B; ++b) {
    const LmExample& e = examples_[micro[b]];
    const int64_t n = static_cast<int64_t>(e.ids.size());
    // Position of token t in the spliced sequence.
    auto pos = [&](int64_t t) { return t + (shift[b] > 0 && t >= shift_at[b] ? shift[b] : 0); };
    for (int64_t t = 0; t < n; ++t) acc[b][pos(t)] = e.ids[t];
    for (int64_t p = 0; p < T; ++p)
      if (p >= len[b] || (shift[b] > 0 && p >= shift_at[b] && p < shift_at[b] + shift[b])) acc[b][p] = e.ids.back();
    for (int64_t t = 1; t < n; ++t) {
      if (!e.target[t]) continue;
      rows.push_back(b);
      cols.push_back(pos(t) - 1);
      labels.push_back(e.ids[t]);
      terms.push_back(e.term);
    }
    out.tokens += len[b];
  }
  out.input.ids = ids.to(model_->device());
  if (soft) {
    // h_0 = token embeddings with each row's soft prompt written over its slot.
    auto emb = model_->embed(out.input.ids);  // [B, T, d]
    std::vector<torch::Tensor> rows_e;
    for (int64_t b = 0; b < B; ++b) {
      const LmExample& e = examples_[micro[b]];
      torch::Tensor r = emb[b];
      if (shift[b] > 0) {
        const auto& P = options_.soft_prompts[e.soft_prompt];
        r = torch::cat({r.narrow(0, 0, shift_at[b]), P.to(r.dtype()), r.narrow(0, shift_at[b] + shift[b],
                                                                                T - shift_at[b] - shift[b])});
      }
      rows_e.push_back(r);
    }
    out.input.input_embeds = torch::stack(rows_e);
  }
  auto opt = torch::TensorOptions().dtype(torch::kInt64);
  out.rows = torch::tensor(rows, opt);
  out.cols = torch::tensor(cols, opt);
  out.labels = torch::tensor(labels, opt);
  out.terms = torch::tensor(terms, opt);
  return out;
}

std::vector<torch::Tensor> LmTask::head_losses(const torch::Tensor& hidden_rows, const torch::Tensor& labels,
                                               const torch::Tensor& terms, const ForwardHooks* hooks) const {
  const int64_t K = static_cast<int64_t>(options_.terms.size());
  auto normed = model_->final_hidden(hidden_rows);
  auto logits = model_->head_logits(normed, hooks);  // [n, V] fp32
  auto logp = torch::log_softmax(logits, -1).gather(1, labels.view({-1, 1}).to(logits.device())).squeeze(1);
  std::vector<torch::Tensor> sums;
  auto tdev = terms.to(logits.device());
  for (int64_t k = 0; k < K; ++k) {
    auto sel = tdev == k;
    torch::Tensor per;
    if (options_.terms[k].kind == "nll") {
      per = -logp;
    } else {
      // Unlikelihood: -log(1 - p), with 1 - p clamped at 1e-5 (ACD's UL, methods.md 2).
      per = -torch::log(torch::clamp(1.0 - torch::exp(logp), 1e-5));
    }
    sums.push_back(torch::where(sel, per, torch::zeros_like(per)).sum());
  }
  return sums;
}

MicroResult LmTask::forward_backward(const std::vector<int64_t>& micro, const std::vector<double>& norm) {
  Batch b = collate(micro);
  const int64_t K = static_cast<int64_t>(options_.terms.size());
  MicroResult r;
  r.term_sums.assign(K, 0.0);
  r.tokens = b.tokens;
  torch::Tensor h0 = model_->input_hidden(b.input);
  const int64_t B = h0.size(0), T = h0.size(1);
  const LayerPass pass = model_->begin_pass(b.input, B, T, nullptr, &hooks_);
  const int64_t n_layers = model_->config().n_layers;
  const bool ckpt = options_.activation_checkpointing;
  std::vector<torch::Tensor> saved, states;
  torch::Tensor hL, end_state;
  if (!ckpt) {
    torch::Tensor h = h0;
    for (int64_t l = 0; l < n_layers; ++l) h = model_->run_layer(l, h, pass);
    hL = h;
  } else {
    torch::NoGradGuard ng;
    torch::Tensor h = h0.detach();
    for (int64_t l = 0; l < n_layers; ++l) {
      saved.push_back(h);
      states.push_back(rng_state());
      h = model_->run_layer(l, h, pass);
    }
    end_state = rng_state();
    hL = h;
  }
  // Head on target rows, chunk by chunk, backpropagated into a leaf copy of the last hidden state.
  torch::Tensor leaf = hL.detach().requires_grad_(true);
  const int64_t N = b.labels.size(0);
  auto dev_rows = b.rows.to(leaf.device()), dev_cols = b.cols.to(leaf.device());
  for (int64_t lo = 0; lo < N; lo += options_.head_chunk) {
    const int64_t n = std::min(options_.head_chunk, N - lo);
    auto rows = leaf.index({dev_rows.narrow(0, lo, n), dev_cols.narrow(0, lo, n)});  // [n, d]
    auto sums = head_losses(rows, b.labels.narrow(0, lo, n), b.terms.narrow(0, lo, n), &hooks_);
    torch::Tensor loss;
    for (int64_t k = 0; k < K; ++k) {
      r.term_sums[k] += sums[k].item<double>();
      if (norm[k] <= 0) continue;
      auto part = sums[k] * (options_.terms[k].weight / norm[k]);
      loss = loss.defined() ? loss + part : part;
    }
    if (loss.defined() && loss.requires_grad()) loss.backward();
  }
  torch::Tensor g = leaf.grad();
  if (!g.defined()) return r;  // no targets in this micro-batch
  if (!ckpt) {
    if (hL.requires_grad()) hL.backward(g);
    return r;
  }
  for (int64_t l = n_layers - 1; l >= 0; --l) {
    torch::Tensor x = saved[l].detach().requires_grad_(true);
    set_rng_state(states[l]);
    torch::Tensor y = model_->run_layer(l, x, pass);
    if (y.requires_grad()) y.backward(g);
    g = x.grad();
    saved[l] = torch::Tensor();
    if (!g.defined()) break;
  }
  set_rng_state(end_state);
  if (g.defined() && h0.requires_grad()) h0.backward(g);
  return r;
}

std::pair<std::vector<double>, std::vector<double>> LmTask::evaluate(const std::vector<int64_t>& micro) {
  torch::NoGradGuard ng;
  Batch b = collate(micro);
  const int64_t K = static_cast<int64_t>(options_.terms.size());
  std::vector<double> sums(K, 0.0), counts(K, 0.0);
  ForwardHooks eval_hooks = hooks_;
  eval_hooks.training = false;
  torch::Tensor h = model_->input_hidden(b.input);
  const LayerPass pass = model_->begin_pass(b.input, h.size(0), h.size(1), nullptr, &eval_hooks);
  for (int64_t l = 0; l < model_->config().n_layers; ++l) h = model_->run_layer(l, h, pass);
  const int64_t N = b.labels.size(0);
  for (int64_t lo = 0; lo < N; lo += options_.head_chunk) {
    const int64_t n = std::min(options_.head_chunk, N - lo);
    auto rows = h.index({b.rows.narrow(0, lo, n).to(h.device()), b.cols.narrow(0, lo, n).to(h.device())});
    auto s = head_losses(rows, b.labels.narrow(0, lo, n), b.terms.narrow(0, lo, n), &eval_hooks);
    for (int64_t k = 0; k < K; ++k) sums[k] += s[k].item<double>();
  }
  auto tc = b.terms.accessor<int64_t, 1>();
  for (int64_t i = 0; i < N; ++i) counts[tc[i]] += 1;
  return {sums, counts};
}

}  // namespace safedec
