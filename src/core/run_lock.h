// An advisory, exclusive lock on a run directory (DIR/.safedec.lock, flock(2)), so that two
// processes never write one run at the same time. The kernel releases the lock when the holder
// exits in any way (kill -9 included), so a killed run never leaves it stuck; the file itself
// stays and is harmless. Within one process the lock is shared: opening the same directory again
// while it is held returns the same lock. (A child made by fork() without exec shares its parent's
// open lock file, and so the lock, until it exits; the file is opened O_CLOEXEC, so programs the
// child execs do not.)
#pragma once
#include <memory>
#include <string>

namespace safedec {

class RunDirLock {
 public:
  // Locks `dir` (which must exist) or throws safedec::Error naming the holder's pid and what it
  // runs. `what` describes this process for the next one to see; "" = the program and its
  // subcommand words from /proc/self/cmdline ("safedec eval"), never its other arguments.
  static std::shared_ptr<RunDirLock> acquire(const std::string& dir, const std::string& what = "");

  ~RunDirLock();
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

  const std::string& path() const { return path_; }  // the lock file

 private:
  RunDirLock(std::string key, std::string path, int fd) : key_(std::move(key)), path_(std::move(path)), fd_(fd) {}
  std::string key_, path_;
  int fd_ = -1;
};

// The name of the lock file inside a run directory.
inline const char* run_lock_file_name() { return ".safedec.lock"; }

}  // namespace safedec
