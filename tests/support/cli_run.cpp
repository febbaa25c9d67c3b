#include "support/cli_run.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

namespace ftune::test {

namespace {
std::string private_file(const char* what) {
  static std::atomic<int> counter{0};
  return (std::filesystem::temp_directory_path() /
          fmt::format("ftune_cli_{}_{}_{}.txt", what, static_cast<int>(getpid()), counter++))
      .string();
}
}  // namespace

CliRun run_ftune(const std::string& args, const std::string& cwd, const std::string& input) {
  const std::string err_file = private_file("stderr");
  std::string in_file;
  std::string cmd = "cd '" + cwd + "' && ";
  if (!input.empty()) {
    in_file = private_file("stdin");
    std::ofstream(in_file) << input;
    cmd += "cat '" + in_file + "' | ";
  }
  cmd += "'" + std::string(FTUNE_BINARY_DIR) + "/ftune' " + args + " 2>'" + err_file + "'";
  CliRun r;
  const auto t0 = std::chrono::steady_clock::now();
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) {
    r.err = "popen failed: " + cmd;
    return r;
  }
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  {
    std::ifstream e(err_file);
    r.err.assign(std::istreambuf_iterator<char>(e), {});
  }
  std::error_code ec;
  std::filesystem::remove(err_file, ec);
  if (!in_file.empty()) std::filesystem::remove(in_file, ec);
  return r;
}

std::string last_line(const std::string& s) {
  std::string t = s;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  const auto pos = t.rfind('\n');
  return pos == std::string::npos ? t : t.substr(pos + 1);
}

}  // namespace ftune::test
