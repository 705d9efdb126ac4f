// Test-only corpus of malformed safetensors files (issue 15), the counterpart of malformed_gguf.h:
// hand-made images broken in one way each (header length, header JSON, data offsets, dtypes, names,
// shapes), each with a piece of the error safedec must give. SafetensorsFile::open_memory must refuse
// every one with safedec::Error (never a crash or a huge allocation); the unit test
// (tests/unit/model/test_safetensors_hardening.cpp) checks that, and the safetensors fuzz target
// starts from these images so its mutations begin where the checks are. Model-level cases (a NaN
// weight, a config.json whose sizes disagree with the tensors) are built by that test from the tiny
// HF llama in tests/oracle/golden, since they need a whole checkpoint.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace safedec::testing {

struct MalformedSafetensors {
  std::string name;            // what is broken
  std::vector<uint8_t> bytes;  // the file image
  std::string error;           // a piece of the expected safedec::Error message
};

// An image: u64 little-endian header length (`declared`, or the header's size when ~0), the header,
// then `data_bytes` bytes of data.
inline std::vector<uint8_t> safetensors_image(const std::string& header, size_t data_bytes,
                                              uint64_t declared = ~uint64_t{0}) {
  std::vector<uint8_t> b(8 + header.size() + data_bytes);
  const uint64_t n = declared == ~uint64_t{0} ? header.size() : declared;
  std::memcpy(b.data(), &n, 8);
  if (!header.empty()) std::memcpy(b.data() + 8, header.data(), header.size());
  for (size_t i = 0; i < data_bytes; ++i) b[8 + header.size() + i] = static_cast<uint8_t>(i * 29 + 3);
  return b;
}

// A well-formed two-tensor file (the base the cases below break).
inline std::vector<uint8_t> good_safetensors() {
  return safetensors_image(R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
                           R"("b":{"dtype":"F16","shape":[4],"data_offsets":[16,24]}})",
                           24);
}

inline std::vector<MalformedSafetensors> malformed_safetensors() {
  std::vector<MalformedSafetensors> out;
  const std::string ok_b = R"("b":{"dtype":"F16","shape":[4],"data_offsets":[16,24]})";
  auto two = [&](const std::string& a) { return "{" + a + "," + ok_b + "}"; };
  // Header length.
  out.push_back({"shorter than the length field", {1, 2, 3}, "truncated"});
  out.push_back({"header length past the end of the file",
                 safetensors_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4, 4096),
                 "header length field says"});
  out.push_back({"header length 2^63", safetensors_image(R"({})", 0, uint64_t{1} << 63), "header length field says"});
  out.push_back({"header length 200 MB (present)", safetensors_image(std::string(8, ' '), 0, 200ull << 20),
                 "header length field says"});
  // Header JSON.
  out.push_back({"header not JSON", safetensors_image("{not json at all}", 0), "invalid JSON header"});
  out.push_back({"header a JSON list", safetensors_image("[1, 2, 3]", 0), "does not start with a JSON object"});
  out.push_back({"header cut inside a string", safetensors_image(R"({"a":{"dtype":"F3)", 0), "invalid JSON header"});
  out.push_back({"__metadata__ value not a string",
                 safetensors_image(R"({"__metadata__":{"format":7},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4),
                 "__metadata__"});
  out.push_back({"tensor entry not an object", safetensors_image(R"({"a":[1,2]})", 0), "'a'"});
  // Names.
  out.push_back({"duplicate tensor name",
                 safetensors_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                   R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                   8),
                 "'a' twice"});
  // Data offsets.
  out.push_back({"overlapping data ranges",
                 safetensors_image(two(R"("a":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]})"), 24), "'a'"});
  out.push_back({"data offsets past the end of the file",
                 safetensors_image(two(R"("a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]})"), 20), "data"});
  out.push_back({"data range 1 TB past the end",
                 safetensors_image(R"({"a":{"dtype":"F32","shape":[262144,1048576],"data_offsets":[0,1099511627776]}})", 16),
                 "'a'"});
  out.push_back({"offsets disagree with dtype x shape (F32 [2,2] in 8 bytes)",
                 safetensors_image(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,8]}})", 8), "'a'"});
  out.push_back({"offsets reversed", safetensors_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4),
                 "'a'"});
  out.push_back({"offsets not integers",
                 safetensors_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":["0","4"]}})", 4), "'a'"});
  out.push_back({"offsets negative", safetensors_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 4),
                 "'a'"});
  out.push_back({"a gap between tensors",
                 safetensors_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                   R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                                   12),
                 "'b'"});
  out.push_back({"data section longer than the tensors",
                 safetensors_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 64), "bytes"});
  // Dtypes.
  out.push_back({"unknown dtype", safetensors_image(R"({"a":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,4]}})", 4),
                 "Unknown safetensors dtype 'Q4_K'"});
  out.push_back({"dtype not a string", safetensors_image(R"({"a":{"dtype":32,"shape":[1],"data_offsets":[0,4]}})", 4),
                 "'a'"});
  // Shapes.
  out.push_back({"huge shape whose element count overflows",
                 safetensors_image(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}})", 16),
                 "'a'"});
  out.push_back({"huge shape 2^62 elements",
                 safetensors_image(R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,16]}})", 16),
                 "'a'"});
  out.push_back({"negative dimension",
                 safetensors_image(R"({"a":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,16]}})", 16), "'a'"});
  out.push_back({"shape not a list", safetensors_image(R"({"a":{"dtype":"F32","shape":4,"data_offsets":[0,16]}})", 16),
                 "'a'"});
  out.push_back({"missing data_offsets", safetensors_image(R"({"a":{"dtype":"F32","shape":[4]}})", 16), "'a'"});
  return out;
}

}  // namespace safedec::testing
