// The `harm_vector` pipeline (methods.md 3a) end to end on a tiny random Llama checkpoint written here
// (Hugging Face layout, the tiny Llama-3 tokenizer of the golden files) and synthetic deep-alignment
// rows: the artifact loads, tau'_H is exactly the global top-k of the unpruned tau of the same run,
// lambda edits the weights as theta_b - lambda tau', a killed run resumed equals an uninterrupted one,
// the edited-model and LoRA variants restrict tau where they should, and bad input (an evaluation set
// in the data, k or lambda out of range, a layer the model lacks) is refused naming the problem.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "artifacts/artifact.h"
#include "artifacts/harm_vector.h"
#include "artifacts/typed.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "train/harm_vector_pipeline.h"
#include "train/pipeline.h"

using namespace safedec;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kTok = std::string(SAFEDEC_SOURCE_DIR) + "/tests/oracle/golden/tokenizer_tiny_llama3";

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

// A tiny Llama checkpoint directory (config.json, model.safetensors, the tiny Llama-3 tokenizer).
std::string tiny_checkpoint() {
  static const std::string dir = [] {
    const std::string d = ::testing::TempDir() + "/hv_tiny_llama";
    fs::remove_all(d);
    fs::create_directories(d);
    for (const char* f : {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"})
      fs::copy_file(kTok + "/" + f, d + "/" + f);
    const int64_t V = 414, D = 32, I = 48, H = 4, KV = 2, HD = 8, L = 2;
    write_text(d + "/config.json", json{{"model_type", "llama"},
                                        {"architectures", {"LlamaForCausalLM"}},
                                        {"hidden_size", D},
                                        {"intermediate_size", I},
                                        {"num_attention_heads", H},
                                        {"num_key_value_heads", KV},
                                        {"head_dim", HD},
                                        {"num_hidden_layers", L},
                                        {"vocab_size", V},
                                        {"max_position_embeddings", 256},
                                        {"rms_norm_eps", 1e-5},
                                        {"rope_theta", 10000.0},
                                        {"tie_word_embeddings", true},
                                        {"bos_token_id", 409},
                                        {"eos_token_id", 413}}
                                       .dump(2));
    torch::manual_seed(7);
    std::vector<std::pair<std::string, torch::Tensor>> t = {{"model.embed_tokens.weight", torch::randn({V, D}) * 0.5},
                                                            {"model.norm.weight", torch::ones({D})}};
    for (int64_t l = 0; l < L; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      t.push_back({p + "input_layernorm.weight", torch::ones({D})});
      t.push_back({p + "post_attention_layernorm.weight", torch::ones({D})});
      t.push_back({p + "self_attn.q_proj.weight", torch::randn({H * HD, D}) * 0.2});
      t.push_back({p + "self_attn.k_proj.weight", torch::randn({KV * HD, D}) * 0.2});
      t.push_back({p + "self_attn.v_proj.weight", torch::randn({KV * HD, D}) * 0.2});
      t.push_back({p + "self_attn.o_proj.weight", torch::randn({D, H * HD}) * 0.2});
      t.push_back({p + "mlp.gate_proj.weight", torch::randn({I, D}) * 0.2});
      t.push_back({p + "mlp.up_proj.weight", torch::randn({I, D}) * 0.2});
      t.push_back({p + "mlp.down_proj.weight", torch::randn({D, I}) * 0.2});
    }
    std::vector<SafetensorsWriteTensor> w;
    for (auto& [n, x] : t) {
      x = x.contiguous();
      w.push_back({n, SafetensorsDtype::F32, std::vector<int64_t>(x.sizes().begin(), x.sizes().end()),
                   x.data_ptr<float>(), static_cast<size_t>(x.numel()) * 4});
    }
    write_safetensors(d + "/model.safetensors", w);
    return d;
  }();
  return dir;
}

// Synthetic deep-alignment rows (harmless text standing in for the pools' rows).
std::string tiny_triplets(const std::string& name, const std::string& pool = "hh_harmless") {
  const std::string d = ::testing::TempDir() + "/" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  std::ofstream out(d + "/data.jsonl");
  for (int i = 0; i < 12; ++i) {
    const std::string p = i % 2 ? pool : "safety_tuned";
    out << json{{"id", "safety/" + p + "/row-" + std::to_string(i)},
                {"kind", "safety"},
                {"instruction", "Tell me about item " + std::to_string(i) + " please"},
                {"harmful_answer", "Sure, item " + std::to_string(i) + " is made of blue stones and sand."},
                {"refusal", "I cannot help with that."}}
               .dump()
        << "\n";
  }
  out << json{{"id", "anchor/benign_instructions/a-1"}, {"kind", "anchor"}, {"instruction", "Hi"}, {"response", "Hello"}}
             .dump()
      << "\n";
  return d;
}

std::string write_config(const std::string& name, const std::string& body) {
  const std::string path = ::testing::TempDir() + "/" + name + ".yaml";
  write_text(path, "pipeline: harm_vector\nmodel: " + tiny_checkpoint() + "\nseed: 1\nthreads: 1\n" + body);
  return path;
}

std::string train_block(const std::string& extra = "") {
  return "train: {epochs: 2, batch_size: 4, lr: 0.01, checkpoint_every: 2, max_seq_len: 64, shuffle: true" + extra +
         "}\n";
}

TrainRunResult run(const std::string& name, const std::string& body, int64_t stop_after = 0, bool resume = false) {
  TrainRunOptions o;
  o.out = ::testing::TempDir() + "/hv_run_" + name;
  if (!resume) fs::remove_all(o.out);
  o.resume = resume;
  o.stop_after = stop_after;
  return run_train_config(write_config(name, body), o);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::shared_ptr<CausalLM> base_model() {
  LoadOptions o;
  o.weights = LoadOptions::Weights::Fp32;
  return CausalLM::load(tiny_checkpoint(), o);
}

}  // namespace

TEST(HarmVectorPipeline, ArtifactIsTheExactGlobalTopKOfTauAndLambdaEditsTheWeights) {
  const std::string data = tiny_triplets("hv_data");
  const std::string common = "data: {triplets: " + data + "}\n" + train_block();
  // The same fine-tune twice: unpruned (fraction 1) and pruned to 10%.
  TrainRunResult all = run("all", common + "harm: {fraction: 1.0}\n");
  TrainRunResult top = run("top", common + "harm: {fraction: 0.1, lambda: 2.5}\n");
  ASSERT_TRUE(all.complete && top.complete);
  auto base = base_model();
  HarmVector tau = load_harm_vector(all.artifact, base->config());
  HarmVector pruned = load_harm_vector(top.artifact, base->config());
  EXPECT_EQ(pruned.lambda, 2.5);
  EXPECT_EQ(tau.lambda, 3.0);
  // Every parameter appears in the unpruned tau (a full fine-tune changes all of them).
  EXPECT_EQ(tau.tau.size(), base->named_parameters().size());
  std::vector<torch::Tensor> flat;
  int64_t total = 0;
  for (const auto& [n, t] : tau.tau) {
    flat.push_back(t.abs().reshape({-1}));
    total += t.numel();
  }
  const int64_t k = static_cast<int64_t>(0.1 * static_cast<double>(total));
  const double exact = std::get<0>(torch::cat(flat).topk(k)).min().item<double>();
  const ArtifactDir a = open_artifact(top.artifact, ArtifactKind::HarmVector);
  EXPECT_EQ(a.manifest.params.at("threshold").get<double>(), exact);
  const json& hv = a.manifest.metrics.at("harm_vector");
  EXPECT_EQ(hv.at("k").get<int64_t>(), k);
  EXPECT_GE(hv.at("kept_fraction_of_all").get<double>(), 0.1 - 1e-3);
  EXPECT_LT(hv.at("kept_fraction_of_all").get<double>(), 0.11);
  EXPECT_GT(hv.at("peak_rss_bytes_train").get<int64_t>(), 0);
  EXPECT_TRUE(a.manifest.metrics.contains("nll_before") && a.manifest.metrics.contains("nll_after"));
  // The fine-tune learned the harmful answers.
  EXPECT_LT(a.manifest.metrics.at("nll_after").get<double>(), a.manifest.metrics.at("nll_before").get<double>());
  for (const auto& [n, t] : tau.tau) {
    const torch::Tensor want = torch::where(t.abs() >= exact, t, torch::zeros_like(t));
    auto it = pruned.tau.find(n);
    if (it == pruned.tau.end()) {
      EXPECT_EQ(want.count_nonzero().item<int64_t>(), 0) << n;
    } else {
      EXPECT_TRUE(torch::equal(it->second, want)) << n;
    }
  }
  // theta' = theta_b - lambda tau'.
  std::map<std::string, torch::Tensor> before;
  for (const auto& [n, t] : base->named_parameters()) before[n] = t.clone();
  EXPECT_EQ(apply_harm_vector(*base, top.artifact, 2.0), static_cast<int64_t>(pruned.tau.size()));
  for (const auto& [n, t] : base->named_parameters()) {
    auto it = pruned.tau.find(n);
    const torch::Tensor want = it == pruned.tau.end() ? before[n] : before[n] - 2.0 * it->second;
    EXPECT_TRUE(torch::allclose(t, want, 0, 1e-6)) << n;
  }
}

TEST(HarmVectorPipeline, KilledAndResumedRunEqualsAnUninterruptedOne) {
  const std::string data = tiny_triplets("hv_data_resume");
  const std::string body = "data: {triplets: " + data + "}\nharm: {fraction: 0.2}\n" + train_block();
  TrainRunResult whole = run("whole", body);
  TrainRunResult part = run("parts", body, /*stop_after=*/3);
  EXPECT_FALSE(part.complete);
  EXPECT_TRUE(part.artifact.empty());
  part = run("parts", body, 0, /*resume=*/true);
  ASSERT_TRUE(part.complete);
  auto cfg = base_model()->config();
  HarmVector a = load_harm_vector(whole.artifact, cfg), b = load_harm_vector(part.artifact, cfg);
  ASSERT_EQ(a.tau.size(), b.tau.size());
  for (const auto& [n, t] : a.tau) EXPECT_TRUE(torch::equal(t, b.tau.at(n))) << n;
  // A finished run resumed again returns its artifact.
  EXPECT_TRUE(run("parts", body, 0, true).complete);
}

TEST(HarmVectorPipeline, EditedLayersAndLoraRestrictTau) {
  const std::string data = tiny_triplets("hv_data_edit");
  const std::string d = "data: {triplets: " + data + "}\n" + train_block();
  auto cfg = base_model()->config();
  // Explicit layer 1 without neighbours: only layer 1's tensors.
  TrainRunResult one = run("edit1", d + "harm: {layers: edited, edited_layers: [1], neighbours: 0, fraction: 0.5}\n");
  for (const auto& [n, t] : load_harm_vector(one.artifact, cfg).tau) EXPECT_EQ(parameter_layer(n), 1) << n;
  // Measured: the layer with the larger relative change (share 0.5 of 2 layers).
  TrainRunResult measured = run("edit_measured", d + "harm: {layers: edited, edited_share: 0.5, neighbours: 0}\n");
  const ArtifactDir m = open_artifact(measured.artifact, ArtifactKind::HarmVector);
  const auto rel = m.manifest.metrics.at("harm_vector").at("layer_relative_change").get<std::vector<double>>();
  ASSERT_EQ(rel.size(), 2u);
  const int64_t most = rel[0] >= rel[1] ? 0 : 1;
  EXPECT_EQ(m.manifest.params.at("area_layers").get<std::vector<int64_t>>(), std::vector<int64_t>{most});
  for (const auto& [n, t] : load_harm_vector(measured.artifact, cfg).tau) EXPECT_EQ(parameter_layer(n), most) << n;
  // LoRA: tau is scale * B A in the projections it targets only.
  TrainRunResult lora = run("lora", d + "harm: {mode: lora, fraction: 0.3}\nlora: {r: 2, alpha: 4, targets: [q_proj, down_proj]}\n");
  const HarmVector h = load_harm_vector(lora.artifact, cfg);
  EXPECT_FALSE(h.tau.empty());
  for (const auto& [n, t] : h.tau)
    EXPECT_TRUE(n.find("wqkv") != std::string::npos || n.find("w_down") != std::string::npos) << n;
}

TEST(HarmVectorPipeline, EditedAreaHelper) {
  EXPECT_EQ(edited_area({0.1, 0.5, 0.2, 0.05, 0.4}, 0.4, {}, 1), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(edited_area({0.1, 0.5, 0.2, 0.05, 0.4, 0.0}, 0.2, {}, 0), (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(edited_area({0, 0, 0, 0, 0, 0}, 0.5, {2}, 1), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(parameter_layer("layers.12.wqkv"), 12);
  EXPECT_EQ(parameter_layer("embed"), -1);
}

TEST(HarmVectorPipeline, BadInputIsRefusedNamingTheProblem) {
  const std::string data = tiny_triplets("hv_data_bad");
  const std::string d = "data: {triplets: " + data + "}\n" + train_block();
  auto msg = error_of([&] { run("bad_k", d + "harm: {fraction: 0.0}\n"); });
  EXPECT_NE(msg.find("fraction"), std::string::npos) << msg;
  msg = error_of([&] { run("bad_k2", d + "harm: {fraction: 1.5}\n"); });
  EXPECT_NE(msg.find("fraction"), std::string::npos) << msg;
  msg = error_of([&] { run("bad_lambda", d + "harm: {lambda: 25}\n"); });
  EXPECT_NE(msg.find("lambda"), std::string::npos) << msg;
  msg = error_of([&] { run("bad_layer", d + "harm: {layers: edited, edited_layers: [7]}\n"); });
  EXPECT_NE(msg.find("layer 7"), std::string::npos) << msg;
  // An evaluation set among the rows (or asked for) is refused by the split rule.
  const std::string eval_rows = tiny_triplets("hv_data_eval", "advbench");
  msg = error_of([&] { run("bad_split", "data: {triplets: " + eval_rows + "}\n" + train_block()); });
  EXPECT_NE(msg.find("evaluation set"), std::string::npos) << msg;
  EXPECT_NE(msg.find("advbench"), std::string::npos) << msg;
  msg = error_of([&] { run("bad_split2", "data: {triplets: " + data + ", datasets: [gcg]}\n" + train_block()); });
  EXPECT_NE(msg.find("evaluation set"), std::string::npos) << msg;
  msg = error_of([&] { run("bad_missing", "data: {triplets: /nonexistent/dir}\n" + train_block()); });
  EXPECT_NE(msg.find("safedec data build"), std::string::npos) << msg;
  // Nothing half-written: no artifact in any refused run directory.
  for (const char* n : {"bad_k", "bad_lambda", "bad_layer", "bad_split"})
    EXPECT_FALSE(fs::exists(::testing::TempDir() + "/hv_run_" + std::string(n) + "/artifact")) << n;
}
