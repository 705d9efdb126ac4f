// safetensors: validation rules follow the reference implementation (huggingface/safetensors,
// safetensors/src/tensor.rs): header length must fit in the file (and below 100 MB), the header is
// a JSON object, each entry has a known dtype, a shape of non-negative integers and
// data_offsets [begin, end] with end - begin == numel * dtype size, and the entries sorted by
// offset tile the data section exactly (no overlap, no gap, no trailing bytes).
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"
#include "io/half.h"

namespace safedec {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr uint64_t kMaxHeaderSize = 100'000'000;  // the reference reader's MAX_HEADER_SIZE

struct DtypeInfo {
  SafetensorsDtype dtype;
  const char* name;
  size_t size;
};
constexpr DtypeInfo kDtypes[] = {
    {SafetensorsDtype::BOOL, "BOOL", 1},        {SafetensorsDtype::U8, "U8", 1},
    {SafetensorsDtype::I8, "I8", 1},            {SafetensorsDtype::I16, "I16", 2},
    {SafetensorsDtype::U16, "U16", 2},          {SafetensorsDtype::F16, "F16", 2},
    {SafetensorsDtype::BF16, "BF16", 2},        {SafetensorsDtype::I32, "I32", 4},
    {SafetensorsDtype::U32, "U32", 4},          {SafetensorsDtype::F32, "F32", 4},
    {SafetensorsDtype::F64, "F64", 8},          {SafetensorsDtype::I64, "I64", 8},
    {SafetensorsDtype::U64, "U64", 8},          {SafetensorsDtype::F8_E4M3, "F8_E4M3", 1},
    {SafetensorsDtype::F8_E5M2, "F8_E5M2", 1},
};

const DtypeInfo& info(SafetensorsDtype t) {
  for (const auto& d : kDtypes)
    if (d.dtype == t) return d;
  SAFEDEC_ASSERT(false, "unknown SafetensorsDtype ", static_cast<int>(t));
  return kDtypes[0];
}

std::string short_dump(const json& v) {
  std::string s = v.dump();
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

// float8 e4m3fn (no infinities; S.1111.111 is NaN; bias 7) -> fp32, exact.
float f8_e4m3_to_float(uint8_t b) {
  const int e = (b >> 3) & 0x0F, m = b & 7;
  const float sign = (b & 0x80) ? -1.0f : 1.0f;
  if (e == 15 && m == 7) return std::nanf("");
  if (e == 0) return sign * std::ldexp(static_cast<float>(m), -9);  // subnormal: m/8 * 2^-6
  return sign * std::ldexp(static_cast<float>(8 + m), e - 10);      // (1 + m/8) * 2^(e-7)
}

template <typename T>
void int_to_float(const uint8_t* src, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, src + i * static_cast<int64_t>(sizeof(T)), sizeof(T));
    out[i] = static_cast<float>(v);
  }
}

void* map_file(const std::string& path, uint64_t* size_out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("Cannot open safetensors file '", path, "': ", std::strerror(errno), ".");
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("Safetensors path '", path, "' is not a readable regular file.");
  }
  *size_out = static_cast<uint64_t>(st.st_size);
  if (*size_out == 0) {
    ::close(fd);
    return nullptr;
  }
  void* m = mmap(nullptr, *size_out, PROT_READ, MAP_PRIVATE, fd, 0);
  const int e = errno;
  ::close(fd);
  if (m == MAP_FAILED) fail("Cannot memory-map safetensors file '", path, "': ", std::strerror(e), ".");
  return m;
}

}  // namespace

const char* safetensors_dtype_name(SafetensorsDtype t) { return info(t).name; }
size_t safetensors_dtype_size(SafetensorsDtype t) { return info(t).size; }

SafetensorsDtype safetensors_dtype_from_name(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.dtype;
  std::string known;
  for (const auto& d : kDtypes) known += std::string(known.empty() ? "" : ", ") + d.name;
  fail("Unknown safetensors dtype '", name, "' (known: ", known, ").");
}

