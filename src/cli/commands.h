// Subcommand registration for the safedec CLI: each file adds its subcommand to the app and
// returns the function that runs it after parsing.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

#include "decoding/processors.h"

namespace safedec::cli {

using Runner = std::function<int()>;

Runner add_inspect(CLI::App& app);
Runner add_generate(CLI::App& app);
Runner add_bench(CLI::App& app);
void add_bench_train(CLI::App* bench);  // `bench train`, called by add_bench
Runner add_demo(CLI::App& app);
Runner add_icv(CLI::App& app);
Runner add_eval(CLI::App& app);
Runner add_judge(CLI::App& app);
Runner add_train(CLI::App& app);
Runner add_data(CLI::App& app);
Runner add_export(CLI::App& app);
Runner add_serve(CLI::App& app);
// The shared --temperature/--top-k/... options.
void add_sampling_options(CLI::App* cmd, SamplingParams& s);

}  // namespace safedec::cli
