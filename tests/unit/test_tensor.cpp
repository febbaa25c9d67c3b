#include <gtest/gtest.h>

#include <cmath>

#include "core/dtype.h"
#include "core/tensor.h"

using namespace ftune;

TEST(DType, Bf16RoundTripAndRounding) {
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(-3.5f)), -3.5f);
  // 1 + 2^-8 is halfway between two bf16 values: rounds to even (1.0).
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

TEST(DType, F16RoundTrip) {
  for (float v : {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 0.333251953125f}) {
    EXPECT_EQ(f16_to_f32(f32_to_f16(v)), v) << v;
  }
  EXPECT_TRUE(std::isinf(f16_to_f32(f32_to_f16(1e6f))));
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
}

TEST(DType, NamesRoundTrip) {
  DType d;
  ASSERT_TRUE(dtype_from_name("BF16", &d));
  EXPECT_EQ(d, DType::BF16);
  EXPECT_EQ(dtype_size(d), 2u);
  EXPECT_FALSE(dtype_from_name("F17", &d));
}

TEST(Tensor, ViewsShareStorageAndCloneCopies) {
  Tensor t = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {3, 2});
  Tensor rows = t.slice_rows(1, 3);
  EXPECT_EQ(rows.shape(), (Shape{2, 2}));
  EXPECT_EQ(rows.f32()[0], 3.0f);
  rows.f32()[0] = 30.0f;
  EXPECT_EQ(t.f32()[2], 30.0f);
  Tensor c = t.clone();
  c.f32()[0] = -1;
  EXPECT_EQ(t.f32()[0], 1.0f);
  EXPECT_THROW(t.view({4, 2}), Error);
  EXPECT_EQ(t.view({6}).dim(-1), 6);
}

TEST(Tensor, AccountingTracksLiveBytes) {
  const auto before = memory_stats(DeviceType::CPU).live_bytes;
  {
    Tensor t = Tensor::zeros({256, 256});
    EXPECT_EQ(memory_stats(DeviceType::CPU).live_bytes - before, 256 * 256 * 4);
  }
  EXPECT_EQ(memory_stats(DeviceType::CPU).live_bytes, before);
}

TEST(Tensor, DTypeConversion) {
  Tensor t = Tensor::from_vector({1.5f, -2.0f, 0.1f}, {3});
  Tensor b = t.to_dtype(DType::BF16);
  EXPECT_EQ(b.nbytes(), 6u);
  auto back = b.to_vector();
  EXPECT_EQ(back[0], 1.5f);
  EXPECT_NEAR(back[2], 0.1f, 1e-3);
}
