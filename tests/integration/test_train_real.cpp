// `safedec train` end to end on the real default model (SmolLM2-135M-Instruct), small versions of
// every pipeline: the run directory holds the resolved config, manifest, metrics, loss log/curve and a
// valid artifact that the decoding strategies load; a killed run resumed with --resume ends with the
// same artifact as an uninterrupted one; bad configs, evaluation sets and artifacts for another model
// are refused with exit 2 and a clear message. Harmful text never reaches the console.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "artifacts/typed.h"
#include "core/paths.h"
#include "core/sha256.h"
#include "decoding/generator.h"
#include "decoding/model_bundle.h"
#include "decoding/strategies/risk.h"
#include "decoding/strategy_registry.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace safedec;

namespace {

struct RunResult {
  int code = -1;
  std::string out;  // stdout + stderr
};

RunResult run(const std::string& args) {
  RunResult r;
  const std::string cmd = std::string(SAFEDEC_BUILD_DIR) + "/safedec " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string base_dir() {
  const std::string d = std::string(SAFEDEC_BUILD_DIR) + "/train_test";
  fs::create_directories(d);
  return d;
}

std::string write_file(const std::string& name, const std::string& text) {
  const std::string path = base_dir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "missing " << path;
  return json::parse(in);
}

const ModelBundle& bundle() {
  static ModelBundle b = load_model_bundle("smollm2-135m-instruct");
  return b;
}

// The few-step SafeDecoding expert (4 steps of 4 examples).
std::string safedecoding_config(int64_t steps, int64_t checkpoint_every) {
  std::ostringstream s;
  s << "pipeline: safedecoding_expert\nmodel: smollm2-135m-instruct\nseed: 3\n"
    << "data: {dataset: refusal_sft_vicuna, limit: 8}\n"
    << "lora: {r: 4, alpha: 16, dropout: 0.1, targets: [q_proj, v_proj]}\n"
    << "train: {max_steps: " << steps << ", batch_size: 2, micro_batch_size: 1, lr: 2.0e-3, checkpoint_every: "
    << checkpoint_every << ", max_seq_len: 96}\n";
  return s.str();
}

// A small deep-alignment file written for the test (benign-looking texts; the trainer only sees tokens).
std::string triplets_file() {
  std::ostringstream s;
  const char* refusals[] = {"I'm sorry, but I can't help with that request.", "I cannot assist with that."};
  for (int i = 0; i < 6; ++i)
    s << json{{"id", "safety/test/" + std::to_string(i)},
              {"kind", "safety"},
              {"instruction", "Explain step " + std::to_string(i) + " of the forbidden procedure."},
              {"harmful_answer", "Sure, here is step " + std::to_string(i) + ": first you take the parts and then"},
              {"refusal", refusals[i % 2]}}
             .dump()
      << "\n";
  for (int i = 0; i < 4; ++i)
    s << json{{"id", "anchor/test/" + std::to_string(i)},
              {"kind", "anchor"},
              {"instruction", "Name a colour number " + std::to_string(i) + "."},
              {"response", "Blue is a colour often seen in the sky."}}
             .dump()
      << "\n";
  return write_file("triplets.jsonl", s.str());
}

}  // namespace

TEST(TrainReal, SafeDecodingExpertWritesARunDirectoryAndALoadableAdapter) {
  const std::string cfg = write_file("sd.yaml", safedecoding_config(4, 2));
  const std::string out = base_dir() + "/sd_run";
  fs::remove_all(out);
  RunResult r = run("train --config " + cfg + " --out " + out + " --threads 2");
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* f : {"config.resolved.yaml", "manifest.json", "metrics.json", "train_log.jsonl", "loss_curve.svg",
                        "artifact/manifest.json", "artifact/adapter_config.json", "artifact/adapter_model.safetensors"})
    EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  const json m = read_json(out + "/metrics.json");
  EXPECT_EQ(m["train"]["steps"], 4);
  EXPECT_TRUE(m["nll_before"].is_number() && m["nll_after"].is_number());
  EXPECT_LT(m["nll_after"].get<double>(), m["nll_before"].get<double>()) << m.dump();
  const json cfg_json = read_json(out + "/artifact/adapter_config.json");
  EXPECT_EQ(cfg_json["peft_type"], "LORA");
  EXPECT_EQ(cfg_json["r"], 4);
  // The artifact records the model and the data it was trained on, and the strategies load it.
  const ArtifactDir a = open_artifact(out + "/artifact", ArtifactKind::Lora);
  EXPECT_EQ(a.manifest.model.vocab_size, bundle().model->config().vocab_size);
  EXPECT_FALSE(a.manifest.data_ids_sha256.empty());
  EXPECT_EQ(a.manifest.seed, 3u);
  MethodConfig mc = load_method_config("safedecoding");
  mc.safedecoding.expert = "lora";
  mc.safedecoding.adapter = out + "/artifact";
  MethodFactory f(mc, bundle());
  GenerationOptions go = bundle().generation_options();
  go.max_new_tokens = 4;
  Generator gen(go);
  auto strategy = f.make();
  torch::InferenceMode guard;
  auto res = gen.run(*strategy, {bundle().make_prompt("p", "What is the capital of France?")});
  EXPECT_FALSE(res[0].tokens.empty());
  // Another run into the same directory needs --resume (a finished run is then reported) or --force.
  r = run("train --config " + cfg + " --out " + out);
  EXPECT_EQ(r.code, 2) << r.out;
  r = run("train --config " + cfg + " --out " + out + " --resume");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("complete"), std::string::npos) << r.out;
}

