// The serving scheduler: one thread runs one decode loop over every running request. Requests
// that arrive while others decode join between decode steps:
//  * plain requests share one batch: a new request is prefilled on its own and its KV-cache rows
//    are stacked into the running batch (KvCache::stack), so it decodes in the same forward as
//    every other plain request, whatever their sampling settings (sampling is per row);
//  * a safety method (one MethodFactory = one method and strength) runs its strategy per group:
//    the requests of that method admitted in the same step start one strategy batch together;
//    groups that cannot share state take turns, one decode step each per loop round.
// Each row has its own processors, sampler (seeded per request) and stop checks, so a request's
// tokens do not depend on what else is running.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "decoding/model_bundle.h"
#include "decoding/processors.h"
#include "decoding/strategy.h"
#include "decoding/strategy_registry.h"

namespace safedec {

// One request as the scheduler sees it. The submitting thread fills the inputs; the scheduler
// thread publishes progress under `mu` and notifies `cv`.
struct ServeJob {
  // --- inputs ---
  std::string id;
  StrategyPrompt prompt;
  int64_t max_tokens = 16;
  SamplingParams sampling;
  std::vector<std::string> stop;
  std::shared_ptr<const MethodFactory> factory;  // null = plain (the shared batch)
  // --- progress (guarded by mu) ---
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> tokens;  // accepted tokens so far (no eos)
  bool done = false;
  std::string finish_reason;  // eos | stop | length | cancelled | error
  std::string text;           // final text (stop string cut), set when done
  std::string error;          // set when finish_reason == "error"
  // Set by the HTTP side when the client went away; the row leaves the batch at the next step.
  std::atomic<bool> cancelled{false};

  // Blocks until done.
  void wait();
};

struct SchedulerOptions {
  int64_t max_batch = 16;  // rows decoding at once (all groups together)
  int64_t max_queue = 64;  // requests waiting for a row; submit() refuses more
};

struct SchedulerStats {
  int64_t decode_steps = 0;     // forward steps over all groups
  int64_t row_steps = 0;        // rows summed over those steps
  int64_t max_rows_in_step = 0;  // the largest batch one forward step decoded
  int64_t joined_running = 0;   // requests that joined a batch that was already decoding
  int64_t completed = 0;
  int64_t cancelled = 0;        // jobs ended because their client went away (rows freed early)
  int64_t running = 0, queued = 0;
};

class Scheduler {
 public:
  Scheduler(const ModelBundle& bundle, SchedulerOptions options);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a job; false when the queue is full (the caller answers 429).
  bool submit(std::shared_ptr<ServeJob> job);
  // Finishes every queued and running job, then stops the loop thread (idempotent).
  void drain();
  SchedulerStats stats() const;

 private:
  struct Group;
  struct PlainGroup;
  struct StrategyGroup;
  void loop();
  void admit(std::vector<std::shared_ptr<ServeJob>> jobs);
  void step(Group& group);
  void count_cancelled();

  const ModelBundle& bundle_;
  SchedulerOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<ServeJob>> pending_;
  bool stopping_ = false;
  SchedulerStats stats_;
  // Loop-thread state.
  std::vector<std::unique_ptr<Group>> groups_;
  std::thread thread_;
};

}  // namespace safedec
