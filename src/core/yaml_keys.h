// YamlKeys: reads the keys of one YAML mapping and rejects the ones nobody asked for, so a typo in a
// config file is an error (with FILE:LINE:COLUMN and the allowed keys) instead of a silently
// ignored setting. Used by every config parser (eval configs, method configs).
#pragma once
#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

#include "core/error.h"

namespace safedec {

// "SOURCE:LINE:COLUMN" of a node (just SOURCE when the node carries no position).
std::string yaml_where(const std::string& source, const YAML::Node& node);

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
