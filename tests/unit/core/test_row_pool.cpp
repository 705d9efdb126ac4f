#include "core/row_pool.h"

#include <gtest/gtest.h>

#include <sched.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace safedec {
namespace {

TEST(RowPool, EveryChunkRunsExactlyOnceWhateverTheThreadCount) {
  for (int threads : {1, 2, 3, 8, 64}) {
    for (int64_t n : {0, 1, 2, 7, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      for (auto& h : hits) h.store(0);
      parallel_chunks(n, threads, [&](int64_t c) { hits[static_cast<size_t>(c)].fetch_add(1); });
      for (int64_t c = 0; c < n; ++c) EXPECT_EQ(hits[static_cast<size_t>(c)].load(), 1) << "chunk " << c << " of " << n
                                                                                      << ", threads " << threads;
    }
  }
}

TEST(RowPool, SpreadsWorkOverSeveralThreadsAndOnlyOneWhenAskedForOne) {
  std::mutex mu;
  std::set<std::thread::id> ids;
  auto busy_chunk = [&](int64_t) {
    {
      std::lock_guard<std::mutex> g(mu);
      ids.insert(std::this_thread::get_id());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // long enough for the worker to wake up
  };
  parallel_chunks(64, 1, busy_chunk);
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(*ids.begin(), std::this_thread::get_id());
  ids.clear();
  parallel_chunks(64, 2, busy_chunk);
  EXPECT_EQ(ids.size(), 2u) << "a two-thread job ran on " << ids.size() << " thread(s)";
}

TEST(RowPool, WorkersCreatedForAJobTakePartInThatJobEvenOnOneCpu) {
  // Pinned to one CPU, a new worker only starts after the caller has published the job; it used to
  // read the generation on start-up and so sat out the very job it was created for (CI, stop 27).
  cpu_set_t old_set;
  ASSERT_EQ(sched_getaffinity(0, sizeof(old_set), &old_set), 0);
  int first = -1;
  for (int c = 0; c < CPU_SETSIZE && first < 0; ++c)
    if (CPU_ISSET(c, &old_set)) first = c;
  ASSERT_GE(first, 0);
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);
  std::mutex mu;
  std::set<std::thread::id> ids;
  parallel_chunks(64, 4, [&](int64_t) {  // 4 threads: at least workers 1 and 2 are new in this process
    {
      std::lock_guard<std::mutex> g(mu);
      ids.insert(std::this_thread::get_id());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  });
  sched_setaffinity(0, sizeof(old_set), &old_set);
  EXPECT_EQ(ids.size(), 4u) << "a four-thread job on one CPU ran on " << ids.size() << " thread(s)";
}

TEST(RowPool, NestedAndConcurrentCallersAllFinishWithTheRightSums) {
  // A nested call (the pool is busy) and a second caller thread run their chunks serially themselves.
  std::atomic<int64_t> nested_sum{0};
  parallel_chunks(8, 2, [&](int64_t c) {
    parallel_chunks(10, 2, [&](int64_t d) { nested_sum.fetch_add(c * 10 + d); });
  });
  EXPECT_EQ(nested_sum.load(), 79 * 80 / 2);

  std::vector<int64_t> sums(4, 0);
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&, t] {
      for (int rep = 0; rep < 50; ++rep) {
        std::atomic<int64_t> s{0};
        parallel_chunks(100, 2, [&](int64_t c) { s.fetch_add(c); });
        sums[static_cast<size_t>(t)] += s.load();
      }
    });
  }
  for (auto& c : callers) c.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(sums[static_cast<size_t>(t)], 50 * 4950) << "caller " << t;
}

}  // namespace
}  // namespace safedec
