// Dropping what a crashed run logged after its last checkpoint (see resume_logs.h).
#include "train/resume_logs.h"

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/data_files.h"
#include "io/crc32c.h"
#include "io/json_file.h"

namespace ftune {

namespace fs = std::filesystem;

namespace {

bool read_varint(std::string_view s, size_t* pos, uint64_t* v) {
  *v = 0;
  for (int shift = 0; shift < 64 && *pos < s.size(); shift += 7) {
    const auto b = static_cast<uint8_t>(s[(*pos)++]);
    *v |= static_cast<uint64_t>(b & 0x7F) << shift;
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

// The step of an encoded tensorflow.Event (field 2, varint); 0 when absent (proto3 default).
// False when the bytes are not a well-formed message.
bool event_step(std::string_view ev, int64_t* step) {
  *step = 0;
  size_t pos = 0;
  while (pos < ev.size()) {
    uint64_t key = 0, v = 0;
    if (!read_varint(ev, &pos, &key)) return false;
    switch (key & 7) {
      case 0:
        if (!read_varint(ev, &pos, &v)) return false;
        if ((key >> 3) == 2) *step = static_cast<int64_t>(v);
        break;
      case 1: pos += 8; break;
      case 5: pos += 4; break;
      case 2:
        if (!read_varint(ev, &pos, &v) || v > ev.size() - std::min(pos, ev.size())) return false;
        pos += v;
        break;
      default: return false;
    }
    if (pos > ev.size()) return false;
  }
  return true;
}

uint32_t le32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

}  // namespace

int64_t truncate_metrics_jsonl(const std::string& path, int64_t last_step) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return 0;
  const std::string text = read_text_file(path);
  std::string kept;
  int64_t dropped = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    const bool complete = end != std::string::npos;
    if (!complete) end = text.size();
    const std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line.begin(), line.end(), nullptr, false);
    const bool keep = complete && j.is_object() && j.contains("step") &&
                      j["step"].is_number_integer() && j["step"].get<int64_t>() <= last_step;
    if (keep) {
      kept.append(line);
      kept.push_back('\n');
    } else {
      ++dropped;
    }
  }
  if (dropped > 0) write_file_atomic(path, kept);
  return dropped;
}

int64_t truncate_tensorboard_events(const std::string& log_dir, int64_t last_step) {
  std::error_code ec;
  if (!fs::is_directory(log_dir, ec)) return 0;
  int64_t dropped_total = 0;
  for (const auto& e : fs::directory_iterator(log_dir)) {
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) != 0) continue;
    const std::string bytes = read_text_file(e.path().string());
    std::string kept;
    int64_t dropped = 0;
    size_t pos = 0;
    while (pos < bytes.size()) {
      // u64 length | u32 masked crc(length) | data | u32 masked crc(data)
      if (bytes.size() - pos < 12) break;
      uint64_t len;
      std::memcpy(&len, bytes.data() + pos, 8);
      if (crc32c_unmask(le32(bytes.data() + pos + 8)) != crc32c(bytes.data() + pos, 8)) break;
      if (len > bytes.size() - pos - 12 || bytes.size() - pos - 12 - len < 4) break;
      const std::string_view data(bytes.data() + pos + 12, len);
      if (crc32c_unmask(le32(bytes.data() + pos + 12 + len)) != crc32c(data)) break;
      const size_t rec_len = 16 + len;
      int64_t step = 0;
      if (event_step(data, &step) && step <= last_step) {
        kept.append(bytes, pos, rec_len);
      } else {
        ++dropped;
      }
      pos += rec_len;
    }
    if (pos < bytes.size()) ++dropped;  // a damaged or cut-short tail
    if (dropped > 0) write_file_atomic(e.path().string(), kept);
    dropped_total += dropped;
  }
  return dropped_total;
}

int remove_stale_checkpoint_temps(const std::string& output_dir) {
  const fs::path root = fs::path(output_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return 0;
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(root))
    if (e.path().filename().string().rfind(".tmp-step-", 0) == 0) stale.push_back(e.path());
  for (const auto& p : stale) fs::remove_all(p);
  return static_cast<int>(stale.size());
}

}  // namespace ftune
