// Forward pass of a Llama-family decoder (HF modeling_llama / modeling_qwen2 / modeling_gemma3
// semantics, fp32 on CPU):
//   h_0 = embed(ids) (Gemma: * sqrt(d)), optionally replaced by caller embeddings at masked positions
//   per layer l:  a = Attn(RMSNorm(h)) [Gemma: post-attn RMSNorm];  h = h + a
//                 m = Down(act(Gate x) * Up x), x = RMSNorm(h) [Gemma: post-ffn RMSNorm]
//                 m = steer_l(m) (hook);  h = h + m
//   logits = LMHead(RMSNorm(h))
// RMSNorm(x) = w * x / sqrt(mean(x^2) + eps), computed in fp32 like HF (eps from the config).
// Attention: rotary embeddings in HF's rotate-half layout (Q/K of llama GGUFs are un-permuted on
// load), grouped-query attention computed per KV head on [g*T, L] score blocks (no K/V repeat),
// additive -inf mask from the cache's per-row left padding, causality and (Gemma) sliding windows.
#include "model/causal_lm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "core/row_pool.h"
#include "model/decode_step.h"
#include "model/fast_linear.h"
#include "model/quant_linear.h"

namespace safedec {

namespace {

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  // fp32 statistics regardless of the activation dtype (HF LlamaRMSNorm / Gemma3RMSNorm).
  auto xf = x.scalar_type() == torch::kFloat32 ? x : x.to(torch::kFloat32);
  auto var = xf.pow(2).mean(-1, /*keepdim=*/true);
  auto y = xf * torch::rsqrt(var + eps);
  return w * (x.scalar_type() == torch::kFloat32 ? y : y.to(x.scalar_type()));
}

// x: [B, T, H, hd]; cos/sin: [B, T, 1, hd/2] (the two halves of HF's duplicated tables are equal).
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half);
  auto x2 = x.narrow(-1, half, half);
  // rotate_half(x) = [-x2, x1];  out = x * cos + rotate_half(x) * sin
  return torch::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, -1);
}

void check_shape(const torch::Tensor& t, std::vector<int64_t> shape, const std::string& what) {
  SAFEDEC_CHECK(t.defined(), "CausalLM: weight ", what, " is missing.");
  SAFEDEC_CHECK(t.sizes() == torch::IntArrayRef(shape), "CausalLM: weight ", what, " has shape ", t.sizes(),
                " but the config needs ", torch::IntArrayRef(shape), ".");
}

// inv_freq[i] = 1 / theta^(2i / hd) in fp32 (as HF computes it), with optional rope scaling.
torch::Tensor make_inv_freq(double theta, int64_t hd, const RopeScaling& sc) {
  auto exponent = torch::arange(0, hd, 2, torch::kInt64).to(torch::kFloat32) / static_cast<float>(hd);
  auto inv = 1.0 / torch::pow(theta, exponent);
  inv = inv.to(torch::kFloat32);
  if (sc.type == "linear") {
    inv = inv / sc.factor;
  } else if (sc.type == "llama3") {
    // Llama 3.1 frequency-dependent scaling (HF _compute_llama3_parameters).
    const double old_ctx = static_cast<double>(sc.original_max_position);
    const double low_wavelen = old_ctx / sc.low_freq_factor;
    const double high_wavelen = old_ctx / sc.high_freq_factor;
    auto wavelen = 2.0 * M_PI / inv;
    auto scaled = torch::where(wavelen > low_wavelen, inv / sc.factor, inv);
    auto smooth = (old_ctx / wavelen - sc.low_freq_factor) / (sc.high_freq_factor - sc.low_freq_factor);
    auto smoothed = (1 - smooth) * scaled / sc.factor + smooth * scaled;
    auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv = torch::where(medium, smoothed, scaled).to(torch::kFloat32);
  } else if (sc.type != "none" && !sc.type.empty()) {
    fail("CausalLM: rope scaling type '", sc.type, "' is not supported (supported: none, linear, llama3).");
  }
  return inv;
}

}  // namespace

