// CudaOps: the CUDA backend (F32, BF16 and F16 activations; backend/ops.h "Dtypes"). It owns one
// CUDA stream (a blocking stream, so the allocator's default-stream copies and memsets stay
// ordered with its kernels), one cuBLAS handle bound to that stream, the cuBLASLt handle and
// the workspaces reused by every call (cuda_kernels.h: Workspaces), and forwards every op of
// backend/ops.h to the launchers listed in cuda_kernels.h. Only sum_squares returns a host value
// (and synchronizes).
// Tested op by op against the CPU reference in tests/cuda/test_cuda_ops.cpp.
#include "backend/cuda_ops.h"

#include <memory>

#include "backend/cuda/check.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/device_guard.h"

namespace ftune {

namespace {

class CudaOps final : public Ops {
 public:
  explicit CudaOps(int device) {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    FTUNE_CHECK(e == cudaSuccess, "make_cuda_ops({}): no usable CUDA device: {}", device,
                cudaGetErrorString(e));
    FTUNE_CHECK(device >= 0 && device < count,
                "make_cuda_ops({}): no such device ({} CUDA device(s) visible)", device, count);
    ctx_.device = device;
    cuda::DeviceGuard guard(device);
    FTUNE_CUDA_CHECK(cudaStreamCreate(&ctx_.stream));
    const cublasStatus_t s = cublasCreate(&ctx_.blas);
    if (s != CUBLAS_STATUS_SUCCESS) {
      cudaStreamDestroy(ctx_.stream);
      fail("make_cuda_ops({}): cublasCreate failed: {}", device, cublasGetStatusString(s));
    }
    try {
      FTUNE_CUDA_CHECK(cublasSetStream(ctx_.blas, ctx_.stream));
      // Plain fp32 GEMMs (no TF32): this backend must match the fp32 CPU reference.
      FTUNE_CUDA_CHECK(cublasSetMathMode(ctx_.blas, CUBLAS_DEFAULT_MATH));
      ws_ = std::make_unique<cuda::Workspaces>();
      FTUNE_CUDA_CHECK(cublasLtCreate(&ws_->lt));
      ws_->lt_workspace = Tensor::empty({static_cast<int64_t>(cuda::kLtWorkspaceBytes)},
                                        DType::U8, Device::cuda(device));
      ctx_.ws = ws_.get();
    } catch (...) {
      release();
      throw;
    }
  }
  ~CudaOps() override { release(); }
  void set_check_index_values(bool on) override { ctx_.check_values = on; }
  void describe_documents(const Tensor& doc_start, const std::vector<int32_t>& host) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::describe_documents(ctx_, doc_start, host);
  }
  std::unique_ptr<ActivationStash> make_activation_stash() override {
    return cuda::make_activation_stash(ctx_.device, ctx_.stream);
  }
  void synchronize() override {
    cuda::DeviceGuard g(ctx_.device);
    FTUNE_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
  }
  CudaOps(const CudaOps&) = delete;
  CudaOps& operator=(const CudaOps&) = delete;

  Device device() const override { return Device::cuda(ctx_.device); }
  const char* name() const override { return "cuda"; }

