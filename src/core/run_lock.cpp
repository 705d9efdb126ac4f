#include "core/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <vector>

#include "core/error.h"

namespace fs = std::filesystem;

namespace safedec {

namespace {

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}

struct Held {
  pid_t pid = 0;  // the process that took it (a forked child inherits the map, not the right to share)
  std::weak_ptr<RunDirLock> lock;
};

// Canonical directory -> this process's lock on it.
std::map<std::string, Held>& registry() {
  static std::map<std::string, Held> r;
  return r;
}

// The holder's record ("pid 1234: safedec eval"), trimmed and shortened; "" when unreadable.
std::string read_holder(int fd) {
  char buf[256];
  const ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return "";
  std::string s(buf, static_cast<size_t>(n));
  const size_t nl = s.find('\n');
  if (nl != std::string::npos) s.resize(nl);
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  return s;
}

// "safedec eval" / "safedec data build": the program and its subcommand words, never its
// arguments (which could hold a prompt).
std::string describe_this_process() {
  FILE* f = std::fopen("/proc/self/cmdline", "rb");
  if (!f) return "safedec";
  std::string all;
  char buf[4096];
  size_t n = std::fread(buf, 1, sizeof buf, f);
  std::fclose(f);
  all.assign(buf, n);
  std::vector<std::string> args;
  size_t start = 0;
  while (start < all.size() && args.size() < 3) {
    const size_t end = all.find('\0', start);
    args.push_back(all.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  if (args.empty()) return "safedec";
  std::string out = fs::path(args[0]).filename().string();
  for (size_t i = 1; i < args.size() && !args[i].empty() && args[i][0] != '-'; ++i) {
    bool word = true;
    for (char c : args[i]) word = word && ((c >= 'a' && c <= 'z') || c == '_');
    if (!word) break;
    out += " " + args[i];
  }
  return out;
}

}  // namespace

std::shared_ptr<RunDirLock> RunDirLock::acquire(const std::string& dir, const std::string& what) {
  std::error_code ec;
  SAFEDEC_CHECK(fs::is_directory(dir, ec), "cannot lock the run directory ", dir, ": it is not a directory.");
  const std::string key = fs::weakly_canonical(fs::path(dir), ec).string();
  SAFEDEC_CHECK(!ec, "cannot resolve the run directory ", dir, ": ", ec.message(), ".");
  std::lock_guard<std::mutex> guard(registry_mutex());
  auto it = registry().find(key);
  if (it != registry().end() && it->second.pid == ::getpid()) {
    if (auto held = it->second.lock.lock()) return held;
  }
  const std::string path = (fs::path(key) / run_lock_file_name()).string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  SAFEDEC_CHECK(fd >= 0, "cannot open the lock file ", path, " of the run directory: ", std::strerror(errno),
                ". Check that the directory is writable.");
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::string holder = err == EWOULDBLOCK ? read_holder(fd) : "";
    ::close(fd);
    if (err == EWOULDBLOCK)
      fail("the run directory ", dir, " is in use by another process (",
           holder.empty() ? std::string("pid unknown") : holder,
           "); only one run may write it at a time. Wait for that process to finish or stop it, or use another "
           "directory. (The lock ", path, " is released as soon as its holder exits, even when killed.)");
    fail("cannot lock the run directory ", dir, " (", path, "): ", std::strerror(err), ".");
  }
  // Record who holds it, for the message a second writer gets.
  const std::string record =
      "pid " + std::to_string(::getpid()) + ": " + (what.empty() ? describe_this_process() : what) + "\n";
  if (::ftruncate(fd, 0) == 0) {
    const ssize_t w = ::pwrite(fd, record.data(), record.size(), 0);
    (void)w;  // the record is informative only; the lock is what counts
  }
  std::shared_ptr<RunDirLock> lock(new RunDirLock(key, path, fd));
  registry()[key] = Held{::getpid(), lock};
  return lock;
}

RunDirLock::~RunDirLock() {
  std::lock_guard<std::mutex> guard(registry_mutex());
  auto it = registry().find(key_);
  if (it != registry().end() && it->second.lock.expired()) registry().erase(it);
  if (fd_ >= 0) {
    // Clear the record first so that a stale pid is never shown; closing releases the lock.
    if (::ftruncate(fd_, 0) != 0) {
    }
    ::close(fd_);
  }
}

}  // namespace safedec
