// `safedec data build`: builds training data from the training pools (src/train/data_builders.h)
// into an output directory. Prompts and responses go only into its files, never to the console.
#include <iostream>

#include "cli/commands.h"
#include "cli/flags.h"
#include "core/error.h"
#include "core/paths.h"
#include "train/data_builders.h"
#include "train/data_config.h"

namespace safedec::cli {

namespace {

struct DataArgs {
  std::string config, out;
  size_t limit = 0;
  bool resume = false, force = false, json = false;
  int threads = 0;
};

// The path as given when it exists, else relative to the source tree (configs/data/...).
std::string config_path(const std::string& p) {
  if (p.empty() || p[0] == '/' || file_exists(p)) return p;
  const std::string in_tree = source_dir() + "/" + p;
  return file_exists(in_tree) ? in_tree : p;
}

// Counts as indented "key: value" lines (nested objects indented further).
void print_counts(std::ostream& out, const nlohmann::json& j, int indent) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    out << std::string(indent, ' ') << it.key() << ":";
    if (it->is_object()) {
      out << "\n";
      print_counts(out, *it, indent + 2);
    } else {
      out << " " << it->dump() << "\n";
    }
  }
}

int run_data_build_command(const DataArgs& a, const std::string& command) {
  SAFEDEC_CHECK(!(a.resume && a.force), "give at most one of --resume and --force");
  DataBuildConfig config = load_data_build_config(config_path(a.config), DatasetRegistry::builtin());
  config.cap_sources(a.limit);
  DataBuildOptions o;
  o.out_dir = a.out;
  o.resume = a.resume;
  o.force = a.force;
  o.threads = a.threads;
  o.command = command;
  const DataBuildSummary s = run_data_build(config, o);
  if (a.json) {
    std::cout << nlohmann::json{{"builder", config.builder},
                                {"name", config.name},
                                {"out", s.out_dir},
                                {"data", s.data_path},
                                {"manifest", s.manifest_path},
                                {"rows", s.rows},
                                {"generated", s.generated},
                                {"resumed", s.resumed},
                                {"seconds", s.seconds},
                                {"counts", s.counts}}
                     .dump()
              << "\n";
  } else {
    std::cout << config.builder << " " << config.name << ": " << s.rows << " rows -> " << s.data_path << " ("
              << s.generated << " answers generated in this run, " << static_cast<int64_t>(s.seconds) << " s)\n";
    print_counts(std::cout, s.counts, 2);
  }
  return 0;
}

}  // namespace

Runner add_data(CLI::App& app) {
  auto a = std::make_shared<DataArgs>();
  auto* data = app.add_subcommand("data", "Training data from the training pools (self responses, deep alignment, "
                                          "ACD anchors)");
  data->require_subcommand(1);
  auto* build = data->add_subcommand("build", "Run a data builder config (configs/data/*.yaml)");
  build->add_option("--config", a->config, "Builder config YAML (e.g. configs/data/deep_alignment.yaml)")->required();
  build->add_option("--out", a->out, "Output directory (default .cache/data/<config name>/ in the source tree)");
  add_int_flag(build, "--limit", a->limit, 0, kMaxCountFlag,
               "Cap every source at N rows (0 = as configured; part of the resolved config)");
  build->add_flag("--resume", a->resume, "Continue an interrupted build with the same resolved config");
  build->add_flag("--force", a->force, "Start over in a directory that holds another build");
  add_threads_flag(build, a->threads);
  build->add_flag("--json", a->json, "Print the summary as one JSON object");
  return [a, build] {
    if (!build->parsed()) return 2;
    const std::string command = "safedec data build --config " + a->config +
                                (a->out.empty() ? std::string() : " --out " + a->out) +
                                (a->limit > 0 ? " --limit " + std::to_string(a->limit) : std::string()) +
                                (a->resume ? " --resume" : "") + (a->force ? " --force" : "");
    return run_data_build_command(*a, command);
  };
}

}  // namespace safedec::cli
