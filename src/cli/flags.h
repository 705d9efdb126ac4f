// Range-checked numeric command-line options: every numeric flag of every subcommand is added
// through these helpers, so a bad value (negative, wrapped, overflowing, NaN, out of range) stops
// the parse with "--flag: must be an integer in LO..HI (got 'X')" and exit code 2, before any
// work starts. The text is checked strictly (src/core/numbers.h) before CLI11 converts it.
#pragma once
#include <CLI/CLI.hpp>

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "core/numbers.h"

namespace safedec::cli {

// Common caps (inclusive) shared by several subcommands.
constexpr int64_t kMaxNewTokensFlag = int64_t{1} << 20;  // generated tokens per sequence
constexpr int64_t kMaxBatchFlag = 4096;                  // sequences per batch
constexpr int64_t kMaxCountFlag = std::numeric_limits<int64_t>::max();  // row limits, step counts
constexpr int64_t kMaxSeedFlag = std::numeric_limits<int64_t>::max();   // seeds: 0..2^63-1

inline CLI::Validator int_range_validator(int64_t lo, int64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) { return int_range_problem(text, lo, hi); },
      "INT in " + std::to_string(lo) + ".." + std::to_string(hi), "int-range");
}

inline CLI::Validator real_range_validator(double lo, double hi, bool lo_open, bool hi_open) {
  std::string desc = "NUMBER in ";
  desc += lo_open ? "(" : "[";
  desc += CLI::detail::to_string(lo) + ", " + CLI::detail::to_string(hi) + (hi_open ? ")" : "]");
  return CLI::Validator(
      [lo, hi, lo_open, hi_open](std::string& text) { return real_range_problem(text, lo, hi, lo_open, hi_open); },
      desc, "real-range");
}

// An integer option in [lo, hi] (inclusive). The bounds must fit the variable's type.
template <typename T>
CLI::Option* add_int_flag(CLI::App* cmd, const std::string& name, T& value, int64_t lo, int64_t hi,
                          const std::string& help) {
  static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>, "add_int_flag needs an integer variable");
  if constexpr (std::is_unsigned_v<T>) {
    if (lo < 0) throw std::logic_error("add_int_flag: negative lower bound for an unsigned option " + name);
  } else {
    if (lo < static_cast<int64_t>(std::numeric_limits<T>::min()))
      throw std::logic_error("add_int_flag: lower bound below the option's type for " + name);
  }
  if (static_cast<uint64_t>(hi) > static_cast<uint64_t>(std::numeric_limits<T>::max()))
    throw std::logic_error("add_int_flag: upper bound above the option's type for " + name);
  return cmd->add_option(name, value, help)->check(int_range_validator(lo, hi));
}

// A finite real option in the interval [lo, hi] (either end open when asked).
inline CLI::Option* add_real_flag(CLI::App* cmd, const std::string& name, double& value, double lo, double hi,
                                  const std::string& help, bool lo_open = false, bool hi_open = false) {
  return cmd->add_option(name, value, help)->check(real_range_validator(lo, hi, lo_open, hi_open));
}

// --threads N: 1..max_threads(). The variable keeps its default (0 = "not given": all cores).
inline CLI::Option* add_threads_flag(CLI::App* cmd, int& threads,
                                     const std::string& help = "CPU threads (default: all cores)") {
  return add_int_flag(cmd, "--threads", threads, 1, max_threads(),
                      help + "; at most " + std::to_string(max_threads()));
}

// --seed N: 0..2^63-1, never wrapped.
template <typename T>
CLI::Option* add_seed_flag(CLI::App* cmd, T& seed, const std::string& help) {
  return add_int_flag(cmd, "--seed", seed, 0, kMaxSeedFlag, help);
}

}  // namespace safedec::cli
