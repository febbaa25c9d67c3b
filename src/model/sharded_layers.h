// The frozen base sharded across data-parallel ranks (FSDP-style, for models bigger than one
// device): each rank keeps 1/N of every decoder layer's bytes and gathers a whole layer just
// before it is used, the next layer's gather running while this one computes. Two gather
// buffers are reused for all layers, so a rank holds (weights / N) + 2 layers.
//
// A layer travels as one flat byte buffer: every tensor of the fused layer (weights.h:
// fuse_layer_weights), dense or NF4, at a 256-byte aligned offset, padded to N equal shards.
// The gathered layer is a set of views into that buffer, so no copy follows the gather.
//
// Every rank must acquire the same layers in the same order (each acquire may start a
// collective); LlamaModel::idle_pass lets a rank with no micro-batch left keep step.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "model/weights.h"

namespace ftune {

// What a sharded base needs from the collective library (dist/ implements it over the
// communicator). Tensors live on the device the layers live on.
class ShardGatherer {
 public:
  virtual ~ShardGatherer() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Starts full = concatenation of every rank's `shard` (U8; full holds world_size x shard
  // bytes); both stay untouched by the caller until wait_gather(ticket). Every rank starts the
  // same gathers in the same order.
  virtual uint64_t start_gather(const Tensor& shard, Tensor& full) = 0;
  // Returns once `full` may be read (GPU: work queued from now on waits for it).
  virtual void wait_gather(uint64_t ticket) = 0;
};

// Where each tensor of a fused layer sits in its flat buffer.
struct LayerPackLayout {
  enum Field : uint8_t {
    kAttnNorm, kMlpNorm, kQkv, kGateUp, kWeightO, kWeightDown, kQkvBias, kBiasO, kBiasGate,
    kBiasUp, kBiasDown, kNf4Packed, kNf4Code, kNf4Absmax, kNf4NestedAbsmax, kNf4NestedCode,
  };
  struct Entry {
    Field field;
    int proj = 0;  // NF4 fields: the projection
    DType dtype;
    Shape shape;
    size_t offset = 0;  // bytes into the buffer
  };
  std::vector<Entry> entries;
  size_t bytes = 0;  // end of the last tensor (unpadded)
  bool quantized = false;
  std::array<int64_t, kNumProj> rows{};       // out features of each projection
  std::array<bool, kNumProj> has_bias{};      // which projections have a bias
  std::array<Nf4Weight, kNumProj> nf4_meta;   // NF4: shape, block sizes, offset (no tensors)
};

// The layout of a fused layer (dense: qkv/gate_up stacked; or NF4).
LayerPackLayout layer_pack_layout(const LayerWeights& w);
// Copies every tensor of w into `buffer` (U8, at least layout.bytes, on w's device).
void pack_layer(const LayerWeights& w, const LayerPackLayout& layout, Tensor& buffer);
// The layer as views into `buffer` (which they keep alive); weight[Q..V], weight[Gate, Up] and
// the q/k/v biases are row views of the stacked tensors, as fuse_layer_weights leaves them.
LayerWeights unpack_layer(const LayerPackLayout& layout, const Tensor& buffer);

class ShardedLayers {
 public:
  ShardedLayers(ShardGatherer& g, Device device);

  // Appends the next layer (fused, on `device`): keeps this rank's shard and releases w's
  // tensors (w becomes empty). Every layer must be dense, or every layer NF4.
  void add(LayerWeights& w);
  int size() const { return static_cast<int>(layers_.size()); }
  bool quantized() const { return !layers_.empty() && layers_[0].layout.quantized; }

  // Layer l, gathered (views valid until the acquire after next); starts gathering `next`
  // (-1: none) into the other buffer so it arrives while l computes.
  const LayerWeights& acquire(int l, int next);

  int64_t shard_bytes() const;   // what this rank keeps of all layers
  int64_t buffer_bytes() const;  // the two gather buffers (allocated on first acquire)
  int64_t gathers() const { return gathers_; }  // gathers started so far (tests)

 private:
  struct Layer {
    LayerPackLayout layout;
    size_t shard_bytes = 0;
    Tensor shard;  // U8 [shard_bytes]: bytes [rank * shard_bytes, (rank + 1) * shard_bytes)
  };
  struct Slot {
    int layer = -1;
    bool pending = false;
    uint64_t ticket = 0;
    uint64_t last_use = 0;
    Tensor buffer;  // U8 [N x largest shard]
    LayerWeights view;
  };
  Slot* find(int l);
  size_t largest_shard() const;  // bytes of the largest layer's shard (a buffer holds N of them)
  void start(Slot& s, int l);
  void finish(Slot& s);

  ShardGatherer& g_;
  Device device_;
  std::vector<Layer> layers_;
  std::array<Slot, 2> slots_;
  uint64_t clock_ = 0;
  int64_t gathers_ = 0;
};

}  // namespace ftune
