// JSON reading with file-naming, position-naming errors (see json_file.h).
#include "io/json_file.h"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "io/json_limits.h"

namespace ftune {

namespace {
// nlohmann quotes the last bytes it read in its message; those may be invalid UTF-8 (that may
// be the very error), so bytes outside ASCII are escaped to keep the message printable.
std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c >= 0x80) {
      out += fmt::format("\\x{:02X}", static_cast<unsigned>(c));
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}
}  // namespace

std::string read_text_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open {}: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("cannot read {}: not a regular file", path);
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      fail("error reading {}: {}", path, n == 0 ? "file shrank while reading" : std::strerror(err));
    }
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  return out;
}

nlohmann::json parse_json_text(std::string_view text, const std::string& origin,
                               const nlohmann::json::parser_callback_t& callback) {
  check_json_nesting(text, origin);
  try {
    return nlohmann::json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true);
  } catch (const nlohmann::json::parse_error& e) {
    // e.what(): "[json.exception.parse_error.101] parse error at line 1, column 5: ..."
    std::string_view what = e.what();
    const size_t p = what.find("] ");
    if (p != std::string_view::npos) what.remove_prefix(p + 2);
    fail("{}: invalid JSON: {}", origin, printable(what));
  } catch (const nlohmann::json::exception& e) {  // out_of_range: a number too large for a double
    std::string_view what = e.what();
    const size_t p = what.find("] ");
    if (p != std::string_view::npos) what.remove_prefix(p + 2);
    fail("{}: invalid JSON: {}", origin, printable(what));
  }
}

nlohmann::json read_json_file(const std::string& path) {
  return parse_json_text(read_text_file(path), path);
}

std::string json_value_brief(const nlohmann::json& v) {
  if (v.is_null()) return "null";
  std::string dumped = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (dumped.size() > 60) dumped = dumped.substr(0, 57) + "...";
  return fmt::format("{} {}", v.type_name(), dumped);
}

}  // namespace ftune
