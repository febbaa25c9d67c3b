// safetensors reading (mmap + header validation), writing (atomic) and HF checkpoint folders.
// The validation mirrors upstream safetensors (safetensors/src/tensor.rs: read_metadata,
// Metadata::validate) so a file ftune accepts is one HF accepts and vice versa, with messages
// that name the file and the exact problem.
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <tuple>

#include "io/atomic_file.h"
#include "io/json_file.h"

namespace ftune {

namespace {

using json = nlohmann::json;

// Owns a read-only private mapping; shared by the file object and every borrowed tensor.
struct Mapping {
  void* addr = nullptr;
  size_t len = 0;
  ~Mapping() {
    if (addr != nullptr) ::munmap(addr, len);
  }
};

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// A non-negative JSON integer as uint64, or false (negative, fractional, not a number).
bool as_u64(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

TensorInfo parse_entry(const std::string& file, const std::string& name, const json& e) {
  const auto where = [&] { return fmt::format("{}: tensor '{}'", file, name); };
  FTUNE_CHECK(e.is_object(), "{}: header entry is not an object (got {})", where(),
              json_value_brief(e));
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    FTUNE_CHECK(e.contains(key), "{}: header entry lacks '{}'", where(), key);
  }
  TensorInfo info;
  info.name = name;

  const json& dt = e["dtype"];
  FTUNE_CHECK(dt.is_string(), "{}: dtype must be a string, got {}", where(), json_value_brief(dt));
  const std::string dt_name = dt.get<std::string>();
  FTUNE_CHECK(dtype_from_name(dt_name, &info.dtype), "{}: unknown dtype '{}'", where(), dt_name);

  const json& shape = e["shape"];
  FTUNE_CHECK(shape.is_array(), "{}: shape must be an array, got {}", where(),
              json_value_brief(shape));
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& d : shape) {
    uint64_t dim = 0;
    FTUNE_CHECK(as_u64(d, &dim) && dim <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                "{}: shape {} has a dimension that is not a non-negative integer ({})", where(),
                shape.dump(), json_value_brief(d));
    info.shape.push_back(static_cast<int64_t>(dim));
    overflow = overflow || __builtin_mul_overflow(numel, dim, &numel);
  }
  uint64_t nbytes = 0;
  overflow = overflow || __builtin_mul_overflow(numel, dtype_size(info.dtype), &nbytes);
  FTUNE_CHECK(!overflow, "{}: shape {} is too large (byte count overflows)", where(), shape.dump());

