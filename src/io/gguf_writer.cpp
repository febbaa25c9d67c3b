#include "io/gguf_writer.h"

#include <cstring>
#include <set>

#include "core/error.h"
#include "io/atomic_file.h"

namespace ftune {

namespace {

// GGUF value type numbers (gguf_type).
enum : uint32_t {
  kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9,
};

class Bytes {
 public:
  template <typename T>
  void pod(T v) {
    const size_t n = buf.size();
    buf.resize(n + sizeof(T));
    std::memcpy(buf.data() + n, &v, sizeof(T));
  }
  void str(const std::string& s) {
    pod<uint64_t>(s.size());
    buf.insert(buf.end(), s.begin(), s.end());
  }
  std::vector<uint8_t> buf;
};

void put_value(Bytes& b, const GgufValue& v) {
  struct Visitor {
    Bytes& b;
    void operator()(uint32_t x) { b.pod(kU32); b.pod(x); }
    void operator()(int32_t x) { b.pod(kI32); b.pod(x); }
    void operator()(float x) { b.pod(kF32); b.pod(x); }
    void operator()(bool x) { b.pod(kBool); b.pod<uint8_t>(x ? 1 : 0); }
    void operator()(const std::string& s) { b.pod(kString); b.str(s); }
    void operator()(const std::vector<std::string>& a) {
      b.pod(kArray); b.pod(kString); b.pod<uint64_t>(a.size());
      for (const auto& s : a) b.str(s);
    }
    void operator()(const std::vector<int32_t>& a) {
      b.pod(kArray); b.pod(kI32); b.pod<uint64_t>(a.size());
      for (int32_t x : a) b.pod(x);
    }
    void operator()(const std::vector<float>& a) {
      b.pod(kArray); b.pod(kF32); b.pod<uint64_t>(a.size());
      for (float x : a) b.pod(x);
    }
  };
  std::visit(Visitor{b}, v);
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

GgufWriter::GgufWriter(std::string path, uint32_t alignment)
    : path_(std::move(path)), alignment_(alignment) {
  FTUNE_CHECK(alignment_ > 0 && alignment_ % 8 == 0, "gguf {}: alignment {} must be a positive "
              "multiple of 8", path_, alignment_);
  if (alignment_ != 32) kv_.emplace_back("general.alignment", alignment_);
}

GgufWriter::~GgufWriter() = default;

void GgufWriter::add(const std::string& key, GgufValue value) {
  FTUNE_CHECK(!file_, "gguf {}: key '{}' added after the header was written", path_, key);
  for (const auto& [k, v] : kv_) FTUNE_CHECK(k != key, "gguf {}: duplicate key '{}'", path_, key);
  kv_.emplace_back(key, std::move(value));
}

void GgufWriter::add_tensor(GgufTensorInfo info) {
  FTUNE_CHECK(!file_, "gguf {}: tensor '{}' added after the header was written", path_, info.name);
  FTUNE_CHECK(!info.shape.empty() && info.shape.size() <= 4, "gguf {}: tensor '{}' has {} "
              "dimensions (1 to 4 allowed)", path_, info.name, info.shape.size());
  FTUNE_CHECK(info.name.size() < 64, "gguf {}: tensor name '{}' is longer than 63 bytes", path_,
              info.name);
  for (const auto& t : tensors_)
    FTUNE_CHECK(t.name != info.name, "gguf {}: duplicate tensor '{}'", path_, info.name);
  const int64_t row = info.shape.back();
  FTUNE_CHECK(row % ggml_traits(info.type).block_elems == 0, "gguf {}: tensor '{}' rows of {} "
              "elements do not split into {} blocks", path_, info.name, row,
              ggml_traits(info.type).name);
  tensors_.push_back(std::move(info));
}

size_t GgufWriter::tensor_bytes(const GgufTensorInfo& t) {
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  return ggml_bytes(t.type, n);
}

void GgufWriter::write_header() {
  FTUNE_CHECK(!file_, "gguf {}: header written twice", path_);
  Bytes b;
  b.pod<uint32_t>(0x46554747);  // "GGUF"
  b.pod<uint32_t>(3);
  b.pod<uint64_t>(tensors_.size());
  b.pod<uint64_t>(kv_.size());
  for (const auto& [k, v] : kv_) {
    b.str(k);
    put_value(b, v);
  }
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    b.str(t.name);
    b.pod<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) b.pod<uint64_t>(*it);
    b.pod<uint32_t>(static_cast<uint32_t>(t.type));
    b.pod<uint64_t>(offset);
    offset = align_up(offset + tensor_bytes(t), alignment_);
  }
  file_ = std::make_unique<AtomicFile>(path_);
  file_->write(b.buf.data(), b.buf.size());
  data_start_ = align_up(b.buf.size(), alignment_);
  file_->pad(data_start_ - b.buf.size());
}

const GgufTensorInfo& GgufWriter::next_tensor() const {
  FTUNE_CHECK(next_ < tensors_.size(), "gguf {}: every tensor is written already", path_);
  return tensors_[next_];
}

void GgufWriter::write_tensor(const uint8_t* data, size_t bytes) {
  FTUNE_CHECK(file_, "gguf {}: tensor data before the header", path_);
  const GgufTensorInfo& t = next_tensor();
  FTUNE_CHECK(bytes == tensor_bytes(t), "gguf {}: tensor '{}' has {} bytes, expected {}", path_,
              t.name, bytes, tensor_bytes(t));
  file_->write(data, bytes);
  const uint64_t pos = file_->bytes_written();
  file_->pad(align_up(pos, alignment_) - pos);
  ++next_;
}

void GgufWriter::commit() {
  FTUNE_CHECK(file_ && all_tensors_written(), "gguf {}: {} of {} tensors written", path_, next_,
              tensors_.size());
  file_->commit();
}

}  // namespace ftune
