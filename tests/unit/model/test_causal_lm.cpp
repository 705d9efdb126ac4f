// CausalLM on small random-weight models: KV cache (incremental, batched left-padded, truncate,
// stack, select rows), hooks (soft prompts, capture, steering, LoRA), autograd, truncated models.
#include <gtest/gtest.h>
#include <cmath>
#include <torch/torch.h>

#include "core/error.h"
#include "model/causal_lm.h"
#include "model/fast_linear.h"
#include "model/fast_linear_isa.h"
#include "support/tiny_configs.h"

using namespace safedec;

namespace {

// These tests share a small machine with parallel builds: one intra-op thread avoids OpenMP
// spin-waiting under CPU contention (5x slower otherwise). Speed is measured by the benchmark.
const bool kSingleThread = [] {
  torch::set_num_threads(1);
  return true;
}();

ModelConfig tiny_config(const std::string& arch = "llama") { return test::tiny_arch_config(arch); }

std::vector<int64_t> seq(int64_t n, int64_t seed) {
  std::vector<int64_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back((seed * 31 + i * 7 + 3) % 97);
  return v;
}

torch::Tensor ids_of(const std::vector<int64_t>& v) {
  return torch::tensor(v, torch::kInt64).view({1, static_cast<int64_t>(v.size())});
}

// Full-sequence logits [T, V] of one prompt in one forward.
torch::Tensor full_logits(const CausalLM& lm, const std::vector<int64_t>& ids, const ForwardHooks* hooks = nullptr) {
  auto cache = lm.new_cache(1, static_cast<int64_t>(ids.size()));
  ForwardInput in;
  in.ids = ids_of(ids);
  return lm.forward(in, cache, hooks)[0];
}

double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).norm() / b.norm()).item<double>();
}

class CausalLMArch : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(CausalLMArch, IncrementalDecodingMatchesFullForward) {
  torch::NoGradGuard ng;
  auto lm = CausalLM::random(tiny_config(GetParam()), 1);
  auto ids = seq(12, 5);
  auto full = full_logits(*lm, ids);
  auto cache = lm->new_cache(1, 4);  // forces the cache to grow
  ForwardInput in;
  in.ids = ids_of(std::vector<int64_t>(ids.begin(), ids.begin() + 5));
  auto first = lm->forward(in, cache)[0];
  EXPECT_LT(rel_err(first, full.narrow(0, 0, 5)), 1e-5);
  for (int64_t t = 5; t < 12; ++t) {
    ForwardInput step;
    step.ids = torch::tensor({ids[t]}, torch::kInt64).view({1, 1});
    auto lg = lm->forward(step, cache)[0][0];
    EXPECT_LT(rel_err(lg, full[t]), 1e-5) << "position " << t;
  }
  EXPECT_EQ(cache.length(), 12);
}

TEST_P(CausalLMArch, BatchedLeftPaddedMatchesSingleSequences) {
  torch::NoGradGuard ng;
  auto lm = CausalLM::random(tiny_config(GetParam()), 2);
  std::vector<std::vector<int64_t>> prompts = {seq(7, 1), seq(3, 2), seq(10, 3), seq(1, 4)};
  auto padded = left_pad(prompts, 0);
  auto cache = lm->new_cache(4, 16);
  ForwardInput in;
  in.ids = padded.first;
  in.pad_left = padded.second;
  auto logits = lm->forward(in, cache);  // [4, 10, V]
  for (size_t b = 0; b < prompts.size(); ++b) {
    auto single = full_logits(*lm, prompts[b]);
    const int64_t n = static_cast<int64_t>(prompts[b].size());
    auto batched = logits[b].narrow(0, 10 - n, n);
    EXPECT_LT(rel_err(batched, single), 1e-5) << "row " << b;
  }
  // Greedy continuation: batched == one by one, token for token.
  auto batched = greedy_generate(*lm, prompts, 8);
  for (size_t b = 0; b < prompts.size(); ++b) {
    auto single = greedy_generate(*lm, {prompts[b]}, 8);
    EXPECT_EQ(batched[b], single[0]) << "row " << b;
  }
}