TEST(TrainReal, KilledAndResumedRunEqualsAnUninterruptedOne) {
  const std::string cfg = write_file("sd_resume.yaml", safedecoding_config(4, 1));
  const std::string whole = base_dir() + "/sd_whole", parts = base_dir() + "/sd_parts";
  fs::remove_all(whole);
  fs::remove_all(parts);
  ASSERT_EQ(run("train --config " + cfg + " --out " + whole + " --threads 2").code, 0);
  RunResult first = run("train --config " + cfg + " --out " + parts + " --threads 2 --stop-after 2");
  ASSERT_EQ(first.code, 0) << first.out;
  EXPECT_FALSE(fs::exists(parts + "/artifact"));
  RunResult second = run("train --config " + cfg + " --out " + parts + " --threads 2 --resume");
  ASSERT_EQ(second.code, 0) << second.out;
  // The same factors, to fp32 tolerance (bit-identical here: same ops, same order, same seeds).
  auto a = read_tensors_f32(whole + "/artifact/adapter_model.safetensors");
  auto b = read_tensors_f32(parts + "/artifact/adapter_model.safetensors");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a)
    EXPECT_TRUE(torch::allclose(t, b.at(name), 1e-5, 1e-7)) << name << " differs by "
                                                            << (t - b.at(name)).abs().max().item<float>();
}

