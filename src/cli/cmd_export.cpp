// `ftune export --model DIR [--adapter DIR] --out FILE.gguf --format gguf
// [--type f16|bf16|q8_0|q4_k_m] [--overwrite]`: one GGUF file for llama.cpp (model/gguf_export.h).
#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"
#include "model/gguf_export.h"

namespace ftune {

int cmd_export(const ExportArgs& a) {
  FTUNE_CHECK(!a.model.empty(), "export: --model is required");
  FTUNE_CHECK(!a.out.empty(), "export: --out is required");
  FTUNE_CHECK(a.format == "gguf", "export: unknown --format '{}' (supported: gguf)", a.format);
  (void)parse_gguf_file_type(a.type);  // refuse a bad --type before any work
  GgufExportOptions o;
  o.model_dir = a.model;
  o.adapter_dir = a.adapter;
  o.out_path = a.out;
  o.type = a.type;
  o.overwrite = a.overwrite;
  const GgufExportResult r = export_gguf(o);
  for (const auto& w : r.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  std::string types;
  for (const auto& [t, n] : r.tensors_per_type)
    types += (types.empty() ? "" : ", ") + std::to_string(n) + " " + t;
  std::fprintf(stderr, "wrote %s (%s, %.1f MiB; tensors: %s)\n", a.out.c_str(),
               r.architecture.c_str(), static_cast<double>(r.file_bytes) / 1048576.0, types.c_str());
  return 0;
}

}  // namespace ftune
