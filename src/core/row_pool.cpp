#include "core/row_pool.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace safedec {

struct RowPool::State {
  std::mutex run_mu, mu;
  std::condition_variable cv;
  std::vector<std::thread> workers;
  std::atomic<uint64_t> state{0}, job_gen{0};  // state: generation << 32 | next chunk
  std::atomic<int64_t> done{0};
  uint64_t gen = 0;
  Fn fn = nullptr;
  void* ctx = nullptr;
  int64_t n = 0;
  int active = 0;  // workers 0 .. active-1 take part in the current job

  // Claims chunks of job `g` until none are left (or a newer job replaced it).
  void work(uint64_t g, Fn f, void* c, int64_t count) {
    uint64_t v = state.load(std::memory_order_acquire);
    for (;;) {
      if ((v >> 32) != g || static_cast<int64_t>(v & 0xFFFFFFFFu) >= count) return;
      if (!state.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel)) continue;
      f(c, static_cast<int64_t>(v & 0xFFFFFFFFu));
      done.fetch_add(1, std::memory_order_acq_rel);
      v = state.load(std::memory_order_acquire);
    }
  }

  // `seen` is the generation published before this worker was created: reading it here instead would
  // race with the job published right after the creation, and the new worker would sit that job out.
  void loop(int index, uint64_t seen) {
    for (;;) {
      // Spin ~50 us for the next job, then sleep until notified.
      for (int i = 0; i < 2000 && job_gen.load(std::memory_order_acquire) == seen; ++i) __builtin_ia32_pause();
      Fn f;
      void* c;
      int64_t count;
      uint64_t g;
      bool mine;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return job_gen.load(std::memory_order_acquire) != seen; });
        g = gen;
        f = fn;
        c = ctx;
        count = n;
        mine = index < active;
      }
      seen = g;
      if (mine) work(g, f, c, count);
    }
  }
};

RowPool::RowPool() : s_(new State) {}

RowPool& RowPool::instance() {
  static RowPool* pool = new RowPool;  // never destroyed: detached workers may outlive static destruction
  return *pool;
}

void RowPool::run(int64_t n, int threads, Fn fn, void* ctx) {
  State& s = *s_;
  std::unique_lock<std::mutex> busy(s.run_mu, std::try_to_lock);
  if (threads <= 1 || n <= 1 || !busy.owns_lock()) {
    for (int64_t c = 0; c < n; ++c) fn(ctx, c);
    return;
  }
  const int want = pool_threads(threads) - 1;
  while (static_cast<int>(s.workers.size()) < want) {
    const int index = static_cast<int>(s.workers.size());
    const uint64_t seen = s.job_gen.load(std::memory_order_acquire);
    s.workers.emplace_back([&s, index, seen] { s.loop(index, seen); });
    s.workers.back().detach();
  }
  uint64_t g;
  {
    std::lock_guard<std::mutex> lk(s.mu);
    s.fn = fn;
    s.ctx = ctx;
    s.n = n;
    s.active = want;
    s.done.store(0, std::memory_order_relaxed);
    s.gen = (s.gen + 1) & 0xFFFFFFFFu;
    g = s.gen;
    s.state.store(g << 32, std::memory_order_release);
    s.job_gen.store(g, std::memory_order_release);
  }
  s.cv.notify_all();
  s.work(g, fn, ctx, n);
  while (s.done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

}  // namespace safedec
