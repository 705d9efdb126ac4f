// YAML -> DataBuildConfig (the one place a builder config is read) and its resolved form.
#include "train/data_config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/model_registry.h"
#include "core/paths.h"
#include "core/yaml_keys.h"
#include "decoding/strategies/method_config.h"

namespace safedec {

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// A path as given when it exists (or is absolute), else relative to the source tree.
std::string resolve_in_tree(const std::string& p) {
  if (p.empty() || p[0] == '/' || file_exists(p)) return p;
  const std::string in_tree = source_dir() + "/" + p;
  return file_exists(in_tree) ? in_tree : p;
}

std::string scalar_text(const YAML::Node& n) {
  if (n.IsScalar()) return n.Scalar();
  YAML::Emitter e;
  e << YAML::Flow << n;
  return e.c_str();
}

bool valid_name(const std::string& s) {
  if (s.empty()) return false;
  for (unsigned char c : s)
    if (!(std::isalnum(c) || c == '_' || c == '-' || c == '.')) return false;
  return s != "." && s != "..";
}

// Reads a non-negative integer (limits, seeds): yaml-cpp would wrap "-1" into a huge size_t.
template <typename T>
T read_count(YamlKeys& k, const std::string& key, T fallback, const std::string& source, const std::string& what) {
  YAML::Node v = k.get(key);
  if (!v || v.IsNull()) return fallback;
  int64_t x = 0;
  try {
    x = v.as<int64_t>();
  } catch (const YAML::Exception&) {
    fail(yaml_where(source, v), ": ", what, " key `", key, "` must be a non-negative integer (got '", scalar_text(v),
         "')");
  }
  SAFEDEC_CHECK(x >= 0, yaml_where(source, v), ": ", what, " key `", key, "` must be >= 0 (got ", x, ")");
  return static_cast<T>(x);
}

// What one list of sources is for; checked against each dataset's spec.
enum class Role { Any, Harmful, Benign, Refusals, Pairs };

void check_role(const DatasetSpec& spec, Role role, const std::string& list, const std::string& at) {
  switch (role) {
    case Role::Any: return;
    case Role::Harmful:
      SAFEDEC_CHECK(spec.harmful, at, ": `", list, "` needs harmful instructions, but dataset '", spec.name,
                    "' is not harmful (harmful: false in ", spec.origin, ")");
      return;
    case Role::Benign:
      SAFEDEC_CHECK(!spec.harmful, at, ": `", list, "` needs benign instructions, but dataset '", spec.name,
                    "' is harmful (harmful: true in ", spec.origin, ")");
      return;
    case Role::Refusals:
      SAFEDEC_CHECK(spec.harmful, at, ": `", list, "` needs harmful instructions with written refusals, but dataset '",
                    spec.name, "' is not harmful (", spec.origin, ")");
      SAFEDEC_CHECK(!spec.reference_field.empty(), at, ": `", list, "` needs a dataset whose `fields.reference` holds ",
                    "a refusal (e.g. safety_tuned); dataset '", spec.name, "' has no reference field (", spec.origin,
                    ")");
      return;
    case Role::Pairs: {
      const auto& keep = spec.keep_fields;
      const bool ok = std::find(keep.begin(), keep.end(), "chosen") != keep.end() &&
                      std::find(keep.begin(), keep.end(), "rejected") != keep.end();
      SAFEDEC_CHECK(ok, at, ": `", list, "` needs a dataset that keeps `chosen` and `rejected` replies (e.g. ",
                    "hh_harmless); dataset '", spec.name, "' does not (", spec.origin, ")");
      SAFEDEC_CHECK(spec.harmful, at, ": `", list, "` needs harmful (red-team) prompts, but dataset '", spec.name,
                    "' is not harmful (", spec.origin, ")");
      return;
    }
  }
}

std::vector<DataSource> parse_sources(const YAML::Node& node, const std::string& source, const std::string& list,
                                      const DatasetRegistry& registry, Role role, bool required) {
  std::vector<DataSource> out;
  if (!node || node.IsNull()) {
    SAFEDEC_CHECK(!required, source, ": `", list, "` is required: a list of training pools such as ",
                  "{dataset: harmfulqa, limit: 64, seed: 0}");
    return out;
  }
  SAFEDEC_CHECK(node.IsSequence(), yaml_where(source, node), ": `", list,
                "` must be a list of dataset names or {dataset, limit, seed} entries");
  SAFEDEC_CHECK(!required || node.size() > 0, yaml_where(source, node), ": `", list, "` must not be empty");
  std::set<std::string> seen;
  for (const auto& item : node) {
    DataSource s;
    s.where = yaml_where(source, item);
    if (item.IsScalar()) {
      s.dataset = item.Scalar();
    } else {
      YamlKeys k(item, source, "a `" + list + "` entry");
      k.read("dataset", s.dataset);
      s.limit = read_count<size_t>(k, "limit", 0, source, "a `" + list + "` entry");
      s.seed = read_count<uint64_t>(k, "seed", 0, source, "a `" + list + "` entry");
      k.finish();
    }
    SAFEDEC_CHECK(!s.dataset.empty(), s.where, ": a `", list, "` entry needs a `dataset`");
    SAFEDEC_CHECK(registry.contains(s.dataset), s.where, ": unknown dataset '", s.dataset,
                  "'; known datasets: ", join(registry.names()));
    const DatasetSpec& spec = registry.get(s.dataset);
    try {
      check_dataset_use(spec, DatasetUse::Train);
    } catch (const Error& e) {
      fail(s.where, ": ", e.what());
    }
    check_role(spec, role, list, s.where);
    SAFEDEC_CHECK(seen.insert(s.dataset).second, s.where, ": dataset '", s.dataset, "' is listed twice in `", list,
                  "`; give it one entry with the limit you want");
    out.push_back(std::move(s));
  }
  return out;
}

SystemPrompt parse_system(const YAML::Node& n, const std::string& source, const std::string& key,
                          bool allow_text = true) {
  const std::string allowed = allow_text ? "none, default or {text: \"...\"}" : "none or default";
  if (n.IsScalar()) {
    if (n.Scalar() == "none") return SystemPrompt::none();
    if (n.Scalar() == "default") return SystemPrompt{};
    fail(yaml_where(source, n), ": `", key, "` must be ", allowed, "; got '", n.Scalar(), "'");
  }
  SAFEDEC_CHECK(allow_text && n.IsMap(), yaml_where(source, n), ": `", key, "` must be ", allowed);
  YamlKeys k(n, source, "`" + key + "`");
  std::string text;
  k.read("text", text);
  k.finish();
  SAFEDEC_CHECK(!text.empty(), yaml_where(source, n), ": `", key, ".text` must be a non-empty system prompt ",
                "(use `", key, ": none` for no system prompt)");
  return SystemPrompt::with_text(text);
}

YAML::Node sources_yaml(const std::vector<DataSource>& sources) {
  YAML::Node list(YAML::NodeType::Sequence);
  for (const auto& s : sources) {
    YAML::Node e(YAML::NodeType::Map);
    e["dataset"] = s.dataset;
    e["limit"] = s.limit;
    e["seed"] = s.seed;
    list.push_back(e);
  }
  return list;
}

}  // namespace

