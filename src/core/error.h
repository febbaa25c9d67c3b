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
