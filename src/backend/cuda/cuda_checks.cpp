// The CUDA launchers' checks that need the tensors' values (index tensors and the
// packed-document layout: copied to the host, then validated by the shared checks of
// backend/op_checks.h, so messages match the CPU backend's), and the launch-error check.
// Dtype, device and shape checks live in backend/op_checks.cpp.
#include <algorithm>
#include <cstdlib>

#include "backend/cuda/check.h"
#include "backend/cuda/cuda_kernels.h"

namespace ftune::cuda {

std::vector<int32_t> ints_to_host(const CudaContext& ctx, const Tensor& t) {
  std::vector<int32_t> v(static_cast<size_t>(t.numel()));
  if (v.empty()) return v;
  // Pageable destination: the copy is synchronous for the host; waiting on the stream first
  // orders it after the kernels that may have written t.
  FTUNE_CUDA_CHECK(
      cudaMemcpyAsync(v.data(), t.raw(), t.nbytes(), cudaMemcpyDeviceToHost, ctx.stream));
  FTUNE_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  return v;
}

std::vector<int32_t> require_indices(const CudaContext& ctx, const char* op, const char* name,
                                     const Tensor& t, int64_t limit, const char* what,
                                     const int32_t* allowed) {
  if (!ctx.check_values) return {};
  std::vector<int32_t> v = ints_to_host(ctx, t);
  check_indices(op, name, v.data(), static_cast<int64_t>(v.size()), limit, what, allowed);
  return v;
}

void require_doc_start_values(const CudaContext& ctx, const char* op, const Tensor& doc_start) {
  if (!ctx.check_values) return;
  const std::vector<int32_t> ds = ints_to_host(ctx, doc_start);
  check_doc_start(op, ds.data(), static_cast<int64_t>(ds.size()));
}

namespace {
bool sync_after_launch() {
  static const bool on = [] {
    const char* e = std::getenv("FTUNE_CUDA_SYNC");
    return e != nullptr && e[0] != '\0' && e[0] != '0';
  }();
  return on;
}
}  // namespace

void check_launch(const CudaContext& ctx, const char* op) {
  const cudaError_t e = cudaGetLastError();
  FTUNE_CHECK(e == cudaSuccess, "{}: kernel launch failed: {}", op, cudaGetErrorString(e));
  if (sync_after_launch()) {
    const cudaError_t s = cudaStreamSynchronize(ctx.stream);
    FTUNE_CHECK(s == cudaSuccess, "{}: kernel failed: {}", op, cudaGetErrorString(s));
  }
}

unsigned grid_for(int64_t n, int block) {
  // Enough blocks to fill any current GPU several times over; kernels stride beyond that.
  constexpr int64_t kMaxBlocks = 65536;
  const int64_t blocks = (n + block - 1) / block;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, kMaxBlocks));
}

}  // namespace ftune::cuda
