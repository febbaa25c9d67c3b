// The CUDA backend against the CPU reference: every op of backend/ops.h on random inputs, run
// on both backends, in F32, BF16 and F16 activations. Inputs are drawn in fp32 and rounded to the
// dtype; the CPU computes in fp32 on the rounded values (the reference); GPU outputs are
// poisoned with NaN before the call, so an element the kernel forgets to write fails. Results
// are compared with atol + rtol·|ref| (tolerances per dtype in act_tol below; atol scales with
// the reference's largest magnitude), NaN positions must match. Packed documents with GQA for
// attention; a whole LlamaModel forward_backward (loss, logits and every LoRA gradient) on CUDA
// vs CPU; the caching allocator's reuse, accounting and out-of-memory error.
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
#include "core/error.h"
#include "backend/cuda/device/dropout_hash.cuh"
#include "backend/cuda_ops.h"
#include "core/batch.h"
#include "model/llama_model.h"
#include "cuda/cuda_test_support.h"
#include "support/test_support.h"

using namespace ftune;

namespace {

using test::no_gpu_reason;

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

// Tolerance for an op whose outputs are stored in `dt`: fp32 math on both sides, so beyond the
// F32 case only the rounding of outputs (and of intermediates the kernel stores) differs:
// BF16 keeps 8 mantissa bits (half an ulp = 2^-9 = 0.2%), F16 11 bits (2^-12 = 0.05%).
//   F32:  rtol 1e-5·sqrt(terms), atol 1e-6·sqrt(terms)·max|ref|  (tolerance() above)
//   BF16: rtol 1.6e-2,            atol 8e-3·max|ref|
//   F16:  rtol 4e-3,              atol 2e-3·max|ref|
Tol act_tol(DType dt, int64_t terms = 1) {
  switch (dt) {
    case DType::BF16:
      return {1.6e-2f, 8e-3f};
    case DType::F16:
      return {4e-3f, 2e-3f};
    default:
      return tolerance(DType::F32, terms);
  }
}

const DType kActDtypes[] = {DType::F32, DType::BF16, DType::F16};

// A CPU F32 tensor whose values are exactly representable in dt (the inputs both backends see).
Tensor rounded(const Tensor& t, DType dt) {
  return dt == DType::F32 ? t.clone() : t.to_dtype(dt).to_dtype(DType::F32);
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
  // The caching allocator keeps freed blocks for reuse; hand them back after each test so a
  // leak check (compute-sanitizer --leak-check full) sees only real leaks.
  void TearDown() override {
    gpu_.reset();
    if (no_gpu_reason().empty()) release_cached_memory(DeviceType::CUDA);
  }
  static Device dev() { return Device::cuda(0); }
  static Tensor up(const Tensor& t) { return t.to(dev()); }
  // A CPU F32 tensor converted to dt on the device (values already rounded: exact).
  static Tensor up_as(const Tensor& t, DType dt) {
    return dt == DType::F32 ? t.to(dev()) : t.to_dtype(dt).to(dev());
  }
  // A device tensor of dt filled with NaN: outputs the op must overwrite.
  static Tensor poisoned(const Shape& s, DType dt) {
    Tensor h = Tensor::empty(s);
    h.fill_(std::numeric_limits<float>::quiet_NaN());
    return up_as(h, dt);
  }
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
  EXPECT_ERROR(cuda::gemm(ctx, fake({3, 4}, DType::I32), false, fake({4, 6}), false, c, 1, 0),
               "gemm: a has dtype I32, expected F32, BF16 or F16");
  EXPECT_ERROR(cuda::gemm(ctx, fake({3, 4}, DType::BF16), false, fake({4, 6}), false, c, 1, 0),
               "gemm: b has dtype F32, expected BF16");
  Tensor c16 = fake({3, 6}, DType::F16);
  EXPECT_ERROR(
      cuda::gemm(ctx, fake({3, 4}, DType::BF16), false, fake({4, 6}, DType::BF16), false, c16, 1, 0),
      "gemm: c has dtype F16, expected F32 or BF16 (a's dtype)");
  Tensor y16 = fake({4, 8}, DType::BF16), rstd4 = fake({4});
  EXPECT_ERROR(cuda::rms_norm_forward(ctx, fake({4, 8}, DType::BF16), fake({8}), 1e-5f, y16, rstd4),
               "rms_norm_forward: w has dtype F32, expected BF16");
  Tensor cast_dst = fake({3}, DType::I32);
  EXPECT_ERROR(cuda::cast(ctx, fake({3}), cast_dst), "cast: F32 to I32 is not supported");
  Tensor q = fake({4, 4, 8}), kk = fake({4, 2, 8}), vv = fake({4, 2, 8});
  EXPECT_ERROR(cuda::qkv_rope_split_forward(ctx, fake({4, 63}), fake({4}, DType::I32),
                                            fake({8, 4}), fake({8, 4}), q, kk, vv),
               "qkv_rope_split_forward: qkv is [4, 63], expected [4, 64]");
  Tensor sw_out = fake({4, 3});
  EXPECT_ERROR(cuda::swiglu_fused_forward(ctx, fake({4, 8}), sw_out),
               "swiglu_fused_forward: out is [4, 3], expected [4, 4]");
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
  Tensor dx = fake({4, 8}), loss = fake({1}, DType::F64), loss32 = fake({1});
  EXPECT_ERROR(cuda::lm_head_cross_entropy(ctx, fake({4, 8}), fake({11, 8}), fake({4}, DType::I32),
                                           1.0f, loss, &dx, nullptr, 0),
               "lm_head_cross_entropy: chunk_tokens = 0 must be positive");
  EXPECT_ERROR(cuda::lm_head_cross_entropy(ctx, fake({4, 8}), fake({11, 8}), fake({4}, DType::I32),
                                           1.0f, loss32, &dx, nullptr, 4),
               "lm_head_cross_entropy: loss_sum has dtype F32, expected F64");
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
    EXPECT_GE(memory_stats(DeviceType::CUDA).reserved_bytes,
              memory_stats(DeviceType::CUDA).live_bytes);
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

TEST_F(CudaVsCpu, AllocatorReusesFreedBlocksAndReleasesTheCache) {
  release_cached_memory(DeviceType::CUDA);  // no block of the size below is cached
  const int64_t bytes = (int64_t{3} << 20) + 100;  // a large size class (2 MiB granules)
  void* first = nullptr;
  {
    Tensor a = Tensor::empty({bytes}, DType::U8, dev());
    first = a.raw();
  }
  const int64_t reserved = memory_stats(DeviceType::CUDA).reserved_bytes;
  {
    // Same size class: the cached block comes back, nothing new is reserved.
    Tensor b = Tensor::empty({bytes - 1000}, DType::U8, dev());
    EXPECT_EQ(b.raw(), first);
    EXPECT_EQ(memory_stats(DeviceType::CUDA).reserved_bytes, reserved);
    // A much smaller request does not take a large block.
    Tensor small = Tensor::empty({1000}, DType::U8, dev());
    EXPECT_NE(small.raw(), first);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(small.raw()) % 256, 0u);
  }
  EXPECT_GE(memory_stats(DeviceType::CUDA).peak_reserved_bytes, reserved);
  release_cached_memory(DeviceType::CUDA);
  EXPECT_LT(memory_stats(DeviceType::CUDA).reserved_bytes, reserved);
  EXPECT_GE(memory_stats(DeviceType::CUDA).reserved_bytes,
            memory_stats(DeviceType::CUDA).live_bytes);
}

TEST_F(CudaVsCpu, AllocatorOutOfMemoryIsATypedError) {
  const int64_t huge = int64_t{1} << 50;  // 1 PiB: no GPU has it
  try {
    Tensor t = Tensor::empty({huge}, DType::U8, dev());
    FAIL() << "no OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    EXPECT_EQ(e.device, 0);
    EXPECT_GE(e.requested_bytes, huge);
    EXPECT_GT(e.total_bytes, 0);
    EXPECT_GE(e.reserved_bytes, 0);
    EXPECT_NE(std::string(e.what()).find("cuda:0: out of memory allocating"), std::string::npos)
        << e.what();
  }
  // The allocator still works afterwards.
  Tensor ok = Tensor::zeros({16}, DType::F32, dev());
  EXPECT_EQ(host_values(ok), std::vector<float>(16, 0.0f));
}

// ---------------------------------------------------------------------------------------------
// Cast

TEST_F(CudaVsCpu, CastEveryPairMatchesCpuRounding) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  // Random values plus the edge cases: NaN, infinities, f16 overflow (65520 rounds to inf,
  // 65519 to 65504), ties, f16 subnormals, f32 subnormals (bf16 keeps them), signed zero.
  std::vector<float> v = test::random_tensor({1001}, 3, 100.0f).to_vector();
  const std::vector<float> edge = {nan,     inf,   -inf,        65520.0f, 65519.0f, -70000.0f,
                                   1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-9f,   1e-6f,    -3e-7f,
                                   6e-8f,   1e-40f, -0.0f,      0.0f,     1.0f / 3.0f};
  for (size_t i = 0; i < edge.size(); ++i) v[i * 7] = edge[i];
  const Tensor src32 = Tensor::from_vector(v, {1001});
  for (DType from : kActDtypes) {
    for (DType to : kActDtypes) {
      SCOPED_TRACE(std::string(dtype_name(from)) + " -> " + std::string(dtype_name(to)));
      const Tensor src = from == DType::F32 ? src32 : src32.to_dtype(from);
      Tensor want = Tensor::empty({1001}, to);
      cpu().cast(src, want);
      // [0, 1000): the 4-element path; [1, 1001) starts one element in: the scalar path; all
      // 1001: odd, the scalar path.
      const std::pair<int64_t, int64_t> ranges[] = {{0, 1000}, {1, 1001}, {0, 1001}};
      for (auto [lo, hi] : ranges) {
        const Tensor s = src.to(dev()).slice_rows(lo, hi);
        Tensor got = poisoned({hi - lo}, to);
        gpu().cast(s, got);
        const std::vector<float> g = host_values(got), w = want.slice_rows(lo, hi).to_vector();
        ASSERT_EQ(g.size(), w.size());
        for (size_t i = 0; i < g.size(); ++i) {
          if (std::isnan(w[i])) {
            EXPECT_TRUE(std::isnan(g[i])) << i;
          } else {
            EXPECT_EQ(std::memcmp(&g[i], &w[i], 4), 0) << i << ": " << g[i] << " vs " << w[i];
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// GEMM and bias

TEST_F(CudaVsCpu, GemmAllDtypesTransposesAlphaBeta) {
  const int64_t M = 37, N = 29, K = 67;
  uint64_t seed = 10;
  for (DType dt : kActDtypes) {
    for (bool c_f32 : {true, false}) {
      if (dt == DType::F32 && !c_f32) continue;
      const DType ct = c_f32 ? DType::F32 : dt;
      for (bool ta : {false, true}) {
        for (bool tb : {false, true}) {
          const Tensor a = rounded(test::random_tensor(ta ? Shape{K, M} : Shape{M, K}, ++seed), dt);
          const Tensor b = rounded(test::random_tensor(tb ? Shape{N, K} : Shape{K, N}, ++seed), dt);
          const Tensor c0 = rounded(test::random_tensor({M, N}, ++seed), ct);
          const std::pair<float, float> alpha_beta[] = {{1.0f, 0.0f}, {1.5f, 0.5f}, {-0.7f, 1.0f}};
          for (auto [alpha, beta] : alpha_beta) {
            Tensor want = c0.clone();
            cpu().gemm(a, ta, b, tb, want, alpha, beta);
            Tensor got = beta == 0.0f ? poisoned({M, N}, ct) : up_as(c0, ct);
            gpu().gemm(up_as(a, dt), ta, up_as(b, dt), tb, got, alpha, beta);
            EXPECT_CLOSE(got, want, c_f32 ? tolerance(DType::F32, K) : act_tol(dt, K))
                << dtype_name(dt) << " c " << dtype_name(ct) << " ta " << ta << " tb " << tb
                << " alpha " << alpha << " beta " << beta;
          }
        }
      }
    }
  }
}

TEST_F(CudaVsCpu, GemmOnUnalignedViewsAndOddLeadingDimensions) {
  // slice_rows views start 2 bytes into a buffer (bf16, odd K): plans keyed by alignment, or
  // the cublasGemmEx fallback, must still be right. Repeated calls reuse the cached plans.
  const int64_t M = 33, N = 17, K = 45;
  for (DType dt : kActDtypes) {
    const Tensor a = rounded(test::random_tensor({M + 1, K}, 1), dt);
    const Tensor b = rounded(test::random_tensor({N, K}, 2), dt);
    Tensor want = Tensor::empty({M, N});
    cpu().gemm(a.slice_rows(1, M + 1), false, b, true, want, 1.0f, 0.0f);
    const Tensor ga = up_as(a, dt), gb = up_as(b, dt);
    for (int rep = 0; rep < 2; ++rep) {
      Tensor got = poisoned({M, N}, DType::F32);
      gpu().gemm(ga.slice_rows(1, M + 1), false, gb, true, got, 1.0f, 0.0f);
      EXPECT_CLOSE(got, want, tolerance(DType::F32, K)) << dtype_name(dt) << " rep " << rep;
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
  for (DType dt : kActDtypes) {
    for (float beta : {0.0f, 0.25f}) {
      Tensor w = rounded(c0, dt);
      cpu().gemm(a0, false, b0, false, w, 1.0f, beta);
      Tensor g = up_as(rounded(c0, dt), dt);
      gpu().gemm(up_as(a0, dt), false, up_as(b0, dt), false, g, 1.0f, beta);
      EXPECT_CLOSE(g, w, act_tol(dt)) << dtype_name(dt) << " beta " << beta;
    }
  }
}

TEST_F(CudaVsCpu, BiasAddAndBackward) {
  for (DType dt : kActDtypes) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor y0 = rounded(test::random_tensor({33, 70}, 1), dt);
    const Tensor bias = rounded(test::random_tensor({70}, 2), dt);
    Tensor want = y0.clone(), got = up_as(y0, dt);
    cpu().add_bias(want, bias);
    gpu().add_bias(got, up_as(bias, dt));
    EXPECT_CLOSE(got, want, act_tol(dt));
    const Tensor db0 = test::random_tensor({70}, 3);
    Tensor dwant = db0.clone(), dgot = up(db0);
    cpu().bias_backward(y0, dwant);
    gpu().bias_backward(up_as(y0, dt), dgot);
    EXPECT_CLOSE(dgot, dwant, tolerance(DType::F32, 33));  // dbias is F32
  }
}

// ---------------------------------------------------------------------------------------------
// Vector helpers

TEST_F(CudaVsCpu, AxpyScaleSumSquares) {
  const int64_t n = (1 << 20) + 17;  // several blocks and a ragged tail
  for (DType dt : kActDtypes) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor x = rounded(test::random_tensor({n}, 1), dt);
    const Tensor y0 = rounded(test::random_tensor({n}, 2), dt);
    // n + 17 is odd (scalar path); the first 1 << 20 elements take the 16-byte path.
    for (int64_t len : {n, int64_t{1} << 20}) {
      Tensor want = y0.slice_rows(0, len).clone(), got = up_as(y0.slice_rows(0, len), dt);
      cpu().axpy(-0.37f, x.slice_rows(0, len), want);
      gpu().axpy(-0.37f, up_as(x.slice_rows(0, len), dt), got);
      EXPECT_CLOSE(got, want, act_tol(dt)) << len;
      Tensor swant = rounded(want, dt);  // scale what the GPU holds
      cpu().scale(swant, 3.5f);
      gpu().scale(got, 3.5f);
      EXPECT_CLOSE(got, swant, act_tol(dt)) << len;
    }
  }
  const Tensor x = test::random_tensor({n}, 1);
  const double ss_cpu = cpu().sum_squares(x);
  const double ss_gpu = gpu().sum_squares(up(x));
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
  const Tensor ids = Tensor::from_ints({3, 7, 3, 49, 0, 7, 7, 12, 3, 1, 49}, {11});
  for (DType dt : kActDtypes) {
    const Tensor table = rounded(test::random_tensor({V, H}, 1), dt);
    Tensor want = Tensor::empty({11, H}), got = poisoned({11, H}, dt);
    cpu().embedding_forward(table, ids, want);
    gpu().embedding_forward(up_as(table, dt), up(ids), got);
    EXPECT_EQ(host_values(got), want.to_vector()) << dtype_name(dt);  // a gather is exact
  }
  const Tensor table = test::random_tensor({V, H}, 1);
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
  for (DType dt : kActDtypes) {
    for (int64_t H : {7, 300, 1024}) {  // 1024: the 16-byte path in every dtype
      SCOPED_TRACE(std::string(dtype_name(dt)) + " H " + std::to_string(H));
      const int64_t N = 19;
      const Tensor x = rounded(test::random_tensor({N, H}, 1), dt);
      const Tensor w = rounded(test::random_tensor({H}, 2), dt);
      Tensor y_want = Tensor::empty({N, H}), r_want = Tensor::empty({N});
      Tensor y_got = poisoned({N, H}, dt), r_got = poisoned({N}, DType::F32);
      cpu().rms_norm_forward(x, w, 1e-6f, y_want, r_want);
      gpu().rms_norm_forward(up_as(x, dt), up_as(w, dt), 1e-6f, y_got, r_got);
      EXPECT_CLOSE(y_got, y_want, act_tol(dt, H));
      EXPECT_CLOSE(r_got, r_want, tolerance(DType::F32, H));
      const Tensor dy = rounded(test::random_tensor({N, H}, 3), dt);
      const Tensor dw0 = test::random_tensor({H}, 4);
      Tensor dx_want = Tensor::empty({N, H}), dw_want = dw0.clone();
      Tensor dx_got = poisoned({N, H}, dt), dw_got = up(dw0);
      cpu().rms_norm_backward(dy, x, w, r_want, dx_want, &dw_want);
      gpu().rms_norm_backward(up_as(dy, dt), up_as(x, dt), up_as(w, dt), up(r_want), dx_got,
                              &dw_got);
      EXPECT_CLOSE(dx_got, dx_want, act_tol(dt, H));
      EXPECT_CLOSE(dw_got, dw_want, tolerance(DType::F32, N));
      Tensor dx_only = poisoned({N, H}, dt);
      gpu().rms_norm_backward(up_as(dy, dt), up_as(x, dt), up_as(w, dt), up(r_want), dx_only,
                              nullptr);
      EXPECT_CLOSE(dx_only, dx_want, act_tol(dt, H));
      // accumulate: dx += d/dx.
      const Tensor acc0 = rounded(test::random_tensor({N, H}, 5), dt);
      Tensor acc_want = acc0.clone();
      cpu().rms_norm_backward(dy, x, w, r_want, acc_want, nullptr, true);
      Tensor acc_got = up_as(acc0, dt);
      gpu().rms_norm_backward(up_as(dy, dt), up_as(x, dt), up_as(w, dt), up(r_want), acc_got,
                              nullptr, true);
      EXPECT_CLOSE(acc_got, acc_want, act_tol(dt, H));
    }
  }
}

TEST_F(CudaVsCpu, AddRmsNormForward) {
  for (DType dt : kActDtypes) {
    for (int64_t H : {13, 512}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " H " + std::to_string(H));
      const int64_t N = 21;
      const Tensor a = rounded(test::random_tensor({N, H}, 1), dt);
      const Tensor b = rounded(test::random_tensor({N, H}, 2), dt);
      const Tensor w = rounded(test::random_tensor({H}, 3), dt);
      Tensor s_want = Tensor::empty({N, H}), y_want = Tensor::empty({N, H});
      Tensor r_want = Tensor::empty({N});
      cpu().add_rms_norm_forward(a, b, w, 1e-5f, s_want, y_want, r_want);
      Tensor s_got = poisoned({N, H}, dt), y_got = poisoned({N, H}, dt);
      Tensor r_got = poisoned({N}, DType::F32);
      gpu().add_rms_norm_forward(up_as(a, dt), up_as(b, dt), up_as(w, dt), 1e-5f, s_got, y_got,
                                 r_got);
      EXPECT_CLOSE(s_got, s_want, act_tol(dt));
      EXPECT_CLOSE(y_got, y_want, act_tol(dt, H));
      EXPECT_CLOSE(r_got, r_want, dt == DType::F32 ? tolerance(DType::F32, H) : act_tol(dt));
      // In place over a (the residual stream updated where it lies).
      Tensor a_inplace = up_as(a, dt);
      Tensor y2 = poisoned({N, H}, dt), r2 = poisoned({N}, DType::F32);
      gpu().add_rms_norm_forward(a_inplace, up_as(b, dt), up_as(w, dt), 1e-5f, a_inplace, y2, r2);
      EXPECT_EQ(host_values(a_inplace), host_values(s_got));
      EXPECT_EQ(host_values(y2), host_values(y_got));
    }
  }
}

TEST_F(CudaVsCpu, RopeForwardBackward) {
  const int64_t N = 23, heads = 3, hd = 16, P = 40;
  const Tensor cos = test::random_tensor({P, hd / 2}, 2), sin = test::random_tensor({P, hd / 2}, 3);
  std::vector<int32_t> pos(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7) % P);
  const Tensor positions = Tensor::from_ints(pos, {N});
  for (DType dt : kActDtypes) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor x = rounded(test::random_tensor({N, heads, hd}, 1), dt);
    Tensor want = x.clone(), got = up_as(x, dt);
    cpu().rope_forward(want, positions, cos, sin);
    gpu().rope_forward(got, up(positions), up(cos), up(sin));
    EXPECT_CLOSE(got, want, act_tol(dt, 2));
    Tensor bwant = rounded(want, dt);  // the backward from what the GPU holds
    cpu().rope_backward(bwant, positions, cos, sin);
    gpu().rope_backward(got, up(positions), up(cos), up(sin));
    EXPECT_CLOSE(got, bwant, act_tol(dt, 4));
  }
  Tensor got = up(test::random_tensor({N, heads, hd}, 1));
  const Tensor bad = Tensor::from_ints(std::vector<int32_t>(static_cast<size_t>(N), P), {N});
  EXPECT_ERROR(gpu().rope_forward(got, up(bad), up(cos), up(sin)),
               "rope_forward: positions[0] = 40 is outside the rope table [0, 40)");
}

TEST_F(CudaVsCpu, QkvRopeSplitAndMerge) {
  const int64_t N = 19, nh = 6, nkv = 2, hd = 24, P = 50;
  const int64_t W = (nh + 2 * nkv) * hd;
  const Tensor cos = test::random_tensor({P, hd / 2}, 2), sin = test::random_tensor({P, hd / 2}, 3);
  std::vector<int32_t> pos(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>((i * 11) % P);
  const Tensor positions = Tensor::from_ints(pos, {N});
  for (DType dt : kActDtypes) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor qkv = rounded(test::random_tensor({N, W}, 1), dt);
    Tensor q_want = Tensor::empty({N, nh, hd}), k_want = Tensor::empty({N, nkv, hd});
    Tensor v_want = Tensor::empty({N, nkv, hd});
    cpu().qkv_rope_split_forward(qkv, positions, cos, sin, q_want, k_want, v_want);
    Tensor q_got = poisoned({N, nh, hd}, dt), k_got = poisoned({N, nkv, hd}, dt);
    Tensor v_got = poisoned({N, nkv, hd}, dt);
    gpu().qkv_rope_split_forward(up_as(qkv, dt), up(positions), up(cos), up(sin), q_got, k_got,
                                 v_got);
    EXPECT_CLOSE(q_got, q_want, act_tol(dt, 2));
    EXPECT_CLOSE(k_got, k_want, act_tol(dt, 2));
    EXPECT_EQ(host_values(v_got), v_want.to_vector());  // a copy
    // Split equals rope_forward on the separated heads (CPU, the unfused reference).
    Tensor q_ref = qkv.view({N, nh + 2 * nkv, hd}).clone();
    Tensor q_sep = Tensor::empty({N, nh, hd});
    for (int64_t t = 0; t < N; ++t)
      std::memcpy(q_sep.f32() + t * nh * hd, q_ref.f32() + t * W, nh * hd * 4);
    cpu().rope_forward(q_sep, positions, cos, sin);
    EXPECT_EQ(test::compare(q_sep.to_vector(), q_want.to_vector(), 1e-6f, 1e-7f), "");

    const Tensor dq = rounded(test::random_tensor({N, nh, hd}, 4), dt);
    const Tensor dk = rounded(test::random_tensor({N, nkv, hd}, 5), dt);
    const Tensor dv = rounded(test::random_tensor({N, nkv, hd}, 6), dt);
    Tensor d_want = Tensor::empty({N, W});
    cpu().qkv_rope_merge_backward(dq, dk, dv, positions, cos, sin, d_want);
    Tensor d_got = poisoned({N, W}, dt);
    gpu().qkv_rope_merge_backward(up_as(dq, dt), up_as(dk, dt), up_as(dv, dt), up(positions),
                                  up(cos), up(sin), d_got);
    EXPECT_CLOSE(d_got, d_want, act_tol(dt, 2));
  }
  // Out-of-table positions are not checked on the host: they poison their token with NaN.
  const Tensor bad = Tensor::from_ints(std::vector<int32_t>(static_cast<size_t>(N), P), {N});
  Tensor q = poisoned({N, nh, hd}, DType::F32), k = poisoned({N, nkv, hd}, DType::F32);
  Tensor v = poisoned({N, nkv, hd}, DType::F32);
  gpu().qkv_rope_split_forward(up(test::random_tensor({N, W}, 1)), up(bad), up(cos), up(sin), q,
                               k, v);
  for (float x : host_values(q)) EXPECT_TRUE(std::isnan(x));
  for (float x : host_values(v)) EXPECT_FALSE(std::isnan(x));
}

TEST_F(CudaVsCpu, SwigluForwardBackward) {
  for (DType dt : kActDtypes) {
    for (int64_t F : {77, 64}) {  // 64: the 16-byte path
      SCOPED_TRACE(std::string(dtype_name(dt)) + " F " + std::to_string(F));
      const Tensor g = rounded(test::random_tensor({31, F}, 1, 6.0f), dt);
      const Tensor u = rounded(test::random_tensor({31, F}, 2), dt);
      Tensor want = Tensor::empty({31, F}), got = poisoned({31, F}, dt);
      cpu().swiglu_forward(g, u, want);
      gpu().swiglu_forward(up_as(g, dt), up_as(u, dt), got);
      EXPECT_CLOSE(got, want, act_tol(dt, 4));
      const Tensor dout = rounded(test::random_tensor({31, F}, 3), dt);
      Tensor dg_want = Tensor::empty({31, F}), du_want = Tensor::empty({31, F});
      Tensor dg_got = poisoned({31, F}, dt), du_got = poisoned({31, F}, dt);
      cpu().swiglu_backward(dout, g, u, dg_want, du_want);
      gpu().swiglu_backward(up_as(dout, dt), up_as(g, dt), up_as(u, dt), dg_got, du_got);
      EXPECT_CLOSE(dg_got, dg_want, act_tol(dt, 4));
      EXPECT_CLOSE(du_got, du_want, act_tol(dt, 4));

      // Fused gate/up buffer [N, 2F].
      const Tensor gu = rounded(test::random_tensor({31, 2 * F}, 4, 4.0f), dt);
      Tensor f_want = Tensor::empty({31, F}), f_got = poisoned({31, F}, dt);
      cpu().swiglu_fused_forward(gu, f_want);
      gpu().swiglu_fused_forward(up_as(gu, dt), f_got);
      EXPECT_CLOSE(f_got, f_want, act_tol(dt, 4));
      Tensor dgu_want = Tensor::empty({31, 2 * F}), dgu_got = poisoned({31, 2 * F}, dt);
      cpu().swiglu_fused_backward(dout, gu, dgu_want);
      gpu().swiglu_fused_backward(up_as(dout, dt), up_as(gu, dt), dgu_got);
      EXPECT_CLOSE(dgu_got, dgu_want, act_tol(dt, 4));
      // In place over gu.
      Tensor inplace = up_as(gu, dt);
      gpu().swiglu_fused_backward(up_as(dout, dt), inplace, inplace);
      EXPECT_EQ(host_values(inplace), host_values(dgu_got));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Dropout: masks equal bit for bit

// dropout_apply (the mask regenerated, nothing stored; the LoRA path's forward and backward)
// equals the CPU's bit for bit, in fp32 and, on the same rounded inputs, in bf16/f16; with an
// index offset (rows of a larger tensor) and in place.
TEST_F(CudaVsCpu, DropoutApplyMatchesCpuBitForBit) {
  const Tensor x = test::random_tensor({513, 37}, 3);
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    const Tensor xr = dt == DType::F32 ? x : rounded(x, dt);
    for (int64_t offset : {int64_t{0}, int64_t{37 * 1000}}) {
      Tensor want = Tensor::empty(x.shape());
      cpu().dropout_apply(xr, 0.25f, 9, offset, want);
      Tensor got = up_as(xr, dt);
      gpu().dropout_apply(got, 0.25f, 9, offset, got);  // in place
      if (dt == DType::F32) {
        EXPECT_EQ(host_values(got), want.to_vector()) << "offset " << offset;
      } else {
        EXPECT_CLOSE(got, want, act_tol(dt)) << dtype_name(dt) << " offset " << offset;
      }
    }
  }
}

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
  for (DType dt : {DType::BF16, DType::F16}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor xr = rounded(x, dt);
    Tensor out_want = Tensor::empty(x.shape()), mask_want = Tensor::empty(x.shape(), DType::U8);
    cpu().dropout_forward(xr, 0.25f, 5, out_want, mask_want);
    Tensor out_got = poisoned(x.shape(), dt), mask_got = Tensor::empty(x.shape(), DType::U8, dev());
    gpu().dropout_forward(up_as(xr, dt), 0.25f, 5, out_got, mask_got);
    ASSERT_EQ(host_bytes(mask_got), host_bytes(mask_want));
    EXPECT_CLOSE(out_got, out_want, act_tol(dt));
    const Tensor dy = rounded(test::random_tensor(x.shape(), 2), dt);
    Tensor dx_want = Tensor::empty(x.shape()), dx_got = poisoned(x.shape(), dt);
    cpu().dropout_backward(dy, mask_want, 0.25f, dx_want);
    gpu().dropout_backward(up_as(dy, dt), mask_got, 0.25f, dx_got);
    EXPECT_CLOSE(dx_got, dx_want, act_tol(dt));
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
  for (DType dt : kActDtypes) {
    uint64_t seed = 100;
    for (const AttnCase& c : cases) {
      const std::vector<int32_t> ds = doc_starts(c.docs);
      const int64_t N = static_cast<int64_t>(ds.size());
      const Tensor doc_start = Tensor::from_ints(ds, {N});
      const Tensor q = rounded(test::random_tensor({N, c.nh, c.hd}, ++seed), dt);
      const Tensor k = rounded(test::random_tensor({N, c.nkv, c.hd}, ++seed), dt);
      const Tensor v = rounded(test::random_tensor({N, c.nkv, c.hd}, ++seed), dt);
      const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
      const std::string what = std::string(dtype_name(dt)) + " hd " + std::to_string(c.hd) +
                               " nh " + std::to_string(c.nh) + " nkv " + std::to_string(c.nkv);
      Tensor o_want = Tensor::empty(q.shape()), lse_want = Tensor::empty({N, c.nh});
      Tensor o_got = poisoned(q.shape(), dt), lse_got = poisoned({N, c.nh}, DType::F32);
      cpu().attention_forward(q, k, v, doc_start, scale, o_want, lse_want);
      gpu().attention_forward(up_as(q, dt), up_as(k, dt), up_as(v, dt), up(doc_start), scale,
                              o_got, lse_got);
      const int64_t longest = *std::max_element(c.docs.begin(), c.docs.end());
      EXPECT_CLOSE(o_got, o_want, act_tol(dt, c.hd * longest)) << what;
      // BF16/F16 with hd 16/64/128 run the FlashAttention kernels (P rounded to the dtype for the
      // P.V product, exp2-based softmax): looser on lse and the backward than the fallback.
      const bool half = dt != DType::F32;
      EXPECT_CLOSE(lse_got, lse_want, (half ? Tol{1e-4f, 1e-4f} : tolerance(DType::F32, c.hd)))
          << what;

      // The backward from the GPU forward's outputs, as in training; the CPU reference gets the
      // same (rounded) o and lse.
      const Tensor o_used = Tensor::from_vector(host_values(o_got), q.shape());
      const Tensor lse_used = Tensor::from_vector(host_values(lse_got), {N, c.nh});
      const Tensor d_o = rounded(test::random_tensor(q.shape(), ++seed), dt);
      Tensor dq_want = Tensor::empty(q.shape()), dk_want = Tensor::empty(k.shape());
      Tensor dv_want = Tensor::empty(v.shape());
      cpu().attention_backward(q, k, v, o_used, lse_used, d_o, doc_start, scale, dq_want,
                               dk_want, dv_want);
      Tensor dq_got = poisoned(q.shape(), dt), dk_got = poisoned(k.shape(), dt);
      Tensor dv_got = poisoned(v.shape(), dt);
      gpu().attention_backward(up_as(q, dt), up_as(k, dt), up_as(v, dt), o_got, lse_got,
                               up_as(d_o, dt), up(doc_start), scale, dq_got, dk_got, dv_got);
      const Tol bwd = dt == DType::BF16  ? Tol{3e-2f, 1.5e-2f}
                      : dt == DType::F16 ? Tol{1e-2f, 5e-3f}
                                         : tolerance(DType::F32, c.hd * longest * (c.nh / c.nkv));
      EXPECT_CLOSE(dq_got, dq_want, bwd) << what;
      EXPECT_CLOSE(dk_got, dk_want, bwd) << what;
      EXPECT_CLOSE(dv_got, dv_want, bwd) << what;
    }
  }
}

// The ragged batch cuDNN is given (host side, no GPU needed): one sequence per document, the
// count rounded up to a power of two with empty sequences starting at n, the longest document
// rounded up to a power of two (at least 64).
TEST(CudnnDocuments, OneSequencePerDocumentInPowerOfTwoBuckets) {
  const std::vector<int32_t> ds = doc_starts({5, 300, 7});
  const cuda::CudnnDocuments d = cuda::cudnn_documents(ds);
  EXPECT_EQ(d.n, 312);
  EXPECT_EQ(d.count, 3);
  EXPECT_EQ(d.batch, 4);
  EXPECT_EQ(d.max_len, 512);
  EXPECT_EQ(d.cu_tokens, (std::vector<int32_t>{0, 5, 305, 312, 312}));
  EXPECT_EQ(d.lengths, (std::vector<int32_t>{5, 300, 7, 0}));
  const cuda::CudnnDocuments one = cuda::cudnn_documents(doc_starts({2048}));
  EXPECT_EQ(one.batch, 1);
  EXPECT_EQ(one.max_len, 2048);
  EXPECT_EQ(one.cu_tokens, (std::vector<int32_t>{0, 2048}));
  const cuda::CudnnDocuments tiny = cuda::cudnn_documents(doc_starts({1, 1, 1, 1, 1}));
  EXPECT_EQ(tiny.batch, 8);
  EXPECT_EQ(tiny.max_len, 64);
  EXPECT_EQ(tiny.lengths, (std::vector<int32_t>{1, 1, 1, 1, 1, 0, 0, 0}));
  EXPECT_EQ(cuda::cudnn_documents({}).count, 0);
}

// With the documents described (Ops::describe_documents, as LlamaModel does for every batch)
// bf16/f16 attention runs through cuDNN's fused SDPA as a ragged batch: document counts that are
// not powers of two (the graph's extra sequences are empty), one long document, documents of
// length 1, many short ones; two described batches alternating.
TEST_F(CudaVsCpu, AttentionThroughCudnnMatchesCpu) {
  if (!cuda::cudnn_attention_enabled()) GTEST_SKIP() << "built without cuDNN attention";
  std::vector<int> many;
  std::mt19937 rng(7);
  for (int i = 0; i < 40; ++i) many.push_back(1 + static_cast<int>(rng() % 64));
  const std::vector<AttnCase> cases = {
      {{256, 256}, 8, 2, 64},          // two rows of one document each
      {{100, 1, 923, 37}, 4, 4, 128},  // MHA, a length-1 document, lengths off the buckets
      {{5, 300, 7}, 8, 2, 128},        // 3 documents: one empty sequence in the graph
      {{1000}, 4, 1, 64},              // MQA, one long document
      {many, 8, 2, 128},               // 40 short documents (64 sequences in the graph)
  };
  for (DType dt : {DType::BF16, DType::F16}) {
    uint64_t seed = 300;
    for (const AttnCase& c : cases) {
      const std::vector<int32_t> ds = doc_starts(c.docs);
      const int64_t N = static_cast<int64_t>(ds.size());
      const Tensor doc_start = Tensor::from_ints(ds, {N});
      const Tensor q = rounded(test::random_tensor({N, c.nh, c.hd}, ++seed), dt);
      const Tensor k = rounded(test::random_tensor({N, c.nkv, c.hd}, ++seed), dt);
      const Tensor v = rounded(test::random_tensor({N, c.nkv, c.hd}, ++seed), dt);
      const Tensor d_o = rounded(test::random_tensor(q.shape(), ++seed), dt);
      const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
      const std::string what = std::string(dtype_name(dt)) + " " + std::to_string(c.docs.size()) +
                               " docs, hd " + std::to_string(c.hd) + " nh " +
                               std::to_string(c.nh) + " nkv " + std::to_string(c.nkv);
      // Another batch described after this one: lookups go by tensor, not by recency.
      const Tensor ds_dev = up(doc_start);
      gpu().describe_documents(ds_dev, ds);
      const Tensor other = up(Tensor::from_ints(doc_starts({7, 9}), {16}));
      gpu().describe_documents(other, doc_starts({7, 9}));

      const int64_t calls = cuda::cudnn_attention_calls();
      Tensor o_want = Tensor::empty(q.shape()), lse_want = Tensor::empty({N, c.nh});
      Tensor o_got = poisoned(q.shape(), dt), lse_got = poisoned({N, c.nh}, DType::F32);
      cpu().attention_forward(q, k, v, doc_start, scale, o_want, lse_want);
      gpu().attention_forward(up_as(q, dt), up_as(k, dt), up_as(v, dt), ds_dev, scale, o_got,
                              lse_got);
      const int64_t longest = *std::max_element(c.docs.begin(), c.docs.end());
      EXPECT_CLOSE(o_got, o_want, act_tol(dt, c.hd * longest)) << what;
      EXPECT_CLOSE(lse_got, lse_want, (Tol{1e-4f, 1e-4f})) << what;

      const Tensor o_used = Tensor::from_vector(host_values(o_got), q.shape());
      const Tensor lse_used = Tensor::from_vector(host_values(lse_got), {N, c.nh});
      Tensor dq_want = Tensor::empty(q.shape()), dk_want = Tensor::empty(k.shape());
      Tensor dv_want = Tensor::empty(v.shape());
      cpu().attention_backward(q, k, v, o_used, lse_used, d_o, doc_start, scale, dq_want,
                               dk_want, dv_want);
      Tensor dq_got = poisoned(q.shape(), dt), dk_got = poisoned(k.shape(), dt);
      Tensor dv_got = poisoned(v.shape(), dt);
      gpu().attention_backward(up_as(q, dt), up_as(k, dt), up_as(v, dt), o_got, lse_got,
                               up_as(d_o, dt), ds_dev, scale, dq_got, dk_got, dv_got);
      EXPECT_EQ(cuda::cudnn_attention_calls(), calls + 2) << what << ": cuDNN did not take both";
      const Tol bwd = dt == DType::BF16 ? Tol{3e-2f, 1.5e-2f} : Tol{1e-2f, 5e-3f};
      EXPECT_CLOSE(dq_got, dq_want, bwd) << what;
      EXPECT_CLOSE(dk_got, dk_want, bwd) << what;
      EXPECT_CLOSE(dv_got, dv_want, bwd) << what;
    }
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

namespace {
// Runs the op into a fresh F64 loss on ops' device and returns the loss on the host.
double run_ce(Ops& ops, const Tensor& x, const Tensor& w, const Tensor& targets, float grad_scale,
              Tensor* dx, Tensor* logits, int64_t chunk) {
  Tensor loss = Tensor::zeros({1}, DType::F64, ops.device());
  ops.lm_head_cross_entropy(x, w, targets, grad_scale, loss, dx, logits, chunk);
  return loss.to(Device::cpu()).data<double>()[0];
}
}  // namespace

TEST_F(CudaVsCpu, LmHeadCrossEntropyChunkedWithIgnoredTargets) {
  const int64_t N = 45, H = 24, V = 301;
  std::vector<int32_t> tg(static_cast<size_t>(N));
  std::mt19937 rng(3);
  for (int64_t i = 0; i < N; ++i)
    tg[static_cast<size_t>(i)] =
        (i < 7 || i % 3 == 0) ? kIgnoreIndex : static_cast<int32_t>(rng() % V);
  const Tensor targets = Tensor::from_ints(tg, {N});
  const float grad_scale = 1.0f / 25.0f;
  for (DType dt : kActDtypes) {
    const Tensor x = rounded(test::random_tensor({N, H}, 1), dt);
    const Tensor w = rounded(test::random_tensor({V, H}, 2), dt);
    const double loss_tol = dt == DType::F32 ? 1e-5 : 1e-4;
    for (int64_t chunk : {int64_t{7}, int64_t{16}, int64_t{45}, int64_t{1000}}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " chunk " + std::to_string(chunk));
      Tensor dx_want = Tensor::empty({N, H}), lg_want = Tensor::empty({N, V});
      const double want =
          run_ce(cpu(), x, w, targets, grad_scale, &dx_want, &lg_want, chunk);
      Tensor dx_got = poisoned({N, H}, dt), lg_got = poisoned({N, V}, DType::F32);
      const double got = run_ce(gpu(), up_as(x, dt), up_as(w, dt), up(targets), grad_scale,
                                &dx_got, &lg_got, chunk);
      EXPECT_NEAR(got / want, 1.0, loss_tol);
      EXPECT_CLOSE(lg_got, lg_want, tolerance(DType::F32, H));  // fp32 logits from rounded inputs
      EXPECT_CLOSE(dx_got, dx_want, act_tol(dt, V));
      // Without logits, and without dx.
      Tensor dx2 = poisoned({N, H}, dt);
      EXPECT_NEAR(run_ce(gpu(), up_as(x, dt), up_as(w, dt), up(targets), grad_scale, &dx2,
                         nullptr, chunk) / want, 1.0, loss_tol);
      EXPECT_CLOSE(dx2, dx_want, act_tol(dt, V));
      EXPECT_NEAR(run_ce(gpu(), up_as(x, dt), up_as(w, dt), up(targets), grad_scale, nullptr,
                         nullptr, chunk) / want, 1.0, loss_tol);
    }
  }
  // loss_sum accumulates across calls (micro-batches) without leaving the device.
  const Tensor x = test::random_tensor({N, H}, 1), w = test::random_tensor({V, H}, 2);
  const double once = run_ce(cpu(), x, w, targets, 1.0f, nullptr, nullptr, 16);
  Tensor acc = Tensor::zeros({1}, DType::F64, dev());
  gpu().lm_head_cross_entropy(up(x), up(w), up(targets), 1.0f, acc, nullptr, nullptr, 16);
  gpu().lm_head_cross_entropy(up(x), up(w), up(targets), 1.0f, acc, nullptr, nullptr, 7);
  EXPECT_NEAR(acc.to(Device::cpu()).data<double>()[0] / (2 * once), 1.0, 1e-5);
  // A target outside the vocabulary is not checked on the host: the loss becomes NaN and the
  // row's gradient zero.
  std::vector<int32_t> bad_tg = tg;
  bad_tg[10] = static_cast<int32_t>(V);
  const Tensor bad = Tensor::from_ints(bad_tg, {N});
  Tensor dx_bad = poisoned({N, H}, DType::F32);
  EXPECT_TRUE(std::isnan(run_ce(gpu(), up(x), up(w), up(bad), 1.0f, &dx_bad, nullptr, 8)));
  const std::vector<float> dxv = host_values(dx_bad);
  for (int64_t j = 0; j < H; ++j) EXPECT_EQ(dxv[static_cast<size_t>(10 * H + j)], 0.0f);
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
