// FlashAttention-2-style causal grouped-query attention over packed documents on tensor cores
// (mma.sync m16n8k16, bf16 or fp16 in, fp32 accumulation and softmax statistics), forward and
// backward, in O(N) memory. Semantics are those of the CPU reference
// (src/backend/cpu/cpu_attention.cpp):
//   q [n, nh, hd], k/v [n, nkv, hd], o [n, nh, hd] row-major; query head h reads kv head
//   h / (nh / nkv); token i attends to j iff doc_start[j] == doc_start[i] and j <= i (documents
//   are contiguous, doc_start non-decreasing, so: iff doc_start[i] <= j <= i);
//   lse [n, nh] (fp32) = log sum_j exp(scale q_i.k_j).
// Backward (FA2): P_ij = exp(scale q_i.k_j - lse_i), D_i = dO_i.O_i, dS_ij = P_ij (dO_i.v_j - D_i),
//   dq_i = scale sum_j dS_ij k_j, dk_j = scale sum dS_ij q_i, dv_j = sum P_ij dO_i (sums over the
//   query heads of j's kv head too).
// T is __nv_bfloat16 or __half (explicit instantiations in the .cu files). The launchers only
// enqueue work on `stream`: no allocation, no host synchronisation. They throw ftune::Error
// naming the op for unsupported arguments and launch failures. The T arrays and the workspace
// must be 16-byte aligned. doc_start values are trusted (the caller validates them, e.g. with
// check_doc_start); lse is fp32 [n, nh].
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace ftune::cuda {

// Head dims with a compiled kernel: 16, 32, 64, 96 and 128.
bool flash_attention_supported(int head_dim);

// Bytes of device workspace that flash_attention_backward needs: an fp32 dq accumulator
// [n, nh, hd], D = rowsum(dO * O) [n, nh] and the order of its key blocks.
size_t flash_attention_workspace_bytes(int64_t n_tokens, int nh, int nkv, int hd);

// o and lse are fully written (every element, for every valid input).
template <typename T>
void flash_attention_forward(const T* q, const T* k, const T* v, const int32_t* doc_start,
                             int64_t n, int nh, int nkv, int hd, float scale, T* o, float* lse,
                             cudaStream_t stream);

// dq, dk, dv are fully written. dq is not bitwise deterministic: it is summed with fp32 atomics
// over key blocks. workspace: flash_attention_workspace_bytes(n, nh, nkv, hd) bytes on the
// device, 16-byte aligned, contents irrelevant (it is cleared on `stream`).
template <typename T>
void flash_attention_backward(const T* q, const T* k, const T* v, const T* o, const float* lse,
                              const T* d_o, const int32_t* doc_start, int64_t n, int nh, int nkv,
                              int hd, float scale, T* dq, T* dk, T* dv, void* workspace,
                              cudaStream_t stream);

}  // namespace ftune::cuda
