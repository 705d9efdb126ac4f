// `safedec export` on the real SmolLM2-135M: the exported files load in their target tools and agree
// with safedec, and bad input exits 2 leaving nothing behind.
//   peft:            a seeded LoRA adapter (random non-zero B on all seven linears of every layer)
//                    exported to a PEFT directory; tests/oracle/check_peft_export.py loads the GGUF in
//                    transformers, wraps it with peft.PeftModel and writes base and adapted logits;
//                    both agree with safedec's within relative error 1e-4 (the project's golden bound).
//   control-vector:  an ICV artifact exported to GGUF, re-read by safedec's GgufFile and by the `gguf`
//                    Python package: direction.N = -scale * icv[N] for N = 1..L-1, no direction.0; the
//                    direction moves the state the way safedec's own steering does (away from the ICV,
//                    which is h(unsafe) - h(safe)).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "artifacts/artifact.h"
#include "artifacts/harm_vector.h"
#include "artifacts/typed.h"
#include "core/error.h"
#include "core/paths.h"
#include "export/bundle.h"
#include "io/gguf.h"
#include "kernels/ops.h"
#include "model/causal_lm.h"
#include "model/lora.h"
#include "train/icv.h"

using namespace safedec;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const bool kSingleThread = [] {
  torch::set_num_threads(1);  // a shared machine: avoid OpenMP spin-waiting beside builds
  return true;
}();

struct RunResult {
  int code = -1;
  std::string out;
};

