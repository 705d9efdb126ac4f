// Deployment bundles (bundle.h): write with every artifact and hash, open with every hash checked.
#include "export/bundle.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "artifacts/artifact.h"
#include "core/error.h"
#include "core/files.h"
#include "core/model_registry.h"
#include "core/paths.h"
#include "core/sha256.h"
#include "decoding/methods.h"

namespace safedec {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kBundleFormat = "safedec-bundle";
constexpr int kBundleVersion = 1;

// Replaces every scalar of the YAML tree equal to `from` by `to`; returns how many were replaced.
int replace_scalars(YAML::Node node, const std::string& from, const std::string& to) {
  int n = 0;
  if (node.IsScalar()) return 0;
  if (node.IsMap()) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      YAML::Node v = it->second;
      if (v.IsScalar() && v.Scalar() == from) {
        node[it->first.Scalar()] = to;
        ++n;
      } else {
        n += replace_scalars(v, from, to);
      }
    }
  } else if (node.IsSequence()) {
    for (size_t i = 0; i < node.size(); ++i) {
      if (node[i].IsScalar() && node[i].Scalar() == from) {
        node[i] = to;
        ++n;
      } else {
        n += replace_scalars(node[i], from, to);
      }
    }
  }
  return n;
}

std::string emit_yaml(const YAML::Node& node) {
  YAML::Emitter e;
  e << node;
  return std::string(e.c_str()) + "\n";
}

// sha256 of every regular file under `dir` (relative names, '/'-separated), bundle.json excluded.
std::map<std::string, std::string> hash_tree(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string rel = fs::relative(e.path(), dir).generic_string();
    if (rel == "bundle.json") continue;
    out[rel] = sha256_file(e.path().string());
  }
  return out;
}

// Checks an artifact directory against the model, naming both when it was made for another one.
// Expert weights may come from another (smaller, same-vocabulary) model: their own base model is
// recorded in them and loaded by the method, so they are only hash-checked here.
std::string check_bundled_artifact(const std::string& path, const ModelConfig& model) {
  if (!is_artifact_dir(path)) return "file";
  std::ifstream in(path + "/manifest.json");
  json j;
  try {
    in >> j;
  } catch (const json::exception& e) {
    fail("the artifact ", path, " has an unreadable manifest.json: ", e.what());
  }
  const ArtifactManifest m = ArtifactManifest::from_json(j, path + "/manifest.json");
  const ArtifactDir a = open_artifact(path, m.kind);  // verifies its own file hashes
  if (m.kind != ArtifactKind::ExpertWeights)
    check_artifact_model(a, model, m.kind != ArtifactKind::SoftPrompts);
  return artifact_kind_name(m.kind);
}

