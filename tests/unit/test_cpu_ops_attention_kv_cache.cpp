// CPU backend: attention of new queries against one sequence's KV cache (the decode path of
// generation) equals the training attention over the whole sequence at those rows, for every
// split of the sequence into cached and new tokens, with GQA; cache rows past the last token
// are never read; bad shapes are refused naming the op.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "backend/ops.h"
#include "support/test_support.h"

using namespace ftune;
using ftune::test::compare;
using ftune::test::random_tensor;
using ::testing::HasSubstr;

namespace {

constexpr int64_t kN = 9, kNh = 6, kNkv = 2, kHd = 8;

// Rows [begin, end) of a [N, heads, hd] tensor as a copy.
std::vector<float> rows_of(const Tensor& t, int64_t begin, int64_t end) {
  const std::vector<float> all = t.to_vector();
  const int64_t w = t.dim(1) * t.dim(2);
  return std::vector<float>(all.begin() + begin * w, all.begin() + end * w);
}

TEST(CpuOpsAttentionKvCache, EqualsFullCausalAttentionForEverySplit) {
  auto ops = make_cpu_ops();
  const float scale = 1.0f / std::sqrt(static_cast<float>(kHd));
  Tensor q = random_tensor({kN, kNh, kHd}, 11, 2.0f);
  Tensor k = random_tensor({kN, kNkv, kHd}, 12, 2.0f);
  Tensor v = random_tensor({kN, kNkv, kHd}, 13);
  Tensor ds = Tensor::from_ints(std::vector<int32_t>(kN, 0), {kN});
  Tensor o_full = Tensor::empty({kN, kNh, kHd}), lse = Tensor::empty({kN, kNh});
  ops->attention_forward(q, k, v, ds, scale, o_full, lse);

  // A cache with 3 spare rows full of NaN: they must not be read.
  const int64_t cap = kN + 3;
  Tensor kc = Tensor::empty({cap, kNkv, kHd}), vc = Tensor::empty({cap, kNkv, kHd});
  kc.fill_(std::numeric_limits<float>::quiet_NaN());
  vc.fill_(std::numeric_limits<float>::quiet_NaN());
  kc.slice_rows(0, kN).copy_from(k);
  vc.slice_rows(0, kN).copy_from(v);
  for (int64_t past : {0, 1, 4, 8}) {
    const int64_t t = kN - past;
    Tensor qt = Tensor::empty({t, kNh, kHd});
    qt.copy_from(q.slice_rows(past, kN));
    Tensor o = Tensor::empty({t, kNh, kHd});
    ops->attention_kv_cache(qt, kc, vc, past, scale, o);
    EXPECT_EQ(compare(o.to_vector(), rows_of(o_full, past, kN), 1e-6f, 1e-7f), "")
        << "past = " << past;
  }
}

TEST(CpuOpsAttentionKvCache, OneQueryIsASoftmaxOverTheCachedValues) {
  // Decoding with two cached rows and one kv head: o = sum_j softmax(s)_j v_j, by hand.
  auto ops = make_cpu_ops();
  Tensor q = Tensor::from_vector({1, 0, 0, 1}, {1, 2, 2});  // two query heads share kv head 0
  Tensor kc = Tensor::from_vector({1, 0, 0, 1, 2, 2, 9, 9}, {4, 1, 2});  // rows 3.. unused
  Tensor vc = Tensor::from_vector({1, 2, 3, 4, 5, 6, 7, 8}, {4, 1, 2});
  Tensor o = Tensor::empty({1, 2, 2});
  ops->attention_kv_cache(q, kc, vc, 2, 1.0f, o);
  // head 0: scores (1, 0, 2); head 1: scores (0, 1, 2).
  for (int h = 0; h < 2; ++h) {
    const double s[3] = {h == 0 ? 1.0 : 0.0, h == 0 ? 0.0 : 1.0, 2.0};
    double z = 0, o0 = 0, o1 = 0;
    for (int j = 0; j < 3; ++j) {
      const double p = std::exp(s[j]);
      z += p;
      o0 += p * (1 + 2 * j);
      o1 += p * (2 + 2 * j);
    }
    EXPECT_NEAR(o.f32()[h * 2 + 0], o0 / z, 1e-6);
    EXPECT_NEAR(o.f32()[h * 2 + 1], o1 / z, 1e-6);
  }
}

TEST(CpuOpsAttentionKvCache, RefusesACacheTooSmallAndMismatchedHeads) {
  auto ops = make_cpu_ops();
  Tensor q = random_tensor({3, 4, 8}, 1);
  Tensor kc = random_tensor({4, 2, 8}, 2), vc = random_tensor({4, 2, 8}, 3);
  Tensor o = Tensor::empty({3, 4, 8});
  try {
    ops->attention_kv_cache(q, kc, vc, 2, 1.0f, o);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("attention_kv_cache: 2 cached + 3 new tokens do not fit the cache of 4 rows"));
  }
  Tensor kc3 = random_tensor({8, 3, 8}, 2), vc3 = random_tensor({8, 3, 8}, 3);
  try {
    ops->attention_kv_cache(q, kc3, vc3, 0, 1.0f, o);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("not a multiple of 3 kv heads"));
  }
}

}  // namespace
