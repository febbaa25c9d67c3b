// safetensors reader/writer and HF checkpoint folders (FORMATS.md §1). Corrupt files are built
// byte by byte here, so each check of the reader is exercised on exactly one defect and the
// message must name the file and that defect.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include "core/error.h"
#include "io/safetensors.h"
#include "support/test_support.h"

using namespace ftune;
namespace fs = std::filesystem;

namespace {

std::string u64_le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// 8-byte length + header + data; `declared_len` overrides the length field.
std::string st_bytes(const std::string& header, const std::string& data,
                     std::optional<uint64_t> declared_len = std::nullopt) {
  return u64_le(declared_len.value_or(header.size())) + header + data;
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::temp_dir("safetensors"); }
  void TearDown() override { fs::remove_all(dir_); }

  std::string file(const std::string& name) const { return dir_ + "/" + name; }

  // Writes `bytes` as <name>.safetensors, opens it, and returns the error message (test fails
  // when open succeeds). Every message must name the file.
  std::string open_error(const std::string& name, const std::string& bytes) {
    const std::string path = file(name + ".safetensors");
    write_file(path, bytes);
    try {
      SafetensorsFile::open(path);
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << "message does not name the file: " << msg;
      return msg;
    }
    ADD_FAILURE() << name << ": open succeeded on a corrupt file";
    return "";
  }

  std::string dir_;
};

#define EXPECT_HAS(msg, part) \
  EXPECT_NE((msg).find(part), std::string::npos) << "expected \"" << (part) << "\" in: " << (msg)

// Two F32 tensors "a" [2] at [0,8) and "b" [1] at [8,12): the base the defects are made from.
const std::string kGoodData(12, '\x01');

}  // namespace

// ---------------------------------------------------------------------------------------------
// Valid files

TEST_F(SafetensorsTest, SmallestValidFileFromSpec) {
  // FORMATS.md §1: 08 00 00 00 00 00 00 00 7B 7D 20 20 20 20 20 20
  const std::string bytes("\x08\0\0\0\0\0\0\0{}      ", 16);
  write_file(file("min.safetensors"), bytes);
  SafetensorsFile f = SafetensorsFile::open(file("min.safetensors"));
  EXPECT_TRUE(f.names().empty());
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_EQ(f.data_start(), 16u);
  EXPECT_EQ(f.file_size(), 16u);
  EXPECT_EQ(f.path(), file("min.safetensors"));
}

TEST_F(SafetensorsTest, HandBuiltFileAnyEntryOrderZeroDimAndEmpty) {
  // Entries listed in an order unrelated to their data order; "z" is 0-d, "e" is empty and
  // sits at the same offset as another tensor's start (allowed).
  const std::string header =
      R"({"w":{"dtype":"I32","shape":[2],"data_offsets":[4,12]},)"
      R"("__metadata__":{"format":"pt","note":"x"},)"
      R"("e":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]},)"
      R"("z":{"dtype":"F32","shape":[],"data_offsets":[0,4]},)"
      R"("h":{"dtype":"BF16","shape":[1,1],"data_offsets":[12,14]}})";
  std::string data;
  const float zval = 2.5f;
  const int32_t ws[2] = {-7, 123456};
  const uint16_t hval = 0x3fc0;  // bf16 1.5
  data.append(reinterpret_cast<const char*>(&zval), 4);
  data.append(reinterpret_cast<const char*>(ws), 8);
  data.append(reinterpret_cast<const char*>(&hval), 2);
  write_file(file("hand.safetensors"), st_bytes(header, data));

  SafetensorsFile f = SafetensorsFile::open(file("hand.safetensors"));
  EXPECT_EQ(f.names(), (std::vector<std::string>{"e", "h", "w", "z"}));
  EXPECT_TRUE(f.contains("w"));
  EXPECT_FALSE(f.contains("__metadata__"));
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"note", "x"}}));

  const TensorInfo& wi = f.info("w");
  EXPECT_EQ(wi.name, "w");
  EXPECT_EQ(wi.dtype, DType::I32);
  EXPECT_EQ(wi.shape, (Shape{2}));
  EXPECT_EQ(wi.begin, 4u);
  EXPECT_EQ(wi.end, 12u);

  Tensor z = f.tensor("z");
  EXPECT_EQ(z.ndim(), 0);
  EXPECT_EQ(z.numel(), 1);
  EXPECT_EQ(z.f32()[0], 2.5f);
  Tensor w = f.tensor("w");
  EXPECT_EQ(w.i32()[0], -7);
  EXPECT_EQ(w.i32()[1], 123456);
  Tensor e = f.tensor("e");
  EXPECT_EQ(e.shape(), (Shape{0, 3}));
  EXPECT_EQ(e.numel(), 0);
  Tensor h = f.tensor("h");
  EXPECT_EQ(h.dtype(), DType::BF16);
  EXPECT_EQ(bf16_to_f32(h.data<uint16_t>()[0]), 1.5f);
  // Borrowed: points into the mapping at data_start + begin, when that address suits the dtype;
  // else (this header leaves the data unaligned) an aligned copy, so typed reads are defined.
  if ((8 + header.size()) % 4 == 0) {
    EXPECT_EQ(static_cast<const char*>(w.raw()) - static_cast<const char*>(z.raw()), 4);
  } else {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(z.raw()) % 4, 0u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(w.raw()) % 4, 0u);
  }

  try {
    f.tensor("nope");
    ADD_FAILURE() << "no error for a missing tensor";
  } catch (const Error& err) {
    EXPECT_HAS(std::string(err.what()), "no tensor named 'nope'");
  }
}

