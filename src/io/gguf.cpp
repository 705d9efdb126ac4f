// GGUF parser (llama.cpp docs/gguf.md): little-endian header {magic "GGUF", u32 version,
// u64 tensor_count, u64 kv_count}, then kv_count metadata pairs {string key, u32 type, value},
// then tensor_count infos {string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset},
// then padding to `general.alignment` (default 32) and the tensor data section. Versions 2 and 3
// share this layout (v1 used 32-bit counts; v3 only added big-endian files, which we refuse).
//
// Every read is bounds-checked against the file size and every count is checked against the
// bytes left before anything is allocated, so a corrupt or hostile file yields safedec::Error
// (never a crash or a huge allocation).
#include "io/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <sstream>

#include "core/error.h"

namespace safedec {
namespace {

constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;        // GGML_MAX_DIMS
constexpr int kMaxArrayNesting = 4;     // nested arrays are legal but never deeper in practice

const char* value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8: return "uint8";
    case GgufValueType::INT8: return "int8";
    case GgufValueType::UINT16: return "uint16";
    case GgufValueType::INT16: return "int16";
    case GgufValueType::UINT32: return "uint32";
    case GgufValueType::INT32: return "int32";
    case GgufValueType::FLOAT32: return "float32";
    case GgufValueType::BOOL: return "bool";
    case GgufValueType::STRING: return "string";
    case GgufValueType::ARRAY: return "array";
    case GgufValueType::UINT64: return "uint64";
    case GgufValueType::INT64: return "int64";
    case GgufValueType::FLOAT64: return "float64";
  }
  return "unknown";
}

// Smallest encoded size of one value of a type (used to bound array counts before allocating).
uint64_t min_encoded_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::BOOL: return 1;
    case GgufValueType::UINT16: case GgufValueType::INT16: return 2;
    case GgufValueType::UINT32: case GgufValueType::INT32: case GgufValueType::FLOAT32: return 4;
    case GgufValueType::UINT64: case GgufValueType::INT64: case GgufValueType::FLOAT64: return 8;
    case GgufValueType::STRING: return 8;   // u64 length
    case GgufValueType::ARRAY: return 12;   // u32 type + u64 count
  }
  return 1;
}

