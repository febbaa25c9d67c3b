// Shared by the libFuzzer targets: an input is either accepted or refused with ftune::Error;
// anything else (a crash, a sanitizer report, another exception escaping) is a bug.
#pragma once
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>
#include <string_view>

#include <unistd.h>

#include "core/error.h"

namespace ftune::fuzz {

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Targets whose API reads a file get the input through this per-process file.
inline std::string write_temp(std::string_view bytes, const char* name) {
  const std::string path = "/tmp/ftune-fuzz-" + std::to_string(::getpid()) + "-" + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(),
                                                               static_cast<std::streamsize>(bytes.size()));
  return path;
}

// Runs f; an ftune::Error is the expected refusal of a bad input.
template <typename F>
void expect_accept_or_refuse(F&& f) {
  try {
    f();
  } catch (const Error&) {
  }
}

}  // namespace ftune::fuzz