std::vector<std::string> known_data_builders() { return {"acd_anchors", "deep_alignment", "self_responses"}; }

std::string SystemPrompt::mode_name() const {
  switch (mode) {
    case Mode::None: return "none";
    case Mode::Default: return "default";
    case Mode::Text: return "text";
  }
  return "?";
}

std::optional<std::string> SystemPrompt::for_render() const {
  switch (mode) {
    case Mode::None: return std::string();
    case Mode::Default: return std::nullopt;
    case Mode::Text: return text;
  }
  return std::nullopt;
}

YAML::Node SystemPrompt::to_yaml() const {
  if (mode != Mode::Text) return YAML::Node(mode_name());
  YAML::Node n(YAML::NodeType::Map);
  n["text"] = text;
  return n;
}

std::vector<DataSource> DataBuildConfig::sources() const {
  std::vector<DataSource> out;
  auto add = [&out](const std::vector<DataSource>& v) { out.insert(out.end(), v.begin(), v.end()); };
  if (builder == "self_responses") add(self_responses.sources);
  if (builder == "deep_alignment") {
    add(deep_alignment.refusals);
    add(deep_alignment.pairs);
    add(deep_alignment.anchors);
  }
  if (builder == "acd_anchors") {
    add(acd_anchors.harmful);
    add(acd_anchors.benign);
    add(acd_anchors.written_refusals);
  }
  return out;
}

