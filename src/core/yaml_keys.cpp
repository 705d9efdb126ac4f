#include "core/yaml_keys.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace safedec {

std::string yaml_where(const std::string& source, const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  if (m.is_null()) return source;
  return source + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}

void check_unique_yaml_keys(const YAML::Node& node, const std::string& source) {
  if (!node) return;
  if (node.IsMap()) {
    std::set<std::string> seen;
    for (const auto& kv : node) {
      const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : YAML::Dump(kv.first);
      if (!seen.insert(key).second)
        fail(yaml_where(source, kv.first), ": the key `", key.size() > 80 ? key.substr(0, 80) + "..." : key,
             "` appears twice in the same mapping; keep one (YAML readers would silently use only one of them)");
      check_unique_yaml_keys(kv.second, source);
    }
  } else if (node.IsSequence()) {
    for (const auto& item : node) check_unique_yaml_keys(item, source);
  }
}

std::string config_file_problem(const std::string& path, const std::string& what) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (path.empty()) return what + ": no file given";
  if (ec || !fs::exists(st)) return what + " " + path + " does not exist";
  if (fs::is_directory(st)) return what + " " + path + " is a directory, not a file; give the YAML file inside it";
  if (!fs::is_regular_file(st)) return what + " " + path + " is not a regular file";
  std::ifstream in(path, std::ios::binary);
  if (!in) return what + " " + path + " cannot be read: " + std::strerror(errno);
  return "";
}

YAML::Node load_yaml_file(const std::string& path, const std::string& what) {
  const std::string problem = config_file_problem(path, what);
  SAFEDEC_CHECK(problem.empty(), problem);
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  SAFEDEC_CHECK(!in.bad(), what, " ", path, " cannot be read: ", std::strerror(errno));
  YAML::Node node;
  try {
    node = YAML::Load(text.str());
  } catch (const YAML::Exception& e) {
    // e.msg only: the parser's message names the construct, not the file's content.
    fail(path, ":", e.mark.line + 1, ":", e.mark.column + 1, ": malformed YAML in ", what, ": ", e.msg);
  }
  check_unique_yaml_keys(node, path);
  return node;
}

YamlKeys::YamlKeys(const YAML::Node& node, std::string source, std::string what, bool optional)
    // (An absent key yields an invalid node, which can be copied but not assigned to.)
    : node_(optional && (!node || node.IsNull()) ? YAML::Node(YAML::NodeType::Map) : node),
      source_(std::move(source)),
      what_(std::move(what)) {
  SAFEDEC_CHECK(node_ && node_.IsMap(), node_ ? yaml_where(source_, node_) : source_, ": ", what_,
                " must be a YAML mapping of keys");
  check_unique_yaml_keys(node_, source_);
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
