// Checkpoint tensors the architecture does not read (see unused_tensors.h).
#include "model/unused_tensors.h"

#include <cstdio>
#include <set>

#include "core/error.h"
#include "model/architecture.h"

namespace ftune {

namespace {

// The layer index of "model.layers.<i>.…", or -1.
int64_t layer_of(const std::string& name) {
  static const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return -1;
  int64_t v = 0;
  size_t i = prefix.size();
  if (i >= name.size() || name[i] < '0' || name[i] > '9') return -1;
  for (; i < name.size() && name[i] >= '0' && name[i] <= '9'; ++i) {
    v = v * 10 + (name[i] - '0');
    if (v > (int64_t{1} << 40)) return v;
  }
  return i < name.size() && name[i] == '.' ? v : -1;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::vector<std::string> unused_tensors(const ModelSpec& spec, const CheckpointReader& ckpt) {
  std::set<std::string> used = {tensor_names::embed(), tensor_names::final_norm()};
  if (!spec.tie_word_embeddings) used.insert(tensor_names::lm_head());
  for (int l = 0; l < spec.num_layers; ++l) {
    used.insert(tensor_names::attn_norm(l));
    used.insert(tensor_names::mlp_norm(l));
    for (Proj p : kAllProj) {
      const std::string w = tensor_names::proj_weight(l, p);
      used.insert(w);
      // The quant state of a bitsandbytes 4-bit weight (io/bnb4bit.h).
      if (ckpt.contains(w + ".quant_state.bitsandbytes__nf4"))
        for (const char* aux : {".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map",
                                ".quant_state.bitsandbytes__nf4"})
          used.insert(w + aux);
      if (spec.proj_bias[static_cast<size_t>(p)]) used.insert(tensor_names::proj_bias(l, p));
    }
  }
  std::vector<std::string> out;
  for (const std::string& n : ckpt.names()) {
    if (used.count(n) || ends_with(n, "rotary_emb.inv_freq")) continue;
    // Tied embeddings: a saved lm_head copy is harmless.
    if (spec.tie_word_embeddings && n == tensor_names::lm_head()) continue;
    out.push_back(n);
  }
  return out;
}

void check_unused_tensors(const ModelSpec& spec, const CheckpointReader& ckpt,
                          const std::string& config_path) {
  const std::vector<std::string> unused = unused_tensors(spec, ckpt);
  for (const std::string& n : unused) {
    const int64_t layer = layer_of(n);
    FTUNE_CHECK(layer < spec.num_layers,
                "{}: tensor '{}' belongs to layer {}, but {} says num_hidden_layers = {} "
                "(weights and config.json disagree)",
                ckpt.file_of(n), n, layer, config_path, spec.num_layers);
  }
  if (unused.empty()) return;
  std::fprintf(stderr, "warning: %s: %zu tensor(s) not used by the %s architecture, e.g. '%s' (in %s)\n",
               ckpt.folder().c_str(), unused.size(), spec.arch.c_str(), unused.front().c_str(),
               ckpt.file_of(unused.front()).c_str());
}

}  // namespace ftune
