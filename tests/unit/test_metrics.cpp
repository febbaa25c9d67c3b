// Metric loggers: CRC32C against published vectors, TensorBoard records against bytes written
// by the real protobuf + tensorboard RecordWriter, the event file read back through an
// independent decoder, metrics.jsonl lines, and the console progress line.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "core/error.h"
#include "io/crc32c.h"
#include "support/test_support.h"
#include "train/metrics_jsonl.h"
#include "train/progress.h"
#include "train/tensorboard_writer.h"

using namespace ftune;
namespace fs = std::filesystem;

namespace {

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

template <typename T>
T get_le(const std::string& s, size_t at) {
  T v;
  std::memcpy(&v, s.data() + at, sizeof(T));
  return v;
}

// A minimal protobuf reader, written from the wire-format spec independently of the writer.
struct Field {
  uint32_t number = 0, wire = 0;
  uint64_t varint = 0;
  std::string bytes;  // fixed32/fixed64 raw bytes, or length-delimited payload
};
std::vector<Field> decode(const std::string& msg) {
  std::vector<Field> out;
  size_t i = 0;
  auto varint = [&]() {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      uint8_t b = static_cast<uint8_t>(msg.at(i++));
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  while (i < msg.size()) {
    uint64_t key = varint();
    Field f;
    f.number = static_cast<uint32_t>(key >> 3);
    f.wire = static_cast<uint32_t>(key & 7);
    if (f.wire == 0) {
      f.varint = varint();
    } else if (f.wire == 1 || f.wire == 5) {
      size_t n = f.wire == 1 ? 8 : 4;
      f.bytes = msg.substr(i, n);
      i += n;
    } else if (f.wire == 2) {
      size_t n = varint();
      f.bytes = msg.substr(i, n);
      i += n;
    } else {
      ADD_FAILURE() << "unexpected wire type " << f.wire;
      break;
    }
    out.push_back(f);
  }
  EXPECT_EQ(i, msg.size());
  return out;
}

struct ScalarEvent {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version, tag;
  float value = 0;
  bool has_value = false;
};

ScalarEvent parse_event(const std::string& data) {
  ScalarEvent ev;
  for (const Field& f : decode(data)) {
    if (f.number == 1 && f.wire == 1) ev.wall_time = get_le<double>(f.bytes, 0);
    if (f.number == 2 && f.wire == 0) ev.step = static_cast<int64_t>(f.varint);
    if (f.number == 3 && f.wire == 2) ev.file_version = f.bytes;
    if (f.number == 5 && f.wire == 2) {
      for (const Field& v : decode(f.bytes)) {
        EXPECT_EQ(v.number, 1u);
        for (const Field& x : decode(v.bytes)) {
          if (x.number == 1 && x.wire == 2) ev.tag = x.bytes;
          if (x.number == 2 && x.wire == 5) {
            ev.value = get_le<float>(x.bytes, 0);
            ev.has_value = true;
          }
        }
      }
    }
  }
  return ev;
}

// Splits a TFRecord stream, checking both masked CRCs of every record.
std::vector<std::string> read_records(const std::string& file) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < file.size()) {
    EXPECT_LE(i + 12, file.size());
    uint64_t len = get_le<uint64_t>(file, i);
    EXPECT_EQ(get_le<uint32_t>(file, i + 8), crc32c_mask(crc32c(file.data() + i, 8)));
    std::string data = file.substr(i + 12, len);
    EXPECT_EQ(get_le<uint32_t>(file, i + 12 + len), crc32c_mask(crc32c(data)));
    out.push_back(data);
    i += 12 + len + 4;
  }
  return out;
}

}  // namespace

TEST(Crc32c, PublishedVectors) {
  // RFC 3720 (iSCSI) appendix B.4 and the common check value.
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  std::string inc(32, 0), dec(32, 0);
  for (int i = 0; i < 32; ++i) {
    inc[i] = static_cast<char>(i);
    dec[i] = static_cast<char>(31 - i);
  }
  EXPECT_EQ(crc32c(inc), 0x46DD794Eu);
  EXPECT_EQ(crc32c(dec), 0x113FDB5Cu);
  EXPECT_EQ(crc32c(""), 0u);
  // Incremental == one shot.
  std::string s = "The quick brown fox jumps over the lazy dog";
  EXPECT_EQ(crc32c_extend(crc32c(s.substr(0, 10)), s.data() + 10, s.size() - 10), crc32c(s));
}