RunResult sh(const std::string& cmd) {
  RunResult r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

RunResult safedec_cli(const std::string& args) { return sh(std::string(SAFEDEC_BUILD_DIR) + "/safedec " + args); }

std::string python() {
  const std::string py = std::string(SAFEDEC_SOURCE_DIR) + "/.venv/bin/python";
  if (!fs::exists(py)) throw std::runtime_error("missing the project venv " + py + ": run scripts/setup.sh");
  return py;
}

std::string smollm2_path() { return require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf"); }
std::string tiny_llama() { return std::string(SAFEDEC_SOURCE_DIR) + "/tests/oracle/golden/model_tiny_llama.gguf"; }

// A fresh scratch directory under the build tree.
std::string scratch(const std::string& name) {
  const std::string d = std::string(SAFEDEC_BUILD_DIR) + "/export_test_" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Entries of a directory (to show nothing half-written was left).
std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

double rel_err(const torch::Tensor& a, const torch::Tensor& b) { return ((a - b).norm() / b.norm()).item<double>(); }

std::shared_ptr<CausalLM> smollm2() {
  static std::shared_ptr<CausalLM> lm = CausalLM::load(smollm2_path());
  return lm;
}

// A rank-4 adapter on q/k/v/o/gate/up/down of every layer: PEFT's A initialisation and a seeded
// random non-zero B, so the adapter changes the logits.
std::shared_ptr<LoraAdapter> random_adapter(const ModelConfig& cfg) {
  LoraAdapter::Options opt;
  opt.rank = 4;
  opt.alpha = 8.0;
  opt.targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  opt.seed = 1234;
  auto adapter = std::make_shared<LoraAdapter>(cfg, opt);
  torch::manual_seed(4321);
  for (int64_t l = 0; l < cfg.n_layers; ++l)
    for (const auto& t : opt.targets) {
      LoraFactors* f = adapter->find(l, linear_kind_from_name(t));
      EXPECT_NE(f, nullptr);
      if (f) f->b = torch::randn(f->b.sizes()) * 0.05;
    }
  return adapter;
}

std::string write_lora_artifact(const std::string& dir, const LoraAdapter& adapter, const ModelConfig& cfg) {
  ArtifactManifest m;
  m.kind = ArtifactKind::Lora;
  m.model = ModelIdentity::of(cfg);
  ArtifactWriter w(dir, m, /*overwrite=*/true);
  write_lora_adapter(w, adapter, "smollm2-135m-instruct");
  return w.commit();
}

// Logits of the last n positions of one prompt, with or without the adapter: [n, V].
torch::Tensor last_logits(const CausalLM& lm, const std::vector<int64_t>& ids, int64_t n,
                          const std::shared_ptr<LoraAdapter>& adapter) {
  c10::InferenceMode guard;
  auto cache = lm.new_cache(1, static_cast<int64_t>(ids.size()));
  ForwardInput in;
  in.ids = torch::tensor(ids, torch::kInt64).view({1, -1});
  in.logits_last = n;
  ForwardHooks hooks;
  if (adapter) hooks.loras.push_back({adapter, {}});
  return lm.forward(in, cache, &hooks)[0].clone();
}

// Three chat prompts of the model golden file (token ids, 37-39 tokens).
std::vector<std::vector<int64_t>> prompts() {
  std::ifstream in(std::string(SAFEDEC_SOURCE_DIR) + "/tests/oracle/golden/model_smollm2.json");
  if (!in) throw std::runtime_error("missing tests/oracle/golden/model_smollm2.json");
  json j;
  in >> j;
  std::vector<std::vector<int64_t>> out;
  for (size_t i = 0; i < 3; ++i) out.push_back(j["logits"][i]["input_ids"].get<std::vector<int64_t>>());
  return out;
}

}  // namespace

TEST(ExportPeft, PeftLoadsTheExportAndMatchesSafedecLogits) {
  const std::string dir = scratch("peft");
  const auto& lm = *smollm2();
  auto adapter = random_adapter(lm.config());
  const std::string art = write_lora_artifact(dir + "/lora_artifact", *adapter, lm.config());

  const std::string out = dir + "/peft";
  auto r = safedec_cli("export peft --adapter " + art + " --out " + out +
                       " --base-model-name-or-path HuggingFaceTB/SmolLM2-135M-Instruct");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("wrote " + out), std::string::npos) << r.out;
  // A plain PEFT directory: the two PEFT files and nothing else (no safedec manifest, no temp names).
  EXPECT_EQ(listing(out), (std::vector<std::string>{"adapter_config.json", "adapter_model.safetensors"}));
  EXPECT_EQ(listing(dir), (std::vector<std::string>{"lora_artifact", "peft"}));
  json cfg;
  std::ifstream(out + "/adapter_config.json") >> cfg;
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["task_type"], "CAUSAL_LM");
  EXPECT_EQ(cfg["r"], 4);
  EXPECT_EQ(cfg["lora_alpha"], 8.0);
  EXPECT_EQ(cfg["base_model_name_or_path"], "HuggingFaceTB/SmolLM2-135M-Instruct");
  EXPECT_EQ(cfg["target_modules"].size(), 7u);

  // safedec reads the export back as the same adapter.
  auto back = load_lora_adapter(out, lm.config());
  ASSERT_EQ(back->named_parameters().size(), adapter->named_parameters().size());
  for (const auto& [name, t] : adapter->named_parameters()) {
    bool found = false;
    for (const auto& [n2, t2] : back->named_parameters())
      if (n2 == name) {
        found = true;
        EXPECT_TRUE(torch::equal(t, t2)) << name;
      }
    EXPECT_TRUE(found) << name;
  }

  const auto ids = prompts();
  const int64_t last = 8;
  {
    json j = ids;
    std::ofstream(dir + "/prompts.json") << j.dump();
  }
  auto py = sh(python() + " " + SAFEDEC_SOURCE_DIR + "/tests/oracle/check_peft_export.py --gguf " + smollm2_path() +
               " --adapter " + out + " --prompts " + dir + "/prompts.json --last " + std::to_string(last) +
               " --out " + dir + "/hf_logits.bin");
  ASSERT_EQ(py.code, 0) << py.out;
  std::ifstream bin(dir + "/hf_logits.bin", std::ios::binary);
  const int64_t V = lm.config().vocab_size;
  for (size_t p = 0; p < ids.size(); ++p) {
    torch::Tensor hf_base = torch::empty({last, V}), hf_lora = torch::empty({last, V});
    bin.read(reinterpret_cast<char*>(hf_base.data_ptr<float>()), last * V * 4);
    bin.read(reinterpret_cast<char*>(hf_lora.data_ptr<float>()), last * V * 4);
    ASSERT_TRUE(bin.good()) << "hf_logits.bin is shorter than " << ids.size() << " prompts";
    const torch::Tensor ours_base = last_logits(lm, ids[p], last, nullptr);
    const torch::Tensor ours_lora = last_logits(lm, ids[p], last, adapter);
    const double effect = rel_err(ours_lora, ours_base);
    const double err_base = rel_err(ours_base, hf_base), err_lora = rel_err(ours_lora, hf_lora);
    const double max_abs = (ours_lora - hf_lora).abs().max().item<double>();
    std::printf("  prompt %zu (%zu tokens): adapter effect %.3e, base rel err %.2e, PEFT rel err %.2e "
                "(max abs %.2e)\n", p, ids[p].size(), effect, err_base, err_lora, max_abs);
    EXPECT_GT(effect, 1e-2) << "the test adapter must change the logits";
    EXPECT_LE(err_base, 1e-4);
    EXPECT_LE(err_lora, 1e-4);
    EXPECT_TRUE(torch::equal(ours_lora.argmax(-1), hf_lora.argmax(-1)));
  }
}

