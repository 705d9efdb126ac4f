// Dataset specs and loaders. A spec maps the fields of a public data file onto Example
// (id, prompt, system, reference, kept extras), filters rows (field equality or row-index modulo,
// which is how the AlpacaEval train/test split is defined), and tags the set as eval- or train-only.
// The --limit sample orders ids by a seeded 64-bit hash and keeps the smallest N, so it is stable
// across runs, methods and models, and independent of the order in which rows were read.
#include "eval/dataset.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/jsonl.h"
#include "core/paths.h"
#include "eval/csv.h"

namespace safedec {

namespace fs = std::filesystem;
using nlohmann::json;

std::string to_string(DatasetSplit split) { return split == DatasetSplit::Eval ? "eval" : "train"; }

std::string to_string(DatasetFormat format) {
  switch (format) {
    case DatasetFormat::Json: return "json";
    case DatasetFormat::Jsonl: return "jsonl";
    case DatasetFormat::Csv: return "csv";
  }
  return "?";
}

std::string RowFilter::describe() const {
  switch (kind) {
    case Kind::FieldEquals: return field + " == " + value;
    case Kind::FieldNotEquals: return field + " != " + value;
    case Kind::IndexModEquals:
      return "row_index % " + std::to_string(modulus) + " == " + std::to_string(remainder);
    case Kind::IndexModNotEquals:
      return "row_index % " + std::to_string(modulus) + " != " + std::to_string(remainder);
  }
  return "?";
}

namespace {

std::string read_text_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  SAFEDEC_CHECK(in.good(), what, ": cannot open ", path, ".");
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? sep : "") + parts[i];
  return out;
}

// ---- YAML spec parsing ---------------------------------------------------------------------

const std::set<std::string> kTopKeys = {"name", "description", "path", "paths", "format",
                                        "list_key", "fields", "keep", "filters", "split",
                                        "harmful", "over_refusal_probe", "expected_rows"};
const std::set<std::string> kFieldKeys = {"id", "prompt", "system", "reference"};

std::string allowed(const std::set<std::string>& keys) {
  return join(std::vector<std::string>(keys.begin(), keys.end()), ", ");
}

std::string scalar(const YAML::Node& node, const std::string& key, const std::string& origin) {
  SAFEDEC_CHECK(node.IsScalar(), origin, ": key '", key, "' must be a scalar (line ",
                node.Mark().line + 1, ").");
  return node.as<std::string>();
}

bool boolean(const YAML::Node& node, const std::string& key, const std::string& origin) {
  try {
    return node.as<bool>();
  } catch (const YAML::Exception&) {
    fail(origin, ": key '", key, "' must be true or false (line ", node.Mark().line + 1, ").");
  }
}

int64_t integer(const YAML::Node& node, const std::string& key, const std::string& origin) {
  try {
    return node.as<int64_t>();
  } catch (const YAML::Exception&) {
    fail(origin, ": key '", key, "' must be an integer (line ", node.Mark().line + 1, ").");
  }
}

std::vector<std::string> string_or_list(const YAML::Node& node, const std::string& key,
                                        const std::string& origin) {
  std::vector<std::string> out;
  if (node.IsScalar()) {
    out.push_back(node.as<std::string>());
  } else if (node.IsSequence()) {
    for (const auto& item : node) out.push_back(scalar(item, key, origin));
  } else {
    fail(origin, ": key '", key, "' must be a string or a list of strings (line ",
         node.Mark().line + 1, ").");
  }
  return out;
}