CausalLM::CausalLM(ModelConfig config, ModelWeights weights) : config_(std::move(config)), weights_(std::move(weights)) {
  auto& c = config_;
  if (c.head_dim <= 0 && c.n_heads > 0) c.head_dim = c.hidden_size / c.n_heads;
  SAFEDEC_CHECK(c.n_layers > 0 && c.hidden_size > 0 && c.n_heads > 0 && c.n_kv_heads > 0 && c.head_dim > 0 &&
                    c.vocab_size > 0 && c.intermediate_size > 0,
                "CausalLM: config of '", c.name, "' has a non-positive size (layers ", c.n_layers, ", hidden ",
                c.hidden_size, ", heads ", c.n_heads, "/", c.n_kv_heads, ", head_dim ", c.head_dim, ", vocab ",
                c.vocab_size, ", ffn ", c.intermediate_size, ").");
  SAFEDEC_CHECK(c.n_heads % c.n_kv_heads == 0, "CausalLM: n_heads (", c.n_heads, ") must be a multiple of n_kv_heads (",
                c.n_kv_heads, ").");
  SAFEDEC_CHECK(c.head_dim % 2 == 0, "CausalLM: head_dim must be even for rotary embeddings, got ", c.head_dim, ".");
  SAFEDEC_CHECK(c.hidden_act == "silu" || c.hidden_act == "gelu_pytorch_tanh" || c.hidden_act == "gelu",
                "CausalLM: hidden_act '", c.hidden_act, "' is not supported (silu, gelu_pytorch_tanh).");
  SAFEDEC_CHECK(static_cast<int64_t>(weights_.layers.size()) == c.n_layers, "CausalLM: config says ", c.n_layers,
                " layers but ", weights_.layers.size(), " were given.");
  const int64_t d = c.hidden_size, hd = c.head_dim, qkv = (c.n_heads + 2 * c.n_kv_heads) * hd;
  const bool gemma = c.architecture == "gemma3";
  check_shape(weights_.embed, {c.vocab_size, d}, "embed");
  check_shape(weights_.final_norm, {d}, "final_norm");
  // A weight held quantised (QuantWeight) has its fp32 tensor undefined: check the blocks' shape.
  auto check_linear = [&](const torch::Tensor& t, const std::shared_ptr<const QuantWeight>& q, int64_t rows,
                          int64_t cols, const std::string& name) {
    if (q)
      SAFEDEC_CHECK(q->rows() == rows && q->cols() == cols, "CausalLM: quantised weight '", name, "' is [", q->rows(),
                    ", ", q->cols(), "], expected [", rows, ", ", cols, "].");
    else
      check_shape(t, {rows, cols}, name);
  };
  check_linear(weights_.lm_head, weights_.q_lm_head, c.vocab_size, d, "lm_head");
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const auto& L = *weights_.layers[l];
    const std::string p = "layers." + std::to_string(l) + ".";
    check_shape(L.attn_norm, {d}, p + "attn_norm");
    check_linear(L.wqkv, L.q_wqkv, qkv, d, p + "wqkv");
    if (L.bqkv.defined()) check_shape(L.bqkv, {qkv}, p + "bqkv");
    check_linear(L.wo, L.q_wo, d, c.n_heads * hd, p + "wo");
    check_shape(L.ffn_norm, {d}, p + "ffn_norm");
    check_linear(L.w_gate_up, L.q_gate_up, 2 * c.intermediate_size, d, p + "w_gate_up");
    check_linear(L.w_down, L.q_down, d, c.intermediate_size, p + "w_down");
    if (gemma) {
      check_shape(L.q_norm, {hd}, p + "q_norm");
      check_shape(L.k_norm, {hd}, p + "k_norm");
      check_shape(L.post_attn_norm, {d}, p + "post_attn_norm");
      check_shape(L.post_ffn_norm, {d}, p + "post_ffn_norm");
    }
  }
  inv_freq_global_ = make_inv_freq(c.rope_theta, hd, c.rope_scaling);
  if (weights_.rope_freqs.defined()) {
    // llama.cpp llama3 GGUFs: per-frequency divisors instead of rope-scaling metadata.
    check_shape(weights_.rope_freqs, {hd / 2}, "rope_freqs");
    inv_freq_global_ = inv_freq_global_ / weights_.rope_freqs.to(torch::kCPU, torch::kFloat32);
  }
  if (gemma) inv_freq_local_ = make_inv_freq(c.rope_local_theta, hd, RopeScaling{});
}

std::shared_ptr<CausalLM> CausalLM::random(const ModelConfig& config, uint64_t seed, double std) {
  ModelConfig c = config;
  if (c.head_dim <= 0 && c.n_heads > 0) c.head_dim = c.hidden_size / c.n_heads;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto randn = [&](std::vector<int64_t> shape) { return at::normal(0.0, std, shape, gen); };
  auto norm = [&](int64_t n) { return 1.0 + at::normal(0.0, 0.1, {n}, gen); };
  const int64_t d = c.hidden_size, hd = c.head_dim, qkv = (c.n_heads + 2 * c.n_kv_heads) * hd;
  ModelWeights w;
  w.embed = randn({c.vocab_size, d}) * (1.0 / std);  // unit-scale embeddings keep activations O(1)
  for (int64_t l = 0; l < c.n_layers; ++l) {
    auto L = std::make_shared<LayerWeights>();
    L->attn_norm = norm(d);
    L->wqkv = randn({qkv, d});
    if (c.attention_bias) L->bqkv = randn({qkv});
    L->wo = randn({d, c.n_heads * hd});
    L->ffn_norm = norm(d);
    L->w_gate_up = randn({2 * c.intermediate_size, d});
    L->w_down = randn({d, c.intermediate_size});
    if (c.architecture == "gemma3") {
      L->q_norm = norm(hd);
      L->k_norm = norm(hd);
      L->post_attn_norm = norm(d);
      L->post_ffn_norm = norm(d);
    }
    w.layers.push_back(L);
  }
  w.final_norm = norm(d);
  w.lm_head = c.tie_word_embeddings ? w.embed : randn({c.vocab_size, d});
  return std::make_shared<CausalLM>(c, w);
}

bool CausalLM::layer_is_sliding(int64_t layer) const { return config_.layer_is_sliding(layer); }

