// RoPE frequencies and cos/sin tables, matching HF's ROPE_INIT_FUNCTIONS (default, linear,
// llama3) in modeling_rope_utils.py; cos/sin computed in fp32 as HF does.
#pragma once
#include <vector>

#include "core/tensor.h"
#include "model/model_spec.h"

namespace ftune {

// inv_freq[i], i < head_dim/2.
std::vector<float> rope_inv_freq(const RopeSpec& rope, int64_t head_dim);

// cos/sin tables [positions, head_dim/2] (CPU F32).
struct RopeTables {
  Tensor cos, sin;
};
RopeTables rope_tables(const std::vector<float>& inv_freq, int64_t positions);

}  // namespace ftune