RowFilter parse_filter(const YAML::Node& node, const std::string& origin, size_t index) {
  const std::string where = origin + ": filters[" + std::to_string(index) + "]";
  SAFEDEC_CHECK(node.IsMap(), where, " must be a map such as {field: label, equals: safe} or ",
                "{row_index_mod: 4, not_equals: 0}.");
  const bool has_field = static_cast<bool>(node["field"]);
  const bool has_mod = static_cast<bool>(node["row_index_mod"]);
  const bool has_eq = static_cast<bool>(node["equals"]);
  const bool has_ne = static_cast<bool>(node["not_equals"]);
  for (const auto& kv : node) {
    const std::string k = kv.first.as<std::string>();
    SAFEDEC_CHECK(k == "field" || k == "row_index_mod" || k == "equals" || k == "not_equals", where,
                  " has unknown key '", k, "' (allowed: field, row_index_mod, equals, not_equals).");
  }
  SAFEDEC_CHECK(has_field != has_mod, where, " needs exactly one of 'field' or 'row_index_mod'.");
  SAFEDEC_CHECK(has_eq != has_ne, where, " needs exactly one of 'equals' or 'not_equals'.");
  RowFilter f;
  const YAML::Node& rhs = has_eq ? node["equals"] : node["not_equals"];
  if (has_field) {
    f.kind = has_eq ? RowFilter::Kind::FieldEquals : RowFilter::Kind::FieldNotEquals;
    f.field = scalar(node["field"], "field", where);
    f.value = scalar(rhs, has_eq ? "equals" : "not_equals", where);
  } else {
    f.kind = has_eq ? RowFilter::Kind::IndexModEquals : RowFilter::Kind::IndexModNotEquals;
    f.modulus = integer(node["row_index_mod"], "row_index_mod", where);
    f.remainder = integer(rhs, has_eq ? "equals" : "not_equals", where);
    SAFEDEC_CHECK(f.modulus >= 1, where, ": row_index_mod must be >= 1 (got ", f.modulus, ").");
    SAFEDEC_CHECK(f.remainder >= 0 && f.remainder < f.modulus, where, ": the remainder must be in 0..",
                  f.modulus - 1, " (got ", f.remainder, ").");
  }
  return f;
}

// ---- row access ------------------------------------------------------------------------------

// A row from any format: JSON object or CSV record; fields are looked up by name.
struct RowView {
  const json* object = nullptr;
  const CsvTable* table = nullptr;
  const std::vector<std::string>* record = nullptr;

  // nullopt when the field is absent; JSON null -> "" with is_null set.
  std::optional<std::string> get(const std::string& field, bool* is_null = nullptr) const {
    if (is_null) *is_null = false;
    if (object) {
      auto it = object->find(field);
      if (it == object->end()) return std::nullopt;
      const json& v = *it;
      if (v.is_null()) {
        if (is_null) *is_null = true;
        return std::string();
      }
      if (v.is_string()) return v.get<std::string>();
      return v.dump();  // numbers, booleans, arrays, objects: their JSON text
    }
    for (size_t c = 0; c < table->header.size(); ++c)
      if (table->header[c] == field) return (*record)[c];
    return std::nullopt;
  }
};

std::string describe_row(const std::string& file, size_t row_index) {
  return file + " row " + std::to_string(row_index) + " (0-based)";
}

std::string require_field(const RowView& row, const std::string& field, const DatasetSpec& spec,
                          const std::string& rel, size_t row_index, bool allow_empty) {
  bool is_null = false;
  auto value = row.get(field, &is_null);
  SAFEDEC_CHECK(value.has_value(), "dataset '", spec.name, "': ", describe_row(rel, row_index),
                " has no field '", field, "' (mapping in ", spec.origin, ").");
  SAFEDEC_CHECK(!is_null, "dataset '", spec.name, "': ", describe_row(rel, row_index), " field '",
                field, "' is null.");
  SAFEDEC_CHECK(allow_empty || !value->empty(), "dataset '", spec.name, "': ",
                describe_row(rel, row_index), " field '", field, "' is empty.");
  return *value;
}

bool row_matches(const RowFilter& f, const RowView& row, const DatasetSpec& spec,
                 const std::string& rel, size_t row_index) {
  switch (f.kind) {
    case RowFilter::Kind::FieldEquals:
    case RowFilter::Kind::FieldNotEquals: {
      auto v = row.get(f.field);
      SAFEDEC_CHECK(v.has_value(), "dataset '", spec.name, "': ", describe_row(rel, row_index),
                    " has no field '", f.field, "' used by the filter '", f.describe(), "'.");
      return (*v == f.value) == (f.kind == RowFilter::Kind::FieldEquals);
    }
    case RowFilter::Kind::IndexModEquals:
    case RowFilter::Kind::IndexModNotEquals: {
      const bool eq = static_cast<int64_t>(row_index % static_cast<size_t>(f.modulus)) == f.remainder;
      return eq == (f.kind == RowFilter::Kind::IndexModEquals);
    }
  }
  return false;
}

