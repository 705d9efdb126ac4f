// The c10d process group (src/dist): launcher variables, shards, and two real ranks on 127.0.0.1
// (this binary started again as rank 0 and rank 1): bucketed all-reduce, broadcast, the config-hash
// exchange, an unreachable MASTER_ADDR, and that no gloo:: code is compiled into safedec.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "dist/dist.h"
#include "support/error_of.h"
#include "support/spawn_ranks.h"

using namespace safedec;
using safedec::testing_support::error_of;
using safedec::testing_support::spawn_ranks;

namespace {

int rank_main(const std::string& role) {
  auto g = init_dist_from_environment();
  if (!g) return 3;
  if (role == "collectives") {
    // Three fp32 tensors and one fp64 tensor, buckets of 64 bytes: several buckets and a dtype switch.
    const float r = static_cast<float>(g->rank() + 1);
    std::vector<torch::Tensor> ts = {torch::arange(10, torch::kFloat32) * r, torch::full({3, 4}, r),
                                     torch::full({2}, static_cast<double>(r), torch::kFloat64),
                                     torch::full({20}, -r)};
    g->all_reduce_sum(ts, 64);
    // Ranks 1 and 2: sums are 3x rank 1's values.
    if (!torch::equal(ts[0], torch::arange(10, torch::kFloat32) * 3)) return 10;
    if (!torch::equal(ts[1], torch::full({3, 4}, 3.0f))) return 11;
    if (!torch::equal(ts[2], torch::full({2}, 3.0, torch::kFloat64))) return 12;
    if (!torch::equal(ts[3], torch::full({20}, -3.0f))) return 13;
    torch::Tensor b = torch::full({5}, static_cast<float>(g->rank() * 7 + 1));
    g->broadcast({b}, 0);
    if (!torch::equal(b, torch::full({5}, 1.0f))) return 14;
    const auto all = g->all_gather("hello from " + std::to_string(g->rank()));
    if (all.size() != 2 || all[0] != "hello from 0" || all[1] != "hello from 1") return 15;
    g->check_same("config", "same");
    g->barrier("end");
    return 0;
  }
  if (role == "hash_mismatch") {
    try {
      g->check_same("the resolved config (sha256)", g->rank() == 0 ? "aaaa" : "bbbb");
    } catch (const Error& e) {
      std::printf("mismatch: %s\n", e.what());
      return 2;
    }
    return 0;
  }
  return 4;
}

std::string temp_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/dist_" + name;
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

struct EnvGuard {
  std::vector<std::string> names{"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                                 "SAFEDEC_DIST_TIMEOUT", "TORCHELASTIC_USE_AGENT_STORE"};
  EnvGuard() {
    for (const auto& n : names) ::unsetenv(n.c_str());
  }
  ~EnvGuard() {
    for (const auto& n : names) ::unsetenv(n.c_str());
  }
};

}  // namespace

TEST(Dist, ShardRangesCoverTheItemsOnce) {
  for (int64_t n : {0, 1, 5, 8, 13}) {
    for (int w : {1, 2, 3, 4}) {
      int64_t next = 0;
      for (int r = 0; r < w; ++r) {
        auto [b, e] = shard_range(n, r, w);
        EXPECT_EQ(b, next) << n << " " << r << " " << w;
        EXPECT_GE(e - b, n / w);
        EXPECT_LE(e - b, n / w + 1);
        next = e;
      }
      EXPECT_EQ(next, n);
    }
  }
}

TEST(Dist, WithoutLauncherVariablesItIsOneProcess) {
  EnvGuard g;
  const DistEnv e = dist_env_from_environment();
  EXPECT_FALSE(e.launched);
  EXPECT_EQ(init_dist_from_environment(), nullptr);
  EXPECT_EQ(dist_group(), nullptr);
}

TEST(Dist, PartialOrInvalidLauncherVariablesAreRefused) {
  EnvGuard g;
  ::setenv("RANK", "0", 1);
  ::setenv("WORLD_SIZE", "2", 1);
  EXPECT_NE(error_of([] { dist_env_from_environment(); }).find("MASTER_ADDR is not set"), std::string::npos);
  ::setenv("MASTER_ADDR", "127.0.0.1", 1);
  ::setenv("MASTER_PORT", "http", 1);
  EXPECT_NE(error_of([] { dist_env_from_environment(); }).find("MASTER_PORT='http'"), std::string::npos);
  ::setenv("MASTER_PORT", "29500", 1);
  ::setenv("RANK", "2", 1);
  EXPECT_NE(error_of([] { dist_env_from_environment(); }).find("RANK='2'"), std::string::npos);
  ::setenv("RANK", "1", 1);
  const DistEnv e = dist_env_from_environment();
  EXPECT_TRUE(e.launched);
  EXPECT_EQ(e.rank, 1);
  EXPECT_EQ(e.world_size, 2);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.master_port, 29500);
}