int64_t SafetensorsTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void safetensors_to_float32(const SafetensorsTensor& t, float* out) {
  const int64_t n = t.numel();
  const uint8_t* s = t.data;
  switch (t.dtype) {
    case SafetensorsDtype::F32:
      if (n > 0) std::memcpy(out, s, static_cast<size_t>(n) * 4);  // empty tensors may be null
      break;
    case SafetensorsDtype::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, s + 2 * i, 2);
        out[i] = half_to_float(h);
      }
      break;
    case SafetensorsDtype::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, s + 2 * i, 2);
        out[i] = bf16_to_float(h);
      }
      break;
    case SafetensorsDtype::F64:
      for (int64_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, s + 8 * i, 8);
        out[i] = static_cast<float>(v);
      }
      break;
    case SafetensorsDtype::F8_E4M3:
      for (int64_t i = 0; i < n; ++i) out[i] = f8_e4m3_to_float(s[i]);
      break;
    case SafetensorsDtype::F8_E5M2:  // the upper byte of an fp16
      for (int64_t i = 0; i < n; ++i) out[i] = half_to_float(static_cast<uint16_t>(s[i] << 8));
      break;
    case SafetensorsDtype::BOOL:
      for (int64_t i = 0; i < n; ++i) out[i] = s[i] ? 1.0f : 0.0f;
      break;
    case SafetensorsDtype::U8: int_to_float<uint8_t>(s, out, n); break;
    case SafetensorsDtype::I8: int_to_float<int8_t>(s, out, n); break;
    case SafetensorsDtype::I16: int_to_float<int16_t>(s, out, n); break;
    case SafetensorsDtype::U16: int_to_float<uint16_t>(s, out, n); break;
    case SafetensorsDtype::I32: int_to_float<int32_t>(s, out, n); break;
    case SafetensorsDtype::U32: int_to_float<uint32_t>(s, out, n); break;
    case SafetensorsDtype::I64: int_to_float<int64_t>(s, out, n); break;
    case SafetensorsDtype::U64: int_to_float<uint64_t>(s, out, n); break;
  }
}

std::vector<float> safetensors_to_float32(const SafetensorsTensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  safetensors_to_float32(t, out.data());
  return out;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile::~SafetensorsFile() {
  if (map_) munmap(map_, size_);
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->map_ = map_file(path, &f->size_);
  f->parse(static_cast<const uint8_t*>(f->map_), f->size_);
  return f;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open_memory(const void* data, size_t size, const std::string& name) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = name;
  f->size_ = size;
  f->owned_.reset(new uint8_t[size ? size : 1]);
  if (size) std::memcpy(f->owned_.get(), data, size);
  f->parse(f->owned_.get(), size);
  return f;
}

void SafetensorsFile::parse(const uint8_t* data, size_t size) {
  const std::string& p = path_;
  if (size < 8)
    fail("Safetensors file '", p, "' is truncated: ", size, " bytes, less than the 8-byte header length.");
  uint64_t n;
  std::memcpy(&n, data, 8);
  if (n > size - 8)
    fail("Safetensors file '", p, "' is corrupt or truncated: its header length field says ", n,
         " bytes but only ", size - 8, " bytes follow it.");
  if (n > kMaxHeaderSize)
    fail("Safetensors file '", p, "' declares a ", n, "-byte header, above the 100 MB limit.");
  if (n < 2 || data[8] != '{')
    fail("Safetensors file '", p, "' is corrupt: its header does not start with a JSON object '{'.");

  // Parse, refusing duplicate top-level keys (they would silently shadow each other).
  std::set<std::string> seen;
  std::string duplicate;
  json header;
  try {
    header = json::parse(
        data + 8, data + 8 + n,
        [&](int depth, json::parse_event_t ev, json& parsed) {
          if (ev == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
            if (!seen.insert(parsed.get<std::string>()).second && duplicate.empty()) duplicate = parsed.get<std::string>();
          }
          return true;
        });
  } catch (const json::exception& e) {
    fail("Safetensors file '", p, "' has an invalid JSON header: ", e.what(), ".");
  }
  if (!header.is_object()) fail("Safetensors file '", p, "' has a header that is not a JSON object.");
  if (!duplicate.empty()) fail("Safetensors file '", p, "' lists '", duplicate, "' twice in its header.");

  const uint64_t data_size = size - 8 - n;
  const uint8_t* base = data + 8 + n;
  struct Span {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Span> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail("Safetensors file '", p, "': __metadata__ must be an object of strings.");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail("Safetensors file '", p, "': __metadata__ value of '", m.key(), "' is ", short_dump(m.value()),
               ", not a string.");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& why) {
      fail("Safetensors file '", p, "': tensor '", name, "' ", why, ".");
    };
    if (!v.is_object()) bad("has a header entry that is not an object");
    if (!v.contains("dtype") || !v["dtype"].is_string()) bad("has no string 'dtype'");
    if (!v.contains("shape") || !v["shape"].is_array()) bad("has no 'shape' list");
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
      bad("has no 'data_offsets' pair");
    SafetensorsTensor t;
    t.name = name;
    try {
      t.dtype = safetensors_dtype_from_name(v["dtype"].get<std::string>());
    } catch (const Error& e) {
      bad(std::string("has an unsupported dtype: ") + e.what());
    }
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) bad("has a shape entry " + short_dump(d) + " that is not a non-negative integer");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          (dim != 0 && numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / dim))
        bad("has a shape whose element count overflows");
      numel *= dim;
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    const json& off = v["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      bad("has data_offsets " + short_dump(off) + " that are not non-negative integers");
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end) bad("has data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] with begin > end");
    if (end > data_size)
      bad("has data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
          "] past the end of the data section (" + std::to_string(data_size) + " bytes)");
    const uint64_t es = safetensors_dtype_size(t.dtype);
    if (numel > std::numeric_limits<uint64_t>::max() / es || numel * es != end - begin)
      bad("spans " + std::to_string(end - begin) + " bytes but its shape and dtype " + safetensors_dtype_name(t.dtype) +
          " need " + std::to_string(numel) + " x " + std::to_string(es) + " bytes");
    t.data = base + begin;
    t.nbytes = static_cast<size_t>(end - begin);
    spans.push_back({begin, end, tensors_.size()});
    tensors_.push_back(std::move(t));
  }
  // The data regions must tile the data section.
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  uint64_t pos = 0;
  for (const auto& s : spans) {
    const std::string& name = tensors_[s.index].name;
    if (s.begin < pos)
      fail("Safetensors file '", p, "': tensor '", name, "' data [", s.begin, ", ", s.end,
           ") overlaps the previous tensor (which ends at ", pos, ").");
    if (s.begin > pos)
      fail("Safetensors file '", p, "': tensor '", name, "' data starts at ", s.begin,
           ", leaving a gap after byte ", pos, " (offsets must be contiguous).");
    pos = s.end;
  }
  if (pos != data_size)
    fail("Safetensors file '", p, "': the tensors cover ", pos, " bytes but the data section has ", data_size,
         " bytes (trailing data or a wrong header length).");
  // Keep file order (by offset) for iteration.
  std::vector<SafetensorsTensor> ordered;
  ordered.reserve(tensors_.size());
  for (const auto& s : spans) ordered.push_back(std::move(tensors_[s.index]));
  tensors_ = std::move(ordered);
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

