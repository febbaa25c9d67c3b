#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "core/error.h"

namespace ftune {

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("cannot create {}: {}", tmp_, std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFile::write(const void* data, size_t bytes) {
  FTUNE_CHECK(fd_ >= 0, "writing {}: the file is already closed", tmp_);
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd_, p, std::min<size_t>(bytes, size_t{1} << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("writing {}: {}", tmp_, n < 0 ? std::strerror(errno) : "short write");
    p += n;
    bytes -= static_cast<size_t>(n);
    written_ += static_cast<uint64_t>(n);
  }
}

void AtomicFile::pad(size_t count) {
  static const std::vector<char> zeros(4096, 0);
  while (count > 0) {
    const size_t n = std::min(count, zeros.size());
    write(zeros.data(), n);
    count -= n;
  }
}

void AtomicFile::commit() {
  FTUNE_CHECK(fd_ >= 0, "committing {}: the file is already closed", tmp_);
  if (::fsync(fd_) != 0) fail("fsync {}: {}", tmp_, std::strerror(errno));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    fail("closing {}: {}", tmp_, std::strerror(err));
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    fail("cannot rename {} to {}: {}", tmp_, path_, std::strerror(err));
  }
  const std::filesystem::path parent = std::filesystem::path(path_).parent_path();
  fsync_folder(parent.empty() ? std::string(".") : parent.string());
}

void fsync_folder(const std::string& dir) {
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace ftune
