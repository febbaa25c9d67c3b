// TensorBoard event-file writer for scalars, with no TensorFlow or protobuf dependency:
// Event/Summary messages are hand-encoded protobuf and each record is TFRecord-framed with
// masked CRC32C (FORMATS.md §6; tensorboard/summary/writer/record_writer.py and
// tensorboard/compat/proto/event.proto, summary.proto). The real `tensorboard` package reads
// the files back in tests/py/test_tensorboard_events.py.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace ftune {

// Serialized Event{wall_time=1, file_version=3: "brain.Event:2"}: the first record of a file.
std::string tb_encode_file_version_event(double wall_time);
// Serialized Event{wall_time=1, step=2, summary=5 {value=1 {tag=1, simple_value=2}}}.
std::string tb_encode_scalar_event(double wall_time, int64_t step, std::string_view tag,
                                   float value);
// TFRecord framing: u64 LE length | u32 LE masked crc32c(length bytes) | data |
// u32 LE masked crc32c(data).
std::string tfrecord_frame(std::string_view data);

class TensorBoardWriter {
 public:
  // Creates log_dir and the file
  // log_dir/events.out.tfevents.<10-digit unix time>.<hostname>.<pid>.<n>, n counting the
  // writers this process opened (so two writers in one second get distinct files), and writes
  // the file_version record.
  explicit TensorBoardWriter(const std::string& log_dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One scalar point; wall_time defaults to now (seconds since the epoch).
  void add_scalar(std::string_view tag, float value, int64_t step);
  void add_scalar(std::string_view tag, float value, int64_t step, double wall_time);
  // Pushes buffered records to the OS (TensorBoard picks them up on its next poll).
  void flush();

  const std::string& path() const { return path_; }

 private:
  void write_record(std::string_view data);

  std::string path_;
  FILE* file_ = nullptr;
};

}  // namespace ftune