void DataBuildConfig::cap_sources(size_t limit) {
  if (limit == 0) return;
  auto cap = [limit](std::vector<DataSource>& v) {
    for (auto& s : v) s.limit = s.limit == 0 ? limit : std::min(s.limit, limit);
  };
  cap(self_responses.sources);
  cap(deep_alignment.refusals);
  cap(deep_alignment.pairs);
  cap(deep_alignment.anchors);
  cap(acd_anchors.harmful);
  cap(acd_anchors.benign);
  cap(acd_anchors.written_refusals);
}

YAML::Node DataBuildConfig::resolved() const {
  YAML::Node n(YAML::NodeType::Map);
  n["name"] = name;
  n["builder"] = builder;
  n["model"] = model;
  n["chat_template"] = chat_template;
  n["judge"] = judge;
  YAML::Node jo(YAML::NodeType::Map);
  // The default list by its in-tree name (the manifest records its absolute path and hash).
  jo["keywords"] = judge_options.keywords_path.empty() ? std::string("data/refusal_keywords.txt")
                                                       : judge_options.keywords_path;
  for (const auto& kv : judge_options.params) jo["params"][kv.first] = kv.second;
  n["judge_options"] = jo;
  const auto& s = generation.sampling;
  n["generation"]["max_new_tokens"] = generation.max_new_tokens;
  n["generation"]["batch_size"] = generation.batch_size;
  n["generation"]["temperature"] = s.temperature;
  n["generation"]["top_k"] = s.top_k;
  n["generation"]["top_p"] = s.top_p;
  n["generation"]["min_p"] = s.min_p;
  n["generation"]["repetition_penalty"] = s.repetition_penalty;
  n["generation"]["seed"] = s.seed;
  if (builder == "self_responses") {
    n["system"] = system.to_yaml();
    n["self_responses"]["sources"] = sources_yaml(self_responses.sources);
  } else if (builder == "deep_alignment") {
    n["system"] = system.to_yaml();
    const auto& d = deep_alignment;
    n["deep_alignment"]["refusals"] = sources_yaml(d.refusals);
    if (d.harmful_answers == "self") {
      n["deep_alignment"]["harmful_answers"] = "self";
    } else {
      n["deep_alignment"]["harmful_answers"]["from"] = d.harmful_answers;
    }
    n["deep_alignment"]["pairs"] = sources_yaml(d.pairs);
    n["deep_alignment"]["anchors"] = sources_yaml(d.anchors);
    n["deep_alignment"]["sensitive_anchors"] = d.sensitive_anchors;
  } else if (builder == "acd_anchors") {
    const auto& a = acd_anchors;
    n["acd_anchors"]["harmful"] = sources_yaml(a.harmful);
    n["acd_anchors"]["benign"] = sources_yaml(a.benign);
    n["acd_anchors"]["safe_prompt"] = a.safe_prompt;
    n["acd_anchors"]["opposite_prompt"] = a.opposite_prompt;
    n["acd_anchors"]["null_system"] = a.null_system.to_yaml();
    n["acd_anchors"]["written_refusals"] = sources_yaml(a.written_refusals);
    if (a.wrap_probability > 0) {  // absent when off, so builds made before the option still resume
      n["acd_anchors"]["wrap_probability"] = a.wrap_probability;
      n["acd_anchors"]["wrap_seed"] = a.wrap_seed;
    }
  }
  return n;
}