// Bounds-checked little-endian cursor over the file image.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& path) : d_(data), n_(size), path_(path) {}
  size_t pos() const { return pos_; }
  uint64_t remaining() const { return n_ - pos_; }
  void set_context(std::string c) { context_ = std::move(c); }

  void need(uint64_t bytes, const char* what) const {
    if (bytes > n_ - pos_)
      fail("GGUF file '", path_, "' is truncated or corrupt: reading ", what, context_, " at byte offset ", pos_,
           " needs ", bytes, " bytes but only ", n_ - pos_, " remain (file size ", n_, " bytes).");
  }
  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, d_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const char* what) {
    const uint64_t len = read<uint64_t>(what);
    need(len, what);
    std::string s(reinterpret_cast<const char*>(d_ + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return s;
  }
  [[noreturn]] void corrupt(const std::string& why, const char* what = "is corrupt") const {
    fail("GGUF file '", path_, "' ", what, context_, ": ", why, " (at byte offset ", pos_, ").");
  }

 private:
  const uint8_t* d_;
  size_t n_;
  size_t pos_ = 0;
  const std::string& path_;
  std::string context_;
};

GgufValue read_value(Cursor& c, GgufValueType type, int depth);

GgufValueType read_value_type(Cursor& c, const char* what) {
  const uint32_t t = c.read<uint32_t>(what);
  if (t > static_cast<uint32_t>(GgufValueType::FLOAT64))
    c.corrupt("unknown metadata value type " + std::to_string(t) + " (valid: 0..12)");
  return static_cast<GgufValueType>(t);
}

GgufValue read_value(Cursor& c, GgufValueType type, int depth) {
  GgufValue v;
  v.type = type;
  switch (type) {
    case GgufValueType::UINT8: v.v = static_cast<uint64_t>(c.read<uint8_t>("a uint8 value")); break;
    case GgufValueType::INT8: v.v = static_cast<int64_t>(c.read<int8_t>("an int8 value")); break;
    case GgufValueType::UINT16: v.v = static_cast<uint64_t>(c.read<uint16_t>("a uint16 value")); break;
    case GgufValueType::INT16: v.v = static_cast<int64_t>(c.read<int16_t>("an int16 value")); break;
    case GgufValueType::UINT32: v.v = static_cast<uint64_t>(c.read<uint32_t>("a uint32 value")); break;
    case GgufValueType::INT32: v.v = static_cast<int64_t>(c.read<int32_t>("an int32 value")); break;
    case GgufValueType::UINT64: v.v = c.read<uint64_t>("a uint64 value"); break;
    case GgufValueType::INT64: v.v = c.read<int64_t>("an int64 value"); break;
    case GgufValueType::FLOAT32: v.v = static_cast<double>(c.read<float>("a float32 value")); break;
    case GgufValueType::FLOAT64: v.v = c.read<double>("a float64 value"); break;
    case GgufValueType::BOOL: {
      const uint8_t b = c.read<uint8_t>("a bool value");
      if (b > 1) c.corrupt("bool value " + std::to_string(b) + " is neither 0 nor 1");
      v.v = b != 0;
      break;
    }
    case GgufValueType::STRING: v.v = c.read_string("a string value"); break;
    case GgufValueType::ARRAY: {
      if (depth >= kMaxArrayNesting) c.corrupt("arrays nested deeper than " + std::to_string(kMaxArrayNesting));
      v.array_type = read_value_type(c, "an array element type");
      const uint64_t count = c.read<uint64_t>("an array length");
      const uint64_t min_size = min_encoded_size(v.array_type);
      if (count > c.remaining() / min_size)
        c.corrupt("array of " + std::to_string(count) + " " + value_type_name(v.array_type) +
                      " values cannot fit in the " + std::to_string(c.remaining()) + " bytes left",
                  "is truncated or corrupt");
      auto arr = std::make_shared<GgufArray>();
      arr->reserve(static_cast<size_t>(count));
      for (uint64_t i = 0; i < count; ++i) arr->push_back(read_value(c, v.array_type, depth + 1));
      v.v = std::move(arr);
      break;
    }
  }
  return v;
}

std::string quote_key(const std::string& key) { return "'" + key + "'"; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// GgufValue

int64_t GgufValue::as_int() const {
  if (auto p = std::get_if<int64_t>(&v)) return *p;
  if (auto p = std::get_if<uint64_t>(&v)) {
    if (*p > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail("GGUF value ", *p, " does not fit in a signed 64-bit integer.");
    return static_cast<int64_t>(*p);
  }
  if (auto p = std::get_if<bool>(&v)) return *p ? 1 : 0;
  fail("GGUF value of type ", value_type_name(type), " is not an integer.");
}

double GgufValue::as_float() const {
  if (auto p = std::get_if<double>(&v)) return *p;
  if (auto p = std::get_if<int64_t>(&v)) return static_cast<double>(*p);
  if (auto p = std::get_if<uint64_t>(&v)) return static_cast<double>(*p);
  fail("GGUF value of type ", value_type_name(type), " is not a number.");
}

bool GgufValue::as_bool() const {
  if (auto p = std::get_if<bool>(&v)) return *p;
  if (auto p = std::get_if<int64_t>(&v)) return *p != 0;
  if (auto p = std::get_if<uint64_t>(&v)) return *p != 0;
  fail("GGUF value of type ", value_type_name(type), " is not a bool.");
}

const std::string& GgufValue::as_string() const {
  if (auto p = std::get_if<std::string>(&v)) return *p;
  fail("GGUF value of type ", value_type_name(type), " is not a string.");
}

const GgufArray& GgufValue::as_array() const {
  if (auto p = std::get_if<std::shared_ptr<GgufArray>>(&v)) return **p;
  fail("GGUF value of type ", value_type_name(type), " is not an array.");
}

std::string GgufValue::to_string(size_t max_items) const {
  std::ostringstream out;
  switch (type) {
    case GgufValueType::STRING: {
      const std::string& s = as_string();
      out << '"' << (s.size() > 80 ? s.substr(0, 77) + "..." : s) << '"';
      break;
    }
    case GgufValueType::BOOL: out << (as_bool() ? "true" : "false"); break;
    case GgufValueType::FLOAT32: case GgufValueType::FLOAT64: out << as_float(); break;
    case GgufValueType::ARRAY: {
      const GgufArray& a = as_array();
      out << "[";
      for (size_t i = 0; i < a.size() && i < max_items; ++i) out << (i ? ", " : "") << a[i].to_string(max_items);
      if (a.size() > max_items) out << ", ... (" << a.size() << " " << value_type_name(array_type) << " items)";
      out << "]";
      break;
    }
    default:
      if (auto p = std::get_if<uint64_t>(&v)) out << *p;
      else out << std::get<int64_t>(v);
  }
  return out.str();
}

// ---------------------------------------------------------------------------------------------
// GgufTensorInfo

int64_t GgufTensorInfo::n_elements() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

int64_t GgufTensorInfo::n_rows() const {
  if (ne.empty() || ne[0] == 0) return ne.empty() ? 1 : 0;
  return n_elements() / ne[0];
}

std::vector<int64_t> GgufTensorInfo::torch_shape() const { return std::vector<int64_t>(ne.rbegin(), ne.rend()); }

// ---------------------------------------------------------------------------------------------
// GgufFile

GgufFile::~GgufFile() {
  if (map_) munmap(map_, size_);
}

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("Cannot open GGUF file '", path, "': ", std::strerror(errno), ".");
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    fail("Cannot stat GGUF file '", path, "': ", std::strerror(e), ".");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("GGUF path '", path, "' is not a regular file.");
  }
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ == 0) {
    ::close(fd);
    fail("GGUF file '", path, "' is empty (0 bytes); expected the magic \"GGUF\" and a header.");
  }
  void* m = mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  const int e = errno;
  ::close(fd);
  if (m == MAP_FAILED) fail("Cannot memory-map GGUF file '", path, "' (", f->size_, " bytes): ", std::strerror(e), ".");
  f->map_ = m;
  f->parse(static_cast<const uint8_t*>(m), f->size_);
  return f;
}

