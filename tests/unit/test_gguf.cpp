// ggml block types (io/ggml_quants.h), the GGUF writer (io/gguf_writer.h) and the export's
// type rules and q/k permutation (model/gguf_export.h). Blocks are built byte by byte here from
// the layouts ggml-common.h defines, so the decoder is checked against the format, not against
// the encoder; the encoders are then checked by round trips with stated error bounds.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "core/dtype.h"
#include "io/ggml_quants.h"
#include "io/gguf_writer.h"
#include "model/gguf_export.h"
#include "support/test_support.h"

using namespace ftune;

namespace {

std::vector<float> gaussian(size_t n, uint32_t seed, float std = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, std);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

std::vector<float> round_trip(GgmlType t, const std::vector<float>& x) {
  std::vector<uint8_t> buf(ggml_bytes(t, static_cast<int64_t>(x.size())));
  ggml_encode(t, x.data(), static_cast<int64_t>(x.size()), buf.data());
  std::vector<float> y(x.size());
  ggml_decode(t, buf.data(), static_cast<int64_t>(x.size()), y.data());
  return y;
}

void put_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

}  // namespace

TEST(GgmlQuants, BlockSizesAreGgmls) {
  EXPECT_EQ(ggml_bytes(GgmlType::Q8_0, 64), 68u);
  EXPECT_EQ(ggml_bytes(GgmlType::Q5_0, 32), 22u);
  EXPECT_EQ(ggml_bytes(GgmlType::Q4_K, 512), 288u);
  EXPECT_EQ(ggml_bytes(GgmlType::Q6_K, 256), 210u);
  EXPECT_EQ(ggml_bytes(GgmlType::BF16, 3), 6u);
  EXPECT_NE(test::error_of([] { ggml_bytes(GgmlType::Q4_K, 128); }).find("not a whole number of 256-element blocks"),
            std::string::npos);
}

