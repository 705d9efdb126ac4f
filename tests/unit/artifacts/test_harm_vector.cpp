// HDR's harm vector (methods.md 3a): the streaming global top-k (radix select over fp32 bits) equals
// the exact top-k on random tensors of awkward sizes, with heavy ties, zeros and blocks of any split;
// pruning keeps exactly the entries |tau| >= the k-th largest; a LoRA's tau (scale * B A in the fused
// layout) edits the weights exactly as the adapter changes the forward; and bad input (k or lambda out
// of range, NaN in tau, an artifact for another model) is refused with a sentence saying what.
#include <gtest/gtest.h>

#include <filesystem>

#include "artifacts/artifact.h"
#include "artifacts/harm_vector.h"
#include "artifacts/typed.h"
#include "core/error.h"

using namespace safedec;

namespace {

std::shared_ptr<CausalLM> tiny_model(bool tied = false) {
  ModelConfig c;
  c.architecture = "llama";
  c.name = "tiny-hdr";
  c.n_layers = 3;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 8;
  c.vocab_size = 40;
  c.context_length = 64;
  c.rope_theta = 10000;
  c.tie_word_embeddings = tied;
  return CausalLM::random(c, 11, 0.3);
}

// The exact answer: sort every |x|, take the k-th largest.
double exact_kth(const std::vector<torch::Tensor>& t, int64_t k) {
  std::vector<torch::Tensor> flat;
  for (const auto& x : t) flat.push_back(x.abs().reshape({-1}));
  return std::get<0>(torch::cat(flat).topk(k)).min().item<double>();
}

// A stream over the tensors, each cut into blocks of `block` entries.
TauStream stream_of(const std::vector<torch::Tensor>& t, int64_t block) {
  return [&t, block](const TauVisitor& visit) {
    for (const auto& x : t) {
      const float* p = x.data_ptr<float>();
      for (int64_t lo = 0; lo < x.numel(); lo += block) visit(p + lo, std::min(block, x.numel() - lo));
    }
  };
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(HarmTopK, StreamingEqualsExactOnRandomTensors) {
  torch::manual_seed(1);
  for (int trial = 0; trial < 12; ++trial) {
    std::vector<torch::Tensor> tau;
    for (int64_t n : {int64_t{1}, int64_t{19}, int64_t{111}, int64_t{4097}, int64_t{40000}})
      tau.push_back(torch::randn({n}) * std::pow(10.0, trial % 5 - 2));
    if (trial % 3 == 1) {  // exact zeros and a huge value
      tau[3].narrow(0, 0, 2000).zero_();
      tau[2][5] = 1e30f;
    }
    int64_t total = 0;
    for (const auto& t : tau) total += t.numel();
    for (double fraction : {1e-5, 0.001, 0.1, 0.37, 0.5, 0.999, 1.0}) {
      const TopKSelection s = select_global_topk(stream_of(tau, 1 + trial * 997), fraction);
      const int64_t k = std::max<int64_t>(1, static_cast<int64_t>(fraction * total));
      EXPECT_EQ(s.total, total);
      EXPECT_EQ(s.k, k);
      const double exact = exact_kth(tau, k);
      EXPECT_EQ(s.threshold, exact) << "trial " << trial << " fraction " << fraction;
      int64_t kept = 0, nonzero = 0;
      for (const auto& t : tau) {
        kept += (t.abs() >= exact).sum().item<int64_t>();
        nonzero += ((t.abs() >= exact) & (t != 0)).sum().item<int64_t>();
      }
      EXPECT_EQ(s.kept, kept);
      EXPECT_EQ(s.kept_nonzero, nonzero);
      EXPECT_GE(s.kept, k);
    }
  }
}

TEST(HarmTopK, TiesAtTheThresholdAreAllKept) {
  // Values from {0, +-0.5, +-1, +-2}: every threshold falls inside a long run of equal |x|.
  torch::manual_seed(2);
  std::vector<torch::Tensor> tau = {(torch::randint(-4, 5, {1000}) / 2.0).to(torch::kFloat32),
                                    (torch::randint(-2, 3, {333}) / 2.0).to(torch::kFloat32)};
  tau[0] = torch::where(tau[0].abs() > 1.5, tau[0].sign() * 2.0, tau[0]).contiguous();
  for (double fraction : {0.01, 0.1, 0.25, 0.5, 0.9}) {
    const int64_t k = static_cast<int64_t>(fraction * 1333);
    const TopKSelection s = select_global_topk(stream_of(tau, 64), fraction);
    EXPECT_EQ(s.threshold, exact_kth(tau, k)) << fraction;
    std::vector<torch::Tensor> pruned = {tau[0].clone(), tau[1].clone()};
    EXPECT_EQ(prune_harm_vector_global(pruned, fraction), s.threshold);
    int64_t kept = 0;
    for (size_t i = 0; i < tau.size(); ++i) {
      auto keep = tau[i].abs() >= s.threshold;
      EXPECT_TRUE(torch::equal(pruned[i], torch::where(keep, tau[i], torch::zeros_like(tau[i])))) << fraction;
      kept += (keep & (tau[i] != 0)).sum().item<int64_t>();
    }
    EXPECT_EQ(s.kept_nonzero, kept);
  }
}

TEST(HarmTopK, PruneMatchesTheExactMaskOnNonContiguousAndDoubleTensors) {
  torch::manual_seed(3);
  std::vector<torch::Tensor> tau = {torch::randn({7, 9}).t(), torch::randn({50}, torch::kFloat64)};
  std::vector<torch::Tensor> ref = {tau[0].contiguous().clone(), tau[1].to(torch::kFloat32)};
  const double t = prune_harm_vector_global(tau, 0.2);
  EXPECT_EQ(t, exact_kth(ref, static_cast<int64_t>(0.2 * 113)));
  EXPECT_TRUE(torch::equal(tau[0], torch::where(ref[0].abs() >= t, ref[0], torch::zeros_like(ref[0]))));
  EXPECT_EQ((tau[0] != 0).sum().item<int64_t>() + (tau[1] != 0).sum().item<int64_t>(), 22);
}

TEST(HarmTopK, BadFractionAndNonFiniteTauAreRefused) {
  std::vector<torch::Tensor> tau = {torch::randn({10})};
  for (double f : {0.0, -0.1, 1.5, std::nan("")}) {
    const std::string msg = error_of([&] { select_global_topk(stream_of(tau, 4), f); });
    EXPECT_NE(msg.find("kept fraction"), std::string::npos) << f << ": " << msg;
    EXPECT_NE(msg.find("(0, 1]"), std::string::npos) << msg;
  }
  tau[0][3] = std::nanf("");
  EXPECT_NE(error_of([&] { select_global_topk(stream_of(tau, 4), 0.1); }).find("NaN/Inf"), std::string::npos);
  std::vector<torch::Tensor> empty = {torch::zeros({0})};
  EXPECT_NE(error_of([&] { select_global_topk(stream_of(empty, 4), 0.1); }).find("empty"), std::string::npos);
}

TEST(HarmApply, LambdaScalesTheEditAndOutOfRangeIsRefused) {
  torch::NoGradGuard ng;
  auto model = tiny_model();
  HarmVector h;
  h.tau["layers.1.wqkv"] = torch::randn(model->weights().layers[1]->wqkv.sizes());
  h.tau["final_norm"] = torch::randn(model->weights().final_norm.sizes());
  const auto w0 = model->weights().layers[1]->wqkv.clone(), n0 = model->weights().final_norm.clone();
  EXPECT_EQ(apply_harm_vector(*model, h, 0.0), 2);
  EXPECT_TRUE(torch::equal(model->weights().layers[1]->wqkv, w0));
  EXPECT_EQ(apply_harm_vector(*model, h, 2.5), 2);
  EXPECT_TRUE(torch::allclose(model->weights().layers[1]->wqkv, w0 - 2.5 * h.tau["layers.1.wqkv"], 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(model->weights().final_norm, n0 - 2.5 * h.tau["final_norm"], 1e-5, 1e-6));
  for (double lambda : {-1.0, kHdrLambdaMax + 1, std::nan("")}) {
    const std::string msg = error_of([&] { apply_harm_vector(*model, h, lambda); });
    EXPECT_NE(msg.find("lambda must be in [0, 20]"), std::string::npos) << lambda << ": " << msg;
  }
  // A wrong shape names the tensor.
  h.tau["final_norm"] = torch::randn({3});
  EXPECT_NE(error_of([&] { apply_harm_vector(*model, h, 1.0); }).find("final_norm"), std::string::npos);
}

TEST(HarmArtifact, RoundTripsAndAnotherModelIsRefusedNamingBoth) {
  auto model = tiny_model();
  const std::string dir = ::testing::TempDir() + "/hdr_artifact_test";
  std::filesystem::remove_all(dir);
  HarmVector h;
  h.lambda = 2.0;
  h.tau["layers.0.w_down"] = torch::randn(model->weights().layers[0]->w_down.sizes());
  {
    ArtifactManifest m;
    m.kind = ArtifactKind::HarmVector;
    m.model = ModelIdentity::of(model->config());
    ArtifactWriter w(dir, m);
    write_harm_vector(w, h);
    w.commit();
  }
  HarmVector back = load_harm_vector(dir, model->config());
  EXPECT_EQ(back.lambda, 2.0);
  EXPECT_TRUE(torch::equal(back.tau.at("layers.0.w_down"), h.tau.at("layers.0.w_down")));
  ModelConfig other = model->config();
  other.name = "some-other-model";
  other.hidden_size = 32;
  const std::string msg = error_of([&] { load_harm_vector(dir, other); });
  EXPECT_NE(msg.find("some-other-model"), std::string::npos) << msg;
  EXPECT_NE(msg.find("tiny-hdr"), std::string::npos) << msg;
  auto big = tiny_model();
  EXPECT_THROW(apply_harm_vector(*big, dir, 25.0), Error);
  std::filesystem::remove_all(dir);
}

TEST(HarmLora, DeltaEditsTheWeightsExactlyAsTheAdapterChangesTheForward) {
  torch::NoGradGuard ng;
  auto model = tiny_model();
  LoraAdapter::Options lo;
  lo.rank = 3;
  lo.alpha = 6;
  lo.targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"};
  lo.layers = {0, 2};
  auto lora = std::make_shared<LoraAdapter>(model->config(), lo);
  torch::manual_seed(4);
  for (auto& t : lora->parameters()) t.copy_(torch::randn(t.sizes()) * 0.2);  // B != 0: a real change
  ForwardHooks hooks;
  hooks.loras = {LoraBinding{lora, {}}};
  ForwardInput in;
  in.ids = torch::tensor({{1, 2, 3, 4, 5, 6}}, torch::kInt64);
  auto with_adapter = model->head_logits(model->forward_hidden(in, &hooks), &hooks);
  auto delta = lora_weight_delta(*model, *lora);
  EXPECT_EQ(delta.count("layers.1.wqkv"), 0u);  // layer 1 has no adapter
  EXPECT_EQ(delta.count("lm_head"), 1u);
  HarmVector h;
  h.tau = delta;
  apply_harm_vector(*model, h, 1.0);  // theta - delta
  for (auto& [n, t] : h.tau) t.neg_();
  apply_harm_vector(*model, h, 2.0);  // (theta - delta) - 2 (-delta) = theta + delta: the adapter merged
  auto edited = model->head_logits(model->forward_hidden(in));
  EXPECT_TRUE(torch::allclose(edited, with_adapter, 1e-4, 1e-4)) << (edited - with_adapter).abs().max().item<float>();
  // A tied head cannot take an LM-head adapter's tau without editing the embeddings.
  auto tied = tiny_model(true);
  LoraAdapter head_only(tied->config(), [] {
    LoraAdapter::Options o;
    o.targets = {"lm_head"};
    return o;
  }());
  EXPECT_NE(error_of([&] { lora_weight_delta(*tied, head_only); }).find("tie"), std::string::npos);
}
