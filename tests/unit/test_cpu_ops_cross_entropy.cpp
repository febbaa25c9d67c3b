// CPU backend: chunked lm_head + cross-entropy. Loss against a naive full-logits double
// computation, independence from the chunk size, ignored targets (-100), dx against central
// finite differences, and argument errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>

#include "backend/ops.h"
#include "support/test_support.h"

using namespace ftune;
using ftune::test::compare;
using ftune::test::finite_diff;
using ftune::test::random_tensor;
using ftune::test::weighted_sum;
using ftune::test::error_of;
using ::testing::HasSubstr;

namespace {

constexpr int64_t kN = 7, kH = 5, kV = 11;
const std::vector<int32_t> kTargets = {3, -100, 0, 10, -100, 7, 3};

// The op adds its loss to a device F64 scalar; the count comes from the targets (as callers do).
struct CeResult {
  double loss_sum = 0.0;
  int64_t count = 0;
};
CeResult ce(Ops& ops, const Tensor& x, const Tensor& w, const Tensor& t, float grad_scale,
            Tensor* dx, Tensor* logits, int64_t chunk) {
  Tensor loss = Tensor::zeros({1}, DType::F64);
  ops.lm_head_cross_entropy(x, w, t, grad_scale, loss, dx, logits, chunk);
  CeResult r{loss.data<double>()[0], 0};
  for (int64_t i = 0; i < t.numel(); ++i) r.count += t.i32()[i] != -100;
  return r;
}

// Full [N, V] logits in double and sum over counted rows of logsumexp - logit[target].
double naive_loss(const Tensor& x, const Tensor& w, const std::vector<int32_t>& targets,
                  std::vector<float>* logits_out) {
  const int64_t n = x.dim(0), h = x.dim(1), v = w.dim(0);
  double total = 0;
  for (int64_t r = 0; r < n; ++r) {
    std::vector<double> l(v);
    for (int64_t c = 0; c < v; ++c) {
      double s = 0;
      for (int64_t j = 0; j < h; ++j)
        s += static_cast<double>(x.f32()[r * h + j]) * w.f32()[c * h + j];
      l[c] = s;
      if (logits_out) logits_out->push_back(static_cast<float>(s));
    }
    if (targets[r] == -100) continue;
    double z = 0;
    for (double s : l) z += std::exp(s);
    total += std::log(z) - l[targets[r]];
  }
  return total;
}

TEST(CpuOpsCrossEntropy, LossAndLogitsMatchNaiveFullComputation) {
  auto ops = make_cpu_ops();
  Tensor x = random_tensor({kN, kH}, 1, 2.0f), w = random_tensor({kV, kH}, 2, 2.0f);
  Tensor t = Tensor::from_ints(kTargets, {kN});
  Tensor logits = Tensor::empty({kN, kV});
  const CeResult res = ce(*ops, x, w, t, 1.0f, nullptr, &logits, 3);
  std::vector<float> want_logits;
  const double want = naive_loss(x, w, kTargets, &want_logits);
  EXPECT_EQ(res.count, 5);
  EXPECT_NEAR(res.loss_sum, want, 1e-5 * std::fabs(want));
  EXPECT_EQ(compare(logits.to_vector(), want_logits, 1e-5f, 1e-6f), "");
}

TEST(CpuOpsCrossEntropy, LossSumAccumulates) {
  auto ops = make_cpu_ops();
  Tensor x = random_tensor({kN, kH}, 1, 2.0f), w = random_tensor({kV, kH}, 2, 2.0f);
  Tensor t = Tensor::from_ints(kTargets, {kN});
  const double once = ce(*ops, x, w, t, 1.0f, nullptr, nullptr, 3).loss_sum;
  Tensor loss = Tensor::from_vector({0.0f, 0.0f}, {2}).view({1, 2});  // not F64 [1]
  EXPECT_THAT(error_of([&] { ops->lm_head_cross_entropy(x, w, t, 1.0f, loss, nullptr, nullptr, 3); }),
              HasSubstr("lm_head_cross_entropy: loss_sum has dtype F32, expected F64"));
  Tensor acc = Tensor::zeros({1}, DType::F64);
  acc.data<double>()[0] = 1.5;
  ops->lm_head_cross_entropy(x, w, t, 1.0f, acc, nullptr, nullptr, 2);
  ops->lm_head_cross_entropy(x, w, t, 1.0f, acc, nullptr, nullptr, 5);
  EXPECT_NEAR(acc.data<double>()[0], 1.5 + 2 * once, 1e-9 * std::fabs(once));
}

TEST(CpuOpsCrossEntropy, ChunkSizeDoesNotChangeResults) {
  auto ops = make_cpu_ops();
  Tensor x = random_tensor({kN, kH}, 3), w = random_tensor({kV, kH}, 4);
  Tensor t = Tensor::from_ints(kTargets, {kN});
  std::vector<CeResult> res;
  std::vector<std::vector<float>> dxs;
  for (int64_t chunk : {int64_t{1}, int64_t{3}, kN, int64_t{100}}) {
    Tensor dx = random_tensor({kN, kH}, 5);  // garbage: dx is written
    res.push_back(ce(*ops, x, w, t, 0.5f, &dx, nullptr, chunk));
    dxs.push_back(dx.to_vector());
  }
  for (size_t i = 1; i < res.size(); ++i) {
    EXPECT_EQ(res[i].count, res[0].count);
    EXPECT_NEAR(res[i].loss_sum, res[0].loss_sum, 1e-6 * std::fabs(res[0].loss_sum));
    EXPECT_EQ(compare(dxs[i], dxs[0], 1e-6f, 1e-9f), "") << "chunk variant " << i;
  }
}

TEST(CpuOpsCrossEntropy, IgnoredTargetsContributeNothing) {
  auto ops = make_cpu_ops();
  Tensor x = random_tensor({kN, kH}, 6), w = random_tensor({kV, kH}, 7);
  Tensor t = Tensor::from_ints(kTargets, {kN});
  Tensor dx = Tensor::empty({kN, kH});
  const CeResult a = ce(*ops, x, w, t, 1.0f, &dx, nullptr, 2);
  // Rows 1 and 4 are ignored: zero gradient, and changing them leaves the loss unchanged.
  for (int64_t r : {1, 4})
    for (int64_t j = 0; j < kH; ++j) EXPECT_EQ(dx.f32()[r * kH + j], 0.0f);
  for (int64_t j = 0; j < kH; ++j) {
    x.f32()[1 * kH + j] += 3.0f;
    x.f32()[4 * kH + j] -= 2.0f;
  }
  const CeResult b = ce(*ops, x, w, t, 1.0f, nullptr, nullptr, 2);
  EXPECT_EQ(a.loss_sum, b.loss_sum);
  EXPECT_EQ(b.count, 5);

  // All targets ignored: nothing counted, dx all zero (written over garbage).
  Tensor none = Tensor::from_ints(std::vector<int32_t>(kN, -100), {kN});
  Tensor dx2 = random_tensor({kN, kH}, 8);
  const CeResult c = ce(*ops, x, w, none, 1.0f, &dx2, nullptr, 3);
  EXPECT_EQ(c.count, 0);
  EXPECT_EQ(c.loss_sum, 0.0);
  for (float v : dx2.to_vector()) EXPECT_EQ(v, 0.0f);
}

TEST(CpuOpsCrossEntropy, DxMatchesFiniteDifferences) {
  auto ops = make_cpu_ops();
  Tensor x = random_tensor({kN, kH}, 9), w = random_tensor({kV, kH}, 10);
  Tensor t = Tensor::from_ints(kTargets, {kN});
  const float grad_scale = 0.2f;  // e.g. 1 / global token count
  Tensor dx = Tensor::empty({kN, kH});
  ce(*ops, x, w, t, grad_scale, &dx, nullptr, 3);
  auto loss = [&] {
    return grad_scale * ce(*ops, x, w, t, 1.0f, nullptr, nullptr, 3).loss_sum;
  };
  EXPECT_EQ(compare(dx.to_vector(), finite_diff(x, loss), 1e-2f, 1e-4f), "");
}

TEST(CpuOpsCrossEntropy, DeterministicAcrossThreadCounts) {
  auto ops = make_cpu_ops();
  const int64_t n = 64, h = 32, v = 3000;
  Tensor x = random_tensor({n, h}, 11), w = random_tensor({v, h}, 12);
  std::vector<int32_t> tg(n);
  for (int64_t i = 0; i < n; ++i) tg[i] = i % 5 == 0 ? -100 : static_cast<int32_t>((i * 37) % v);
  Tensor t = Tensor::from_ints(tg, {n});
  auto run = [&](int threads) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    Tensor dx = Tensor::empty({n, h});
    const double loss = ce(*ops, x, w, t, 1.0f, &dx, nullptr, 16).loss_sum;
    omp_set_num_threads(saved);
    std::vector<float> all = dx.to_vector();
    all.push_back(static_cast<float>(loss));
    return all;
  };
  // Bit-identical run to run. Across thread counts the OpenMP-flavoured OpenBLAS may split the
  // logits GEMM differently, so there the results agree to rounding only.
  EXPECT_EQ(run(3), run(3));
  EXPECT_EQ(compare(run(1), run(3), 1e-5f, 1e-7f), "");
}

