// NF4 quantization and dequantization (core/nf4.h) against bitsandbytes: the fixtures in
// tests/golden/fixtures/nf4/nf4_quant.safetensors were written by bnb's CUDA kernels
// (tests/golden/make_nf4_fixtures.py); every byte and every float must match.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/nf4.h"
#include "io/safetensors.h"
#include "support/test_support.h"

namespace ftune {
namespace {

const SafetensorsFile& fixture() {
  static const SafetensorsFile f =
      SafetensorsFile::open(test::data_path("golden/fixtures/nf4/nf4_quant.safetensors"));
  return f;
}

// A CPU copy (the mapping is read-only and may be unaligned).
Tensor fx(const std::string& name) {
  EXPECT_TRUE(fixture().contains(name)) << name;
  return fixture().tensor(name).clone();
}

// Number of differing bytes and the first one's index (-1 when equal).
std::pair<int64_t, int64_t> byte_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.nbytes(), b.nbytes());
  const auto* pa = static_cast<const uint8_t*>(a.raw());
  const auto* pb = static_cast<const uint8_t*>(b.raw());
  int64_t n = 0, first = -1;
  for (size_t i = 0; i < std::min(a.nbytes(), b.nbytes()); ++i)
    if (pa[i] != pb[i]) {
      if (first < 0) first = static_cast<int64_t>(i);
      ++n;
    }
  return {n, first};
}

#define EXPECT_SAME_BYTES(a, b, what)                                                    \
  do {                                                                                   \
    const auto d_ = byte_diff((a), (b));                                                 \
    EXPECT_EQ(d_.first, 0) << (what) << ": " << d_.first << " bytes differ, first at " \
                           << d_.second;                                                 \
  } while (0)

const char* kCases[] = {"f32_64x128", "bf16_96x200", "f16_3x37", "f32_128x192", "f32_ties"};

TEST(Nf4, TablesAreBitsandbytes) {
  Tensor code = fx("nf4_code");
  for (int i = 0; i < 16; ++i) EXPECT_EQ(code.f32()[i], nf4::kCode[static_cast<size_t>(i)]) << i;
  Tensor dyn = fx("dynamic_map");
  for (int i = 0; i < 256; ++i)
    EXPECT_EQ(dyn.f32()[i], nf4::dynamic_map()[static_cast<size_t>(i)]) << i;
}

TEST(Nf4, ThresholdsAreMidpointsAndTakeTheLowerCodeOnATie) {
  for (int i = 0; i < 15; ++i) {
    const double mid = (static_cast<double>(nf4::kCode[static_cast<size_t>(i)]) +
                        nf4::kCode[static_cast<size_t>(i) + 1]) / 2.0;
    // The threshold is the float nearest the double midpoint, one of its two neighbours.
    float t = std::nextafter(static_cast<float>(mid), -2.0f);
    while (nf4::quantize_scaled(t) == i) t = std::nextafter(t, 2.0f);
    const float below = std::nextafter(t, -2.0f);  // the threshold itself: still code i
    EXPECT_LE(std::fabs(static_cast<double>(below) - mid), 6e-8) << i;
    EXPECT_EQ(nf4::quantize_scaled(below), i) << i;
    EXPECT_EQ(nf4::quantize_scaled(t), i + 1) << i;
  }
  EXPECT_EQ(nf4::quantize_scaled(-1.0f), 0);
  EXPECT_EQ(nf4::quantize_scaled(1.0f), 15);
  EXPECT_EQ(nf4::quantize_scaled(0.0f), 7);
  EXPECT_EQ(nf4::quantize_scaled(std::nanf("")), 0);  // a block of zeros (0 * 1/0) in bnb CUDA
}

TEST(Nf4, DynamicQuantizationIsNearest) {
  const auto& m = nf4::dynamic_map();
  for (int i = 0; i < 256; ++i) EXPECT_EQ(nf4::quantize_dynamic(m, m[static_cast<size_t>(i)]), i) << i;
  // Between two neighbours: the nearer one.
  for (int i = 0; i + 1 < 256; i += 17) {
    const float a = m[static_cast<size_t>(i)], b = m[static_cast<size_t>(i) + 1];
    EXPECT_EQ(nf4::quantize_dynamic(m, a + (b - a) * 0.25f), i) << i;
    EXPECT_EQ(nf4::quantize_dynamic(m, a + (b - a) * 0.75f), i + 1) << i;
  }
}

