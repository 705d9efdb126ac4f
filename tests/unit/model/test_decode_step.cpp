// The fused decode step (model/decode_step.h): each raw-buffer function against its ATen
// formulation on awkward sizes, when CausalLM takes the fused path, and whole greedy decodes of
// left-padded batches (Llama, Qwen2 biases, Gemma 3 sliding windows and soft-capping) against the
// generic layer, step by step.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "model/causal_lm.h"
#include "model/decode_step.h"
#include "support/tiny_configs.h"

using namespace safedec;
namespace ds = safedec::decode_step;

namespace {

const bool kSingleThread = [] {
  torch::set_num_threads(1);
  return true;
}();

float max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<float>(); }

TEST(DecodeStep, RmsNormMatchesTheAtenFormulation) {
  torch::manual_seed(1);
  for (int64_t d : {1, 7, 64, 577}) {
    auto x = torch::randn({3, d}) * 3;
    auto w = torch::randn({d});
    auto want = w * (x * torch::rsqrt(x.pow(2).mean(-1, true) + 1e-6));
    auto got = torch::empty_like(x);
    ds::rms_norm_rows(x.data_ptr<float>(), w.data_ptr<float>(), got.data_ptr<float>(), 3, d, 1e-6);
    EXPECT_LT(max_diff(got, want), 2e-5) << "d " << d;
    ds::rms_norm_rows(x.data_ptr<float>(), w.data_ptr<float>(), x.data_ptr<float>(), 3, d, 1e-6);  // in place
    EXPECT_LT(max_diff(x, want), 2e-5) << "in place, d " << d;
  }
}

TEST(DecodeStep, RopeIsRotateHalf) {
  torch::manual_seed(2);
  for (int64_t hd : {2, 6, 64}) {
    const int64_t heads = 3, half = hd / 2;
    auto x = torch::randn({heads, hd});
    auto angle = torch::randn({half});
    auto c = angle.cos(), s = angle.sin();
    auto x1 = x.narrow(1, 0, half), x2 = x.narrow(1, half, half);
    auto want = torch::cat({x1 * c - x2 * s, x2 * c + x1 * s}, 1);
    auto got = x.clone();
    ds::rope_heads(got.data_ptr<float>(), c.data_ptr<float>(), s.data_ptr<float>(), heads, hd);
    EXPECT_LT(max_diff(got, want), 1e-6) << "hd " << hd;
  }
}

TEST(DecodeStep, AttentionOverASlotRangeMatchesSoftmaxAttention) {
  torch::manual_seed(3);
  for (int64_t hd : {5, 16, 24, 64}) {
    for (float softcap : {0.0f, 2.0f}) {
      const int64_t g = 3, slots = 37, lo = 9, last = 30;
      auto q = torch::randn({g, hd}), k = torch::randn({slots, hd}), v = torch::randn({slots, hd});
      const float scale = 0.7f;
      auto kk = k.narrow(0, lo, last - lo + 1), vv = v.narrow(0, lo, last - lo + 1);
      auto scores = torch::matmul(q * scale, kk.t());
      if (softcap > 0) scores = torch::tanh(scores / softcap) * softcap;
      auto want = torch::matmul(torch::softmax(scores, -1), vv);
      std::vector<float> scratch(slots);
      auto got = torch::empty({g, hd});
      ds::attend_one(q.data_ptr<float>(), k.data_ptr<float>(), v.data_ptr<float>(), g, hd, lo, last, scale, softcap,
                     scratch.data(), got.data_ptr<float>());
      EXPECT_LT(max_diff(got, want), 2e-5) << "hd " << hd << ", softcap " << softcap;
    }
  }
}

TEST(DecodeStep, GatedActivationsMatchAten) {
  auto gate = torch::linspace(-12, 12, 1001), up = torch::linspace(2, -3, 1001);
  auto got = torch::empty_like(gate);
  ds::gated_activation(gate.data_ptr<float>(), up.data_ptr<float>(), got.data_ptr<float>(), 1001, false);
  EXPECT_LT(max_diff(got, torch::silu(gate) * up), 1e-5);
  ds::gated_activation(gate.data_ptr<float>(), up.data_ptr<float>(), got.data_ptr<float>(), 1001, true);
  EXPECT_LT(max_diff(got, torch::gelu(gate, "tanh") * up), 1e-5);
}

