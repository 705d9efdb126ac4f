// Fuzz target: safetensors bytes -> SafetensorsFile::open_memory, fp32 conversion of every tensor,
// and a write/read round trip of whatever parsed (the writer must reproduce the bytes). Seeds include
// the malformed corpus of tests/unit/io/malformed_safetensors.h, so mutations start at the header
// length, offset, dtype and shape checks.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "fuzz_driver.h"
#include "io/half.h"
#include "io/safetensors.h"
#include "malformed_safetensors.h"

using namespace safedec;

namespace {
std::string temp_path() {
  return (std::filesystem::temp_directory_path() / ("safedec-fuzz-" + std::to_string(getpid()) + ".safetensors"))
      .string();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = SafetensorsFile::open_memory(data, size, "fuzz.safetensors");
    ++fuzz::accepted();
    std::vector<SafetensorsWriteTensor> w;
    for (const auto& t : f->tensors()) {
      std::vector<float> v = safetensors_to_float32(t);
      if (f->find(t.name) != &t) fuzz::unexpected("fuzz_safetensors", "find disagrees with tensors()");
      w.push_back({t.name, t.dtype, t.shape, t.data, t.nbytes});
    }
    static const std::string path = temp_path();
    write_safetensors(path, w, f->metadata());
    auto g = SafetensorsFile::open(path);
    if (g->tensors().size() != f->tensors().size() || g->metadata() != f->metadata())
      fuzz::unexpected("fuzz_safetensors", "write/read round trip changed the tensor list or metadata");
    for (const auto& t : f->tensors()) {
      const SafetensorsTensor& u = g->tensor(t.name);
      if (u.dtype != t.dtype || u.shape != t.shape || u.nbytes != t.nbytes ||
          (t.nbytes && std::memcmp(u.data, t.data, t.nbytes) != 0))
        fuzz::unexpected("fuzz_safetensors", "write/read round trip changed a tensor");
    }
  } catch (const Error&) {
  } catch (const std::exception& e) {
    fuzz::unexpected("fuzz_safetensors", e.what());
  }
  return 0;
}

namespace safedec::fuzz {

std::vector<std::vector<uint8_t>> seeds() {
  std::vector<std::vector<uint8_t>> out;
  auto image = [](const std::string& header, size_t data_bytes) {
    std::vector<uint8_t> b(8);
    const uint64_t n = header.size();
    std::memcpy(b.data(), &n, 8);
    b.insert(b.end(), header.begin(), header.end());
    for (size_t i = 0; i < data_bytes; ++i) b.push_back(static_cast<uint8_t>(i * 37 + 11));
    return b;
  };
  out.push_back(image(R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
                      R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]},"c":{"dtype":"I64","shape":[1],"data_offsets":[22,30]},)"
                      R"("d":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[30,32]},"e":{"dtype":"BOOL","shape":[],"data_offsets":[32,33]}})",
                      33));
  out.push_back(image(R"({"x":{"dtype":"F16","shape":[0,3],"data_offsets":[0,0]}})", 0));
  // The golden file written by the Python package.
  const std::string golden = std::string(SAFEDEC_SOURCE_DIR) + "/tests/oracle/golden/safetensors_py/mixed.safetensors";
  std::ifstream in(golden, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.empty()) {
    std::fprintf(stderr, "fuzz_safetensors: seed file %s is missing\n", golden.c_str());
    std::abort();
  }
  out.push_back(bytes);
  out.push_back(safedec::testing::good_safetensors());
  for (const auto& m : safedec::testing::malformed_safetensors()) out.push_back(m.bytes);
  return out;
}

std::vector<std::string> dictionary() {
  return {"{", "}", "[", "]", ",", ":", "\"", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"__metadata__\"",
          "\"F32\"", "\"F16\"", "\"BF16\"", "\"I64\"", "\"U8\"", "\"F8_E5M2\"", "\"Q4\"", "-1", "0", "18446744073709551615",
          "9223372036854775807", "1e3", "null", "true", "\"\\u0000\"", "\"\\ud800\""};
}

}  // namespace safedec::fuzz
