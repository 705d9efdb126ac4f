// Speed of the CUDA fused per-step kernels against the same kernels' CPU row functions, in one run.
// No LibTorch, no Google Benchmark: built by scripts/check_cuda.sh beside tests/cuda/test_cuda_kernels and run
// by hand on a machine with a GPU (exit 2 without one).
//
// For every kernel and shape: the GPU time of one launch (CUDA events around the launch alone, median of
// --reps launches after warm-ups; inputs already on the device), the time to copy the launch's input rows from
// the host (what a CPU-resident model would add per step), and the CPU time of the same work through the row
// functions on one thread (median of a few passes). Inputs are shaped as in benchmarks/bench_kernels.cpp:
// N(0, 3^2) logits, the second branch the first plus N(0, 2^2) noise ("agrees") or an unrelated draw
// ("disagrees"); NGSD rows all fire (v = 2 before every launch) or all stay quiet (v = 0).
//
// Usage: bench_cuda_kernels [--reps N] [--quick]   (--quick: fewer shapes, for a smoke run)
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../../tests/cuda/device_buffer.h"
#include "kernels/cuda_kernels.h"
#include "kernels/row_kernels.h"

using namespace safedec;

namespace {

using cuda_test::cuda_ok;
using cuda_test::DeviceBuffer;


std::vector<float> normal_rows(size_t count, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> out(count);
  for (auto& x : out) x = normal(rng);
  return out;
}

std::vector<float> plus_noise(const std::vector<float>& base, uint32_t seed, float scale) {
  auto out = normal_rows(base.size(), seed, scale);
  for (size_t i = 0; i < out.size(); ++i) out[i] += base[i];
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Median GPU time (microseconds) of `launch`, each launch bracketed by its own events; `before` runs outside
// the bracket (resetting state such as NGSD's membrane potential).
double time_gpu(const std::function<void()>& before, const std::function<void()>& launch, int reps) {
  cudaEvent_t start, stop;
  cuda_ok(cudaEventCreate(&start), "event");
  cuda_ok(cudaEventCreate(&stop), "event");
  for (int i = 0; i < 5; ++i) {
    before();
    launch();
  }
  cuda_ok(cudaDeviceSynchronize(), "warm-up");
  std::vector<double> us;
  for (int i = 0; i < reps; ++i) {
    before();
    cuda_ok(cudaEventRecord(start), "record");
    launch();
    cuda_ok(cudaEventRecord(stop), "record");
    cuda_ok(cudaEventSynchronize(stop), "sync");
    float ms = 0.0f;
    cuda_ok(cudaEventElapsedTime(&ms, start, stop), "elapsed");
    us.push_back(1000.0 * ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return median(us);
}

double time_cpu(const std::function<void()>& before, const std::function<void()>& work, int passes) {
  std::vector<double> us;
  for (int i = 0; i < passes + 1; ++i) {
    before();
    const auto t0 = std::chrono::steady_clock::now();
    work();
    const auto t1 = std::chrono::steady_clock::now();
    if (i > 0) us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  return median(us);
}

// Median time (microseconds) of copying `bytes` from pinned host memory to the device.
double time_h2d(size_t bytes, int reps) {
  void* host = nullptr;
  cuda_ok(cudaMallocHost(&host, bytes), "cudaMallocHost");
  std::memset(host, 0, bytes);
  DeviceBuffer<char> dev(bytes);
  const double us = time_gpu([] {}, [&] { cuda_ok(cudaMemcpyAsync(dev.ptr, host, bytes, cudaMemcpyHostToDevice), "h2d"); },
                             reps);
  cudaFreeHost(host);
  return us;
}

void check_status(const DeviceBuffer<int32_t>& status, int64_t rows, const char* what) {
  std::vector<int32_t> host(static_cast<size_t>(rows));
  cuda_ok(cudaMemcpy(host.data(), status.ptr, sizeof(int32_t) * host.size(), cudaMemcpyDeviceToHost), "status");
  for (int64_t r = 0; r < rows; ++r) {
    if (host[static_cast<size_t>(r)] != static_cast<int32_t>(KernelStatus::kOk)) {
      std::fprintf(stderr, "bench_cuda_kernels: %s row %lld returned status %d\n", what, static_cast<long long>(r),
                   host[static_cast<size_t>(r)]);
      std::exit(1);
    }
  }
}

void report(const std::string& kernel, const std::string& input, int64_t rows, int64_t n, double gpu_us,
            double h2d_us, double cpu_us, double bytes_read) {
  const double gbps = bytes_read / (gpu_us * 1e-6) / 1e9;
  std::printf("| %-13s | %-9s | %4lld | %6lld | %9.1f | %7.0f | %9.1f | %10.1f | %7.1fx | %7.1fx |\n", kernel.c_str(),
              input.c_str(), static_cast<long long>(rows), static_cast<long long>(n), gpu_us, gbps, h2d_us, cpu_us,
              cpu_us / gpu_us, cpu_us / (gpu_us + h2d_us));
  std::fflush(stdout);
}

void bench_contrastive(int64_t rows, int64_t n, int reps) {
  const auto sp = normal_rows(static_cast<size_t>(rows * n), 1, 3.0f);
  const auto ap = plus_noise(sp, 2, 2.0f);
  std::vector<float> alpha(static_cast<size_t>(rows), 0.5f), out(sp.size());
  DeviceBuffer<float> d_sp(sp), d_ap(ap), d_alpha(alpha), d_out(sp.size());
  DeviceBuffer<int32_t> d_status(static_cast<size_t>(rows));
  ContrastiveArgs a;
  a.sp_stride = a.ap_stride = a.out_stride = n;
  a.alpha_stride = 1;
  a.temperature = 0.7f;
  a.rows = rows;
  a.vocab = n;
  ContrastiveArgs d = a;
  d.l_sp = d_sp.ptr;
  d.l_ap = d_ap.ptr;
  d.out = d_out.ptr;
  d.alpha = d_alpha.ptr;
  d.row_status = d_status.ptr;
  const double gpu = time_gpu([] {}, [&] {
    if (contrastive_cuda(d, nullptr) != KernelStatus::kOk) cuda_ok(cudaGetLastError(), "contrastive launch");
  }, reps);
  check_status(d_status, rows, "contrastive");
  a.l_sp = sp.data();
  a.l_ap = ap.data();
  a.out = out.data();
  a.alpha = alpha.data();
  const double cpu = time_cpu([] {}, [&] { for (int64_t r = 0; r < rows; ++r) contrastive_row(a, r); }, 5);
  const double bytes = 2.0 * 4.0 * static_cast<double>(rows * n);
  report("contrastive", "agrees", rows, n, gpu, time_h2d(static_cast<size_t>(bytes), reps), cpu, bytes);
}

void bench_ngsd(int64_t rows, int64_t n, bool fire, int reps) {
  const auto lb = normal_rows(static_cast<size_t>(rows * n), 10, 3.0f);
  const auto le = plus_noise(lb, 11, 2.0f);
  std::vector<float> alpha(static_cast<size_t>(rows), 0.5f), v0(static_cast<size_t>(rows), fire ? 2.0f : 0.0f);
  std::vector<float> v = v0, tv(static_cast<size_t>(rows)), probs(lb.size());
  std::vector<int64_t> choice(static_cast<size_t>(rows));
  std::vector<uint8_t> spike(static_cast<size_t>(rows));
  DeviceBuffer<float> d_lb(lb), d_le(le), d_alpha(alpha), d_v(v0), d_tv(static_cast<size_t>(rows)),
      d_probs(lb.size()), d_work(static_cast<size_t>(ngsd_cuda_workspace_floats(rows, n)));
  DeviceBuffer<int64_t> d_choice(static_cast<size_t>(rows));
  DeviceBuffer<uint8_t> d_spike(static_cast<size_t>(rows));
  DeviceBuffer<int32_t> d_status(static_cast<size_t>(rows));
  NgsdStepArgs a;
  a.b_stride = a.e_stride = a.probs_stride = n;
  a.alpha_stride = 1;
  a.rows = rows;
  a.vocab = n;
  NgsdStepArgs d = a;
  d.l_b = d_lb.ptr;
  d.l_e = d_le.ptr;
  d.alpha = d_alpha.ptr;
  d.v = d_v.ptr;
  d.choice = d_choice.ptr;
  d.tv = d_tv.ptr;
  d.spike = d_spike.ptr;
  d.probs = d_probs.ptr;
  d.row_status = d_status.ptr;
  d.workspace = d_work.ptr;
  const double gpu = time_gpu([&] { d_v.upload(v0); }, [&] {
    if (ngsd_step_cuda(d, nullptr) != KernelStatus::kOk) cuda_ok(cudaGetLastError(), "ngsd launch");
  }, reps);
  check_status(d_status, rows, "ngsd_step");
  std::vector<uint8_t> gpu_spike(static_cast<size_t>(rows));
  cuda_ok(cudaMemcpy(gpu_spike.data(), d_spike.ptr, gpu_spike.size(), cudaMemcpyDeviceToHost), "spike");
  for (uint8_t s : gpu_spike) {
    if (s != (fire ? 1 : 0)) {
      std::fprintf(stderr, "bench_cuda_kernels: ngsd %s case did not %s\n", fire ? "fire" : "quiet",
                   fire ? "fire" : "stay quiet");
      std::exit(1);
    }
  }
  a.l_b = lb.data();
  a.l_e = le.data();
  a.alpha = alpha.data();
  a.v = v.data();
  a.choice = choice.data();
  a.tv = tv.data();
  a.spike = spike.data();
  a.probs = probs.data();
  RowScratch scratch;
  const double cpu = time_cpu([&] { v = v0; }, [&] { for (int64_t r = 0; r < rows; ++r) ngsd_step_row(a, r, scratch); }, 5);
  const double bytes = 2.0 * 4.0 * static_cast<double>(rows * n);
  report("ngsd_step", fire ? "fires" : "quiet", rows, n, gpu, time_h2d(static_cast<size_t>(bytes), reps), cpu, bytes);
}

void bench_safedecoding(int64_t rows, int64_t n, bool agrees, int reps) {
  const auto lb = normal_rows(static_cast<size_t>(rows * n), 20, 3.0f);
  const auto le = agrees ? plus_noise(lb, 21, 2.0f) : normal_rows(lb.size(), 22, 3.0f);
  std::vector<float> probs(lb.size());
  std::vector<int64_t> choice(static_cast<size_t>(rows)), k(static_cast<size_t>(rows));
  DeviceBuffer<float> d_lb(lb), d_le(le), d_probs(lb.size()),
      d_work(static_cast<size_t>(safedecoding_cuda_workspace_floats(rows, n)));
  DeviceBuffer<int64_t> d_choice(static_cast<size_t>(rows)), d_k(static_cast<size_t>(rows));
  DeviceBuffer<int32_t> d_status(static_cast<size_t>(rows));
  SafeDecodingArgs a;
  a.b_stride = a.e_stride = a.probs_stride = n;
  a.rows = rows;
  a.vocab = n;
  SafeDecodingArgs d = a;
  d.l_b = d_lb.ptr;
  d.l_e = d_le.ptr;
  d.choice = d_choice.ptr;
  d.k = d_k.ptr;
  d.probs = d_probs.ptr;
  d.row_status = d_status.ptr;
  d.workspace = d_work.ptr;
  const double gpu = time_gpu([] {}, [&] {
    if (safedecoding_cuda(d, nullptr) != KernelStatus::kOk) cuda_ok(cudaGetLastError(), "safedecoding launch");
  }, reps);
  check_status(d_status, rows, "safedecoding");
  a.l_b = lb.data();
  a.l_e = le.data();
  a.choice = choice.data();
  a.k = k.data();
  a.probs = probs.data();
  RowScratch scratch;
  const double cpu = time_cpu([] {}, [&] { for (int64_t r = 0; r < rows; ++r) safedecoding_row(a, r, scratch); }, 5);
  const double bytes = 2.0 * 4.0 * static_cast<double>(rows * n);
  report("safedecoding", agrees ? "agrees" : "disagrees", rows, n, gpu, time_h2d(static_cast<size_t>(bytes), reps), cpu,
         bytes);
}

void bench_steer(int64_t rows, int64_t dim, int reps) {
  const auto x = normal_rows(static_cast<size_t>(rows * dim), 30, 1.0f);
  const auto v = normal_rows(static_cast<size_t>(dim), 31, 1.0f);
  std::vector<float> out(x.size());
  DeviceBuffer<float> d_x(x), d_v(v), d_out(x.size());
  DeviceBuffer<int32_t> d_status(static_cast<size_t>(rows));
  SteerArgs a;
  a.x_stride = a.out_stride = dim;
  a.v_stride = 0;
  a.rows = rows;
  a.dim = dim;
  a.alpha = 0.12f;
  a.form = SteerForm::kCode;
  SteerArgs d = a;
  d.x = d_x.ptr;
  d.v = d_v.ptr;
  d.out = d_out.ptr;
  d.row_status = d_status.ptr;
  const double gpu = time_gpu([] {}, [&] {
    if (steer_cuda(d, nullptr) != KernelStatus::kOk) cuda_ok(cudaGetLastError(), "steer launch");
  }, reps);
  check_status(d_status, rows, "steer");
  a.x = x.data();
  a.v = v.data();
  a.out = out.data();
  const double cpu = time_cpu([] {}, [&] { for (int64_t r = 0; r < rows; ++r) steer_row(a, r); }, 5);
  const double bytes = 4.0 * static_cast<double>(rows * dim + dim);
  report("steer (code)", "shared v", rows, dim, gpu, time_h2d(static_cast<size_t>(4 * rows * dim), reps), cpu, bytes);
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 50;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::atoi(argv[++i]);
      if (reps < 1 || reps > 100000) {
        std::fprintf(stderr, "bench_cuda_kernels: --reps must be in [1, 100000]\n");
        return 2;
      }
    } else if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: bench_cuda_kernels [--reps N] [--quick]\n");
      return 2;
    }
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "bench_cuda_kernels: no CUDA device is visible; this program needs a GPU\n");
    return 2;
  }
  cudaDeviceProp prop{};
  cuda_ok(cudaGetDeviceProperties(&prop, 0), "device properties");
  std::printf("device: %s, %d SMs, compute capability %d.%d; %d timed launches per cell (median)\n", prop.name,
              prop.multiProcessorCount, prop.major, prop.minor, reps);
  std::printf("GB/s: logits (or hidden rows) read once per launch / GPU time. CPU: the row functions, one thread.\n");
  std::printf("| kernel | input | rows | vocab/dim | GPU us | GB/s | H2D us | CPU us | CPU/GPU | CPU/(GPU+H2D) |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  const std::vector<int64_t> vocabs = quick ? std::vector<int64_t>{49152} : std::vector<int64_t>{49152, 151936};
  const std::vector<int64_t> batch = quick ? std::vector<int64_t>{1, 8} : std::vector<int64_t>{1, 8, 64};
  for (int64_t n : vocabs) {
    for (int64_t rows : batch) {
      bench_contrastive(rows, n, reps);
      bench_ngsd(rows, n, true, reps);
      bench_ngsd(rows, n, false, reps);
      bench_safedecoding(rows, n, true, reps);
      bench_safedecoding(rows, n, false, reps);
    }
  }
  for (int64_t dim : {576, 1536}) {
    for (int64_t rows : batch) bench_steer(rows, dim, reps);
  }
  return 0;
}
