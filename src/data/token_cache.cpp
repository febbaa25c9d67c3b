// Token cache files (layout and keying in token_cache.h).
#include "data/token_cache.h"

#include <cstring>
#include <filesystem>

#include "core/batch.h"
#include "core/error.h"
#include "data/data_files.h"

namespace ftune {

namespace {

constexpr char kMagic[8] = {'F', 'T', 'U', 'N', 'E', 'T', 'O', 'K'};
constexpr size_t kHeaderSize = 48;
constexpr size_t kStatsFields = 8;

void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}
void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}

// Bounds-checked little-endian reader over the payload.
class Reader {
 public:
  explicit Reader(std::string_view b) : b_(b) {}
  uint64_t u(int bytes) {
    FTUNE_CHECK(pos_ + bytes <= b_.size(), "truncated at byte {}", pos_);
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) {
      v |= static_cast<uint64_t>(static_cast<unsigned char>(b_[pos_ + i])) << (8 * i);
    }
    pos_ += bytes;
    return v;
  }
  size_t remaining() const { return b_.size() - pos_; }

 private:
  std::string_view b_;
  size_t pos_ = 0;
};

int64_t* stats_field(DataStats& s, size_t i) {
  int64_t* fields[kStatsFields] = {&s.records,          &s.examples,  &s.dropped,
                                   &s.dropped_too_long, &s.dropped_untrained, &s.truncated,
                                   &s.tokens,           &s.trained_tokens};
  return fields[i];
}

}  // namespace

Fnv1a64& Fnv1a64::bytes(std::string_view data) {
  uint64_t h = h_;
  for (unsigned char c : data) {
    h ^= c;
    h *= 0x100000001B3ull;
  }
  h_ = h;
  return *this;
}

Fnv1a64& Fnv1a64::u64(uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
  return bytes(std::string_view(b, 8));
}

Fnv1a64& Fnv1a64::field(std::string_view data) {
  u64(data.size());
  return bytes(data);
}

std::string encode_token_cache(uint64_t key, const TokenizedDataset& data) {
  std::string payload;
  DataStats stats = data.stats;
  for (size_t i = 0; i < kStatsFields; ++i) put_u64(payload, static_cast<uint64_t>(*stats_field(stats, i)));
  for (const TokenizedExample& ex : data.examples) {
    FTUNE_CHECK(ex.ids.size() == ex.labels.size(), "token cache: {} ids but {} labels",
                ex.ids.size(), ex.labels.size());
    put_u32(payload, static_cast<uint32_t>(ex.ids.size()));
    payload += static_cast<char>(ex.truncated ? 1 : 0);
    for (int32_t id : ex.ids) put_u32(payload, static_cast<uint32_t>(id));
    for (size_t i = 0; i < ex.ids.size(); ++i) {
      FTUNE_CHECK(ex.labels[i] == ex.ids[i] || ex.labels[i] == kIgnoreIndex,
                  "token cache: label {} at {} is neither the id {} nor -100", ex.labels[i], i,
                  ex.ids[i]);
      payload += static_cast<char>(ex.labels[i] == kIgnoreIndex ? 0 : 1);
    }
  }
  std::string out(kMagic, sizeof(kMagic));
  put_u32(out, kTokenCacheVersion);
  put_u32(out, static_cast<uint32_t>(kHeaderSize));
  put_u64(out, key);
  put_u64(out, payload.size());
  put_u64(out, Fnv1a64().bytes(payload).value());
  put_u64(out, data.examples.size());
  out += payload;
  return out;
}

TokenizedDataset decode_token_cache(std::string_view bytes, uint64_t expected_key) {
  FTUNE_CHECK(bytes.size() >= kHeaderSize, "file is {} bytes, shorter than the {}-byte header",
              bytes.size(), kHeaderSize);
  FTUNE_CHECK(std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) == 0, "bad magic");
  Reader h(bytes.substr(8, kHeaderSize - 8));
  const auto version = static_cast<uint32_t>(h.u(4));
  FTUNE_CHECK(version == kTokenCacheVersion, "version {} (this ftune writes {})", version,
              kTokenCacheVersion);
  const auto header = static_cast<uint32_t>(h.u(4));
  FTUNE_CHECK(header == kHeaderSize, "header size {}", header);
  const uint64_t key = h.u(8);
  FTUNE_CHECK(key == expected_key, "key {:016x}, expected {:016x}", key, expected_key);
  const uint64_t payload_size = h.u(8);
  const uint64_t checksum = h.u(8);
  const uint64_t count = h.u(8);
  FTUNE_CHECK(bytes.size() - kHeaderSize == payload_size,
              "payload is {} bytes, header says {} (truncated?)", bytes.size() - kHeaderSize,
              payload_size);
  const std::string_view payload = bytes.substr(kHeaderSize);
  FTUNE_CHECK(Fnv1a64().bytes(payload).value() == checksum, "checksum mismatch");

  TokenizedDataset out;
  Reader r(payload);
  for (size_t i = 0; i < kStatsFields; ++i) *stats_field(out.stats, i) = static_cast<int64_t>(r.u(8));
  out.examples.reserve(count);
  for (uint64_t e = 0; e < count; ++e) {
    const auto n = static_cast<size_t>(r.u(4));
    FTUNE_CHECK(n * 5 + 1 <= r.remaining(), "example {} claims {} tokens past the end", e, n);
    TokenizedExample ex;
    ex.truncated = r.u(1) != 0;
    ex.ids.resize(n);
    ex.labels.resize(n);
    for (size_t i = 0; i < n; ++i) ex.ids[i] = static_cast<int32_t>(static_cast<uint32_t>(r.u(4)));
    for (size_t i = 0; i < n; ++i) ex.labels[i] = r.u(1) ? ex.ids[i] : kIgnoreIndex;
    out.examples.push_back(std::move(ex));
  }
  FTUNE_CHECK(r.remaining() == 0, "{} bytes left after the last example", r.remaining());
  return out;
}

TokenCache::TokenCache(std::string dir) : dir_(std::move(dir)) {}

std::string TokenCache::path_for(uint64_t key) const {
  return (std::filesystem::path(dir_) / fmt::format("{:016x}.tokens", key)).string();
}

CacheLoad TokenCache::load(uint64_t key) const {
  CacheLoad out;
  const std::string path = path_for(key);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return out;
  try {
    out.data = decode_token_cache(read_file_bytes(path), key);
  } catch (const Error& e) {
    out.problem = fmt::format("{}: {}", path, e.what());
  }
  return out;
}

void TokenCache::store(uint64_t key, const TokenizedDataset& data) const {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  FTUNE_CHECK(!ec, "cannot create cache directory {}: {}", dir_, ec.message());
  write_file_atomic(path_for(key), encode_token_cache(key, data));
}

}  // namespace ftune
