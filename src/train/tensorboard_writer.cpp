// Hand-encoded protobuf for the two Event shapes ftune writes, and TFRecord framing.
// Protobuf wire format (protobuf.dev/programming-guides/encoding): key = field << 3 | wire type;
// wire types used: 0 varint (int64 step), 1 fixed64 (double wall_time), 2 length-delimited
// (strings, nested messages), 5 fixed32 (float simple_value). Values are little-endian.
#include "train/tensorboard_writer.h"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "core/error.h"
#include "io/crc32c.h"

namespace ftune {
namespace {

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void put_key(std::string& out, uint32_t field, WireType wt) { put_varint(out, field << 3 | wt); }

template <typename T>
void put_le(std::string& out, T v) {  // x86/ARM hosts are little-endian, as the format
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));
  out.append(bytes, sizeof(T));
}

void put_bytes_field(std::string& out, uint32_t field, std::string_view bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out.append(bytes);
}

// event.proto field numbers.
constexpr uint32_t kEventWallTime = 1, kEventStep = 2, kEventFileVersion = 3, kEventSummary = 5;
// summary.proto: Summary.value = 1; Summary.Value.tag = 1, simple_value = 2.
constexpr uint32_t kSummaryValue = 1, kValueTag = 1, kValueSimpleValue = 2;

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

std::atomic<int> g_writer_counter{0};

}  // namespace

std::string tb_encode_file_version_event(double wall_time) {
  std::string ev;
  put_key(ev, kEventWallTime, kFixed64);
  put_le<double>(ev, wall_time);
  put_bytes_field(ev, kEventFileVersion, "brain.Event:2");
  return ev;
}

std::string tb_encode_scalar_event(double wall_time, int64_t step, std::string_view tag,
                                   float value) {
  std::string val;
  put_bytes_field(val, kValueTag, tag);
  put_key(val, kValueSimpleValue, kFixed32);
  put_le<float>(val, value);
  std::string summary;
  put_bytes_field(summary, kSummaryValue, val);

  std::string ev;
  put_key(ev, kEventWallTime, kFixed64);
  put_le<double>(ev, wall_time);
  if (step != 0) {  // proto3 omits default values; protobuf's own serializer does the same
    put_key(ev, kEventStep, kVarint);
    put_varint(ev, static_cast<uint64_t>(step));  // negative int64: 10-byte two's complement
  }
  put_bytes_field(ev, kEventSummary, summary);
  return ev;
}

std::string tfrecord_frame(std::string_view data) {
  std::string rec;
  std::string len;
  put_le<uint64_t>(len, data.size());
  rec += len;
  put_le<uint32_t>(rec, crc32c_mask(crc32c(len)));
  rec += data;
  put_le<uint32_t>(rec, crc32c_mask(crc32c(data)));
  return rec;
}

TensorBoardWriter::TensorBoardWriter(const std::string& log_dir) {
  std::error_code ec;
  std::filesystem::create_directories(log_dir, ec);
  FTUNE_CHECK(!ec, "TensorBoardWriter: cannot create '{}': {}", log_dir, ec.message());
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0) std::strcpy(host, "localhost");
  // Same pattern as TensorFlow's and PyTorch's SummaryWriter, which TensorBoard globs for.
  path_ = fmt::format("{}/events.out.tfevents.{:010d}.{}.{}.{}", log_dir,
                      static_cast<long long>(std::time(nullptr)), host,
                      static_cast<long>(getpid()), g_writer_counter.fetch_add(1));
  file_ = std::fopen(path_.c_str(), "wb");
  FTUNE_CHECK(file_, "TensorBoardWriter: cannot open '{}' for writing", path_);
  write_record(tb_encode_file_version_event(now_seconds()));
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_) std::fclose(file_);  // no throw from a destructor; flush() reports errors
}

void TensorBoardWriter::add_scalar(std::string_view tag, float value, int64_t step) {
  add_scalar(tag, value, step, now_seconds());
}

void TensorBoardWriter::add_scalar(std::string_view tag, float value, int64_t step,
                                   double wall_time) {
  write_record(tb_encode_scalar_event(wall_time, step, tag, value));
}

void TensorBoardWriter::flush() {
  FTUNE_CHECK(std::fflush(file_) == 0, "TensorBoardWriter: cannot write '{}'", path_);
}

void TensorBoardWriter::write_record(std::string_view data) {
  std::string rec = tfrecord_frame(data);
  FTUNE_CHECK(std::fwrite(rec.data(), 1, rec.size(), file_) == rec.size(),
              "TensorBoardWriter: cannot write '{}'", path_);
}

}  // namespace ftune
