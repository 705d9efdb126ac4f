// ICV extraction (methods.md 3b) on synthetic differences with a planted direction and on a small
// random model; HDR application and global pruning (methods.md 3a).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "io/safetensors.h"
#include "artifacts/harm_vector.h"
#include "artifacts/typed.h"
#include "train/icv.h"

using namespace safedec;

namespace {

std::shared_ptr<CausalLM> tiny_model() {
  ModelConfig c;
  c.architecture = "llama";
  c.n_layers = 2;
  c.hidden_size = 16;
  c.intermediate_size = 32;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 8;
  c.vocab_size = 64;
  c.context_length = 128;
  c.rope_theta = 10000;
  return CausalLM::random(c, 3, 0.3);
}

// One token per byte (mod 60) + BOS 63: enough to run the extraction end to end.
class ByteTokenizer : public Tokenizer {
 public:
  ByteTokenizer() { bos_id_ = 63; }
  Encoding encode_with_offsets(const std::string& text, bool) const override {
    Encoding e;
    for (size_t i = 0; i < text.size(); ++i) {
      e.ids.push_back(static_cast<unsigned char>(text[i]) % 60);
      e.offsets.push_back({i, i + 1});
    }
    return e;
  }
  std::string decode(const std::vector<int32_t>& ids, bool) const override { return std::string(ids.size(), 'x'); }
  std::string token_to_piece(int32_t) const override { return "x"; }
  std::string token_text(int32_t) const override { return "x"; }
  int32_t piece_to_token(const std::string&) const override { return -1; }
  int64_t vocab_size() const override { return 64; }
  bool is_special(int32_t id) const override { return id == 63; }
  std::string kind() const override { return "test"; }
};

double cosine(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.dot(b) / (a.norm() * b.norm())).item<double>();
}

}  // namespace

TEST(IcvDirection, RecoversAPlantedDirection) {
  torch::manual_seed(0);
  const int64_t N = 30, F = 200;
  auto u = torch::randn({F});
  u = u / u.norm();
  // h_i = c_i * u + small noise with c_i in [1, 3]: the mean is ~2u and PC1 is +-u.
  auto c = torch::rand({N, 1}) * 2 + 1;
  auto X = c * u.unsqueeze(0) + 0.01 * torch::randn({N, F});
  auto d = icv_direction(X);
  EXPECT_GT(cosine(d, u), 0.99);
  // PC1 is a unit vector, so the result is the mean plus or minus ~u.
  const double n = (d - X.mean(0)).norm().item<double>();
  EXPECT_NEAR(n, 1.0, 1e-3);
}

TEST(IcvDirection, SignRuleMakesTheLargestScorePositive) {
  // Rows: mean 0 along x; scores along PC1 are {+3, -1, -1, -1}: the largest |score| is +3 on row 0,
  // so PC1 must point like row 0 (+x) whatever sign the SVD returns.
  auto X = torch::tensor({{3.0f, 0.0f}, {-1.0f, 0.0f}, {-1.0f, 0.0f}, {-1.0f, 0.0f}});
  auto d = icv_direction(X);
  EXPECT_NEAR(d[0].item<float>(), 1.0f, 1e-5);  // PC1 (+1, 0) + mean (0, 0)
  EXPECT_NEAR(d[1].item<float>(), 0.0f, 1e-5);
  auto d2 = icv_direction(-X);  // the largest |score| row now points along -x
  EXPECT_NEAR(d2[0].item<float>(), -1.0f, 1e-5);
}

TEST(IcvDirection, NoVarianceGivesTheMeanAndOneRowIsItself) {
  auto X = torch::tensor({{1.0f, 2.0f}, {1.0f, 2.0f}, {1.0f, 2.0f}});
  EXPECT_TRUE(torch::allclose(icv_direction(X), torch::tensor({1.0f, 2.0f})));
  auto one = torch::tensor({{0.5f, -1.0f, 2.0f}});
  EXPECT_TRUE(torch::allclose(icv_direction(one), one[0]));
}

TEST(IcvExtract, OnARandomModel) {
  torch::InferenceMode guard;
  auto model = tiny_model();
  ByteTokenizer tok;
  // Identical answers: every difference is zero, so the ICV is zero.
  std::vector<IcvPair> same = {{"q1", "ans", "ans"}, {"q2", "b", "b"}};
  auto zero = extract_icv(*model, tok, same);
  EXPECT_EQ(zero.sizes(), (torch::IntArrayRef{2, 16}));
  EXPECT_EQ(zero.abs().max().item<float>(), 0.0f);
  // One pair: the ICV is exactly h(unsafe) - h(safe) (no variance -> the mean alone).
  IcvPair p{"how?", "Sure, here is", "I cannot help"};
  auto icv = extract_icv(*model, tok, {p});
  auto ids = [&](const std::string& s) {
    auto v = tok.encode(s, false);
    v.insert(v.begin(), 63);
    return v;
  };
  auto hu = layer_states(*model, ids(icv_demo_text(p.question, p.unsafe_answer)), 4);
  auto hs = layer_states(*model, ids(icv_demo_text(p.question, p.safe_answer)), 4);
  EXPECT_TRUE(torch::allclose(icv, hu - hs, 1e-5, 1e-5));
  EXPECT_GT(icv.abs().max().item<float>(), 0.0f);
  // The last-token switch differs from the 4-token average.
  IcvOptions last;
  last.last_token_only = true;
  auto icv_last = extract_icv(*model, tok, {p}, last);
  EXPECT_FALSE(torch::allclose(icv, icv_last));
  auto hu1 = layer_states(*model, ids(icv_demo_text(p.question, p.unsafe_answer)), 1);
  auto hs1 = layer_states(*model, ids(icv_demo_text(p.question, p.safe_answer)), 1);
  EXPECT_TRUE(torch::allclose(icv_last, hu1 - hs1, 1e-5, 1e-5));
}