TEST(ExportPeft, BadInputExitsTwoAndWritesNothing) {
  const std::string dir = scratch("peft_bad");
  const auto& cfg = smollm2()->config();
  auto adapter = random_adapter(cfg);
  const std::string art = write_lora_artifact(dir + "/lora_artifact", *adapter, cfg);

  // An existing output directory is refused (and left as it was) unless --force.
  fs::create_directories(dir + "/exists");
  std::ofstream(dir + "/exists/keep.txt") << "mine";
  auto r = safedec_cli("export peft --adapter " + art + " --out " + dir + "/exists");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("already exists"), std::string::npos) << r.out;
  EXPECT_EQ(listing(dir + "/exists"), std::vector<std::string>{"keep.txt"});
  r = safedec_cli("export peft --adapter " + art + " --out " + dir + "/exists --force");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(listing(dir + "/exists"),
            (std::vector<std::string>{"adapter_config.json", "adapter_model.safetensors"}));

  // An artifact made for another model: both models named, nothing written.
  r = safedec_cli("export peft --adapter " + art + " --model " + tiny_llama() + " --out " + dir + "/other");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("was made for the model"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("hidden 576"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir + "/other"));

  // Another kind of artifact (an ICV) is not a LoRA adapter.
  save_icv(dir + "/icv", torch::zeros({cfg.n_layers, cfg.hidden_size}), cfg, {{"model", "smollm2-135m-instruct"}},
           false);
  r = safedec_cli("export peft --adapter " + dir + "/icv --out " + dir + "/from_icv");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_FALSE(fs::exists(dir + "/from_icv"));
  EXPECT_EQ(listing(dir), (std::vector<std::string>{"exists", "icv", "lora_artifact"}));
}

TEST(ExportControlVector, GgufPackageAndSafedecReadTheDirections) {
  const std::string dir = scratch("cvec");
  const auto& cfg = smollm2()->config();
  torch::manual_seed(99);
  const torch::Tensor icv = torch::randn({cfg.n_layers, cfg.hidden_size});
  const std::string art = save_icv(dir + "/icv", icv, cfg, {{"model", "smollm2-135m-instruct"}}, false);
  const std::string out = dir + "/safety.gguf";
  auto r = safedec_cli("export control-vector --icv " + art + " --out " + out + " --scale 0.5");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("only the ADDITIVE form"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("layer 0's direction is dropped"), std::string::npos) << r.out;

  // safedec's own GGUF reader.
  auto f = GgufFile::open(out);
  EXPECT_EQ(f->get_string("general.architecture", ""), "controlvector");
  EXPECT_EQ(f->get_string("controlvector.model_hint", ""), "llama");
  EXPECT_EQ(static_cast<int64_t>(f->tensors().size()), cfg.n_layers - 1);
  EXPECT_EQ(f->find_tensor("direction.0"), nullptr);
  for (int64_t l = 1; l < cfg.n_layers; ++l) {
    const auto* t = f->find_tensor("direction." + std::to_string(l));
    ASSERT_NE(t, nullptr) << "direction." << l;
    ASSERT_EQ(t->type, GgmlType::F32);
    ASSERT_EQ(t->n_elements(), cfg.hidden_size);
    torch::Tensor got = torch::from_blob(const_cast<void*>(static_cast<const void*>(t->data)), {cfg.hidden_size},
                                         torch::kFloat32);
    EXPECT_TRUE(torch::allclose(got, icv[l] * -0.5, 0.0, 1e-6)) << "direction." << l;
    // Same sign as safedec's steering of that layer: the code form's displacement of a hidden state
    // has a positive dot product with the exported direction (and a negative one with the ICV).
    const torch::Tensor x = torch::randn({4, cfg.hidden_size});
    const torch::Tensor moved = steer_hidden(x, icv[l], 0.12, SteerForm::kCode) - x;
    EXPECT_TRUE((moved.matmul(got) > 0).all().item<bool>()) << "direction." << l << " points against safedec's steering";
  }

  // The gguf Python package (what llama.cpp's tooling uses).
  const std::string script =
      "import gguf, json, sys\n"
      "r = gguf.GGUFReader(sys.argv[1])\n"
      "out = {'arch': r.fields['general.architecture'].contents(),\n"
      "       'hint': r.fields['controlvector.model_hint'].contents(),\n"
      "       'layers': int(r.fields['controlvector.layer_count'].contents()),\n"
      "       'tensors': {t.name: [t.tensor_type.name, [int(x) for x in t.shape], [float(v) for v in t.data]]\n"
      "                   for t in r.tensors}}\n"
      "json.dump(out, open(sys.argv[2], 'w'))\n";
  std::ofstream(dir + "/read.py") << script;
  auto py = sh(python() + " " + dir + "/read.py " + out + " " + dir + "/read.json");
  ASSERT_EQ(py.code, 0) << py.out;
  json j;
  std::ifstream(dir + "/read.json") >> j;
  EXPECT_EQ(j["arch"], "controlvector");
  EXPECT_EQ(j["hint"], "llama");
  EXPECT_EQ(j["layers"], cfg.n_layers);
  ASSERT_EQ(static_cast<int64_t>(j["tensors"].size()), cfg.n_layers - 1);
  for (int64_t l = 1; l < cfg.n_layers; ++l) {
    const auto& t = j["tensors"]["direction." + std::to_string(l)];
    ASSERT_TRUE(t.is_array()) << "direction." << l;
    EXPECT_EQ(t[0], "F32");
    EXPECT_EQ(t[1], json::array({cfg.hidden_size}));
    const auto v = t[2].get<std::vector<float>>();
    EXPECT_TRUE(torch::allclose(torch::tensor(v), icv[l] * -0.5, 0.0, 1e-6)) << "direction." << l;
  }
}