const SafetensorsTensor* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const SafetensorsTensor& SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsTensor* t = find(name);
  if (!t) fail("Safetensors file '", path_, "' has no tensor named '", name, "'.");
  return *t;
}

std::vector<float> SafetensorsFile::to_float32(const std::string& name) const {
  return safetensors_to_float32(tensor(name));
}

// ---------------------------------------------------------------------------------------------
// SafetensorsCheckpoint

std::unique_ptr<SafetensorsCheckpoint> SafetensorsCheckpoint::open(const std::string& path) {
  std::unique_ptr<SafetensorsCheckpoint> c(new SafetensorsCheckpoint());
  c->path_ = path;
  std::error_code ec;
  auto add_file = [&](const std::string& file) -> SafetensorsFile* {
    c->files_.push_back(SafetensorsFile::open(file));
    return c->files_.back().get();
  };
  auto add_all = [&](SafetensorsFile* f) {
    for (const auto& t : f->tensors()) {
      if (c->where_.count(t.name))
        fail("Checkpoint '", path, "': tensor '", t.name, "' appears in more than one shard (also in '", f->path(), "').");
      c->where_[t.name] = &t;
    }
  };
  if (fs::is_regular_file(path, ec)) {
    SafetensorsFile* f = add_file(path);
    add_all(f);
    c->metadata_ = f->metadata();
    return c;
  }
  if (!fs::is_directory(path, ec)) fail("Checkpoint path '", path, "' does not exist (expected a .safetensors file or a model directory).");

  const std::string index_path = (fs::path(path) / "model.safetensors.index.json").string();
  if (fs::is_regular_file(index_path, ec)) {
    std::ifstream in(index_path, std::ios::binary);
    json index;
    try {
      index = json::parse(in);
    } catch (const json::exception& e) {
      fail("Checkpoint index '", index_path, "' is not valid JSON: ", e.what(), ".");
    }
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      fail("Checkpoint index '", index_path, "' has no \"weight_map\" object (tensor name -> shard file).");
    std::map<std::string, SafetensorsFile*> shards;
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        fail("Checkpoint index '", index_path, "': weight_map entry '", it.key(), "' is not a file name.");
      const std::string shard = it.value().get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos || shard.find('\\') != std::string::npos || shard == "." ||
          shard == "..")
        fail("Checkpoint index '", index_path, "': shard name '", shard, "' for tensor '", it.key(),
             "' must be a plain file name inside the checkpoint directory.");
      if (!shards.count(shard)) {
        const std::string shard_path = (fs::path(path) / shard).string();
        if (!fs::is_regular_file(shard_path, ec))
          fail("Checkpoint index '", index_path, "' names shard '", shard, "' (for tensor '", it.key(),
               "'), but '", shard_path, "' does not exist.");
        shards[shard] = add_file(shard_path);
      }
      const SafetensorsTensor* t = shards[shard]->find(it.key());
      if (!t)
        fail("Checkpoint index '", index_path, "' maps tensor '", it.key(), "' to shard '", shard,
             "', which does not contain it.");
      c->where_[it.key()] = t;
    }
    if (index.contains("metadata") && index["metadata"].is_object())
      for (auto it = index["metadata"].begin(); it != index["metadata"].end(); ++it)
        c->metadata_[it.key()] = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
    if (!c->files_.empty())
      for (const auto& kv : c->files_.front()->metadata()) c->metadata_.emplace(kv.first, kv.second);
    return c;
  }

  const std::string single = (fs::path(path) / "model.safetensors").string();
  std::vector<std::string> found;
  if (fs::is_regular_file(single, ec)) {
    found.push_back(single);
  } else {
    for (const auto& e : fs::directory_iterator(path, ec))
      if (e.is_regular_file() && e.path().extension() == ".safetensors") found.push_back(e.path().string());
  }
  if (found.size() != 1)
    fail("Checkpoint directory '", path, "' has ", found.empty() ? "no" : "several", " .safetensors files and no "
         "model.safetensors.index.json; expected model.safetensors, an index, or exactly one .safetensors file.");
  SafetensorsFile* f = add_file(found[0]);
  add_all(f);
  c->metadata_ = f->metadata();
  return c;
}

