// Internal to the CUDA backend: the host launchers behind CudaOps (one .cu file per op family,
// mirroring src/backend/cpu/cpu_kernels.h) and the CUDA-side checks they share. Every launcher
// validates its arguments first (the checks shared with the CPU backend, backend/op_checks.h,
// with ctx.dev() as the expected device, plus CUDA-only limits) and throws ftune::Error naming
// the op before anything is launched, owns its launch shape, launches on ctx.stream and checks
// the launch error.
// Semantics are those of backend/ops.h; the CPU backend is the reference they are tested against.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "backend/cuda/cudnn/cudnn_attention.h"
#include "backend/op_checks.h"
#include "backend/ops.h"
#include "core/tensor.h"

namespace ftune::cuda {

struct GemmPlan;  // cuda_gemm.cpp: cuBLASLt descriptors and algorithm for one GEMM shape

// Long-lived state owned by CudaOps and reused by every call, so that no op allocates in
// steady state: the cuBLASLt handle, its workspace and the GEMM plans per shape, and the
// lm_head + cross-entropy chunk buffers (grown when a larger chunk is asked for, never shrunk).
struct Workspaces {
  cublasLtHandle_t lt = nullptr;
  Tensor lt_workspace;  // U8, kLtWorkspaceBytes
  std::map<std::vector<int64_t>, std::unique_ptr<GemmPlan>> gemm_plans;
  Tensor ce_logits;    // F32 [rows, V] logits of one chunk (then dlogits when act is F32)
  Tensor ce_dlogits;   // act [rows, V] dlogits of one chunk (BF16/F16 only)
  Tensor ce_row_loss;  // F64 [rows]
  Tensor attn_workspace;  // U8: flash_attention_backward's workspace
  Tensor cudnn_workspace;  // U8: the cuDNN attention graphs' workspace
  Tensor fp8_amax;         // U32 [1]: quantize_fp8's amax (float bits)
  // Documents described by Ops::describe_documents, most recent last (at most
  // kDescribedDocuments): each holds its doc_start tensor, so the address it is looked up by
  // cannot be reused by another tensor while the entry lives.
  struct DescribedDocuments {
    Tensor doc_start;
    CudnnDocuments docs;
    Tensor index;  // I32 on the device: lengths [batch], token offsets [batch + 1]
    std::map<std::tuple<int, int, int>, Tensor> offsets;  // (nh, nkv, hd) -> cudnn_scale_offsets
  };
  std::vector<DescribedDocuments> documents;
  Workspaces();
  ~Workspaces();
  Workspaces(const Workspaces&) = delete;
  Workspaces& operator=(const Workspaces&) = delete;
};
inline constexpr size_t kLtWorkspaceBytes = size_t{32} << 20;  // NVIDIA's advice for Hopper

// What a launcher needs: the device its tensors must live on, the stream to launch on, the
// cuBLAS handle bound to that stream and the reused workspaces (null for launchers that use
// neither).
struct CudaContext {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  Workspaces* ws = nullptr;
  // Whether ops copy index tensors (ids, positions, doc_start) to the host to check their values
  // (a host synchronisation each). Ops::set_check_index_values turns it off for callers that
  // validate every batch once on the host (LlamaModel::prepare); the kernels then stay
  // memory-safe on bad values (they write NaN or clamp instead of reading out of bounds) but
  // give no error.
  bool check_values = true;
  // The device every tensor argument must live on.
  Device dev() const { return Device::cuda(device); }
};

// The stash of checkpointing mode `offload` (backend/activation_stash.h): pinned host memory
// and a copy stream ordered with `compute` by events.
std::unique_ptr<ActivationStash> make_activation_stash(int device, cudaStream_t compute);

// A device tensor of at least `numel` elements of dt held in `slot` (reallocated only to grow),
// viewed as `shape` (numel = shape_numel(shape)).
Tensor workspace_view(Tensor& slot, const Shape& shape, DType dt, int device);

// ---- checks that read device data, and launch checks (cuda_checks.cpp) ----
// Copies an I32 device tensor to the host (synchronous: waits for work queued on ctx.stream).
std::vector<int32_t> ints_to_host(const CudaContext& ctx, const Tensor& t);
// Every value of the I32 device tensor t is in [0, limit) (or equals `allowed`, when given);
// else throws "op: name[i] = v is outside <what> [0, limit)" (check_indices on a host copy).
// Returns the host copy (empty, without copying or checking, when !ctx.check_values).
std::vector<int32_t> require_indices(const CudaContext& ctx, const char* op, const char* name,
                                     const Tensor& t, int64_t limit, const char* what,
                                     const int32_t* allowed = nullptr);
// The values of doc_start (its shape checked by check_attention_*) describe contiguous
// documents (check_doc_start on a host copy), as the CPU backend requires.
void require_doc_start_values(const CudaContext& ctx, const char* op, const Tensor& doc_start);
// After a launch: throws naming the op if the launch failed. With FTUNE_CUDA_SYNC=1 in the
// environment it also synchronizes the stream, so asynchronous faults name their kernel.
void check_launch(const CudaContext& ctx, const char* op);
// A 1-D grid of `block`-thread blocks covering n items, capped (kernels use grid-stride loops).
unsigned grid_for(int64_t n, int block);

// ---- cuda_gemm.cpp ----
void gemm(const CudaContext& ctx, const Tensor& a, bool trans_a, const Tensor& b, bool trans_b,
          Tensor& c, float alpha, float beta);

// FP8 (cuda_gemm.cpp: gemm_fp8 through cuBLASLt, with a decode + F32 gemm fallback for shapes
// it has no FP8 kernel for; cuda_fp8.cu: the rest).
void gemm_fp8(const CudaContext& ctx, const Tensor& a, const Tensor& a_scale, const Tensor& b,
              const Tensor& b_scale, Tensor& c, float alpha, float beta);
void quantize_fp8(const CudaContext& ctx, const Tensor& x, Tensor& q, Tensor& scale);
void transpose(const CudaContext& ctx, const Tensor& src, Tensor& dst);
// The fallback's pieces: codes to unscaled F32 values (exact), and c = alpha sa sb acc + beta c.
Tensor fp8_decode(const CudaContext& ctx, const Tensor& q);
void fp8_epilogue(const CudaContext& ctx, const Tensor& acc, const Tensor& a_scale,
                  const Tensor& b_scale, float alpha, float beta, Tensor& c);

// ---- cuda_elementwise.cu ----
void add_bias(const CudaContext& ctx, Tensor& y, const Tensor& bias);
void bias_backward(const CudaContext& ctx, const Tensor& dy, Tensor& dbias);
void axpy(const CudaContext& ctx, float alpha, const Tensor& x, Tensor& y);
void scale(const CudaContext& ctx, Tensor& x, float alpha);
double sum_squares(const CudaContext& ctx, const Tensor& x);
void cast(const CudaContext& ctx, const Tensor& src, Tensor& dst);

// ---- cuda_nf4.cu ----
void dequantize_nf4(const CudaContext& ctx, const Nf4Weight& w, Tensor& out);

// ---- cuda_embedding.cu ----
void embedding_forward(const CudaContext& ctx, const Tensor& table, const Tensor& ids, Tensor& out);
void embedding_backward(const CudaContext& ctx, const Tensor& dy, const Tensor& ids,
                        Tensor& dtable);

// ---- cuda_norm.cu ----
void rms_norm_forward(const CudaContext& ctx, const Tensor& x, const Tensor& w, float eps,
                      Tensor& y, Tensor& rstd);
void rms_norm_backward(const CudaContext& ctx, const Tensor& dy, const Tensor& x, const Tensor& w,
                       const Tensor& rstd, Tensor& dx, Tensor* dw, bool accumulate);
void add_rms_norm_forward(const CudaContext& ctx, const Tensor& a, const Tensor& b,
                          const Tensor& w, float eps, Tensor& sum, Tensor& y, Tensor& rstd);

// ---- cuda_rope.cu ----
void rope_forward(const CudaContext& ctx, Tensor& x, const Tensor& positions, const Tensor& cos,
                  const Tensor& sin);
void rope_backward(const CudaContext& ctx, Tensor& dx, const Tensor& positions, const Tensor& cos,
                   const Tensor& sin);
void qkv_rope_split_forward(const CudaContext& ctx, const Tensor& qkv, const Tensor& positions,
                            const Tensor& cos, const Tensor& sin, Tensor& q, Tensor& k,
                            Tensor& v);
void qkv_rope_merge_backward(const CudaContext& ctx, const Tensor& dq, const Tensor& dk,
                             const Tensor& dv, const Tensor& positions, const Tensor& cos,
                             const Tensor& sin, Tensor& dqkv);

// ---- cuda_attention.cu ----
// Ops::describe_documents: keeps the documents of doc_start (host copy `host`) for the cuDNN
// attention path (Workspaces::documents); a no-op when that path is off.
void describe_documents(const CudaContext& ctx, const Tensor& doc_start,
                        const std::vector<int32_t>& host);
void attention_forward(const CudaContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                       const Tensor& doc_start, float scale, Tensor& o, Tensor& lse);
void attention_backward(const CudaContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& o, const Tensor& lse, const Tensor& d_o,
                        const Tensor& doc_start, float scale, Tensor& dq, Tensor& dk, Tensor& dv);

// ---- cuda_attention_kv_cache.cu ----
void attention_kv_cache(const CudaContext& ctx, const Tensor& q, const Tensor& k_cache,
                        const Tensor& v_cache, int64_t past, float scale, Tensor& o);

// ---- cuda_mlp.cu ----
void swiglu_forward(const CudaContext& ctx, const Tensor& gate, const Tensor& up, Tensor& out);
void swiglu_backward(const CudaContext& ctx, const Tensor& dout, const Tensor& gate,
                     const Tensor& up, Tensor& dgate, Tensor& dup);
void swiglu_fused_forward(const CudaContext& ctx, const Tensor& gu, Tensor& out);
void swiglu_fused_backward(const CudaContext& ctx, const Tensor& dout, const Tensor& gu,
                           Tensor& dgu);

// ---- cuda_dropout.cu ----
void dropout_forward(const CudaContext& ctx, const Tensor& x, float p, uint64_t seed, Tensor& out,
                     Tensor& mask);
void dropout_apply(const CudaContext& ctx, const Tensor& x, float p, uint64_t seed,
                   int64_t index_offset, Tensor& out);
void dropout_backward(const CudaContext& ctx, const Tensor& dy, const Tensor& mask, float p,
                      Tensor& dx);

// ---- cuda_cross_entropy.cu ----
void lm_head_cross_entropy(const CudaContext& ctx, const Tensor& x, const Tensor& w,
                           const Tensor& targets, float grad_scale, Tensor& loss_sum, Tensor* dx,
                           Tensor* logits, int64_t chunk_tokens);

// ---- cuda_adamw.cu ----
void adamw_step(const CudaContext& ctx, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                float lr, float beta1, float beta2, float eps, float weight_decay, int64_t step);

}  // namespace ftune::cuda
