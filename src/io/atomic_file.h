// A file written atomically: bytes go to `path + ".tmp"`, and commit() fsyncs it, renames it over
// `path` and fsyncs the folder, so readers see either the old file or the whole new one. A writer
// destroyed without commit() removes its temporary file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace ftune {

class AtomicFile {
 public:
  // Creates (truncates) path + ".tmp"; throws ftune::Error naming it.
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t bytes);
  // Writes `count` zero bytes (alignment padding).
  void pad(size_t count);
  uint64_t bytes_written() const { return written_; }
  const std::string& path() const { return path_; }
  // fsync, close, rename over path, fsync the folder.
  void commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t written_ = 0;
};

// fsync of a folder (makes renames inside it durable); errors are ignored.
void fsync_folder(const std::string& dir);

}  // namespace ftune
