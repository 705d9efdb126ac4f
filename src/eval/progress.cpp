// Progress bar. Rate = items / elapsed seconds since construction; ETA = remaining / rate (shown as
// "?" until the first item is done). TTY mode rewrites the line with '\r' and pads with spaces to
// erase a longer previous line; plain mode writes whole lines so log files stay line-oriented.
#include "eval/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>

namespace safedec {

namespace {
double steady_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}
}  // namespace

ProgressBar::ProgressBar(std::string label, size_t total, ProgressOptions options)
    : label_(std::move(label)), total_(total), options_(std::move(options)) {
  if (!options_.out) options_.out = &std::cerr;
  if (!options_.clock) options_.clock = steady_seconds;
  tty_ = options_.tty < 0 ? ::isatty(2) == 1 : options_.tty == 1;
  start_ = options_.clock();
  last_emit_ = start_;
  if (tty_) emit(start_, false);
}

ProgressBar::~ProgressBar() {
  try {
    finish();
  } catch (...) {
  }
}

std::string ProgressBar::format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const long total = static_cast<long>(std::llround(s));
  const long h = total / 3600, m = (total % 3600) / 60, sec = total % 60;
  char buf[32];
  if (h > 0) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", h, m, sec);
  else if (m > 0) std::snprintf(buf, sizeof buf, "%ld:%02ld", m, sec);
  else std::snprintf(buf, sizeof buf, "%lds", sec);
  return buf;
}

std::string ProgressBar::line(double now) const {
  const double elapsed = std::max(0.0, now - start_);
  // Rate only once time has passed: avoids dividing by ~0 right after construction.
  // Items skipped (already done on resume) count towards the fraction but not the rate.
  const double rate = elapsed > 1e-6 ? static_cast<double>(done_ - skipped_) / elapsed : 0.0;
  std::string out = label_ + " ";
  char buf[128];
  if (total_ > 0) {
    const double frac = std::min(1.0, double(done_) / double(total_));
    if (tty_) {
      const int filled = static_cast<int>(std::floor(frac * options_.bar_width));
      out += "[" + std::string(filled, '#') + std::string(options_.bar_width - filled, '.') + "] ";
    }
    std::snprintf(buf, sizeof buf, "%zu/%zu (%.0f%%)", done_, total_, 100.0 * frac);
    out += buf;
  } else {
    std::snprintf(buf, sizeof buf, "%zu", done_);
    out += buf;
  }
  std::snprintf(buf, sizeof buf, " %.2f it/s", rate);
  out += buf;
  out += " elapsed " + format_duration(elapsed);
  if (total_ > 0 && done_ < total_)
    out += " eta " + format_duration(done_ > skipped_ && rate > 0 ? (total_ - done_) / rate : NAN);
  if (!note_.empty()) out += " | " + note_;
  return out;
}

void ProgressBar::emit(double now, bool final_line) {
  std::ostream& o = *options_.out;
  const std::string text = line(now);
  if (tty_) {
    o << '\r' << text;
    if (text.size() < last_width_) o << std::string(last_width_ - text.size(), ' ');
    last_width_ = text.size();
    if (final_line) o << '\n';
  } else {
    o << text << '\n';
  }
  o.flush();
  last_emit_ = now;
  emitted_done_ = done_;
}

void ProgressBar::tick(size_t n, const std::string& note) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (finished_) return;
  done_ += n;
  if (!note.empty()) note_ = note;
  const double now = options_.clock();
  const double interval = tty_ ? options_.tty_interval_s : options_.plain_interval_s;
  if (now - last_emit_ >= interval) emit(now, false);
}

void ProgressBar::skip(size_t n, const std::string& note) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (finished_) return;
  done_ += n;
  skipped_ += n;
  if (!note.empty()) note_ = note;
}

void ProgressBar::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (finished_) return;
  finished_ = true;
  // Plain mode: the last line already shows the final count unless something happened since.
  if (tty_ || emitted_done_ != done_ || last_emit_ == start_) emit(options_.clock(), true);
}

size_t ProgressBar::done() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return done_;
}

}  // namespace safedec
