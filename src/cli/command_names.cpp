// Subcommand names and suggestions (see command_names.h).
#include "cli/command_names.h"

#include <algorithm>
#include <array>
#include <string_view>
#include <cstdint>
#include <vector>

namespace ftune {

namespace {

constexpr std::array<std::string_view, 3> kCommands = {"train", "eval", "doctor"};

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

std::string unknown_command_message(const std::string& cmd) {
  for (std::string_view c : kCommands)
    if (cmd == c) return "";
  std::string_view best;
  size_t best_d = SIZE_MAX;
  for (std::string_view c : kCommands) {
    const size_t d = edit_distance(cmd, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  std::string msg = "unknown command '" + cmd + "'";
  // Close enough to be a typo, or the nearest of three anyway when nothing is close.
  msg += "; did you mean '" + std::string(best) + "'?";
  msg += " (commands: train, eval, doctor)";
  return msg;
}

}  // namespace ftune
