// Whole-file reads and atomic writes for the data layer (datasets, tokenizer_config.json,
// token cache). Errors name the file.
#pragma once
#include <string>

namespace ftune {

// All bytes of `path`; throws ftune::Error "cannot read <path>: <reason>".
std::string read_file_bytes(const std::string& path);

// Writes `bytes` to `path` through a temporary file in the same directory and rename(2), so a
// reader sees either the old file, or the complete new one, never a partial write (several
// worker processes may read a cache another one is writing).
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace ftune
