#include "core/yaml_keys.h"

#include <algorithm>

namespace safedec {

std::string yaml_where(const std::string& source, const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  if (m.is_null()) return source;
  return source + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}

YamlKeys::YamlKeys(const YAML::Node& node, std::string source, std::string what, bool optional)
    // (An absent key yields an invalid node, which can be copied but not assigned to.)
    : node_(optional && (!node || node.IsNull()) ? YAML::Node(YAML::NodeType::Map) : node),
      source_(std::move(source)),
      what_(std::move(what)) {
  SAFEDEC_CHECK(node_ && node_.IsMap(), node_ ? yaml_where(source_, node_) : source_, ": ", what_,
                " must be a YAML mapping of keys");
}

YAML::Node YamlKeys::get(const std::string& key) {
  allowed_.push_back(key);
  // The non-const operator[] gives an undefined but valid node for an absent key (the const one an
  // invalid node that cannot be assigned); it is not added to the mapping unless assigned to.
  return node_[key];
}

void YamlKeys::allow(const std::string& key) { allowed_.push_back(key); }

void YamlKeys::finish() const {
  for (const auto& kv : node_) {
    const std::string k = kv.first.as<std::string>();
    if (std::find(allowed_.begin(), allowed_.end(), k) != allowed_.end()) continue;
    std::string list;
    for (const auto& a : allowed_) list += (list.empty() ? "" : ", ") + a;
    fail(yaml_where(source_, kv.first), ": unknown key `", k, "` in ", what_, "; allowed keys: ", list);
  }
}

}  // namespace safedec
