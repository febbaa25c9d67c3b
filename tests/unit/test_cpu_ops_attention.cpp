// CPU backend: causal GQA attention over packed documents. Forward against a double
// reference that builds the explicit mask matrix from doc_start; backward (dq, dk, dv)
// against central finite differences; document isolation; thread-count determinism.
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

// A packed micro-batch: document A = tokens 0..4, B = 5..8, C = 9, and a padding token 10
// that is a document of its own.
const std::vector<int32_t> kDocStart = {0, 0, 0, 0, 0, 5, 5, 5, 5, 9, 10};
constexpr int64_t kN = 11, kNh = 4, kNkv = 2, kHd = 8;

struct Reference {
  std::vector<float> o, lse;
};

Reference naive_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                          const std::vector<int32_t>& doc_start, double scale) {
  const int64_t n = q.dim(0), nh = q.dim(1), nkv = k.dim(1), hd = q.dim(2);
  std::vector<std::vector<bool>> mask(n, std::vector<bool>(n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) mask[i][j] = doc_start[j] == doc_start[i] && j <= i;
  Reference ref{std::vector<float>(static_cast<size_t>(n * nh * hd)),
                std::vector<float>(static_cast<size_t>(n * nh))};
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t g = h / (nh / nkv);
      std::vector<double> s(n, -INFINITY);
      double mx = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        if (!mask[i][j]) continue;
        double d = 0;
        for (int64_t c = 0; c < hd; ++c)
          d += static_cast<double>(q.f32()[(i * nh + h) * hd + c]) *
               k.f32()[(j * nkv + g) * hd + c];
        s[j] = scale * d;
        mx = std::max(mx, s[j]);
      }
      double z = 0;
      for (int64_t j = 0; j < n; ++j) z += mask[i][j] ? std::exp(s[j] - mx) : 0.0;
      for (int64_t c = 0; c < hd; ++c) {
        double acc = 0;
        for (int64_t j = 0; j < n; ++j)
          if (mask[i][j]) acc += std::exp(s[j] - mx) / z * v.f32()[(j * nkv + g) * hd + c];
        ref.o[static_cast<size_t>((i * nh + h) * hd + c)] = static_cast<float>(acc);
      }
      ref.lse[static_cast<size_t>(i * nh + h)] = static_cast<float>(mx + std::log(z));
    }
  return ref;
}

TEST(CpuOpsAttention, ForwardMatchesMaskedReferenceWithGqa) {
  auto ops = make_cpu_ops();
  const float scale = 1.0f / std::sqrt(static_cast<float>(kHd));
  Tensor q = random_tensor({kN, kNh, kHd}, 1, 2.0f);
  Tensor k = random_tensor({kN, kNkv, kHd}, 2, 2.0f);
  Tensor v = random_tensor({kN, kNkv, kHd}, 3);
  Tensor ds = Tensor::from_ints(kDocStart, {kN});
  Tensor o = Tensor::empty({kN, kNh, kHd}), lse = Tensor::empty({kN, kNh});
  ops->attention_forward(q, k, v, ds, scale, o, lse);
  const Reference ref = naive_attention(q, k, v, kDocStart, scale);
  EXPECT_EQ(compare(o.to_vector(), ref.o, 1e-5f, 1e-6f), "");
  EXPECT_EQ(compare(lse.to_vector(), ref.lse, 1e-5f, 1e-6f), "");
  // A document's first token (and a lone padding token) sees only itself: o = v, lse = score.
  for (int64_t h = 0; h < kNh; ++h)
    for (int64_t c = 0; c < kHd; ++c)
      EXPECT_FLOAT_EQ(o.f32()[(10 * kNh + h) * kHd + c], v.f32()[(10 * kNkv + h / 2) * kHd + c]);
}

TEST(CpuOpsAttention, DocumentsAreIsolated) {
  auto ops = make_cpu_ops();
  const float scale = 0.35f;
  Tensor q = random_tensor({kN, kNh, kHd}, 4);
  Tensor k = random_tensor({kN, kNkv, kHd}, 5);
  Tensor v = random_tensor({kN, kNkv, kHd}, 6);
  Tensor ds = Tensor::from_ints(kDocStart, {kN});
  Tensor o1 = Tensor::empty({kN, kNh, kHd}), lse1 = Tensor::empty({kN, kNh});
  ops->attention_forward(q, k, v, ds, scale, o1, lse1);
  // Change token 2 of document A in q, k and v.
  for (int64_t c = 0; c < kNh * kHd; ++c) q.f32()[2 * kNh * kHd + c] += 0.5f;
  for (int64_t c = 0; c < kNkv * kHd; ++c) {
    k.f32()[2 * kNkv * kHd + c] -= 0.7f;
    v.f32()[2 * kNkv * kHd + c] += 0.9f;
  }
  Tensor o2 = Tensor::empty({kN, kNh, kHd}), lse2 = Tensor::empty({kN, kNh});
  ops->attention_forward(q, k, v, ds, scale, o2, lse2);
  const int64_t row = kNh * kHd;
  for (int64_t t = 0; t < kN; ++t) {
    bool same = true;
    for (int64_t c = 0; c < row; ++c) same &= o1.f32()[t * row + c] == o2.f32()[t * row + c];
    // Tokens before 2 (causal) and every token of other documents are unaffected;
    // tokens 2..4 of document A change.
    EXPECT_EQ(same, t < 2 || t >= 5) << "token " << t;
  }
}