// NGSD's expert for the Qwen2.5-Coder-1.5B target: a full fine-tune of the separate 0.5B model of
// the same vocabulary. The 0.5B's layers move, its frozen embedding does not, and the artifact names
// the 0.5B as its base (the target only supplies the vocabulary check; its weights are released
// before the expert is loaded).
TEST(TrainReal, SeparateQwenExpertIsFullyFineTunedBesideTheTarget) {
  const std::string cfg = write_file(
      "ngsd_expert_qwen.yaml",
      "pipeline: ngsd_expert\nmodel: qwen2.5-coder-1.5b-instruct\ndata: {triplets: " + triplets_file() +
          ", limit_safety: 2, limit_anchor: 1}\nexpert: {kind: model, model: qwen2.5-coder-0.5b-instruct, "
          "freeze_embeddings: true}\ntrain: {max_steps: 2, batch_size: 3, lr: 5.0e-5, max_seq_len: 64}\n");
  const std::string out = base_dir() + "/ngsd_expert_qwen_run";
  fs::remove_all(out);
  RunResult r = run("train --config " + cfg + " --out " + out + " --threads 2");
  ASSERT_EQ(r.code, 0) << r.out;
  const json m = read_json(out + "/metrics.json");
  EXPECT_EQ(m["counts"]["safety_rows"], 2);
  EXPECT_EQ(m["counts"]["anchor_rows"], 1);
  EXPECT_EQ(m["train"]["steps"], 2);
  EXPECT_LT(m["nll_after"].get<double>(), m["nll_before"].get<double>()) << m.dump();
  const json man = read_json(out + "/artifact/manifest.json");
  EXPECT_EQ(man["kind"], "expert_weights");
  EXPECT_NE(man.dump().find("qwen2.5-coder-0.5b-instruct"), std::string::npos) << man.dump();

  LoadOptions fp32;
  fp32.weights = LoadOptions::Weights::Fp32;
  ModelBundle base = load_model_bundle("qwen2.5-coder-0.5b-instruct", fp32);
  const auto trained = read_tensors_f32(out + "/artifact/weights.safetensors");
  std::map<std::string, torch::Tensor> orig;
  for (auto& [name, t] : base.model->named_parameters()) orig[name] = t;
  for (const char* name : {"embed", "layers.0.wqkv", "layers.23.w_down"}) {
    ASSERT_TRUE(trained.count(name)) << name << " missing from the artifact";
    ASSERT_TRUE(orig.count(name)) << name << " missing from the base model";
  }
  EXPECT_TRUE(torch::equal(trained.at("embed"), orig.at("embed"))) << "freeze_embeddings moved the embedding";
  EXPECT_GT((trained.at("layers.0.wqkv") - orig.at("layers.0.wqkv")).abs().max().item<float>(), 0.0f);
  EXPECT_GT((trained.at("layers.23.w_down") - orig.at("layers.23.w_down")).abs().max().item<float>(), 0.0f);
  fs::remove_all(out);  // 6 GB of checkpoints (weights + AdamW moments) and artifact
}

