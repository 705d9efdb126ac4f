// c10d process group for safedec's ranks (see dist.h).
#include "dist/dist.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

// ProcessGroupGloo.hpp is compiled only with USE_C10D_GLOO and needs the gloo/ declarations, which the
// LibTorch wheel does not ship (Debian: libgloo-dev). The implementation is libtorch_cpu's own.
#if __has_include(<gloo/context.h>) && __has_include(<gloo/rendezvous/store.h>)
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#define SAFEDEC_HAVE_GLOO 1
#else
#define SAFEDEC_HAVE_GLOO 0
#endif

#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <mutex>

#include "core/error.h"

namespace safedec {

namespace {

const char* env_or_null(const char* name) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? v : nullptr;
}

int64_t parse_int_env(const char* name, const char* text, int64_t lo, int64_t hi) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text, &end, 10);
  SAFEDEC_CHECK(errno == 0 && end != text && *end == '\0' && v >= lo && v <= hi, "the environment variable ", name,
                "='", text, "' must be an integer in [", lo, ", ", hi, "] (set by torchrun; see README, Distributed)");
  return v;
}

// c10::Error carries a C++ backtrace in what(); the message alone is enough for users.
std::string message_of(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

std::mutex g_mutex;
std::shared_ptr<DistGroup> g_group;
bool g_initialised = false;  // the environment was read (or a group set)

}  // namespace

struct DistGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> pg;
  std::chrono::milliseconds timeout{0};
};

DistEnv dist_env_from_environment() {
  DistEnv env;
  const char* rank = env_or_null("RANK");
  const char* world = env_or_null("WORLD_SIZE");
  if (rank == nullptr && world == nullptr) return env;
  const char* addr = env_or_null("MASTER_ADDR");
  const char* port = env_or_null("MASTER_PORT");
  for (const auto& [name, v] : {std::pair<const char*, const char*>{"RANK", rank},
                                {"WORLD_SIZE", world},
                                {"MASTER_ADDR", addr},
                                {"MASTER_PORT", port}})
    SAFEDEC_CHECK(v != nullptr, "a distributed launch needs RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT, but ", name,
                  " is not set (launch with torchrun --no-python ... safedec ..., or unset RANK and WORLD_SIZE to "
                  "run as one process)");
  env.launched = true;
  env.world_size = static_cast<int>(parse_int_env("WORLD_SIZE", world, 1, 65536));
  env.rank = static_cast<int>(parse_int_env("RANK", rank, 0, env.world_size - 1));
  const char* local = env_or_null("LOCAL_RANK");
  env.local_rank = local ? static_cast<int>(parse_int_env("LOCAL_RANK", local, 0, 65535)) : env.rank;
  env.master_addr = addr;
  env.master_port = static_cast<int>(parse_int_env("MASTER_PORT", port, 1, 65535));
  const char* agent = env_or_null("TORCHELASTIC_USE_AGENT_STORE");
  env.agent_store = agent != nullptr && std::string(agent) == "True";
  if (env.agent_store) {
    const char* attempt = env_or_null("TORCHELASTIC_RESTART_COUNT");
    env.store_prefix = std::string("/worker/attempt_") + (attempt ? attempt : "0") + "/safedec";
  } else {
    env.store_prefix = "safedec";
  }
  if (const char* t = env_or_null("SAFEDEC_DIST_TIMEOUT"))
    env.timeout = std::chrono::seconds(parse_int_env("SAFEDEC_DIST_TIMEOUT", t, 1, 7 * 24 * 3600));
  return env;
}