TEST_P(CausalLMArch, TruncateThenRefeedReproducesLogits) {
  torch::NoGradGuard ng;
  auto lm = CausalLM::random(tiny_config(GetParam()), 3);
  std::vector<std::vector<int64_t>> prompts = {seq(6, 1), seq(4, 2)};
  auto padded = left_pad(prompts, 0);
  auto cache = lm->new_cache(2, 32);
  ForwardInput in;
  in.ids = padded.first;
  in.pad_left = padded.second;
  lm->forward(in, cache);
  ForwardInput draft;
  draft.ids = torch::tensor({{5, 6, 7}, {8, 9, 10}}, torch::kInt64);
  auto a = lm->forward(draft, cache);
  // Reject the draft, feed other tokens, then roll back again and re-feed the original draft.
  cache.truncate(6);
  ForwardInput other;
  other.ids = torch::tensor({{11, 12}, {13, 14}}, torch::kInt64);
  lm->forward(other, cache);
  cache.truncate(6);
  auto b = lm->forward(draft, cache);
  EXPECT_LT(rel_err(b, a), 1e-6);
  EXPECT_EQ(cache.length(), 9);
  EXPECT_EQ(cache.row_lengths()[1].item<int64_t>(), 7);
}

TEST_P(CausalLMArch, StackingInAGivenOrderEqualsStackingThenSelectingRows) {
  torch::NoGradGuard ng;
  auto lm = CausalLM::random(tiny_config(GetParam()), 4);
  auto ca = lm->new_cache(2, 16), cb = lm->new_cache(1, 16);
  ForwardInput ia, ib;
  ia.ids = torch::tensor({{1, 2, 3, 4}, {5, 6, 7, 8}}, torch::kInt64);
  ia.pad_left = torch::tensor({2, 0}, torch::kInt64);
  ib.ids = torch::tensor({{9, 10}}, torch::kInt64);
  lm->forward(ia, ca);
  lm->forward(ib, cb);
  const std::vector<int64_t> order{2, 0, 1};
  auto direct = KvCache::stack({&ca, &cb}, order);
  auto via_select = KvCache::stack({&ca, &cb}).select_rows(torch::tensor(order, torch::kInt64));
  ASSERT_EQ(direct.length(), via_select.length());
  EXPECT_TRUE(torch::equal(direct.pad_offsets(), via_select.pad_offsets()));
  EXPECT_EQ(direct.pad_offsets()[0].item<int64_t>(), 2);  // cb's 2 slots right-aligned to 4
  for (int64_t l = 0; l < direct.n_layers(); ++l) {
    EXPECT_TRUE(torch::equal(direct.keys(l).narrow(2, 0, 4), via_select.keys(l).narrow(2, 0, 4))) << l;
    EXPECT_TRUE(torch::equal(direct.values(l).narrow(2, 0, 4), via_select.values(l).narrow(2, 0, 4))) << l;
  }
  EXPECT_THROW(KvCache::stack({&ca, &cb}, {0, 0, 1}), Error);
  EXPECT_THROW(KvCache::stack({&ca, &cb}, {0, 1}), Error);
}

TEST_P(CausalLMArch, StackedBranchesMatchSeparateCaches) {
  torch::NoGradGuard ng;
  auto lm = CausalLM::random(tiny_config(GetParam()), 4);
  // Two "system prompts" of different lengths for one conversation, then the same user tokens.
  auto sys_a = seq(9, 1), sys_b = seq(4, 2);
  auto ca = lm->new_cache(1, 32), cb = lm->new_cache(1, 32);
  ForwardInput ia, ib;
  ia.ids = ids_of(sys_a);
  ib.ids = ids_of(sys_b);
  lm->forward(ia, ca);
  lm->forward(ib, cb);
  auto stacked = KvCache::stack({&ca, &cb});
  EXPECT_EQ(stacked.batch(), 2);
  EXPECT_EQ(stacked.length(), 9);
  EXPECT_EQ(stacked.pad_offsets()[1].item<int64_t>(), 5);
  ForwardInput user;
  user.ids = torch::tensor({{20, 21, 22}, {20, 21, 22}}, torch::kInt64);
  auto joint = lm->forward(user, stacked);
  ForwardInput u1;
  u1.ids = torch::tensor({{20, 21, 22}}, torch::kInt64);
  auto la = lm->forward(u1, ca);
  auto lb = lm->forward(u1, cb);
  EXPECT_LT(rel_err(joint[0], la[0]), 1e-5);
  EXPECT_LT(rel_err(joint[1], lb[0]), 1e-5);
  // Split back out and drop a row: continuing row 1 alone matches cb.
  auto only_b = stacked.select_rows(torch::tensor({1}, torch::kInt64));
  ForwardInput next;
  next.ids = torch::tensor({{30}}, torch::kInt64);
  auto x = lm->forward(next, only_b);
  auto y = lm->forward(next, cb);
  EXPECT_LT(rel_err(x, y), 1e-5);
  only_b.compact();
  EXPECT_EQ(only_b.pad_offsets()[0].item<int64_t>(), 0);
  EXPECT_EQ(only_b.length(), 8);
  auto x2 = lm->forward(next, only_b);
  auto y2 = lm->forward(next, cb);
  EXPECT_LT(rel_err(x2, y2), 1e-5);
}

