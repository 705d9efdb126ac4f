// A progress bar on stderr for long evaluation loops: items done / total, rate, ETA. On a TTY it
// redraws one line in place (at most ~10 times per second); otherwise it prints a plain line at a
// fixed interval and at the end, so logs of batch jobs stay readable.
#pragma once
#include <chrono>
#include <cstddef>
#include <functional>
#include <mutex>
#include <ostream>
#include <string>

namespace safedec {

// Options for ProgressBar; the clock is injectable for tests.
struct ProgressOptions {
  std::ostream* out = nullptr;   // default: std::cerr
  int tty = -1;                  // -1: detect with isatty(2); 0: plain lines; 1: redraw in place
  double plain_interval_s = 10;  // plain mode: seconds between lines
  double tty_interval_s = 0.1;   // TTY mode: minimum seconds between redraws
  int bar_width = 28;
  std::function<double()> clock;  // seconds; default: steady_clock
};

// Thread-safe progress reporting for a known number of items (total may be 0 = unknown).
class ProgressBar {
 public:
  ProgressBar(std::string label, size_t total, ProgressOptions options = {});
  ~ProgressBar();  // finishes if finish() was not called
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Adds `n` finished items; `note` (optional) is shown after the numbers, e.g. "gcg".
  void tick(size_t n = 1, const std::string& note = "");
  // Prints the final line (always) and ends the bar; further ticks are ignored.
  // Counts n items as already done (e.g. finished before a resume): they fill the bar but do not
  // enter the rate or the ETA.
  void skip(size_t n, const std::string& note = "");
  void finish();
  size_t done() const;

  // "1:02:03" / "4:05" / "12s" style durations, "?" for non-finite.
  static std::string format_duration(double seconds);

 private:
  std::string line(double now) const;
  void emit(double now, bool final_line);

  std::string label_;
  size_t total_;
  ProgressOptions options_;
  bool tty_;
  double start_;
  double last_emit_;
  size_t done_ = 0;
  size_t skipped_ = 0;
  size_t emitted_done_ = static_cast<size_t>(-1);
  std::string note_;
  bool finished_ = false;
  size_t last_width_ = 0;
  mutable std::mutex mutex_;
};

}  // namespace safedec
