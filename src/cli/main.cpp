// safedec command-line entry point. Exit codes: 0 success, 2 user error (bad input, bad file,
// bad arguments), 1 internal error. Only this file catches exceptions.
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"

namespace {

// LibTorch runs its element-wise and reduction ops in OpenMP regions (libgomp). After each region
// libgomp's workers spin for a few milliseconds by default, and in a decode loop a vocabulary-sized op
// or two per token keep them spinning on the cores that safedec's own GEMV pool (core/row_pool.h)
// needs: at 2 threads SmolLM2's decode ran no faster than at 1 (perf: 27% of samples in libgomp's
// spin). libgomp reads OMP_WAIT_POLICY once, when it is loaded, so the commands that decode token by
// token re-execute themselves with OMP_WAIT_POLICY=PASSIVE unless the user has set a policy or spin
// count. Training keeps libgomp's default: its back-to-back ATen regions measured 1-8% slower passive
// (experiments/runtime_speed.md).
bool decodes_token_by_token(int argc, char** argv) {
  if (argc < 2) return false;
  const std::string cmd = argv[1];
  if (cmd == "generate" || cmd == "eval" || cmd == "serve" || cmd == "demo" || cmd == "judge" || cmd == "data")
    return true;
  if (cmd == "bench" && argc >= 3) {
    const std::string sub = argv[2];
    return sub == "generate" || sub == "methods";
  }
  return false;
}

void use_passive_openmp_waits(int argc, char** argv) {
  if (!decodes_token_by_token(argc, argv) || std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
  execv("/proc/self/exe", argv);  // returns only on failure: run on with libgomp's default policy
  unsetenv("OMP_WAIT_POLICY");
}

}  // namespace

int main(int argc, char** argv) {
  use_passive_openmp_waits(argc, argv);
  CLI::App app{"safedec: inference-time safety alignment for LLMs (NGSD, ACD, Safety Arithmetic, SafeDecoding)"};
  app.set_version_flag("--version", std::string("safedec ") + SAFEDEC_VERSION);
  app.require_subcommand(1);
  std::vector<std::pair<CLI::App*, safedec::cli::Runner>> commands;
  auto add = [&](auto adder) {
    size_t before = app.get_subcommands({}).size();
    auto runner = adder(app);
    commands.emplace_back(app.get_subcommands({}).at(before), runner);
  };
  add(safedec::cli::add_inspect);
  add(safedec::cli::add_generate);
  add(safedec::cli::add_bench);
  add(safedec::cli::add_demo);
  add(safedec::cli::add_icv);
  add(safedec::cli::add_eval);
  add(safedec::cli::add_judge);
  add(safedec::cli::add_train);
  add(safedec::cli::add_data);
  add(safedec::cli::add_export);
  add(safedec::cli::add_serve);
  // Argument errors (CLI11's and the range-checked flag readers') read like every other user error.
  app.failure_message([](const CLI::App* a, const CLI::Error& e) { return "error: " + CLI::FailureMessage::simple(a, e); });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  try {
    for (auto& [sub, run] : commands)
      if (sub->parsed()) return run();
    return 2;
  } catch (const safedec::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "internal error: " << e.what() << "\n";
    return 1;
  }
}