TEST(ExportControlVector, BadInputExitsTwoAndWritesNothing) {
  const std::string dir = scratch("cvec_bad");
  const auto& cfg = smollm2()->config();
  const std::string art = save_icv(dir + "/icv", torch::ones({cfg.n_layers, cfg.hidden_size}), cfg,
                                   {{"model", "smollm2-135m-instruct"}}, false);
  // An ICV for another model.
  auto r = safedec_cli("export control-vector --icv " + art + " --model " + tiny_llama() + " --out " + dir + "/a.gguf");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("was made for the model"), std::string::npos) << r.out;
  // An existing output file.
  std::ofstream(dir + "/b.gguf") << "keep";
  r = safedec_cli("export control-vector --icv " + art + " --out " + dir + "/b.gguf");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("already exists"), std::string::npos) << r.out;
  EXPECT_EQ(fs::file_size(dir + "/b.gguf"), 4u);
  // A LoRA adapter cannot be expressed as a control vector.
  const std::string lora = write_lora_artifact(dir + "/lora", *random_adapter(cfg), cfg);
  r = safedec_cli("export control-vector --icv " + lora + " --out " + dir + "/c.gguf");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_EQ(listing(dir), (std::vector<std::string>{"b.gguf", "icv", "lora"}));
  // `safedec export --help` lists the targets.
  r = safedec_cli("export --help");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("peft"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("control-vector"), std::string::npos) << r.out;
}

namespace {

// A small harm vector on two tensors of SmolLM2 (random, seeded): enough to move the logits.
std::string write_harm_artifact(const std::string& dir, const ModelConfig& cfg) {
  const auto lm = smollm2();
  std::map<std::string, torch::Tensor> shapes;
  for (const auto& [name, t] : lm->named_parameters()) shapes[name] = t;
  torch::manual_seed(777);
  HarmVector h;
  h.lambda = 3.0;
  for (const char* name : {"layers.3.wqkv", "layers.17.w_down"}) h.tau[name] = torch::randn(shapes.at(name).sizes()) * 0.003;
  ArtifactManifest m;
  m.kind = ArtifactKind::HarmVector;
  m.model = ModelIdentity::of(cfg);
  ArtifactWriter w(dir, m, /*overwrite=*/true);
  write_harm_vector(w, h);
  return w.commit();
}

}  // namespace

