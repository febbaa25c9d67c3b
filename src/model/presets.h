// Model presets: the real shapes and vocabularies of common models, with random weights drawn
// on the fly (no files), for benchmarks and for checking a machine (`model.preset`,
// `ftune bench --preset`). Each preset is the model's own config.json, parsed by the same code
// as an HF folder's, so a preset is exactly the architecture a user would load.
#pragma once
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/model_spec.h"
#include "model/weights.h"

namespace ftune {

struct ModelPreset {
  const char* name;
  const char* config_json;  // the HF config.json of the model (shapes, RoPE, vocabulary)
};

const std::vector<ModelPreset>& model_presets();
// The spec of a preset; throws listing the known names for an unknown one.
ModelSpec preset_spec(const std::string& name);

// Random base weights (N(0, std), norms 1) created tensor by tensor on the host in `dt` with a
// counter-based generator (the same values for any thread count) and uploaded to `device`:
// host memory holds one tensor at a time. q/k/v and gate/up land stacked (LayerWeights).
// nf4: the seven projections of every layer are quantized on the host (bitsandbytes NF4, as
// model.load_in_4bit does after loading in `dt`) and only their packed form is uploaded.
BaseWeights random_base_weights_on(const ModelSpec& spec, uint64_t seed, float std, Device device,
                                   DType dt, bool nf4 = false, bool double_quant = true);

}  // namespace ftune