// The shared tiny configs, "gemma3-softcap" adding attention soft-capping, `big` enough attention
// work per step for the thread pool.
ModelConfig config_of(const std::string& arch, bool big = false) {
  ModelConfig c = test::tiny_arch_config(arch == "gemma3-softcap" ? "gemma3" : arch);
  c.context_length = 1024;
  if (arch == "gemma3-softcap") c.attn_logit_softcapping = 0.5;
  if (big) {
    c.hidden_size = 256;
    c.intermediate_size = 384;
    c.n_heads = 8;
    c.head_dim = 32;
  }
  return c;
}

// Greedy decode of a left-padded batch; returns the logits of every decode step [steps, B, V].
torch::Tensor decode(const CausalLM& lm, bool fused, const std::vector<std::vector<int64_t>>& prompts, int steps) {
  set_fused_decode(fused);
  auto [ids, pad] = left_pad(prompts, 0);
  KvCache cache = lm.new_cache(ids.size(0), ids.size(1) + steps);
  ForwardInput in;
  in.ids = ids;
  in.pad_left = pad;
  in.last_only = true;
  torch::NoGradGuard ng;
  auto logits = lm.forward(in, cache).select(1, 0);  // prefill: the generic path (T > 1)
  std::vector<torch::Tensor> out;
  for (int s = 0; s < steps; ++s) {
    ForwardInput step;
    step.ids = logits.argmax(-1).view({-1, 1});
    step.last_only = true;
    logits = lm.forward(step, cache).select(1, 0);
    out.push_back(logits.clone());
  }
  set_fused_decode(true);
  return torch::stack(out);
}

class DecodeStepArch : public ::testing::TestWithParam<const char*> {};

TEST_P(DecodeStepArch, FusedStepsMatchTheGenericLayerOnALeftPaddedBatch) {
  const auto lm = CausalLM::random(config_of(GetParam()), 7, 0.2);
  std::vector<std::vector<int64_t>> prompts{{5, 9, 13, 2, 40, 41, 7, 8, 9}, {3}, {60, 61, 62, 63, 11}};
  const auto fused = decode(*lm, true, prompts, 12), generic = decode(*lm, false, prompts, 12);
  EXPECT_LT(max_diff(fused, generic), 1e-4) << GetParam();
  EXPECT_TRUE(torch::equal(fused.argmax(-1), generic.argmax(-1))) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(Archs, DecodeStepArch, ::testing::Values("llama", "qwen2", "gemma3", "gemma3-softcap"));

TEST(DecodeStep, LongContextsSplitTheAttentionOverThreads) {
  torch::set_num_threads(2);  // enough work for the pool: 2 rows x 8 heads x ~300 slots x 32
  const auto lm = CausalLM::random(config_of("llama", true), 11, 0.1);
  std::vector<int64_t> a, b;
  for (int i = 0; i < 300; ++i) a.push_back((i * 13 + 5) % 97);
  for (int i = 0; i < 260; ++i) b.push_back((i * 7 + 1) % 97);
  const auto fused = decode(*lm, true, {a, b}, 4), generic = decode(*lm, false, {a, b}, 4);
  torch::set_num_threads(1);
  EXPECT_LT(max_diff(fused, generic), 1e-4);
}

TEST(DecodeStep, OnlyPlainInferenceDecodeStepsAreFused) {
  const auto lm = CausalLM::random(config_of("llama"), 3, 0.2);
  KvCache cache = lm->new_cache(1, 16);
  ForwardInput one;
  one.ids = torch::tensor({{4}}, torch::kInt64);
  ForwardInput three;
  three.ids = torch::tensor({{4, 5, 6}}, torch::kInt64);
  {
    torch::NoGradGuard ng;
    EXPECT_TRUE(lm->begin_pass(one, 1, 1, &cache).fused);
    EXPECT_FALSE(lm->begin_pass(three, 1, 3, &cache).fused) << "prefill";
    EXPECT_FALSE(lm->begin_pass(one, 1, 1, nullptr).fused) << "no cache";
    ForwardHooks steer;
    steer.mlp_transform = [](int64_t, const torch::Tensor& m) { return m; };
    EXPECT_FALSE(lm->begin_pass(one, 1, 1, &cache, &steer).fused) << "MLP hook";
    ForwardHooks empty;
    EXPECT_TRUE(lm->begin_pass(one, 1, 1, &cache, &empty).fused) << "hooks with nothing set";
    set_fused_decode(false);
    EXPECT_FALSE(lm->begin_pass(one, 1, 1, &cache).fused) << "switched off";
    set_fused_decode(true);
  }
  EXPECT_FALSE(lm->begin_pass(one, 1, 1, &cache).fused) << "autograd on";
}

}  // namespace
