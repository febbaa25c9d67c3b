// Built when CMake found no cuDNN or no cudnn-frontend headers: the cuDNN attention path is
// absent and every attention call goes to ftune's flash-attention kernels (cudnn_attention.h).
#include <cstdlib>
#include <cstring>

#include "backend/cuda/cudnn/cudnn_attention.h"
#include "core/error.h"

namespace ftune::cuda {

bool cudnn_attention_enabled() {
  const char* v = std::getenv("FTUNE_ATTENTION");
  FTUNE_CHECK(v == nullptr || *v == '\0' || std::strcmp(v, "auto") == 0 ||
                  std::strcmp(v, "flash") == 0,
              "FTUNE_ATTENTION={}: this build has no cuDNN attention (auto or flash)",
              v == nullptr ? "" : v);
  return false;
}

int64_t cudnn_attention_calls() { return 0; }

void cudnn_attention_release() {}

std::string cudnn_attention_describe() {
  return "ftune's flash kernels (built without cuDNN or the cudnn-frontend headers)";
}

bool cudnn_attention_forward(const CudaContext&, const CudnnDocuments&, const CudnnRagged&, DType,
                             const void*, const void*, const void*, int, int, int, float, void*,
                             float*) {
  return false;
}

bool cudnn_attention_backward(const CudaContext&, const CudnnDocuments&, const CudnnRagged&,
                              DType, const void*, const void*, const void*, const void*,
                              const float*, const void*, int, int, int, float, void*, void*,
                              void*) {
  return false;
}

}  // namespace ftune::cuda