TEST_P(CausalLMArch, SoftPromptEqualToTextEmbeddingsReproducesLogits) {
  torch::NoGradGuard ng;
  auto lm = CausalLM::random(tiny_config(GetParam()), 5);
  auto ids = seq(10, 9);
  auto ref = full_logits(*lm, ids);
  auto t = ids_of(ids);
  // Positions 2..5 (a "system slot") come from caller embeddings equal to the text's own.
  auto mask = torch::zeros({1, 10}, torch::kBool);
  mask.narrow(1, 2, 4).fill_(true);
  auto emb = torch::zeros({1, 10, 64});
  emb.narrow(1, 2, 4).copy_(lm->embed(t).narrow(1, 2, 4));
  auto cache = lm->new_cache(1, 10);
  ForwardInput in;
  in.ids = t;
  in.input_embeds = emb;
  in.embeds_mask = mask;
  EXPECT_TRUE(torch::equal(lm->forward(in, cache)[0], ref));
  // Different embeddings change the logits.
  auto cache2 = lm->new_cache(1, 10);
  in.input_embeds = emb + 0.5 * mask.unsqueeze(-1).to(torch::kFloat32);
  EXPECT_GT(rel_err(lm->forward(in, cache2)[0], ref), 1e-3);
}

TEST_P(CausalLMArch, GradientFlowsToSoftPromptEmbeddings) {
  auto lm = CausalLM::random(tiny_config(GetParam()), 6);
  auto ids = ids_of(seq(8, 2));
  torch::Tensor base;
  {
    torch::NoGradGuard ng;
    base = lm->embed(ids).narrow(1, 0, 3).clone();
  }
  auto soft = base.clone().requires_grad_(true);  // [1, 3, d] soft prompt at positions 0..2
  auto loss_of = [&](const torch::Tensor& s) {
    auto mask = torch::zeros({1, 8}, torch::kBool);
    mask.narrow(1, 0, 3).fill_(true);
    auto emb = torch::cat({s, torch::zeros({1, 5, 64})}, 1);
    auto cache = lm->new_cache(1, 8);
    ForwardInput in;
    in.ids = ids;
    in.input_embeds = emb;
    in.embeds_mask = mask;
    auto logits = lm->forward(in, cache);  // [1, 8, V]
    auto target = torch::tensor({1, 2, 3, 4, 5, 6, 7, 8}, torch::kInt64);
    return torch::nn::functional::cross_entropy(logits[0], target);
  };
  auto loss = loss_of(soft);
  loss.backward();
  ASSERT_TRUE(soft.grad().defined());
  EXPECT_GT(soft.grad().norm().item<double>(), 0.0);
  // The weights were not asked for gradients and get none.
  EXPECT_FALSE(lm->weights().embed.grad().defined());
  // Finite-difference check along the gradient direction.
  torch::NoGradGuard ng;
  auto dir = soft.grad() / soft.grad().norm();
  const double h = 1e-2;
  const double fd = (loss_of(base + h * dir).item<double>() - loss_of(base - h * dir).item<double>()) / (2 * h);
  const double an = (soft.grad() * dir).sum().item<double>();
  EXPECT_NEAR(fd, an, 0.05 * std::abs(an) + 1e-4);
}

