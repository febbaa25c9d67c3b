// The CUDA backend against the CPU reference: every op of backend/ops.h on random inputs, run
// on both backends and compared with fp32 tolerances (atol + rtol·|ref|, NaN positions must
// match); packed documents with GQA for attention; a whole LlamaModel forward_backward (loss,
// logits and every LoRA gradient) on CUDA vs CPU.
//
// Tests that need a GPU skip, saying why, when cudaGetDeviceCount fails or finds none. The
// CudaHostOnly tests need no GPU: the dropout-hash port against the CPU hash, and the launchers'
// argument checks, which must throw before anything touches the device.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/device/dropout_hash.cuh"
#include "backend/cuda_ops.h"
#include "core/batch.h"
#include "model/llama_model.h"
#include "support/test_support.h"

using namespace ftune;

namespace {

// Why the GPU tests cannot run on this machine, or "" when device 0 is usable.
const std::string& no_gpu_reason() {
  static const std::string reason = [] {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return std::string("no usable CUDA device (cudaGetDeviceCount: ") + cudaGetErrorString(e) +
             ")";
    }
    if (n == 0) return std::string("no CUDA device visible (cudaGetDeviceCount returned 0)");
    return std::string();
  }();
  return reason;
}

// Tolerances per dtype for a result that sums `terms` products of O(1) values: relative to the
// reference element, plus an absolute part scaled by the reference's largest magnitude (so
// elements that cancel to ~0 are judged against the size of the data, as NMSE would).
struct Tol {
  float rtol;
  float atol_frac;
};
Tol tolerance(DType dt, int64_t terms = 1) {
  const float grow = std::sqrt(static_cast<float>(std::max<int64_t>(terms, 1)));
  switch (dt) {
    case DType::F32:
      return {1e-5f * grow, 1e-6f * grow};
    case DType::BF16:
      return {1e-2f * grow, 4e-3f * grow};
    case DType::F16:
      return {2e-3f * grow, 1e-3f * grow};
    default:
      return {0.0f, 0.0f};
  }
}

float max_abs(const std::vector<float>& v) {
  float m = 0.0f;
  for (float x : v)
    if (std::isfinite(x)) m = std::max(m, std::fabs(x));
  return m;
}

std::vector<float> host_values(const Tensor& t) { return t.to(Device::cpu()).to_vector(); }

// "" when `got` (any device) matches the CPU reference `want` within tol.
std::string mismatch(const Tensor& got, const Tensor& want, Tol tol) {
  if (got.shape() != want.shape())
    return "shape " + shape_str(got.shape()) + " vs " + shape_str(want.shape());
  const std::vector<float> w = host_values(want);
  const float atol = std::max(tol.atol_frac * max_abs(w), 1e-30f);
  return test::compare(host_values(got), w, tol.rtol, atol);
}

#define EXPECT_CLOSE(got, want, tol) EXPECT_EQ(mismatch((got), (want), (tol)), "") << #got

std::vector<uint8_t> host_bytes(const Tensor& t) {
  Tensor h = t.to(Device::cpu());
  const auto* p = h.data<uint8_t>();
  return std::vector<uint8_t>(p, p + h.nbytes());
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no ftune::Error thrown)";
}

#define EXPECT_ERROR(stmt, text)                           \
  do {                                                     \
    const std::string _msg = error_of([&] { stmt; });      \
    EXPECT_NE(_msg.find(text), std::string::npos) << _msg; \
  } while (0)

// Random non-zero values with a few given entries set (NaN tests).
Tensor with_values(Tensor t, const std::vector<std::pair<int64_t, float>>& set) {
  for (const auto& [i, v] : set) t.f32()[i] = v;
  return t;
}

// doc_start for documents of the given lengths laid end to end.
std::vector<int32_t> doc_starts(const std::vector<int>& lengths) {
  std::vector<int32_t> ds;
  for (int len : lengths) {
    const auto start = static_cast<int32_t>(ds.size());
    for (int i = 0; i < len; ++i) ds.push_back(start);
  }
  return ds;
}

class CudaVsCpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!no_gpu_reason().empty()) GTEST_SKIP() << no_gpu_reason();
    gpu_ = make_cuda_ops(0);
    cpu_ = make_cpu_ops();
  }
  static Device dev() { return Device::cuda(0); }
  static Tensor up(const Tensor& t) { return t.to(dev()); }
  Ops& gpu() { return *gpu_; }
  Ops& cpu() { return *cpu_; }

 private:
  std::unique_ptr<Ops> gpu_, cpu_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Without a GPU