TEST(CpuOpsCrossEntropy, BadArgumentsThrow) {
  auto ops = make_cpu_ops();
  Tensor x = random_tensor({kN, kH}, 13), w = random_tensor({kV, kH}, 14);
  for (int32_t bad : {static_cast<int32_t>(kV), -1, -101}) {
    std::vector<int32_t> tg = kTargets;
    tg[2] = bad;
    Tensor t = Tensor::from_ints(tg, {kN});
    EXPECT_THAT(error_of([&] { ce(*ops, x, w, t, 1.0f, nullptr, nullptr, 4); }),
                HasSubstr(fmt::format("lm_head_cross_entropy: targets[2] = {}", bad)));
  }
  Tensor t = Tensor::from_ints(kTargets, {kN});
  Tensor w_bad = Tensor::zeros({kV, kH + 1});
  EXPECT_THAT(error_of([&] { ce(*ops, x, w_bad, t, 1.0f, nullptr, nullptr, 4); }),
              HasSubstr("lm_head_cross_entropy: x is [7, 5] but w is [11, 6]"));
  EXPECT_THAT(error_of([&] { ce(*ops, x, w, t, 1.0f, nullptr, nullptr, 0); }),
              HasSubstr("lm_head_cross_entropy: chunk_tokens = 0"));
  Tensor dx_bad = Tensor::zeros({kN, kH - 1});
  EXPECT_THAT(error_of([&] { ce(*ops, x, w, t, 1.0f, &dx_bad, nullptr, 4); }),
              HasSubstr("lm_head_cross_entropy: dx is [7, 4], expected [7, 5]"));
}

}  // namespace