TEST_F(SafetensorsTest, TensorsOutliveTheFileObject) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const float vals[2] = {3.0f, -4.0f};
  write_file(file("keep.safetensors"),
             st_bytes(header, std::string(reinterpret_cast<const char*>(vals), 8)));
  Tensor t;
  {
    SafetensorsFile f = SafetensorsFile::open(file("keep.safetensors"));
    t = f.tensor("a");
  }
  fs::remove(file("keep.safetensors"));  // the mapping still holds the pages
  EXPECT_EQ(t.to_vector(), (std::vector<float>{3.0f, -4.0f}));
}

// ---------------------------------------------------------------------------------------------
// Writer

TEST_F(SafetensorsTest, RoundTripAllDtypesZeroDimAndEmpty) {
  Tensor f32 = test::random_tensor({3, 5}, 1);
  Tensor bf16 = test::random_tensor({4, 2}, 2).to_dtype(DType::BF16);
  Tensor f16 = test::random_tensor({7}, 3).to_dtype(DType::F16);
  Tensor i32 = Tensor::from_ints({1, -2, 2147483647, -2147483647 - 1, 0, 42}, {2, 3});
  Tensor u8 = Tensor::empty({5}, DType::U8);
  for (int i = 0; i < 5; ++i) u8.data<uint8_t>()[i] = static_cast<uint8_t>(250 + i);
  Tensor scalar = Tensor::from_vector({6.25f}, {});
  Tensor empty = Tensor::empty({0, 4}, DType::BF16);

  // Deliberately not in name order: data must follow the given order.
  const std::vector<std::pair<std::string, Tensor>> ts = {
      {"z.f32", f32}, {"b.bf16", bf16}, {"y.f16", f16}, {"a.i32", i32},
      {"u8", u8},     {"scalar", scalar}, {"empty", empty}};
  const std::string path = file("rt.safetensors");
  write_safetensors(path, ts, {{"format", "pt"}, {"step", "12"}});
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  // Independent look at the bytes: header length, space padding, 8-aligned data start.
  const std::string bytes = read_file(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ((8 + n) % 8, 0u);
  const std::string header = bytes.substr(8, n);
  const size_t close = header.find_last_of('}');
  EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos) << header;
  EXPECT_LT(n - (close + 1), 8u);
  const auto hj = nlohmann::json::parse(header);
  EXPECT_EQ(hj["__metadata__"], (nlohmann::json{{"format", "pt"}, {"step", "12"}}));
  EXPECT_EQ(hj["z.f32"]["data_offsets"], (nlohmann::json{0, 60}));
  EXPECT_EQ(hj["b.bf16"]["data_offsets"], (nlohmann::json{60, 76}));
  EXPECT_EQ(hj["scalar"]["shape"], nlohmann::json::array());
  EXPECT_EQ(bytes.size(), 8 + n + 60 + 16 + 14 + 24 + 5 + 4 + 0);

  SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"a.i32", "b.bf16", "empty", "scalar", "u8",
                                                 "y.f16", "z.f32"}));
  EXPECT_EQ(f.metadata().at("step"), "12");
  uint64_t expect_begin = 0;
  for (const auto& [name, t] : ts) {
    SCOPED_TRACE(name);
    const TensorInfo& info = f.info(name);
    EXPECT_EQ(info.dtype, t.dtype());
    EXPECT_EQ(info.shape, t.shape());
    EXPECT_EQ(info.begin, expect_begin);
    expect_begin += t.nbytes();
    Tensor r = f.tensor(name);
    ASSERT_EQ(r.nbytes(), t.nbytes());
    EXPECT_EQ(std::memcmp(r.raw(), t.raw(), t.nbytes()), 0);
  }
  EXPECT_EQ(f.tensor("scalar").f32()[0], 6.25f);
  EXPECT_EQ(f.tensor("a.i32").i32()[3], -2147483647 - 1);
}