TEST(CudaHostOnly, DropoutHashPortMatchesCpuBitForBit) {
  const uint64_t seeds[] = {0, 1, 42, 0x9E3779B97F4A7C15ull, ~0ull, 1234567890123ull};
  const float ps[] = {0.0f, 0.1f, 0.25f, 0.5f, 0.9f, 0.999f};
  int64_t kept = 0, total = 0;
  for (uint64_t seed : seeds) {
    for (float p : ps) {
      for (uint64_t i = 0; i < 20000; ++i) {
        const bool want = dropout_keep(seed, i, p);
        ASSERT_EQ(device::dropout_keep(seed, i, p), want) << seed << " " << i << " " << p;
        kept += want;
        ++total;
      }
      // Large indices too (flat indices of big activations).
      const uint64_t big = (1ull << 40) + 12345;
      ASSERT_EQ(device::dropout_keep(seed, big, p), dropout_keep(seed, big, p));
    }
  }
  // The hash is not constant: about the average keep rate of the ps above.
  const double rate = static_cast<double>(kept) / static_cast<double>(total);
  EXPECT_NEAR(rate, 1.0 - (0.0 + 0.1 + 0.25 + 0.5 + 0.9 + 0.999) / 6.0, 0.01);
}

TEST(CudaHostOnly, LaunchersRejectBadArgumentsBeforeTouchingTheDevice) {
  // Fake device tensors: the checks must fire before any memory access or launch.
  static float dummy[16];
  auto fake = [](const Shape& s, DType dt = DType::F32) {
    return Tensor::borrow(dummy, s, dt, nullptr, Device::cuda(0));
  };
  const cuda::CudaContext ctx{0, nullptr, nullptr};
  Tensor c = fake({3, 6});
  EXPECT_ERROR(cuda::gemm(ctx, fake({3, 4}), false, fake({5, 6}), false, c, 1, 0),
               "gemm: op(a) is [3, 4] but op(b) is [5, 6]");
  EXPECT_ERROR(cuda::gemm(ctx, Tensor::zeros({3, 4}), false, fake({4, 6}), false, c, 1, 0),
               "gemm: a is on cpu, the CUDA backend of cuda:0 needs tensors on that device");
  EXPECT_ERROR(cuda::gemm(ctx, fake({3, 4}, DType::BF16), false, fake({4, 6}), false, c, 1, 0),
               "gemm: a has dtype BF16, expected F32");
  Tensor y = fake({4, 8}), rstd = fake({4});
  EXPECT_ERROR(cuda::rms_norm_forward(ctx, fake({4, 8}), fake({6}), 1e-5f, y, rstd),
               "rms_norm_forward: x is [4, 8] but w is [6]");
  Tensor x_odd = fake({2, 3, 5});
  EXPECT_ERROR(cuda::rope_forward(ctx, x_odd, fake({2}, DType::I32), fake({8, 2}), fake({8, 2})),
               "rope_forward: head_dim 5 of x [2, 3, 5] is odd");
  Tensor o = fake({4, 6, 8}), lse = fake({4, 6});
  EXPECT_ERROR(cuda::attention_forward(ctx, fake({4, 6, 8}), fake({4, 4, 8}), fake({4, 4, 8}),
                                       fake({4}, DType::I32), 1.0f, o, lse),
               "attention_forward: 6 query heads are not a multiple of 4 kv heads");
  Tensor o2 = fake({4, 2, 512}), lse2 = fake({4, 2});
  EXPECT_ERROR(cuda::attention_forward(ctx, fake({4, 2, 512}), fake({4, 1, 512}), fake({4, 1, 512}),
                                       fake({4}, DType::I32), 1.0f, o2, lse2),
               "attention_forward: head_dim 512 is not supported");
  Tensor out = fake({4, 8}), mask = fake({4, 8}, DType::U8);
  EXPECT_ERROR(cuda::dropout_forward(ctx, fake({4, 8}), 1.0f, 7, out, mask),
               "dropout_forward: p = 1 must be in [0, 1)");
  Tensor p = fake({5}), m = fake({5}), v = fake({5});
  EXPECT_ERROR(cuda::adamw_step(ctx, p, fake({5}), m, v, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 0),
               "adamw_step: step = 0 (steps count from 1)");
  Tensor dg = fake({4, 8}), du = fake({4, 9});
  EXPECT_ERROR(cuda::swiglu_backward(ctx, fake({4, 8}), fake({4, 8}), fake({4, 8}), dg, du),
               "swiglu_backward: gate is [4, 8] but dup is [4, 9]");
  Tensor emb_out = fake({3, 5});
  EXPECT_ERROR(cuda::embedding_forward(ctx, fake({10, 4}), fake({3}, DType::I32), emb_out),
               "embedding_forward: out is [3, 5], expected [3, 4]");
  Tensor dx = fake({4, 8});
  EXPECT_ERROR(cuda::lm_head_cross_entropy(ctx, fake({4, 8}), fake({11, 8}), fake({4}, DType::I32),
                                           1.0f, &dx, nullptr, 0),
               "lm_head_cross_entropy: chunk_tokens = 0 must be positive");
  Tensor dbias = fake({7});
  EXPECT_ERROR(cuda::bias_backward(ctx, fake({4, 8}), dbias),
               "bias_backward: dy is [4, 8] but dbias is [7]");
}

TEST(CudaHostOnly, MakeCudaOpsFailsCleanly) {
  if (no_gpu_reason().empty()) {
    EXPECT_ERROR(make_cuda_ops(4096), "make_cuda_ops(4096): no such device");
  } else {
    // cudaGetDeviceCount fails ("no usable CUDA device") or finds none ("no such device").
    EXPECT_ERROR(make_cuda_ops(0), "make_cuda_ops(0): no ");
  }
}

