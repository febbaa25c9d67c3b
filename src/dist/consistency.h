// Checks that the ranks of a data-parallel job agree:
//  - before training: the same config, model and data (one hash each), else one message
//    naming the first rank that differs from rank 0 and what differs;
//  - every distributed.verify_every steps: the same LoRA weights and optimizer state (a
//    checksum per tensor), else a message naming the ranks and the first differing tensor.
// Every rank reaches the same verdict (all-gather), so all stop together with the same error.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "dist/communicator.h"

namespace ftune {

// 64-bit FNV-1a of a tensor's bytes (copied to the host first when on a GPU).
uint64_t tensor_checksum(const Tensor& t);

// `what`: (label, hash) pairs such as ("config", h1), ("model", h2), ("data", h3).
void check_same_job(Communicator& comm, const std::vector<std::pair<std::string, uint64_t>>& what);

// Compares a checksum of every named tensor across ranks after optimizer step `step`.
void verify_replicas(Communicator& comm,
                     const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                     int64_t step);

}  // namespace ftune

namespace ftune {

// Cheap identity of a model folder: names, sizes and the first and last 64 KiB of config.json
// and every *.safetensors file (reading 16 GB of weights per rank at start would be slow).
uint64_t model_folder_hash(const std::string& dir);

}  // namespace ftune
