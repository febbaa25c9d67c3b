// One check macro for CUDA runtime and cuBLAS calls: throws ftune::Error naming the failing
// expression, file and line.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/error.h"

namespace ftune::cuda {
inline const char* status_string(cudaError_t e) { return cudaGetErrorString(e); }
inline const char* status_string(cublasStatus_t s) { return cublasGetStatusString(s); }
inline bool status_ok(cudaError_t e) { return e == cudaSuccess; }
inline bool status_ok(cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS; }
}  // namespace ftune::cuda

#define FTUNE_CUDA_CHECK(expr)                                                          \
  do {                                                                                  \
    auto _st = (expr);                                                                  \
    if (!::ftune::cuda::status_ok(_st))                                                 \
      ::ftune::fail("{}:{}: {} failed: {}", __FILE__, __LINE__, #expr,                  \
                    ::ftune::cuda::status_string(_st));                                 \
  } while (0)
