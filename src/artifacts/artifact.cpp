// Artifact directories: manifest.json parsing/validation, model checks and the atomic writer.
#include "artifacts/artifact.h"
#include "artifacts/tensor_check.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/files.h"
#include "core/paths.h"
#include "core/sha256.h"
#include "io/safetensors.h"

namespace safedec {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* const kKindNames[] = {"soft_prompts", "lora", "expert_weights", "icv", "harm_vector", "risk_probe",
                                  "gate_calibration"};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SAFEDEC_CHECK(in.good(), "cannot open ", path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

template <typename T>
T get_field(const json& j, const char* key, const std::string& where) {
  SAFEDEC_CHECK(j.contains(key), where, ": the key `", key, "` is missing");
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    fail(where, ": the key `", key, "` has the wrong type (", j.at(key).type_name(), ")");
  }
}

}  // namespace

const char* artifact_kind_name(ArtifactKind kind) { return kKindNames[static_cast<int>(kind)]; }

ArtifactKind artifact_kind_from_name(const std::string& name) {
  std::string known;
  for (int i = 0; i < 7; ++i) {
    if (name == kKindNames[i]) return static_cast<ArtifactKind>(i);
    known += std::string(i ? ", " : "") + kKindNames[i];
  }
  fail("unknown artifact kind '", name, "'; known kinds: ", known);
}

ModelIdentity ModelIdentity::of(const ModelConfig& config, const std::string& sha256) {
  ModelIdentity m;
  m.name = config.name;
  m.architecture = config.architecture;
  m.sha256 = sha256;
  m.vocab_size = config.vocab_size;
  m.hidden_size = config.hidden_size;
  m.n_layers = config.n_layers;
  return m;
}

json ModelIdentity::to_json() const {
  return {{"name", name},           {"architecture", architecture}, {"sha256", sha256},
          {"vocab_size", vocab_size}, {"hidden_size", hidden_size},   {"n_layers", n_layers}};
}

ModelIdentity ModelIdentity::from_json(const json& j, const std::string& where) {
  SAFEDEC_CHECK(j.is_object(), where, ": `model` must be an object");
  ModelIdentity m;
  m.name = get_field<std::string>(j, "name", where);
  m.architecture = j.value("architecture", std::string());
  m.sha256 = j.value("sha256", std::string());
  m.vocab_size = get_field<int64_t>(j, "vocab_size", where);
  m.hidden_size = get_field<int64_t>(j, "hidden_size", where);
  m.n_layers = get_field<int64_t>(j, "n_layers", where);
  return m;
}

std::string ModelIdentity::describe() const {
  std::ostringstream s;
  s << "'" << name << "' (" << architecture << ", " << n_layers << " layers, hidden " << hidden_size
    << ", vocabulary " << vocab_size << ")";
  return s.str();
}

json ArtifactManifest::to_json() const {
  json f = json::object();
  for (const auto& [name, sha] : files) f[name] = sha;
  return {{"kind", artifact_kind_name(kind)},
          {"format_version", format_version},
          {"model", model.to_json()},
          {"training_config", training_config},
          {"data_ids_sha256", data_ids_sha256},
          {"seed", seed},
          {"params", params},
          {"metrics", metrics},
          {"files", f},
          {"provenance", provenance}};
}

ArtifactManifest ArtifactManifest::from_json(const json& j, const std::string& where) {
  SAFEDEC_CHECK(j.is_object(), where, ": the manifest must be a JSON object");
  ArtifactManifest m;
  m.kind = artifact_kind_from_name(get_field<std::string>(j, "kind", where));
  m.format_version = get_field<int>(j, "format_version", where);
  SAFEDEC_CHECK(m.format_version >= 1 && m.format_version <= kFormatVersion, where, ": format_version ",
                m.format_version, " is not supported by this safedec (it reads versions 1..", kFormatVersion, ")");
  m.model = ModelIdentity::from_json(get_field<json>(j, "model", where), where + " (model)");
  m.training_config = j.value("training_config", json::object());
  m.data_ids_sha256 = j.value("data_ids_sha256", std::string());
  m.seed = j.value("seed", uint64_t{0});
  m.params = j.value("params", json::object());
  m.metrics = j.value("metrics", json::object());
  m.provenance = j.value("provenance", json::object());
  const json files = j.value("files", json::object());
  SAFEDEC_CHECK(files.is_object(), where, ": `files` must map file names to sha256");
  for (auto it = files.begin(); it != files.end(); ++it) {
    SAFEDEC_CHECK(it.value().is_string(), where, ": the sha256 of file ", it.key(), " must be a string");
    SAFEDEC_CHECK(it.key().find('/') == std::string::npos && it.key().find("..") == std::string::npos, where,
                  ": file name '", it.key(), "' must be a plain name inside the artifact directory");
    m.files[it.key()] = it.value().get<std::string>();
  }
  return m;
}