// Parses one file into row views (the JSON / CSV storage lives in the holders).
struct FileRows {
  json document;                 // JSON / JSONL
  std::vector<json> jsonl_rows;  // JSONL
  CsvTable table;                // CSV
  std::vector<RowView> rows;
};

void read_rows(const DatasetSpec& spec, const std::string& path, const std::string& rel,
               FileRows& out) {
  const std::string what = "dataset '" + spec.name + "'";
  const std::string text = read_text_file(path, what);
  if (spec.format == DatasetFormat::Json) {
    try {
      out.document = json::parse(text);
    } catch (const json::parse_error& e) {
      fail(what, ": ", path, " is not valid JSON: ", json_error_without_content(e));
    }
    const json* list = &out.document;
    if (!spec.list_key.empty()) {
      SAFEDEC_CHECK(out.document.is_object() && out.document.contains(spec.list_key), what, ": ",
                    path, " must be a JSON object with a member '", spec.list_key,
                    "' (list_key in ", spec.origin, ").");
      list = &out.document[spec.list_key];
    }
    SAFEDEC_CHECK(list->is_array(), what, ": ", path, " must hold a JSON list of objects",
                  spec.list_key.empty() ? std::string(" at the top level (set list_key if the list "
                                                      "is inside an object)")
                                        : " under '" + spec.list_key + "'",
                  ".");
    for (size_t i = 0; i < list->size(); ++i) {
      SAFEDEC_CHECK((*list)[i].is_object(), what, ": ", describe_row(rel, i),
                    " is not a JSON object.");
      out.rows.push_back(RowView{&(*list)[i], nullptr, nullptr});
    }
  } else if (spec.format == DatasetFormat::Jsonl) {
    std::istringstream lines(text);
    std::string line;
    size_t line_no = 0;
    while (std::getline(lines, line)) {
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      try {
        out.jsonl_rows.push_back(json::parse(line));
      } catch (const json::parse_error& e) {
        fail(what, ": ", path, " line ", line_no, " is not valid JSON: ", json_error_without_content(e));
      }
      SAFEDEC_CHECK(out.jsonl_rows.back().is_object(), what, ": ", path, " line ", line_no,
                    " is not a JSON object.");
    }
    for (const auto& row : out.jsonl_rows) out.rows.push_back(RowView{&row, nullptr, nullptr});
  } else {
    out.table = parse_csv(text, path);
    for (const auto& rec : out.table.rows) out.rows.push_back(RowView{nullptr, &out.table, &rec});
  }
}

}  // namespace

// ---- spec ----------------------------------------------------------------------------------

void DatasetSpec::validate() const {
  SAFEDEC_CHECK(!name.empty(), origin, ": key 'name' is required.");
  for (char c : name)
    SAFEDEC_CHECK(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-', origin,
                  ": dataset name '", name, "' may hold only letters, digits, '_' and '-'.");
  SAFEDEC_CHECK(!paths.empty(), origin, ": dataset '", name, "' needs 'path' or 'paths'.");
  for (const auto& p : paths) {
    SAFEDEC_CHECK(!p.empty() && p.front() != '/', origin, ": path '", p,
                  "' must be relative to the data root ($SAFEDEC_DATA_DIR).");
  }
  SAFEDEC_CHECK(!prompt_field.empty(), origin, ": 'fields.prompt' is required.");
  SAFEDEC_CHECK(list_key.empty() || format == DatasetFormat::Json, origin,
                ": 'list_key' applies only to format json.");
  SAFEDEC_CHECK(!(over_refusal_probe && harmful), origin, ": dataset '", name,
                "' cannot be both harmful and an over-refusal probe (a probe holds benign prompts).");
}