TEST_P(CausalLMArch, IdentitySteeringChangesNothingAndCaptureIsConsistent) {
  torch::NoGradGuard ng;
  auto lm = CausalLM::random(tiny_config(GetParam()), 7);
  auto ids = seq(9, 4);
  auto ref = full_logits(*lm, ids);
  ForwardHooks hooks;
  int calls = 0;
  hooks.mlp_transform = [&](int64_t, const torch::Tensor& m) {
    ++calls;
    return m;
  };
  CaptureRequest capture;
  capture.mlp = true;
  hooks.capture = &capture;
  auto cache = lm->new_cache(1, 9);
  ForwardInput in;
  in.ids = ids_of(ids);
  auto out = lm->forward_full(in, cache, &hooks);
  EXPECT_TRUE(torch::equal(out.logits[0], ref));
  EXPECT_EQ(calls, 3);
  ASSERT_EQ(out.residual.size(), 3u);
  ASSERT_EQ(out.mlp.size(), 3u);
  EXPECT_EQ(out.residual[2].sizes(), torch::IntArrayRef({1, 9, 64}));
  // The LM head sees RMSNorm(last residual): logits = lm_head(hidden).
  auto relogits = at::linear(out.hidden, lm->weights().lm_head);
  EXPECT_LT(rel_err(relogits, out.logits), 1e-6);
  // Steering layer 1 by adding v to its MLP output shifts its residual output by exactly v.
  auto v = torch::randn({64});
  ForwardHooks steer;
  steer.mlp_transform = [&](int64_t layer, const torch::Tensor& m) { return layer == 1 ? m + v : m; };
  CaptureRequest cap1;
  cap1.layers = {1};
  cap1.mlp = true;
  cap1.positions = torch::tensor({8}, torch::kInt64);
  steer.capture = &cap1;
  auto cache2 = lm->new_cache(1, 9);
  auto out2 = lm->forward_full(in, cache2, &steer);
  ASSERT_EQ(out2.mlp.count(1), 1u);
  EXPECT_EQ(out2.mlp[1].sizes(), torch::IntArrayRef({1, 1, 64}));
  EXPECT_LT(rel_err(out2.mlp[1][0][0], out.mlp[1][0][8] + v), 1e-5);
  EXPECT_GT(rel_err(out2.logits[0], ref), 1e-4);
}

TEST_P(CausalLMArch, LoraZeroIsNoOpAndRowSelectorAndMergeAgree) {
  torch::NoGradGuard ng;
  const auto cfg = tiny_config(GetParam());
  auto lm = CausalLM::random(cfg, 8);
  LoraAdapter::Options opt;
  opt.rank = 4;
  opt.alpha = 8;
  opt.targets = {"q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"};
  auto adapter = std::make_shared<LoraAdapter>(cfg, opt);
  std::vector<std::vector<int64_t>> prompts = {seq(6, 1), seq(6, 1)};
  auto padded = left_pad(prompts, 0);
  auto run = [&](const ForwardHooks* hooks, const CausalLM& model) {
    auto cache = model.new_cache(2, 6);
    ForwardInput in;
    in.ids = padded.first;
    return model.forward(in, cache, hooks);
  };
  auto ref = run(nullptr, *lm);
  ForwardHooks hooks;
  hooks.loras.push_back({adapter, torch::Tensor()});
  EXPECT_TRUE(torch::equal(run(&hooks, *lm), ref));  // B = 0: nothing changes
  // Non-zero B on q_proj of layer 1 and down_proj of layer 0.
  auto* fq = const_cast<LoraAdapter&>(*adapter).find(1, LinearKind::Q);
  auto* fd = const_cast<LoraAdapter&>(*adapter).find(0, LinearKind::Down);
  ASSERT_TRUE(fq && fd);
  fq->b.normal_(0, 0.1);
  fd->b.normal_(0, 0.1);
  // Row 0 = base, row 1 = expert.
  hooks.loras[0].rows = torch::tensor({0.0f, 1.0f});
  auto mixed = run(&hooks, *lm);
  EXPECT_TRUE(torch::equal(mixed[0], ref[0]));
  EXPECT_GT(rel_err(mixed[1], ref[1]), 1e-4);
  // Merging W += scale * B A into a copy of the model gives the adapter's output.
  auto merged = lm->deep_copy();
  auto& w = merged->mutable_weights();
  w.layers[1]->wqkv.narrow(0, 0, cfg.n_heads * cfg.head_dim).add_(torch::mm(fq->b, fq->a) * fq->scale);
  w.layers[0]->w_down.add_(torch::mm(fd->b, fd->a) * fd->scale);
  auto via_merge = run(nullptr, *merged);
  EXPECT_LT(rel_err(mixed[1], via_merge[1]), 1e-5);
  // deep_copy really copied: the original is unchanged.
  EXPECT_TRUE(torch::equal(run(nullptr, *lm), ref));
}