bool is_artifact_dir(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && fs::is_regular_file(fs::path(path) / "manifest.json", ec);
}

ArtifactDir open_artifact(const std::string& path_in, ArtifactKind expected, bool verify_hashes) {
  const std::string path = resolve_artifact_path(path_in);
  SAFEDEC_CHECK(fs::exists(path), "the artifact ", path_in, " does not exist (relative paths are tried against the ",
                "current directory and the source tree ", source_dir(), ")");
  SAFEDEC_CHECK(is_artifact_dir(path), "the artifact ", path, " is not an artifact directory (it has no manifest.json)");
  const std::string mpath = path + "/manifest.json";
  json j;
  try {
    j = json::parse(read_text(mpath));
  } catch (const json::parse_error& e) {
    fail(mpath, " is not valid JSON: ", e.what());
  }
  ArtifactDir a;
  a.path = path;
  a.manifest = ArtifactManifest::from_json(j, mpath);
  SAFEDEC_CHECK(a.manifest.kind == expected, "the artifact ", path, " is a ", artifact_kind_name(a.manifest.kind),
                " artifact, but a ", artifact_kind_name(expected), " artifact is needed here");
  for (const auto& [name, sha] : a.manifest.files) {
    const std::string f = a.file(name);
    SAFEDEC_CHECK(fs::is_regular_file(f), "the artifact ", path, " lists the file ", name, " but it is missing");
    if (verify_hashes) {
      const std::string got = sha256_file(f);
      SAFEDEC_CHECK(got == sha, "the artifact file ", f, " has sha256 ", got, " but its manifest records ", sha,
                    "; the file was changed or truncated after the artifact was written");
    }
  }
  return a;
}

void check_artifact_model(const ArtifactDir& a, const ModelConfig& model, bool check_layers) {
  const ModelIdentity& made = a.manifest.model;
  const ModelIdentity use = ModelIdentity::of(model);
  const bool sizes = made.vocab_size == use.vocab_size && made.hidden_size == use.hidden_size &&
                     (!check_layers || made.n_layers == use.n_layers);
  const bool name = made.name.empty() || use.name.empty() || made.name == use.name;
  SAFEDEC_CHECK(sizes && name, "the ", artifact_kind_name(a.manifest.kind), " artifact ", a.path,
                " was made for the model ", made.describe(), " but is being used with ", use.describe(),
                "; train or extract it for this model");
}

ArtifactWriter::ArtifactWriter(std::string dir, ArtifactManifest manifest, bool overwrite)
    : dir_(std::move(dir)), manifest_(std::move(manifest)), overwrite_(overwrite) {
  SAFEDEC_CHECK(!dir_.empty(), "ArtifactWriter: no output directory given");
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
  SAFEDEC_CHECK(overwrite_ || !fs::exists(dir_), "the artifact directory ", dir_,
                " already exists; choose another output or allow overwriting (--force)");
  const fs::path target(dir_);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  tmp_ = dir_ + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp_, ec);
  fs::create_directories(tmp_);
}

ArtifactWriter::~ArtifactWriter() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
}

std::string ArtifactWriter::file(const std::string& name) {
  SAFEDEC_CHECK(!committed_, "ArtifactWriter: already committed");
  SAFEDEC_CHECK(!name.empty() && name.find('/') == std::string::npos && name != "manifest.json",
                "ArtifactWriter: bad file name '", name, "'");
  manifest_.files[name] = "";
  return tmp_ + "/" + name;
}

void ArtifactWriter::write_tensors(const std::string& name,
                                   const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                   const std::map<std::string, std::string>& metadata) {
  write_tensors_f32(file(name), tensors, metadata);
}

void write_tensors_f32(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<torch::Tensor> keep;
  std::vector<SafetensorsWriteTensor> out;
  for (const auto& [tname, t] : tensors) {
    SAFEDEC_CHECK(t.defined(), "writing ", path, ": tensor ", tname, " is undefined");
    torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    SAFEDEC_CHECK(torch::isfinite(c).all().item<bool>(), "refusing to write the tensor ", tname, " to ", path,
                  ": it holds NaN/Inf values");
    keep.push_back(c);
    SafetensorsWriteTensor w;
    w.name = tname;
    w.dtype = SafetensorsDtype::F32;
    w.shape = std::vector<int64_t>(c.sizes().begin(), c.sizes().end());
    w.data = c.data_ptr<float>();
    w.nbytes = static_cast<size_t>(c.numel()) * sizeof(float);
    out.push_back(w);
  }
  write_safetensors(path, out, metadata);
}