TEST(IcvExtract, LayerStatesAverageTheLastPositions) {
  torch::InferenceMode guard;
  auto model = tiny_model();
  std::vector<int32_t> ids = {63, 5, 9, 12, 40, 7};
  auto avg = layer_states(*model, ids, 4);
  torch::Tensor sum = torch::zeros_like(avg);
  for (int64_t k = 0; k < 4; ++k) {
    // The last token's state of the prefix ending at position 5 - k (causal: same as inside the full run).
    std::vector<int32_t> prefix(ids.begin(), ids.end() - k);
    sum += layer_states(*model, prefix, 1);
  }
  EXPECT_TRUE(torch::allclose(avg, sum / 4, 1e-4, 1e-5));
}

TEST(IcvExtract, SaveWritesAnIcvArtifact) {
  auto model = tiny_model();
  const auto& cfg = model->config();
  auto icv = torch::randn({cfg.n_layers, cfg.hidden_size});
  const std::string dir = ::testing::TempDir() + "/icv_test_artifact";
  std::filesystem::remove_all(dir);
  save_icv(dir, icv, cfg, {{"n_pairs", 3}});
  auto f = SafetensorsFile::open(dir + "/icv.safetensors");
  auto back = torch::from_blob(f->to_float32("icv").data(), {cfg.n_layers, cfg.hidden_size}, torch::kFloat32).clone();
  EXPECT_TRUE(torch::equal(back, icv));
  EXPECT_TRUE(torch::equal(load_icv(dir, cfg), icv));
  const ArtifactDir a = open_artifact(dir, ArtifactKind::Icv);
  EXPECT_EQ(a.manifest.params.at("n_pairs"), 3);
  EXPECT_EQ(a.manifest.model.hidden_size, cfg.hidden_size);
  // A second save into the same directory is refused unless overwrite.
  EXPECT_THROW(save_icv(dir, icv, cfg), Error);
  save_icv(dir, icv * 2, cfg, {}, /*overwrite=*/true);
  EXPECT_TRUE(torch::equal(load_icv(dir, cfg), icv * 2));
  // Another model's shapes are refused naming both.
  ModelConfig other = cfg;
  other.hidden_size *= 2;
  other.name = "other";
  EXPECT_THROW(load_icv(dir, other), Error);
  std::filesystem::remove_all(dir);
}

TEST(Hdr, SubtractsLambdaTimesTheHarmVector) {
  torch::NoGradGuard ng;
  auto model = tiny_model();
  auto before = model->weights().layers[1]->w_down.clone();
  auto tau = torch::randn(before.sizes());
  const std::string path = ::testing::TempDir() + "/hdr_test.safetensors";
  auto t = tau.contiguous();
  write_safetensors(path, {{"layers.1.w_down", SafetensorsDtype::F32, {t.size(0), t.size(1)}, t.data_ptr<float>(),
                            static_cast<size_t>(t.numel()) * 4}});
  EXPECT_EQ(apply_harm_vector(*model, path, 3.0), 1);
  EXPECT_TRUE(torch::allclose(model->weights().layers[1]->w_down, before - 3.0 * tau, 1e-5, 1e-5));
  // A name the model does not have is refused.
  write_safetensors(path, {{"layers.9.w_down", SafetensorsDtype::F32, {t.size(0), t.size(1)}, t.data_ptr<float>(),
                            static_cast<size_t>(t.numel()) * 4}});
  EXPECT_THROW(apply_harm_vector(*model, path, 3.0), Error);
  std::remove(path.c_str());
}

TEST(Hdr, GlobalTopKPruningAcrossTensors) {
  std::vector<torch::Tensor> tau = {torch::tensor({0.1f, -5.0f, 0.2f, 0.3f, 0.0f}),
                                    torch::tensor({4.0f, -0.5f, 0.05f, 0.01f, 0.02f})};
  // 10 values, keep 20% globally: the two largest |.| are -5 (tensor 0) and 4 (tensor 1).
  const double t = prune_harm_vector_global(tau, 0.2);
  EXPECT_NEAR(t, 4.0, 1e-6);
  EXPECT_TRUE(torch::equal(tau[0], torch::tensor({0.0f, -5.0f, 0.0f, 0.0f, 0.0f})));
  EXPECT_TRUE(torch::equal(tau[1], torch::tensor({4.0f, 0.0f, 0.0f, 0.0f, 0.0f})));
}