DatasetSpec parse_dataset_spec(const std::string& yaml_text, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    fail(origin, ": malformed YAML at line ", e.mark.line + 1, ", column ", e.mark.column + 1, ": ",
         e.msg, ".");
  }
  SAFEDEC_CHECK(root.IsMap(), origin, ": a dataset spec must be a YAML map (name, path, format, ",
                "fields, split, harmful, ...).");
  for (const auto& kv : root) {
    const std::string k = kv.first.as<std::string>();
    SAFEDEC_CHECK(kTopKeys.count(k), origin, ": unknown key '", k, "' (line ",
                  kv.first.Mark().line + 1, "); allowed keys: ", allowed(kTopKeys), ".");
  }
  DatasetSpec s;
  s.origin = origin;
  SAFEDEC_CHECK(root["name"], origin, ": key 'name' is required.");
  s.name = scalar(root["name"], "name", origin);
  if (root["description"]) s.description = scalar(root["description"], "description", origin);
  SAFEDEC_CHECK(!(root["path"] && root["paths"]), origin, ": give either 'path' or 'paths', not both.");
  if (root["path"]) s.paths = {scalar(root["path"], "path", origin)};
  if (root["paths"]) s.paths = string_or_list(root["paths"], "paths", origin);

  SAFEDEC_CHECK(root["format"], origin, ": key 'format' is required (json, jsonl or csv).");
  const std::string fmt = scalar(root["format"], "format", origin);
  if (fmt == "json") s.format = DatasetFormat::Json;
  else if (fmt == "jsonl") s.format = DatasetFormat::Jsonl;
  else if (fmt == "csv") s.format = DatasetFormat::Csv;
  else fail(origin, ": format '", fmt, "' is not supported (allowed: json, jsonl, csv).");
  if (root["list_key"]) s.list_key = scalar(root["list_key"], "list_key", origin);

  SAFEDEC_CHECK(root["fields"] && root["fields"].IsMap(), origin,
                ": key 'fields' is required: a map with 'prompt' and optional 'id', 'system', ",
                "'reference'.");
  for (const auto& kv : root["fields"]) {
    const std::string k = kv.first.as<std::string>();
    SAFEDEC_CHECK(kFieldKeys.count(k), origin, ": unknown key 'fields.", k, "'; allowed: ",
                  allowed(kFieldKeys), ".");
  }
  const YAML::Node fields = root["fields"];
  if (fields["id"]) s.id_fields = string_or_list(fields["id"], "fields.id", origin);
  if (fields["prompt"]) s.prompt_field = scalar(fields["prompt"], "fields.prompt", origin);
  if (fields["system"]) s.system_field = scalar(fields["system"], "fields.system", origin);
  if (fields["reference"]) s.reference_field = scalar(fields["reference"], "fields.reference", origin);
  if (root["keep"]) s.keep_fields = string_or_list(root["keep"], "keep", origin);

  if (root["filters"]) {
    SAFEDEC_CHECK(root["filters"].IsSequence(), origin, ": 'filters' must be a list.");
    size_t i = 0;
    for (const auto& f : root["filters"]) s.filters.push_back(parse_filter(f, origin, i++));
  }

  SAFEDEC_CHECK(root["split"], origin, ": key 'split' is required (eval or train).");
  const std::string split = scalar(root["split"], "split", origin);
  if (split == "eval") s.split = DatasetSplit::Eval;
  else if (split == "train") s.split = DatasetSplit::Train;
  else fail(origin, ": split '", split, "' is not allowed (use eval or train).");

  SAFEDEC_CHECK(root["harmful"], origin, ": key 'harmful' is required (true or false).");
  s.harmful = boolean(root["harmful"], "harmful", origin);
  if (root["over_refusal_probe"])
    s.over_refusal_probe = boolean(root["over_refusal_probe"], "over_refusal_probe", origin);
  if (root["expected_rows"]) {
    const int64_t n = integer(root["expected_rows"], "expected_rows", origin);
    SAFEDEC_CHECK(n > 0, origin, ": expected_rows must be positive (got ", n, ").");
    s.expected_rows = static_cast<size_t>(n);
  }
  s.validate();
  return s;
}