TEST(Nf4, QuantizeMatchesBitsandbytes) {
  for (const char* c : kCases) {
    SCOPED_TRACE(c);
    const std::string n = c;
    Tensor in = fx(n + ".input");
    Nf4Weight w = quantize_nf4(in, false);
    EXPECT_EQ(w.shape, in.shape());
    EXPECT_FALSE(w.nested());
    EXPECT_SAME_BYTES(w.packed, fx(n + ".packed"), "packed");
    EXPECT_SAME_BYTES(w.absmax, fx(n + ".absmax"), "absmax");
    // bnb dequantizes into the input's dtype (quant_state.dtype); the fixture holds that as F32.
    Tensor out = Tensor::empty({w.numel()}, in.dtype());
    dequantize_nf4_cpu(w, out);
    EXPECT_SAME_BYTES(out, fx(n + ".dequant").to_dtype(in.dtype()), "dequant");
  }
}

TEST(Nf4, DoubleQuantizeMatchesBitsandbytes) {
  for (const char* c : kCases) {
    SCOPED_TRACE(c);
    const std::string n = c;
    Tensor in = fx(n + ".input");
    Nf4Weight w = quantize_nf4(in, true);
    ASSERT_TRUE(w.nested());
    EXPECT_SAME_BYTES(w.packed, fx(n + ".dq.packed"), "packed");
    // bnb's offset is torch's CUDA mean of the scales, whose summation order ftune does not
    // reproduce: the exact mean rounded once is at most an ulp away from it.
    const float bnb_offset = fx(n + ".dq.nested_offset").f32()[0];
    EXPECT_LE(std::fabs(w.nested_offset - bnb_offset),
              std::fabs(std::nextafter(bnb_offset, 2 * bnb_offset) - bnb_offset));
    // Given bnb's offset, every byte and float of the double quantization matches.
    w = quantize_nf4(in, false);
    double_quantize_absmax(w, bnb_offset);
    EXPECT_SAME_BYTES(w.nested_absmax, fx(n + ".dq.nested_absmax"), "nested_absmax");
    EXPECT_SAME_BYTES(w.absmax, fx(n + ".dq.absmax"), "absmax codes");
    Tensor out = Tensor::empty({w.numel()}, in.dtype());
    dequantize_nf4_cpu(w, out);
    EXPECT_SAME_BYTES(out, fx(n + ".dq.dequant").to_dtype(in.dtype()), "dequant");
  }
}

// Dequantization alone, from bnb's own quantized state (independent of our quantizer).
TEST(Nf4, DequantizeBitsandbytesStates) {
  for (const char* c : kCases) {
    SCOPED_TRACE(c);
    const std::string n = c;
    const Shape shape = fixture().info(n + ".input").shape;
    const DType dt = fixture().info(n + ".input").dtype;
    for (bool dq : {false, true}) {
      const std::string p = dq ? n + ".dq" : n;
      Nf4Weight w;
      w.shape = shape;
      w.packed = fx(p + ".packed");
      w.absmax = fx(p + ".absmax");
      w.code = fx("nf4_code");
      if (dq) {
        w.nested_absmax = fx(p + ".nested_absmax");
        w.nested_code = fx("dynamic_map");
        w.nested_offset = fx(p + ".nested_offset").f32()[0];
      }
      Tensor out = Tensor::empty({w.numel()}, dt);
      dequantize_nf4_cpu(w, out);
      EXPECT_SAME_BYTES(out, fx(p + ".dequant").to_dtype(dt), dq ? "double quant" : "single quant");
      if (dt == DType::F32) {  // BF16 output: the fp32 value rounded once
        Tensor bf = Tensor::empty({w.numel()}, DType::BF16);
        dequantize_nf4_cpu(w, bf);
        EXPECT_SAME_BYTES(bf, fx(p + ".dequant").to_dtype(DType::BF16), "bf16");
      }
    }
  }
}

TEST(Nf4, ValidateNamesTheWeight) {
  Nf4Weight w = quantize_nf4(test::random_tensor({4, 64}, 1), true);
  w.validate("ok");
  Nf4Weight bad = w;
  bad.absmax = Tensor::empty({3}, DType::U8);
  EXPECT_NE(test::error_of([&] { bad.validate("layers.0.q_proj"); }).find("layers.0.q_proj: absmax"),
            std::string::npos);
  bad = w;
  bad.blocksize = 48;
  EXPECT_NE(test::error_of([&] { bad.validate("W"); }).find("blocksize 48"), std::string::npos);
  bad = w;
  bad.packed = Tensor::empty({7}, DType::U8);
  EXPECT_NE(test::error_of([&] { bad.validate("W"); }).find("expected U8 with 128 bytes"),
            std::string::npos);
}

}  // namespace
}  // namespace ftune