std::vector<std::string> SafetensorsCheckpoint::tensor_names() const {
  std::vector<std::string> names;
  names.reserve(where_.size());
  for (const auto& kv : where_) names.push_back(kv.first);
  return names;
}

const SafetensorsTensor* SafetensorsCheckpoint::find(const std::string& name) const {
  auto it = where_.find(name);
  return it == where_.end() ? nullptr : it->second;
}

const SafetensorsTensor& SafetensorsCheckpoint::tensor(const std::string& name) const {
  const SafetensorsTensor* t = find(name);
  if (!t) fail("Checkpoint '", path_, "' has no tensor named '", name, "' (it has ", where_.size(), " tensors).");
  return *t;
}

std::vector<float> SafetensorsCheckpoint::to_float32(const std::string& name) const {
  return safetensors_to_float32(tensor(name));
}

// ---------------------------------------------------------------------------------------------
// Writer

void write_safetensors(const std::string& path, const std::vector<SafetensorsWriteTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<const SafetensorsWriteTensor*> order;
  std::set<std::string> names;
  for (const auto& t : tensors) {
    SAFEDEC_CHECK(!t.name.empty() && t.name != "__metadata__", "Cannot write '", path, "': invalid tensor name '",
                  t.name, "'.");
    SAFEDEC_CHECK(names.insert(t.name).second, "Cannot write '", path, "': tensor '", t.name, "' is given twice.");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      SAFEDEC_CHECK(d >= 0, "Cannot write '", path, "': tensor '", t.name, "' has a negative dimension.");
      numel *= static_cast<uint64_t>(d);
    }
    SAFEDEC_CHECK(numel * safetensors_dtype_size(t.dtype) == t.nbytes, "Cannot write '", path, "': tensor '", t.name,
                  "' has ", t.nbytes, " bytes but its shape and dtype need ", numel * safetensors_dtype_size(t.dtype),
                  ".");
    SAFEDEC_CHECK(t.data != nullptr || t.nbytes == 0, "Cannot write '", path, "': tensor '", t.name, "' has no data.");
    order.push_back(&t);
  }
  // Largest element size first (then by name), so every offset is a multiple of its element size.
  std::sort(order.begin(), order.end(), [](const SafetensorsWriteTensor* a, const SafetensorsWriteTensor* b) {
    const size_t sa = safetensors_dtype_size(a->dtype), sb = safetensors_dtype_size(b->dtype);
    return sa != sb ? sa > sb : a->name < b->name;
  });
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto* t : order) {
    header[t->name] = {{"dtype", safetensors_dtype_name(t->dtype)},
                       {"shape", t->shape},
                       {"data_offsets", {offset, offset + t->nbytes}}};
    offset += t->nbytes;
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');  // pad with spaces: data starts 8-aligned

  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) fail("Cannot create the directory '", parent.string(), "' for ", path, ": ", ec.message(), ".");
  }
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail("Cannot create '", tmp, "': ", std::strerror(errno), ".");
  const uint64_t n = text.size();
  bool ok = std::fwrite(&n, 8, 1, f) == 1 && std::fwrite(text.data(), 1, text.size(), f) == text.size();
  for (const auto* t : order)
    if (ok && t->nbytes) ok = std::fwrite(t->data, 1, t->nbytes, f) == t->nbytes;
  const int write_errno = errno;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    fail("Cannot write safetensors file '", tmp, "': ", std::strerror(write_errno), ".");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    fail("Cannot rename '", tmp, "' to '", path, "': ", ec.message(), ".");
  }
}

}  // namespace safedec