TEST_F(SafetensorsTest, WriterReplacesAnExistingFileAndOmitsEmptyMetadata) {
  const std::string path = file("over.safetensors");
  write_safetensors(path, {{"a", Tensor::from_vector({1, 2, 3}, {3})}});
  write_safetensors(path, {{"b", Tensor::from_vector({9}, {1})}}, {});
  SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"b"}));
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_EQ(read_file(path).find("__metadata__"), std::string::npos);
  EXPECT_EQ(f.tensor("b").to_vector(), (std::vector<float>{9}));
}

TEST_F(SafetensorsTest, WriterRejectsBadInput) {
  const std::string path = file("bad_write.safetensors");
  auto msg_of = [&](const std::vector<std::pair<std::string, Tensor>>& ts) -> std::string {
    try {
      write_safetensors(path, ts);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  Tensor t = Tensor::from_vector({1}, {1});
  std::string m = msg_of({{"x", t}, {"y", t}, {"x", t}});
  EXPECT_HAS(m, "duplicate tensor name 'x'");
  EXPECT_HAS(m, path);
  EXPECT_HAS(msg_of({{"__metadata__", t}}), "invalid tensor name");
  EXPECT_HAS(msg_of({{"u", Tensor()}}), "'u' is undefined");
  uint8_t packed[4] = {};
  Tensor nf4 = Tensor::borrow(packed, {8}, DType::NF4, nullptr);
  EXPECT_HAS(msg_of({{"q", nf4}}), "'q' is NF4");
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

// ---------------------------------------------------------------------------------------------
// Corrupt files: one defect each

TEST_F(SafetensorsTest, RejectsFileShorterThan8Bytes) {
  EXPECT_HAS(open_error("short", std::string("\x02\0\0\0\0", 5)), "5 bytes, shorter than");
  EXPECT_HAS(open_error("zero", ""), "0 bytes, shorter than");
}

TEST_F(SafetensorsTest, RejectsHugeHeaderLength) {
  const std::string m = open_error("huge", st_bytes("{}      ", "", 100'000'001));
  EXPECT_HAS(m, "header length 100000001 exceeds the limit of 100000000");
}

TEST_F(SafetensorsTest, RejectsHeaderPastEndOfFile) {
  const std::string m = open_error("past", st_bytes("{}      ", "", 64));
  EXPECT_HAS(m, "header length 64 runs past the end of the file (16 bytes");
}

TEST_F(SafetensorsTest, RejectsInvalidJsonAndNonObjectHeader) {
  std::string m = open_error("badjson", st_bytes(R"({"a": {"dtype": )", ""));
  EXPECT_HAS(m, "safetensors header: invalid JSON");
  EXPECT_HAS(m, "line 1, column 17");
  m = open_error("badutf8", st_bytes("{\"a\xff\": 1}", ""));
  EXPECT_HAS(m, "invalid JSON");
  EXPECT_HAS(m, "UTF-8");
  m = open_error("array", st_bytes("[]      ", ""));
  EXPECT_HAS(m, "safetensors header is not a JSON object (got array)");
}

TEST_F(SafetensorsTest, RejectsBadEntries) {
  EXPECT_HAS(open_error("notobj", st_bytes(R"({"a":[1,2]})", "")),
             "tensor 'a': header entry is not an object");
  EXPECT_HAS(open_error("nodtype", st_bytes(R"({"a":{"shape":[1],"data_offsets":[0,4]}})",
                                            std::string(4, '\0'))),
             "tensor 'a': header entry lacks 'dtype'");
  EXPECT_HAS(open_error("noshape", st_bytes(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})",
                                            std::string(4, '\0'))),
             "tensor 'a': header entry lacks 'shape'");
  EXPECT_HAS(open_error("nooffs", st_bytes(R"({"a":{"dtype":"F32","shape":[1]}})", "")),
             "tensor 'a': header entry lacks 'data_offsets'");
  EXPECT_HAS(open_error("dtype", st_bytes(R"({"a":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,1]}})",
                                          std::string(1, '\0'))),
             "tensor 'a': unknown dtype 'Q4_K'");
  EXPECT_HAS(open_error("dtypenum", st_bytes(R"({"a":{"dtype":7,"shape":[1],"data_offsets":[0,1]}})",
                                             std::string(1, '\0'))),
             "dtype must be a string");
}

TEST_F(SafetensorsTest, RejectsBadShapes) {
  EXPECT_HAS(open_error("neg", st_bytes(R"({"a":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,0]}})", "")),
             "tensor 'a': shape [2,-1] has a dimension that is not a non-negative integer");
  EXPECT_HAS(open_error("frac", st_bytes(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})",
                                         std::string(4, '\0'))),
             "shape [1.5] has a dimension that is not a non-negative integer");
  EXPECT_HAS(open_error("str", st_bytes(R"({"a":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})",
                                        std::string(8, '\0'))),
             "tensor 'a': shape must be an array");
  EXPECT_HAS(open_error("ovf", st_bytes(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", "")),
             "too large");
}

TEST_F(SafetensorsTest, RejectsBadDataOffsets) {
  const std::string d4(4, '\0');
  EXPECT_HAS(open_error("one", st_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4]}})", d4)),
             "tensor 'a': data_offsets must be two ascending non-negative integers");
  EXPECT_HAS(open_error("desc", st_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", d4)),
             "data_offsets must be two ascending");
  EXPECT_HAS(open_error("negoff", st_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", d4)),
             "data_offsets must be two ascending");
  EXPECT_HAS(open_error("fracoff", st_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4.0]}})", d4)),
             "data_offsets must be two ascending");
}