  const json& off = e["data_offsets"];
  FTUNE_CHECK(off.is_array() && off.size() == 2 && as_u64(off[0], &info.begin) &&
                  as_u64(off[1], &info.end) && info.begin <= info.end,
              "{}: data_offsets must be two ascending non-negative integers [begin, end], got {}",
              where(), json_value_brief(off));
  FTUNE_CHECK(info.end - info.begin == nbytes,
              "{}: data_offsets [{}, {}) do not fit {} {}: expected {} bytes, found {}", where(),
              info.begin, info.end, dt_name, shape_str(info.shape), nbytes,
              info.end - info.begin);
  return info;
}

// Sorted by offset, the tensors must tile [0, data_bytes) with no gap and no overlap
// (upstream Metadata::validate + the buffer-size check in read_metadata).
void check_tiling(const std::string& file, const std::map<std::string, TensorInfo>& infos,
                  uint64_t data_bytes) {
  std::vector<const TensorInfo*> order;
  order.reserve(infos.size());
  for (const auto& [name, info] : infos) order.push_back(&info);
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return std::tie(a->begin, a->end, a->name) < std::tie(b->begin, b->end, b->name);
  });
  uint64_t covered = 0;  // [0, covered) is tiled so far
  const TensorInfo* last = nullptr;  // the tensor that ends at `covered`
  for (const TensorInfo* t : order) {
    if (t->begin < covered) {
      fail("{}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap in the data buffer", file,
           last->name, last->begin, last->end, t->name, t->begin, t->end);
    }
    if (t->begin > covered) {
      fail("{}: gap in the data buffer: bytes [{}, {}) before tensor '{}' belong to no tensor",
           file, covered, t->begin, t->name);
    }
    if (t->end > covered || last == nullptr) {
      covered = t->end;
      last = t;
    }
  }
  if (covered > data_bytes) {
    fail("{}: tensor '{}' ends at data byte {} but the data buffer holds only {} bytes: it runs "
         "past the end of file (truncated?)",
         file, last->name, covered, data_bytes);
  }
  if (covered < data_bytes) {
    fail("{}: {} trailing bytes after the last tensor (tensors end at data byte {}, the data "
         "buffer holds {} bytes)",
         file, data_bytes - covered, covered, data_bytes);
  }
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;

  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open safetensors file {}: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", path);
  }
  f.file_size_ = static_cast<uint64_t>(st.st_size);
  if (f.file_size_ < 8) {
    ::close(fd);
    fail("{}: file is {} bytes, shorter than the 8-byte safetensors header length", path,
         f.file_size_);
  }
  void* addr = ::mmap(nullptr, f.file_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  const int mmap_errno = errno;
  ::close(fd);  // the mapping stays valid without the descriptor
  if (addr == MAP_FAILED) fail("{}: mmap failed: {}", path, std::strerror(mmap_errno));
  auto mapping = std::make_shared<Mapping>();
  mapping->addr = addr;
  mapping->len = f.file_size_;
  f.base_ = static_cast<const uint8_t*>(addr);
  f.mapping_ = mapping;

  const uint64_t n = read_u64_le(f.base_);
  FTUNE_CHECK(n <= kSafetensorsMaxHeaderBytes,
              "{}: header length {} exceeds the limit of {} bytes (not a safetensors file?)", path,
              n, kSafetensorsMaxHeaderBytes);
  FTUNE_CHECK(8 + n <= f.file_size_,
              "{}: header length {} runs past the end of the file ({} bytes, so at most {} header "
              "bytes)",
              path, n, f.file_size_, f.file_size_ - 8);
  f.data_start_ = 8 + n;

  // Duplicate tensor names would silently collapse in a JSON object; upstream (serde) rejects
  // them, so note them while parsing (keys of the top-level object arrive at depth 1).
  std::string duplicate;
  std::set<std::string> seen;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!seen.insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  const std::string_view header(reinterpret_cast<const char*>(f.base_ + 8), n);
  json h = parse_json_text(header, path + ": safetensors header", cb);
  FTUNE_CHECK(h.is_object(), "{}: safetensors header is not a JSON object (got {})", path,
              h.type_name());
  FTUNE_CHECK(duplicate.empty(), "{}: safetensors header names '{}' twice", path, duplicate);

  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (it->is_null()) continue;  // upstream reads it as Option<HashMap>: null = none
      FTUNE_CHECK(it->is_object(), "{}: __metadata__ must be an object of strings, got {}", path,
                  json_value_brief(*it));
      for (auto m = it->begin(); m != it->end(); ++m) {
        FTUNE_CHECK(m->is_string(), "{}: __metadata__ must map strings to strings; '{}' is {}",
                    path, m.key(), json_value_brief(*m));
        f.metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    f.infos_.emplace(name, parse_entry(path, name, *it));
    f.names_.push_back(name);
  }
  std::sort(f.names_.begin(), f.names_.end());
  check_tiling(path, f.infos_, f.file_size_ - f.data_start_);
  return f;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = infos_.find(name);
  FTUNE_CHECK(it != infos_.end(), "{}: no tensor named '{}'", path_, name);
  return it->second;
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo& i = info(name);
  // const_cast: Tensor has no read-only flavour; the pages are PROT_READ, so a write faults
  // rather than silently changing shared data.
  void* p = const_cast<uint8_t*>(base_ + data_start_ + i.begin);
  if (reinterpret_cast<uintptr_t>(p) % dtype_size(i.dtype) != 0) {
    // The format does not align tensors (an odd-sized U8 or BF16 tensor shifts the next one):
    // a misaligned one is copied, so that typed reads of it are well defined (UBSan found this).
    Tensor t = Tensor::empty(i.shape, i.dtype);
    std::memcpy(t.raw(), p, static_cast<size_t>(i.end - i.begin));
    return t;
  }
  return Tensor::borrow(p, i.shape, i.dtype, mapping_);
}

// ---------------------------------------------------------------------------------------------
// Writer

