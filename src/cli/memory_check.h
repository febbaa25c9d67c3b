// A size check before allocation: a micro-batch whose activations cannot fit in this machine's
// memory is refused up front with the figures, instead of ending in std::bad_alloc or the OOM
// killer half way through. The estimate is a lower bound (what any forward + backward must
// hold), so a refusal is always right; a run that passes may still need more.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenize_example.h"
#include "model/model_spec.h"

namespace ftune {

// Bytes a forward + backward over rows x width tokens needs at least: the batch itself, the
// residual stream kept at every layer boundary, one layer's activations, and a logits chunk.
uint64_t step_memory_lower_bound(const ModelSpec& spec, int64_t rows, int64_t width);

// Physical memory of this machine in bytes (0 when unknown).
uint64_t physical_memory_bytes();

// The longest example (rows are at least this wide).
int64_t longest_example(const std::vector<TokenizedExample>& examples);

// Throws ftune::Error naming both figures when step_memory_lower_bound exceeds physical memory.
// `what` names the knobs to lower, e.g. "train.micro_batch_size or data.max_seq_length".
void check_micro_batch_fits(const ModelSpec& spec, int64_t rows, int64_t width,
                            const std::string& what);

}  // namespace ftune