TEST_P(CausalLMArch, TruncatedModelSharesWeights) {
  torch::NoGradGuard ng;
  auto lm = CausalLM::random(tiny_config(GetParam()), 9);
  auto t = lm->truncated(2);
  EXPECT_EQ(t->config().n_layers, 2);
  EXPECT_EQ(t->weights().layers[1]->wqkv.data_ptr(), lm->weights().layers[1]->wqkv.data_ptr());
  EXPECT_EQ(t->weights().lm_head.data_ptr(), lm->weights().lm_head.data_ptr());
  // Its logits equal final_norm + head applied to the full model's layer-1 residual.
  auto ids = seq(5, 1);
  ForwardHooks hooks;
  CaptureRequest cap;
  cap.layers = {1};
  hooks.capture = &cap;
  auto cache = lm->new_cache(1, 5);
  ForwardInput in;
  in.ids = ids_of(ids);
  auto out = lm->forward_full(in, cache, &hooks);
  const auto& c = lm->config();
  auto r = out.residual[1];
  auto normed = lm->weights().final_norm * (r * torch::rsqrt(r.pow(2).mean(-1, true) + c.rms_norm_eps));
  auto expect = at::linear(normed, lm->weights().lm_head);
  auto got = full_logits(*t, ids);
  EXPECT_LT(rel_err(got, expect[0]), 1e-5);
  EXPECT_THROW(lm->truncated(4), Error);
}

INSTANTIATE_TEST_SUITE_P(Archs, CausalLMArch, ::testing::Values("llama", "qwen2", "gemma3"));

TEST(CausalLM, CheckLogitsNamesTheStep) {
  auto ok = torch::zeros({2, 1, 5});
  EXPECT_NO_THROW(CausalLM::check_logits(ok, 0));
  auto bad = ok.clone();
  bad[1][0][3] = std::numeric_limits<float>::quiet_NaN();
  try {
    CausalLM::check_logits(bad, 17);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("step 17"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("row 1"), std::string::npos) << e.what();
  }
}

TEST(CausalLM, RejectsBadInputs) {
  torch::NoGradGuard ng;
  auto lm = CausalLM::random(tiny_config(), 1);
  auto cache = lm->new_cache(1, 8);
  ForwardInput in;
  in.ids = torch::tensor({{1, 200}}, torch::kInt64);
  EXPECT_THROW(lm->forward(in, cache), Error);  // id outside the vocabulary
  in.ids = torch::tensor({{1, 2}, {3, 4}}, torch::kInt64);
  EXPECT_THROW(lm->forward(in, cache), Error);  // 2 rows, cache has 1
  auto c2 = lm->new_cache(1, 8);
  in.ids = torch::tensor({{1, 2}}, torch::kInt64);
  lm->forward(in, c2);
  in.pad_left = torch::tensor({1}, torch::kInt64);
  EXPECT_THROW(lm->forward(in, c2), Error);  // padding into a non-empty cache
  auto other = CausalLM::random(tiny_config("gemma3"), 1);
  ModelWeights w = lm->weights();
  w.layers[0] = std::make_shared<LayerWeights>(*w.layers[0]);
  w.layers[0]->wo = torch::zeros({3, 3});
  EXPECT_THROW(CausalLM(lm->config(), w), Error);
}

