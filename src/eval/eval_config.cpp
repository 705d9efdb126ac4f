#include "eval/eval_config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/model_registry.h"
#include "core/paths.h"
#include "core/yaml_keys.h"
#include "decoding/strategy_registry.h"

namespace safedec {

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

bool file_exists(const std::string& p) { return std::ifstream(p).good(); }

// A path as given, else relative to the source tree.
std::string resolve_config_path(const std::string& p) {
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

EvalModelSpec parse_model(const YAML::Node& n, const std::string& source) {
  EvalModelSpec m;
  if (n.IsScalar()) {
    m.name = n.Scalar();
  } else {
    YamlKeys k(n, source, "a models entry");
    k.read("name", m.name);
    k.read("label", m.label);
    k.read("hdr", m.hdr);
    k.read("hdr_lambda", m.hdr_lambda);
    k.read("chat_template", m.chat_template);
    k.read("weights", m.weights);
    k.finish();
  }
  SAFEDEC_CHECK(!m.name.empty(), yaml_where(source, n), ": a models entry needs a `name`");
  if (m.label.empty()) m.label = m.name;
  // A registered name must exist; anything else must be a path to a model file or directory.
  try {
    resolve_model(m.name);  // unknown names list the registered ones
  } catch (const Error& e) {
    fail(yaml_where(source, n), ": ", e.what());
  }
  SAFEDEC_CHECK(m.weights.empty() || m.weights == "fp32" || m.weights == "quantized", yaml_where(source, n),
                ": model '", m.name, "': `weights` is '", m.weights, "'; allowed: fp32, quantized");
  SAFEDEC_CHECK(m.hdr.empty() || m.weights != "quantized", yaml_where(source, n), ": model '", m.name,
                "': `hdr` edits fp32 weights and cannot be combined with `weights: quantized`");
  if (!m.hdr.empty()) m.hdr = resolve_config_path(m.hdr);
  return m;
}

// The YAML mapping of a method's base config file (configs/methods/<name>.yaml by default).
YAML::Node base_method_node(const std::string& name, const std::string& file, const std::string& at) {
  std::string path = file.empty() ? source_dir() + "/configs/methods/" + name + ".yaml" : resolve_config_path(file);
  if (file.empty() && !file_exists(path)) return YAML::Node(YAML::NodeType::Map);
  const std::string problem = config_file_problem(path, "the method config file");
  SAFEDEC_CHECK(problem.empty(), at, ": ", problem);
  YAML::Node n = load_yaml_file(path, "the method config file");
  if (!n || n.IsNull()) return YAML::Node(YAML::NodeType::Map);
  return n;
}

void parse_method_entry(const YAML::Node& n, const std::string& source, std::vector<EvalMethodSpec>& out) {
  std::string name, label, file;
  YAML::Node set, grid;
  if (n.IsScalar()) {
    name = n.Scalar();
  } else {
    YamlKeys k(n, source, "a methods entry");
    k.read("name", name);
    k.read("label", label);
    k.read("config", file);
    set = k.get("set");
    grid = k.get("grid");
    k.finish();
  }
  const std::string at = yaml_where(source, n);
  SAFEDEC_CHECK(!name.empty(), at, ": a methods entry needs a `name`");
  try {
    check_method_name(name);
  } catch (const Error& e) {
    fail(at, ": ", e.what());
  }
  if (label.empty()) label = name;
  YAML::Node base = YAML::Clone(base_method_node(name, file, at));
  if (set && !set.IsNull()) {
    SAFEDEC_CHECK(set.IsMap(), yaml_where(source, set), ": `set` must be a mapping of method keys to values");
    for (const auto& kv : set) set_dotted(base, kv.first.as<std::string>(), kv.second);
  }
  // Grid: cartesian product, keys in the order written, values in the order listed.
  std::vector<std::pair<std::string, std::vector<YAML::Node>>> axes;
  if (grid && !grid.IsNull()) {
    SAFEDEC_CHECK(grid.IsMap(), yaml_where(source, grid), ": `grid` must map method keys to lists of values");
    for (const auto& kv : grid) {
      SAFEDEC_CHECK(kv.second.IsSequence() && kv.second.size() > 0, yaml_where(source, kv.second), ": grid key `",
                    kv.first.as<std::string>(), "` needs a non-empty list of values");
      std::vector<YAML::Node> values;
      for (const auto& v : kv.second) values.push_back(v);
      axes.emplace_back(kv.first.as<std::string>(), values);
    }
  }
  size_t total = 1;
  for (const auto& a : axes) total *= a.second.size();
  for (size_t idx = 0; idx < total; ++idx) {
    YAML::Node node = YAML::Clone(base);
    EvalMethodSpec spec;
    spec.name = name;
    spec.group = label;
    size_t rest = idx;
    std::vector<size_t> pick(axes.size());
    for (size_t a = axes.size(); a-- > 0;) {
      pick[a] = rest % axes[a].second.size();
      rest /= axes[a].second.size();
    }
    std::string suffix;
    for (size_t a = 0; a < axes.size(); ++a) {
      const YAML::Node& v = axes[a].second[pick[a]];
      set_dotted(node, axes[a].first, v);
      spec.grid.emplace_back(axes[a].first, scalar_text(v));
      suffix += (suffix.empty() ? "" : ",") + axes[a].first + "=" + scalar_text(v);
    }
    spec.label = suffix.empty() ? label : label + "[" + suffix + "]";
    try {
      spec.config = parse_method_config(name, node, at);
    } catch (const Error& e) {
      fail(at, " (method ", spec.label, "): ", e.what());
    }
    out.push_back(std::move(spec));
  }
}

}  // namespace

void set_dotted(YAML::Node& node, const std::string& dotted_key, const YAML::Node& value) {
  SAFEDEC_CHECK(!dotted_key.empty(), "empty method key");
  const auto dot = dotted_key.find('.');
  if (dot == std::string::npos) {
    node[dotted_key] = YAML::Clone(value);
    return;
  }
  const std::string head = dotted_key.substr(0, dot);
  YAML::Node child = node[head];
  if (!child || !child.IsMap()) {
    node[head] = YAML::Node(YAML::NodeType::Map);
    child = node[head];
  }
  set_dotted(child, dotted_key.substr(dot + 1), value);
}

EvalConfig parse_eval_config(const std::string& yaml_text, const std::string& source,
                             const DatasetRegistry& registry) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    fail(source, ":", e.mark.line + 1, ":", e.mark.column + 1, ": malformed YAML: ", e.msg);
  }
  SAFEDEC_CHECK(root && root.IsMap(), source, ": an eval config must be a YAML mapping (name, models, methods, "
                                              "datasets, ...)");
  EvalConfig c;
  c.source = source;
  YamlKeys k(root, source, "the eval config");
  k.read("name", c.name);
  k.read("seed", c.seed);
  k.read("limit", c.limit);
  if (YAML::Node j = k.get("judge"); j && j.IsSequence()) {
    c.judges.clear();
    for (const auto& e : j) {
      SAFEDEC_CHECK(e.IsScalar(), yaml_where(source, e), ": `judge` must be a judge name or a list of names");
      const std::string name = e.as<std::string>();
      SAFEDEC_CHECK(std::find(c.judges.begin(), c.judges.end(), name) == c.judges.end(), yaml_where(source, e),
                    ": judge '", name, "' is listed twice");
      c.judges.push_back(name);
    }
    SAFEDEC_CHECK(!c.judges.empty(), yaml_where(source, j), ": `judge` lists no judge");
    c.judge = c.judges.front();
  } else if (j) {
    SAFEDEC_CHECK(j.IsScalar(), yaml_where(source, j), ": `judge` must be a judge name or a list of names");
    c.judge = j.as<std::string>();
    c.judges = {c.judge};
  }

  YAML::Node models = k.get("models");
  SAFEDEC_CHECK(models && models.IsSequence() && models.size() > 0, yaml_where(source, root),
                ": `models` must be a non-empty list of model names (or {name, label, hdr, hdr_lambda, chat_template, "
                "weights})");
  std::set<std::string> model_labels;
  for (const auto& m : models) {
    c.models.push_back(parse_model(m, source));
    SAFEDEC_CHECK(model_labels.insert(c.models.back().label).second, yaml_where(source, m), ": model label '",
                  c.models.back().label, "' appears twice; give one a `label`");
  }

  YAML::Node methods = k.get("methods");
  SAFEDEC_CHECK(methods && methods.IsSequence() && methods.size() > 0, yaml_where(source, root),
                ": `methods` must be a non-empty list of method names or {name, label, config, set, grid}");
  for (const auto& m : methods) parse_method_entry(m, source, c.methods);
  std::set<std::string> labels;
  for (const auto& m : c.methods)
    SAFEDEC_CHECK(labels.insert(m.label).second, source, ": method label '", m.label,
                  "' appears twice; give the entries different `label`s");

  YAML::Node datasets = k.get("datasets");
  SAFEDEC_CHECK(datasets && datasets.IsSequence() && datasets.size() > 0, yaml_where(source, root),
                ": `datasets` must be a non-empty list of dataset names (or {name, limit})");
  for (const auto& d : datasets) {
    std::string name;
    if (d.IsMap()) {
      YamlKeys dk(d, source, "a `datasets` entry");
      dk.read("name", name);
      SAFEDEC_CHECK(!name.empty(), yaml_where(source, d), ": a `datasets` entry given as a mapping needs a `name`");
      size_t own_limit = 0;
      const bool has_limit = static_cast<bool>(d["limit"]);
      dk.read("limit", own_limit);
      dk.finish();
      SAFEDEC_CHECK(has_limit, yaml_where(source, d), ": dataset '", name,
                    "' is given as a mapping without a `limit`; write it as a plain name instead");
      c.dataset_limits[name] = own_limit;
    } else {
      SAFEDEC_CHECK(d.IsScalar(), yaml_where(source, d), ": a `datasets` entry must be a dataset name or {name, limit}");
      name = d.as<std::string>();
    }
    SAFEDEC_CHECK(registry.contains(name), yaml_where(source, d), ": unknown dataset '", name,
                  "'; known datasets: ", join(registry.names()));
    try {
      check_dataset_use(registry.get(name), DatasetUse::Evaluate);
    } catch (const Error& e) {
      fail(yaml_where(source, d), ": ", e.what());
    }
    SAFEDEC_CHECK(std::find(c.datasets.begin(), c.datasets.end(), name) == c.datasets.end(), yaml_where(source, d),
                  ": dataset '", name, "' is listed twice");
    c.datasets.push_back(name);
  }

  if (YAML::Node g = k.get("generation"); g && !g.IsNull()) {
    YamlKeys gk(g, source, "`generation`");
    gk.read("max_new_tokens", c.generation.max_new_tokens);
    gk.read("batch_size", c.generation.batch_size);
    auto& s = c.generation.sampling;
    s.seed = c.seed;
    gk.read("temperature", s.temperature);
    gk.read("top_k", s.top_k);
    gk.read("top_p", s.top_p);
    gk.read("min_p", s.min_p);
    gk.read("repetition_penalty", s.repetition_penalty);
    gk.read("seed", s.seed);
    gk.finish();
    SAFEDEC_CHECK(c.generation.max_new_tokens >= 1, yaml_where(source, g), ": generation.max_new_tokens must be >= 1");
    SAFEDEC_CHECK(c.generation.batch_size >= 1, yaml_where(source, g), ": generation.batch_size must be >= 1");
    try {
      s.validate();
    } catch (const Error& e) {
      fail(yaml_where(source, g), ": generation: ", e.what());
    }
  } else {
    c.generation.sampling.seed = c.seed;
  }
  if (YAML::Node r = k.get("ref_nll"); r && !r.IsNull()) {
    YamlKeys rk(r, source, "`ref_nll`");
    rk.read("enabled", c.ref_nll.enabled);
    rk.read("max_tokens", c.ref_nll.max_tokens);
    rk.finish();
    SAFEDEC_CHECK(c.ref_nll.max_tokens >= 1, yaml_where(source, r), ": ref_nll.max_tokens must be >= 1");
  }
  if (YAML::Node sp = k.get("speed"); sp && !sp.IsNull()) {
    if (sp.IsScalar()) {
      // YAML 1.1 reads `off`/`on` as booleans; both spellings are accepted.
      const std::string v = sp.Scalar();
      if (v == "off" || v == "false" || v == "no") c.speed.enabled = false;
      else if (v == "on" || v == "true" || v == "yes") c.speed.enabled = true;
      else
        fail(yaml_where(source, sp), ": `speed` must be off, on or a mapping {pairs, prompts, new_tokens, ",
             "noisy_spread} (got '", v, "')");
    } else {
      SAFEDEC_CHECK(sp.IsMap(), yaml_where(source, sp),
                    ": `speed` must be off, on or a mapping {pairs, prompts, new_tokens, noisy_spread}");
      c.speed.enabled = true;
      YamlKeys sk(sp, source, "`speed`");
      sk.read("enabled", c.speed.enabled);
      sk.read("pairs", c.speed.pairs);
      sk.read("prompts", c.speed.prompts);
      sk.read("new_tokens", c.speed.new_tokens);
      sk.read("noisy_spread", c.speed.noisy_spread);
      sk.finish();
      SAFEDEC_CHECK(c.speed.pairs >= 1 && c.speed.pairs <= 1000, yaml_where(source, sp),
                    ": speed.pairs must be in 1..1000 (got ", c.speed.pairs, ")");
      SAFEDEC_CHECK(c.speed.prompts >= 1 && c.speed.prompts <= 1024, yaml_where(source, sp),
                    ": speed.prompts must be in 1..1024 (got ", c.speed.prompts, ")");
      SAFEDEC_CHECK(c.speed.new_tokens >= 2 && c.speed.new_tokens <= 4096, yaml_where(source, sp),
                    ": speed.new_tokens must be in 2..4096 (got ", c.speed.new_tokens, ")");
      SAFEDEC_CHECK(std::isfinite(c.speed.noisy_spread) && c.speed.noisy_spread > 0, yaml_where(source, sp),
                    ": speed.noisy_spread must be a number > 0 (got ", c.speed.noisy_spread, ")");
    }
  }
  if (YAML::Node j = k.get("judge_options"); j && !j.IsNull()) {
    YamlKeys jk(j, source, "`judge_options`");
    jk.read("keywords", c.judge_options.keywords_path);
    if (YAML::Node p = jk.get("params"); p && p.IsMap())
      for (const auto& kv : p) c.judge_options.params[kv.first.as<std::string>()] = scalar_text(kv.second);
    for (const auto& name : c.judges)
      if (YAML::Node p = jk.get(name); p && !p.IsNull()) {
        SAFEDEC_CHECK(p.IsMap(), yaml_where(source, p), ": judge_options.", name, " must be a mapping of parameters");
        for (const auto& kv : p) c.judge_params[name][kv.first.as<std::string>()] = scalar_text(kv.second);
      }
    jk.finish();
    SAFEDEC_CHECK(!c.judge_options.params.count("per_cell") &&
                      !(c.judge_params.count(c.judge) && c.judge_params[c.judge].count("per_cell")),
                  yaml_where(source, j), ": per_cell applies to a further judge (judge: [", c.judge,
                  ", NAME] with judge_options: {NAME: {per_cell: N}}); the first judge, ", c.judge,
                  ", judges every response as it is generated.");
    if (!c.judge_options.keywords_path.empty())
      c.judge_options.keywords_path = resolve_config_path(c.judge_options.keywords_path);
  }
  k.finish();
  for (const auto& name : c.judges)
    SAFEDEC_CHECK(JudgeRegistry::global().contains(name), source, ": unknown judge '", name,
                  "'; known judges: ", join(JudgeRegistry::global().names()));
  return c;
}