std::unique_ptr<GgufFile> GgufFile::open_memory(const void* data, size_t size, const std::string& name) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = name;
  f->size_ = size;
  f->owned_.reset(new uint8_t[size ? size : 1]);
  if (size) std::memcpy(f->owned_.get(), data, size);
  f->parse(f->owned_.get(), size);
  return f;
}

void GgufFile::parse(const uint8_t* data, size_t size) {
  Cursor c(data, size, path_);
  if (size < 4 || std::memcmp(data, "GGUF", 4) != 0) {
    std::string got;
    for (size_t i = 0; i < 4 && i < size; ++i) {
      const char ch = static_cast<char>(data[i]);
      if (ch >= 32 && ch < 127) {
        got += ch;
      } else {
        static const char* kHex = "0123456789abcdef";
        got += std::string("\\x") + kHex[data[i] >> 4] + kHex[data[i] & 15];
      }
    }
    fail("File '", path_, "' is not a GGUF file: it starts with \"", got, "\" instead of the magic \"GGUF\"",
         size < 4 ? " (file shorter than 4 bytes)" : "", ".");
  }
  c.read<uint32_t>("the magic");
  version_ = c.read<uint32_t>("the version");
  if (version_ != 2 && version_ != 3) {
    if (version_ == 1)
      fail("GGUF file '", path_, "' is version 1, which safedec does not read (only versions 2 and 3). "
           "Re-convert the model with a current llama.cpp convert script.");
    if ((version_ & 0xffff) == 0 && (version_ >> 16) != 0)
      fail("GGUF file '", path_, "' looks big-endian (version field ", version_,
           "); safedec reads little-endian GGUF versions 2 and 3 only.");
    fail("GGUF file '", path_, "' has unsupported version ", version_, "; safedec reads versions 2 and 3.");
  }
  const uint64_t n_tensors = c.read<uint64_t>("the tensor count");
  const uint64_t n_kv = c.read<uint64_t>("the metadata count");
  // Each metadata pair takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor info at
  // least 8 + 4 + 4 + 8 bytes: bound the counts before looping.
  if (n_kv > c.remaining() / 13)
    fail("GGUF file '", path_, "' is truncated or corrupt: it declares ", n_kv, " metadata pairs, more than its ", size,
         " bytes can hold.");
  if (n_tensors > c.remaining() / 24)
    fail("GGUF file '", path_, "' is truncated or corrupt: it declares ", n_tensors, " tensors, more than its ", size,
         " bytes can hold.");

  for (uint64_t i = 0; i < n_kv; ++i) {
    c.set_context(" (metadata pair #" + std::to_string(i) + ")");
    std::string key = c.read_string("a metadata key");
    c.set_context(" (metadata key " + quote_key(key) + ")");
    const GgufValueType type = read_value_type(c, "a metadata value type");
    GgufValue value = read_value(c, type, 0);
    if (metadata_.count(key)) c.corrupt("duplicate metadata key");
    metadata_.emplace(std::move(key), std::move(value));
  }

  alignment_ = kDefaultAlignment;
  if (auto it = metadata_.find("general.alignment"); it != metadata_.end()) {
    c.set_context(" (metadata key 'general.alignment')");
    const GgufValue& a = it->second;
    if (a.type != GgufValueType::UINT32) c.corrupt(std::string("alignment must be a uint32, not ") + value_type_name(a.type));
    const uint64_t al = std::get<uint64_t>(a.v);
    if (al == 0 || (al & (al - 1)) != 0) c.corrupt("alignment " + std::to_string(al) + " is not a power of two");
    alignment_ = al;
  }

  tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    c.set_context(" (tensor info #" + std::to_string(i) + ")");
    GgufTensorInfo t;
    t.name = c.read_string("a tensor name");
    c.set_context(" (tensor '" + t.name + "')");
    const uint32_t n_dims = c.read<uint32_t>("the number of dimensions");
    if (n_dims > kMaxDims) c.corrupt(std::to_string(n_dims) + " dimensions (ggml allows at most 4)");
    int64_t n_el = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = c.read<uint64_t>("a dimension");
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        c.corrupt("dimension " + std::to_string(d) + " is " + std::to_string(ne) + ", which overflows int64");
      if (ne != 0 && n_el > std::numeric_limits<int64_t>::max() / static_cast<int64_t>(ne))
        c.corrupt("the element count overflows int64");
      n_el *= static_cast<int64_t>(ne);
      t.ne.push_back(static_cast<int64_t>(ne));
    }
    const uint32_t type_id = c.read<uint32_t>("the tensor type");
    try {
      t.type = ggml_type_from_id(type_id);
    } catch (const Error& e) {
      c.corrupt(e.what());
    }
    t.offset = c.read<uint64_t>("the tensor data offset");
    const int64_t bs = ggml_block_size(t.type);
    const int64_t row = t.ne.empty() ? 1 : t.ne[0];
    if (row % bs != 0)
      c.corrupt("row length " + std::to_string(row) + " is not a multiple of the " + ggml_type_name(t.type) +
                " block size " + std::to_string(bs));
    // n_el / bs * type_size cannot overflow past the file size check below unless it exceeds
    // 2^63; bound it explicitly.
    const uint64_t blocks = static_cast<uint64_t>(n_el / bs);
    const uint64_t ts = static_cast<uint64_t>(ggml_type_size(t.type));
    if (blocks > std::numeric_limits<uint64_t>::max() / ts) c.corrupt("the data size overflows");
    t.nbytes = static_cast<size_t>(blocks * ts);
    if (index_.count(t.name)) c.corrupt("duplicate tensor name");
    index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }
  c.set_context("");

  // Data section: after the infos, padded to the alignment.
  const uint64_t info_end = c.pos();
  const uint64_t data_start = (info_end + alignment_ - 1) / alignment_ * alignment_;
  if (n_tensors > 0 && data_start > size)
    fail("GGUF file '", path_, "' is truncated: the tensor data section should start at byte ", data_start,
         " but the file has only ", size, " bytes.");
  for (auto& t : tensors_) {
    if (t.offset % alignment_ != 0)
      fail("GGUF file '", path_, "' is corrupt: tensor '", t.name, "' has data offset ", t.offset,
           ", which is not a multiple of the alignment ", alignment_, ".");
    const uint64_t avail = size - data_start;
    if (t.offset > avail || t.nbytes > avail - t.offset)
      fail("GGUF file '", path_, "' is truncated or corrupt: tensor '", t.name, "' (", ggml_type_name(t.type), ", ",
           t.nbytes, " bytes at data offset ", t.offset, ") extends past the end of the file (data section holds ",
           avail, " bytes).");
    t.data = data + data_start + t.offset;
  }
  check_tensor_layout(size - data_start);
}

