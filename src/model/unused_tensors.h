// Tensors of a checkpoint that the architecture does not use are never ignored silently: a layer
// beyond num_hidden_layers means config.json and the weights disagree (an error naming both);
// any other unused tensor is a warning naming it.
#pragma once
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/model_spec.h"

namespace ftune {

// Names in ckpt that load_base_weights does not read (rotary inv_freq buffers excepted).
std::vector<std::string> unused_tensors(const ModelSpec& spec, const CheckpointReader& ckpt);

// Throws for a tensor of a layer >= spec.num_layers; warns (stderr, one line) for the others.
void check_unused_tensors(const ModelSpec& spec, const CheckpointReader& ckpt,
                          const std::string& config_path);

}  // namespace ftune