TEST(Crc32c, MaskMatchesTfRecordDefinition) {
  // mask = rotr(c, 15) + 0xa282ead8, computed here by hand for c = 0xE3069283:
  // rotr15 = (0xE3069283 >> 15) | (0xE3069283 << 17) = 0x0001C60D | 0x25060000 = 0x2507C60D
  // (mod 2^32), + 0xA282EAD8 = 0xC78AB0E5.
  EXPECT_EQ(crc32c_mask(0xE3069283u), 0xC78AB0E5u);
  for (uint32_t c : {0u, 1u, 0xFFFFFFFFu, 0x12345678u}) EXPECT_EQ(crc32c_unmask(crc32c_mask(c)), c);
}

// Reference bytes: python3 with tensorboard 2.21 / protobuf 7.36:
//   b = io.BytesIO(); RecordWriter(b).write(Event(...).SerializeToString()); b.getvalue().hex()
// (tensorboard.summary.writer.record_writer.RecordWriter, tensorboard.compat.proto.event_pb2).
TEST(TensorBoard, RecordsMatchProtobufAndRecordWriter) {
  // Event(wall_time=1700000000.25, file_version="brain.Event:2")
  EXPECT_EQ(tfrecord_frame(tb_encode_file_version_event(1700000000.25)),
            from_hex("1800000000000000a37f4b220900001040fc54d9411a0d627261696e2e4576656e743a32"
                     "338d2fe9"));
  // Event(wall_time=1700000000.5, step=7, summary={value={tag="train/loss", simple_value=2.5}})
  EXPECT_EQ(tfrecord_frame(tb_encode_scalar_event(1700000000.5, 7, "train/loss", 2.5f)),
            from_hex("200000000000000029eda9500900002040fc54d94110072a130a110a0a747261696e2f6c"
                     "6f73731500002040f68c67bf"));
  // Negative step: ten-byte varint.
  EXPECT_EQ(tfrecord_frame(tb_encode_scalar_event(1.0, -3, "x", -0.125f)),
            from_hex("200000000000000029eda95009000000000000f03f10fdffffffffffffffff012a0a0a08"
                     "0a017815000000be09ff3499"));
  // Large step, small float.
  EXPECT_EQ(tfrecord_frame(tb_encode_scalar_event(1700000000.5, int64_t{1} << 40, "lr", 2e-4f)),
            from_hex("1d00000000000000602fdf230900002040fc54d941108080808080202a0b0a090a026c72"
                     "1517b75139ffcee37d"));
  // Step 0 is omitted, as proto3 does.
  EXPECT_EQ(tfrecord_frame(tb_encode_scalar_event(12.5, 0, "a", 1.0f)),
            from_hex("1500000000000000d6ab6b2b0900000000000029402a0a0a080a0161150000803f20979cb0"));
}

