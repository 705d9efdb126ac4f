// Trained artifacts: the one contract every trained thing shares (soft prompts, LoRA adapters, expert
// weights, ICVs, harm vectors, risk probes, gate calibrations). An artifact is a directory holding its
// tensors as safetensors files plus `manifest.json`: what it is, the model it was made for (name,
// file sha256, vocabulary/hidden/layer sizes), the training config, a hash of the training data ids,
// the seed, the git commit, metrics and the sha256 of every file. Training writes artifacts through
// ArtifactWriter (a temporary directory renamed into place, so a killed run never leaves half an
// artifact); strategies, exports and the server read them through the typed loaders in this module,
// which check them against the ModelConfig they will be used with.
#pragma once
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "io/model_config.h"

namespace safedec {

// The kinds of artifacts, as written in manifest.json's "kind".
enum class ArtifactKind { SoftPrompts, Lora, ExpertWeights, Icv, HarmVector, RiskProbe, GateCalibration };
const char* artifact_kind_name(ArtifactKind kind);           // "soft_prompts", "lora", ...
ArtifactKind artifact_kind_from_name(const std::string& name);  // throws listing the known kinds

// The model an artifact was made for.
struct ModelIdentity {
  std::string name;          // ModelConfig::name (e.g. GGUF general.name)
  std::string architecture;  // llama, qwen2, gemma3
  std::string sha256;        // of the model file; "" when unknown
  int64_t vocab_size = 0, hidden_size = 0, n_layers = 0;

  static ModelIdentity of(const ModelConfig& config, const std::string& sha256 = "");
  nlohmann::json to_json() const;
  static ModelIdentity from_json(const nlohmann::json& j, const std::string& where);
  // "SmolLM2 135M Instruct (llama, 30 layers, hidden 576, vocabulary 49152)".
  std::string describe() const;
};

// The manifest of one artifact directory.
struct ArtifactManifest {
  static constexpr int kFormatVersion = 1;
  ArtifactKind kind = ArtifactKind::Icv;
  int format_version = kFormatVersion;
  ModelIdentity model;
  nlohmann::json training_config = nlohmann::json::object();  // the resolved config of the run that made it
  std::string data_ids_sha256;                                // sha256 over the sorted training example ids
  uint64_t seed = 0;
  nlohmann::json params = nlohmann::json::object();   // kind-specific parameters (e.g. lambda, layer, rank)
  nlohmann::json metrics = nlohmann::json::object();  // what training measured (loss, AUROC, fire rates)
  std::map<std::string, std::string> files;           // file name -> sha256 (filled by ArtifactWriter)
  // Filled when written: safedec_version, git_commit, created_utc.
  nlohmann::json provenance = nlohmann::json::object();

  nlohmann::json to_json() const;
  static ArtifactManifest from_json(const nlohmann::json& j, const std::string& where);
};

// A loaded artifact directory: its manifest and where it lives.
struct ArtifactDir {
  std::string path;  // the directory
  ArtifactManifest manifest;
  std::string file(const std::string& name) const { return path + "/" + name; }
};

// True when `path` is a directory with a manifest.json.
bool is_artifact_dir(const std::string& path);
// Opens an artifact directory: parses manifest.json, checks the kind and that every listed file exists
// and has the recorded sha256 (verify_hashes) — a changed or truncated file is refused naming it.
ArtifactDir open_artifact(const std::string& path, ArtifactKind expected, bool verify_hashes = true);

// Refuses to use an artifact with a model it was not made for, naming both. Sizes (vocabulary,
// hidden, layers) must agree; `check_layers` false skips the layer count (e.g. an ICV checked per
// layer elsewhere); the name must agree too unless the artifact does not record one.
void check_artifact_model(const ArtifactDir& artifact, const ModelConfig& model, bool check_layers = true);

// Writes an artifact directory atomically: files go into `<dir>.tmp-<pid>`, commit() writes
// manifest.json (with every file's sha256) and renames the directory into place. An existing `dir`
// is refused unless `overwrite`; then it is replaced only after the new one is complete. A writer
// destroyed before commit() removes its temporary directory.
class ArtifactWriter {
 public:
  ArtifactWriter(std::string dir, ArtifactManifest manifest, bool overwrite = false);
  ~ArtifactWriter();
  ArtifactWriter(const ArtifactWriter&) = delete;
  ArtifactWriter& operator=(const ArtifactWriter&) = delete;

  // Path of a file inside the temporary directory (write it, then it is hashed at commit()).
  std::string file(const std::string& name);
  // Writes named fp32 tensors to a safetensors file inside the artifact.
  void write_tensors(const std::string& name, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                     const std::map<std::string, std::string>& metadata = {});
  ArtifactManifest& manifest() { return manifest_; }
  // Hashes the files, writes manifest.json and moves the directory into place; returns the final path.
  std::string commit();

 private:
  std::string dir_, tmp_;
  ArtifactManifest manifest_;
  bool overwrite_ = false, committed_ = false;
};

// Reads every tensor of a safetensors file as fp32 CPU tensors, by name (sorted); NaN/Inf refused
// naming the tensor.
std::map<std::string, torch::Tensor> read_tensors_f32(const std::string& path);
// Writes named tensors as an fp32 safetensors file at `path` (temporary name, then rename); NaN/Inf
// refused naming the tensor. ArtifactWriter::write_tensors and the exporters (src/export) use it.
void write_tensors_f32(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});
// One named tensor of a safetensors file as fp32 (error names the file and the tensor).
torch::Tensor read_tensor_f32(const std::string& path, const std::string& name);
// A relative artifact path that does not exist here is tried against the source tree.
std::string resolve_artifact_path(const std::string& path);

// sha256 over the sorted, newline-joined ids (the manifest's data_ids_sha256).
std::string data_ids_hash(std::vector<std::string> ids);

}  // namespace safedec