TEST(CpuOpsAttention, BackwardMatchesFiniteDifferences) {
  auto ops = make_cpu_ops();
  const float scale = 0.5f;
  Tensor q = random_tensor({kN, kNh, kHd}, 7);
  Tensor k = random_tensor({kN, kNkv, kHd}, 8);
  Tensor v = random_tensor({kN, kNkv, kHd}, 9);
  Tensor r = random_tensor({kN, kNh, kHd}, 10);
  Tensor ds = Tensor::from_ints(kDocStart, {kN});
  Tensor o = Tensor::empty({kN, kNh, kHd}), lse = Tensor::empty({kN, kNh});
  auto loss = [&] {
    ops->attention_forward(q, k, v, ds, scale, o, lse);
    return weighted_sum(o, r);
  };
  loss();
  Tensor dq = random_tensor(q.shape(), 11), dk = random_tensor(k.shape(), 12),
         dv = random_tensor(v.shape(), 13);  // garbage: the backward writes
  ops->attention_backward(q, k, v, o, lse, r, ds, scale, dq, dk, dv);
  EXPECT_EQ(compare(dq.to_vector(), finite_diff(q, loss), 1e-2f, 1e-3f), "");
  EXPECT_EQ(compare(dk.to_vector(), finite_diff(k, loss), 1e-2f, 1e-3f), "");
  EXPECT_EQ(compare(dv.to_vector(), finite_diff(v, loss), 1e-2f, 1e-3f), "");
}

TEST(CpuOpsAttention, DeterministicAcrossThreadCounts) {
  auto ops = make_cpu_ops();
  const int64_t n = 300, nh = 4, nkv = 2, hd = 16;  // above the parallel grain
  std::vector<int32_t> starts(n);
  for (int64_t i = 0; i < n; ++i) starts[i] = i < 180 ? 0 : 180;
  Tensor ds = Tensor::from_ints(starts, {n});
  Tensor q = random_tensor({n, nh, hd}, 14), k = random_tensor({n, nkv, hd}, 15),
         v = random_tensor({n, nkv, hd}, 16), g = random_tensor({n, nh, hd}, 17);
  auto run = [&](int threads) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    Tensor o = Tensor::empty({n, nh, hd}), lse = Tensor::empty({n, nh});
    ops->attention_forward(q, k, v, ds, 0.25f, o, lse);
    Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()),
           dv = Tensor::empty(v.shape());
    ops->attention_backward(q, k, v, o, lse, g, ds, 0.25f, dq, dk, dv);
    omp_set_num_threads(saved);
    std::vector<float> all;
    for (const Tensor* t : {&o, &lse, &dq, &dk, &dv})
      for (float x : t->to_vector()) all.push_back(x);
    return all;
  };
  EXPECT_EQ(run(1), run(3));
}

TEST(CpuOpsAttention, BadArgumentsThrow) {
  auto ops = make_cpu_ops();
  Tensor q = Tensor::zeros({4, 3, 8}), k = Tensor::zeros({4, 2, 8}), v = Tensor::zeros({4, 2, 8});
  Tensor o = Tensor::zeros({4, 3, 8}), lse = Tensor::zeros({4, 3});
  Tensor ds = Tensor::from_ints({0, 0, 0, 0}, {4});
  EXPECT_THAT(error_of([&] { ops->attention_forward(q, k, v, ds, 1.0f, o, lse); }),
              HasSubstr("attention_forward: 3 query heads are not a multiple of 2 kv heads"));
  Tensor q4 = Tensor::zeros({4, 4, 8}), o4 = Tensor::zeros({4, 4, 8}), lse4 = Tensor::zeros({4, 4});
  Tensor bad_ds = Tensor::from_ints({0, 0, 2, 0}, {4});  // document 0 resumes after another
  EXPECT_THAT(error_of([&] { ops->attention_forward(q4, k, v, bad_ds, 1.0f, o4, lse4); }),
              HasSubstr("attention_forward: doc_start[3] = 0"));
  Tensor future = Tensor::from_ints({0, 2, 2, 2}, {4});
  EXPECT_THAT(error_of([&] { ops->attention_forward(q4, k, v, future, 1.0f, o4, lse4); }),
              HasSubstr("attention_forward: doc_start[1] = 2"));
  Tensor k5 = Tensor::zeros({5, 2, 8});
  EXPECT_THAT(error_of([&] { ops->attention_forward(q4, k5, k5, ds, 1.0f, o4, lse4); }),
              HasSubstr("attention_forward: q is [4, 4, 8] but k is [5, 2, 8]"));
  Tensor dk_bad = Tensor::zeros({4, 4, 8});
  EXPECT_THAT(
      error_of([&] { ops->attention_backward(q4, k, v, o4, lse4, o4, ds, 1.0f, q4, dk_bad, v); }),
      HasSubstr("attention_backward: dk is [4, 4, 8], expected [4, 2, 8]"));
}

}  // namespace
