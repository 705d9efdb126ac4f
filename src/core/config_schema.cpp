// ConfigSchema (see config_schema.h).
#include "core/config_schema.h"

#include <cmath>
#include <sstream>

#include "core/error.h"
#include "core/yaml_keys.h"

namespace safedec {

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

std::string num_text(double x) {
  std::ostringstream s;
  s << x;
  return s.str();
}

// yaml-cpp's conversion with a positioned error for a wrong type.
template <typename T>
T convert(const YAML::Node& v, const std::string& where, const std::string& key) {
  try {
    return v.as<T>();
  } catch (const YAML::Exception&) {
    fail(where, ": `", key, "` has a value of the wrong type ('",
         v.IsScalar() ? v.Scalar() : std::string("a ") + (v.IsMap() ? "mapping" : "sequence"), "')");
  }
}

template <typename T>
std::vector<T> convert_list(const YAML::Node& v, const std::string& where, const std::string& key) {
  if (v.IsScalar()) return {convert<T>(v, where, key)};  // a single value stands for a list of one
  SAFEDEC_CHECK(v.IsSequence(), where, ": `", key, "` must be a list");
  std::vector<T> out;
  for (const auto& e : v) out.push_back(convert<T>(e, where, key));
  return out;
}

}  // namespace

ConfigSchema::Field& ConfigSchema::Field::range(double lo, double hi) {
  bounds = std::make_pair(lo, hi);
  return *this;
}

ConfigSchema::Field& ConfigSchema::Field::one_of(std::vector<std::string> a) {
  allowed = std::move(a);
  return *this;
}

ConfigSchema::Field& ConfigSchema::Field::required() {
  is_required = true;
  return *this;
}

ConfigSchema::ConfigSchema(std::string what) : what_(std::move(what)) {}

ConfigSchema::Field& ConfigSchema::push(Field f) {
  for (const auto& k : order_)
    SAFEDEC_ASSERT(k != f.key, "ConfigSchema: key declared twice");
  order_.push_back(f.key);
  fields_.push_back(std::make_unique<Field>(std::move(f)));
  return *fields_.back();
}

ConfigSchema::Field& ConfigSchema::add(const std::string& key, int64_t& value, std::string help) {
  Field f;
  f.key = key;
  f.help = std::move(help);
  int64_t* p = &value;
  f.read = [p, key](const YAML::Node& v, const std::string& where) { *p = convert<int64_t>(v, where, key); };
  f.write = [p, key](YAML::Node& n) { n[key] = *p; };
  f.show = [p] { return std::to_string(*p); };
  f.empty = [] { return false; };
  f.numbers = [p] { return std::vector<double>{static_cast<double>(*p)}; };
  return push(std::move(f));
}

ConfigSchema::Field& ConfigSchema::add(const std::string& key, uint64_t& value, std::string help) {
  Field f;
  f.key = key;
  f.help = std::move(help);
  uint64_t* p = &value;
  f.read = [p, key](const YAML::Node& v, const std::string& where) {
    SAFEDEC_CHECK(!v.IsScalar() || v.Scalar().empty() || v.Scalar()[0] != '-', where, ": `", key,
                  "` must be a non-negative integer, got '", v.Scalar(), "'");
    *p = convert<uint64_t>(v, where, key);
  };
  f.write = [p, key](YAML::Node& n) { n[key] = *p; };
  f.show = [p] { return std::to_string(*p); };
  f.empty = [] { return false; };
  f.numbers = [p] { return std::vector<double>{static_cast<double>(*p)}; };
  return push(std::move(f));
}

ConfigSchema::Field& ConfigSchema::add(const std::string& key, double& value, std::string help) {
  Field f;
  f.key = key;
  f.help = std::move(help);
  double* p = &value;
  f.read = [p, key](const YAML::Node& v, const std::string& where) {
    *p = convert<double>(v, where, key);
    SAFEDEC_CHECK(std::isfinite(*p), where, ": `", key, "` must be a finite number, got '", v.Scalar(), "'");
  };
  f.write = [p, key](YAML::Node& n) { n[key] = *p; };
  f.show = [p] { return num_text(*p); };
  f.empty = [] { return false; };
  f.numbers = [p] { return std::vector<double>{*p}; };
  return push(std::move(f));
}

ConfigSchema::Field& ConfigSchema::add(const std::string& key, bool& value, std::string help) {
  Field f;
  f.key = key;
  f.help = std::move(help);
  bool* p = &value;
  f.read = [p, key](const YAML::Node& v, const std::string& where) { *p = convert<bool>(v, where, key); };
  f.write = [p, key](YAML::Node& n) { n[key] = *p; };
  f.show = [p] { return std::string(*p ? "true" : "false"); };
  f.empty = [] { return false; };
  return push(std::move(f));
}

ConfigSchema::Field& ConfigSchema::add(const std::string& key, std::string& value, std::string help) {
  Field f;
  f.key = key;
  f.help = std::move(help);
  std::string* p = &value;
  f.read = [p, key](const YAML::Node& v, const std::string& where) {
    SAFEDEC_CHECK(v.IsScalar(), where, ": `", key, "` must be a string");
    *p = v.Scalar();
  };
  f.write = [p, key](YAML::Node& n) { n[key] = *p; };
  f.show = [p] { return "'" + *p + "'"; };
  f.empty = [p] { return p->empty(); };
  f.strings = [p] { return std::vector<std::string>{*p}; };
  return push(std::move(f));
}

