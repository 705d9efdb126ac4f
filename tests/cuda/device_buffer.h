// Host-side helpers shared by the standalone CUDA test and benchmark programs (no LibTorch): a CUDA
// error check that exits, and an owning device buffer with host copies in both directions.
#pragma once
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace safedec::cuda_test {

inline void cuda_ok(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    std::fprintf(stderr, "CUDA error in %s: %s\n", what, cudaGetErrorString(err));
    std::exit(1);
  }
}

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t count = 0;
  explicit DeviceBuffer(size_t n) : count(n) { cuda_ok(cudaMalloc(&ptr, sizeof(T) * (n ? n : 1)), "cudaMalloc"); }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() { cudaFree(ptr); }
  void upload(const std::vector<T>& host) {
    cuda_ok(cudaMemcpy(ptr, host.data(), sizeof(T) * host.size(), cudaMemcpyHostToDevice), "copy to device");
  }
  std::vector<T> host() const {
    std::vector<T> out(count);
    cuda_ok(cudaMemcpy(out.data(), ptr, sizeof(T) * count, cudaMemcpyDeviceToHost), "copy to host");
    return out;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

}  // namespace safedec::cuda_test