TEST(Dist, UnreachableMasterAddrTimesOutNamingIt) {
  EnvGuard g;
  // Loopback only (tests never send traffic off this machine): a port that is bound but never
  // listened on refuses every connection, so the rendezvous can only give up at its timeout.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string port = std::to_string(ntohs(addr.sin_port));
  ::setenv("RANK", "1", 1);
  ::setenv("WORLD_SIZE", "2", 1);
  ::setenv("MASTER_ADDR", "127.0.0.1", 1);
  ::setenv("MASTER_PORT", port.c_str(), 1);
  ::setenv("SAFEDEC_DIST_TIMEOUT", "3", 1);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string err = error_of([] { init_dist_from_environment(); });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ::close(fd);
  EXPECT_NE(err.find("MASTER_ADDR=127.0.0.1 MASTER_PORT=" + port), std::string::npos) << err;
  EXPECT_NE(err.find("within 3 s"), std::string::npos) << err;
  EXPECT_LT(s, 120.0) << "the rendezvous did not give up";
}

TEST(Dist, TwoRanksAllReduceBroadcastAndGather) {
  const auto run = spawn_ranks("collectives", 2, temp_dir("collectives"), nullptr, 300);
  EXPECT_TRUE(run.ok()) << run.all_logs();
}

TEST(Dist, RanksWithDifferentConfigsAreDetected) {
  const auto run = spawn_ranks("hash_mismatch", 2, temp_dir("mismatch"), nullptr, 300);
  ASSERT_EQ(run.codes.size(), 2u);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(run.codes[r], 2) << run.all_logs();
    EXPECT_NE(run.logs[r].find("ranks disagree on the resolved config (sha256): rank(s) 1 differ from rank 0"),
              std::string::npos)
        << run.all_logs();
  }
}

// The gloo/ declarations come from Debian's libgloo-dev, not from the Gloo that libtorch_cpu was built
// with; that is sound only while safedec compiles no gloo:: code of its own (every Gloo type is used
// behind a pointer). Any gloo:: symbol defined in the dist library would be a second, possibly
// different, definition next to libtorch's.
TEST(Dist, NoGlooCodeIsCompiledIntoSafedec) {
  const std::string lib = std::string(SAFEDEC_BUILD_DIR) + "/libsafedec_dist.a";
  ASSERT_TRUE(std::filesystem::exists(lib)) << "missing " << lib;
  const std::string out = temp_dir("nm") + "/nm.txt";
  const std::string cmd = "nm -C --defined-only '" + lib + "' > '" + out + "' 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "nm failed (binutils is needed for this check): " << cmd;
  std::ifstream in(out);
  std::string line, defined;
  size_t lines = 0;
  while (std::getline(in, line)) {
    ++lines;
    if (line.find(" gloo::") != std::string::npos) defined += line + "\n";
  }
  EXPECT_GT(lines, 10u) << "nm listed nothing";
  EXPECT_TRUE(defined.empty()) << "gloo:: code compiled into safedec:\n" << defined;
}

SAFEDEC_RANK_ROLES(rank_main)
