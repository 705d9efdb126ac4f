#include "serve/scheduler.h"

#include <algorithm>
#include <iostream>

#include "core/error.h"
#include "decoding/plain_strategy.h"
#include "decoding/strategies/common.h"
#include "model/prefix_cache.h"

namespace safedec {

void ServeJob::wait() {
  std::unique_lock<std::mutex> lk(mu);
  cv.wait(lk, [&] { return done; });
}

namespace {

// One decoding row: a job with its own history, processors and sampler.
struct Row {
  std::shared_ptr<ServeJob> job;
  std::vector<int32_t> history;  // prompt + generated ids (repetition penalty)
  std::vector<std::unique_ptr<LogitsProcessor>> chain;
  std::unique_ptr<Sampler> sampler;

  explicit Row(std::shared_ptr<ServeJob> j) : job(std::move(j)) {
    history = job->prompt.ids;
    chain = make_processor_chain(job->sampling);
    sampler = std::make_unique<Sampler>(job->sampling);
    sampler->add_sequence(0);  // seeded from (seed, 0): the same draws alone or in a batch
  }
};

int64_t max_tokens_of(const std::vector<std::shared_ptr<ServeJob>>& jobs) {
  int64_t m = 1;
  for (const auto& j : jobs) m = std::max(m, j->max_tokens);
  return m;
}

}  // namespace

struct Scheduler::Group {
  virtual ~Group() = default;
  std::vector<Row> rows;  // the active rows, in batch order
  virtual torch::Tensor scores() = 0;
  virtual void keep(const std::vector<int64_t>& rows) = 0;
  virtual void advance(const std::vector<int32_t>& tokens) = 0;
};

// The plain target: one batch that new requests join between steps (their own prefill, then
// their cache rows stacked under the running rows).
struct Scheduler::PlainGroup : Scheduler::Group {
  std::shared_ptr<const CausalLM> model;
  int64_t pad_id;
  std::shared_ptr<PrefixKvStore> prefixes = std::make_shared<PrefixKvStore>();
  KvCache cache;
  torch::Tensor last;  // [A, V] scores of the pending step

  PlainGroup(std::shared_ptr<const CausalLM> m, int64_t pad) : model(std::move(m)), pad_id(pad) {}

  void add(const std::shared_ptr<ServeJob>& job) {
    KvCache fresh;
    torch::Tensor logits =
        prefill_rows(*model, {prompt_row(job->prompt)}, job->max_tokens, pad_id, fresh, nullptr, nullptr, prefixes.get());
    if (rows.empty()) {
      cache = std::move(fresh);
      last = logits;
    } else {
      cache = KvCache::stack({&cache, &fresh});
      last = torch::cat({last, logits.to(last.scalar_type())}, 0);
    }
    rows.emplace_back(job);
  }
  torch::Tensor scores() override { return last; }
  void keep(const std::vector<int64_t>& idx) override {
    keep_cache_rows(cache, idx);
    last = last.index_select(0, torch::tensor(idx, torch::kLong).to(last.device()));
  }
  void advance(const std::vector<int32_t>& tokens) override { last = decode_step(*model, tokens, cache); }
};

// A safety method's strategy over the requests that started together.
struct Scheduler::StrategyGroup : Scheduler::Group {
  std::unique_ptr<Strategy> strategy;
  int64_t step_index = 0;

