// Frozen base weights of a Llama-family model: loaded from an HF folder (names from the
// architecture table, every shape checked) or randomly initialised (built-in tiny model).
#pragma once
#include <array>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/model_spec.h"

namespace ftune {

class CheckpointReader;

struct LayerWeights {
  Tensor attn_norm, mlp_norm;              // [H]
  std::array<Tensor, kNumProj> weight;     // [out, in]
  std::array<Tensor, kNumProj> bias;       // [out] or undefined
  // After fuse_base_weights: q/k/v stacked as rows of one [(nh+2nkv)*hd, H] matrix and gate/up
  // of one [2F, H] matrix; weight[Q..V] and weight[Gate], weight[Up] are row views of them.
  Tensor qkv, gate_up;
  Tensor qkv_bias;  // [(nh+2nkv)*hd] when any of q/k/v has a bias (zeros where one has none)
};

struct BaseWeights {
  Tensor embed;       // [V, H]
  Tensor final_norm;  // [H]
  Tensor lm_head;     // [V, H]; shares storage with embed when tied
  std::vector<LayerWeights> layers;
};

// Loads every tensor the spec needs, converted to `dt` on `device` one tensor at a time (no
// full-precision copy of the model on the host; q/k/v and gate/up land stacked, see LayerWeights). Errors name the folder/file,
// the tensor and the expected and found shapes; extra tensors in the file are ignored.
BaseWeights load_base_weights(const ModelSpec& spec, const CheckpointReader& ckpt,
                              const std::string& origin, Device device, DType dt = DType::F32);

// Normal(0, std) weights, norms = 1 (seeded; for the built-in model and tests).
BaseWeights random_base_weights(const ModelSpec& spec, uint64_t seed, float std = 0.02f);

// Stacks q/k/v and gate/up of every layer (see LayerWeights) and converts every tensor to `dt`
// through `ops` (on its device). Tensors already stacked and of that dtype are kept as they are.
class Ops;
void fuse_base_weights(BaseWeights& w, Ops& ops, DType dt);

// A copy of `w` on `device` (tied embeddings stay tied).
BaseWeights base_weights_to(const BaseWeights& w, const ModelSpec& spec, Device device);

// (name, tensor) pairs in HF naming, e.g. for writing a model folder.
std::vector<std::pair<std::string, Tensor>> named_base_weights(const ModelSpec& spec,
                                                               const BaseWeights& w);

}  // namespace ftune
