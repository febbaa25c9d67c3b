// `ftune merge --model DIR --adapter DIR --out DIR [--dtype bf16|fp16|fp32]
// [--max-shard-size 5GB] [--overwrite]`: folds a PEFT LoRA adapter into the base weights and
// writes an HF model folder (model/merge.h).
#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"
#include "model/merge.h"

namespace ftune {

int cmd_merge(const MergeArgs& a) {
  FTUNE_CHECK(!a.model.empty(), "merge: --model is required");
  FTUNE_CHECK(!a.adapter.empty(), "merge: --adapter is required");
  FTUNE_CHECK(!a.out.empty(), "merge: --out is required");
  MergeOptions o;
  o.model_dir = a.model;
  o.adapter_dir = a.adapter;
  o.out_dir = a.out;
  o.overwrite = a.overwrite;
  if (!a.dtype.empty()) (void)parse_merge_dtype(a.dtype);  // refuse a bad value before any work
  o.dtype = a.dtype;
  o.max_shard_bytes = parse_byte_size(a.max_shard_size);
  const MergeResult r = merge_lora(o);
  std::fprintf(stderr, "merged %d adapted tensors into %s (%s, %zu file%s, %.1f MiB of weights)\n",
               r.adapted_tensors, a.out.c_str(), torch_dtype_name(r.dtype).c_str(),
               r.weight_files.size(), r.weight_files.size() == 1 ? "" : "s",
               static_cast<double>(r.total_bytes) / 1048576.0);
  return 0;
}

}  // namespace ftune