// ---------------------------------------------------------------------------------------------
// Allocator

TEST_F(CudaVsCpu, AllocatorRoundTripsAndAccounts) {
  const int64_t before = memory_stats(DeviceType::CUDA).live_bytes;
  Tensor h = test::random_tensor({37, 11}, 1);
  {
    Tensor d = up(h);
    EXPECT_EQ(d.device(), dev());
    EXPECT_EQ(memory_stats(DeviceType::CUDA).live_bytes, before + 37 * 11 * 4);
    EXPECT_EQ(host_values(d), h.to_vector());
    Tensor c = d.clone();  // device to device
    EXPECT_EQ(host_values(c), h.to_vector());
    Tensor rows = d.slice_rows(5, 9);  // a view with an offset
    EXPECT_EQ(host_values(rows), h.slice_rows(5, 9).to_vector());
    Tensor z = Tensor::zeros({1000}, DType::F32, dev());
    EXPECT_EQ(host_values(z), std::vector<float>(1000, 0.0f));
    Tensor part = Tensor::empty({4, 11}, DType::F32, dev());
    part.copy_from(h.slice_rows(0, 4));  // host to device into an existing tensor
    EXPECT_EQ(host_values(part), h.slice_rows(0, 4).to_vector());
    Tensor ids = Tensor::from_ints({3, -1, 7}, {3}).to(dev());
    EXPECT_EQ(ids.dtype(), DType::I32);
    Tensor back = ids.to(Device::cpu());
    EXPECT_EQ(back.i32()[1], -1);
  }
  EXPECT_EQ(memory_stats(DeviceType::CUDA).live_bytes, before);
}

// ---------------------------------------------------------------------------------------------
// GEMM and bias

TEST_F(CudaVsCpu, GemmAllTransposesAlphaBeta) {
  const int64_t M = 37, N = 29, K = 67;
  uint64_t seed = 10;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const Tensor a = test::random_tensor(ta ? Shape{K, M} : Shape{M, K}, ++seed);
      const Tensor b = test::random_tensor(tb ? Shape{N, K} : Shape{K, N}, ++seed);
      const Tensor c0 = test::random_tensor({M, N}, ++seed);
      const std::pair<float, float> alpha_beta[] = {{1.0f, 0.0f}, {1.5f, 0.5f}, {-0.7f, 1.0f}};
      for (auto [alpha, beta] : alpha_beta) {
        Tensor want = c0.clone();
        cpu().gemm(a, ta, b, tb, want, alpha, beta);
        Tensor got = up(c0);
        gpu().gemm(up(a), ta, up(b), tb, got, alpha, beta);
        EXPECT_CLOSE(got, want, tolerance(DType::F32, K))
            << " ta " << ta << " tb " << tb << " alpha " << alpha << " beta " << beta;
      }
    }
  }
}

TEST_F(CudaVsCpu, GemmBetaZeroIgnoresNaNInOutputAndHandlesEmptyK) {
  const Tensor a = test::random_tensor({5, 3}, 1), b = test::random_tensor({3, 4}, 2);
  Tensor nan_c = Tensor::empty({5, 4});
  nan_c.fill_(std::numeric_limits<float>::quiet_NaN());
  Tensor want = nan_c.clone();
  cpu().gemm(a, false, b, false, want, 1.0f, 0.0f);
  Tensor got = up(nan_c);
  gpu().gemm(up(a), false, up(b), false, got, 1.0f, 0.0f);
  EXPECT_CLOSE(got, want, tolerance(DType::F32, 3));
  // K = 0: C = beta C.
  const Tensor a0 = Tensor::empty({5, 0}), b0 = Tensor::empty({0, 4});
  const Tensor c0 = test::random_tensor({5, 4}, 3);
  for (float beta : {0.0f, 0.25f}) {
    Tensor w = c0.clone();
    cpu().gemm(a0, false, b0, false, w, 1.0f, beta);
    Tensor g = up(c0);
    gpu().gemm(up(a0), false, up(b0), false, g, 1.0f, beta);
    EXPECT_CLOSE(g, w, tolerance(DType::F32)) << " beta " << beta;
  }
}

TEST_F(CudaVsCpu, BiasAddAndBackward) {
  const Tensor y0 = test::random_tensor({33, 70}, 1), bias = test::random_tensor({70}, 2);
  Tensor want = y0.clone(), got = up(y0);
  cpu().add_bias(want, bias);
  gpu().add_bias(got, up(bias));
  EXPECT_CLOSE(got, want, tolerance(DType::F32));
  const Tensor db0 = test::random_tensor({70}, 3);
  Tensor dwant = db0.clone(), dgot = up(db0);
  cpu().bias_backward(y0, dwant);
  gpu().bias_backward(up(y0), dgot);
  EXPECT_CLOSE(dgot, dwant, tolerance(DType::F32, 33));
}