DatasetSpec load_dataset_spec(const std::string& yaml_path) {
  SAFEDEC_CHECK(file_exists(yaml_path), "dataset spec not found: ", yaml_path, ".");
  DatasetSpec spec = parse_dataset_spec(read_text_file(yaml_path, "dataset spec"), yaml_path);
  const std::string stem = fs::path(yaml_path).stem().string();
  SAFEDEC_CHECK(spec.name == stem, yaml_path, ": the dataset name '", spec.name,
                "' must equal the file name '", stem, "'.");
  return spec;
}

// ---- registry ------------------------------------------------------------------------------

DatasetRegistry DatasetRegistry::from_directory(const std::string& dir) {
  std::error_code ec;
  SAFEDEC_CHECK(fs::is_directory(dir, ec), "dataset registry directory not found: ", dir, ".");
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_regular_file() && entry.path().extension() == ".yaml")
      files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  DatasetRegistry reg;
  for (const auto& f : files) reg.add(load_dataset_spec(f));
  return reg;
}

std::string DatasetRegistry::builtin_dir() { return source_dir() + "/configs/datasets"; }

DatasetRegistry DatasetRegistry::builtin() { return from_directory(builtin_dir()); }

void DatasetRegistry::add(DatasetSpec spec) {
  auto it = specs_.find(spec.name);
  SAFEDEC_CHECK(it == specs_.end(), "dataset '", spec.name, "' is defined twice: in ",
                it == specs_.end() ? "" : it->second.origin, " and in ", spec.origin, ".");
  const std::string name = spec.name;
  specs_.emplace(name, std::move(spec));
}

bool DatasetRegistry::contains(const std::string& name) const { return specs_.count(name) > 0; }

const DatasetSpec& DatasetRegistry::get(const std::string& name) const {
  auto it = specs_.find(name);
  SAFEDEC_CHECK(it != specs_.end(), "unknown dataset '", name, "'; known datasets: ",
                specs_.empty() ? std::string("(none)") : join(names(), ", "), ".");
  return it->second;
}

std::vector<std::string> DatasetRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& kv : specs_) out.push_back(kv.first);
  return out;
}

// ---- split guard ---------------------------------------------------------------------------

void check_dataset_use(const DatasetSpec& spec, DatasetUse use) {
  if (use == DatasetUse::Evaluate) {
    SAFEDEC_CHECK(spec.split == DatasetSplit::Eval, "refusing to evaluate on dataset '", spec.name,
                  "': it is a train-only pool (split: train in ", spec.origin,
                  "); results on data that trained the artifacts would be dishonest. Evaluate on "
                  "a split: eval dataset instead.");
  } else {
    SAFEDEC_CHECK(spec.split == DatasetSplit::Train, "refusing to train on dataset '", spec.name,
                  "': it is an evaluation set (split: eval in ", spec.origin,
                  "); training on it would leak test prompts into the artifacts. Train on a "
                  "split: train pool instead.");
  }
}

// ---- loading -------------------------------------------------------------------------------