DataBuildConfig parse_data_build_config(const std::string& yaml_text, const std::string& source,
                                        const DatasetRegistry& registry, const DataConfigChecks& checks) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    fail(source, ":", e.mark.line + 1, ":", e.mark.column + 1, ": malformed YAML: ", e.msg);
  }
  SAFEDEC_CHECK(root && root.IsMap(), source, ": a data-build config must be a YAML mapping (name, builder, model, ",
                "generation, and the builder's own section)");
  DataBuildConfig c;
  c.source = source;
  c.acd_anchors.safe_prompt = kAcdSafePrompt;
  c.acd_anchors.opposite_prompt = kAcdOppositePrompt;
  YamlKeys k(root, source, "the data-build config");

  YAML::Node builder = k.get("builder");
  SAFEDEC_CHECK(builder && builder.IsScalar(), yaml_where(source, root), ": `builder` is required; known builders: ",
                join(known_data_builders()));
  c.builder = builder.Scalar();
  const auto builders = known_data_builders();
  SAFEDEC_CHECK(std::find(builders.begin(), builders.end(), c.builder) != builders.end(), yaml_where(source, builder),
                ": unknown builder '", c.builder, "'; known builders: ", join(builders));
  for (const auto& other : builders)
    if (other != c.builder && root[other])
      fail(yaml_where(source, root[other]), ": `", other, "` settings belong to the builder ", other,
           ", but this config's builder is ", c.builder);

  YAML::Node name = k.get("name");
  SAFEDEC_CHECK(name && name.IsScalar(), yaml_where(source, root), ": `name` is required (it names the default ",
                "output directory .cache/data/<name>)");
  c.name = name.Scalar();
  SAFEDEC_CHECK(valid_name(c.name), yaml_where(source, name), ": `name` '", c.name,
                "' must use only letters, digits, '_', '-' and '.' (it becomes a directory name)");

  k.read("model", c.model);
  k.read("chat_template", c.chat_template);
  if (checks.resolve_model) {
    try {
      resolve_model(c.model);  // an unknown name lists the registered ones
    } catch (const Error& e) {
      YAML::Node m = root["model"];
      fail(m ? yaml_where(source, m) : source, ": ", e.what());
    }
  }

  k.read("judge", c.judge);
  if (YAML::Node j = k.get("judge_options"); j && !j.IsNull()) {
    YamlKeys jk(j, source, "`judge_options`");
    jk.read("keywords", c.judge_options.keywords_path);
    if (YAML::Node p = jk.get("params"); p && !p.IsNull()) {
      SAFEDEC_CHECK(p.IsMap(), yaml_where(source, p), ": `judge_options.params` must be a mapping");
      for (const auto& kv : p) c.judge_options.params[kv.first.as<std::string>()] = scalar_text(kv.second);
    }
    jk.finish();
    if (!c.judge_options.keywords_path.empty())
      c.judge_options.keywords_path = resolve_in_tree(c.judge_options.keywords_path);
  }
  if (!JudgeRegistry::global().contains(c.judge)) {
    YAML::Node j = root["judge"];
    fail(j ? yaml_where(source, j) : source, ": unknown judge '", c.judge, "'; known judges: ",
         join(JudgeRegistry::global().names()));
  }

  if (YAML::Node g = k.get("generation"); g && !g.IsNull()) {
    YamlKeys gk(g, source, "`generation`");
    gk.read("max_new_tokens", c.generation.max_new_tokens);
    gk.read("batch_size", c.generation.batch_size);
    auto& s = c.generation.sampling;
    gk.read("temperature", s.temperature);
    gk.read("top_k", s.top_k);
    gk.read("top_p", s.top_p);
    gk.read("min_p", s.min_p);
    gk.read("repetition_penalty", s.repetition_penalty);
    s.seed = read_count<uint64_t>(gk, "seed", 0, source, "`generation`");
    gk.finish();
    SAFEDEC_CHECK(c.generation.max_new_tokens >= 1, yaml_where(source, g), ": generation.max_new_tokens must be >= 1");
    SAFEDEC_CHECK(c.generation.batch_size >= 1, yaml_where(source, g), ": generation.batch_size must be >= 1");
    try {
      s.validate();
    } catch (const Error& e) {
      fail(yaml_where(source, g), ": generation: ", e.what());
    }
  }

  const bool answers_with_system = c.builder == "self_responses" || c.builder == "deep_alignment";
  if (YAML::Node sys = k.get("system"); sys && !sys.IsNull()) {
    SAFEDEC_CHECK(answers_with_system, yaml_where(source, sys), ": `system` is not used by the builder ", c.builder,
                  " (acd_anchors answers under its own safe, opposite and null system prompts: set ",
                  "acd_anchors.safe_prompt / opposite_prompt / null_system)");
    c.system = parse_system(sys, source, "system");
  }

  YAML::Node section = k.get(c.builder);
  SAFEDEC_CHECK(section && section.IsMap(), section ? yaml_where(source, section) : yaml_where(source, root),
                ": the builder ", c.builder, " needs its settings under `", c.builder, ":` (a mapping)");
  YamlKeys sk(section, source, "`" + c.builder + "`");
  if (c.builder == "self_responses") {
    c.self_responses.sources = parse_sources(sk.get("sources"), source, "self_responses.sources", registry, Role::Any,
                                             /*required=*/true);
  } else if (c.builder == "deep_alignment") {
    auto& d = c.deep_alignment;
    d.refusals = parse_sources(sk.get("refusals"), source, "deep_alignment.refusals", registry, Role::Refusals, false);
    d.pairs = parse_sources(sk.get("pairs"), source, "deep_alignment.pairs", registry, Role::Pairs, false);
    d.anchors = parse_sources(sk.get("anchors"), source, "deep_alignment.anchors", registry, Role::Benign, false);
    sk.read("sensitive_anchors", d.sensitive_anchors);
    SAFEDEC_CHECK(!d.refusals.empty() || !d.pairs.empty(), yaml_where(source, section),
                  ": deep_alignment needs safety examples: list `refusals` (e.g. safety_tuned) and/or `pairs` ",
                  "(e.g. hh_harmless)");
    if (YAML::Node h = sk.get("harmful_answers"); h && !h.IsNull()) {
      if (h.IsScalar()) {
        SAFEDEC_CHECK(h.Scalar() == "self", yaml_where(source, h),
                      ": `deep_alignment.harmful_answers` must be `self` or {from: DIR} (the output directory of a ",
                      "self_responses build); got '", h.Scalar(), "'");
      } else {
        YamlKeys hk(h, source, "`deep_alignment.harmful_answers`");
        hk.read("from", d.harmful_answers);
        hk.finish();
        SAFEDEC_CHECK(!d.harmful_answers.empty() && d.harmful_answers != "self", yaml_where(source, h),
                      ": `deep_alignment.harmful_answers.from` must name the output directory of a self_responses ",
                      "build");
      }
    }
  } else {
    auto& a = c.acd_anchors;
    a.harmful = parse_sources(sk.get("harmful"), source, "acd_anchors.harmful", registry, Role::Harmful, true);
    a.benign = parse_sources(sk.get("benign"), source, "acd_anchors.benign", registry, Role::Benign, true);
    a.written_refusals = parse_sources(sk.get("written_refusals"), source, "acd_anchors.written_refusals", registry,
                                       Role::Refusals, false);
    sk.read("safe_prompt", a.safe_prompt);
    sk.read("opposite_prompt", a.opposite_prompt);
    SAFEDEC_CHECK(!a.safe_prompt.empty() && !a.opposite_prompt.empty(), yaml_where(source, section),
                  ": acd_anchors.safe_prompt and opposite_prompt must not be empty");
    if (YAML::Node ns = sk.get("null_system"); ns && !ns.IsNull())
      a.null_system = parse_system(ns, source, "acd_anchors.null_system", /*allow_text=*/false);
    if (YAML::Node wp = sk.get("wrap_probability"); wp && !wp.IsNull()) {
      sk.read("wrap_probability", a.wrap_probability);
      SAFEDEC_CHECK(std::isfinite(a.wrap_probability) && a.wrap_probability >= 0.0 && a.wrap_probability <= 1.0,
                    yaml_where(source, wp), ": acd_anchors.wrap_probability must be a share between 0 and 1 (got ",
                    wp.Scalar(), ")");
    }
    a.wrap_seed = read_count<uint64_t>(sk, "wrap_seed", 0, source, "`acd_anchors`");
  }
  sk.finish();
  k.finish();
  return c;
}

DataBuildConfig load_data_build_config(const std::string& path, const DatasetRegistry& registry,
                                       const DataConfigChecks& checks) {
  std::ifstream in(path);
  SAFEDEC_CHECK(in.good(), "cannot open the data-build config ", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_data_build_config(ss.str(), path, registry, checks);
}

}  // namespace safedec