// ---------------------------------------------------------------------------------------------
// Vector helpers

TEST_F(CudaVsCpu, AxpyScaleSumSquares) {
  const int64_t n = (1 << 20) + 17;  // several blocks and a ragged tail
  const Tensor x = test::random_tensor({n}, 1), y0 = test::random_tensor({n}, 2);
  Tensor want = y0.clone(), got = up(y0);
  cpu().axpy(-0.37f, x, want);
  gpu().axpy(-0.37f, up(x), got);
  EXPECT_CLOSE(got, want, tolerance(DType::F32));
  cpu().scale(want, 3.5f);
  gpu().scale(got, 3.5f);
  EXPECT_CLOSE(got, want, tolerance(DType::F32));
  const double ss_cpu = cpu().sum_squares(want);
  const double ss_gpu = gpu().sum_squares(got);
  EXPECT_NEAR(ss_gpu / ss_cpu, 1.0, 1e-6);
  // Exactly representable values: the double sums must agree exactly.
  Tensor small = Tensor::from_vector({1.0f, -2.0f, 0.5f, 3.0f, 0.0f}, {5});
  EXPECT_EQ(gpu().sum_squares(up(small)), 14.25);
  EXPECT_EQ(gpu().sum_squares(Tensor::empty({0}, DType::F32, dev())), 0.0);
}

TEST_F(CudaVsCpu, NaNsLandInTheSamePlaces) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  // axpy and swiglu: elementwise, NaN where an input is NaN (and silu(inf)*0 etc.).
  const Tensor x = with_values(test::random_tensor({6, 9}, 1), {{3, nan}, {20, inf}});
  const Tensor y0 = with_values(test::random_tensor({6, 9}, 2), {{40, nan}, {20, -inf}});
  Tensor want = y0.clone(), got = up(y0);
  cpu().axpy(1.0f, x, want);
  gpu().axpy(1.0f, up(x), got);
  EXPECT_CLOSE(got, want, tolerance(DType::F32));
  Tensor sw_want = Tensor::empty({6, 9}), sw_got = Tensor::empty({6, 9}, DType::F32, dev());
  cpu().swiglu_forward(x, y0, sw_want);
  gpu().swiglu_forward(up(x), up(y0), sw_got);
  EXPECT_CLOSE(sw_got, sw_want, tolerance(DType::F32));
  // rms_norm: a NaN poisons its row only.
  const Tensor w = test::random_tensor({9}, 3);
  Tensor n_want = Tensor::empty({6, 9}), r_want = Tensor::empty({6});
  Tensor n_got = Tensor::empty({6, 9}, DType::F32, dev()),
         r_got = Tensor::empty({6}, DType::F32, dev());
  cpu().rms_norm_forward(x, w, 1e-5f, n_want, r_want);
  gpu().rms_norm_forward(up(x), up(w), 1e-5f, n_got, r_got);
  EXPECT_CLOSE(n_got, n_want, tolerance(DType::F32, 9));
  EXPECT_CLOSE(r_got, r_want, tolerance(DType::F32, 9));
}

// ---------------------------------------------------------------------------------------------
// Embedding

TEST_F(CudaVsCpu, EmbeddingForwardBackwardWithRepeatedIds) {
  const int64_t V = 50, H = 300;
  const Tensor table = test::random_tensor({V, H}, 1);
  const Tensor ids = Tensor::from_ints({3, 7, 3, 49, 0, 7, 7, 12, 3, 1, 49}, {11});
  Tensor want = Tensor::empty({11, H}), got = Tensor::empty({11, H}, DType::F32, dev());
  cpu().embedding_forward(table, ids, want);
  gpu().embedding_forward(up(table), up(ids), got);
  EXPECT_EQ(host_values(got), want.to_vector());  // a gather is exact
  const Tensor dy = test::random_tensor({11, H}, 2);
  const Tensor dt0 = test::random_tensor({V, H}, 3);
  Tensor dwant = dt0.clone(), dgot = up(dt0);
  cpu().embedding_backward(dy, ids, dwant);
  gpu().embedding_backward(up(dy), up(ids), dgot);
  EXPECT_EQ(host_values(dgot), dwant.to_vector());  // same order of additions: exact
  const Tensor bad = Tensor::from_ints({3, 50}, {2});
  Tensor out2 = Tensor::empty({2, H}, DType::F32, dev());
  EXPECT_ERROR(gpu().embedding_forward(up(table), up(bad), out2),
               "embedding_forward: ids[1] = 50 is outside the table [0, 50)");
}

// ---------------------------------------------------------------------------------------------
// RMSNorm, RoPE, SwiGLU