TEST(TensorBoard, WriterFileReadsBack) {
  std::string dir = test::temp_dir("tb") + "/tensorboard";
  std::string path;
  {
    TensorBoardWriter w(dir);
    path = w.path();
    w.add_scalar("train/loss", 2.5f, 1, 100.0);
    w.add_scalar("train/lr", 2e-4f, 1, 100.0);
    w.add_scalar("train/loss", 1.25f, 2);
    w.flush();
    TensorBoardWriter second(dir);
    EXPECT_NE(second.path(), path);  // the per-process counter keeps names distinct
  }
  std::string name = fs::path(path).filename().string();
  std::smatch m;
  ASSERT_TRUE(std::regex_match(name, m, std::regex(R"(events\.out\.tfevents\.(\d{10})\.(.+)\.(\d+)\.(\d+))")))
      << name;
  EXPECT_EQ(std::stol(m[3].str()), static_cast<long>(getpid()));
  EXPECT_NEAR(std::stod(m[1].str()), static_cast<double>(std::time(nullptr)), 60);

  auto recs = read_records(read_bytes(path));
  ASSERT_EQ(recs.size(), 4u);
  ScalarEvent first = parse_event(recs[0]);
  EXPECT_EQ(first.file_version, "brain.Event:2");
  EXPECT_NEAR(first.wall_time, static_cast<double>(std::time(nullptr)), 60);
  ScalarEvent a = parse_event(recs[1]), b = parse_event(recs[2]), c = parse_event(recs[3]);
  EXPECT_EQ(a.tag, "train/loss");
  EXPECT_EQ(a.value, 2.5f);
  EXPECT_EQ(a.step, 1);
  EXPECT_EQ(a.wall_time, 100.0);
  EXPECT_EQ(b.tag, "train/lr");
  EXPECT_EQ(b.value, 2e-4f);
  EXPECT_EQ(c.tag, "train/loss");
  EXPECT_EQ(c.value, 1.25f);
  EXPECT_EQ(c.step, 2);
  EXPECT_TRUE(c.has_value);
}

TEST(MetricsJsonl, LinesParseWithAllKeys) {
  std::string dir = test::temp_dir("jsonl") + "/out";
  {
    MetricsJsonl m(dir);
    m.log_step({1, 0.25, 2.5, 2e-4, 1.5, 1024, 4096.5, 0.25, {}, {}});
    m.log_eval({1, 0.25, 2.0, 0.5});
    // Flushed per line: visible before the writer closes.
    std::string text = read_bytes(dir + "/metrics.jsonl");
    EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
    m.log_step({2, 0.5, NAN, 1e-4, INFINITY, 7, 1.0, 1.0, {}, {}});
  }
  std::ifstream in(dir + "/metrics.jsonl");
  std::vector<nlohmann::json> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(nlohmann::json::parse(l));
  ASSERT_EQ(lines.size(), 3u);
  const auto& s = lines[0];
  std::vector<std::string> keys;
  for (auto it = s.begin(); it != s.end(); ++it) keys.push_back(it.key());
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, (std::vector<std::string>{"elapsed_s", "epoch", "grad_norm", "loss", "lr",
                                            "step", "tokens", "tokens_per_s"}));
  EXPECT_EQ(s["step"], 1);
  EXPECT_EQ(s["epoch"], 0.25);
  EXPECT_EQ(s["loss"], 2.5);
  EXPECT_EQ(s["lr"], 2e-4);
  EXPECT_EQ(s["grad_norm"], 1.5);
  EXPECT_EQ(s["tokens"], 1024);
  EXPECT_EQ(s["tokens_per_s"], 4096.5);
  EXPECT_EQ(s["elapsed_s"], 0.25);
  const auto& e = lines[1];
  EXPECT_EQ(e.size(), 5u);
  EXPECT_EQ(e["eval_loss"], 2.0);
  EXPECT_NEAR(e["eval_perplexity"].get<double>(), 7.38905609893065, 1e-12);
  EXPECT_EQ(e["step"], 1);
  EXPECT_TRUE(lines[2]["loss"].is_null());
  EXPECT_TRUE(lines[2]["grad_norm"].is_null());
  // Append mode keeps earlier lines (resume).
  // Distributed runs add per-rank memory.
  { MetricsJsonl m(dir, /*append=*/true); m.log_step({3, 0.75, 1.0, 1e-4, 1.0, 7, 1.0, 2.0, {10.5, 20}, {30, 40}}); }
  std::ifstream again(dir + "/metrics.jsonl");
  std::vector<std::string> all;
  for (std::string l; std::getline(again, l);) all.push_back(l);
  ASSERT_EQ(all.size(), 4u);
  const auto last = nlohmann::json::parse(all.back());
  EXPECT_EQ(last["memory_mib"], (std::vector<double>{10.5, 20}));
  EXPECT_EQ(last["peak_memory_mib"], (std::vector<double>{30, 40}));
  EXPECT_FALSE(nlohmann::json::parse(all[0]).contains("memory_mib"));
}

