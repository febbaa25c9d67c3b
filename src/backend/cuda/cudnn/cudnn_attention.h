// Causal grouped-query attention over packed documents through cuDNN's fused SDPA (the
// cudnn-frontend graph API), forward and backward. Same semantics as the flash-attention kernels
// (flash_attention.h) and the CPU reference: token i attends to j iff j is in [doc_start[i], i].
//
// cuDNN sees the packed tokens as a ragged batch: one sequence per document (THD layout, ragged
// offsets into q/k/v/o and into lse [n, nh]), causal within each sequence, sequence lengths as
// its padding mask. A graph is built for each (sequences, longest document, heads, head dim,
// dtype, direction) and kept; the sequence count and the longest length are rounded up to
// buckets (powers of two; the extra sequences are empty), so packed batches with varying
// document counts reuse a few graphs.
//
// Built only when CMake finds cuDNN and the cudnn-frontend headers (FTUNE_HAS_CUDNN); otherwise
// (and at run time with FTUNE_ATTENTION=flash) cudnn_attention_enabled() is false and every call
// is left to the flash kernels. A graph cuDNN refuses for a shape is remembered: the call returns
// false (nothing launched) and the caller falls back to the flash kernels, with one warning.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace ftune::cuda {

struct CudaContext;

// The documents of one packed batch as cuDNN wants them, computed on the host from doc_start.
struct CudnnDocuments {
  int64_t n = 0;        // tokens
  int64_t count = 0;    // documents
  int64_t batch = 0;    // sequences in the graph (count rounded up to its bucket)
  int64_t max_len = 0;  // longest document rounded up to its bucket
  // [batch + 1] token offsets of the sequences (empty sequences at the end start at n), then
  // [batch] lengths; uploaded by the caller.
  std::vector<int32_t> cu_tokens, lengths;
};
CudnnDocuments cudnn_documents(const std::vector<int32_t>& doc_start);

// Whether this build has the cuDNN path and FTUNE_ATTENTION does not turn it off ("flash").
bool cudnn_attention_enabled();
// How many forward and backward calls cuDNN ran in this process (tests check the path is taken).
int64_t cudnn_attention_calls();
// Destroys the cached graphs and the cuDNN handles (they are made again on the next call), so a
// leak check at exit sees none of cuDNN's memory. Called by release_cached_memory(CUDA).
void cudnn_attention_release();
// One line for `ftune doctor`: which attention bf16/fp16 training uses and why.
std::string cudnn_attention_describe();

// Device arrays for one call: lengths [batch] and the ragged offsets [batch + 1] of q/o/dq/do
// (tokens * nh * hd), of k/v/dk/dv (tokens * nkv * hd) and of lse (tokens * nh), int32.
struct CudnnRagged {
  const int32_t* lengths = nullptr;
  const int32_t* off_q = nullptr;
  const int32_t* off_kv = nullptr;
  const int32_t* off_lse = nullptr;
};
// Fills off_q/off_kv/off_lse (3 arrays of batch + 1 int32, contiguous at `out`) from the token
// offsets on `stream`.
void cudnn_scale_offsets(const int32_t* cu_tokens, int64_t batch, int nh, int nkv, int hd,
                         int32_t* out, cudaStream_t stream);

// Return false without launching anything when cuDNN cannot take the call (not built, refused
// shape, offsets past int32); then nothing was written. act is BF16 or F16.
bool cudnn_attention_forward(const CudaContext& ctx, const CudnnDocuments& docs,
                             const CudnnRagged& ragged, DType act, const void* q, const void* k,
                             const void* v, int nh, int nkv, int hd, float scale, void* o,
                             float* lse);
bool cudnn_attention_backward(const CudaContext& ctx, const CudnnDocuments& docs,
                              const CudnnRagged& ragged, DType act, const void* q, const void* k,
                              const void* v, const void* o, const float* lse, const void* d_o,
                              int nh, int nkv, int hd, float scale, void* dq, void* dk, void* dv);

}  // namespace ftune::cuda