std::pair<torch::Tensor, torch::Tensor> CausalLM::rope_tables(bool local, int64_t n_positions) const {
  std::lock_guard<std::mutex> lock(rope_mutex_);
  torch::Tensor& cos = local ? cos_local_ : cos_global_;
  torch::Tensor& sin = local ? sin_local_ : sin_global_;
  if (!cos.defined() || cos.size(0) < n_positions) {
    // Grow by doubling; at least 512 positions so short generations build the table once.
    int64_t n = std::max<int64_t>(512, cos.defined() ? 2 * cos.size(0) : 0);
    while (n < n_positions) n *= 2;
    // Plain (non-inference, no-grad) tensors, so the tables also serve autograd forwards later.
    c10::InferenceMode not_inference(false);
    torch::NoGradGuard no_grad;
    auto pos = torch::arange(n, torch::kInt64).to(torch::kFloat32);
    auto freqs = torch::outer(pos, local ? inv_freq_local_ : inv_freq_global_);  // [n, hd/2], fp32 like HF
    cos = freqs.cos().to(device(), dtype()).clone();
    sin = freqs.sin().to(device(), dtype()).clone();
  }
  return {cos, sin};
}

KvCache CausalLM::new_cache(int64_t batch, int64_t max_len) const {
  return KvCache(config_.n_layers, batch, config_.n_kv_heads, config_.head_dim, std::max<int64_t>(max_len, 1),
                 torch::TensorOptions().dtype(dtype()).device(device()));
}

torch::Tensor CausalLM::embed(const torch::Tensor& ids) const {
  SAFEDEC_CHECK(ids.scalar_type() == torch::kInt64 || ids.scalar_type() == torch::kInt32,
                "CausalLM::embed: token ids must be int64 or int32, got ", ids.scalar_type(), ".");
  if (ids.numel() > 0) {
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    SAFEDEC_CHECK(lo >= 0 && hi < config_.vocab_size, "CausalLM::embed: token id ", lo < 0 ? lo : hi,
                  " is outside the vocabulary [0, ", config_.vocab_size, ") of '", config_.name, "'.");
  }
  auto e = torch::embedding(weights_.embed, ids.to(device(), torch::kInt64));
  if (config_.embedding_scale) {
    // Gemma multiplies by sqrt(hidden) rounded to the weight dtype (HF Gemma3TextScaledWordEmbedding).
    const float scale = static_cast<float>(std::sqrt(static_cast<double>(config_.hidden_size)));
    e = e * torch::scalar_tensor(scale, torch::TensorOptions().dtype(dtype()).device(device()));
  }
  return e;
}

torch::Tensor CausalLM::forward(const ForwardInput& input, KvCache& cache, const ForwardHooks* hooks) const {
  return forward_full(input, cache, hooks).logits;
}

torch::Tensor CausalLM::input_hidden(const ForwardInput& input) const {
  const int64_t d = config_.hidden_size;
  if (input.input_embeds.defined()) {
    const auto& ie = input.input_embeds;
    SAFEDEC_CHECK(ie.dim() == 3 && ie.size(2) == d, "CausalLM::forward: input_embeds must be [B, T, ", d, "], got ",
                  ie.sizes(), ".");
    if (input.embeds_mask.defined()) {
      SAFEDEC_CHECK(input.ids.defined() && input.ids.sizes() == ie.sizes().slice(0, 2) &&
                        input.embeds_mask.sizes() == ie.sizes().slice(0, 2),
                    "CausalLM::forward: ids, embeds_mask and input_embeds must agree on [B, T] (got ",
                    input.ids.defined() ? input.ids.sizes() : torch::IntArrayRef{}, ", ",
                    input.embeds_mask.sizes(), ", ", ie.sizes(), ").");
      auto m = input.embeds_mask.to(device(), torch::kBool).unsqueeze(-1);
      return torch::where(m, ie.to(dtype()), embed(input.ids));
    }
    return ie.to(device(), dtype());
  }
  SAFEDEC_CHECK(input.ids.defined() && input.ids.dim() == 2, "CausalLM::forward: ids must be a [B, T] tensor",
                input.ids.defined() ? std::string(", got ") + c10::str(input.ids.sizes()) : std::string(), ".");
  return embed(input.ids);
}

namespace {
std::atomic<bool>& fused_decode_flag() {
  static std::atomic<bool> on{[] {
    const char* e = std::getenv("SAFEDEC_FUSED_DECODE");
    return !(e && std::strcmp(e, "0") == 0);
  }()};
  return on;
}
}  // namespace

void set_fused_decode(bool on) { fused_decode_flag().store(on); }
bool fused_decode_enabled() { return fused_decode_flag().load(); }