// Tensor data ranges must tile the data section the way every GGUF writer lays them out (and
// llama.cpp requires): in some order, each range starts where the previous one ended, rounded up to
// the alignment. So two tensors never share bytes, and a tensor whose type or shape was changed
// (F32 -> F16 halves its byte size) leaves a gap that is not padding and is refused, instead of
// being read as the wrong bytes. After the last range only padding may follow.
void GgufFile::check_tensor_layout(uint64_t data_bytes) const {
  if (tensors_.empty()) return;
  std::vector<const GgufTensorInfo*> order;
  order.reserve(tensors_.size());
  for (const auto& t : tensors_) order.push_back(&t);
  std::stable_sort(order.begin(), order.end(),
                   [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  auto padded = [&](uint64_t end) { return (end + alignment_ - 1) / alignment_ * alignment_; };
  auto range = [](const GgufTensorInfo& t) {
    return std::string(ggml_type_name(t.type)) + ", bytes [" + std::to_string(t.offset) + ", " +
           std::to_string(t.offset + t.nbytes) + ")";
  };
  if (order.front()->offset != 0)
    fail("GGUF file '", path_, "' is corrupt: the tensor data section starts with ", order.front()->offset,
         " bytes that belong to no tensor (first tensor '", order.front()->name, "', ", range(*order.front()),
         "); a tensor's type or shape does not match its data.");
  for (size_t i = 0; i + 1 < order.size(); ++i) {
    const GgufTensorInfo& a = *order[i];
    const GgufTensorInfo& b = *order[i + 1];
    const uint64_t end = a.offset + a.nbytes;
    if (end > b.offset)
      fail("GGUF file '", path_, "' is corrupt: the data of tensors '", a.name, "' (", range(a), ") and '", b.name,
           "' (", range(b), ") overlap.");
    if (padded(end) != b.offset)
      fail("GGUF file '", path_, "' is corrupt: tensor '", a.name, "' (", range(a), ") ends ", b.offset - end,
           " bytes before the next tensor '", b.name, "' starts; its type or shape does not match its data (",
           "a type id changed, e.g. F32 -> F16, changes the byte size).");
  }
  const GgufTensorInfo& last = *order.back();
  const uint64_t end = last.offset + last.nbytes;
  if (data_bytes - end >= alignment_)
    fail("GGUF file '", path_, "' is corrupt: ", data_bytes - end, " bytes follow the last tensor '", last.name,
         "' (", range(last), "), more than the alignment padding; its type or shape does not match its data.");
}

const GgufValue& GgufFile::get(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) fail("GGUF file '", path_, "' has no metadata key '", key, "'.");
  return it->second;
}

namespace {
template <typename F>
auto typed_get(const std::string& path, const std::string& key, const GgufValue& v, const char* want, F f)
    -> decltype(f(v)) {
  try {
    return f(v);
  } catch (const Error&) {
    fail("GGUF file '", path, "': metadata key '", key, "' holds a ", value_type_name(v.type), " value (",
         v.to_string(4), ") where ", want, " was expected.");
  }
}
}  // namespace

std::string GgufFile::get_string(const std::string& key, const std::string& fallback) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return fallback;
  return typed_get(path_, key, it->second, "a string", [](const GgufValue& v) { return v.as_string(); });
}