void copy_artifact(const std::string& from, const std::string& to) {
  fs::create_directories(fs::path(to).parent_path());
  if (fs::is_directory(from))
    fs::copy(from, to, fs::copy_options::recursive);
  else
    fs::copy_file(from, to);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
ExportReport export_bundle(const BundleExportOptions& o) {
  SAFEDEC_CHECK(!o.config.empty(), "no method config given (--config METHOD.yaml)");
  SAFEDEC_CHECK(fs::is_regular_file(o.config), "the method config ", o.config, " does not exist");
  YAML::Node raw;
  try {
    raw = YAML::LoadFile(o.config);
  } catch (const YAML::Exception& e) {
    fail("the method config ", o.config, " is not valid YAML: ", e.what());
  }
  SAFEDEC_CHECK(raw.IsMap() && raw["method"] && raw["method"].IsScalar(), "the method config ", o.config,
                " must name its method (`method: ", "plain|safedecoding|ngsd|acd|steer`)");
  const std::string method_name = raw["method"].Scalar();
  check_method_name(method_name);
  const MethodConfig method = load_method_config(method_name, o.config);
  StagedDir staged(o.out, o.force);  // refuses an existing --out before any copying
  const ExportModel model = resolve_export_model(o.model);
  const MethodDescriptor& d = method_descriptor(method.method);

  // The resolved config, with each artifact path replaced by its place in the bundle.
  YAML::Node resolved = YAML::Load(method.dump());
  json artifacts = json::array();
  std::vector<std::string> notes;
  for (const MethodArtifactRef& ref : d.artifacts(method)) {
    if (ref.path.empty()) continue;
    const std::string src = resolve_artifact_path(ref.path);
    SAFEDEC_CHECK(fs::exists(src), "the ", ref.key, " artifact ", ref.path, " named by ", o.config,
                  " does not exist (make it first, e.g. with `safedec train`)");
    const std::string kind = check_bundled_artifact(src, model.config);
    const std::string rel = "artifacts/" + ref.key;
    const int replaced = replace_scalars(resolved, ref.path, rel);
    SAFEDEC_ASSERT(replaced >= 1, "the resolved ", method.method, " config does not hold the ", ref.key, " path ",
                   ref.path);
    copy_artifact(src, staged.file(rel));
    artifacts.push_back({{"key", ref.key}, {"kind", kind}, {"path", rel}, {"source", ref.path}});
  }
  json hdr = nullptr;
  if (!o.hdr.empty()) {
    const std::string src = resolve_artifact_path(o.hdr);
    SAFEDEC_CHECK(fs::exists(src), "the harm vector ", o.hdr, " does not exist");
    const std::string kind = check_bundled_artifact(src, model.config);
    SAFEDEC_CHECK(kind == "harm_vector" || kind == "file", "--hdr ", o.hdr, " is a ", kind,
                  " artifact, not a harm vector");
    double lambda = o.hdr_lambda;
    if (lambda < 0) {
      lambda = 3.0;
      if (is_artifact_dir(src)) {
        const ArtifactDir a = open_artifact(src, ArtifactKind::HarmVector, false);
        if (a.manifest.params.contains("lambda") && a.manifest.params["lambda"].is_number())
          lambda = a.manifest.params["lambda"].get<double>();
      }
    }
    copy_artifact(src, staged.file("artifacts/hdr"));
    hdr = {{"path", "artifacts/hdr"}, {"lambda", lambda}, {"source", o.hdr}};
    notes.push_back("HDR edit bundled (lambda " + std::to_string(lambda) + ")");
  }
  json other_models = json::array();
  for (const std::string& m : d.models(method)) {
    if (m.empty()) continue;
    const ModelEntry e = resolve_model(m);
    other_models.push_back({{"name", m}, {"file", fs::path(e.path).filename().string()}, {"sha256", sha256_path(e.path)}});
  }
  write_file_atomic(staged.file("method.yaml"), emit_yaml(resolved));

  json manifest = {{"format", kBundleFormat},
                   {"format_version", kBundleVersion},
                   {"method", method.method},
                   {"model",
                    {{"name", o.model},
                     {"file", fs::path(model.path).filename().string()},
                     {"sha256", sha256_path(model.path)},
                     {"identity", ModelIdentity::of(model.config).to_json()}}},
                   {"hdr", hdr},
                   {"artifacts", artifacts},
                   {"models", other_models},
                   {"files", hash_tree(staged.path())}};
  manifest["provenance"] = {{"safedec_version", SAFEDEC_VERSION}, {"created_utc", utc_now_iso8601()}};
  if (const auto commit = git_commit(source_dir())) manifest["provenance"]["git_commit"] = *commit;
  write_file_atomic(staged.file("bundle.json"), manifest.dump(2) + "\n");
  ExportReport r;
  r.out = staged.commit();
  for (const auto& [name, sha] : manifest["files"].items()) r.files.push_back(name);
  r.files.push_back("bundle.json");
  notes.insert(notes.begin(), "bundle of method " + method.method + " with " + std::to_string(artifacts.size()) +
                                  " artifact(s) for " + o.model + " (sha256 " +
                                  manifest["model"]["sha256"].get<std::string>().substr(0, 12) + "...)");
  notes.push_back("use: safedec serve --bundle " + r.out + "  or  safedec generate --bundle " + r.out);
  r.notes = notes;
  return r;
}

// ---------------------------------------------------------------------------------------------
Bundle open_bundle(const std::string& dir_in, const std::string& model_override, bool verify_model) {
  SAFEDEC_CHECK(fs::is_directory(dir_in), "the bundle ", dir_in, " is not a directory (make one with `safedec export ",
                "bundle`)");
  Bundle b;
  b.dir = fs::absolute(dir_in).lexically_normal().string();
  while (b.dir.size() > 1 && b.dir.back() == '/') b.dir.pop_back();
  const std::string mpath = b.dir + "/bundle.json";
  std::ifstream in(mpath);
  SAFEDEC_CHECK(in.good(), "the bundle ", dir_in, " has no bundle.json");
  try {
    in >> b.manifest;
  } catch (const json::exception& e) {
    fail("the bundle manifest ", mpath, " is not valid JSON: ", e.what());
  }
  const json& m = b.manifest;
  SAFEDEC_CHECK(m.is_object() && m.value("format", "") == kBundleFormat, mpath, " is not a safedec bundle manifest");
  SAFEDEC_CHECK(m.value("format_version", 0) == kBundleVersion, mpath, " has format_version ",
                m.value("format_version", 0), "; this safedec reads version ", kBundleVersion);
  SAFEDEC_CHECK(m.contains("files") && m["files"].is_object() && m["files"].contains("method.yaml"), mpath,
                " lists no files (method.yaml at least)");
  // Every listed file, with its hash: a changed or missing file refuses the whole bundle.
  for (const auto& [rel, sha] : m["files"].items()) {
    SAFEDEC_CHECK(rel.find("..") == std::string::npos && !rel.empty() && rel[0] != '/', mpath,
                  " lists a file outside the bundle: ", rel);
    const std::string f = b.dir + "/" + rel;
    SAFEDEC_CHECK(fs::is_regular_file(f), "the bundle ", b.dir, " is missing its file ", rel,
                  "; re-export the bundle");
    SAFEDEC_CHECK(sha.is_string() && sha256_file(f) == sha.get<std::string>(), "the bundle file ", f,
                  " does not match its sha256 in bundle.json (changed or truncated); refusing the bundle");
  }
  const json& model = m.at("model");
  b.model_sha256 = model.value("sha256", "");
  b.model = model_override.empty() ? model.value("name", "") : model_override;
  if (verify_model) {
    const ModelEntry e = resolve_model(b.model);
    const std::string got = sha256_path(e.path);
    SAFEDEC_CHECK(got == b.model_sha256, "the bundle ", b.dir, " was made for the model ", model.value("name", ""),
                  " (", model.value("file", ""), ", sha256 ", b.model_sha256, ") but ", b.model, " (", e.path,
                  ") has sha256 ", got, "; use that model or re-export the bundle for this one");
    for (const auto& om : m.value("models", json::array())) {
      const ModelEntry oe = resolve_model(om.value("name", ""));
      SAFEDEC_CHECK(sha256_path(oe.path) == om.value("sha256", ""), "the bundle's extra model ", om.value("name", ""),
                    " (", oe.path, ") does not have the sha256 recorded in ", mpath);
    }
  }
  // The method config with the bundle's artifact paths made absolute.
  YAML::Node cfg;
  try {
    cfg = YAML::LoadFile(b.dir + "/method.yaml");
  } catch (const YAML::Exception& e) {
    fail("the bundle's method.yaml is not valid YAML: ", e.what());
  }
  for (const auto& a : m.value("artifacts", json::array())) {
    const std::string rel = a.value("path", "");
    SAFEDEC_CHECK(!rel.empty() && fs::exists(b.dir + "/" + rel), "the bundle artifact ", rel, " is missing");
    replace_scalars(cfg, rel, b.dir + "/" + rel);
  }
  b.method = parse_method_config(m.value("method", ""), cfg, b.dir + "/method.yaml");
  if (m.contains("hdr") && m["hdr"].is_object()) {
    b.hdr = b.dir + "/" + m["hdr"].value("path", "artifacts/hdr");
    b.hdr_lambda = m["hdr"].value("lambda", 3.0);
  }
  return b;
}

}  // namespace safedec