TEST(ExportHf, TransformersLoadsTheHdrEditedModelAndItsTokenizer) {
  const std::string dir = scratch("hf");
  const std::string golden_tok = std::string(SAFEDEC_SOURCE_DIR) + "/tests/oracle/golden/tokenizer_smollm2.json";
  const auto& cfg = smollm2()->config();
  const std::string hdr = write_harm_artifact(dir + "/harm", cfg);
  const std::string out = dir + "/model";
  // 200 MiB shards: the fp32 model (~540 MB, tied embeddings) needs an index.
  auto r = safedec_cli("export hf --model smollm2-135m-instruct --hdr " + hdr + " --hdr-lambda 3 --out " + out +
                       " --max-shard-mb 200");
  ASSERT_EQ(r.code, 0) << r.out;
  ASSERT_TRUE(fs::exists(out + "/model.safetensors.index.json")) << r.out;
  json index;
  std::ifstream(out + "/model.safetensors.index.json") >> index;
  std::set<std::string> shard_files;
  for (const auto& [name, file] : index["weight_map"].items()) shard_files.insert(file.get<std::string>());
  EXPECT_GE(shard_files.size(), 2u);
  EXPECT_EQ(index["weight_map"].size(), 2u + 9u * static_cast<size_t>(cfg.n_layers));  // embed, norm, 9 per layer
  for (const auto& f : shard_files) EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  for (const char* f : {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                        "special_tokens_map.json"})
    EXPECT_TRUE(fs::exists(out + "/" + std::string(f))) << f;
  EXPECT_EQ(listing(dir), (std::vector<std::string>{"harm", "model"}));

  // The same edit in safedec: a fresh copy of the model with the harm vector applied.
  auto edited = CausalLM::load(smollm2_path());
  apply_harm_vector(*edited, hdr, 3.0);
  // safedec reads the export back as the same model.
  auto back = CausalLM::load(out);
  const auto ids = prompts();
  const int64_t last = 8;
  {
    json j = ids;
    std::ofstream(dir + "/prompts.json") << j.dump();
  }
  auto py = sh(python() + " " + SAFEDEC_SOURCE_DIR + "/tests/oracle/check_hf_export.py --model-dir " + out +
               " --prompts " + dir + "/prompts.json --last " + std::to_string(last) + " --logits-out " + dir +
               "/hf_logits.bin --tokenizer-golden " + golden_tok + " --tokenizer-out " + dir + "/hf_tok.json");
  ASSERT_EQ(py.code, 0) << py.out;
  std::ifstream bin(dir + "/hf_logits.bin", std::ios::binary);
  const int64_t V = cfg.vocab_size;
  for (size_t p = 0; p < ids.size(); ++p) {
    torch::Tensor hf = torch::empty({last, V});
    bin.read(reinterpret_cast<char*>(hf.data_ptr<float>()), last * V * 4);
    ASSERT_TRUE(bin.good()) << "hf_logits.bin is shorter than " << ids.size() << " prompts";
    const torch::Tensor ours = last_logits(*edited, ids[p], last, nullptr);
    const torch::Tensor plain = last_logits(*smollm2(), ids[p], last, nullptr);
    const torch::Tensor reread = last_logits(*back, ids[p], last, nullptr);
    const double effect = rel_err(ours, plain), err = rel_err(ours, hf), err_back = rel_err(reread, ours);
    std::printf("  prompt %zu: HDR effect %.3e, transformers rel err %.2e, safedec re-read rel err %.2e\n", p, effect,
                err, err_back);
    EXPECT_GT(effect, 1e-3) << "the test harm vector must change the logits";
    EXPECT_LE(err, 1e-4);
    EXPECT_LE(err_back, 1e-6);
  }

  // The exported tokenizer is the model's: every golden string and chat gives the reference ids.
  json got, golden;
  std::ifstream(dir + "/hf_tok.json") >> got;
  std::ifstream(golden_tok) >> golden;
  ASSERT_EQ(got["cases"].size(), golden["cases"].size());
  int mismatches = 0;
  for (size_t i = 0; i < golden["cases"].size(); ++i)
    if (got["cases"][i] != golden["cases"][i]["ids"] && ++mismatches <= 5)
      ADD_FAILURE() << "string " << i << " " << golden["cases"][i]["text"].dump() << ": " << got["cases"][i].dump()
                    << " vs " << golden["cases"][i]["ids"].dump();
  for (size_t i = 0; i < golden["with_special"].size(); ++i)
    EXPECT_EQ(got["with_special"][i], golden["with_special"][i]["ids"]) << golden["with_special"][i]["text"].dump();
  ASSERT_EQ(got["chats"].size(), golden["chats"].size());
  for (size_t i = 0; i < golden["chats"].size(); ++i) {
    EXPECT_EQ(got["chats"][i]["text"], golden["chats"][i]["text"]) << golden["chats"][i]["name"];
    EXPECT_EQ(got["chats"][i]["ids"], golden["chats"][i]["ids"]) << golden["chats"][i]["name"];
  }
  std::printf("  tokenizer: %zu strings, %zu with special tokens, %zu chats compared; %d mismatches\n",
              golden["cases"].size(), golden["with_special"].size(), golden["chats"].size(), mismatches);
  EXPECT_EQ(mismatches, 0);
  if (!HasFailure()) fs::remove_all(dir);  // ~0.5 GB of model files
}

TEST(ExportHf, BadInputExitsTwoAndWritesNothing) {
  const std::string dir = scratch("hf_bad");
  // A harm vector made for another model (the tiny llama fixture): both named.
  auto tiny = CausalLM::load(tiny_llama());
  ArtifactManifest m;
  m.kind = ArtifactKind::HarmVector;
  m.model = ModelIdentity::of(tiny->config());
  {
    ArtifactWriter w(dir + "/tiny_harm", m);
    HarmVector h;
    h.tau["final_norm"] = torch::zeros_like(tiny->weights().final_norm);
    write_harm_vector(w, h);
    w.commit();
  }
  auto r = safedec_cli("export hf --model smollm2-135m-instruct --hdr " + dir + "/tiny_harm --out " + dir + "/a");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("was made for the model"), std::string::npos) << r.out;
  // A vocabulary the exporter cannot write exactly (byte-level BPE without merges): refused, naming why.
  r = safedec_cli("export hf --model " + tiny_llama() + " --out " + dir + "/b");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("tokenizer.ggml.merges"), std::string::npos) << r.out;
  // An existing output directory.
  fs::create_directories(dir + "/c");
  r = safedec_cli("export hf --model smollm2-135m-instruct --out " + dir + "/c");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("already exists"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::is_empty(dir + "/c"));
  EXPECT_EQ(listing(dir), (std::vector<std::string>{"c", "tiny_harm"}));
}