TEST(TrainReal, NgsdExpertRiskProbeAndGateEndToEnd) {
  const std::string triplets = triplets_file();
  const std::string expert_cfg = write_file(
      "ngsd_expert.yaml", "pipeline: ngsd_expert\nmodel: smollm2-135m-instruct\ndata: {triplets: " + triplets +
                              "}\nexpert: {kind: lora}\nlora: {r: 4, alpha: 8, targets: [q_proj, v_proj, down_proj]}\n"
                              "train: {max_steps: 3, batch_size: 4, lr: 1.0e-3, max_seq_len: 128}\n");
  const std::string expert_out = base_dir() + "/ngsd_expert_run";
  fs::remove_all(expert_out);
  RunResult r = run("train --config " + expert_cfg + " --out " + expert_out + " --threads 2");
  ASSERT_EQ(r.code, 0) << r.out;
  const json em = read_json(expert_out + "/metrics.json");
  EXPECT_EQ(em["counts"]["safety_rows"], 6);
  EXPECT_EQ(em["counts"]["anchor_rows"], 4);
  EXPECT_GT(em["augmented_safety_examples"].get<int>(), 0);

  const std::string probe_cfg = write_file(
      "probe.yaml",
      "pipeline: risk_probe\nmodel: smollm2-135m-instruct\ndata: {harmful: [harmfulqa, catqa], benign: "
      "[benign_instructions, alpaca_eval_train], limit_per_dataset: 10, holdout: 0.25, batch_size: 10, augment: "
      "wrappers}\n"
      "train: {epochs: 50, batch_size: 64, lr: 1.0e-2, schedule: constant, clip_grad_norm: 0}\n");
  const std::string probe_out = base_dir() + "/probe_run";
  fs::remove_all(probe_out);
  r = run("train --config " + probe_cfg + " --out " + probe_out + " --threads 2");
  ASSERT_EQ(r.code, 0) << r.out;
  const json pm = read_json(probe_out + "/metrics.json");
  EXPECT_EQ(pm["holdout"]["n"], 10);
  // One wrapped copy per prompt; the held-out prompts' copies are scored apart, never trained on.
  EXPECT_EQ(pm["holdout_wrapped"]["n"], 10) << pm.dump();
  EXPECT_EQ(pm["train_split"]["n"], 60) << pm.dump();
  // Harmful questions and benign instructions are far apart in the model's hidden state.
  EXPECT_GT(pm["holdout"]["auroc"].get<double>(), 0.8) << pm.dump();
  RiskProbe probe = load_risk_probe(probe_out + "/artifact", bundle().model->config());
  EXPECT_EQ(probe.weight.numel(), bundle().model->config().hidden_size);
  EXPECT_EQ(probe.layer, -1);
  EXPECT_EQ(probe.pooling, "last");

  // The same probe read at a middle layer over the end of the user text (probe.pooling: user_mean).
  const std::string mean_cfg = write_file(
      "probe_user_mean.yaml",
      "pipeline: risk_probe\nmodel: smollm2-135m-instruct\ndata: {harmful: [harmfulqa, catqa], benign: "
      "[benign_instructions, alpaca_eval_train], limit_per_dataset: 10, holdout: 0.25, batch_size: 10, augment: "
      "wrappers}\nprobe: {layer: 15, pooling: user_mean, window: 64}\n"
      "train: {epochs: 50, batch_size: 64, lr: 1.0e-2, schedule: constant, clip_grad_norm: 0}\n");
  const std::string mean_out = base_dir() + "/probe_user_mean_run";
  fs::remove_all(mean_out);
  r = run("train --config " + mean_cfg + " --out " + mean_out + " --threads 2");
  ASSERT_EQ(r.code, 0) << r.out;
  const json mm = read_json(mean_out + "/metrics.json");
  EXPECT_GT(mm["holdout"]["auroc"].get<double>(), 0.8) << mm.dump();
  const RiskProbe mean_probe = load_risk_probe(mean_out + "/artifact", bundle().model->config());
  EXPECT_EQ(mean_probe.layer, 15);
  EXPECT_EQ(mean_probe.pooling, "user_mean");
  EXPECT_EQ(mean_probe.window, 64);
  // A layer the model lacks is refused before any feature is computed.
  const std::string bad_layer_cfg = write_file(
      "probe_bad_layer.yaml", "pipeline: risk_probe\nmodel: smollm2-135m-instruct\ndata: {harmful: [catqa], benign: "
                              "[benign_instructions], limit_per_dataset: 4}\nprobe: {layer: 30}\n");
  r = run("train --config " + bad_layer_cfg + " --out " + base_dir() + "/probe_bad_layer --threads 2");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("probe.layer 30 is not a layer of"), std::string::npos) << r.out;

  const std::string gate_cfg = write_file(
      "gate.yaml", "pipeline: ngsd_gate\nmodel: smollm2-135m-instruct\ndata: {benign: [benign_instructions], harmful: "
                   "[catqa], limit_per_dataset: 4, max_new_tokens: 6, batch_size: 4}\ngate: {target_fire_rate: 0.1}\n"
                   "ngsd: {expert: lora, expert_adapter: " +
                       expert_out + "/artifact, risk: probe, probe: " + probe_out + "/artifact}\n");
  const std::string gate_out = base_dir() + "/gate_run";
  fs::remove_all(gate_out);
  r = run("train --config " + gate_cfg + " --out " + gate_out + " --threads 2");
  ASSERT_EQ(r.code, 0) << r.out;
  const json gm = read_json(gate_out + "/metrics.json");
  // The default objective bounds the share of benign tokens that a spike changes (at the probe's alpha).
  EXPECT_EQ(gm["objective"], "flip_rate");
  EXPECT_LE(gm["benign_flip_rate"].get<double>(), 0.1 + 1e-9) << gm.dump();
  EXPECT_LE(gm["benign_flip_rate"].get<double>(), gm["benign_fire_rate"].get<double>()) << gm.dump();
  EXPECT_LE(gm["harmful_flip_rate"].get<double>(), gm["harmful_fire_rate"].get<double>()) << gm.dump();
  // keep_harmful 1 (the default) keeps the lowest admissible theta.
  EXPECT_DOUBLE_EQ(gm["keep_harmful"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(gm["theta"].get<double>(), gm["theta_lowest_admissible"].get<double>()) << gm.dump();
  const json gman = read_json(gate_out + "/artifact/manifest.json");
  EXPECT_EQ(gman["params"]["risk"], "probe") << gman.dump();
  EXPECT_TRUE(fs::exists(gate_out + "/gate_calibration.svg"));
  const GateCalibration g = load_gate_calibration(gate_out + "/artifact", bundle().model->config());
  EXPECT_DOUBLE_EQ(g.theta, gm["theta"].get<double>());

  // NGSD decodes with the trained expert, the probe and the calibrated gate.
  MethodConfig mc = load_method_config("ngsd");
  mc.ngsd.expert = "lora";
  mc.ngsd.expert_adapter = expert_out + "/artifact";
  mc.ngsd.risk = "probe";
  mc.ngsd.probe = probe_out + "/artifact";
  mc.ngsd.gate = gate_out + "/artifact";
  MethodFactory f(mc, bundle());
  EXPECT_NE(f.describe().find("gate"), std::string::npos) << f.describe();
  GenerationOptions go = bundle().generation_options();
  go.max_new_tokens = 4;
  Generator gen(go);
  auto strategy = f.make();
  torch::InferenceMode guard;
  auto res = gen.run(*strategy, {bundle().make_prompt("p", "Name a fruit.")});
  EXPECT_FALSE(res[0].tokens.empty());
  // NGSD with the user_mean probe: the estimator runs its own forward (no prefill state needed), and
  // its alpha for a prompt is the one the probe gives that prompt's features.
  mc.ngsd.probe = mean_out + "/artifact";
  MethodFactory fm(mc, bundle());
  auto mean_strategy = fm.make();
  auto mean_res = gen.run(*mean_strategy, {bundle().make_prompt("p", "Name a fruit.")});
  EXPECT_FALSE(mean_res[0].tokens.empty());
  const StrategyPrompt fruit = bundle().make_prompt("p", "Name a fruit.");
  auto est = ProbeRisk::load(mean_out + "/artifact", StrategyEnv{bundle().model, bundle().pad_id()})
                 ->estimate({fruit}, torch::Tensor());
  const torch::Tensor feats = probe_features(*bundle().model, {fruit}, {15, "user_mean", 64}, bundle().pad_id());
  EXPECT_NEAR(est[0].risk,
              10.0 * torch::sigmoid(feats[0].dot(mean_probe.weight) + mean_probe.bias[0]).item<double>(), 1e-4);
  // No training text reaches the console.
  EXPECT_EQ(r.out.find("forbidden procedure"), std::string::npos);
}

// A small ACD anchor file written for the test (benign texts standing in for the three subsets).
std::string acd_anchor_file(bool with_ha) {
  std::ostringstream s;
  for (int i = 0; i < 4; ++i) {
    s << json{{"id", "hr/" + std::to_string(i)},
              {"subset", "D_HR"},
              {"instruction", "Describe the forbidden procedure number " + std::to_string(i) + "."},
              {"response", "I'm sorry, but I can't help with that."}}
             .dump()
      << "\n";
    if (with_ha)
      s << json{{"id", "ha/" + std::to_string(i)},
                {"subset", "D_HA"},
                {"instruction", "Describe the forbidden procedure number " + std::to_string(i) + "."},
                {"response", "Sure, here is how: first take the parts, then join them."}}
               .dump()
        << "\n";
    s << json{{"id", "s/" + std::to_string(i)},
              {"subset", "D_S"},
              {"instruction", "Name a colour number " + std::to_string(i) + "."},
              {"response", "Blue is a colour often seen in the sky."}}
             .dump()
      << "\n";
  }
  return write_file(with_ha ? "acd_anchors.jsonl" : "acd_anchors_no_ha.jsonl", s.str());
}

TEST(TrainReal, AcdSoftPromptsTrainOnTheFrozenModelAndDecode) {
  const std::string anchors = acd_anchor_file(true);
  const std::string cfg =
      write_file("acd_prompts.yaml", "pipeline: acd_prompts\nmodel: smollm2-135m-instruct\nseed: 1\ndata: {anchors: " +
                                         anchors + ", max_response_tokens: 24}\n"
                                                   "train: {max_steps: 4, batch_size: 12, lr: 1.0e-2, schedule: "
                                                   "constant, clip_grad_norm: 1.0, max_seq_len: 256}\n");
  const std::string out = base_dir() + "/acd_prompts_run";
  fs::remove_all(out);
  RunResult r = run("train --config " + cfg + " --out " + out + " --threads 2");
  ASSERT_EQ(r.code, 0) << r.out;
  const json m = read_json(out + "/metrics.json");
  for (const char* tag : {"sp", "ap"}) {
    ASSERT_TRUE(m.contains(tag)) << m.dump();
    EXPECT_EQ(m[tag]["train"]["steps"], 4) << m.dump();
    // Four full-batch steps on 12 examples at lr 1e-2: the prompt's loss falls.
    EXPECT_LT(m[tag]["train"]["loss_last"].get<double>(), m[tag]["train"]["loss_first"].get<double>()) << m.dump();
  }
  const ModelConfig& mc = bundle().model->config();
  SoftPrompts sp = load_soft_prompts(out + "/artifact", mc);
  EXPECT_EQ(sp.sp.size(1), mc.hidden_size);
  EXPECT_EQ(sp.ap.size(1), mc.hidden_size);
  EXPECT_TRUE(torch::isfinite(sp.sp).all().item<bool>());
  // The trained prompts moved away from their initial embeddings; the model itself is frozen.
  auto ids = bundle().tokenizer->encode(kAcdSafePrompt, /*add_special=*/false);
  ASSERT_EQ(static_cast<int64_t>(ids.size()), sp.sp.size(0));
  torch::NoGradGuard ng;
  auto init = bundle().model->embed(torch::tensor(std::vector<int64_t>(ids.begin(), ids.end())).view({1, -1}))[0];
  EXPECT_GT((sp.sp - init.to(torch::kFloat32)).abs().max().item<double>(), 1e-4);
  // ACD decodes with the trained prompts.
  MethodConfig acd = load_method_config("acd");
  acd.acd.prompts = "soft";  // `prompts: trained` in YAML
  acd.acd.soft_prompts = out + "/artifact";
  MethodFactory f(acd, bundle());
  GenerationOptions go = bundle().generation_options();
  go.max_new_tokens = 4;
  Generator gen(go);
  auto strategy = f.make();
  torch::InferenceMode guard;
  auto res = gen.run(*strategy, {bundle().make_prompt("p", "Name a fruit.")});
  EXPECT_FALSE(res[0].tokens.empty());
  EXPECT_EQ(r.out.find("forbidden procedure"), std::string::npos);
  // limit_per_subset: a seeded, balanced sample of each subset; the counts say what was used and what
  // was available.
  const std::string small_cfg = write_file(
      "acd_prompts_small.yaml", "pipeline: acd_prompts\nmodel: smollm2-135m-instruct\nseed: 1\ndata: {anchors: " +
                                    anchors + ", max_response_tokens: 8, limit_per_subset: 2}\n"
                                              "train: {max_steps: 1, batch_size: 6, lr: 1.0e-3, max_seq_len: 256}\n");
  const std::string small_out = base_dir() + "/acd_prompts_small_run";
  fs::remove_all(small_out);
  r = run("train --config " + small_cfg + " --out " + small_out + " --threads 2");
  ASSERT_EQ(r.code, 0) << r.out;
  const json counts = read_json(small_out + "/metrics.json")["counts"];
  for (const char* s : {"D_HR", "D_HA", "D_S"}) {
    EXPECT_EQ(counts[s], 2) << counts.dump();
    EXPECT_EQ(counts[std::string(s) + "_available"], 4) << counts.dump();
  }
  // An anchor set without D_HA is refused, naming the subset.
  const std::string bad = write_file(
      "acd_bad.yaml", "pipeline: acd_prompts\nmodel: smollm2-135m-instruct\ndata: {anchors: " + acd_anchor_file(false) +
                          "}\ntrain: {max_steps: 1}\n");
  r = run("train --config " + bad + " --out " + base_dir() + "/acd_bad_run");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("D_HA"), std::string::npos) << r.out;
}

