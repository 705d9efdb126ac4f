// Deployment bundles: one directory with a method config, every artifact it reads and a manifest of hashes, written by `safedec export bundle` and read (verified) by open_bundle for `safedec serve --bundle` / `safedec generate --bundle`.
//
// Layout:
//   bundle.json            manifest: format, method, model (name, file name, sha256, sizes), the HDR edit
//                          (optional), every artifact (config key, kind, path in the bundle) and the
//                          sha256 of every file in the bundle; safedec version, git commit, time
//   method.yaml            the resolved method config; artifact paths are bundle-relative (artifacts/<key>)
//   artifacts/<key>/...    each artifact copied as it was (directory with manifest.json, or a file)
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "decoding/strategies/method_config.h"
#include "export/export.h"

namespace safedec {

struct BundleExportOptions {
  std::string config;  // the method config YAML (must name `method:`)
  std::string model = "smollm2-135m-instruct";  // registered name or path the artifacts are checked against
  std::string hdr;          // optional harm-vector artifact applied to the model before decoding
  double hdr_lambda = -1;   // < 0: the artifact's recorded lambda
  std::string out;
  bool force = false;
};
// Checks every artifact the method reads against the model (refusing one made for another model, naming
// both), copies them, hashes everything and writes the bundle atomically (temporary directory + rename).
ExportReport export_bundle(const BundleExportOptions& options);

// An opened, verified bundle.
struct Bundle {
  std::string dir;           // absolute
  std::string model;         // what to load: the recorded registered name or path, or the override
  std::string model_sha256;  // recorded
  MethodConfig method;       // parsed from method.yaml with artifact paths pointing into the bundle
  std::string hdr;           // absolute path of the bundled harm vector ("" = none)
  double hdr_lambda = 0.0;
  nlohmann::json manifest;   // bundle.json as read
};
// Opens a bundle: every file listed in bundle.json must exist and have its recorded sha256 (a changed or
// missing file is refused, naming it). With verify_model, the model to load (model_override, else the
// recorded one) must have the recorded sha256 (refused naming both hashes). Throws safedec::Error.
Bundle open_bundle(const std::string& dir, const std::string& model_override = "", bool verify_model = true);

}  // namespace safedec
