#include "core/numbers.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "core/error.h"

namespace safedec {

namespace {

std::string real_text(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// The user's text, shortened so that an absurd argument cannot flood the terminal.
std::string quoted(const std::string& text) {
  return "'" + (text.size() > 40 ? text.substr(0, 40) + "..." : text) + "'";
}

}  // namespace

std::string int_range_problem(const std::string& text, int64_t lo, int64_t hi, int64_t* out) {
  const std::string expect = "must be an integer in " + std::to_string(lo) + ".." + std::to_string(hi);
  size_t i = text.size() > 0 && text[0] == '-' ? 1 : 0;
  bool digits = i < text.size();
  for (size_t k = i; k < text.size(); ++k)
    if (text[k] < '0' || text[k] > '9') digits = false;
  if (!digits) return expect + " (got " + quoted(text) + ", not a whole number)";
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno == ERANGE || end != text.c_str() + text.size() || v < lo || v > hi)
    return expect + " (got " + quoted(text) + ")";
  if (out) *out = static_cast<int64_t>(v);
  return "";
}

std::string real_range_problem(const std::string& text, double lo, double hi, bool lo_open, bool hi_open,
                               double* out) {
  const std::string expect = "must be a number in " + std::string(lo_open ? "(" : "[") + real_text(lo) + ", " +
                             real_text(hi) + (hi_open ? ")" : "]");
  bool ok = !text.empty() && text.find_first_of(" \t\n") == std::string::npos;
  double v = 0;
  if (ok) {
    errno = 0;
    char* end = nullptr;
    v = std::strtod(text.c_str(), &end);
    // strtod also reads "inf", "nan" and hex floats; only finite values are numbers here.
    ok = end == text.c_str() + text.size() && std::isfinite(v) && errno != ERANGE &&
         text.find_first_of("xXpP") == std::string::npos;
  }
  if (!ok) return expect + " (got " + quoted(text) + ", not a finite number)";
  if ((lo_open ? v <= lo : v < lo) || (hi_open ? v >= hi : v > hi)) return expect + " (got " + quoted(text) + ")";
  if (out) *out = v;
  return "";
}

int64_t parse_int_in_range(const std::string& text, int64_t lo, int64_t hi, const std::string& what) {
  int64_t v = 0;
  const std::string problem = int_range_problem(text, lo, hi, &v);
  if (!problem.empty()) fail(what, " ", problem);
  return v;
}

double parse_real_in_range(const std::string& text, double lo, double hi, const std::string& what, bool lo_open,
                           bool hi_open) {
  double v = 0;
  const std::string problem = real_range_problem(text, lo, hi, lo_open, hi_open, &v);
  if (!problem.empty()) fail(what, " ", problem);
  return v;
}

int max_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  const int64_t n = 4 * static_cast<int64_t>(hw == 0 ? 1 : hw);
  return static_cast<int>(n > 256 ? 256 : n);
}

void check_threads(int64_t n, const std::string& what) {
  SAFEDEC_CHECK(n >= 1 && n <= max_threads(), what, " must be in 1..", max_threads(),
                " (4 x this machine's hardware threads, at most 256; got ", n, ")");
}

}  // namespace safedec
