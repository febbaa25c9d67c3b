// A host emulator for the flash-attention kernels: runs the real kernel code of
// src/backend/cuda/device/flash_*.cuh as plain C++ with every CUDA thread of a CTA as a fiber
// (ucontext), __syncthreads and the warp collectives (shuffles, ldmatrix, mma.sync) as
// barriers over those fibers, and the tensor-core instructions implemented from their PTX ISA
// definitions (backend/cuda/device/mma.cuh in this folder shadows the PTX one). It checks the
// kernels' index math, fragment layouts, masking and pipelining without a GPU; it says nothing
// about speed. Deterministic: fibers run round-robin, one CTA at a time.
#pragma once
#include <cuda_runtime.h>
#include <ucontext.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __launch_bounds__
#undef __forceinline__
#define __global__
#define __device__
#define __host__
#define __shared__
#define __forceinline__ inline
#define __launch_bounds__(...)

namespace emu {

struct Fiber {
  ucontext_t ctx;
  std::vector<char> stack;
  bool done = false;
  uint3 tid;
};

struct Barrier {
  int count = 0, arrived = 0, gen = 0;
};

struct Cta {
  uint3 block_idx;
  dim3 grid, block;
  std::vector<Fiber> fibers;
  int current = 0;
  ucontext_t sched;
  Barrier block_barrier;
  std::vector<Barrier> warp_barriers;
  // Per-warp exchange slots for the collectives: 8 words and a pointer per lane.
  std::vector<std::array<uint32_t, 32 * 8>> words;
  std::vector<std::array<const void*, 32>> ptrs;
  const std::function<void()>* body = nullptr;
};

inline Cta* g_cta = nullptr;
inline Cta& cta() { return *g_cta; }
inline int linear_tid() {
  const Fiber& f = cta().fibers[static_cast<size_t>(cta().current)];
  return static_cast<int>(f.tid.x);
}
inline int warp_id() { return linear_tid() / 32; }
inline int lane_id() { return linear_tid() % 32; }

inline void yield() {
  swapcontext(&cta().fibers[static_cast<size_t>(cta().current)].ctx, &cta().sched);
}

inline void arrive_and_wait(Barrier& b) {
  const int gen = b.gen;
  if (++b.arrived == b.count) {
    b.arrived = 0;
    ++b.gen;
    return;
  }
  while (b.gen == gen) yield();
}

inline void warp_sync() { arrive_and_wait(cta().warp_barriers[static_cast<size_t>(warp_id())]); }
inline uint32_t* warp_words() { return cta().words[static_cast<size_t>(warp_id())].data(); }
inline const void** warp_ptrs() { return cta().ptrs[static_cast<size_t>(warp_id())].data(); }

inline void fiber_entry() {
  (*cta().body)();
  cta().fibers[static_cast<size_t>(cta().current)].done = true;
}

// Runs body once per thread of every CTA of the grid (blockDim.x threads, 1-D blocks).
inline void launch(dim3 grid, dim3 block, const std::function<void()>& body);

}  // namespace emu

#define threadIdx (::emu::cta().fibers[static_cast<size_t>(::emu::cta().current)].tid)
#define blockIdx (::emu::cta().block_idx)
#define blockDim (::emu::cta().block)
#define gridDim (::emu::cta().grid)

inline void __syncthreads() { emu::arrive_and_wait(emu::cta().block_barrier); }
inline void __syncwarp(unsigned /*mask*/ = 0xffffffffu) { emu::warp_sync(); }

template <typename T>
inline T __shfl_xor_sync(unsigned /*mask*/, T v, int off) {
  static_assert(sizeof(T) == 4);
  uint32_t* w = emu::warp_words();
  std::memcpy(&w[emu::lane_id()], &v, 4);
  emu::warp_sync();
  T r;
  std::memcpy(&r, &w[emu::lane_id() ^ off], 4);
  emu::warp_sync();
  return r;
}

inline int min(int a, int b) { return a < b ? a : b; }

inline int atomicAdd(int* p, int v) {
  const int old = *p;
  *p = old + v;
  return old;
}

inline float atomicAdd(float* p, float v) {
  const float old = *p;
  *p = old + v;
  return old;
}

namespace emu {

// One CTA: its threads as fibers, run round-robin until all have returned. Kept out of line so
// that no caller variable lives across swapcontext.
[[gnu::noinline]] inline void run_cta(uint3 block_idx, dim3 grid, dim3 block,
                                      const std::function<void()>& body) {
  const int threads = static_cast<int>(block.x);
  Cta c;
  c.block_idx = block_idx;
  c.grid = grid;
  c.block = block;
  c.body = &body;
  c.block_barrier.count = threads;
  const int warps = (threads + 31) / 32;
  c.warp_barriers.resize(static_cast<size_t>(warps));
  for (auto& b : c.warp_barriers) b.count = 32;
  c.words.resize(static_cast<size_t>(warps));
  c.ptrs.resize(static_cast<size_t>(warps));
  c.fibers.resize(static_cast<size_t>(threads));
  g_cta = &c;
  for (int t = 0; t < threads; ++t) {
    Fiber& f = c.fibers[static_cast<size_t>(t)];
    f.tid.x = static_cast<unsigned>(t);
    f.tid.y = f.tid.z = 0;
    f.stack.resize(256 * 1024);
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.data();
    f.ctx.uc_stack.ss_size = f.stack.size();
    f.ctx.uc_link = &c.sched;
    makecontext(&f.ctx, fiber_entry, 0);
  }
  for (bool all_done = false; !all_done;) {
    all_done = true;
    for (int t = 0; t < threads; ++t) {
      if (c.fibers[static_cast<size_t>(t)].done) continue;
      c.current = t;
      swapcontext(&c.sched, &c.fibers[static_cast<size_t>(t)].ctx);
      all_done = all_done && c.fibers[static_cast<size_t>(t)].done;
    }
  }
  g_cta = nullptr;
}

inline void launch(dim3 grid, dim3 block, const std::function<void()>& body) {
  for (unsigned by = 0; by < grid.y; ++by) {
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      uint3 idx;
      idx.x = bx;
      idx.y = by;
      idx.z = 0;
      run_cta(idx, grid, block, body);
    }
  }
}

}  // namespace emu
