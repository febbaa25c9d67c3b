// Checkpointing mode `offload`: the layer inputs that checkpointing keeps for the backward are
// parked in host memory during the forward and brought back just before the backward needs
// them, so the device holds O(1) layers of saved activations instead of one per layer.
//
// The CUDA stash copies on a side stream, ordered with the compute stream by events only (no
// host synchronisation): put() starts the device-to-host copy into pinned memory behind the
// compute queued so far and keeps the device tensor alive until the copy is done (the compute
// stream is told to wait for it before the memory can be reused, at the next put at the latest);
// prefetch() starts the copy back into a fresh device tensor; take() makes the compute stream
// wait for it. Pinned buffers are kept across steps. The default stash (CPU backend) keeps a
// host copy of each tensor, the same semantics without a second device.
#pragma once
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace ftune {

class ActivationStash {
 public:
  virtual ~ActivationStash() = default;
  // Starts moving `t` (contiguous, on the backend's device) out under `slot` (>= 0). The caller
  // drops its own references to `t`.
  virtual void put(int slot, const Tensor& t) = 0;
  // Starts bringing `slot` back to the device ahead of take(). A no-op for an empty slot.
  virtual void prefetch(int slot) = 0;
  // The tensor put under `slot`, back on the device and ready for compute queued from now on.
  // The slot is empty afterwards.
  virtual Tensor take(int slot) = 0;
  // Empties every slot (after a step that failed half-way); buffers are kept.
  virtual void clear() = 0;
  // Bytes of host memory the stash holds (pinned buffers on CUDA).
  virtual int64_t host_bytes() const = 0;
};

// The default: a host copy per slot (what the CPU backend uses).
std::unique_ptr<ActivationStash> make_host_copy_stash();

}  // namespace ftune
