// Running the ftune binary from end-to-end tests: one helper for every test file.
#pragma once
#include <string>

namespace ftune::test {

struct CliRun {
  int code = -1;       // exit status (-1 when the process did not exit normally)
  std::string out;     // stdout
  std::string err;     // stderr
  double seconds = 0;  // wall time of the run
};

// Runs `ftune <args>` through the shell in `cwd`, feeding `input` on stdin when it is not empty.
// stderr goes to a file private to this call (outside cwd, removed afterwards): ctest runs the
// tests of one file in parallel processes that may share a working folder.
CliRun run_ftune(const std::string& args, const std::string& cwd, const std::string& input = "");

// The last non-empty line of s (the one error line of a refused run).
std::string last_line(const std::string& s);

}  // namespace ftune::test