LayerPass CausalLM::begin_pass(const ForwardInput& input, int64_t B, int64_t T, KvCache* cache,
                               const ForwardHooks* hooks, ForwardOutput* capture_out) const {
  const auto& c = config_;
  SAFEDEC_CHECK(T > 0, "CausalLM::forward: no tokens to process (T = 0).");
  LayerPass pass;
  pass.batch = B;
  pass.tokens = T;
  pass.cache = cache;
  pass.hooks = hooks;
  pass.capture_out = capture_out;
  auto opt_i = torch::TensorOptions().dtype(torch::kInt64).device(device());
  torch::Tensor pad_dev, slots, positions;
  bool any_pad = false;
  int64_t past = 0;
  if (cache) {
    SAFEDEC_CHECK(cache->defined(), "CausalLM::forward: the KV cache is empty; create it with new_cache().");
    SAFEDEC_CHECK(cache->n_layers() == c.n_layers && cache->n_kv_heads() == c.n_kv_heads &&
                      cache->head_dim() == c.head_dim,
                  "CausalLM::forward: the KV cache was made for a different model (", cache->n_layers(), " layers, ",
                  cache->n_kv_heads(), " kv heads, head_dim ", cache->head_dim(), ").");
    SAFEDEC_CHECK(B == cache->batch(), "CausalLM::forward: input has ", B, " rows but the cache has ", cache->batch(),
                  ".");
    if (input.pad_left.defined()) {
      SAFEDEC_CHECK(input.pad_left.numel() == 0 || input.pad_left.max().item<int64_t>() <= T,
                    "CausalLM::forward: a row has more left padding than the ", T, " tokens given.");
      cache->set_padding(input.pad_left);
    }
    past = cache->length();
    if (past + T > cache->capacity()) cache->reserve(std::max(past + T, 2 * cache->capacity()));
    const auto& pad = cache->pad_offsets();  // [B] CPU int64
    any_pad = pad.numel() > 0 && pad.max().item<int64_t>() > 0;
    pad_dev = pad.to(device());
    slots = torch::arange(past, past + T, opt_i);                              // [T] slot of each new token
    positions = (slots.unsqueeze(0) - pad_dev.unsqueeze(1)).clamp_min(0);  // [B, T]; pad slots -> 0
  } else {
    SAFEDEC_CHECK(!input.pad_left.defined() || input.pad_left.numel() == 0 || input.pad_left.max().item<int64_t>() == 0,
                  "CausalLM::forward_hidden: left padding needs a KV cache; right-pad training batches instead.");
    pad_dev = torch::zeros({B}, opt_i);
    slots = torch::arange(T, opt_i);
    positions = slots.unsqueeze(0).expand({B, T});
  }
  pass.past = past;
  const int64_t Lk = past + T, hd = c.head_dim;
  bool has_sliding = false;
  for (int64_t l = 0; l < c.n_layers && !has_sliding; ++l) has_sliding = layer_is_sliding(l);
  const bool grad = torch::GradMode::is_enabled() && !c10::InferenceMode::is_enabled();
  if (cache && T == 1 && !grad && fused_decode_enabled() && device().is_cpu() && dtype() == torch::kFloat32 &&
      (!hooks || (hooks->loras.empty() && !hooks->capture && !hooks->mlp_transform))) {
    bool contiguous = true;
    for (int64_t l = 0; l < c.n_layers && contiguous; ++l)
      contiguous = cache->keys(l).is_contiguous() && cache->values(l).is_contiguous();
    pass.fused = contiguous;
  }
  if (pass.fused) {
    const auto& pad = cache->pad_offsets();
    pass.pad_cpu = pad.numel() == B ? pad.contiguous() : torch::zeros({B}, torch::kInt64);
  }
  auto make_mask = [&](int64_t window) -> torch::Tensor {
    // valid(b, t, j): pad[b] <= j <= slot_t (and slot_t - j < window); a pad query attends to itself
    // only, so its (unused) output stays finite.
    const bool need = !pass.fused && (any_pad || T > 1 || (window > 0 && Lk > window));
    if (!need) return {};
    auto j = torch::arange(Lk, opt_i).view({1, 1, Lk});
    auto q = slots.view({1, T, 1});
    auto valid = (j >= pad_dev.view({B, 1, 1})).logical_and(j <= q);
    if (window > 0) valid = valid.logical_and((q - j) < window);
    valid = valid.logical_or(j == q);
    auto mask = torch::zeros({B, T, Lk}, torch::TensorOptions().dtype(dtype()).device(device()));
    mask.masked_fill_(valid.logical_not(), -std::numeric_limits<float>::infinity());
    return mask.view({B, 1, 1, T, Lk});
  };
  pass.mask_global = make_mask(0);
  if (has_sliding) pass.mask_local = make_mask(c.sliding_window);
  auto rope_for = [&](bool local) {
    auto tables = rope_tables(local, Lk);
    auto flat = positions.reshape({-1});
    auto cos = tables.first.index_select(0, flat).view({B, T, 1, hd / 2}).contiguous();
    auto sin = tables.second.index_select(0, flat).view({B, T, 1, hd / 2}).contiguous();
    return std::make_pair(cos, sin);
  };
  pass.rope_global = rope_for(false);
  if (has_sliding) pass.rope_local = rope_for(true);
  return pass;
}