std::shared_ptr<DistGroup> DistGroup::connect(const DistEnv& env) {
  SAFEDEC_CHECK(env.launched && env.world_size >= 1, "DistGroup::connect needs a launched environment");
  std::shared_ptr<DistGroup> g(new DistGroup());
  g->impl_ = std::make_unique<Impl>();
  g->rank_ = env.rank;
  g->world_size_ = env.world_size;
  g->master_ = env.master_addr + ":" + std::to_string(env.master_port);
  g->impl_->timeout = env.timeout;
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(env.timeout).count();
#if !SAFEDEC_HAVE_GLOO
  fail("this safedec was built without the gloo/ headers that c10d's ProcessGroupGloo needs, so it cannot run as ",
       env.world_size, " ranks (RANK/WORLD_SIZE are set). Install them (Debian: apt-get install libgloo-dev; "
       "scripts/setup.sh does) and rebuild, or run as one process.");
#else
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(env.master_port);
    so.isServer = !env.agent_store && env.rank == 0;
    if (!env.agent_store) so.numWorkers = static_cast<size_t>(env.world_size);
    so.waitWorkers = !env.agent_store;
    so.timeout = env.timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    g->impl_->store = c10::make_intrusive<c10d::PrefixStore>(env.store_prefix, tcp);
  } catch (const std::exception& e) {
    fail("rank ", env.rank, " of ", env.world_size, " could not rendezvous at MASTER_ADDR=", env.master_addr,
         " MASTER_PORT=", env.master_port, " within ", secs, " s: ", message_of(e),
         ". Check that MASTER_ADDR names the machine of rank 0, that the port is free there and reachable, and that "
         "all ", env.world_size, " ranks were started (SAFEDEC_DIST_TIMEOUT sets the wait in seconds).");
  }
  try {
    auto opts = c10d::ProcessGroupGloo::Options::create(env.timeout);
    if (const char* ifname = env_or_null("GLOO_SOCKET_IFNAME")) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else {
      const std::string& a = env.master_addr;
      const bool loopback = a == "localhost" || a.rfind("127.", 0) == 0 || a == "::1";
      opts->devices.push_back(loopback ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                       : c10d::ProcessGroupGloo::createDefaultDevice());
    }
    g->impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(g->impl_->store, env.rank, env.world_size, opts);
  } catch (const std::exception& e) {
    fail("rank ", env.rank, " of ", env.world_size, ": creating the Gloo process group (rendezvous at ", g->master_,
         ") failed within ", secs, " s: ", message_of(e),
         ". Check that all ranks were started and can reach each other (GLOO_SOCKET_IFNAME picks the network "
         "interface).");
  }
#endif
  return g;
}

DistGroup::~DistGroup() = default;

namespace {

void wait_work(const c10::intrusive_ptr<c10d::Work>& w, int rank, const std::string& what) {
  try {
    w->wait();
  } catch (const std::exception& e) {
    fail("rank ", rank, ": the collective '", what, "' failed: ", message_of(e),
         ". Another rank probably stopped (see its error); fix that and continue with --resume.");
  }
}

}  // namespace

void DistGroup::all_reduce_sum(const std::vector<torch::Tensor>& tensors, size_t bucket_bytes) {
  torch::NoGradGuard ng;
  if (tensors.empty()) return;
  struct Bucket {
    std::vector<size_t> members;
    torch::Tensor flat;
  };
  std::vector<Bucket> buckets;
  // Consecutive tensors of one dtype share a bucket until it would pass bucket_bytes.
  size_t bytes = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const torch::Tensor& t = tensors[i];
    SAFEDEC_ASSERT(t.defined() && t.device().is_cpu(), "all_reduce_sum: tensor ", i, " is undefined or not on CPU");
    const size_t n = static_cast<size_t>(t.numel()) * t.element_size();
    const bool same_dtype = !buckets.empty() && tensors[buckets.back().members.front()].scalar_type() == t.scalar_type();
    if (buckets.empty() || !same_dtype || bytes + n > bucket_bytes) {
      buckets.push_back({});
      bytes = 0;
    }
    buckets.back().members.push_back(i);
    bytes += n;
  }
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (auto& b : buckets) {
    std::vector<torch::Tensor> parts;
    for (size_t i : b.members) parts.push_back(tensors[i].reshape({-1}));
    b.flat = parts.size() == 1 ? parts[0].clone() : torch::cat(parts);
    std::vector<torch::Tensor> v{b.flat};
    try {
      works.push_back(impl_->pg->allreduce(v));
    } catch (const std::exception& e) {
      fail("rank ", rank_, ": starting a gradient all-reduce failed: ", message_of(e));
    }
  }
  for (size_t k = 0; k < buckets.size(); ++k) {
    wait_work(works[k], rank_, "all-reduce");
    int64_t off = 0;
    for (size_t i : buckets[k].members) {
      const torch::Tensor& t = tensors[i];
      t.copy_(buckets[k].flat.slice(0, off, off + t.numel()).view(t.sizes()));
      off += t.numel();
    }
  }
}

