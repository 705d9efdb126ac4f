// Strict, range-checked reading of numbers typed by a user (command-line flags): base-10 integers
// without wrap-around or silent truncation, finite reals, and the one cap on thread counts.
#pragma once
#include <cstdint>
#include <string>

namespace safedec {

// Why `text` is not a base-10 integer in [lo, hi] ("must be an integer in 1..8 (got '-1')"), or ""
// when it is. Accepts an optional '-' followed by digits only: no '+', spaces, hex, exponent or
// fraction; values beyond int64 are out of range, never wrapped. On success *out holds the value.
std::string int_range_problem(const std::string& text, int64_t lo, int64_t hi, int64_t* out = nullptr);

// Why `text` is not a finite real number in the interval (lo, hi open when the flags say so), or "".
std::string real_range_problem(const std::string& text, double lo, double hi, bool lo_open = false,
                               bool hi_open = false, double* out = nullptr);

// Throwing forms: safedec::Error("<what> must be ... (got '...')").
int64_t parse_int_in_range(const std::string& text, int64_t lo, int64_t hi, const std::string& what);
double parse_real_in_range(const std::string& text, double lo, double hi, const std::string& what,
                           bool lo_open = false, bool hi_open = false);

// The most CPU threads any command accepts: 4 x the hardware threads, at most 256 (and at least 1).
// More only adds contention; tens of thousands exhaust the process's thread limit.
int max_threads();

// Throws safedec::Error unless 1 <= n <= max_threads(); `what` names the setting (flag or key).
void check_threads(int64_t n, const std::string& what);

}  // namespace safedec