torch::Tensor CausalLM::run_layer_decode(int64_t l, const torch::Tensor& h_in, const LayerPass& pass) const {
  namespace ds = decode_step;
  const auto& c = config_;
  const int64_t H = c.n_heads, Hkv = c.n_kv_heads, hd = c.head_dim, g = H / Hkv, half = hd / 2;
  const int64_t B = pass.batch, past = pass.past, D = c.hidden_size, I = c.intermediate_size;
  const float scale =
      static_cast<float>(1.0 / std::sqrt(c.query_pre_attn_scalar > 0 ? c.query_pre_attn_scalar : static_cast<double>(hd)));
  const float softcap = static_cast<float>(c.attn_logit_softcapping);
  const bool gemma = c.architecture == "gemma3";
  const double eps = c.rms_norm_eps;
  const LayerWeights& W = *weights_.layers[l];
  const bool sliding = layer_is_sliding(l);
  const int64_t window = sliding ? c.sliding_window : 0;

  // ---- attention ----
  const torch::Tensor h = h_in.contiguous();  // [B, 1, d]
  torch::Tensor x = torch::empty_like(h);
  ds::rms_norm_rows(h.data_ptr<float>(), W.attn_norm.data_ptr<float>(), x.data_ptr<float>(), B, D, eps);
  torch::Tensor qkv = fast_linear(x, W.wqkv, W.bqkv, W.q_wqkv.get()).contiguous();  // [B, 1, (H + 2 Hkv) hd]
  const int64_t row = (H + 2 * Hkv) * hd;
  float* qkv_p = qkv.data_ptr<float>();
  const auto& rope = sliding ? pass.rope_local : pass.rope_global;  // [B, 1, 1, hd / 2]
  const float* cos_p = rope.first.data_ptr<float>();
  const float* sin_p = rope.second.data_ptr<float>();
  torch::Tensor& K = pass.cache->keys(l);  // [B, Hkv, capacity, hd]
  torch::Tensor& V = pass.cache->values(l);
  const int64_t cap = K.size(2);
  float* k_p = K.data_ptr<float>();
  float* v_p = V.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    float* qb = qkv_p + b * row;
    float* kb = qb + H * hd;
    const float* vb = kb + Hkv * hd;
    if (gemma) {
      ds::rms_norm_rows(qb, W.q_norm.data_ptr<float>(), qb, H, hd, eps);
      ds::rms_norm_rows(kb, W.k_norm.data_ptr<float>(), kb, Hkv, hd, eps);
    }
    ds::rope_heads(qb, cos_p + b * half, sin_p + b * half, H, hd);
    ds::rope_heads(kb, cos_p + b * half, sin_p + b * half, Hkv, hd);
    for (int64_t kv = 0; kv < Hkv; ++kv) {
      const int64_t slot = ((b * Hkv + kv) * cap + past) * hd;
      std::memcpy(k_p + slot, kb + kv * hd, sizeof(float) * hd);
      std::memcpy(v_p + slot, vb + kv * hd, sizeof(float) * hd);
    }
  }
  // One task per (row, kv head): slots pad .. past (a row's left padding excluded; Gemma's sliding
  // layers only the last `window`), the same set the generic path's mask leaves.
  torch::Tensor ctx = torch::empty({B, 1, H * hd}, h.options());
  float* ctx_p = ctx.data_ptr<float>();
  const int64_t* pad_p = pass.pad_cpu.data_ptr<int64_t>();
  auto task = [&](int64_t t) {
    thread_local std::vector<float> scratch;
    if (static_cast<int64_t>(scratch.size()) < past + 1) scratch.resize(static_cast<size_t>(past + 1));
    const int64_t b = t / Hkv, kv = t % Hkv;
    int64_t lo = std::max<int64_t>(pad_p[b], window > 0 ? past - window + 1 : 0);
    if (lo > past) lo = past;  // a row with no real token yet attends to its own slot only
    const int64_t base = (b * Hkv + kv) * cap * hd;
    ds::attend_one(qkv_p + b * row + kv * g * hd, k_p + base, v_p + base, g, hd, lo, past, scale, softcap,
                   scratch.data(), ctx_p + b * H * hd + kv * g * hd);
  };
  const int64_t work = B * H * (past + 1) * hd;
  parallel_chunks(B * Hkv, work >= (int64_t{1} << 17) ? pool_threads(torch::get_num_threads()) : 1, task);
  torch::Tensor attn = fast_linear(ctx, W.wo, {}, W.q_wo.get()).contiguous();  // [B, 1, d]
  float* attn_p = attn.data_ptr<float>();
  if (gemma) ds::rms_norm_rows(attn_p, W.post_attn_norm.data_ptr<float>(), attn_p, B, D, eps);
  ds::add_in_place(attn_p, h.data_ptr<float>(), B * D);  // attn now holds h + attn
  const torch::Tensor& h2 = attn;

  // ---- MLP ----
  ds::rms_norm_rows(h2.data_ptr<float>(), W.ffn_norm.data_ptr<float>(), x.data_ptr<float>(), B, D, eps);
  torch::Tensor gu = fast_linear(x, W.w_gate_up, {}, W.q_gate_up.get()).contiguous();  // [B, 1, 2 I]
  torch::Tensor inner = torch::empty({B, 1, I}, h.options());
  const float* gu_p = gu.data_ptr<float>();
  float* inner_p = inner.data_ptr<float>();
  const bool gelu = c.hidden_act != "silu";
  for (int64_t b = 0; b < B; ++b) ds::gated_activation(gu_p + b * 2 * I, gu_p + b * 2 * I + I, inner_p + b * I, I, gelu);
  torch::Tensor mlp = fast_linear(inner, W.w_down, {}, W.q_down.get()).contiguous();
  float* mlp_p = mlp.data_ptr<float>();
  if (gemma) ds::rms_norm_rows(mlp_p, W.post_ffn_norm.data_ptr<float>(), mlp_p, B, D, eps);
  ds::add_in_place(mlp_p, h2.data_ptr<float>(), B * D);
  return mlp;
}

