// Load/save of every artifact kind (directory + manifest contract in artifact.cpp).
#include "artifacts/typed.h"
#include "artifacts/tensor_check.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <set>

#include "core/error.h"
#include "core/files.h"
#include "core/model_registry.h"
#include "io/safetensors.h"

namespace safedec {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// An artifact given either as a directory (manifest checked against the model) or as a bare
// safetensors file (legacy). Returns the tensor file to read and, for directories, the manifest.
struct Located {
  std::string tensors;
  std::optional<ArtifactDir> dir;
};

Located locate(const std::string& path_in, ArtifactKind kind, const std::string& file_name, const ModelConfig& model,
               bool check_layers = true) {
  const std::string path = resolve_artifact_path(path_in);
  Located loc;
  if (is_artifact_dir(path)) {
    loc.dir = open_artifact(path, kind);
    check_artifact_model(*loc.dir, model, check_layers);
    loc.tensors = loc.dir->file(file_name);
    SAFEDEC_CHECK(fs::is_regular_file(loc.tensors), "the ", artifact_kind_name(kind), " artifact ", path,
                  " has no ", file_name);
  } else {
    SAFEDEC_CHECK(fs::is_regular_file(path), "the ", artifact_kind_name(kind), " artifact ", path_in,
                  " does not exist (relative paths are tried against the current directory and the source tree)");
    loc.tensors = path;
  }
  return loc;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
SoftPrompts load_soft_prompts(const std::string& path, const ModelConfig& model) {
  const Located loc = locate(path, ArtifactKind::SoftPrompts, "prompts.safetensors", model, /*check_layers=*/false);
  SoftPrompts p;
  p.source = loc.tensors;
  p.sp = read_tensor_f32(loc.tensors, "sp");
  p.ap = read_tensor_f32(loc.tensors, "ap");
  for (const auto& [name, t] : {std::make_pair("sp", p.sp), std::make_pair("ap", p.ap)})
    SAFEDEC_CHECK(t.dim() == 2 && t.size(1) == model.hidden_size && t.size(0) >= 1, "soft prompt '", name, "' in ",
                  loc.tensors, " must be [L, ", model.hidden_size, "] with L >= 1 (the model's hidden size), got ",
                  t.sizes());
  return p;
}

void write_soft_prompts(ArtifactWriter& writer, const SoftPrompts& p) {
  writer.manifest().params["sp_tokens"] = p.sp.size(0);
  writer.manifest().params["ap_tokens"] = p.ap.size(0);
  writer.write_tensors("prompts.safetensors", {{"sp", p.sp}, {"ap", p.ap}});
}

// ---------------------------------------------------------------------------------------------
std::shared_ptr<LoraAdapter> load_lora_adapter(const std::string& dir_in, const ModelConfig& model) {
  const std::string dir = resolve_artifact_path(dir_in);
  SAFEDEC_CHECK(fs::is_directory(dir), "the LoRA adapter ", dir_in,
                " is not a directory (a PEFT adapter directory holds adapter_config.json and adapter_model.safetensors)");
  if (is_artifact_dir(dir)) check_artifact_model(open_artifact(dir, ArtifactKind::Lora), model);
  const std::string cfg_path = dir + "/adapter_config.json";
  std::ifstream in(cfg_path);
  SAFEDEC_CHECK(in.good(), "cannot open the PEFT adapter config ", cfg_path);
  json cfg;
  try {
    in >> cfg;
  } catch (const json::exception& e) {
    fail("the PEFT adapter config ", cfg_path, " is not valid JSON: ", e.what());
  }
  SAFEDEC_CHECK(cfg.is_object() && cfg.contains("r") && cfg["r"].is_number_integer() && cfg["r"].get<int64_t>() >= 1,
                cfg_path, ": needs an integer rank `r` >= 1");
  LoraAdapter::Options opt;
  opt.rank = cfg["r"].get<int64_t>();
  opt.alpha = cfg.contains("lora_alpha") && cfg["lora_alpha"].is_number() ? cfg["lora_alpha"].get<double>()
                                                                          : static_cast<double>(opt.rank);
  if (cfg.contains("lora_dropout") && cfg["lora_dropout"].is_number()) opt.dropout = cfg["lora_dropout"].get<double>();
  SAFEDEC_CHECK(std::isfinite(opt.alpha) && std::abs(opt.alpha) <= kMaxArtifactMagnitude, cfg_path,
                ": `lora_alpha` must be a finite number of magnitude at most ", kMaxArtifactMagnitude, ", got ", opt.alpha);
  opt.targets.clear();
  auto adapter = std::make_shared<LoraAdapter>(opt);
  const std::string weights = dir + "/adapter_model.safetensors";
  auto file = SafetensorsFile::open(weights);
  // base_model.model.model.layers.<l>.(self_attn|mlp).<name>.lora_(A|B).weight, or ...lm_head.lora_*
  const std::regex layer_re(R"(^base_model\.model\.model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$)");
  const std::regex head_re(R"(^base_model\.model\.lm_head\.lora_([AB])\.weight$)");
  std::map<std::pair<int64_t, int>, LoraFactors> found;
  const double scale = opt.alpha / static_cast<double>(opt.rank);
  for (const auto& t : file->tensors()) {
    std::smatch m;
    int64_t layer = -1;
    LinearKind kind = LinearKind::LmHead;
    std::string ab;
    if (std::regex_match(t.name, m, layer_re)) {
      layer = std::stoll(m[1].str());
      kind = linear_kind_from_name(m[2].str());
      ab = m[3].str();
      SAFEDEC_CHECK(layer < model.n_layers, weights, ": tensor ", t.name, " names layer ", layer, " but the model has ",
                    model.n_layers);
    } else if (std::regex_match(t.name, m, head_re)) {
      kind = LinearKind::LmHead;
      ab = m[1].str();
    } else {
      fail(weights, ": tensor '", t.name, "' is not a LoRA factor this loader understands (expected ",
           "base_model.model.model.layers.<l>.self_attn|mlp.<proj>.lora_A|B.weight)");
    }
    torch::Tensor x = artifact_tensor_f32(t, weights);  // float dtype, finite, bounded
    auto [out_f, in_f] = linear_shape(model, kind);
    auto& f = found[{layer, static_cast<int>(kind)}];
    f.scale = scale;
    if (ab == "A") {
      SAFEDEC_CHECK(x.dim() == 2 && x.size(0) == opt.rank && x.size(1) == in_f, weights, ": ", t.name, " must be [",
                    opt.rank, ", ", in_f, "], got ", x.sizes());
      f.a = x;
    } else {
      SAFEDEC_CHECK(x.dim() == 2 && x.size(0) == out_f && x.size(1) == opt.rank, weights, ": ", t.name, " must be [",
                    out_f, ", ", opt.rank, "], got ", x.sizes());
      f.b = x;
    }
  }
  SAFEDEC_CHECK(!found.empty(), weights, " holds no LoRA factors");
  for (auto& [key, f] : found) {
    SAFEDEC_CHECK(f.a.defined() && f.b.defined(), weights, ": layer ", key.first, " ",
                  linear_kind_name(static_cast<LinearKind>(key.second)), " has only one of lora_A / lora_B");
    adapter->set(key.first, static_cast<LinearKind>(key.second), f);
  }
  return adapter;
}

nlohmann::json write_peft_adapter(const std::string& dir, const LoraAdapter& adapter, const std::string& base_model) {
  const auto& o = adapter.options();
  std::set<std::string> modules;
  for (const auto& [name, t] : adapter.named_parameters()) {
    // ...<module>.lora_A.weight -> <module>
    const std::string stem = name.substr(0, name.rfind(".lora_"));
    modules.insert(stem.substr(stem.rfind('.') + 1));
  }
  json cfg = {{"peft_type", "LORA"},
              {"task_type", "CAUSAL_LM"},
              {"r", o.rank},
              {"lora_alpha", o.alpha},
              {"lora_dropout", o.dropout},
              {"target_modules", std::vector<std::string>(modules.begin(), modules.end())},
              {"bias", "none"},
              {"fan_in_fan_out", false},
              {"inference_mode", true},
              {"base_model_name_or_path", base_model}};
  if (!o.layers.empty()) cfg["layers_to_transform"] = o.layers;
  write_file_atomic(dir + "/adapter_config.json", cfg.dump(2) + "\n");
  write_tensors_f32(dir + "/adapter_model.safetensors", adapter.named_parameters(), {{"format", "pt"}});
  return cfg;
}

void write_lora_adapter(ArtifactWriter& writer, const LoraAdapter& adapter, const std::string& base_model) {
  const auto& o = adapter.options();
  writer.file("adapter_model.safetensors");  // announce both files (hashed at commit)
  const std::string dir = fs::path(writer.file("adapter_config.json")).parent_path().string();
  const json cfg = write_peft_adapter(dir, adapter, base_model);
  writer.manifest().params["r"] = o.rank;
  writer.manifest().params["lora_alpha"] = o.alpha;
  writer.manifest().params["target_modules"] = cfg["target_modules"];
  writer.manifest().params["base_model"] = base_model;
}

// ---------------------------------------------------------------------------------------------
void write_expert_weights(ArtifactWriter& writer, const CausalLM& expert, const std::string& base_model) {
  writer.manifest().params["base_model"] = base_model;
  writer.manifest().params["layers"] = expert.config().n_layers;
  writer.manifest().params["tied_embeddings"] = expert.weights().lm_head.is_same(expert.weights().embed);
  writer.write_tensors("weights.safetensors", expert.named_parameters());
}

std::string expert_base_model(const std::string& dir) {
  const ArtifactDir a = open_artifact(dir, ArtifactKind::ExpertWeights, /*verify_hashes=*/false);
  SAFEDEC_CHECK(a.manifest.params.contains("base_model") && a.manifest.params["base_model"].is_string(), a.path,
                ": the expert-weights manifest has no params.base_model");
  return a.manifest.params["base_model"].get<std::string>();
}

int64_t expert_layers(const std::string& dir) {
  const ArtifactDir a = open_artifact(dir, ArtifactKind::ExpertWeights, /*verify_hashes=*/false);
  SAFEDEC_CHECK(a.manifest.params.contains("layers") && a.manifest.params["layers"].is_number_integer(), a.path,
                ": the expert-weights manifest has no params.layers");
  return a.manifest.params["layers"].get<int64_t>();
}

void load_expert_weights_into(CausalLM& model, const std::string& dir) {
  const ArtifactDir a = open_artifact(dir, ArtifactKind::ExpertWeights);
  const int64_t layers = a.manifest.params.value("layers", int64_t{-1});
  SAFEDEC_CHECK(model.config().n_layers == layers, a.path, ": the expert has ", layers, " layers but the model given has ",
                model.config().n_layers);
  SAFEDEC_CHECK(model.config().vocab_size == a.manifest.model.vocab_size &&
                    model.config().hidden_size == a.manifest.model.hidden_size,
                a.path, ": the expert was made from ", a.manifest.model.describe(), " but is being loaded into ",
                ModelIdentity::of(model.config()).describe());
  auto tensors = read_tensors_f32(a.file("weights.safetensors"));
  torch::NoGradGuard no_grad;
  int64_t replaced = 0;
  for (auto& [name, w] : model.named_parameters()) {
    auto it = tensors.find(name);
    SAFEDEC_CHECK(it != tensors.end(), a.path, ": weights.safetensors has no tensor '", name, "'");
    SAFEDEC_CHECK(it->second.sizes() == w.sizes(), a.path, ": tensor '", name, "' has shape ", it->second.sizes(),
                  " but the model's is ", w.sizes());
    w.copy_(it->second.to(w.device(), w.scalar_type()));
    ++replaced;
  }
  SAFEDEC_CHECK(replaced == static_cast<int64_t>(tensors.size()), a.path, ": weights.safetensors holds ",
                tensors.size(), " tensors but the model has ", replaced);
}

std::shared_ptr<CausalLM> load_expert_weights(const std::string& dir, const LoadOptions& options) {
  LoadOptions lo = options;
  lo.max_layers = expert_layers(dir);
  auto model = CausalLM::load(resolve_model(expert_base_model(dir)).path, lo);
  load_expert_weights_into(*model, dir);
  return model;
}

// ---------------------------------------------------------------------------------------------
torch::Tensor load_icv(const std::string& path, const ModelConfig& model) {
  const Located loc = locate(path, ArtifactKind::Icv, "icv.safetensors", model);
  torch::Tensor icv = read_tensor_f32(loc.tensors, "icv");
  SAFEDEC_CHECK(icv.dim() == 2 && icv.size(0) == model.n_layers && icv.size(1) == model.hidden_size, "the ICV in ",
                loc.tensors, " has shape ", icv.sizes(), " but the model has ", model.n_layers,
                " layers of hidden size ", model.hidden_size, "; extract it from this model");
  return icv;
}

void write_icv(ArtifactWriter& writer, const torch::Tensor& icv) {
  SAFEDEC_CHECK(icv.dim() == 2, "write_icv: the ICV must be [layers, hidden], got ", icv.sizes());
  writer.write_tensors("icv.safetensors", {{"icv", icv}});
}

// ---------------------------------------------------------------------------------------------
HarmVector load_harm_vector(const std::string& path, const ModelConfig& model) {
  const Located loc = locate(path, ArtifactKind::HarmVector, "harm_vector.safetensors", model);
  HarmVector h;
  h.tau = read_tensors_f32(loc.tensors);
  SAFEDEC_CHECK(!h.tau.empty(), "the harm vector ", loc.tensors, " holds no tensors");
  if (loc.dir && loc.dir->manifest.params.contains("lambda") && loc.dir->manifest.params["lambda"].is_number())
    h.lambda = loc.dir->manifest.params["lambda"].get<double>();
  return h;
}

void write_harm_vector(ArtifactWriter& writer, const HarmVector& harm) {
  writer.manifest().params["lambda"] = harm.lambda;
  std::vector<std::pair<std::string, torch::Tensor>> t(harm.tau.begin(), harm.tau.end());
  writer.write_tensors("harm_vector.safetensors", t);
}

// ---------------------------------------------------------------------------------------------
RiskProbe load_risk_probe(const std::string& path, const ModelConfig& model) {
  const Located loc = locate(path, ArtifactKind::RiskProbe, "probe.safetensors", model);
  RiskProbe p;
  p.weight = read_tensor_f32(loc.tensors, "weight").reshape({-1});
  p.bias = read_tensor_f32(loc.tensors, "bias").reshape({-1});
  SAFEDEC_CHECK(p.weight.numel() == model.hidden_size, "the risk probe ", loc.tensors, " has a weight of ",
                p.weight.numel(), " values but the model's hidden size is ", model.hidden_size);
  SAFEDEC_CHECK(p.bias.numel() == 1, "the risk probe ", loc.tensors, " must have a bias of shape [1], got ",
                p.bias.sizes());
  if (loc.dir) {
    const auto& params = loc.dir->manifest.params;
    p.layer = params.value("layer", int64_t{-1});
    p.pooling = params.value("pooling", std::string("last"));
    p.window = params.value("window", int64_t{64});
  }
  SAFEDEC_CHECK(p.layer >= -1 && p.layer < model.n_layers, "the risk probe ", path, " reads layer ", p.layer,
                " but the model has ", model.n_layers, " layers");
  const auto& known = risk_probe_poolings();
  SAFEDEC_CHECK(std::find(known.begin(), known.end(), p.pooling) != known.end(), "the risk probe ", path,
                " uses pooling '", p.pooling, "'; known: last, user_mean");
  SAFEDEC_CHECK(p.window >= 1, "the risk probe ", path, " has a pooling window of ", p.window, " tokens (needs >= 1)");
  return p;
}

const std::vector<std::string>& risk_probe_poolings() {
  static const std::vector<std::string> names{"last", "user_mean"};
  return names;
}

void write_risk_probe(ArtifactWriter& writer, const RiskProbe& p) {
  writer.manifest().params["layer"] = p.layer;
  writer.manifest().params["pooling"] = p.pooling;
  if (p.pooling == "user_mean") writer.manifest().params["window"] = p.window;
  writer.write_tensors("probe.safetensors", {{"weight", p.weight.reshape({-1})}, {"bias", p.bias.reshape({1})}});
}

// ---------------------------------------------------------------------------------------------
GateCalibration load_gate_calibration(const std::string& path_in, const ModelConfig& model) {
  const ArtifactDir a = open_artifact(path_in, ArtifactKind::GateCalibration);
  check_artifact_model(a, model);
  const auto& p = a.manifest.params;
  GateCalibration g;
  for (const char* key : {"tau", "theta", "reset"})
    SAFEDEC_CHECK(p.contains(key) && p[key].is_number(), a.path, ": the gate calibration needs params.", key);
  g.tau = p["tau"].get<double>();
  g.theta = p["theta"].get<double>();
  g.reset = p["reset"].get<double>();
  g.target_fire_rate = p.value("target_fire_rate", 0.0);
  SAFEDEC_CHECK(std::isfinite(g.tau) && g.tau > 1.0 && std::isfinite(g.theta) && g.theta > 0.0 && g.reset >= 0.0 &&
                    g.reset <= 1.0,
                a.path, ": gate parameters out of range (tau ", g.tau, " must be > 1, theta ", g.theta,
                " > 0, reset ", g.reset, " in [0, 1])");
  return g;
}

void write_gate_calibration(ArtifactWriter& writer, const GateCalibration& g) {
  auto& p = writer.manifest().params;
  p["tau"] = g.tau;
  p["theta"] = g.theta;
  p["reset"] = g.reset;
  p["target_fire_rate"] = g.target_fire_rate;
  // The gate is scalars only; the safetensors file keeps the directory contract (tensors + manifest).
  writer.write_tensors("gate.safetensors", {{"tau", torch::tensor({g.tau})},
                                            {"theta", torch::tensor({g.theta})},
                                            {"reset", torch::tensor({g.reset})}});
}

}  // namespace safedec
