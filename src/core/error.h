// Error policy: library code throws ftune::Error with a message naming the operation or file;
// only the CLI turns errors into messages and exit codes. FTUNE_CHECK is always on.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace ftune {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// A device allocation that failed even after the allocator released its cache: what was asked,
// what the process holds (in tensors and reserved by the allocator's cache) and what the device
// reported, so the trainer can print one message with the step and what to change.
class OutOfMemoryError : public Error {
 public:
  OutOfMemoryError(const std::string& msg, int device, int64_t requested, int64_t in_use,
                   int64_t reserved, int64_t free, int64_t total)
      : Error(msg),
        device(device),
        requested_bytes(requested),
        in_use_bytes(in_use),
        reserved_bytes(reserved),
        free_bytes(free),
        total_bytes(total) {}
  int device;
  int64_t requested_bytes;  // the failed request (rounded to the allocator's size class)
  int64_t in_use_bytes;     // live in tensors on that device type
  int64_t reserved_bytes;   // held by the caching allocator (in use + cached)
  int64_t free_bytes;       // cudaMemGetInfo after the failure
  int64_t total_bytes;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace ftune

// FTUNE_CHECK(cond, "fmt", args...): throws ftune::Error("fmt" formatted) when cond is false.
#define FTUNE_CHECK(cond, ...)                \
  do {                                        \
    if (!(cond)) ::ftune::fail(__VA_ARGS__);  \
  } while (0)
