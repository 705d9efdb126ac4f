// SHA-256 (FIPS 180-4) for run manifests: hashes of model and dataset files.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace safedec {

// Incremental SHA-256: update() any number of times, then hex_digest() once.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(const std::string& data) { update(data.data(), data.size()); }
  std::array<uint8_t, 32> digest();  // finalises; the object must not be updated afterwards
  std::string hex_digest();

 private:
  void compress(const uint8_t* block);
  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
  bool finished_ = false;
};

std::string sha256_hex(const std::string& data);
// Streams the file in 1 MiB chunks; throws safedec::Error naming the path if it cannot be read.
std::string sha256_file(const std::string& path);
// A file's SHA-256, or for a directory (a Hugging Face checkpoint) the SHA-256 of the sorted list of
// its regular files' names and SHA-256s (not recursive).
std::string sha256_path(const std::string& path);

}  // namespace safedec