TEST_F(SafetensorsTest, RejectsByteCountMismatch) {
  // F32 [2,2] needs 16 bytes, the offsets give 12.
  const std::string m = open_error(
      "count", st_bytes(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})",
                        std::string(12, '\0')));
  EXPECT_HAS(m, "tensor 'a'");
  EXPECT_HAS(m, "F32 [2, 2]: expected 16 bytes, found 12");
}

TEST_F(SafetensorsTest, RejectsOverlapNamingBothTensors) {
  const std::string m = open_error(
      "overlap", st_bytes(R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},)"
                          R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                          kGoodData));
  EXPECT_HAS(m, "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
}

TEST_F(SafetensorsTest, RejectsGapNamingTheRange) {
  std::string m = open_error(
      "gap", st_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                      kGoodData));
  EXPECT_HAS(m, "gap in the data buffer: bytes [4, 8) before tensor 'b'");
  // A buffer that does not start at 0.
  m = open_error("gap0", st_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                  std::string(8, '\0')));
  EXPECT_HAS(m, "bytes [0, 4) before tensor 'a'");
}

TEST_F(SafetensorsTest, RejectsTruncatedData) {
  const std::string m = open_error(
      "trunc", st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                        std::string(10, '\0')));
  EXPECT_HAS(m, "tensor 'b' ends at data byte 12 but the data buffer holds only 10 bytes");
  EXPECT_HAS(m, "runs past the end of file");
}

TEST_F(SafetensorsTest, RejectsTrailingBytes) {
  const std::string m = open_error(
      "trail", st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                        std::string(11, '\0')));
  EXPECT_HAS(m, "3 trailing bytes after the last tensor");
}

TEST_F(SafetensorsTest, RejectsBadMetadata) {
  EXPECT_HAS(open_error("metanum", st_bytes(R"({"__metadata__":{"format":"pt","n":3}})", "")),
             "__metadata__ must map strings to strings; 'n' is number 3");
  EXPECT_HAS(open_error("metaarr", st_bytes(R"({"__metadata__":["pt"]})", "")),
             "__metadata__ must be an object of strings");
}

TEST_F(SafetensorsTest, NullMetadataReadsAsNone) {
  write_file(file("nullmeta.safetensors"), st_bytes(R"({"__metadata__":null})", ""));
  EXPECT_TRUE(SafetensorsFile::open(file("nullmeta.safetensors")).metadata().empty());
}

TEST_F(SafetensorsTest, RejectsDuplicateNames) {
  const std::string m = open_error(
      "dup", st_bytes(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                      R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                      std::string(2, '\0')));
  EXPECT_HAS(m, "names 'a' twice");
}

TEST_F(SafetensorsTest, MissingFileNamesIt) {
  try {
    SafetensorsFile::open(file("absent.safetensors"));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_HAS(std::string(e.what()), file("absent.safetensors"));
    EXPECT_HAS(std::string(e.what()), "No such file");
  }
}

// ---------------------------------------------------------------------------------------------
// HF model folders