ConfigSchema::Field& ConfigSchema::add(const std::string& key, std::vector<std::string>& value, std::string help) {
  Field f;
  f.key = key;
  f.help = std::move(help);
  auto* p = &value;
  f.read = [p, key](const YAML::Node& v, const std::string& where) {
    *p = convert_list<std::string>(v, where, key);
  };
  f.write = [p, key](YAML::Node& n) {
    YAML::Node list(YAML::NodeType::Sequence);
    for (const auto& x : *p) list.push_back(x);
    n[key] = list;
  };
  f.show = [p] { return "[" + join(*p) + "]"; };
  f.empty = [p] { return p->empty(); };
  f.strings = [p] { return *p; };
  return push(std::move(f));
}

ConfigSchema::Field& ConfigSchema::add(const std::string& key, std::vector<int64_t>& value, std::string help) {
  Field f;
  f.key = key;
  f.help = std::move(help);
  auto* p = &value;
  f.read = [p, key](const YAML::Node& v, const std::string& where) { *p = convert_list<int64_t>(v, where, key); };
  f.write = [p, key](YAML::Node& n) {
    YAML::Node list(YAML::NodeType::Sequence);
    for (auto x : *p) list.push_back(x);
    n[key] = list;
  };
  f.show = [p] {
    std::vector<std::string> s;
    for (auto x : *p) s.push_back(std::to_string(x));
    return "[" + join(s) + "]";
  };
  f.empty = [p] { return p->empty(); };
  f.numbers = [p] {
    std::vector<double> d;
    for (auto x : *p) d.push_back(static_cast<double>(x));
    return d;
  };
  return push(std::move(f));
}

void ConfigSchema::section(const std::string& key, ConfigSchema& schema, std::string help) {
  order_.push_back(key);
  sections_.emplace_back(key, &schema);
  (void)help;
}

void ConfigSchema::passthrough(const std::string& key, std::string help) {
  order_.push_back(key);
  passthrough_.emplace_back(key, std::move(help));
}

void ConfigSchema::check(const Field& f, const YAML::Node& at, const std::string& where) const {
  if (f.bounds && f.numbers) {
    for (double x : f.numbers())
      SAFEDEC_CHECK(x >= f.bounds->first && x <= f.bounds->second, where, ": ", what_, " key `", f.key,
                    "` must be in [", num_text(f.bounds->first), ", ", num_text(f.bounds->second), "], got ",
                    num_text(x), f.help.empty() ? "" : " (" + f.help + ")");
  }
  if (!f.allowed.empty() && f.strings) {
    for (const auto& s : f.strings()) {
      bool ok = false;
      for (const auto& a : f.allowed) ok = ok || a == s;
      SAFEDEC_CHECK(ok, where, ": ", what_, " key `", f.key, "` must be one of ", join(f.allowed), "; got '", s,
                    "'");
    }
  }
  if (f.is_required) SAFEDEC_CHECK(!f.empty(), where, ": ", what_, " needs `", f.key, "` (", f.help, ")");
  (void)at;
}

void ConfigSchema::parse(const YAML::Node& node, const std::string& source) {
  YamlKeys r(node, source, what_, /*optional=*/true);
  passthrough_nodes_.clear();
  const std::string here = yaml_where(source, node);
  for (const auto& f : fields_) {
    YAML::Node v = r.get(f->key);
    if (v && !v.IsNull()) {
      const std::string where = yaml_where(source, v);
      f->read(v, where);
      check(*f, v, where);
    } else {
      check(*f, v, here);
    }
  }
  for (auto& [key, schema] : sections_) schema->parse(r.get(key), source);
  for (const auto& [key, help] : passthrough_) passthrough_nodes_.emplace_back(key, r.get(key));
  r.finish();
}

YAML::Node ConfigSchema::node(const std::string& key) const {
  for (const auto& [k, n] : passthrough_nodes_)
    if (k == key) return n;
  return YAML::Node();
}

YAML::Node ConfigSchema::dump() const {
  YAML::Node out(YAML::NodeType::Map);
  for (const auto& key : order_) {
    bool done = false;
    for (const auto& f : fields_)
      if (f->key == key) {
        f->write(out);
        done = true;
      }
    if (done) continue;
    for (const auto& [k, s] : sections_)
      if (k == key) {
        out[k] = s->dump();
        done = true;
      }
    if (done) continue;
    for (const auto& [k, n] : passthrough_nodes_)
      if (k == key && n && !n.IsNull()) out[k] = YAML::Clone(n);
  }
  return out;
}

std::string ConfigSchema::describe(const std::string& indent) const {
  std::string s;
  for (const auto& key : order_) {
    for (const auto& f : fields_)
      if (f->key == key) {
        s += indent + f->key + ": " + f->show();
        if (!f->help.empty()) s += "   # " + f->help;
        if (!f->allowed.empty()) s += " (" + join(f->allowed) + ")";
        if (f->bounds) s += " [" + num_text(f->bounds->first) + ", " + num_text(f->bounds->second) + "]";
        s += "\n";
      }
    for (const auto& [k, sch] : sections_)
      if (k == key) s += indent + k + ":\n" + sch->describe(indent + "  ");
    for (const auto& [k, help] : passthrough_)
      if (k == key) s += indent + k + ": ...   # " + help + "\n";
  }
  return s;
}

}  // namespace safedec