JudgeOptions EvalConfig::options_for(const std::string& judge_name) const {
  JudgeOptions o;
  o.keywords_path = judge_options.keywords_path;
  if (judge_name == judge) o.params = judge_options.params;
  if (auto it = judge_params.find(judge_name); it != judge_params.end())
    for (const auto& kv : it->second) o.params[kv.first] = kv.second;
  return o;
}

EvalConfig load_eval_config(const std::string& path, const DatasetRegistry& registry) {
  const std::string problem = config_file_problem(path, "the file");
  SAFEDEC_CHECK(problem.empty(), "cannot open the eval config ", path, " (", problem, ")");
  std::ifstream in(path);
  SAFEDEC_CHECK(in.good(), "cannot open the eval config ", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_eval_config(ss.str(), path, registry);
}

std::string limit_overrides(const EvalConfig& config) {
  std::string out;
  for (const auto& d : config.datasets) {
    const auto it = config.dataset_limits.find(d);
    if (it == config.dataset_limits.end()) continue;
    out += (out.empty() ? " (" : ", ") + d + ": " + (it->second == 0 ? std::string("all rows") : std::to_string(it->second));
  }
  return out.empty() ? out : out + ")";
}

YAML::Node EvalConfig::resolved() const {
  YAML::Node n(YAML::NodeType::Map);
  n["name"] = name;
  n["seed"] = seed;
  n["limit"] = limit;
  if (judges.size() > 1) {
    for (const auto& j : judges) n["judge"].push_back(j);
  } else {
    n["judge"] = judge;  // a single judge stays a scalar: runs made before judge lists resume unchanged
  }
  YAML::Node jo(YAML::NodeType::Map);
  // The default list by its in-tree name (the manifest records its absolute path and hash), so a run
  // can be resumed from another checkout of the same tree.
  jo["keywords"] = judge_options.keywords_path.empty() ? std::string("data/refusal_keywords.txt")
                                                       : judge_options.keywords_path;
  for (const auto& kv : judge_options.params) jo["params"][kv.first] = kv.second;
  for (const auto& [name, params] : judge_params)
    for (const auto& kv : params) jo[name][kv.first] = kv.second;
  n["judge_options"] = jo;
  for (const auto& m : models) {
    YAML::Node e(YAML::NodeType::Map);
    e["name"] = m.name;
    e["label"] = m.label;
    e["hdr"] = m.hdr;
    e["hdr_lambda"] = m.hdr_lambda;
    e["chat_template"] = m.chat_template;
    if (!m.weights.empty()) e["weights"] = m.weights;  // absent = the registry's choice (older run dirs resume)
    n["models"].push_back(e);
  }
  for (const auto& m : methods) {
    YAML::Node e(YAML::NodeType::Map);
    e["label"] = m.label;
    e["config"] = YAML::Load(m.config.dump());
    n["methods"].push_back(e);
  }
  for (const auto& d : datasets) {
    const auto it = dataset_limits.find(d);
    if (it == dataset_limits.end()) {
      n["datasets"].push_back(d);  // a plain name: runs made before per-dataset limits resume unchanged
    } else {
      YAML::Node e(YAML::NodeType::Map);
      e["name"] = d;
      e["limit"] = it->second;
      n["datasets"].push_back(e);
    }
  }
  const auto& s = generation.sampling;
  n["generation"]["max_new_tokens"] = generation.max_new_tokens;
  n["generation"]["batch_size"] = generation.batch_size;
  n["generation"]["temperature"] = s.temperature;
  n["generation"]["top_k"] = s.top_k;
  n["generation"]["top_p"] = s.top_p;
  n["generation"]["min_p"] = s.min_p;
  n["generation"]["repetition_penalty"] = s.repetition_penalty;
  n["generation"]["seed"] = s.seed;
  n["ref_nll"]["enabled"] = ref_nll.enabled;
  n["ref_nll"]["max_tokens"] = ref_nll.max_tokens;
  if (speed.enabled) {  // absent when off, so the resolved configs of runs without it are unchanged
    n["speed"]["pairs"] = speed.pairs;
    n["speed"]["prompts"] = speed.prompts;
    n["speed"]["new_tokens"] = speed.new_tokens;
    n["speed"]["noisy_spread"] = speed.noisy_spread;
  }
  return n;
}

}  // namespace safedec