torch::Tensor CausalLM::run_layer(int64_t l, const torch::Tensor& h_in, const LayerPass& pass) const {
  if (pass.fused) return run_layer_decode(l, h_in, pass);
  const auto& c = config_;
  const int64_t H = c.n_heads, Hkv = c.n_kv_heads, hd = c.head_dim, g = H / Hkv;
  const int64_t B = pass.batch, T = pass.tokens, past = pass.past, Lk = past + T;
  const double scale = 1.0 / std::sqrt(c.query_pre_attn_scalar > 0 ? c.query_pre_attn_scalar : static_cast<double>(hd));
  const bool gemma = c.architecture == "gemma3";
  const bool grad = torch::GradMode::is_enabled() && !c10::InferenceMode::is_enabled();
  static const std::vector<LoraBinding> kNoLoras;
  const ForwardHooks* hooks = pass.hooks;
  const auto& loras = hooks ? hooks->loras : kNoLoras;
  const bool training = hooks && hooks->training;
  const CaptureRequest* cap = hooks ? hooks->capture : nullptr;
  const LayerWeights& W = *weights_.layers[l];
  const bool sliding = layer_is_sliding(l);
  torch::Tensor h = h_in;
  // ---- attention ----
  auto x = rms_norm(h, W.attn_norm, c.rms_norm_eps);
  auto qkv = fast_linear(x, W.wqkv, W.bqkv, W.q_wqkv.get());  // [B, T, (H + 2 Hkv) hd]
  auto q = qkv.narrow(-1, 0, H * hd);
  auto k = qkv.narrow(-1, H * hd, Hkv * hd);
  auto v = qkv.narrow(-1, (H + Hkv) * hd, Hkv * hd);
  if (!loras.empty()) {
    q = apply_lora(loras, l, LinearKind::Q, x, q, training);
    k = apply_lora(loras, l, LinearKind::K, x, k, training);
    v = apply_lora(loras, l, LinearKind::V, x, v, training);
  }
  q = q.reshape({B, T, H, hd});
  k = k.reshape({B, T, Hkv, hd});
  v = v.reshape({B, T, Hkv, hd});
  if (gemma) {
    q = rms_norm(q, W.q_norm, c.rms_norm_eps);
    k = rms_norm(k, W.k_norm, c.rms_norm_eps);
  }
  const auto& rope = sliding ? pass.rope_local : pass.rope_global;
  q = apply_rope(q, rope.first, rope.second);
  k = apply_rope(k, rope.first, rope.second);
  auto k_new = k.transpose(1, 2);  // [B, Hkv, T, hd]
  auto v_new = v.transpose(1, 2);
  torch::Tensor k_all, v_all;
  KvCache* cache = pass.cache;
  if (!cache) {
    k_all = k_new;
    v_all = v_new;
  } else if (grad) {
    // Autograd path: attend over cat(past, new) so gradients reach the new keys/values; the
    // cache keeps detached copies.
    k_all = past > 0 ? torch::cat({cache->keys(l).narrow(2, 0, past), k_new}, 2) : k_new;
    v_all = past > 0 ? torch::cat({cache->values(l).narrow(2, 0, past), v_new}, 2) : v_new;
    torch::NoGradGuard ng;
    cache->keys(l).narrow(2, past, T).copy_(k_new.detach());
    cache->values(l).narrow(2, past, T).copy_(v_new.detach());
  } else {
    cache->keys(l).narrow(2, past, T).copy_(k_new);
    cache->values(l).narrow(2, past, T).copy_(v_new);
    k_all = cache->keys(l).narrow(2, 0, Lk);
    v_all = cache->values(l).narrow(2, 0, Lk);
  }
  // Grouped-query attention: query head h = kv * g + i uses kv head `kv` (HF repeat_kv order).
  auto qg = (q * scale).view({B, T, Hkv, g, hd}).permute({0, 2, 3, 1, 4}).reshape({B, Hkv, g * T, hd});
  auto scores = torch::matmul(qg, k_all.transpose(2, 3));  // [B, Hkv, g T, Lk]
  if (c.attn_logit_softcapping > 0) scores = torch::tanh(scores / c.attn_logit_softcapping) * c.attn_logit_softcapping;
  const auto& mask = sliding ? pass.mask_local : pass.mask_global;
  if (mask.defined()) scores = (scores.view({B, Hkv, g, T, Lk}) + mask).view({B, Hkv, g * T, Lk});
  auto probs = torch::softmax(scores, -1);
  auto ctx = torch::matmul(probs, v_all)  // [B, Hkv, g T, hd]
                 .view({B, Hkv, g, T, hd})
                 .permute({0, 3, 1, 2, 4})
                 .reshape({B, T, H * hd});
  auto attn = fast_linear(ctx, W.wo, {}, W.q_wo.get());
  if (!loras.empty()) attn = apply_lora(loras, l, LinearKind::O, ctx, attn, training);
  if (gemma) attn = rms_norm(attn, W.post_attn_norm, c.rms_norm_eps);
  h = h + attn;

  // ---- MLP ----
  x = rms_norm(h, W.ffn_norm, c.rms_norm_eps);
  auto gu = fast_linear(x, W.w_gate_up, {}, W.q_gate_up.get());  // [B, T, 2 I]
  const int64_t I = c.intermediate_size;
  auto gate = gu.narrow(-1, 0, I);
  auto up = gu.narrow(-1, I, I);
  if (!loras.empty()) {
    gate = apply_lora(loras, l, LinearKind::Gate, x, gate, training);
    up = apply_lora(loras, l, LinearKind::Up, x, up, training);
  }
  auto act = c.hidden_act == "silu" ? torch::silu(gate) : torch::gelu(gate, "tanh");
  auto inner = act * up;
  auto mlp = fast_linear(inner, W.w_down, {}, W.q_down.get());
  if (!loras.empty()) mlp = apply_lora(loras, l, LinearKind::Down, inner, mlp, training);
  if (gemma) mlp = rms_norm(mlp, W.post_ffn_norm, c.rms_norm_eps);
  if (hooks && hooks->mlp_transform) {
    auto steered = hooks->mlp_transform(l, mlp);
    SAFEDEC_CHECK(steered.defined() && steered.sizes() == mlp.sizes(), "ForwardHooks.mlp_transform for layer ", l,
                  " must return a tensor of shape ", mlp.sizes(), ".");
    mlp = steered;
  }
  h = h + mlp;
  if (cap && pass.capture_out &&
      (cap->layers.empty() || std::find(cap->layers.begin(), cap->layers.end(), l) != cap->layers.end())) {
    auto take_positions = [&](const torch::Tensor& t) {
      if (!cap->positions.defined()) return t;
      auto p = cap->positions.to(device(), torch::kInt64);
      if (p.dim() == 1) return t.index_select(1, p);
      SAFEDEC_CHECK(p.dim() == 2 && p.size(0) == B, "CaptureRequest.positions must be [P] or [", B, ", P].");
      return t.gather(1, p.unsqueeze(-1).expand({B, p.size(1), t.size(2)}));
    };
    if (cap->residual) pass.capture_out->residual[l] = take_positions(h);
    if (cap->mlp) pass.capture_out->mlp[l] = take_positions(mlp);
  }
  return h;
}

