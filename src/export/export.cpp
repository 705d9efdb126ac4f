// Exporters (see export.h): PEFT adapter directories and llama.cpp control vectors.
#include "export/export.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "artifacts/artifact.h"
#include "artifacts/typed.h"
#include "core/error.h"
#include "core/files.h"
#include "core/model_registry.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"

namespace safedec {

namespace fs = std::filesystem;

ExportModel resolve_export_model(const std::string& name_or_path) {
  SAFEDEC_CHECK(!name_or_path.empty(), "no model given: pass --model (a registered name such as ",
                "smollm2-135m-instruct, a GGUF file or a Hugging Face model directory)");
  const ModelEntry entry = resolve_model(name_or_path);
  ExportModel m;
  m.name = name_or_path;
  m.path = entry.path;
  if (fs::is_directory(entry.path)) {
    const std::string cfg = entry.path + "/config.json";
    SAFEDEC_CHECK(fs::is_regular_file(cfg), "the model directory ", entry.path,
                  " has no config.json (a Hugging Face model directory is expected)");
    m.config = model_config_from_hf_json(cfg);
  } else {
    auto file = GgufFile::open(entry.path);
    m.config = model_config_from_gguf(*file);
  }
  return m;
}

// ---------------------------------------------------------------------------------------------
StagedDir::StagedDir(std::string out, bool force) : out_(std::move(out)), force_(force) {
  SAFEDEC_CHECK(!out_.empty(), "no output directory given (--out)");
  while (out_.size() > 1 && out_.back() == '/') out_.pop_back();
  SAFEDEC_CHECK(force_ || !fs::exists(out_), "the output ", out_,
                " already exists; choose another --out or pass --force to replace it");
  SAFEDEC_CHECK(!fs::exists(out_) || fs::is_directory(out_), "the output ", out_,
                " exists and is not a directory; choose another --out");
  const fs::path target(out_);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  tmp_ = out_ + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp_, ec);
  fs::create_directories(tmp_);
}

StagedDir::~StagedDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
}

std::string StagedDir::commit() {
  SAFEDEC_ASSERT(!committed_, "StagedDir: already committed");
  std::error_code ec;
  std::string old;
  if (fs::exists(out_)) {
    SAFEDEC_CHECK(force_, "the output ", out_, " appeared while exporting; not replacing it");
    old = out_ + ".old-" + std::to_string(::getpid());
    fs::remove_all(old, ec);
    fs::rename(out_, old);
  }
  fs::rename(tmp_, out_);
  const fs::path target(out_);
  fsync_directory(target.has_parent_path() ? target.parent_path().string() : ".");
  if (!old.empty()) fs::remove_all(old, ec);
  committed_ = true;
  return out_;
}

void check_output_path(const std::string& out, bool force) {
  SAFEDEC_CHECK(!out.empty(), "no output file given (--out)");
  SAFEDEC_CHECK(force || !fs::exists(out), "the output ", out,
                " already exists; choose another --out or pass --force to replace it");
  SAFEDEC_CHECK(!fs::is_directory(out), "the output ", out, " is a directory; --out names the file to write");
}

