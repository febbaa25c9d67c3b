// The sharded base's gathers (model/sharded_layers.h) over a data-parallel communicator: the
// same async queue as the gradient buckets, so the two never interleave differently on
// different ranks.
#pragma once
#include "dist/communicator.h"
#include "model/sharded_layers.h"

namespace ftune {

class CommShardGatherer : public ShardGatherer {
 public:
  explicit CommShardGatherer(Communicator& c) : c_(c) {}
  int rank() const override { return c_.rank(); }
  int world_size() const override { return c_.world_size(); }
  uint64_t start_gather(const Tensor& shard, Tensor& full) override {
    return c_.all_gather_async(shard, full);
  }
  void wait_gather(uint64_t ticket) override { c_.wait_gather(ticket); }

 private:
  Communicator& c_;
};

}  // namespace ftune
