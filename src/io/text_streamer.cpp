#include "io/text_streamer.h"

namespace ftune {

namespace {

bool ends_with_replacement(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}

std::vector<int32_t> sub(const std::vector<int32_t>& v, size_t b, size_t e) {
  return std::vector<int32_t>(v.begin() + static_cast<std::ptrdiff_t>(b),
                              v.begin() + static_cast<std::ptrdiff_t>(e));
}

}  // namespace

std::string TextStreamer::put(int32_t id) {
  ids_.push_back(id);
  const std::string before = tok_.decode(sub(ids_, prefix_, read_), skip_special_);
  const std::string now = tok_.decode(sub(ids_, prefix_, ids_.size()), skip_special_);
  if (now.size() <= before.size() || ends_with_replacement(now) ||
      now.compare(0, before.size(), before) != 0)
    return "";
  prefix_ = read_;
  read_ = ids_.size();
  return now.substr(before.size());
}

std::string TextStreamer::finish() {
  const std::string before = tok_.decode(sub(ids_, prefix_, read_), skip_special_);
  const std::string now = tok_.decode(sub(ids_, prefix_, ids_.size()), skip_special_);
  reset();
  if (now.size() <= before.size() || now.compare(0, before.size(), before) != 0) return "";
  return now.substr(before.size());
}

void TextStreamer::reset() {
  ids_.clear();
  prefix_ = read_ = 0;
}

}  // namespace ftune
