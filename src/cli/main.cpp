// safedec command-line entry point. Exit codes: 0 success, 2 user error (bad input, bad file,
// bad arguments), 1 internal error. Only this file catches exceptions.
#include <iostream>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
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