  StrategyGroup(const MethodFactory& factory, const std::vector<std::shared_ptr<ServeJob>>& jobs) {
    strategy = factory.make();
    std::vector<StrategyPrompt> prompts;
    for (const auto& j : jobs) prompts.push_back(j->prompt);
    strategy->start(prompts, max_tokens_of(jobs));
    for (const auto& j : jobs) rows.emplace_back(j);
  }
  torch::Tensor scores() override { return strategy->next_scores(step_index); }
  void keep(const std::vector<int64_t>& idx) override { strategy->keep_rows(idx); }
  void advance(const std::vector<int32_t>& tokens) override {
    strategy->advance(tokens);
    ++step_index;
  }
};

namespace {

// Publishes a job's end: final text (cut at the first stop string) and its reason.
void finish_job(ServeJob& job, const Tokenizer& tok, const std::string& reason, const std::string& error = "") {
  std::string text = tok.decode(job.tokens, /*skip_special=*/true);
  if (reason == "stop") {
    size_t cut = std::string::npos;
    for (const auto& s : job.stop) cut = std::min(cut, text.find(s));
    if (cut != std::string::npos) text.resize(cut);
  }
  std::lock_guard<std::mutex> lk(job.mu);
  job.text = std::move(text);
  job.finish_reason = reason;
  job.error = error;
  job.done = true;
  job.cv.notify_all();
}

}  // namespace

Scheduler::Scheduler(const ModelBundle& bundle, SchedulerOptions options) : bundle_(bundle), options_(options) {
  SAFEDEC_CHECK(options_.max_batch >= 1, "the serving batch must hold at least 1 row (--max-batch), got ",
                options_.max_batch);
  SAFEDEC_CHECK(options_.max_queue >= 0, "the serving queue length must be >= 0 (--max-queue), got ",
                options_.max_queue);
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() { drain(); }

bool Scheduler::submit(std::shared_ptr<ServeJob> job) {
  SAFEDEC_ASSERT(job && job->max_tokens >= 1, "a serve job needs max_tokens >= 1");
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_ || static_cast<int64_t>(pending_.size()) >= options_.max_queue + options_.max_batch -
                                                                  std::min(options_.max_batch, stats_.running))
      return false;
    pending_.push_back(std::move(job));
    stats_.queued = static_cast<int64_t>(pending_.size());
  }
  cv_.notify_all();
  return true;
}

void Scheduler::drain() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Scheduler::count_cancelled() {
  std::lock_guard<std::mutex> lk(mu_);
  ++stats_.cancelled;
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

void Scheduler::loop() {
  c10::InferenceMode guard;
  for (;;) {
    std::vector<std::shared_ptr<ServeJob>> admitted;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || !pending_.empty() || !groups_.empty(); });
      if (stopping_ && pending_.empty() && groups_.empty()) break;
      int64_t running = 0;
      for (const auto& g : groups_) running += static_cast<int64_t>(g->rows.size());
      while (!pending_.empty() && running + static_cast<int64_t>(admitted.size()) < options_.max_batch) {
        admitted.push_back(std::move(pending_.front()));
        pending_.pop_front();
      }
      stats_.queued = static_cast<int64_t>(pending_.size());
      stats_.running = running + static_cast<int64_t>(admitted.size());
    }
    if (!admitted.empty()) admit(std::move(admitted));
    for (auto& g : groups_) step(*g);
    groups_.erase(std::remove_if(groups_.begin(), groups_.end(), [](const auto& g) { return g->rows.empty(); }),
                  groups_.end());
    std::lock_guard<std::mutex> lk(mu_);
    int64_t running = 0;
    for (const auto& g : groups_) running += static_cast<int64_t>(g->rows.size());
    stats_.running = running;
  }
}

void Scheduler::admit(std::vector<std::shared_ptr<ServeJob>> jobs) {
  const Tokenizer& tok = *bundle_.tokenizer;
  // Jobs whose client already left never start.
  jobs.erase(std::remove_if(jobs.begin(), jobs.end(),
                            [&](const auto& j) {
                              if (!j->cancelled) return false;
                              count_cancelled();  // before the job is published as done
                              finish_job(*j, tok, "cancelled");
                              return true;
                            }),
             jobs.end());
  // Plain jobs join the one plain batch, each prefilled on its own.
  PlainGroup* plain = nullptr;
  for (auto& g : groups_)
    if (auto* p = dynamic_cast<PlainGroup*>(g.get())) plain = p;
  std::vector<std::pair<const MethodFactory*, std::vector<std::shared_ptr<ServeJob>>>> by_method;
  for (auto& j : jobs) {
    if (j->factory) {
      auto it = std::find_if(by_method.begin(), by_method.end(),
                             [&](const auto& e) { return e.first == j->factory.get(); });
      if (it == by_method.end()) {
        by_method.push_back({j->factory.get(), {}});
        it = std::prev(by_method.end());
      }
      it->second.push_back(j);
      continue;
    }
    try {
      if (!plain) {
        groups_.push_back(std::make_unique<PlainGroup>(bundle_.model, bundle_.pad_id()));
        plain = static_cast<PlainGroup*>(groups_.back().get());
      }
      const bool joining = !plain->rows.empty();
      plain->add(j);
      if (joining) {
        std::lock_guard<std::mutex> lk(mu_);
        ++stats_.joined_running;
      }
    } catch (const std::exception& e) {
      std::cerr << "[serve] request " << j->id << " failed at prefill: " << e.what() << "\n";
      finish_job(*j, tok, "error", e.what());
    }
  }
  for (auto& [factory, group_jobs] : by_method) {
    try {
      groups_.push_back(std::make_unique<StrategyGroup>(*factory, group_jobs));
    } catch (const std::exception& e) {
      std::cerr << "[serve] a " << factory->config().method << " batch failed at start: " << e.what() << "\n";
      for (auto& j : group_jobs) finish_job(*j, tok, "error", e.what());
    }
  }
}

