// ConfigSchema: each config key declared once — name, the struct field it fills, its range or allowed
// values and a help line — and parsing, range checks, the resolved-config dump and the key listing
// all derived from that one declaration (the shape of llama.cpp's common/arg.cpp option table).
// Parsing goes through YamlKeys, so unknown keys and wrong types are errors with FILE:LINE:COLUMN.
//
//   ConfigSchema s("train");
//   s.add("lr", c.lr, "peak learning rate").range(1e-8, 1.0);
//   s.add("schedule", c.schedule, "learning-rate schedule").one_of({"constant", "linear", "cosine"});
//   s.section("lora", lora_schema);
//   s.parse(node, "configs/train/x.yaml");   YAML::Node resolved = s.dump();
#pragma once
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace safedec {

class ConfigSchema {
 public:
  // One declared key; range()/one_of()/positive() refine it and return it for chaining.
  class Field {
   public:
    Field& range(double lo, double hi);       // inclusive bounds (numbers, and each element of lists)
    Field& one_of(std::vector<std::string> allowed);  // strings (and each element of string lists)
    Field& required();                        // must be present and non-empty
   private:
    friend class ConfigSchema;
    std::string key, help;
    std::function<void(const YAML::Node&, const std::string& where)> read;
    std::function<void(YAML::Node&)> write;
    std::function<std::string()> show;         // current value as text (for messages and help)
    std::function<bool()> empty;
    std::optional<std::pair<double, double>> bounds;
    std::vector<std::string> allowed;
    bool is_required = false;
    std::function<std::vector<double>()> numbers;       // numeric value(s), for range checks
    std::function<std::vector<std::string>()> strings;  // string value(s), for one_of checks
  };

  // `what` names the mapping in messages ("the train config", "`lora`").
  explicit ConfigSchema(std::string what);

  Field& add(const std::string& key, int64_t& value, std::string help);
  Field& add(const std::string& key, uint64_t& value, std::string help);
  Field& add(const std::string& key, double& value, std::string help);
  Field& add(const std::string& key, bool& value, std::string help);
  Field& add(const std::string& key, std::string& value, std::string help);
  Field& add(const std::string& key, std::vector<std::string>& value, std::string help);
  Field& add(const std::string& key, std::vector<int64_t>& value, std::string help);
  // A nested mapping with its own schema (which must outlive this one).
  void section(const std::string& key, ConfigSchema& schema, std::string help = "");
  // A key this schema accepts but another parser reads (its node is returned by node()).
  void passthrough(const std::string& key, std::string help = "");

  // Reads `node` (absent/null = every default), checks types, ranges, allowed values and unknown keys.
  void parse(const YAML::Node& node, const std::string& source);
  // The node a passthrough key had (undefined if absent).
  YAML::Node node(const std::string& key) const;
  // Every key with its current (resolved) value.
  YAML::Node dump() const;
  // "key: default  # help" lines (for --help and docs).
  std::string describe(const std::string& indent = "") const;

 private:
  Field& push(Field f);
  void check(const Field& f, const YAML::Node& at, const std::string& where) const;
  std::string what_;
  std::vector<std::unique_ptr<Field>> fields_;
  std::vector<std::pair<std::string, ConfigSchema*>> sections_;
  std::vector<std::pair<std::string, std::string>> passthrough_;
  std::vector<std::pair<std::string, YAML::Node>> passthrough_nodes_;
  std::vector<std::string> order_;  // keys in declaration order (fields, sections, passthrough)
};

}  // namespace safedec
