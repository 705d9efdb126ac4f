// A run directory: config.resolved.yaml, manifest.json (version, git commit, host, time, seeds,
// sha256 of every model and dataset file), results.jsonl, generations.jsonl, report.md, plots/.
// Opening refuses to mix two different configurations in one directory.
#pragma once
#include <yaml-cpp/yaml.h>

#include "core/files.h"
#include "core/run_lock.h"

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace safedec {

// How to treat a directory that already holds a run.
struct RunDirOptions {
  bool resume = false;  // continue a run whose resolved config is identical
  bool force = false;   // start over: the run files (config, manifest, results, generations,
                        // ref_nll, report, plots, traces) are deleted; other files are left alone
};

// Inputs of manifest.json beyond what is discovered automatically.
struct ManifestInputs {
  std::map<std::string, uint64_t> seeds;    // e.g. {"sample", 0}, {"decode", 1234}
  std::vector<std::string> model_files;     // hashed with sha256
  std::vector<std::string> dataset_files;   // hashed with sha256
  nlohmann::json extra = nlohmann::json::object();  // anything else, stored under "extra"
};

// The manifest as JSON: safedec_version, git_commit, git_dirty, hostname, created_utc (ISO 8601),
// seeds, models [{path, bytes, sha256}], datasets [{path, bytes, sha256}], extra.
nlohmann::json build_manifest(const ManifestInputs& inputs);

// The canonical text of a resolved config: block style, map keys sorted (comments, flow/block
// style and key order do not matter; every value does). Written to config.resolved.yaml.
std::string canonical_yaml(const YAML::Node& config);

// An opened run directory.
class RunDirectory {
 public:
  // Creates `path` (and parents) or reuses it:
  //  - no config.resolved.yaml yet: the directory is (re)used and the config written;
  //  - same resolved config: allowed only with resume (else an error suggesting resume/force);
  //  - different resolved config: refused unless force, and the message names the first
  //    differing line;
  //  - force: removes the run files first, then starts fresh.
  // Before reading or writing anything it takes the directory's advisory lock (RunDirLock): a
  // second process opening the same directory is refused, naming the holder's pid.
  static RunDirectory open(const std::string& path, const YAML::Node& resolved_config,
                           const RunDirOptions& options = {});

  const std::string& path() const { return path_; }
  bool resumed() const { return resumed_; }
  std::string config_path() const { return path_ + "/config.resolved.yaml"; }
  std::string manifest_path() const { return path_ + "/manifest.json"; }
  std::string results_path() const { return path_ + "/results.jsonl"; }
  std::string generations_path() const { return path_ + "/generations.jsonl"; }
  std::string report_path() const { return path_ + "/report.md"; }
  std::string plots_dir() const { return path_ + "/plots"; }

  // Builds and atomically writes manifest.json; returns what was written.
  nlohmann::json write_manifest(const ManifestInputs& inputs) const;

 private:
  std::string path_;
  bool resumed_ = false;
  std::shared_ptr<RunDirLock> lock_;  // held while any copy of this object lives (src/core/run_lock.h)
};

}  // namespace safedec