namespace {

// The model an artifact is checked against: --model, else what its manifest recorded (`key` in params).
std::string artifact_model_name(const std::string& given, const std::string& artifact, ArtifactKind kind,
                                const std::string& key) {
  if (!given.empty()) return given;
  const std::string dir = resolve_artifact_path(artifact);
  if (is_artifact_dir(dir)) {
    const ArtifactDir a = open_artifact(dir, kind, /*verify_hashes=*/false);
    if (a.manifest.params.contains(key) && a.manifest.params[key].is_string() &&
        !a.manifest.params[key].get<std::string>().empty())
      return a.manifest.params[key].get<std::string>();
  }
  fail("the ", artifact_kind_name(kind), " artifact ", artifact, " does not record the model it was made from (",
       "manifest params.", key, "); pass --model");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
ExportReport export_peft(const PeftExportOptions& o) {
  SAFEDEC_CHECK(!o.adapter.empty(), "no LoRA artifact given (--adapter)");
  const std::string dir = resolve_artifact_path(o.adapter);
  SAFEDEC_CHECK(fs::is_directory(dir), "the LoRA artifact ", o.adapter, " is not a directory");
  // A different kind of artifact is not a LoRA adapter, whatever its files: say what it is.
  if (is_artifact_dir(dir)) {
    const ArtifactDir a = open_artifact(dir, ArtifactKind::Lora);  // refuses another kind, checks hashes
    (void)a;
  }
  StagedDir staged(o.out, o.force);  // refuses an existing --out before any work
  const ExportModel model = resolve_export_model(artifact_model_name(o.model, o.adapter, ArtifactKind::Lora,
                                                                     "base_model"));
  // Checks the manifest's model (naming both), every factor's name and shape, NaN/Inf.
  auto adapter = load_lora_adapter(dir, model.config);
  // PEFT can express one rank and alpha per adapter (the loader enforces that) on linear layers; the
  // LM head is a linear too, so every factor safedec reads has a PEFT name.
  const std::string base = o.base_model_name_or_path.empty() ? fs::absolute(model.path).string()
                                                             : o.base_model_name_or_path;
  write_peft_adapter(staged.path(), *adapter, base);
  ExportReport r;
  r.out = staged.commit();
  r.files = {"adapter_config.json", "adapter_model.safetensors"};
  r.notes.push_back("PEFT LoRA adapter (r " + std::to_string(adapter->options().rank) + ", " +
                    std::to_string(adapter->named_parameters().size() / 2) + " adapted linears) for " +
                    model.config.name + "; base_model_name_or_path = " + base);
  if (o.base_model_name_or_path.empty())
    r.notes.push_back("base_model_name_or_path is the local model path; pass --base-model-name-or-path "
                      "(e.g. a Hugging Face Hub id) for AutoPeftModelForCausalLM to find the base model elsewhere");
  return r;
}

// ---------------------------------------------------------------------------------------------
ExportReport export_control_vector(const ControlVectorExportOptions& o) {
  SAFEDEC_CHECK(!o.icv.empty(), "no ICV artifact given (--icv)");
  SAFEDEC_CHECK(std::isfinite(o.scale) && o.scale != 0.0, "--scale must be a finite non-zero number, got ", o.scale);
  check_output_path(o.out, o.force);
  const ExportModel model = resolve_export_model(artifact_model_name(o.model, o.icv, ArtifactKind::Icv, "model"));
  const torch::Tensor icv = load_icv(o.icv, model.config);  // [n_layers, hidden], checked against the model
  const int64_t L = icv.size(0), d = icv.size(1);
  SAFEDEC_CHECK(L >= 2, "the ICV has ", L, " layer(s); llama.cpp cannot steer block 0, so a control vector needs ",
                "a model with at least 2 layers");
  std::map<int64_t, std::vector<float>> directions;
  // The ICV is h(unsafe) - h(safe) (train/icv.cpp) and safedec's steering pushes the state away from it
  // (the code form subtracts normalize(icv)); an additive vector that steers toward safety is its negative.
  const torch::Tensor scaled = (icv * (-o.scale)).contiguous();
  const float* p = scaled.data_ptr<float>();
  for (int64_t l = 1; l < L; ++l) directions[l] = std::vector<float>(p + l * d, p + (l + 1) * d);
  const double norm0 = icv[0].norm().item<double>(), total = icv.norm().item<double>();
  // The architecture llama.cpp checks the control vector against (controlvector.model_hint).
  const std::string hint = model.config.architecture;
  write_control_vector_gguf(o.out, hint, directions, L);
  ExportReport r;
  r.out = o.out;
  r.notes.push_back("llama.cpp control vector: direction.N = -" + std::to_string(o.scale) +
                    " * icv[N] added to block N's output for N = 1.." + std::to_string(L - 1) +
                    " (safedec's layer N steers the same point: its MLP output before the residual add); the "
                    "ICV is h(unsafe) - h(safe), so the direction points to the safe side, as safedec's "
                    "steering does; a negative --control-vector-scaled strength would steer toward unsafe");
  r.notes.push_back("llama.cpp applies only the ADDITIVE form h - scale * icv; it cannot apply safedec's "
                    "cosine-gated, norm-preserving steering (form: code, the default) nor the paper form's "
                    "rescale to ||h||, so results under llama.cpp differ from `safedec generate`");
  char buf[160];
  std::snprintf(buf, sizeof buf, "layer 0's direction is dropped (llama.cpp never steers block 0); it held %.1f%% "
                "of the ICV's squared norm", total > 0 ? 100.0 * norm0 * norm0 / (total * total) : 0.0);
  r.notes.push_back(buf);
  r.notes.push_back("use: llama-cli -m MODEL --control-vector " + o.out +
                    " (or --control-vector-scaled FILE:S to rescale; older llama.cpp takes FILE S)");
  return r;
}

}  // namespace safedec