void DistGroup::broadcast(const std::vector<torch::Tensor>& tensors, int root) {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> bufs;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  c10d::BroadcastOptions o;
  o.rootRank = root;
  for (const auto& t : tensors) {
    bufs.push_back(t.is_contiguous() ? t : t.contiguous());
    std::vector<torch::Tensor> v{bufs.back()};
    works.push_back(impl_->pg->broadcast(v, o));
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    wait_work(works[i], rank_, "broadcast");
    if (!tensors[i].is_contiguous()) tensors[i].copy_(bufs[i]);
  }
}

std::vector<std::string> DistGroup::all_gather(const std::string& bytes) {
  const std::string base = "gather/" + std::to_string(seq_++) + "/";
  std::vector<std::string> out(static_cast<size_t>(world_size_));
  try {
    impl_->store->set(base + std::to_string(rank_), std::vector<uint8_t>(bytes.begin(), bytes.end()));
    for (int r = 0; r < world_size_; ++r) {
      const std::vector<uint8_t> v = impl_->store->get(base + std::to_string(r));
      out[static_cast<size_t>(r)] = std::string(v.begin(), v.end());
    }
  } catch (const std::exception& e) {
    fail("rank ", rank_, ": exchanging values with the other ranks through the store at ", master_,
         " failed: ", message_of(e), ". Another rank probably stopped or was started with other arguments.");
  }
  return out;
}

void DistGroup::barrier(const std::string& where) {
  c10::intrusive_ptr<c10d::Work> w;
  try {
    w = impl_->pg->barrier();
  } catch (const std::exception& e) {
    fail("rank ", rank_, ": the barrier '", where, "' failed: ", message_of(e));
  }
  wait_work(w, rank_, where);
}

void DistGroup::check_same(const std::string& what, const std::string& value) {
  const std::vector<std::string> all = all_gather(value);
  std::string differ;
  for (int r = 1; r < world_size_; ++r)
    if (all[static_cast<size_t>(r)] != all[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  SAFEDEC_CHECK(differ.empty(), "the ranks disagree on ", what, ": rank(s) ", differ, " differ from rank 0 (rank 0 has ",
                all[0].substr(0, 16), ", rank ", differ.substr(0, differ.find(',')), " has ",
                all[static_cast<size_t>(std::stoi(differ.substr(0, differ.find(','))))].substr(0, 16),
                "). Start every rank with the same command and the same files.");
}

std::shared_ptr<DistGroup> dist_group() {
  {
    std::lock_guard<std::mutex> l(g_mutex);
    if (g_initialised) return g_group;
  }
  return init_dist_from_environment();
}

void set_dist_group(std::shared_ptr<DistGroup> group) {
  std::lock_guard<std::mutex> l(g_mutex);
  g_group = std::move(group);
  g_initialised = true;
}

std::shared_ptr<DistGroup> init_dist_from_environment() {
  const DistEnv env = dist_env_from_environment();
  if (!env.launched || env.world_size == 1) {
    set_dist_group(nullptr);
    return nullptr;
  }
  auto g = DistGroup::connect(env);
  set_dist_group(g);
  if (g->is_main())
    std::cerr << "[dist] " << g->world_size() << " ranks on c10d/Gloo (rendezvous " << env.master_addr << ":"
              << env.master_port << (env.agent_store ? ", torchrun's store" : "") << ")\n";
  return g;
}

std::pair<int64_t, int64_t> shard_range(int64_t n, int rank, int world) {
  SAFEDEC_ASSERT(world >= 1 && rank >= 0 && rank < world && n >= 0, "shard_range(", n, ", ", rank, ", ", world, ")");
  const int64_t base = n / world, extra = n % world;
  const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

}  // namespace safedec