  void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
            float beta) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::gemm(ctx_, a, trans_a, b, trans_b, c, alpha, beta);
  }
  void add_bias(Tensor& y, const Tensor& bias) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::add_bias(ctx_, y, bias);
  }
  void bias_backward(const Tensor& dy, Tensor& dbias) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::bias_backward(ctx_, dy, dbias);
  }
  void axpy(float alpha, const Tensor& x, Tensor& y) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::axpy(ctx_, alpha, x, y);
  }
  void scale(Tensor& x, float alpha) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::scale(ctx_, x, alpha);
  }
  double sum_squares(const Tensor& x) override {
    cuda::DeviceGuard g(ctx_.device);
    return cuda::sum_squares(ctx_, x);
  }
  void cast(const Tensor& src, Tensor& dst) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::cast(ctx_, src, dst);
  }
  void dequantize_nf4(const Nf4Weight& w, Tensor& out) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::dequantize_nf4(ctx_, w, out);
  }
  void quantize_fp8(const Tensor& x, Tensor& q, Tensor& scale) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::quantize_fp8(ctx_, x, q, scale);
  }
  void gemm_fp8(const Tensor& a, const Tensor& a_scale, const Tensor& b, const Tensor& b_scale,
                Tensor& c, float alpha, float beta) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::gemm_fp8(ctx_, a, a_scale, b, b_scale, c, alpha, beta);
  }
  void transpose(const Tensor& src, Tensor& dst) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::transpose(ctx_, src, dst);
  }

  void embedding_forward(const Tensor& table, const Tensor& ids, Tensor& out) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::embedding_forward(ctx_, table, ids, out);
  }
  void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dtable) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::embedding_backward(ctx_, dy, ids, dtable);
  }

  void rms_norm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y,
                        Tensor& rstd) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::rms_norm_forward(ctx_, x, w, eps, y, rstd);
  }
  void rms_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                         Tensor& dx, Tensor* dw, bool accumulate) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::rms_norm_backward(ctx_, dy, x, w, rstd, dx, dw, accumulate);
  }
  void add_rms_norm_forward(const Tensor& a, const Tensor& b, const Tensor& w, float eps,
                            Tensor& sum, Tensor& y, Tensor& rstd) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::add_rms_norm_forward(ctx_, a, b, w, eps, sum, y, rstd);
  }

  void rope_forward(Tensor& x, const Tensor& positions, const Tensor& cos,
                    const Tensor& sin) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::rope_forward(ctx_, x, positions, cos, sin);
  }
  void rope_backward(Tensor& dx, const Tensor& positions, const Tensor& cos,
                     const Tensor& sin) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::rope_backward(ctx_, dx, positions, cos, sin);
  }
  void qkv_rope_split_forward(const Tensor& qkv, const Tensor& positions, const Tensor& cos,
                              const Tensor& sin, Tensor& q, Tensor& k, Tensor& v) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::qkv_rope_split_forward(ctx_, qkv, positions, cos, sin, q, k, v);
  }
  void qkv_rope_merge_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                               const Tensor& positions, const Tensor& cos, const Tensor& sin,
                               Tensor& dqkv) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::qkv_rope_merge_backward(ctx_, dq, dk, dv, positions, cos, sin, dqkv);
  }

  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& doc_start,
                         float scale, Tensor& o, Tensor& lse) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::attention_forward(ctx_, q, k, v, doc_start, scale, o, lse);
  }
  void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                          const Tensor& lse, const Tensor& d_o, const Tensor& doc_start,
                          float scale, Tensor& dq, Tensor& dk, Tensor& dv) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::attention_backward(ctx_, q, k, v, o, lse, d_o, doc_start, scale, dq, dk, dv);
  }
  void attention_kv_cache(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                          int64_t past, float scale, Tensor& o) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::attention_kv_cache(ctx_, q, k_cache, v_cache, past, scale, o);
  }

  void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::swiglu_forward(ctx_, gate, up, out);
  }
  void swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate,
                       Tensor& dup) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::swiglu_backward(ctx_, dout, gate, up, dgate, dup);
  }
  void swiglu_fused_forward(const Tensor& gu, Tensor& out) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::swiglu_fused_forward(ctx_, gu, out);
  }
  void swiglu_fused_backward(const Tensor& dout, const Tensor& gu, Tensor& dgu) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::swiglu_fused_backward(ctx_, dout, gu, dgu);
  }

  void dropout_forward(const Tensor& x, float p, uint64_t seed, Tensor& out,
                       Tensor& mask) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::dropout_forward(ctx_, x, p, seed, out, mask);
  }
  void dropout_apply(const Tensor& x, float p, uint64_t seed, int64_t index_offset,
                     Tensor& out) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::dropout_apply(ctx_, x, p, seed, index_offset, out);
  }
  void dropout_backward(const Tensor& dy, const Tensor& mask, float p, Tensor& dx) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::dropout_backward(ctx_, dy, mask, p, dx);
  }

  void lm_head_cross_entropy(const Tensor& x, const Tensor& w, const Tensor& targets,
                             float grad_scale, Tensor& loss_sum, Tensor* dx, Tensor* logits,
                             int64_t chunk_tokens) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::lm_head_cross_entropy(ctx_, x, w, targets, grad_scale, loss_sum, dx, logits,
                                chunk_tokens);
  }

  void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int64_t step) override {
    cuda::DeviceGuard g(ctx_.device);
    cuda::adamw_step(ctx_, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step);
  }

 private:
  void release() noexcept {
    // Best effort, never throws: finish queued work, then drop the handle and the stream
    // (with this device current, restoring the caller's afterwards).
    int previous = -1;
    if (cudaGetDevice(&previous) == cudaSuccess && previous != ctx_.device)
      cudaSetDevice(ctx_.device);
    if (ctx_.stream != nullptr) cudaStreamSynchronize(ctx_.stream);
    ws_.reset();  // plans, the Lt handle and the workspace buffers (back to the allocator's cache)
    ctx_.ws = nullptr;
    if (ctx_.blas != nullptr) cublasDestroy(ctx_.blas);
    if (ctx_.stream != nullptr) cudaStreamDestroy(ctx_.stream);
    ctx_.blas = nullptr;
    ctx_.stream = nullptr;
    if (previous >= 0 && previous != ctx_.device) cudaSetDevice(previous);
  }

  cuda::CudaContext ctx_;
  std::unique_ptr<cuda::Workspaces> ws_;
};

}  // namespace

std::unique_ptr<Ops> make_cuda_ops(int device) {
  cuda_register_allocator();
  return std::make_unique<CudaOps>(device);
}

}  // namespace ftune
