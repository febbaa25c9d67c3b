// The parts of the cuDNN attention path that need no cuDNN (cudnn/cudnn_attention.h): the
// ragged-batch description of a packed batch's documents and the offsets kernel.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "backend/cuda/cudnn/cudnn_attention.h"
#include "core/error.h"

namespace ftune::cuda {

namespace {

// Buckets: powers of two (at least 1 sequence and 64 tokens), so that a few graphs serve packed
// batches whose document counts and lengths vary from one micro-batch to the next.
int64_t bucket(int64_t x, int64_t least) {
  int64_t b = least;
  while (b < x) b *= 2;
  return b;
}

__global__ void scale_offsets_kernel(const int32_t* __restrict__ cu, int64_t count, int q_mult,
                                     int kv_mult, int lse_mult, int32_t* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t t = cu[i];
    out[i] = t * q_mult;
    out[count + i] = t * kv_mult;
    out[2 * count + i] = t * lse_mult;
  }
}

}  // namespace

CudnnDocuments cudnn_documents(const std::vector<int32_t>& doc_start) {
  CudnnDocuments d;
  d.n = static_cast<int64_t>(doc_start.size());
  std::vector<int32_t> starts;
  int64_t longest = 0;
  for (int64_t i = 0; i < d.n; ++i) {
    if (doc_start[i] == i) {
      if (!starts.empty()) longest = std::max<int64_t>(longest, i - starts.back());
      starts.push_back(static_cast<int32_t>(i));
    }
  }
  if (!starts.empty()) longest = std::max<int64_t>(longest, d.n - starts.back());
  d.count = static_cast<int64_t>(starts.size());
  d.batch = bucket(d.count, 1);
  d.max_len = bucket(longest, 64);
  d.cu_tokens.assign(starts.begin(), starts.end());
  d.cu_tokens.resize(static_cast<size_t>(d.batch) + 1, static_cast<int32_t>(d.n));
  d.lengths.resize(static_cast<size_t>(d.batch));
  for (int64_t b = 0; b < d.batch; ++b) d.lengths[b] = d.cu_tokens[b + 1] - d.cu_tokens[b];
  return d;
}

void cudnn_scale_offsets(const int32_t* cu_tokens, int64_t batch, int nh, int nkv, int hd,
                         int32_t* out, cudaStream_t stream) {
  const int64_t count = batch + 1;
  const auto blocks = static_cast<unsigned>(std::min<int64_t>((count + 255) / 256, 1024));
  scale_offsets_kernel<<<blocks, 256, 0, stream>>>(cu_tokens, count, nh * hd, nkv * hd, nh, out);
  const cudaError_t e = cudaGetLastError();
  FTUNE_CHECK(e == cudaSuccess, "cudnn attention: offsets kernel launch failed: {}",
              cudaGetErrorString(e));
}

}  // namespace ftune::cuda
