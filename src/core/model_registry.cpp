#include "core/model_registry.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "core/paths.h"

namespace safedec {

namespace fs = std::filesystem;

std::vector<ModelEntry> registered_models() {
  std::vector<ModelEntry> out;
  const fs::path dir = fs::path(source_dir()) / "configs" / "models";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& f : fs::directory_iterator(dir)) {
    if (f.path().extension() != ".yaml") continue;
    YAML::Node node;
    try {
      node = YAML::LoadFile(f.path().string());
    } catch (const YAML::Exception& e) {
      fail("malformed model config ", f.path().string(), " at line ", e.mark.line + 1, ", column ",
           e.mark.column + 1, ": ", e.msg);
    }
    SAFEDEC_CHECK(node["name"] && node["file"], "model config ", f.path().string(),
                  " must have the keys 'name' and 'file'");
    ModelEntry e;
    e.name = node["name"].as<std::string>();
    e.path = model_cache_dir() + "/" + node["file"].as<std::string>();
    e.chat_template = node["chat_template"] ? node["chat_template"].as<std::string>() : "auto";
    e.weights = node["weights"] ? node["weights"].as<std::string>() : "fp32";
    SAFEDEC_CHECK(e.weights == "fp32" || e.weights == "quantized", "model config ", f.path().string(),
                  ": key 'weights' is '", e.weights, "'; allowed: fp32, quantized.");
    e.config_file = f.path().string();
    out.push_back(e);
  }
  std::sort(out.begin(), out.end(), [](const ModelEntry& a, const ModelEntry& b) { return a.name < b.name; });
  return out;
}

ModelEntry resolve_model(const std::string& name_or_path) {
  for (const auto& e : registered_models()) {
    if (e.name != name_or_path) continue;
    SAFEDEC_CHECK(fs::exists(e.path), "model '", e.name, "' is registered (", e.config_file,
                  ") but its file is missing: ", e.path, "; run scripts/setup.sh to fetch it");
    return e;
  }
  std::error_code ec;
  if (fs::exists(name_or_path, ec)) return ModelEntry{name_or_path, name_or_path, "auto", ""};
  std::string known;
  for (const auto& e : registered_models()) known += (known.empty() ? "" : ", ") + e.name;
  fail("unknown model '", name_or_path, "': it is neither a registered name (", known.empty() ? "none" : known,
       ") nor an existing file or directory");
}

}  // namespace safedec