TEST(CausalLM, Llama3RopeScalingIsAccepted) {
  torch::NoGradGuard ng;
  auto cfg = tiny_config();
  cfg.rope_scaling.type = "llama3";
  cfg.rope_scaling.factor = 8;
  cfg.rope_scaling.original_max_position = 64;
  auto lm = CausalLM::random(cfg, 1);
  auto plain = CausalLM(tiny_config(), lm->weights());
  auto ids = seq(12, 3);
  auto a = full_logits(*lm, ids), b = full_logits(plain, ids);
  EXPECT_TRUE(torch::isfinite(a).all().item<bool>());
  EXPECT_GT(rel_err(a, b), 1e-6);  // low frequencies are rescaled
  cfg.rope_scaling.type = "yarn";
  EXPECT_THROW(CausalLM::random(cfg, 1), Error);
}

// The documented arithmetic of the kernel, emulated lane by lane: four 8-lane FMA chains (chain j
// covers k = 32 i + 8 j + lane, the 8-wide tail continues chain 0), horizontal sum
// ((a0 + a1) + (a2 + a3)) as lo/hi halves then pairs, a scalar FMA tail and the bias.
float fast_linear_reference_dot(const float* w, const float* x, int64_t K, float bias) {
  float acc[4][8] = {};
  const int64_t K32 = K / 32 * 32, K8 = K / 8 * 8;
  for (int64_t k = 0; k < K32; k += 32)
    for (int j = 0; j < 4; ++j)
      for (int l = 0; l < 8; ++l) acc[j][l] = std::fma(w[k + 8 * j + l], x[k + 8 * j + l], acc[j][l]);
  for (int64_t k = K32; k < K8; k += 8)
    for (int l = 0; l < 8; ++l) acc[0][l] = std::fma(w[k + l], x[k + l], acc[0][l]);
  float v[8];
  for (int l = 0; l < 8; ++l) v[l] = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
  float h[4];
  for (int l = 0; l < 4; ++l) h[l] = v[l] + v[l + 4];
  float s = (h[0] + h[2]) + (h[1] + h[3]);
  for (int64_t t = K8; t < K; ++t) s = std::fma(w[t], x[t], s);
  return s + bias;
}

// The SIMD levels this CPU can run (avx2 and, where present, avx512); each is checked below against
// the scalar emulation, and the plain level (at::linear) against fp64.
std::vector<FastLinearIsa> simd_levels_here() {
  std::vector<FastLinearIsa> levels;
  for (auto l : {FastLinearIsa::kAvx2, FastLinearIsa::kAvx512})
    if (static_cast<int>(l) <= static_cast<int>(fast_linear_cpu_isa())) levels.push_back(l);
  return levels;
}

// Restores the process-wide level when a test ends.
struct IsaGuard {
  ~IsaGuard() { set_fast_linear_isa(FastLinearIsa::kAvx512); }
};

TEST(FastLinear, FollowsTheDocumentedReductionOrderBitForBit) {
  torch::NoGradGuard ng;
  IsaGuard guard;
  const auto levels = simd_levels_here();
  ASSERT_FALSE(levels.empty()) << "the test machine should have AVX2/FMA (fast_linear has no SIMD level here)";
  for (auto level : levels) {
    set_fast_linear_isa(level);
    ASSERT_EQ(fast_linear_isa(), level);
    std::cout << "[ fast_linear ] checking the " << fast_linear_isa_name(level) << " kernels\n";
    torch::manual_seed(5);
    // K: tails of every kind (< 8, 8-wide tail, scalar tail, both) and the model sizes 576/1536;
    // N: not a multiple of the 4-row (avx512) or 2-row (avx2) tiles; M: every row count 1-16 and, with
    // avx512 (which also takes prefills of up to 64 rows), partial and full 8-row blocks up to 64.
    std::vector<int64_t> rows;
    for (int64_t M = 1; M <= 16; ++M) rows.push_back(M);
    if (level == FastLinearIsa::kAvx512) rows.insert(rows.end(), {21, 40, 64});
    for (int64_t K : {7, 8, 40, 71, 576, 1544}) {
      for (int64_t N : {1, 7, 13, 130}) {
        auto w = torch::randn({N, K});
        auto b = torch::randn({N});
        for (int64_t M : rows) {
          auto x = torch::randn({M, K});
          auto got = fast_linear(x, w, b).contiguous();
          for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < N; ++n) {
              const float want = fast_linear_reference_dot(w[n].data_ptr<float>(), x[m].data_ptr<float>(), K,
                                                           b[n].item<float>());
              ASSERT_EQ(got[m][n].item<float>(), want) << fast_linear_isa_name(level) << " K=" << K << " N=" << N
                                                       << " M=" << M << " m=" << m << " n=" << n;
            }
        }
      }
    }
  }
}