TEST(GgmlQuants, HandBuiltBlocksDecodeByTheFormat) {
  // Q8_0: d = 0.5, q = -16..15 -> x = d*q.
  {
    uint8_t b[34];
    put_f16(b, 0.5f);
    for (int j = 0; j < 32; ++j) b[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(j - 16));
    float y[32];
    ggml_decode(GgmlType::Q8_0, b, 32, y);
    for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], 0.5f * (j - 16));
  }
  // Q5_0: element j < 16 is the low nibble of qs[j] plus bit j of qh as bit 4; element j + 16
  // the high nibble plus bit j + 16. x = d * (q - 16).
  {
    uint8_t b[22] = {};
    put_f16(b, 0.25f);
    uint32_t qh = 0;
    int q[32];
    for (int j = 0; j < 32; ++j) q[j] = (j * 7 + 3) % 32;
    for (int j = 0; j < 16; ++j) {
      b[6 + j] = static_cast<uint8_t>((q[j] & 15) | ((q[j + 16] & 15) << 4));
      qh |= static_cast<uint32_t>(q[j] >> 4) << j;
      qh |= static_cast<uint32_t>(q[j + 16] >> 4) << (j + 16);
    }
    std::memcpy(b + 2, &qh, 4);
    float y[32];
    ggml_decode(GgmlType::Q5_0, b, 32, y);
    for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], 0.25f * (q[j] - 16)) << j;
  }
  // Q4_K: sub-block j (32 elements) has a 6-bit scale sc_j and min m_j: bytes 0-3 low 6 bits of
  // sc_0..3, bytes 4-7 of m_0..3; sub-blocks 4-7 keep their low 4 bits in bytes 8-11 (scale low
  // nibble, min high nibble) and their top 2 bits in the top bits of bytes 0-3 (scale) and 4-7
  // (min). x = d*sc_j*q - dmin*m_j; q: 64 elements per 32 bytes, low nibbles first.
  {
    uint8_t b[144] = {};
    put_f16(b, 0.5f);
    put_f16(b + 2, 0.25f);
    const int sc[8] = {1, 2, 3, 63, 17, 40, 5, 60}, mn[8] = {0, 7, 63, 9, 33, 2, 48, 21};
    uint8_t* s = b + 4;
    for (int j = 0; j < 4; ++j) {
      s[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
      s[j + 4] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
      s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
    int q[256];
    for (int i = 0; i < 256; ++i) q[i] = (i * 5 + i / 7) % 16;
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) b[16 + 32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
    std::vector<float> y(256);
    ggml_decode(GgmlType::Q4_K, b, 256, y.data());
    for (int i = 0; i < 256; ++i)
      EXPECT_EQ(y[i], 0.5f * sc[i / 32] * q[i] - 0.25f * mn[i / 32]) << i;
  }
  // Q6_K: 16 sub-blocks of 16 with int8 scales; q = 6 bits - 32. Per half of 128 elements:
  // ql[l] holds the low nibbles of elements l (low) and l + 64 (high), ql[l + 32] those of l + 32
  // and l + 96; qh[l] the top 2 bits of l, l + 32, l + 64, l + 96 (bits 0-1, 2-3, 4-5, 6-7).
  {
    uint8_t b[210] = {};
    int8_t sc[16];
    for (int j = 0; j < 16; ++j) sc[j] = static_cast<int8_t>(j * 9 - 70);
    std::memcpy(b + 192, sc, 16);
    put_f16(b + 208, 0.125f);
    int q[256];
    for (int i = 0; i < 256; ++i) q[i] = (i * 11 + 5) % 64;
    for (int h = 0; h < 2; ++h) {
      uint8_t* ql = b + 64 * h;
      uint8_t* qh = b + 128 + 32 * h;
      const int* qq = q + 128 * h;
      for (int l = 0; l < 32; ++l) {
        ql[l] = static_cast<uint8_t>((qq[l] & 15) | ((qq[l + 64] & 15) << 4));
        ql[l + 32] = static_cast<uint8_t>((qq[l + 32] & 15) | ((qq[l + 96] & 15) << 4));
        qh[l] = static_cast<uint8_t>((qq[l] >> 4) | ((qq[l + 32] >> 4) << 2) | ((qq[l + 64] >> 4) << 4) |
                                     ((qq[l + 96] >> 4) << 6));
      }
    }
    std::vector<float> y(256);
    ggml_decode(GgmlType::Q6_K, b, 256, y.data());
    for (int i = 0; i < 256; ++i) EXPECT_EQ(y[i], 0.125f * sc[i / 16] * (q[i] - 32)) << i;
  }
}

TEST(GgmlQuants, EncodersRoundTripWithinTheirBounds) {
  const std::vector<float> x = gaussian(256 * 64, 11, 0.05f);
  // Q8_0: every element within half a step (amax/254) plus the fp16 rounding of the scale.
  const std::vector<float> y8 = round_trip(GgmlType::Q8_0, x);
  for (size_t b = 0; b < x.size(); b += 32) {
    float amax = 0;
    for (size_t j = b; j < b + 32; ++j) amax = std::max(amax, std::abs(x[j]));
    for (size_t j = b; j < b + 32; ++j)
      ASSERT_LE(std::abs(y8[j] - x[j]), amax / 254 + amax * 1e-3f) << j;
  }
  // Gaussian data, relative L2: 4-bit K-quant ~0.07, 5-bit ~0.04, 6-bit ~0.02.
  EXPECT_LT(rel_l2(round_trip(GgmlType::Q4_K, x), x), 0.09);
  EXPECT_LT(rel_l2(round_trip(GgmlType::Q5_0, x), x), 0.06);
  EXPECT_LT(rel_l2(round_trip(GgmlType::Q6_K, x), x), 0.025);
  // Q4_K keeps a sub-block of one value with an offset exactly representable: all equal.
  std::vector<float> c(256, -0.75f);
  for (float v : round_trip(GgmlType::Q4_K, c)) EXPECT_NEAR(v, -0.75f, 0.75f / 63);
  // All-zero blocks decode to zeros in every type.
  const std::vector<float> z(256, 0.0f);
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q5_0, GgmlType::Q4_K, GgmlType::Q6_K})
    for (float v : round_trip(t, z)) EXPECT_EQ(v, 0.0f) << ggml_traits(t).name;
  // F16/BF16 round to nearest even.
  EXPECT_EQ(round_trip(GgmlType::BF16, {1.00390625f})[0], 1.0f);  // tie -> even
  EXPECT_EQ(round_trip(GgmlType::F16, {65504.0f})[0], 65504.0f);
}

