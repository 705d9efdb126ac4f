// Batched CPU kernels: the rows of a batch are independent, so they are split over core/row_pool.h's
// threads; each worker thread owns one RowScratch, reused across calls. A per-row status array (the caller's,
// or a local one) lets the lowest failing row be reported whatever the thread schedule.
#include "kernels/cpu_kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "core/row_pool.h"
#include "kernels/row_kernels.h"

namespace safedec {
namespace {

template <typename RowFn>
KernelResult run_rows(int64_t rows, int32_t* row_status, RowFn&& row_fn) {
  if (rows <= 0) return {};
  std::vector<int32_t> local;
  if (row_status == nullptr) {
    local.assign(static_cast<size_t>(rows), 0);
    row_status = local.data();
  }
  // grain 1: one row is already tens of microseconds of work at real vocabulary sizes.
  parallel_chunks(rows, std::max(1, at::get_num_threads()), [&](int64_t r) {
    // One scratch per thread, kept between calls: a decoding step allocates nothing once it has grown
    // (fresh buffers of V floats would cost page faults on every step).
    thread_local RowScratch scratch;
    row_status[r] = static_cast<int32_t>(row_fn(r, scratch));
  });
  return first_failure(row_status, rows);
}

bool bad_sizes(int64_t rows, int64_t cols) { return rows < 0 || cols < 1 || cols > 0xFFFFFFFFll; }

}  // namespace

KernelResult contrastive_cpu(const ContrastiveArgs& a) {
  if (bad_sizes(a.rows, a.vocab)) return {KernelStatus::kBadArgument, -1};
  return run_rows(a.rows, a.row_status, [&](int64_t r, RowScratch&) { return contrastive_row(a, r); });
}

KernelResult ngsd_step_cpu(const NgsdStepArgs& a) {
  if (bad_sizes(a.rows, a.vocab)) return {KernelStatus::kBadArgument, -1};
  return run_rows(a.rows, a.row_status, [&](int64_t r, RowScratch& s) { return ngsd_step_row(a, r, s); });
}

KernelResult safedecoding_cpu(const SafeDecodingArgs& a) {
  if (bad_sizes(a.rows, a.vocab)) return {KernelStatus::kBadArgument, -1};
  return run_rows(a.rows, a.row_status, [&](int64_t r, RowScratch& s) { return safedecoding_row(a, r, s); });
}

KernelResult steer_cpu(const SteerArgs& a) {
  if (bad_sizes(a.rows, a.dim)) return {KernelStatus::kBadArgument, -1};
  return run_rows(a.rows, a.row_status, [&](int64_t r, RowScratch&) { return steer_row(a, r); });
}

}  // namespace safedec