torch::Tensor CausalLM::final_hidden(const torch::Tensor& h) const {
  return rms_norm(h, weights_.final_norm, config_.rms_norm_eps);
}

torch::Tensor CausalLM::head_logits(const torch::Tensor& normed, const ForwardHooks* hooks) const {
  const auto& c = config_;
  auto logits = fast_linear(normed, weights_.lm_head, {}, weights_.q_lm_head.get());
  if (hooks && !hooks->loras.empty())
    logits = apply_lora(hooks->loras, -1, LinearKind::LmHead, normed, logits, hooks->training);
  if (c.final_logit_softcapping > 0)
    logits = torch::tanh(logits / c.final_logit_softcapping) * c.final_logit_softcapping;
  return logits.scalar_type() == torch::kFloat32 ? logits : logits.to(torch::kFloat32);
}

ForwardOutput CausalLM::forward_full(const ForwardInput& input, KvCache& cache, const ForwardHooks* hooks) const {
  SAFEDEC_CHECK(cache.defined(), "CausalLM::forward: the KV cache is empty; create it with new_cache().");
  torch::Tensor h = input_hidden(input);
  const int64_t B = h.size(0), T = h.size(1);
  ForwardOutput out;
  const LayerPass pass = begin_pass(input, B, T, &cache, hooks, &out);
  for (int64_t l = 0; l < config_.n_layers; ++l) h = run_layer(l, h, pass);
  cache.advance(T);

  // ---- head ----
  const int64_t n_logits = input.last_only ? 1 : std::min(input.logits_last > 0 ? input.logits_last : T, T);
  if (n_logits < T) h = h.narrow(1, T - n_logits, n_logits);
  h = final_hidden(h);
  out.logits = head_logits(h, hooks);
  out.hidden = h;
  return out;
}

torch::Tensor CausalLM::forward_hidden(const ForwardInput& input, const ForwardHooks* hooks) const {
  torch::Tensor h = input_hidden(input);
  const LayerPass pass = begin_pass(input, h.size(0), h.size(1), nullptr, hooks, nullptr);
  for (int64_t l = 0; l < config_.n_layers; ++l) h = run_layer(l, h, pass);
  return final_hidden(h);
}

void CausalLM::check_logits(const torch::Tensor& logits, int64_t step) {
  if (torch::isfinite(logits).all().item<bool>()) return;
  auto rows = logits.reshape({logits.size(0), -1});
  auto bad = torch::isfinite(rows).all(1).logical_not().nonzero();
  const int64_t row = bad.numel() > 0 ? bad[0][0].item<int64_t>() : -1;
  fail("The model produced NaN/Inf logits at decoding step ", step, " (first bad batch row ", row,
       "); the weights or inputs are corrupt, or fp16 overflowed.");
}

std::shared_ptr<CausalLM> CausalLM::truncated(int64_t k) const {
  SAFEDEC_CHECK(k >= 1 && k <= config_.n_layers, "CausalLM::truncated: k = ", k, " must be in [1, ", config_.n_layers,
                "].");
  ModelConfig c = config_;
  c.n_layers = k;
  c.name = config_.name + "-first" + std::to_string(k);
  ModelWeights w = weights_;
  w.layers.resize(k);
  return std::make_shared<CausalLM>(c, w);
}

std::shared_ptr<CausalLM> CausalLM::deep_copy() const {
  auto cp = [](const torch::Tensor& t) { return t.defined() ? t.detach().clone() : t; };
  ModelWeights w;
  w.embed = cp(weights_.embed);
  w.final_norm = cp(weights_.final_norm);
  const bool tied = weights_.lm_head.is_same(weights_.embed);
  w.lm_head = tied ? w.embed : cp(weights_.lm_head);
  w.rope_freqs = cp(weights_.rope_freqs);
  w.q_lm_head = weights_.q_lm_head;  // quantised blocks are immutable: shared
  for (const auto& L : weights_.layers) {
    auto n = std::make_shared<LayerWeights>();
    n->attn_norm = cp(L->attn_norm);
    n->wqkv = cp(L->wqkv);
    n->bqkv = cp(L->bqkv);
    n->wo = cp(L->wo);
    n->ffn_norm = cp(L->ffn_norm);
    n->w_gate_up = cp(L->w_gate_up);
    n->w_down = cp(L->w_down);
    n->q_norm = cp(L->q_norm);
    n->k_norm = cp(L->k_norm);
    n->post_attn_norm = cp(L->post_attn_norm);
    n->post_ffn_norm = cp(L->post_ffn_norm);
    n->q_wqkv = L->q_wqkv;
    n->q_wo = L->q_wo;
    n->q_gate_up = L->q_gate_up;
    n->q_down = L->q_down;
    w.layers.push_back(n);
  }
  return std::make_shared<CausalLM>(config_, w);
}