std::string ArtifactWriter::commit() {
  SAFEDEC_CHECK(!committed_, "ArtifactWriter: already committed");
  for (auto& [name, sha] : manifest_.files) {
    const std::string f = tmp_ + "/" + name;
    SAFEDEC_CHECK(fs::is_regular_file(f), "ArtifactWriter: the file ", name, " was announced but not written");
    sha = sha256_file(f);
  }
  manifest_.provenance["safedec_version"] = SAFEDEC_VERSION;
  const auto commit = git_commit(source_dir());
  manifest_.provenance["git_commit"] = commit ? json(*commit) : json(nullptr);
  manifest_.provenance["created_utc"] = utc_now_iso8601();
  write_file_atomic(tmp_ + "/manifest.json", manifest_.to_json().dump(2) + "\n");
  std::error_code ec;
  std::string old;
  if (fs::exists(dir_)) {
    SAFEDEC_CHECK(overwrite_, "the artifact directory ", dir_, " appeared while writing; not replacing it");
    old = dir_ + ".old-" + std::to_string(::getpid());
    fs::remove_all(old, ec);
    fs::rename(dir_, old);
  }
  fs::rename(tmp_, dir_);
  const fs::path target(dir_);
  fsync_directory(target.has_parent_path() ? target.parent_path().string() : ".");
  if (!old.empty()) fs::remove_all(old, ec);
  committed_ = true;
  return dir_;
}

std::map<std::string, torch::Tensor> read_tensors_f32(const std::string& path) {
  auto file = SafetensorsFile::open(path);
  std::map<std::string, torch::Tensor> out;
  for (const auto& t : file->tensors()) out.emplace(t.name, artifact_tensor_f32(t, path));
  return out;
}

bool artifact_dtype_supported(const SafetensorsTensor& t) {
  switch (t.dtype) {
    case SafetensorsDtype::F32:
    case SafetensorsDtype::F16:
    case SafetensorsDtype::BF16:
    case SafetensorsDtype::F64:
      return true;
    default:
      return false;
  }
}

void check_artifact_values(const torch::Tensor& x, const std::string& what) {
  if (x.numel() == 0) return;
  const torch::Tensor finite = torch::isfinite(x);
  if (!finite.all().item<bool>()) {
    const int64_t bad = x.numel() - finite.sum().item<int64_t>();
    fail("the ", what, " holds ", bad, " NaN/Inf value(s); the file is corrupt (or was written by a diverged ",
         "training run): make it again");
  }
  const double peak = x.abs().max().item<double>();
  SAFEDEC_CHECK(peak <= kMaxArtifactMagnitude, "the ", what, " has an entry of magnitude ", peak,
                ", beyond the limit ", kMaxArtifactMagnitude, " for any trained artifact; the file is corrupt or not ",
                "this kind of artifact: make it again");
}

torch::Tensor artifact_tensor_f32(const SafetensorsTensor& t, const std::string& path) {
  SAFEDEC_CHECK(artifact_dtype_supported(t), "the tensor '", t.name, "' in ", path, " is stored as ",
                safetensors_dtype_name(t.dtype), "; artifact tensors must be floating point (F32, F16, BF16 or ",
                "F64): the file is corrupt or not this kind of artifact");
  std::vector<float> data = safetensors_to_float32(t);
  torch::Tensor x = torch::from_blob(data.data(), t.shape, torch::kFloat32).clone();
  check_artifact_values(x, "tensor '" + t.name + "' in " + path);
  return x;
}

torch::Tensor read_tensor_f32(const std::string& path_in, const std::string& name) {
  const std::string path = resolve_artifact_path(path_in);
  SAFEDEC_CHECK(file_exists(path), "the artifact ", path_in, " does not exist (relative paths are tried against the ",
                "current directory and the source tree ", source_dir(), ")");
  auto file = SafetensorsFile::open(path);
  const SafetensorsTensor* t = file->find(name);
  SAFEDEC_CHECK(t != nullptr, "the safetensors file ", path, " has no tensor '", name, "'");
  return artifact_tensor_f32(*t, path);
}

std::string resolve_artifact_path(const std::string& path) {
  std::error_code ec;
  if (path.empty() || path[0] == '/' || fs::exists(path, ec)) return path;
  const std::string in_tree = source_dir() + "/" + path;
  return fs::exists(in_tree, ec) ? in_tree : path;
}

std::string data_ids_hash(std::vector<std::string> ids) {
  std::sort(ids.begin(), ids.end());
  Sha256 h;
  for (const auto& id : ids) {
    h.update(id);
    h.update("\n");
  }
  return h.hex_digest();
}

}  // namespace safedec