void Scheduler::step(Group& g) {
  const Tokenizer& tok = *bundle_.tokenizer;
  const std::vector<int32_t>& eos = bundle_.tokenizer->eog_ids();
  const size_t n = g.rows.size();
  std::vector<int64_t> keep;
  std::vector<int32_t> keep_tokens;
  try {
    torch::Tensor scores = g.scores().to(torch::kFloat32);
    SAFEDEC_ASSERT(scores.dim() == 2 && scores.size(0) == static_cast<int64_t>(n),
                   "the serving batch's scores have the wrong shape");
    auto bad = torch::isnan(scores).logical_or(torch::isposinf(scores));
    SAFEDEC_CHECK(!bad.any().item<bool>(), "NaN/Inf next-token scores; check the model weights");
    std::vector<int32_t> greedy;  // argmax of every row, computed once if a row needs it
    {
      std::lock_guard<std::mutex> lk(mu_);
      ++stats_.decode_steps;
      stats_.row_steps += static_cast<int64_t>(n);
      stats_.max_rows_in_step = std::max(stats_.max_rows_in_step, static_cast<int64_t>(n));
    }
    for (size_t r = 0; r < n; ++r) {
      Row& row = g.rows[r];
      ServeJob& job = *row.job;
      if (job.cancelled) {
        count_cancelled();  // before the job is published as done
        finish_job(job, tok, "cancelled");
        continue;
      }
      int32_t t;
      if (row.chain.empty() && job.sampling.greedy()) {
        if (greedy.empty()) greedy = argmax_rows(scores);
        t = greedy[r];
      } else {
        torch::Tensor s = scores.narrow(0, static_cast<int64_t>(r), 1).clone();
        std::vector<std::vector<int32_t>> hist = {row.history};
        for (auto& proc : row.chain) proc->apply(s, hist);
        t = row.sampler->sample(s, {0})[0];
      }
      std::string reason;
      if (std::find(eos.begin(), eos.end(), t) != eos.end()) {
        reason = "eos";
      } else {
        row.history.push_back(t);
        {
          std::lock_guard<std::mutex> lk(job.mu);
          job.tokens.push_back(t);
        }
        job.cv.notify_all();
        if (!job.stop.empty()) {
          const std::string text = tok.decode(job.tokens, /*skip_special=*/true);
          for (const auto& s : job.stop)
            if (text.find(s) != std::string::npos) reason = "stop";
        }
        if (reason.empty() && static_cast<int64_t>(job.tokens.size()) >= job.max_tokens) reason = "length";
      }
      if (reason.empty()) {
        keep.push_back(static_cast<int64_t>(r));
        keep_tokens.push_back(t);
      } else {
        {
          std::lock_guard<std::mutex> lk(mu_);
          ++stats_.completed;  // before the job is published as done
        }
        finish_job(job, tok, reason);
      }
    }
    if (keep.size() != n) {
      std::vector<Row> next;
      for (int64_t r : keep) next.push_back(std::move(g.rows[r]));
      if (!keep.empty()) g.keep(keep);
      g.rows = std::move(next);
    }
    if (!g.rows.empty()) g.advance(keep_tokens);
  } catch (const std::exception& e) {
    std::cerr << "[serve] a decoding batch failed: " << e.what() << "\n";
    for (auto& row : g.rows) {
      bool done;
      {
        std::lock_guard<std::mutex> lk(row.job->mu);
        done = row.job->done;
      }
      if (!done) finish_job(*row.job, tok, "error", e.what());
    }
    g.rows.clear();
  }
}

}  // namespace safedec