TEST(GgufWriter, HeaderLayoutAndAlignment) {
  const std::string path = test::temp_dir("gguf_writer") + "/t.gguf";
  GgufWriter w(path);
  w.add("general.architecture", std::string("llama"));
  w.add("llama.block_count", uint32_t{2});
  w.add("x.f", 0.5f);
  w.add("x.list", std::vector<int32_t>{1, -2});
  w.add_tensor({"a", {3, 32}, GgmlType::Q8_0});  // 3 rows of one block
  w.add_tensor({"b", {5}, GgmlType::F32});
  w.write_header();
  std::vector<uint8_t> qa(3 * 34, 7);
  w.write_tensor(qa.data(), qa.size());
  const float bv[5] = {1, 2, 3, 4, 5};
  EXPECT_NE(test::error_of([&] { w.write_tensor(reinterpret_cast<const uint8_t*>(bv), 16); })
                .find("tensor 'b' has 16 bytes, expected 20"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(path));  // nothing at the path before commit
  w.write_tensor(reinterpret_cast<const uint8_t*>(bv), 20);
  w.commit();

  std::ifstream f(path, std::ios::binary);
  const std::string s((std::istreambuf_iterator<char>(f)), {});
  size_t p = 0;
  auto u32 = [&] { uint32_t v; std::memcpy(&v, s.data() + p, 4); p += 4; return v; };
  auto u64 = [&] { uint64_t v; std::memcpy(&v, s.data() + p, 8); p += 8; return v; };
  auto str = [&] { const uint64_t n = u64(); std::string r = s.substr(p, n); p += n; return r; };
  EXPECT_EQ(s.substr(0, 4), "GGUF");
  p = 4;
  EXPECT_EQ(u32(), 3u);   // version
  EXPECT_EQ(u64(), 2u);   // tensors
  EXPECT_EQ(u64(), 4u);   // key-values
  EXPECT_EQ(str(), "general.architecture");
  EXPECT_EQ(u32(), 8u);   // STRING
  EXPECT_EQ(str(), "llama");
  EXPECT_EQ(str(), "llama.block_count");
  EXPECT_EQ(u32(), 4u);   // UINT32
  EXPECT_EQ(u32(), 2u);
  EXPECT_EQ(str(), "x.f");
  EXPECT_EQ(u32(), 6u);   // FLOAT32
  float fv;
  std::memcpy(&fv, s.data() + p, 4);
  p += 4;
  EXPECT_EQ(fv, 0.5f);
  EXPECT_EQ(str(), "x.list");
  EXPECT_EQ(u32(), 9u);   // ARRAY
  EXPECT_EQ(u32(), 5u);   // of INT32
  EXPECT_EQ(u64(), 2u);
  EXPECT_EQ(static_cast<int32_t>(u32()), 1);
  EXPECT_EQ(static_cast<int32_t>(u32()), -2);
  EXPECT_EQ(str(), "a");
  EXPECT_EQ(u32(), 2u);   // dims
  EXPECT_EQ(u64(), 32u);  // ne[0]: the row
  EXPECT_EQ(u64(), 3u);
  EXPECT_EQ(u32(), 8u);   // Q8_0
  EXPECT_EQ(u64(), 0u);   // offset
  EXPECT_EQ(str(), "b");
  EXPECT_EQ(u32(), 1u);
  EXPECT_EQ(u64(), 5u);
  EXPECT_EQ(u32(), 0u);   // F32
  EXPECT_EQ(u64(), 128u); // 102 bytes of "a" rounded up to 32
  const size_t data = (p + 31) / 32 * 32;
  EXPECT_EQ(static_cast<uint8_t>(s[data]), 7);
  float b0;
  std::memcpy(&b0, s.data() + data + 128, 4);
  EXPECT_EQ(b0, 1.0f);
  EXPECT_EQ(s.size(), data + 128 + 32);  // the last tensor padded too
}

TEST(GgufExport, QkPermutationInterleavesEachHeadsHalves) {
  // 2 heads of 4 rows, 3 columns: value = 10*row + col.
  std::vector<float> w(8 * 3);
  for (int r = 0; r < 8; ++r)
    for (int c = 0; c < 3; ++c) w[r * 3 + c] = static_cast<float>(10 * r + c);
  permute_qk_rows(w.data(), 8, 3, 2);
  const int order[8] = {0, 2, 1, 3, 4, 6, 5, 7};  // head rows [i, i + d/2] become neighbours
  for (int r = 0; r < 8; ++r)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(w[r * 3 + c], 10.0f * order[r] + c) << r;
}

TEST(GgufExport, Q4KMTypeRulesFollowLlamaCpp) {
  // 32 layers: attn_v and ffn_down get Q6_K where use_more_bits picks (llama.cpp's mixture).
  const std::set<int> more = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31};
  const auto Q = GgufFileType::Q4_K_M;
  for (int l = 0; l < 32; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    const GgmlType want = more.count(l) ? GgmlType::Q6_K : GgmlType::Q4_K;
    EXPECT_EQ(gguf_tensor_type(Q, b + "attn_v.weight", {1024, 4096}, l, 32, true), want) << l;
    EXPECT_EQ(gguf_tensor_type(Q, b + "ffn_down.weight", {4096, 14336}, l, 32, true), want) << l;
    EXPECT_EQ(gguf_tensor_type(Q, b + "attn_q.weight", {4096, 4096}, l, 32, true), GgmlType::Q4_K);
    EXPECT_EQ(gguf_tensor_type(Q, b + "attn_norm.weight", {4096}, l, 32, true), GgmlType::F32);
  }
  EXPECT_EQ(gguf_tensor_type(Q, "output.weight", {128256, 4096}, -1, 32, true), GgmlType::Q6_K);
  EXPECT_EQ(gguf_tensor_type(Q, "token_embd.weight", {128256, 4096}, -1, 32, true), GgmlType::Q4_K);
  EXPECT_EQ(gguf_tensor_type(Q, "token_embd.weight", {128256, 2048}, -1, 16, false), GgmlType::Q6_K);
  // Rows that do not split into 256: Q4_K -> Q5_0, Q6_K -> Q8_0, then F16 below 32.
  EXPECT_EQ(gguf_tensor_type(Q, "blk.0.attn_q.weight", {128, 128}, 0, 2, true), GgmlType::Q5_0);
  EXPECT_EQ(gguf_tensor_type(Q, "output.weight", {1024, 128}, -1, 2, true), GgmlType::Q8_0);
  EXPECT_EQ(gguf_tensor_type(Q, "blk.1.ffn_down.weight", {128, 352}, 1, 2, true), GgmlType::Q8_0);
  EXPECT_EQ(gguf_tensor_type(Q, "blk.0.attn_q.weight", {8, 40}, 0, 2, true), GgmlType::F16);
  EXPECT_EQ(gguf_tensor_type(GgufFileType::Q8_0, "blk.0.attn_q.weight", {8, 40}, 0, 2, true), GgmlType::F16);
  EXPECT_EQ(gguf_tensor_type(GgufFileType::BF16, "output.weight", {8, 40}, -1, 2, true), GgmlType::BF16);
  EXPECT_EQ(gguf_file_type_number(Q), 15u);
  EXPECT_NE(test::error_of([] { parse_gguf_file_type("q3_k"); }).find("unknown GGUF type 'q3_k'"),
            std::string::npos);
}