TEST_F(SafetensorsTest, ShardedCheckpointWithIndex) {
  Tensor emb = test::random_tensor({4, 3}, 10);
  Tensor q = test::random_tensor({3, 3}, 11).to_dtype(DType::BF16);
  Tensor norm = test::random_tensor({3}, 12);
  write_safetensors(file("model-00001-of-00002.safetensors"),
                    {{"model.embed_tokens.weight", emb}, {"model.layers.0.q.weight", q}});
  write_safetensors(file("model-00002-of-00002.safetensors"), {{"model.norm.weight", norm}});
  nlohmann::json index = {
      {"metadata", {{"total_size", 48 + 18 + 12}}},
      {"weight_map",
       {{"model.embed_tokens.weight", "model-00001-of-00002.safetensors"},
        {"model.layers.0.q.weight", "model-00001-of-00002.safetensors"},
        {"model.norm.weight", "model-00002-of-00002.safetensors"}}}};
  write_file(file("model.safetensors.index.json"), index.dump(2));

  CheckpointReader r = CheckpointReader::open_folder(dir_);
  EXPECT_EQ(r.names(), (std::vector<std::string>{"model.embed_tokens.weight",
                                                 "model.layers.0.q.weight", "model.norm.weight"}));
  EXPECT_EQ(r.files().size(), 2u);
  EXPECT_EQ(r.file_of("model.norm.weight"), dir_ + "/model-00002-of-00002.safetensors");
  EXPECT_EQ(r.file_of("model.layers.0.q.weight"), dir_ + "/model-00001-of-00002.safetensors");
  EXPECT_TRUE(r.contains("model.norm.weight"));
  EXPECT_FALSE(r.contains("lm_head.weight"));
  EXPECT_EQ(r.info("model.layers.0.q.weight").dtype, DType::BF16);
  EXPECT_EQ(r.tensor("model.norm.weight").to_vector(), norm.to_vector());
  EXPECT_EQ(r.tensor("model.embed_tokens.weight").to_vector(), emb.to_vector());
  Tensor qr = r.tensor("model.layers.0.q.weight");
  EXPECT_EQ(std::memcmp(qr.raw(), q.raw(), q.nbytes()), 0);
  try {
    r.tensor("lm_head.weight");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_HAS(std::string(e.what()), "no tensor named 'lm_head.weight'");
    EXPECT_HAS(std::string(e.what()), dir_);
  }

  // The index naming a tensor its shard lacks.
  index["weight_map"]["lm_head.weight"] = "model-00002-of-00002.safetensors";
  write_file(file("model.safetensors.index.json"), index.dump());
  try {
    CheckpointReader::open_folder(dir_);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_HAS(std::string(e.what()), "model.safetensors.index.json: weight_map puts "
                                      "'lm_head.weight' in");
  }

  // A missing shard.
  index["weight_map"].erase("lm_head.weight");
  index["weight_map"]["model.norm.weight"] = "model-00003-of-00003.safetensors";
  write_file(file("model.safetensors.index.json"), index.dump());
  try {
    CheckpointReader::open_folder(dir_);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_HAS(std::string(e.what()), "model-00003-of-00003.safetensors (holding "
                                      "'model.norm.weight') is missing");
  }

  // An index without weight_map.
  write_file(file("model.safetensors.index.json"), R"({"metadata": {}})");
  try {
    CheckpointReader::open_folder(dir_);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_HAS(std::string(e.what()), "model.safetensors.index.json: expected an object with a "
                                      "'weight_map' object");
  }
}

TEST_F(SafetensorsTest, FolderWithBothPrefersTheSingleFileLikeTransformers) {
  write_safetensors(file("model.safetensors"), {{"w", Tensor::from_vector({1, 2}, {2})}});
  write_safetensors(file("model-00001-of-00001.safetensors"),
                    {{"v", Tensor::from_vector({3}, {1})}});
  write_file(file("model.safetensors.index.json"),
             R"({"weight_map": {"v": "model-00001-of-00001.safetensors"}})");
  CheckpointReader r = CheckpointReader::open_folder(dir_);
  EXPECT_EQ(r.names(), (std::vector<std::string>{"w"}));
  EXPECT_EQ(r.files().size(), 1u);
}

TEST_F(SafetensorsTest, SingleFileFolderAndEmptyFolder) {
  try {
    CheckpointReader::open_folder(dir_);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "no model.safetensors or model.safetensors.index.json in " + dir_);
  }
  Tensor w = test::random_tensor({2, 2}, 5);
  write_safetensors(file("model.safetensors"), {{"lm_head.weight", w}});
  CheckpointReader r = CheckpointReader::open_folder(dir_);
  EXPECT_EQ(r.names(), (std::vector<std::string>{"lm_head.weight"}));
  EXPECT_EQ(r.file_of("lm_head.weight"), (fs::path(dir_) / "model.safetensors").string());
  EXPECT_EQ(r.tensor("lm_head.weight").to_vector(), w.to_vector());
}
