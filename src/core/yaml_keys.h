// YamlKeys: reads the keys of one YAML mapping and rejects the ones nobody asked for, so a typo in a
// config file is an error (with FILE:LINE:COLUMN and the allowed keys) instead of a silently
// ignored setting. Used by every config parser (eval configs, method configs). A mapping that
// repeats a key (which YAML parsers otherwise resolve silently, the first value winning) is refused
// with FILE:LINE:COLUMN of the repeat, at every depth below the mapping a YamlKeys reads.
#pragma once
#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

#include "core/error.h"

namespace safedec {

// "SOURCE:LINE:COLUMN" of a node (just SOURCE when the node carries no position).
std::string yaml_where(const std::string& source, const YAML::Node& node);

// Throws safedec::Error at the first mapping (at any depth) that holds the same key twice.
void check_unique_yaml_keys(const YAML::Node& node, const std::string& source);

// Why `path` cannot be read as a config file ("... is a directory, not a file", "... does not
// exist", "... cannot be read: Permission denied"), or "" when it can. `what` names it.
std::string config_file_problem(const std::string& path, const std::string& what);

// Reads and parses a YAML config file: a clear error for a directory, a missing or unreadable file,
// malformed YAML (FILE:LINE:COLUMN) and repeated keys. An empty file gives a null node.
YAML::Node load_yaml_file(const std::string& path, const std::string& what);

class YamlKeys {
 public:
  // `node` must be a mapping; with `optional` an absent or null node reads as an empty mapping.
  // `what` names the mapping in messages ("the eval config", "`generation`", ...).
  YamlKeys(const YAML::Node& node, std::string source, std::string what, bool optional = false);
  // The value of `key` (undefined if absent); marks the key as known.
  YAML::Node get(const std::string& key);
  // Converts the value of `key` into `out` if present and not null; a wrong type is an error.
  template <typename T>
  void read(const std::string& key, T& out) {
    YAML::Node v = get(key);
    if (!v || v.IsNull()) return;
    try {
      out = v.as<T>();
    } catch (const YAML::Exception&) {
      fail(yaml_where(source_, v), ": ", what_, " key `", key, "` has a value of the wrong type ('",
           v.IsScalar() ? v.Scalar() : std::string("a ") + (v.IsMap() ? "mapping" : "sequence"), "')");
    }
  }
  // Marks `key` as known without reading it.
  void allow(const std::string& key);
  // Throws on the first key that was neither read nor allowed.
  void finish() const;

 private:
  YAML::Node node_;
  std::string source_, what_;
  std::vector<std::string> allowed_;
};

}  // namespace safedec