TEST(TrainReal, BadInputIsRefusedWithExit2) {
  // Unknown key with its position.
  std::string cfg = write_file("bad_key.yaml", "pipeline: safedecoding_expert\ntrain: {epochz: 2}\n");
  RunResult r = run("train --config " + cfg + " --out " + base_dir() + "/bad1");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("bad_key.yaml:2:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("epochz"), std::string::npos) << r.out;
  // Malformed YAML with line:column.
  cfg = write_file("bad_yaml.yaml", "pipeline: safedecoding_expert\ntrain: {epochs: [1\n");
  r = run("train --config " + cfg + " --out " + base_dir() + "/bad2");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("bad_yaml.yaml:"), std::string::npos) << r.out;
  // A value out of range.
  cfg = write_file("bad_range.yaml", "pipeline: safedecoding_expert\ntrain: {lr: 5}\n");
  r = run("train --config " + cfg + " --out " + base_dir() + "/bad3");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("`lr` must be in"), std::string::npos) << r.out;
  // Unknown pipeline lists the known ones.
  cfg = write_file("bad_pipeline.yaml", "pipeline: magic\n");
  r = run("train --config " + cfg + " --out " + base_dir() + "/bad4");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("risk_probe"), std::string::npos) << r.out;
  // An evaluation set as training data is refused by the split rule.
  cfg = write_file("bad_split.yaml", "pipeline: safedecoding_expert\ndata: {dataset: advbench}\n");
  r = run("train --config " + cfg + " --out " + base_dir() + "/bad5");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("advbench"), std::string::npos) << r.out;
  // A bad line in a data file is named.
  const std::string bad_data = write_file("bad_triplets.jsonl", "{\"id\": \"a\", \"kind\": \"safety\"\n");
  cfg = write_file("bad_data.yaml", "pipeline: ngsd_expert\ndata: {triplets: " + bad_data + "}\n");
  r = run("train --config " + cfg + " --out " + base_dir() + "/bad6");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("bad_triplets.jsonl"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("line 1"), std::string::npos) << r.out;
}

TEST(TrainReal, AnArtifactForAnotherModelIsRefusedNamingBoth) {
  // A LoRA artifact recorded for another model (its manifest names other sizes).
  const std::string dir = base_dir() + "/foreign_lora";
  fs::remove_all(dir);
  ModelConfig other = bundle().model->config();
  other.name = "some-other-model";
  other.hidden_size = 64;
  ArtifactManifest m;
  m.kind = ArtifactKind::Lora;
  m.model = ModelIdentity::of(other);
  ArtifactWriter w(dir, m);
  LoraAdapter::Options o;
  o.rank = 2;
  o.targets = {"q_proj"};
  LoraAdapter adapter(bundle().model->config(), o);
  write_lora_adapter(w, adapter, "some-other-model");
  w.commit();
  try {
    load_lora_adapter(dir, bundle().model->config());
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("some-other-model"), std::string::npos) << msg;
    EXPECT_NE(msg.find(bundle().model->config().name), std::string::npos) << msg;
  }
  // A changed artifact file is refused (its sha256 no longer matches the manifest).
  std::ofstream(dir + "/adapter_config.json", std::ios::app) << " ";
  EXPECT_THROW(open_artifact(dir, ArtifactKind::Lora), Error);
}
