// GGUF reader (versions 2 and 3): header, metadata of every value type, tensor infos, memory-mapped
// tensor data, and dequantisation to fp32. Format: llama.cpp docs/gguf.md / ggml.h.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

namespace safedec {

// ggml tensor types (numbering from ggml.h).
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
  IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35,
};
const char* ggml_type_name(GgmlType t);
bool ggml_type_supported(GgmlType t);  // can be dequantised by safedec
// Elements per block and bytes per block of a type (throws for unknown types).
int64_t ggml_block_size(GgmlType t);
int64_t ggml_type_size(GgmlType t);

// GGUF metadata value types (gguf.md).
enum class GgufValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};

struct GgufValue;
using GgufArray = std::vector<GgufValue>;
// One metadata value. Integers keep their signedness in the variant; arrays of strings/numbers
// are stored element-wise (tokenizer vocabularies are large but fine: ~50–260k strings).
struct GgufValue {
  GgufValueType type = GgufValueType::UINT8;
  GgufValueType array_type = GgufValueType::UINT8;  // element type when type == ARRAY
  std::variant<uint64_t, int64_t, double, bool, std::string, std::shared_ptr<GgufArray>> v;

  int64_t as_int() const;          // any integer type (or bool); throws otherwise
  double as_float() const;         // any numeric type
  bool as_bool() const;
  const std::string& as_string() const;
  const GgufArray& as_array() const;
  std::string to_string(size_t max_items = 8) const;  // for `safedec inspect`
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the fastest-varying (row length)
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;      // relative to the start of the data section
  const uint8_t* data = nullptr;  // into the mapping
  size_t nbytes = 0;
  int64_t n_elements() const;
  int64_t n_rows() const;  // n_elements() / ne[0] (1 for a 0-d tensor)
  // PyTorch order (reversed ne): [ne[n-1], ..., ne[0]].
  std::vector<int64_t> torch_shape() const;
};

// A memory-mapped GGUF file. All validation happens in open(): any truncation, bad magic,
// unsupported version, tensor data past the end, or misaligned offset throws safedec::Error
// naming the file and the reason.
class GgufFile {
 public:
  static std::unique_ptr<GgufFile> open(const std::string& path);
  // Parse a GGUF image held in memory (copied into an exactly-sized buffer; used by the fuzz
  // targets and tests). `name` stands for the path in error messages.
  static std::unique_ptr<GgufFile> open_memory(const void* data, size_t size,
                                               const std::string& name = "<memory>");
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t file_size() const { return size_; }

  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  bool has(const std::string& key) const { return metadata_.count(key) != 0; }
  const GgufValue& get(const std::string& key) const;  // throws naming the key and the file
  std::string get_string(const std::string& key, const std::string& fallback) const;
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_float(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::string architecture() const;  // general.architecture (throws if missing)
  // Whole arrays converted element-wise (tokenizer vocabularies, scores, token types, merges);
  // throw naming the key and the file if it is absent or not an array of that kind.
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<float> get_float_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;  // nullptr if absent
  const GgufTensorInfo& tensor(const std::string& name) const;       // throws if absent

  // Dequantise a whole tensor (or `count` elements from element `first`, which must be a
  // multiple of the block size) into out (fp32). Throws for unsupported types.
  void dequantize(const GgufTensorInfo& t, float* out) const;
  std::vector<float> dequantize(const GgufTensorInfo& t) const;
  void dequantize(const GgufTensorInfo& t, float* out, int64_t first, int64_t count) const;
  // Rows [row_begin, row_end) of a tensor viewed as n_rows() rows of ne[0] elements (e.g. a few
  // embedding rows without dequantising the whole table).
  std::vector<float> dequantize_rows(const GgufTensorInfo& t, int64_t row_begin,
                                     int64_t row_end) const;

 private:
  GgufFile() = default;
  void parse(const uint8_t* data, size_t size);
  void check_tensor_layout(uint64_t data_bytes) const;  // overlaps and byte sizes (gguf.cpp)
  std::string path_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t size_ = 0;
  void* map_ = nullptr;                  // mmap'ed file (open) ...
  std::unique_ptr<uint8_t[]> owned_;     // ... or owned copy (open_memory)
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> index_;
};

// Dequantise n elements (n a multiple of the type's block size) of raw ggml data to fp32.
void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n);
// The same split over worker threads (at most `max_threads`, 0 = hardware concurrency capped
// at 4); used by GgufFile::dequantize for large tensors.
void dequantize_parallel(GgmlType type, const void* src, float* dst, int64_t n,
                         int max_threads = 0);
// A ggml type from its numeric id; throws naming the id if it is not a known ggml type.
GgmlType ggml_type_from_id(uint32_t id);

}  // namespace safedec