TEST(ExportBundle, BundleIsVerifiedAndLoadsItsArtifacts) {
  const std::string dir = scratch("bundle");
  const auto& cfg = smollm2()->config();
  torch::manual_seed(5);
  const std::string icv = save_icv(dir + "/icv", torch::randn({cfg.n_layers, cfg.hidden_size}), cfg,
                                   {{"model", "smollm2-135m-instruct"}}, false);
  std::ofstream(dir + "/steer.yaml") << "method: steer\nicv: " << icv << "\nalpha: 0.2\nform: code\n";
  const std::string out = dir + "/bundle";
  auto r = safedec_cli("export bundle --config " + dir + "/steer.yaml --out " + out + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(out + "/bundle.json"));
  EXPECT_TRUE(fs::exists(out + "/method.yaml"));
  EXPECT_TRUE(fs::exists(out + "/artifacts/icv/icv.safetensors"));
  EXPECT_TRUE(fs::exists(out + "/artifacts/icv/manifest.json"));

  // Opened as it is: the method reads the bundle's copy; the model's hash is the one recorded.
  const Bundle b = open_bundle(out);
  EXPECT_EQ(b.method.method, "steer");
  EXPECT_EQ(b.method.steer.icv, fs::absolute(out).lexically_normal().string() + "/artifacts/icv");
  EXPECT_DOUBLE_EQ(b.method.steer.alpha, 0.2);
  EXPECT_EQ(b.model, "smollm2-135m-instruct");
  EXPECT_EQ(b.model_sha256, b.manifest["model"]["sha256"].get<std::string>());
  EXPECT_TRUE(torch::equal(load_icv(b.method.steer.icv, cfg), load_icv(icv, cfg)));

  // A changed file refuses the bundle, naming the file.
  fs::copy(out, dir + "/tampered", fs::copy_options::recursive);
  {
    std::fstream f(dir + "/tampered/artifacts/icv/icv.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x7f');
  }
  try {
    open_bundle(dir + "/tampered");
    ADD_FAILURE() << "a tampered bundle was opened";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("icv.safetensors does not match its sha256"), std::string::npos) << e.what();
  }
  fs::remove(dir + "/tampered/method.yaml");
  EXPECT_THROW(open_bundle(dir + "/tampered"), Error);
  // Another model than the one recorded is refused, naming both hashes.
  try {
    open_bundle(out, tiny_llama());
    ADD_FAILURE() << "a bundle was opened with another model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("was made for the model"), std::string::npos) << e.what();
  }

  // `safedec generate --bundle` decodes exactly as the original config does.
  auto json_line = [](const std::string& out) {
    size_t at = 0;
    while (at < out.size()) {
      const size_t end = out.find('\n', at);
      const std::string line = out.substr(at, end == std::string::npos ? std::string::npos : end - at);
      if (!line.empty() && line[0] == '{') return json::parse(line);
      if (end == std::string::npos) break;
      at = end + 1;
    }
    return json();
  };
  const std::string ask = " --prompt 'Name three colours of the rainbow.' --max-new-tokens 12 --json";
  auto direct = safedec_cli("generate --method steer --method-config " + dir + "/steer.yaml" + ask);
  auto bundled = safedec_cli("generate --bundle " + out + ask);
  ASSERT_EQ(direct.code, 0) << direct.out;
  ASSERT_EQ(bundled.code, 0) << bundled.out;
  const json jd = json_line(direct.out), jb = json_line(bundled.out);
  ASSERT_TRUE(jd.contains("token_ids")) << direct.out;
  EXPECT_EQ(jb["token_ids"], jd["token_ids"]) << bundled.out;
  r = safedec_cli("generate --bundle " + dir + "/tampered" + ask);
  EXPECT_EQ(r.code, 2) << r.out;

  // Bad input: an ICV made for another model, and an existing --out; nothing written.
  auto tiny = CausalLM::load(tiny_llama());
  const std::string tiny_icv = save_icv(dir + "/tiny_icv", torch::zeros({2, tiny->config().hidden_size}),
                                        tiny->config(), {{"model", tiny_llama()}}, false);
  std::ofstream(dir + "/tiny.yaml") << "method: steer\nicv: " << tiny_icv << "\n";
  r = safedec_cli("export bundle --config " + dir + "/tiny.yaml --out " + dir + "/b2");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("was made for the model"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir + "/b2"));
  r = safedec_cli("export bundle --config " + dir + "/steer.yaml --out " + out);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("already exists"), std::string::npos) << r.out;
  EXPECT_EQ(listing(dir), (std::vector<std::string>{"bundle", "icv", "steer.yaml", "tampered", "tiny.yaml", "tiny_icv"}));
}

