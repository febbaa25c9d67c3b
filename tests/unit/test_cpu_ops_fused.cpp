// CPU backend: the ops added for the bf16 engine, the references of their CUDA kernels. cast
// against core/dtype.h; add_rms_norm_forward against add + rms_norm_forward; the accumulate mode
// of rms_norm_backward; qkv_rope_split_forward against split + rope_forward and
// qkv_rope_merge_backward against central finite differences; swiglu_fused_* against swiglu_*
// and finite differences; the dtype contract (the CPU takes F32 only, except cast).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "backend/ops.h"
#include "support/test_support.h"

using namespace ftune;
using ftune::test::compare;
using ftune::test::error_of;
using ftune::test::finite_diff;
using ftune::test::random_tensor;
using ftune::test::weighted_sum;
using ::testing::HasSubstr;

namespace {

TEST(CpuOpsCast, MatchesCoreConversionsBothWays) {
  auto ops = make_cpu_ops();
  std::vector<float> v = random_tensor({64}, 1, 1000.0f).to_vector();
  v[0] = std::numeric_limits<float>::infinity();
  v[1] = 70000.0f;  // f16 overflow
  v[2] = 1e-6f;     // f16 subnormal
  v[3] = -0.0f;
  const Tensor src = Tensor::from_vector(v, {8, 8});
  for (DType dt : {DType::BF16, DType::F16}) {
    Tensor low = Tensor::empty({64}, dt);  // shapes may differ, numel must not
    ops->cast(src, low);
    for (int i = 0; i < 64; ++i) {
      const uint16_t want = dt == DType::BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
      EXPECT_EQ(low.data<uint16_t>()[i], want) << i;
    }
    Tensor back = Tensor::empty({8, 8});
    ops->cast(low, back);
    EXPECT_EQ(back.to_vector(), low.to_dtype(DType::F32).to_vector());
    Tensor other = Tensor::empty({64}, dt == DType::BF16 ? DType::F16 : DType::BF16);
    ops->cast(low, other);  // BF16 <-> F16 through fp32
    EXPECT_EQ(other.to_dtype(DType::F32).to_vector(),
              back.to_dtype(other.dtype()).to_dtype(DType::F32).to_vector());
  }
  Tensor same = Tensor::empty({64});
  ops->cast(src, same);
  EXPECT_EQ(same.to_vector(), v);
  Tensor ints = Tensor::empty({64}, DType::I32), short_dst = Tensor::empty({63}, DType::BF16);
  EXPECT_THAT(error_of([&] { ops->cast(src, ints); }),
              HasSubstr("cast: F32 to I32 is not supported"));
  EXPECT_THAT(error_of([&] { ops->cast(src, short_dst); }),
              HasSubstr("cast: src is [8, 8] but dst is [63]"));
}

TEST(CpuOpsDtypes, CpuTakesF32ActivationsOnly) {
  auto ops = make_cpu_ops();
  Tensor x = Tensor::zeros({4, 8}, DType::BF16), w = Tensor::zeros({8}, DType::BF16);
  Tensor y = Tensor::zeros({4, 8}, DType::BF16), rstd = Tensor::zeros({4});
  EXPECT_THAT(error_of([&] { ops->rms_norm_forward(x, w, 1e-5f, y, rstd); }),
              HasSubstr("rms_norm_forward: x has dtype BF16, the CPU backend computes in F32 only"));
  Tensor a = Tensor::zeros({2, 3}, DType::F16), b = Tensor::zeros({3, 2}, DType::F16);
  Tensor c = Tensor::zeros({2, 2});
  EXPECT_THAT(error_of([&] { ops->gemm(a, false, b, false, c, 1, 0); }),
              HasSubstr("gemm: a has dtype F16, the CPU backend computes in F32 only"));
  Tensor gu = Tensor::zeros({2, 4}, DType::BF16), out = Tensor::zeros({2, 2}, DType::BF16);
  EXPECT_THAT(error_of([&] { ops->swiglu_fused_forward(gu, out); }),
              HasSubstr("swiglu_fused_forward: gu has dtype BF16, the CPU backend computes in F32"));
}

TEST(CpuOpsAddRmsNorm, EqualsAddThenNormAndWorksInPlace) {
  auto ops = make_cpu_ops();
  const int64_t n = 5, h = 12;
  Tensor a = random_tensor({n, h}, 1), b = random_tensor({n, h}, 2), w = random_tensor({h}, 3);
  Tensor sum = Tensor::empty({n, h}), y = Tensor::empty({n, h}), rstd = Tensor::empty({n});
  ops->add_rms_norm_forward(a, b, w, 1e-5f, sum, y, rstd);
  Tensor ref_sum = a.clone();
  ops->axpy(1.0f, b, ref_sum);
  Tensor ref_y = Tensor::empty({n, h}), ref_rstd = Tensor::empty({n});
  ops->rms_norm_forward(ref_sum, w, 1e-5f, ref_y, ref_rstd);
  EXPECT_EQ(sum.to_vector(), ref_sum.to_vector());
  EXPECT_EQ(y.to_vector(), ref_y.to_vector());
  EXPECT_EQ(rstd.to_vector(), ref_rstd.to_vector());
  Tensor inplace = a.clone(), y2 = Tensor::empty({n, h}), r2 = Tensor::empty({n});
  ops->add_rms_norm_forward(inplace, b, w, 1e-5f, inplace, y2, r2);
  EXPECT_EQ(inplace.to_vector(), ref_sum.to_vector());
  EXPECT_EQ(y2.to_vector(), ref_y.to_vector());
  Tensor bad = Tensor::empty({n, h + 1});
  EXPECT_THAT(error_of([&] { ops->add_rms_norm_forward(a, bad, w, 1e-5f, sum, y, rstd); }),
              HasSubstr("add_rms_norm_forward: b is [5, 13], expected [5, 12]"));
}

TEST(CpuOpsRmsNorm, BackwardAccumulateAddsToDx) {
  auto ops = make_cpu_ops();
  const int64_t n = 4, h = 9;
  Tensor x = random_tensor({n, h}, 1), w = random_tensor({h}, 2), dy = random_tensor({n, h}, 3);
  Tensor y = Tensor::empty({n, h}), rstd = Tensor::empty({n});
  ops->rms_norm_forward(x, w, 1e-5f, y, rstd);
  Tensor dx = Tensor::empty({n, h});
  ops->rms_norm_backward(dy, x, w, rstd, dx, nullptr);
  const Tensor base = random_tensor({n, h}, 4);
  Tensor acc = base.clone();
  ops->rms_norm_backward(dy, x, w, rstd, acc, nullptr, true);
  std::vector<float> want = base.to_vector();
  for (size_t i = 0; i < want.size(); ++i) want[i] += dx.to_vector()[i];
  EXPECT_EQ(compare(acc.to_vector(), want, 1e-6f, 1e-7f), "");
}

// qkv [N, (nh + 2 nkv) hd] for N tokens; positions within a 16-row table.
struct QkvCase {
  int64_t n = 5, nh = 4, nkv = 2, hd = 6, p = 16;
  int64_t width() const { return (nh + 2 * nkv) * hd; }
};

TEST(CpuOpsQkvRope, SplitEqualsSliceThenRope) {
  auto ops = make_cpu_ops();
  const QkvCase c;
  Tensor qkv = random_tensor({c.n, c.width()}, 1);
  Tensor cos = random_tensor({c.p, c.hd / 2}, 2), sin = random_tensor({c.p, c.hd / 2}, 3);
  Tensor pos = Tensor::from_ints({3, 0, 15, 7, 7}, {c.n});
  Tensor q = Tensor::empty({c.n, c.nh, c.hd}), k = Tensor::empty({c.n, c.nkv, c.hd});
  Tensor v = Tensor::empty({c.n, c.nkv, c.hd});
  ops->qkv_rope_split_forward(qkv, pos, cos, sin, q, k, v);
  Tensor q_ref = Tensor::empty(q.shape()), k_ref = Tensor::empty(k.shape());
  Tensor v_ref = Tensor::empty(v.shape());
  for (int64_t t = 0; t < c.n; ++t) {
    const float* row = qkv.f32() + t * c.width();
    std::memcpy(q_ref.f32() + t * c.nh * c.hd, row, c.nh * c.hd * 4);
    std::memcpy(k_ref.f32() + t * c.nkv * c.hd, row + c.nh * c.hd, c.nkv * c.hd * 4);
    std::memcpy(v_ref.f32() + t * c.nkv * c.hd, row + (c.nh + c.nkv) * c.hd, c.nkv * c.hd * 4);
  }
  ops->rope_forward(q_ref, pos, cos, sin);
  ops->rope_forward(k_ref, pos, cos, sin);
  EXPECT_EQ(compare(q.to_vector(), q_ref.to_vector(), 1e-6f, 1e-7f), "");
  EXPECT_EQ(compare(k.to_vector(), k_ref.to_vector(), 1e-6f, 1e-7f), "");
  EXPECT_EQ(v.to_vector(), v_ref.to_vector());
  Tensor bad_pos = Tensor::from_ints({3, 0, 16, 7, 7}, {c.n});
  EXPECT_THAT(error_of([&] { ops->qkv_rope_split_forward(qkv, bad_pos, cos, sin, q, k, v); }),
              HasSubstr("qkv_rope_split_forward: positions[2] = 16 is outside the rope table"));
}

TEST(CpuOpsQkvRope, MergeBackwardMatchesFiniteDifferences) {
  auto ops = make_cpu_ops();
  const QkvCase c;
  Tensor qkv = random_tensor({c.n, c.width()}, 4);
  Tensor cos = random_tensor({c.p, c.hd / 2}, 5), sin = random_tensor({c.p, c.hd / 2}, 6);
  Tensor pos = Tensor::from_ints({1, 2, 3, 9, 0}, {c.n});
  Tensor rq = random_tensor({c.n, c.nh, c.hd}, 7), rk = random_tensor({c.n, c.nkv, c.hd}, 8);
  Tensor rv = random_tensor({c.n, c.nkv, c.hd}, 9);
  Tensor q = Tensor::empty(rq.shape()), k = Tensor::empty(rk.shape()), v = Tensor::empty(rv.shape());
  auto loss = [&] {
    ops->qkv_rope_split_forward(qkv, pos, cos, sin, q, k, v);
    return weighted_sum(q, rq) + weighted_sum(k, rk) + weighted_sum(v, rv);
  };
  Tensor dqkv = random_tensor({c.n, c.width()}, 10);  // garbage: written
  ops->qkv_rope_merge_backward(rq, rk, rv, pos, cos, sin, dqkv);
  EXPECT_EQ(compare(dqkv.to_vector(), finite_diff(qkv, loss), 1e-2f, 1e-3f), "");
}

TEST(CpuOpsSwigluFused, EqualsSplitSwigluAndMatchesFiniteDifferences) {
  auto ops = make_cpu_ops();
  const int64_t n = 4, f = 6;
  Tensor gu = random_tensor({n, 2 * f}, 1, 4.0f);
  Tensor g = Tensor::empty({n, f}), u = Tensor::empty({n, f});
  for (int64_t r = 0; r < n; ++r) {
    std::memcpy(g.f32() + r * f, gu.f32() + r * 2 * f, f * 4);
    std::memcpy(u.f32() + r * f, gu.f32() + r * 2 * f + f, f * 4);
  }
  Tensor out = Tensor::empty({n, f}), ref = Tensor::empty({n, f});
  ops->swiglu_fused_forward(gu, out);
  ops->swiglu_forward(g, u, ref);
  EXPECT_EQ(out.to_vector(), ref.to_vector());

  Tensor r = random_tensor({n, f}, 2);
  auto loss = [&] {
    ops->swiglu_fused_forward(gu, out);
    return weighted_sum(out, r);
  };
  Tensor dgu = random_tensor({n, 2 * f}, 3);  // garbage: written
  ops->swiglu_fused_backward(r, gu, dgu);
  EXPECT_EQ(compare(dgu.to_vector(), finite_diff(gu, loss), 1e-2f, 1e-3f), "");
  Tensor dg = Tensor::empty({n, f}), du = Tensor::empty({n, f});
  ops->swiglu_backward(r, g, u, dg, du);
  for (int64_t row = 0; row < n; ++row)
    for (int64_t j = 0; j < f; ++j) {
      EXPECT_EQ(dgu.f32()[row * 2 * f + j], dg.f32()[row * f + j]);
      EXPECT_EQ(dgu.f32()[row * 2 * f + f + j], du.f32()[row * f + j]);
    }
  // In place over gu.
  Tensor inplace = gu.clone();
  ops->swiglu_fused_backward(r, inplace, inplace);
  EXPECT_EQ(inplace.to_vector(), dgu.to_vector());
  Tensor odd = Tensor::empty({n, 5});
  EXPECT_THAT(error_of([&] { ops->swiglu_fused_forward(odd, out); }),
              HasSubstr("swiglu_fused_forward: gu is [4, 5], expected [N, 2F]"));
}

}  // namespace