TEST(Progress, LineFormat) {
  ProgressInfo p{12, 100, 2.34561, 2e-4, 1.234, 1234.4, 83};
  EXPECT_EQ(format_progress_line(p, true),
            "step 12/100 [=>                  ] loss 2.3456 lr 2.0e-04 gnorm 1.23 tok/s 1234 "
            "ETA 0:01:23");
  EXPECT_EQ(format_progress_line(p, false),
            "step 12/100 loss 2.3456 lr 2.0e-04 gnorm 1.23 tok/s 1234 ETA 0:01:23");
  EXPECT_EQ(format_bar(0, 10, 10), "[          ]");
  EXPECT_EQ(format_bar(5, 10, 10), "[====>     ]");
  EXPECT_EQ(format_bar(10, 10, 10), "[==========]");
  EXPECT_EQ(format_bar(12, 10, 10), "[==========]");
  EXPECT_EQ(format_duration(3600 * 25 + 61), "25:01:01");
  EXPECT_EQ(format_duration(-1), "?:??:??");
  EXPECT_EQ(estimate_eta(0, 10, 100, 5.0), 45.0);
  EXPECT_EQ(estimate_eta(50, 60, 100, 10.0), 40.0);  // resumed at 50: pace of this run
  EXPECT_EQ(estimate_eta(0, 0, 100, 1.0), -1.0);
  ProgressInfo mem = p;
  mem.memory_mib = 812.4;
  mem.peak_memory_mib = 1024;
  EXPECT_EQ(format_progress_line(mem, false),
            "step 12/100 loss 2.3456 lr 2.0e-04 gnorm 1.23 tok/s 1234 mem 812/1024 MiB ETA 0:01:23");
  ProgressInfo unknown{7, 0, 1.0, 1e-3, 0.5, 10, -1};
  EXPECT_EQ(format_progress_line(unknown, true), "step 7 loss 1.0000 lr 1.0e-03 gnorm 0.50 tok/s 10");
}

TEST(Progress, PrinterModes) {
  auto run = [](const char* mode) {
    FILE* f = std::tmpfile();
    {
      ProgressPrinter pp(mode, 4, 0, f);
      pp.update(1, 2.0, 1e-4, 1.0, 100);
      pp.message("eval loss 1.5");
      pp.update(2, 1.5, 1e-4, 1.0, 100);
    }
    std::fflush(f);
    std::rewind(f);
    std::string s;
    for (int ch; (ch = std::fgetc(f)) != EOF;) s.push_back(static_cast<char>(ch));
    std::fclose(f);
    return s;
  };
  std::string plain = run("plain");
  EXPECT_EQ(std::count(plain.begin(), plain.end(), '\n'), 3);
  EXPECT_EQ(plain.find('\r'), std::string::npos);
  EXPECT_EQ(plain.rfind("step 1/4 loss 2.0000", 0), 0u) << plain;
  EXPECT_NE(plain.find("\neval loss 1.5\nstep 2/4 loss 1.5000"), std::string::npos) << plain;

  std::string bar = run("bar");
  EXPECT_EQ(bar.rfind("\rstep 1/4 [====>               ] loss 2.0000", 0), 0u) << bar;
  // The message replaces the bar line, then the bar is redrawn, then updated in place.
  EXPECT_NE(bar.find("\reval loss 1.5"), std::string::npos) << bar;
  EXPECT_NE(bar.find("\rstep 2/4 [=========>          ] loss 1.5000"), std::string::npos);
  EXPECT_EQ(bar.back(), '\n');                               // finish() ends the line
  EXPECT_EQ(std::count(bar.begin(), bar.end(), '\n'), 2);  // message + finish

  EXPECT_EQ(run("none"), "");
  FILE* f = std::tmpfile();
  EXPECT_EQ(resolve_console_mode("auto", f), ConsoleMode::Plain);  // a file is not a TTY
  std::fclose(f);
  EXPECT_THROW(resolve_console_mode("fancy", stderr), Error);
}