Dataset load_dataset(const DatasetSpec& spec, const DatasetLoadOptions& options) {
  const bool root_from_env = options.data_root.empty();
  const std::string root = root_from_env ? data_dir() : options.data_root;
  Dataset ds;
  ds.spec = spec;
  std::map<std::string, std::string> seen_ids;  // id -> where it was first seen
  for (const auto& rel : spec.paths) {
    const std::string path = (fs::path(root) / rel).lexically_normal().string();
    SAFEDEC_CHECK(file_exists(path), "dataset '", spec.name, "': file not found: ", path,
                  " (data root ", root,
                  root_from_env ? ", from $SAFEDEC_DATA_DIR or its default <source>/../shared/datasets"
                                : ", given by the caller",
                  "). Set SAFEDEC_DATA_DIR to the folder that holds the datasets.");
    ds.files.push_back(path);
    FileRows file;
    read_rows(spec, path, rel, file);
    const std::string stem = fs::path(rel).stem().string();
    for (size_t r = 0; r < file.rows.size(); ++r) {
      const RowView& row = file.rows[r];
      bool keep = true;
      for (const auto& f : spec.filters) keep = keep && row_matches(f, row, spec, rel, r);
      if (!keep) continue;
      Example ex;
      ex.row_index = r;
      ex.source_path = rel;
      if (spec.id_fields.empty()) {
        ex.id = spec.paths.size() > 1 ? stem + ":" + std::to_string(r) : std::to_string(r);
      } else {
        std::vector<std::string> parts;
        for (const auto& f : spec.id_fields) parts.push_back(require_field(row, f, spec, rel, r, false));
        ex.id = join(parts, "/");
      }
      ex.prompt = require_field(row, spec.prompt_field, spec, rel, r, false);
      if (!spec.system_field.empty())
        ex.system = require_field(row, spec.system_field, spec, rel, r, true);
      if (!spec.reference_field.empty())
        ex.reference = require_field(row, spec.reference_field, spec, rel, r, true);
      for (const auto& k : spec.keep_fields) {
        auto v = row.get(k);
        SAFEDEC_CHECK(v.has_value(), "dataset '", spec.name, "': ", describe_row(rel, r),
                      " has no field '", k, "' (listed under 'keep' in ", spec.origin, ").");
        ex.extra[k] = *v;
      }
      const std::string here = describe_row(rel, r);
      auto [it, inserted] = seen_ids.emplace(ex.id, here);
      SAFEDEC_CHECK(inserted, "dataset '", spec.name, "': id '", ex.id, "' of ", here,
                    " repeats the id of ", it->second,
                    "; ids must be unique (map several fields with fields.id: [a, b]).");
      ds.examples.push_back(std::move(ex));
    }
  }
  std::string filter_text;
  for (const auto& f : spec.filters) filter_text += (filter_text.empty() ? "" : ", ") + f.describe();
  SAFEDEC_CHECK(!ds.examples.empty(), "dataset '", spec.name, "' is empty after reading ",
                join(ds.files, ", "),
                filter_text.empty() ? std::string() : " with the filters " + filter_text, ".");
  if (spec.expected_rows) {
    SAFEDEC_CHECK(ds.examples.size() == *spec.expected_rows, "dataset '", spec.name, "' has ",
                  ds.examples.size(), " rows but ", spec.origin, " expects ", *spec.expected_rows,
                  " (the data files changed, or a filter is wrong).");
  }
  if (options.limit > 0) ds.examples = subsample(ds.examples, options.limit, options.seed);
  return ds;
}

// ---- sampling ------------------------------------------------------------------------------

uint64_t sample_key(uint64_t seed, const std::string& id) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a 64 offset basis
  auto mix_byte = [&h](unsigned char b) {
    h ^= b;
    h *= 1099511628211ULL;  // FNV-1a 64 prime
  };
  for (int i = 0; i < 8; ++i) mix_byte(static_cast<unsigned char>((seed >> (8 * i)) & 0xFF));
  for (unsigned char c : id) mix_byte(c);
  // SplitMix64 finaliser: spreads FNV's weak low bits over all 64 bits.
  h += 0x9E3779B97F4A7C15ULL;
  h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ULL;
  h = (h ^ (h >> 27)) * 0x94D049BB133111EBULL;
  return h ^ (h >> 31);
}

std::vector<Example> subsample(const std::vector<Example>& examples, size_t limit, uint64_t seed) {
  if (limit == 0 || limit >= examples.size()) return examples;
  std::vector<std::pair<uint64_t, size_t>> keyed;
  keyed.reserve(examples.size());
  for (size_t i = 0; i < examples.size(); ++i) keyed.emplace_back(sample_key(seed, examples[i].id), i);
  std::sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
    if (a.first != b.first) return a.first < b.first;
    return examples[a.second].id < examples[b.second].id;
  });
  std::vector<size_t> chosen;
  for (size_t i = 0; i < limit; ++i) chosen.push_back(keyed[i].second);
  std::sort(chosen.begin(), chosen.end());  // back to file order
  std::vector<Example> out;
  out.reserve(limit);
  for (size_t i : chosen) out.push_back(examples[i]);
  return out;
}

}  // namespace safedec
