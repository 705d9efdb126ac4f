// A small work-sharing pool for the hot per-step loops (quantised and fp32 skinny GEMMs, the batched
// logit kernels). at::parallel_for cannot be used for them: its OpenMP body is an inline template
// whose `#pragma omp parallel` only takes effect in code compiled with -fopenmp, which safedec's
// targets are not, so it runs serially there (measured: 106% CPU at --threads 2). ATen's own ops are
// unaffected (they were compiled into LibTorch with OpenMP).
//
// The pool keeps up to threads - 1 workers that spin briefly after each job (decode calls come
// back-to-back) and then sleep; the calling thread takes chunks too. One job at a time: a caller that
// finds the pool busy (another thread's job, or a nested call) runs its chunks itself, serially.
#pragma once

#include <cstdint>
#include <type_traits>

namespace safedec {

class RowPool {
 public:
  using Fn = void (*)(void* ctx, int64_t chunk);
  static RowPool& instance();
  // fn(ctx, c) for every c in [0, n), each exactly once, on up to `threads` threads (the caller
  // included, at most 8). Returns when all n calls have returned.
  void run(int64_t n, int threads, Fn fn, void* ctx);

 private:
  struct State;
  RowPool();
  State* s_;
};

// f(c) for every c in [0, n) through RowPool.
template <typename F>
void parallel_chunks(int64_t n, int threads, F&& f) {
  using Fd = std::remove_reference_t<F>;
  RowPool::instance().run(n, threads, [](void* p, int64_t c) { (*static_cast<Fd*>(p))(c); },
                          const_cast<void*>(static_cast<const void*>(&f)));
}

// The threads the pool should use for the calling thread's work: at::get_num_threads() is the
// caller's business (core does not see ATen), so callers pass it in; this clamps it to [1, 8].
inline int pool_threads(int requested) { return requested < 1 ? 1 : (requested > 8 ? 8 : requested); }

}  // namespace safedec