TEST(ExportGguf, SafedecAndTheGgufPackageReadF32F16AndQ8_0) {
  const std::string dir = scratch("gguf");
  const auto& cfg = smollm2()->config();
  const std::string hdr = write_harm_artifact(dir + "/harm", cfg);
  auto edited = CausalLM::load(smollm2_path());
  apply_harm_vector(*edited, hdr, 3.0);
  const auto ids = prompts();
  std::map<std::string, double> errs;
  for (const std::string type : {"f32", "f16", "q8_0"}) {
    const std::string out = dir + "/model_" + type + ".gguf";
    auto r = safedec_cli("export gguf --model smollm2-135m-instruct --hdr " + hdr + " --hdr-lambda 3 --type " + type +
                         " --out " + out);
    ASSERT_EQ(r.code, 0) << r.out;
    auto f = GgufFile::open(out);
    EXPECT_EQ(f->architecture(), "llama");
    EXPECT_EQ(f->get_int("llama.block_count", 0), cfg.n_layers);
    EXPECT_EQ(f->get_string("tokenizer.ggml.pre", ""), "smollm");
    const GgmlType want = type == "f32" ? GgmlType::F32 : type == "f16" ? GgmlType::F16 : GgmlType::Q8_0;
    EXPECT_EQ(f->tensor("blk.0.attn_q.weight").type, want);
    EXPECT_EQ(f->tensor("blk.0.attn_norm.weight").type, GgmlType::F32);
    // safedec reads it back (un-permuting Q/K): logits of the HDR-edited model.
    auto back = CausalLM::load(out);
    double worst = 0;
    for (const auto& p : ids) {
      const torch::Tensor ref = last_logits(*edited, p, 8, nullptr), got = last_logits(*back, p, 8, nullptr);
      worst = std::max(worst, rel_err(got, ref));
      if (type == "f32") EXPECT_TRUE(torch::equal(got.argmax(-1), ref.argmax(-1)));
    }
    errs[type] = worst;
    std::printf("  %s: %lld bytes, logits rel err vs the edited model %.2e\n", type.c_str(),
                static_cast<long long>(fs::file_size(out)), worst);
  }
  EXPECT_LE(errs["f32"], 1e-6);
  EXPECT_LE(errs["f16"], 5e-3);
  // Q8_0 rounds every weight to 1/254 of its block's range (~0.5% RMS); through 30 layers that is a few %.
  EXPECT_LE(errs["q8_0"], 8e-2);
  {
    // Weight level: every Q8_0 value within half a quantisation step of the fp32 weight it came from
    // (blk.17.ffn_down is Q4_1 in the source and HDR-edited; token_embd is Q8_0 there already).
    auto f = GgufFile::open(dir + "/model_q8_0.gguf");
    for (const auto& [name, orig_in] : std::vector<std::pair<std::string, torch::Tensor>>{
             {"blk.17.ffn_down.weight", edited->weights().layers[17]->w_down},
             {"token_embd.weight", edited->weights().embed}}) {
      const torch::Tensor orig = orig_in.contiguous();
      auto deq = f->dequantize(f->tensor(name));
      const torch::Tensor got = torch::from_blob(deq.data(), orig.sizes(), torch::kFloat32);
      const torch::Tensor step = orig.view({-1, 32}).abs().amax(1, true) / 127.0;
      const double worst = ((got - orig).view({-1, 32}).abs() / step.clamp_min(1e-30)).max().item<double>();
      const double rel = rel_err(got, orig);
      std::printf("  q8_0 %s: max error %.3f quantisation steps, rel err %.2e\n", name.c_str(), worst, rel);
      // Half a step, plus the fp16 rounding of the stored scale (relative 2^-11) times |q| <= 127.
      EXPECT_LE(worst, 0.5 + 127.0 / 2048.0 + 1e-3) << name;
    }
  }

  // The gguf Python package: same tensor names, types and dequantised values as safedec's reader.
  const std::string script =
      "import gguf, json, sys\n"
      "import numpy as np\n"
      "out = {}\n"
      "for path in sys.argv[1:-1]:\n"
      "    r = gguf.GGUFReader(path)\n"
      "    ts = {t.name: t for t in r.tensors}\n"
      "    d = {'n': len(ts), 'arch': r.fields['general.architecture'].contents()}\n"
      "    for name in ['token_embd.weight', 'blk.0.attn_q.weight', 'blk.29.ffn_down.weight', 'output_norm.weight']:\n"
      "        t = ts[name]\n"
      "        v = gguf.dequantize(t.data, t.tensor_type).astype(np.float64).reshape(-1)\n"
      "        d[name] = [t.tensor_type.name, [int(x) for x in t.shape], float(v.sum()), float(np.abs(v).sum()),\n"
      "                   [float(x) for x in v[:8]]]\n"
      "    out[path] = d\n"
      "json.dump(out, open(sys.argv[-1], 'w'))\n";
  std::ofstream(dir + "/read.py") << script;
  std::string args;
  for (const std::string type : {"f32", "f16", "q8_0"}) args += " " + dir + "/model_" + type + ".gguf";
  auto py = sh(python() + " " + dir + "/read.py" + args + " " + dir + "/read.json");
  ASSERT_EQ(py.code, 0) << py.out;
  json j;
  std::ifstream(dir + "/read.json") >> j;
  for (const std::string type : {"f32", "f16", "q8_0"}) {
    const std::string path = dir + "/model_" + type + ".gguf";
    auto f = GgufFile::open(path);
    const json& d = j[path];
    EXPECT_EQ(d["arch"], "llama");
    EXPECT_EQ(d["n"].get<size_t>(), f->tensors().size());
    for (const std::string name :
         {"token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight", "output_norm.weight"}) {
      const auto& t = f->tensor(name);
      const auto ours = f->dequantize(t);
      double sum = 0, abs_sum = 0;
      for (float v : ours) {
        sum += v;
        abs_sum += std::fabs(v);
      }
      const json& e = d[name];
      EXPECT_EQ(e[0], ggml_type_name(t.type)) << type << " " << name;
      EXPECT_EQ(e[1].get<std::vector<int64_t>>(), t.ne) << type << " " << name;
      EXPECT_NEAR(e[3].get<double>(), abs_sum, 1e-6 * abs_sum) << type << " " << name;
      EXPECT_NEAR(e[2].get<double>(), sum, 1e-6 * abs_sum) << type << " " << name;
      for (int i = 0; i < 8; ++i) EXPECT_EQ(e[4][i].get<float>(), ours[i]) << type << " " << name << " [" << i << "]";
    }
  }
  // Bad input: an unknown type and an existing output; nothing written.
  auto r = safedec_cli("export gguf --model smollm2-135m-instruct --type q4_0 --out " + dir + "/x.gguf");
  EXPECT_EQ(r.code, 2) << r.out;
  r = safedec_cli("export gguf --model smollm2-135m-instruct --out " + dir + "/model_f32.gguf");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("already exists"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir + "/x.gguf"));
  if (!HasFailure()) fs::remove_all(dir);  // ~1 GB of model files
}

