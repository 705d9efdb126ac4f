// Run directories and manifests. Every file that describes a run is replaced atomically
// (temp + fsync + rename + directory fsync); results and generations are appended line by line
// (results_io). The resolved config is compared in canonical form (parsed and re-emitted), so
// comments and formatting do not matter but any value does.
#include "eval/run_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "core/error.h"
#include "core/files.h"
#include "core/paths.h"
#include "core/sha256.h"

namespace safedec {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SAFEDEC_CHECK(in.good(), "cannot open ", path, ".");
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

std::string first_difference(const std::string& a, const std::string& b) {
  std::istringstream sa(a), sb(b);
  std::string la, lb;
  for (size_t line = 1;; ++line) {
    const bool ga = static_cast<bool>(std::getline(sa, la));
    const bool gb = static_cast<bool>(std::getline(sb, lb));
    if (!ga && !gb) return "(no difference)";
    if (!ga) la = "<end of file>";
    if (!gb) lb = "<end of file>";
    if (la != lb || !ga || !gb)
      return "line " + std::to_string(line) + ": existing '" + la + "' vs new '" + lb + "'";
  }
}

json file_entries(const std::vector<std::string>& files, const char* what) {
  json arr = json::array();
  for (const auto& f : files) {
    // A model may be a checkpoint directory: its bytes are the sum of its files'.
    const bool dir = fs::is_directory(f);
    SAFEDEC_CHECK(dir || file_exists(f), "manifest: ", what, " file not found: ", f, ".");
    uintmax_t bytes = 0;
    if (dir) {
      for (const auto& e : fs::directory_iterator(f))
        if (e.is_regular_file()) bytes += e.file_size();
    } else {
      bytes = fs::file_size(f);
    }
    arr.push_back({{"path", fs::absolute(f).lexically_normal().string()}, {"bytes", bytes}, {"sha256", sha256_path(f)}});
  }
  return arr;
}

}  // namespace

json build_manifest(const ManifestInputs& inputs) {
  json m;
  m["safedec_version"] = SAFEDEC_VERSION;
  const auto commit = git_commit(source_dir());
  m["git_commit"] = commit ? json(*commit) : json(nullptr);
  const auto dirty = commit ? git_dirty(source_dir()) : std::nullopt;
  m["git_dirty"] = dirty ? json(*dirty) : json(nullptr);
  char host[256] = {0};
  m["hostname"] = ::gethostname(host, sizeof host - 1) == 0 ? json(std::string(host)) : json(nullptr);
  m["created_utc"] = utc_now_iso8601();
  m["seeds"] = json::object();
  for (const auto& kv : inputs.seeds) m["seeds"][kv.first] = kv.second;
  m["models"] = file_entries(inputs.model_files, "model");
  m["datasets"] = file_entries(inputs.dataset_files, "dataset");
  m["extra"] = inputs.extra;
  // The settings that change speed figures or numerics without changing the config (null: unset).
  m["environment"] = json::object();
  for (const char* k : {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "SAFEDEC_FUSED_DECODE",
                        "SAFEDEC_QUANT_ACT"}) {
    const char* v = std::getenv(k);
    m["environment"][k] = v ? json(std::string(v)) : json(nullptr);
  }
  return m;
}

namespace {
// Emits `node` in block style with map keys sorted, so only values matter.
void emit_canonical(YAML::Emitter& out, const YAML::Node& node) {
  if (node.IsMap()) {
    // Sort keys only: YAML::Node's assignment copies values, so sorting Nodes would corrupt them.
    std::vector<std::string> keys;
    for (const auto& kv : node) keys.push_back(kv.first.as<std::string>());
    std::sort(keys.begin(), keys.end());
    out << YAML::BeginMap;
    for (const auto& k : keys) {
      out << YAML::Key << k << YAML::Value;
      emit_canonical(out, node[k]);
    }
    out << YAML::EndMap;
  } else if (node.IsSequence()) {
    out << YAML::BeginSeq;
    for (const auto& item : node) emit_canonical(out, item);
    out << YAML::EndSeq;
  } else if (node.IsScalar()) {
    out << node.Scalar();
  } else {
    out << YAML::Null;
  }
}
}  // namespace

std::string canonical_yaml(const YAML::Node& config) {
  YAML::Emitter out;
  out << YAML::Block;
  emit_canonical(out, config);
  SAFEDEC_CHECK(out.good(), "cannot serialise the resolved config: ", out.GetLastError(), ".");
  return std::string(out.c_str()) + "\n";
}

namespace {
// A directory where a run with this config was opened but failed before writing anything else (bad
// data found after the config was recorded): starting it again is not a resume of anything.
bool holds_only_config(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name != "config.resolved.yaml" && name != ".safedec.lock") return false;
  }
  return !ec;
}
}  // namespace

RunDirectory RunDirectory::open(const std::string& path, const YAML::Node& resolved_config,
                                const RunDirOptions& options) {
  SAFEDEC_CHECK(!path.empty(), "the run directory path is empty.");
  RunDirectory rd;
  rd.path_ = fs::path(path).lexically_normal().string();
  while (rd.path_.size() > 1 && rd.path_.back() == '/') rd.path_.pop_back();
  std::error_code ec;
  SAFEDEC_CHECK(!fs::exists(rd.path_, ec) || fs::is_directory(rd.path_, ec), "run directory ",
                rd.path_, " exists but is not a directory.");
  fs::create_directories(rd.path_, ec);
  SAFEDEC_CHECK(!ec, "cannot create the run directory ", rd.path_, ": ", ec.message(), ".");
  rd.lock_ = RunDirLock::acquire(rd.path_);

  const std::string config_text = canonical_yaml(resolved_config);
  if (file_exists(rd.config_path())) {
    std::string existing;
    try {
      existing = canonical_yaml(YAML::Load(read_all(rd.config_path())));
    } catch (const YAML::Exception& e) {
      SAFEDEC_CHECK(options.force, rd.config_path(), " is not valid YAML (", e.what(),
                    "); pass force to start the run over.");
    }
    const bool same = existing == config_text;
    if (options.force) {
      for (const char* f : {"config.resolved.yaml", "manifest.json", "results.jsonl",
                            "generations.jsonl", "ref_nll.jsonl", "report.md"})
        fs::remove(fs::path(rd.path_) / f, ec);
      fs::remove_all(rd.plots_dir(), ec);
      fs::remove_all(fs::path(rd.path_) / "traces", ec);
    } else if (!same) {
      fail("run directory ", rd.path_, " already holds a run with a different resolved config (",
           first_difference(existing, config_text),
           "). Use a new directory, or force to discard the old run.");
    } else if (!options.resume && holds_only_config(rd.path_)) {
      // Nothing to continue: start it as new (the config below is the same one).
    } else if (!options.resume) {
      fail("run directory ", rd.path_, " already holds a run with this config; resume to continue ",
           "it, or force to start over.");
    } else {
      rd.resumed_ = true;
      return rd;  // identical config already on disk
    }
  }
  write_file_atomic(rd.config_path(), config_text);
  return rd;
}

json RunDirectory::write_manifest(const ManifestInputs& inputs) const {
  json m = build_manifest(inputs);
  write_file_atomic(manifest_path(), m.dump(2) + "\n");
  return m;
}

}  // namespace safedec
