// The subcommand names and the "did you mean" for a mistyped one (`ftune frobnicate`).
#pragma once
#include <string>

namespace ftune {

// "" when `cmd` is a known subcommand, else "unknown command 'x'; did you mean 'y'?" (the
// nearest name by edit distance, when it is close) followed by the list of commands.
std::string unknown_command_message(const std::string& cmd);

}  // namespace ftune