int64_t GgufFile::get_int(const std::string& key, int64_t fallback) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return fallback;
  return typed_get(path_, key, it->second, "an integer", [](const GgufValue& v) { return v.as_int(); });
}

double GgufFile::get_float(const std::string& key, double fallback) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return fallback;
  return typed_get(path_, key, it->second, "a number", [](const GgufValue& v) { return v.as_float(); });
}

bool GgufFile::get_bool(const std::string& key, bool fallback) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return fallback;
  return typed_get(path_, key, it->second, "a bool", [](const GgufValue& v) { return v.as_bool(); });
}

std::string GgufFile::architecture() const {
  auto it = metadata_.find("general.architecture");
  if (it == metadata_.end())
    fail("GGUF file '", path_, "' has no 'general.architecture' key, so the model type is unknown.");
  return get_string("general.architecture", "");
}

namespace {
template <typename T, typename F>
std::vector<T> array_as(const GgufFile& f, const std::string& key, const char* want, F conv) {
  const GgufValue& v = f.get(key);
  if (v.type != GgufValueType::ARRAY)
    fail("GGUF file '", f.path(), "': metadata key '", key, "' is a ", value_type_name(v.type), ", not an array of ",
         want, ".");
  const GgufArray& a = v.as_array();
  std::vector<T> out;
  out.reserve(a.size());
  try {
    for (const auto& e : a) out.push_back(conv(e));
  } catch (const Error&) {
    fail("GGUF file '", f.path(), "': metadata key '", key, "' is an array of ", value_type_name(v.array_type),
         ", not of ", want, ".");
  }
  return out;
}
}  // namespace