TEST_F(CudaVsCpu, RmsNormForwardBackward) {
  for (int64_t H : {7, 300, 1030}) {
    const int64_t N = 19;
    const Tensor x = test::random_tensor({N, H}, 1), w = test::random_tensor({H}, 2);
    Tensor y_want = Tensor::empty({N, H}), r_want = Tensor::empty({N});
    Tensor y_got = Tensor::empty({N, H}, DType::F32, dev()),
           r_got = Tensor::empty({N}, DType::F32, dev());
    cpu().rms_norm_forward(x, w, 1e-6f, y_want, r_want);
    gpu().rms_norm_forward(up(x), up(w), 1e-6f, y_got, r_got);
    EXPECT_CLOSE(y_got, y_want, tolerance(DType::F32, H)) << " H " << H;
    EXPECT_CLOSE(r_got, r_want, tolerance(DType::F32, H)) << " H " << H;
    const Tensor dy = test::random_tensor({N, H}, 3), dw0 = test::random_tensor({H}, 4);
    Tensor dx_want = Tensor::empty({N, H}), dw_want = dw0.clone();
    Tensor dx_got = Tensor::empty({N, H}, DType::F32, dev()), dw_got = up(dw0);
    cpu().rms_norm_backward(dy, x, w, r_want, dx_want, &dw_want);
    gpu().rms_norm_backward(up(dy), up(x), up(w), up(r_want), dx_got, &dw_got);
    EXPECT_CLOSE(dx_got, dx_want, tolerance(DType::F32, H)) << " H " << H;
    EXPECT_CLOSE(dw_got, dw_want, tolerance(DType::F32, N)) << " H " << H;
    Tensor dx_only = Tensor::empty({N, H}, DType::F32, dev());
    gpu().rms_norm_backward(up(dy), up(x), up(w), up(r_want), dx_only, nullptr);
    EXPECT_CLOSE(dx_only, dx_want, tolerance(DType::F32, H)) << " H " << H;
  }
}

TEST_F(CudaVsCpu, RopeForwardBackward) {
  const int64_t N = 23, heads = 3, hd = 16, P = 40;
  const Tensor x = test::random_tensor({N, heads, hd}, 1);
  const Tensor cos = test::random_tensor({P, hd / 2}, 2), sin = test::random_tensor({P, hd / 2}, 3);
  std::vector<int32_t> pos(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7) % P);
  const Tensor positions = Tensor::from_ints(pos, {N});
  Tensor want = x.clone(), got = up(x);
  cpu().rope_forward(want, positions, cos, sin);
  gpu().rope_forward(got, up(positions), up(cos), up(sin));
  EXPECT_CLOSE(got, want, tolerance(DType::F32, 2));
  cpu().rope_backward(want, positions, cos, sin);
  gpu().rope_backward(got, up(positions), up(cos), up(sin));
  EXPECT_CLOSE(got, want, tolerance(DType::F32, 4));
  const Tensor bad = Tensor::from_ints(std::vector<int32_t>(static_cast<size_t>(N), P), {N});
  EXPECT_ERROR(gpu().rope_forward(got, up(bad), up(cos), up(sin)),
               "rope_forward: positions[0] = 40 is outside the rope table [0, 40)");
}

TEST_F(CudaVsCpu, SwigluForwardBackward) {
  const Tensor g = test::random_tensor({31, 77}, 1, 6.0f), u = test::random_tensor({31, 77}, 2);
  Tensor want = Tensor::empty({31, 77}), got = Tensor::empty({31, 77}, DType::F32, dev());
  cpu().swiglu_forward(g, u, want);
  gpu().swiglu_forward(up(g), up(u), got);
  EXPECT_CLOSE(got, want, tolerance(DType::F32, 4));
  const Tensor dout = test::random_tensor({31, 77}, 3);
  Tensor dg_want = Tensor::empty({31, 77}), du_want = Tensor::empty({31, 77});
  Tensor dg_got = Tensor::empty({31, 77}, DType::F32, dev()),
         du_got = Tensor::empty({31, 77}, DType::F32, dev());
  cpu().swiglu_backward(dout, g, u, dg_want, du_want);
  gpu().swiglu_backward(up(dout), up(g), up(u), dg_got, du_got);
  EXPECT_CLOSE(dg_got, dg_want, tolerance(DType::F32, 4));
  EXPECT_CLOSE(du_got, du_want, tolerance(DType::F32, 4));
}

// ---------------------------------------------------------------------------------------------
// Dropout: masks equal bit for bit