SafetensorsStreamWriter::SafetensorsStreamWriter(const std::string& path,
                                                 const std::vector<TensorEntry>& entries,
                                                 const std::map<std::string, std::string>& metadata)
    : path_(path), entries_(entries) {
  // Header in the given order: __metadata__ first, as upstream writes it.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& e : entries_) {
    FTUNE_CHECK(!e.name.empty() && e.name != "__metadata__",
                "write_safetensors {}: invalid tensor name '{}'", path, e.name);
    FTUNE_CHECK(names.insert(e.name).second, "write_safetensors {}: duplicate tensor name '{}'",
                path, e.name);
    FTUNE_CHECK(e.dtype != DType::NF4,
                "write_safetensors {}: tensor '{}' is NF4; store packed NF4 as U8", path, e.name);
    const uint64_t nbytes = static_cast<uint64_t>(shape_numel(e.shape)) * dtype_size(e.dtype);
    header[e.name] = {{"dtype", std::string(dtype_name(e.dtype))},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail("write_safetensors {}: cannot encode the header (names and metadata must be UTF-8): {}",
         path, e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // data start 8-aligned (8 + len ≡ 0 mod 8)
  uint8_t len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<uint8_t>(text.size() >> (8 * i));
  file_ = std::make_unique<AtomicFile>(path);
  file_->write(len_bytes, 8);
  file_->write(text.data(), text.size());
}

SafetensorsStreamWriter::~SafetensorsStreamWriter() = default;

void SafetensorsStreamWriter::write(const Tensor& t) {
  FTUNE_CHECK(next_ < entries_.size(), "write_safetensors {}: more tensors written than declared",
              path_);
  const TensorEntry& e = entries_[next_];
  FTUNE_CHECK(t.defined(), "write_safetensors {}: tensor '{}' is undefined", path_, e.name);
  FTUNE_CHECK(t.device().is_cpu(), "write_safetensors {}: tensor '{}' is on {}; copy it to the "
              "CPU first", path_, e.name, t.device().str());
  FTUNE_CHECK(t.dtype() == e.dtype && t.shape() == e.shape && t.is_contiguous(),
              "write_safetensors {}: tensor '{}' is {} {}, declared {} {}", path_, e.name,
              dtype_name(t.dtype()), shape_str(t.shape()), dtype_name(e.dtype), shape_str(e.shape));
  file_->write(t.raw(), t.nbytes());
  ++next_;
}

void SafetensorsStreamWriter::commit() {
  FTUNE_CHECK(next_ == entries_.size(), "write_safetensors {}: {} of {} tensors written", path_,
              next_, entries_.size());
  file_->commit();
}

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsStreamWriter::TensorEntry> entries;
  for (const auto& [name, t] : tensors) {
    FTUNE_CHECK(t.defined(), "write_safetensors {}: tensor '{}' is undefined", path, name);
    entries.push_back({name, t.dtype(), t.shape()});
  }
  SafetensorsStreamWriter w(path, entries, metadata);
  for (const auto& [name, t] : tensors) w.write(t);
  w.commit();
}

// ---------------------------------------------------------------------------------------------
// HF model folders

CheckpointReader CheckpointReader::open_folder(const std::string& dir) {
  namespace fs = std::filesystem;
  CheckpointReader r;
  r.dir_ = dir;
  FTUNE_CHECK(fs::is_directory(dir), "model folder {} does not exist or is not a directory", dir);
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";

  if (fs::exists(single)) {
    r.files_.push_back(SafetensorsFile::open(single.string()));
    r.names_ = r.files_[0].names();
    for (const auto& n : r.names_) r.where_[n] = 0;
    return r;
  }
  FTUNE_CHECK(fs::exists(index), "no model.safetensors or model.safetensors.index.json in {}",
              dir);

  const std::string ipath = index.string();
  const nlohmann::json j = read_json_file(ipath);
  FTUNE_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
              "{}: expected an object with a 'weight_map' object", ipath);
  std::map<std::string, size_t> file_index;  // shard file name -> index into files_
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    FTUNE_CHECK(it->is_string(), "{}: weight_map['{}'] must be a file name, got {}", ipath,
                it.key(), json_value_brief(*it));
    const std::string shard = it->get<std::string>();
    auto [pos, inserted] = file_index.emplace(shard, r.files_.size());
    if (inserted) {
      const fs::path shard_path = fs::path(dir) / shard;
      FTUNE_CHECK(fs::exists(shard_path), "{}: shard {} (holding '{}') is missing", ipath,
                  shard_path.string(), it.key());
      r.files_.push_back(SafetensorsFile::open(shard_path.string()));
    }
    const SafetensorsFile& f = r.files_[pos->second];
    FTUNE_CHECK(f.contains(it.key()), "{}: weight_map puts '{}' in {}, which has no such tensor",
                ipath, it.key(), f.path());
    r.where_[it.key()] = pos->second;
    r.names_.push_back(it.key());
  }
  FTUNE_CHECK(!r.names_.empty(), "{}: weight_map is empty", ipath);
  std::sort(r.names_.begin(), r.names_.end());
  return r;
}

const SafetensorsFile& CheckpointReader::file_for(const std::string& name) const {
  auto it = where_.find(name);
  FTUNE_CHECK(it != where_.end(), "model folder {}: no tensor named '{}'", dir_, name);
  return files_[it->second];
}

const TensorInfo& CheckpointReader::info(const std::string& name) const {
  return file_for(name).info(name);
}
Tensor CheckpointReader::tensor(const std::string& name) const {
  return file_for(name).tensor(name);
}
const std::string& CheckpointReader::file_of(const std::string& name) const {
  return file_for(name).path();
}

}  // namespace ftune
