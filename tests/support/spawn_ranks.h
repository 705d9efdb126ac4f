// Test helper for multi-process (c10d) tests: starts this test binary again as `world` ranks on
// 127.0.0.1 with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set (as torchrun does) plus
// SAFEDEC_TEST_ROLE, and waits for them. The binary's child side is a static initializer that runs
// the role instead of GoogleTest (see SAFEDEC_RANK_ROLES below).
#pragma once
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace safedec::testing_support {

// A TCP port that was free a moment ago (bound to port 0, then closed).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

struct RankRun {
  std::vector<int> codes;         // exit status per rank (128 + signal when killed; -1 timed out)
  std::vector<std::string> logs;  // stdout + stderr per rank
  bool ok() const {
    for (int c : codes)
      if (c != 0) return false;
    return true;
  }
  std::string all_logs() const {
    std::string s;
    for (size_t r = 0; r < logs.size(); ++r) s += "--- rank " + std::to_string(r) + " ---\n" + logs[r];
    return s;
  }
};

// Ranks started by start_ranks: their pids and log files.
struct StartedRanks {
  std::vector<pid_t> pids;
  std::vector<std::string> logs;
};

// Starts `world` processes running argv (default: this test binary, /proc/self/exe) as ranks on
// 127.0.0.1 of one fresh port, with SAFEDEC_TEST_ROLE=role; per-rank extra variables come from
// env_of(rank). stdout and stderr go to log_dir/rank<r>_<role>.log.
inline StartedRanks start_ranks(const std::string& role, int world, const std::string& log_dir,
                                const std::function<std::map<std::string, std::string>(int)>& env_of = nullptr,
                                std::vector<std::string> argv = {}) {
  if (argv.empty()) argv = {"/proc/self/exe"};
  const int port = free_port();
  StartedRanks out;
  for (int r = 0; r < world; ++r) {
    std::map<std::string, std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string kv = *e;
      const size_t eq = kv.find('=');
      if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    env.erase("TORCHELASTIC_USE_AGENT_STORE");
    env["SAFEDEC_TEST_ROLE"] = role;
    env["RANK"] = std::to_string(r);
    env["LOCAL_RANK"] = std::to_string(r);
    env["WORLD_SIZE"] = std::to_string(world);
    env["MASTER_ADDR"] = "127.0.0.1";
    env["MASTER_PORT"] = std::to_string(port);
    env["OMP_NUM_THREADS"] = "1";
    if (env_of)
      for (const auto& [k, v] : env_of(r)) env[k] = v;
    std::vector<std::string> kvs;
    for (const auto& [k, v] : env) kvs.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (auto& s : kvs) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<std::string> args = argv;
    std::vector<char*> argp;
    for (auto& a : args) argp.push_back(a.data());
    argp.push_back(nullptr);
    const std::string log = log_dir + "/rank" + std::to_string(r) + "_" + role + ".log";
    out.logs.push_back(log);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid = -1;
    if (posix_spawn(&pid, args[0].c_str(), &fa, nullptr, argp.data(), envp.data()) != 0) pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    out.pids.push_back(pid);
  }
  return out;
}

// Waits for started ranks; kills every rank still running after timeout_s (its code is then -1).
inline RankRun wait_ranks(const StartedRanks& s, int timeout_s = 600) {
  const size_t world = s.pids.size();
  RankRun out;
  out.codes.assign(world, -1);
  std::vector<bool> done(world, false);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  for (;;) {
    bool all = true;
    for (size_t r = 0; r < world; ++r) {
      if (done[r]) continue;
      if (s.pids[r] < 0) {
        done[r] = true;
        continue;
      }
      int st = 0;
      if (::waitpid(s.pids[r], &st, WNOHANG) == s.pids[r]) {
        done[r] = true;
        out.codes[r] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      } else {
        all = false;
      }
    }
    if (all) break;
    if (std::chrono::steady_clock::now() > deadline) {
      for (size_t r = 0; r < world; ++r)
        if (!done[r]) {
          ::kill(s.pids[r], SIGKILL);
          ::waitpid(s.pids[r], nullptr, 0);
        }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (const auto& p : s.logs) {
    std::ifstream in(p);
    std::stringstream t;
    t << in.rdbuf();
    out.logs.push_back(t.str());
  }
  return out;
}

// start_ranks + wait_ranks.
inline RankRun spawn_ranks(const std::string& role, int world, const std::string& log_dir,
                           const std::function<std::map<std::string, std::string>(int)>& env_of = nullptr,
                           int timeout_s = 600, std::vector<std::string> argv = {}) {
  return wait_ranks(start_ranks(role, world, log_dir, env_of, std::move(argv)), timeout_s);
}

// The role this process was started for ("" in the GoogleTest parent).
inline std::string rank_role() {
  const char* r = std::getenv("SAFEDEC_TEST_ROLE");
  return r ? r : "";
}

}  // namespace safedec::testing_support

// In a test file: SAFEDEC_RANK_ROLES(fn) with `int fn(const std::string& role)` defines main(): in a
// spawned rank it runs fn and exits with its value (an exception: message on stderr, exit 2); in the
// parent it runs GoogleTest (this main replaces gtest_main's).
#define SAFEDEC_RANK_ROLES(fn)                                              \
  int main(int argc, char** argv) {                                         \
    const std::string role = ::safedec::testing_support::rank_role();       \
    if (role.empty()) {                                                     \
      ::testing::InitGoogleTest(&argc, argv);                               \
      return RUN_ALL_TESTS();                                               \
    }                                                                       \
    int code = 1;                                                           \
    try {                                                                   \
      code = fn(role);                                                      \
    } catch (const std::exception& e) {                                     \
      std::fprintf(stderr, "rank error: %s\n", e.what());                   \
      code = 2;                                                             \
    }                                                                       \
    std::fflush(stdout);                                                    \
    std::fflush(stderr);                                                    \
    return code;                                                            \
  }
