// Scale-out on PyTorch's own distributed engine (c10d): a process group over the ranks that torchrun
// (or any launcher setting the same variables) starts, for data-parallel training (src/train/trainer)
// and sharded evaluation (src/eval/runner).
//
// Launch: `torchrun --no-python --nnodes 1 --nproc-per-node 2 build/safedec train|eval ...` sets
// RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them safedec runs as a single
// process. Rendezvous is c10d's TCPStore (torchrun's agent store when TORCHELASTIC_USE_AGENT_STORE is
// set, else one served by rank 0 at MASTER_ADDR:MASTER_PORT); collectives run on c10d's
// ProcessGroupGloo (the Gloo inside libtorch_cpu). The LibTorch wheel ships no gloo/ headers, so the
// build compiles ProcessGroupGloo.hpp against Debian's libgloo-dev declarations (every Gloo type
// appears there only behind a pointer, and no gloo:: code is compiled into safedec: a test checks
// the library's symbols); without those headers the build still works single-process and a
// multi-process launch fails with a message naming the package. experiments/distributed.md has
// the details.
//
// Timeouts: SAFEDEC_DIST_TIMEOUT (seconds, default 1800) bounds the rendezvous and every collective.
#pragma once
#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace safedec {

// The launcher's variables.
struct DistEnv {
  bool launched = false;  // WORLD_SIZE (and RANK) are set
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr;
  int master_port = 0;
  bool agent_store = false;        // TORCHELASTIC_USE_AGENT_STORE=True: torchrun serves the store
  std::string store_prefix;        // key prefix inside an agent store (per restart attempt)
  std::chrono::milliseconds timeout{std::chrono::seconds(1800)};
};

// Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (and SAFEDEC_DIST_TIMEOUT). None set:
// launched = false. Some but not all, or values out of range: safedec::Error naming the variable.
DistEnv dist_env_from_environment();

// A connected group of ranks (one per process).
class DistGroup {
 public:
  // Rendezvous at MASTER_ADDR:MASTER_PORT and create the Gloo process group. An unreachable address
  // fails after env.timeout with a message naming it.
  static std::shared_ptr<DistGroup> connect(const DistEnv& env);
  ~DistGroup();
  DistGroup(const DistGroup&) = delete;
  DistGroup& operator=(const DistGroup&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  bool is_main() const { return rank_ == 0; }

  // Sums the tensors over all ranks in place (every rank ends with the same values). Tensors of one
  // dtype are packed into flat buckets of at most bucket_bytes each (as DistributedDataParallel's
  // bucketing), all-reduced asynchronously, then copied back.
  void all_reduce_sum(const std::vector<torch::Tensor>& tensors, size_t bucket_bytes = size_t{25} << 20);
  // Copies root's tensors into every rank's (same shapes and dtypes on every rank).
  void broadcast(const std::vector<torch::Tensor>& tensors, int root = 0);
  // Every rank's bytes, in rank order (through the rendezvous store).
  std::vector<std::string> all_gather(const std::string& bytes);
  // Waits for every rank (a Gloo barrier: a rank that died makes it fail instead of hang).
  void barrier(const std::string& where);
  // Hash exchange: every rank's `value` must equal rank 0's, else every rank throws an Error naming
  // `what` and the ranks that differ.
  void check_same(const std::string& what, const std::string& value);

 private:
  DistGroup() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, world_size_ = 1;
  std::string master_;  // "addr:port", for messages
  uint64_t seq_ = 0;    // numbers store keys of gathers
};

// The process-wide group the Trainer and the eval runner use; nullptr = single process. The first
// call reads the environment (init_dist_from_environment), so `safedec train|eval` under torchrun
// connects when it first needs its ranks; later calls return the same group.
std::shared_ptr<DistGroup> dist_group();
void set_dist_group(std::shared_ptr<DistGroup> group);
// Reads the environment and, when launched with WORLD_SIZE > 1, connects and sets the process-wide
// group (WORLD_SIZE=1 runs single-process). Returns the group (nullptr when single-process).
std::shared_ptr<DistGroup> init_dist_from_environment();

// Rank r's contiguous share [begin, end) of n items split over `world` ranks (the first n % world
// ranks take one more).
std::pair<int64_t, int64_t> shard_range(int64_t n, int rank, int world);

}  // namespace safedec