TEST(ExportExpert, GgufOfATruncatedFineTunedExpert) {
  const std::string dir = scratch("expert");
  // A 2-layer self-expert of SmolLM2 with a changed MLP (as a fine-tune would leave it).
  auto full = CausalLM::load(smollm2_path());
  auto expert = full->truncated(2);
  {
    torch::NoGradGuard no_grad;
    torch::manual_seed(31);
    auto& w_down = expert->mutable_weights().layers[1]->w_down;
    w_down.add_(torch::randn(w_down.sizes()) * 0.01);
  }
  ArtifactManifest m;
  m.kind = ArtifactKind::ExpertWeights;
  m.model = ModelIdentity::of(full->config());
  {
    ArtifactWriter w(dir + "/expert", m);
    write_expert_weights(w, *expert, "smollm2-135m-instruct");
    w.commit();
  }
  const std::string out = dir + "/expert.gguf";
  auto r = safedec_cli("export gguf --expert " + dir + "/expert --out " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  auto back = CausalLM::load(out);
  EXPECT_EQ(back->config().n_layers, 2);
  auto ref = load_expert_weights(dir + "/expert");
  LoadOptions two;
  two.max_layers = 2;
  auto untuned = CausalLM::load(smollm2_path(), two);  // the base's first 2 layers, unchanged
  for (const auto& p : prompts()) {
    const torch::Tensor got = last_logits(*back, p, 8, nullptr);
    const double err = rel_err(got, last_logits(*ref, p, 8, nullptr));
    const double effect = rel_err(got, last_logits(*untuned, p, 8, nullptr));
    std::printf("  expert (2 layers) re-read from GGUF: logits rel err %.2e (fine-tune effect %.2e)\n", err, effect);
    EXPECT_LE(err, 1e-6);
    EXPECT_GT(effect, 1e-4);
  }
  // --model naming another file than the expert's base model is refused.
  r = safedec_cli("export gguf --expert " + dir + "/expert --model " + tiny_llama() + " --out " + dir + "/x.gguf");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("was made from"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir + "/x.gguf"));
  if (!HasFailure()) fs::remove_all(dir);
}