TEST(FastLinear, EveryLevelGivesTheSameBitsOnUnalignedViewsAndThePlainLevelIsAtLinear) {
  torch::NoGradGuard ng;
  IsaGuard guard;
  torch::manual_seed(9);
  // Rows that start off a 64-byte boundary (a view at an odd offset): the kernels use unaligned loads.
  auto wbuf = torch::randn({300 * 77 + 3});
  auto w = wbuf.narrow(0, 3, 300 * 77).view({300, 77});
  auto xbuf = torch::randn({12 * 77 + 1});
  auto x = xbuf.narrow(0, 1, 12 * 77).view({12, 77});
  auto b = torch::randn({300});
  set_fast_linear_isa(FastLinearIsa::kNone);
  EXPECT_FALSE(fast_linear_available());
  auto plain = fast_linear(x, w, b);
  EXPECT_TRUE(torch::equal(plain, at::linear(x, w, b))) << "the plain level must be at::linear";
  torch::Tensor first;
  for (auto level : simd_levels_here()) {
    set_fast_linear_isa(level);
    auto got = fast_linear(x, w, b);
    EXPECT_LT(((got - plain).abs().max()).item<double>(), 1e-4) << fast_linear_isa_name(level);
    if (!first.defined())
      first = got;
    else
      EXPECT_TRUE(torch::equal(first, got)) << fast_linear_isa_name(level) << " differs from avx2";
  }
}

TEST(FastLinear, MatchesAtLinearOnAwkwardSizesAndIsBatchInvariant) {
  torch::NoGradGuard ng;
  torch::manual_seed(3);
  EXPECT_TRUE(fast_linear_available()) << "the test machine should have AVX2/FMA";
  for (int64_t K : {1, 7, 19, 32, 111, 576}) {
    for (int64_t N : {1, 19, 111, 300}) {
      auto w = torch::randn({N, K});
      auto b = torch::randn({N});
      for (int64_t M : {1, 2, 3, 4, 5, 8, 13, 16}) {
        auto x = torch::randn({M, K});
        auto ref = at::linear(x.to(torch::kFloat64), w.to(torch::kFloat64), b.to(torch::kFloat64)).to(torch::kFloat32);
        auto got = fast_linear(x, w, b);
        ASSERT_EQ(got.sizes(), ref.sizes());
        const auto diff = (got - ref).abs();
        const auto tol = 1e-5 * (1.0 + ref.abs());
        if (!(diff <= tol).all().item<bool>()) {
          const int64_t i = (diff > tol).reshape(-1).nonzero()[0][0].item<int64_t>();
          FAIL() << "K=" << K << " N=" << N << " M=" << M << " first mismatch at flat index " << i << ": "
                 << got.reshape(-1)[i].item<float>() << " vs " << ref.reshape(-1)[i].item<float>();
        }
        // Every row computed alone equals that row computed with the others, bit for bit (the one-pass
        // path for <= 4 rows and the tiled path for more use the same arithmetic).
        for (int64_t m = 0; m < M; ++m)
          EXPECT_TRUE(torch::equal(fast_linear(x.narrow(0, m, 1), w, b)[0], got[m])) << "K=" << K << " M=" << M
                                                                                    << " row " << m;
      }
    }
  }
  // 3-D input, no bias, and a non-contiguous input.
  auto w = torch::randn({40, 64});
  auto x = torch::randn({2, 5, 64}).narrow(1, 4, 1);
  EXPECT_LT(((fast_linear(x, w) - at::linear(x, w)).norm() / at::linear(x, w).norm()).item<double>(), 1e-6);
  // With autograd it falls back to at::linear and gradients flow.
  torch::GradMode::set_enabled(true);
  auto xg = torch::randn({1, 64}).requires_grad_(true);
  fast_linear(xg, w).sum().backward();
  EXPECT_TRUE(xg.grad().defined());
}