std::vector<std::pair<std::string, torch::Tensor>> CausalLM::named_parameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  auto add = [&](const std::string& n, const torch::Tensor& t) {
    if (t.defined()) out.emplace_back(n, t);
  };
  add("embed", weights_.embed);
  for (size_t l = 0; l < weights_.layers.size(); ++l) {
    const auto& L = *weights_.layers[l];
    const std::string p = "layers." + std::to_string(l) + ".";
    add(p + "attn_norm", L.attn_norm);
    add(p + "wqkv", L.wqkv);
    add(p + "bqkv", L.bqkv);
    add(p + "wo", L.wo);
    add(p + "ffn_norm", L.ffn_norm);
    add(p + "w_gate_up", L.w_gate_up);
    add(p + "w_down", L.w_down);
    add(p + "q_norm", L.q_norm);
    add(p + "k_norm", L.k_norm);
    add(p + "post_attn_norm", L.post_attn_norm);
    add(p + "post_ffn_norm", L.post_ffn_norm);
  }
  add("final_norm", weights_.final_norm);
  if (!weights_.lm_head.is_same(weights_.embed)) add("lm_head", weights_.lm_head);
  return out;
}

bool CausalLM::quantized() const {
  if (weights_.q_lm_head) return true;
  for (const auto& L : weights_.layers)
    if (L->q_wqkv || L->q_wo || L->q_gate_up || L->q_down) return true;
  return false;
}

int64_t CausalLM::weight_stream_bytes() const {
  int64_t n = 0;
  for (const auto& kv : named_parameters())
    if (kv.first != "embed" || weights_.lm_head.is_same(weights_.embed)) n += kv.second.nbytes();
  // A tied head that is held quantised reads the blocks, not the fp32 table (read only by lookup).
  if (weights_.q_lm_head && weights_.lm_head.is_same(weights_.embed)) n -= weights_.embed.nbytes();
  auto q = [&](const std::shared_ptr<const QuantWeight>& w) { n += w ? static_cast<int64_t>(w->nbytes()) : 0; };
  q(weights_.q_lm_head);
  for (const auto& L : weights_.layers) {
    q(L->q_wqkv);
    q(L->q_wo);
    q(L->q_gate_up);
    q(L->q_down);
  }
  return n;
}

int64_t CausalLM::parameter_bytes() const {
  int64_t n = 0;
  for (const auto& kv : named_parameters()) n += kv.second.nbytes();
  return n;
}

std::pair<torch::Tensor, torch::Tensor> left_pad(const std::vector<std::vector<int64_t>>& prompts, int64_t pad_id) {
  SAFEDEC_CHECK(!prompts.empty(), "left_pad: no prompts given.");
  size_t T = 0;
  for (const auto& p : prompts) {
    SAFEDEC_CHECK(!p.empty(), "left_pad: every prompt needs at least one token.");
    T = std::max(T, p.size());
  }
  const int64_t B = static_cast<int64_t>(prompts.size());
  auto ids = torch::full({B, static_cast<int64_t>(T)}, pad_id, torch::kInt64);
  auto pad = torch::zeros({B}, torch::kInt64);
  auto acc = ids.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[b];
    const int64_t off = static_cast<int64_t>(T - p.size());
    pad[b] = off;
    for (size_t t = 0; t < p.size(); ++t) acc[b][off + static_cast<int64_t>(t)] = p[t];
  }
  return {ids, pad};
}

std::vector<std::vector<int64_t>> greedy_generate(const CausalLM& lm, const std::vector<std::vector<int64_t>>& prompts,
                                                  int64_t max_new_tokens, int64_t eos_id, const ForwardHooks* hooks) {
  c10::InferenceMode guard;
  auto padded = left_pad(prompts, eos_id >= 0 ? eos_id : prompts[0][0]);
  const int64_t B = padded.first.size(0);
  KvCache cache = lm.new_cache(B, padded.first.size(1) + max_new_tokens);
  std::vector<std::vector<int64_t>> out(B);
  std::vector<bool> done(B, false);
  ForwardInput in;
  in.ids = padded.first;
  in.pad_left = padded.second;
  in.last_only = true;
  for (int64_t step = 0; step < max_new_tokens; ++step) {
    auto logits = lm.forward(in, cache, hooks);
    CausalLM::check_logits(logits, step);
    auto next = logits.select(1, 0).argmax(-1).to(torch::kCPU);  // [B]
    auto acc = next.accessor<int64_t, 1>();
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) acc[b] = eos_id;
      out[b].push_back(acc[b]);
      if (eos_id >= 0 && acc[b] == eos_id) done[b] = true;
    }
    if (std::all_of(done.begin(), done.end(), [](bool x) { return x; })) break;
    in = ForwardInput();
    in.ids = next.view({B, 1});
    in.last_only = true;
  }
  return out;
}

}  // namespace safedec
