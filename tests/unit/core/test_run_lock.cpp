// The run-directory lock: a second process is refused with the holder's pid; a killed holder
// leaves nothing stuck; the same process may reopen its own directory.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "core/error.h"
#include "core/run_lock.h"

namespace fs = std::filesystem;
using namespace safedec;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("safedec_run_lock_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

// Forks a child that takes the lock, reports through a pipe and then sleeps until killed.
pid_t hold_in_child(const std::string& dir) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    alarm(60);  // never outlive a failed test
    close(fds[0]);
    char ok = 'n';
    try {
      auto lock = RunDirLock::acquire(dir, "test holder");
      ok = 'y';
      if (write(fds[1], &ok, 1) != 1) _exit(3);
      for (;;) pause();
    } catch (...) {
      if (write(fds[1], &ok, 1) != 1) _exit(3);
      _exit(2);
    }
  }
  close(fds[1]);
  char c = 0;
  const bool got = read(fds[0], &c, 1) == 1 && c == 'y';
  close(fds[0]);
  return got ? pid : -1;
}

}  // namespace

TEST(RunLock, SecondProcessIsRefusedNamingTheHolderAndAKilledHolderFreesIt) {
  TempDir d;
  const pid_t child = hold_in_child(d.path.string());
  ASSERT_GT(child, 0) << "the child process could not take the lock";
  std::string message;
  try {
    RunDirLock::acquire(d.path.string());
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("in use by another process"), std::string::npos) << message;
  EXPECT_NE(message.find("pid " + std::to_string(child) + ": test holder"), std::string::npos) << message;
  // kill -9: the kernel drops the lock with the process.
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  auto lock = RunDirLock::acquire(d.path.string());
  ASSERT_NE(lock, nullptr);
  EXPECT_TRUE(fs::exists(d.path / run_lock_file_name()));
}

TEST(RunLock, TheSameProcessSharesItsLockAndReleasesItWithTheLastHolder) {
  TempDir d;
  auto a = RunDirLock::acquire(d.path.string());
  auto b = RunDirLock::acquire(d.path.string() + "/./");
  EXPECT_EQ(a.get(), b.get());
  // While held here, a forked child (which inherits the open lock file) is refused; after the
  // child has exited and this process released it, a new child gets it.
  const pid_t refused = hold_in_child(d.path.string());
  EXPECT_EQ(refused, -1);
  int status = 0;
  if (refused > 0) kill(refused, SIGKILL);
  while (wait(&status) > 0) {
  }
  a.reset();
  b.reset();
  const pid_t child = hold_in_child(d.path.string());
  EXPECT_GT(child, 0);
  if (child > 0) {
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
  }
}

TEST(RunLock, AMissingDirectoryIsAnError) {
  EXPECT_THROW(RunDirLock::acquire("/nonexistent/safedec/run"), Error);
}