std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  return array_as<std::string>(*this, key, "strings", [](const GgufValue& e) { return e.as_string(); });
}

std::vector<float> GgufFile::get_float_array(const std::string& key) const {
  return array_as<float>(*this, key, "numbers", [](const GgufValue& e) { return static_cast<float>(e.as_float()); });
}

std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
  return array_as<int64_t>(*this, key, "integers", [](const GgufValue& e) { return e.as_int(); });
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensorInfo& GgufFile::tensor(const std::string& name) const {
  const GgufTensorInfo* t = find_tensor(name);
  if (!t) fail("GGUF file '", path_, "' has no tensor named '", name, "' (it has ", tensors_.size(), " tensors).");
  return *t;
}

void GgufFile::dequantize(const GgufTensorInfo& t, float* out) const {
  dequantize(t, out, 0, t.n_elements());
}

std::vector<float> GgufFile::dequantize(const GgufTensorInfo& t) const {
  std::vector<float> out(static_cast<size_t>(t.n_elements()));
  dequantize(t, out.data());
  return out;
}

void GgufFile::dequantize(const GgufTensorInfo& t, float* out, int64_t first, int64_t count) const {
  if (!ggml_type_supported(t.type))
    fail("Cannot dequantise tensor '", t.name, "' of GGUF file '", path_, "': its type ", ggml_type_name(t.type),
         " (id ", static_cast<uint32_t>(t.type), ") is not supported by safedec. Re-quantise the model with a "
         "supported type (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, IQ4_NL, IQ4_XS).");
  const int64_t n = t.n_elements();
  const int64_t bs = ggml_block_size(t.type);
  SAFEDEC_CHECK(first >= 0 && count >= 0 && first <= n && count <= n - first,
                "Cannot dequantise elements [", first, ", ", first + count, ") of tensor '", t.name,
                "': it has only ", n, " elements.");
  SAFEDEC_CHECK(first % bs == 0 && (count % bs == 0 || first + count == n),
                "Cannot dequantise elements [", first, ", ", first + count, ") of tensor '", t.name, "' (",
                ggml_type_name(t.type), "): the range must start and end on a block boundary of ", bs,
                " elements.");
  const uint8_t* src = t.data + (first / bs) * ggml_type_size(t.type);
  dequantize_parallel(t.type, src, out, count);
}

std::vector<float> GgufFile::dequantize_rows(const GgufTensorInfo& t, int64_t row_begin, int64_t row_end) const {
  const int64_t row = t.ne.empty() ? 1 : t.ne[0];
  SAFEDEC_CHECK(row_begin >= 0 && row_begin <= row_end && row_end <= t.n_rows(), "Cannot read rows [", row_begin,
                ", ", row_end, ") of tensor '", t.name, "' in '", path_, "': it has ", t.n_rows(), " rows.");
  std::vector<float> out(static_cast<size_t>((row_end - row_begin) * row));
  dequantize(t, out.data(), row_begin * row, (row_end - row_begin) * row);
  return out;
}

}  // namespace safedec