TEST_F(CudaVsCpu, DropoutMasksMatchCpuBitForBit) {
  const Tensor x = test::random_tensor({513, 37}, 1);
  for (float p : {0.0f, 0.1f, 0.5f}) {
    for (uint64_t seed : {uint64_t{0}, uint64_t{77}, ~uint64_t{0}}) {
      Tensor out_want = Tensor::empty(x.shape()), mask_want = Tensor::empty(x.shape(), DType::U8);
      Tensor out_got = Tensor::empty(x.shape(), DType::F32, dev());
      Tensor mask_got = Tensor::empty(x.shape(), DType::U8, dev());
      cpu().dropout_forward(x, p, seed, out_want, mask_want);
      gpu().dropout_forward(up(x), p, seed, out_got, mask_got);
      ASSERT_EQ(host_bytes(mask_got), host_bytes(mask_want)) << "p " << p << " seed " << seed;
      EXPECT_EQ(host_values(out_got), out_want.to_vector()) << "p " << p;  // one fp32 multiply
      const Tensor dy = test::random_tensor(x.shape(), 2);
      Tensor dx_want = Tensor::empty(x.shape());
      cpu().dropout_backward(dy, mask_want, p, dx_want);
      Tensor dx_got = up(dy);  // in place, as the LoRA backward calls it
      gpu().dropout_backward(dx_got, mask_got, p, dx_got);
      EXPECT_EQ(host_values(dx_got), dx_want.to_vector()) << "p " << p;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Attention over packed documents, GQA

struct AttnCase {
  std::vector<int> docs;  // document lengths, laid end to end
  int64_t nh, nkv, hd;
};

TEST_F(CudaVsCpu, AttentionPackedDocumentsGqaForwardBackward) {
  const std::vector<AttnCase> cases = {
      {{5, 1, 12, 19}, 8, 2, 16},  // GQA, group 4, hd < 32
      {{9, 30, 1, 1}, 6, 3, 40},   // hd not a multiple of 32
      {{17, 20}, 4, 4, 64},        // MHA
      {{1, 64, 3}, 4, 1, 128},     // MQA, a long document
      {{11, 2}, 2, 1, 200},        // the widest kernel variant
  };
  uint64_t seed = 100;
  for (const AttnCase& c : cases) {
    const std::vector<int32_t> ds = doc_starts(c.docs);
    const int64_t N = static_cast<int64_t>(ds.size());
    const Tensor doc_start = Tensor::from_ints(ds, {N});
    const Tensor q = test::random_tensor({N, c.nh, c.hd}, ++seed);
    const Tensor k = test::random_tensor({N, c.nkv, c.hd}, ++seed);
    const Tensor v = test::random_tensor({N, c.nkv, c.hd}, ++seed);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
    const std::string what = "hd " + std::to_string(c.hd) + " nh " + std::to_string(c.nh) +
                             " nkv " + std::to_string(c.nkv);
    Tensor o_want = Tensor::empty(q.shape()), lse_want = Tensor::empty({N, c.nh});
    Tensor o_got = Tensor::empty(q.shape(), DType::F32, dev());
    Tensor lse_got = Tensor::empty({N, c.nh}, DType::F32, dev());
    cpu().attention_forward(q, k, v, doc_start, scale, o_want, lse_want);
    gpu().attention_forward(up(q), up(k), up(v), up(doc_start), scale, o_got, lse_got);
    const int64_t longest = *std::max_element(c.docs.begin(), c.docs.end());
    EXPECT_CLOSE(o_got, o_want, tolerance(DType::F32, c.hd * longest)) << what;
    EXPECT_CLOSE(lse_got, lse_want, tolerance(DType::F32, c.hd)) << what;

    const Tensor d_o = test::random_tensor(q.shape(), ++seed);
    Tensor dq_want = Tensor::empty(q.shape()), dk_want = Tensor::empty(k.shape());
    Tensor dv_want = Tensor::empty(v.shape());
    cpu().attention_backward(q, k, v, o_want, lse_want, d_o, doc_start, scale, dq_want, dk_want,
                             dv_want);
    Tensor dq_got = Tensor::empty(q.shape(), DType::F32, dev());
    Tensor dk_got = Tensor::empty(k.shape(), DType::F32, dev());
    Tensor dv_got = Tensor::empty(v.shape(), DType::F32, dev());
    // The GPU backward consumes the GPU forward's outputs, as in training.
    gpu().attention_backward(up(q), up(k), up(v), o_got, lse_got, up(d_o), up(doc_start), scale,
                             dq_got, dk_got, dv_got);
    const Tol bwd = tolerance(DType::F32, c.hd * longest * (c.nh / c.nkv));
    EXPECT_CLOSE(dq_got, dq_want, bwd) << what;
    EXPECT_CLOSE(dk_got, dk_want, bwd) << what;
    EXPECT_CLOSE(dv_got, dv_want, bwd) << what;
  }
}

TEST_F(CudaVsCpu, AttentionRejectsBrokenDocuments) {
  const int64_t N = 4;
  const Tensor q = Tensor::zeros({N, 2, 8}, DType::F32, dev());
  const Tensor k = Tensor::zeros({N, 1, 8}, DType::F32, dev());
  Tensor o = Tensor::empty({N, 2, 8}, DType::F32, dev()),
         lse = Tensor::empty({N, 2}, DType::F32, dev());
  const Tensor gap = up(Tensor::from_ints({0, 0, 1, 0}, {N}));  // document 0 resumes at 3
  EXPECT_ERROR(gpu().attention_forward(q, k, k, gap, 1.0f, o, lse),
               "attention_forward: doc_start[2] = 1 is not a valid document start");
}

// ---------------------------------------------------------------------------------------------
// lm_head + cross-entropy

TEST_F(CudaVsCpu, LmHeadCrossEntropyChunkedWithIgnoredTargets) {
  const int64_t N = 45, H = 24, V = 301;
  const Tensor x = test::random_tensor({N, H}, 1), w = test::random_tensor({V, H}, 2);
  std::vector<int32_t> tg(static_cast<size_t>(N));
  std::mt19937 rng(3);
  for (int64_t i = 0; i < N; ++i)
    tg[static_cast<size_t>(i)] =
        (i < 7 || i % 3 == 0) ? kIgnoreIndex : static_cast<int32_t>(rng() % V);
  const Tensor targets = Tensor::from_ints(tg, {N});
  const float grad_scale = 1.0f / 25.0f;
  for (int64_t chunk : {int64_t{7}, int64_t{16}, int64_t{45}, int64_t{1000}}) {
    Tensor dx_want = Tensor::empty({N, H}), lg_want = Tensor::empty({N, V});
    const CrossEntropyResult want =
        cpu().lm_head_cross_entropy(x, w, targets, grad_scale, &dx_want, &lg_want, chunk);
    Tensor dx_got = Tensor::empty({N, H}, DType::F32, dev());
    Tensor lg_got = Tensor::empty({N, V}, DType::F32, dev());
    const CrossEntropyResult got =
        gpu().lm_head_cross_entropy(up(x), up(w), up(targets), grad_scale, &dx_got, &lg_got, chunk);
    EXPECT_EQ(got.count, want.count) << "chunk " << chunk;
    EXPECT_NEAR(got.loss_sum / want.loss_sum, 1.0, 1e-5) << "chunk " << chunk;
    EXPECT_CLOSE(lg_got, lg_want, tolerance(DType::F32, H)) << " chunk " << chunk;
    EXPECT_CLOSE(dx_got, dx_want, tolerance(DType::F32, V)) << " chunk " << chunk;
    // Without logits (chunk 7 skips the first, fully ignored chunk) and without dx.
    Tensor dx2 = Tensor::empty({N, H}, DType::F32, dev());
    const CrossEntropyResult g2 =
        gpu().lm_head_cross_entropy(up(x), up(w), up(targets), grad_scale, &dx2, nullptr, chunk);
    EXPECT_EQ(g2.count, want.count);
    EXPECT_NEAR(g2.loss_sum / want.loss_sum, 1.0, 1e-5);
    EXPECT_CLOSE(dx2, dx_want, tolerance(DType::F32, V)) << " chunk " << chunk;
    const CrossEntropyResult g3 =
        gpu().lm_head_cross_entropy(up(x), up(w), up(targets), grad_scale, nullptr, nullptr, chunk);
    EXPECT_NEAR(g3.loss_sum / want.loss_sum, 1.0, 1e-5);
  }
  const Tensor bad = Tensor::from_ints(std::vector<int32_t>(static_cast<size_t>(N), V), {N});
  EXPECT_ERROR(
      gpu().lm_head_cross_entropy(up(x), up(w), up(bad), 1.0f, nullptr, nullptr, 8),
      "lm_head_cross_entropy: targets[0] = 301 is outside the vocabulary [0, 301) and is not -100");
}

// ---------------------------------------------------------------------------------------------
// AdamW

TEST_F(CudaVsCpu, AdamwStepsTrackCpu) {
  const Shape s{1000, 3};
  Tensor p_want = test::random_tensor(s, 1), m_want = Tensor::zeros(s), v_want = Tensor::zeros(s);
  Tensor p_got = up(p_want), m_got = up(m_want), v_got = up(v_want);
  for (int64_t step = 1; step <= 5; ++step) {
    const Tensor g = test::random_tensor(s, 10 + static_cast<uint64_t>(step), 0.1f);
    cpu().adamw_step(p_want, g, m_want, v_want, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step);
    gpu().adamw_step(p_got, up(g), m_got, v_got, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step);
  }
  EXPECT_CLOSE(p_got, p_want, tolerance(DType::F32, 4));
  EXPECT_CLOSE(m_got, m_want, tolerance(DType::F32, 4));
  EXPECT_CLOSE(v_got, v_want, tolerance(DType::F32, 4));
}

// ---------------------------------------------------------------------------------------------
// The whole model

namespace {

// Random non-zero A and B (so every gradient path is live), copied to `d`.
LoraWeights random_lora(const ModelSpec& spec, const LoraSpec& ls, uint64_t seed, Device d) {
  LoraWeights w = LoraWeights::init(spec, ls, d);
  uint64_t k = seed;
  for (auto& p : w.params()) p.value->copy_from(test::random_tensor(p.value->shape(), ++k, 0.3f));
  return w;
}

// Three rows of 32: packed documents, one full row, one short document plus padding.
Batch packed_batch(int64_t vocab) {
  const std::vector<std::vector<int>> rows = {{13, 11, 8}, {32}, {20}};
  const int64_t seq = 32;
  Batch b;
  b.rows = static_cast<int64_t>(rows.size());
  b.seq_len = seq;
  std::mt19937 rng(7);
  for (size_t r = 0; r < rows.size(); ++r) {
    int32_t flat = static_cast<int32_t>(r * seq);
    int used = 0;
    for (int len : rows[r]) {
      const int32_t start = flat;
      for (int j = 0; j < len; ++j, ++flat) {
        const auto id = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
        b.input_ids.push_back(id);
        b.labels.push_back(j < 3 ? kIgnoreIndex : id);  // a masked "prompt" per document
        b.position_ids.push_back(j);
        b.doc_start.push_back(start);
      }
      used += len;
    }
    for (; used < seq; ++used, ++flat) {  // padding: one-token documents, never trained
      b.input_ids.push_back(0);
      b.labels.push_back(kIgnoreIndex);
      b.position_ids.push_back(0);
      b.doc_start.push_back(flat);
    }
  }
  b.validate();
  return b;
}

struct ModelCase {
  std::string name;
  ModelSpec spec;
  LoraSpec lora;
  bool checkpointing = false;
};

std::vector<ModelCase> model_cases() {
  std::vector<ModelCase> cases;
  ModelSpec s;
  s.arch = "llama";
  s.vocab_size = 301;
  s.hidden_size = 96;
  s.intermediate_size = 160;
  s.num_layers = 2;
  s.num_heads = 6;
  s.num_kv_heads = 2;
  s.head_dim = 40;
  s.max_position_embeddings = 128;
  LoraSpec ls;
  ls.r = 4;
  ls.alpha = 8;
  cases.push_back({"llama_gqa_hd40", s, ls, false});

  ModelSpec t = s;
  t.num_heads = 4;
  t.num_kv_heads = 1;
  t.head_dim = 64;
  t.tie_word_embeddings = true;
  LoraSpec ld = ls;
  ld.dropout = 0.1;  // exercises the shared dropout hash inside the model
  ld.use_rslora = true;
  cases.push_back({"llama_tied_dropout_checkpointing", t, ld, true});

  ModelSpec q = s;
  q.arch = "qwen2";
  q.num_heads = 4;
  q.num_kv_heads = 4;
  q.head_dim = 16;
  q.rms_norm_eps = 1e-6;
  q.rope.theta = 1e6;
  q.proj_bias[0] = q.proj_bias[1] = q.proj_bias[2] = true;
  LoraSpec lq = ls;
  lq.targets = {true, false, true, false, true, true, false};
  cases.push_back({"qwen2_bias_mha", q, lq, false});
  return cases;
}

}  // namespace

TEST_F(CudaVsCpu, LlamaModelForwardBackwardMatchesCpu) {
  for (const ModelCase& mc : model_cases()) {
    SCOPED_TRACE(mc.name);
    const BaseWeights base = random_base_weights(mc.spec, 11, 0.1f);
    LlamaModel cpu_model(mc.spec, base, cpu());
    ModelOptions gopts;
    gopts.gradient_checkpointing = mc.checkpointing;
    gopts.ce_chunk_tokens = 40;  // several chunks on the GPU, one on the CPU
    LlamaModel gpu_model(mc.spec, base_weights_to(base, mc.spec, dev()), gpu(), gopts);
    cpu_model.attach_lora(random_lora(mc.spec, mc.lora, 21, Device::cpu()));
    gpu_model.attach_lora(random_lora(mc.spec, mc.lora, 21, dev()));
    const Batch batch = packed_batch(mc.spec.vocab_size);
    const int64_t N = batch.tokens();

    // Forward (evaluation) with logits.
    Tensor lg_want = Tensor::empty({N, mc.spec.vocab_size});
    Tensor lg_got = Tensor::empty({N, mc.spec.vocab_size}, DType::F32, dev());
    const StepLoss f_want = cpu_model.forward(batch, &lg_want);
    const StepLoss f_got = gpu_model.forward(batch, &lg_got);
    EXPECT_EQ(f_got.count, f_want.count);
    EXPECT_NEAR(f_got.loss_sum / f_want.loss_sum, 1.0, 1e-5);
    EXPECT_CLOSE(lg_got, lg_want, (Tol{1e-4f, 1e-4f}));

    // Two training steps' worth of accumulated gradients (different dropout masks each pass).
    cpu_model.lora().zero_grad();
    gpu_model.lora().zero_grad();
    for (int pass = 0; pass < 2; ++pass) {
      const float grad_scale = 1.0f / static_cast<float>(count_trained_tokens(batch));
      const StepLoss want = cpu_model.forward_backward(batch, grad_scale);
      const StepLoss got = gpu_model.forward_backward(batch, grad_scale);
      EXPECT_EQ(got.count, want.count) << "pass " << pass;
      EXPECT_GT(want.count, 0);
      EXPECT_NEAR(got.loss_sum / want.loss_sum, 1.0, 1e-5) << "pass " << pass;
    }
    auto want_params = cpu_model.lora().params();
    auto got_params = gpu_model.lora().params();
    ASSERT_EQ(got_params.size(), want_params.size());
    for (size_t i = 0; i < want_params.size(); ++i) {
      ASSERT_EQ(got_params[i].name, want_params[i].name);
      EXPECT_GT(cpu().sum_squares(*want_params[i].grad), 0.0) << want_params[i].name;
      EXPECT_EQ(mismatch(*got_params[i].grad, *want_params[i].grad, Tol{1e-3f, 1e-4f}), "")
          << want_params[i].name;
    }
  }
}
