// Frozen base weights of a Llama-family model: loaded from an HF folder (names from the
// architecture table, every shape checked) or randomly initialised (built-in tiny model).
#pragma once
#include <array>
#include <functional>
#include <string>
#include <vector>

#include "core/nf4.h"
#include "core/tensor.h"
#include "model/model_spec.h"

namespace ftune {

class CheckpointReader;
class Ops;

struct LayerWeights {
  Tensor attn_norm, mlp_norm;              // [H]
  std::array<Tensor, kNumProj> weight;     // [out, in]
  std::array<Tensor, kNumProj> bias;       // [out] or undefined
  // After fuse_base_weights: q/k/v stacked as rows of one [(nh+2nkv)*hd, H] matrix and gate/up
  // of one [2F, H] matrix; weight[Q..V] and weight[Gate], weight[Up] are row views of them.
  Tensor qkv, gate_up;
  Tensor qkv_bias;  // [(nh+2nkv)*hd] when any of q/k/v has a bias (zeros where one has none)
  // QLoRA: the seven projection weights in NF4, one per nn.Linear as bitsandbytes quantizes
  // them (so a *-bnb-4bit checkpoint loads unchanged); weight, qkv and gate_up are then
  // undefined, and the model dequantizes one matrix at a time into a workspace before its GEMM.
  std::array<Nf4Weight, kNumProj> nf4;
  bool quantized() const { return nf4[0].defined(); }
  // FP8 base (model.fp8_base, after quantize_base_fp8): qkv, gate_up, weight[O] and weight[Down]
  // hold F8_E4M3 codes (weight[Q..V], [Gate], [Up] stay row views of the stacked ones) and each
  // of those four matrices one per-tensor scale, F32 [1]: value ~= code * scale (core/fp8.h).
  // fp8_scale[p] is the scale of the matrix holding projection p (q/k/v share one, gate/up one).
  std::array<Tensor, kNumProj> fp8_scale;
  bool fp8() const { return fp8_scale[0].defined(); }
  // Rows (out features) of projection p, dense or NF4.
  int64_t proj_rows(Proj p) const;
  // No tensors: a layer whose weights live elsewhere (model/sharded_layers.h).
  bool empty() const { return !attn_norm.defined(); }
};

// The frozen weight of one (fused) linear as its GEMMs take it: dense in the activation dtype, or
// FP8 codes [out, in] with their per-tensor scale (scale undefined: dense).
struct BaseMatrix {
  Tensor w;
  Tensor scale;
  BaseMatrix(Tensor weight) : w(std::move(weight)) {}  // NOLINT: a dense weight converts
  BaseMatrix(Tensor weight, Tensor fp8_scale) : w(std::move(weight)), scale(std::move(fp8_scale)) {}
  bool fp8() const { return scale.defined(); }
};

struct BaseWeights {
  Tensor embed;       // [V, H]
  Tensor final_norm;  // [H]
  Tensor lm_head;     // [V, H]; shares storage with embed when tied
  std::vector<LayerWeights> layers;
};

// How projection weights are held. A checkpoint whose projections are bitsandbytes 4-bit
// (io/bnb4bit.h) always loads as NF4, unchanged; an unquantized one is quantized on load when
// load_in_4bit is set (each weight converted to the compute dtype first, as transformers loads
// it before bitsandbytes quantizes it).
struct WeightLoadOptions {
  bool load_in_4bit = false;
  bool double_quant = true;  // bnb_4bit_use_double_quant for quantize-on-load
  // Called as soon as layer l is loaded; it may take the layer's tensors (a sharded base keeps
  // 1/N of them, model/sharded_layers.h), so the whole model never exists at once.
  std::function<void(int layer, LayerWeights& w)> on_layer;
};

// Loads every tensor the spec needs, converted to `dt` on `device` one tensor at a time (no
// full-precision copy of the model on the host; q/k/v and gate/up land stacked, see
// LayerWeights; NF4 weights are quantized on the host one tensor at a time and only their
// packed form goes to the device). Errors name the folder/file, the tensor and the expected and
// found shapes; extra tensors in the file are ignored.
BaseWeights load_base_weights(const ModelSpec& spec, const CheckpointReader& ckpt,
                              const std::string& origin, Device device, DType dt = DType::F32,
                              const WeightLoadOptions& opts = {});

// Whether the checkpoint's projection weights are bitsandbytes 4-bit.
bool checkpoint_is_bnb4bit(const ModelSpec& spec, const CheckpointReader& ckpt);

// Replaces the dense projection weights of every layer (CPU, unfused) by their NF4
// quantization (tests, and models built in memory).
void quantize_base_weights(BaseWeights& w, bool double_quant);

// model.fp8_base: replaces the dense projection matrices of every layer (after
// fuse_base_weights: qkv, gate_up, o, down) by F8_E4M3 codes with one per-tensor scale each
// (Ops::quantize_fp8 on their device), one matrix at a time. Norms, embeddings and lm_head stay
// in the compute dtype. Refuses NF4 layers.
void quantize_base_fp8(BaseWeights& w, Ops& ops);

// Bytes of the frozen base weights (dense tensors, tied ones once, and NF4 weights).
int64_t base_weight_bytes(const BaseWeights& w);

// Normal(0, std) weights, norms = 1 (seeded; for the built-in model and tests).
BaseWeights random_base_weights(const ModelSpec& spec, uint64_t seed, float std = 0.02f);

// Stacks q/k/v and gate/up of every layer (see LayerWeights) and converts every tensor to `dt`
// through `ops` (on its device). Tensors already stacked and of that dtype are kept as they are.
void fuse_base_weights(BaseWeights& w, Ops& ops, DType dt);
// The same for one layer (the layers of a sharded base are fused one by one as they load).
void fuse_layer_weights(LayerWeights& L, Ops& ops, DType dt);

// A copy of `w` on `device` (tied embeddings stay tied).
BaseWeights base_weights_to(const BaseWeights& w, const ModelSpec& spec, Device device);

// (name, tensor) pairs in HF naming, e.g. for writing a model folder; NF4 projections as the
// tensors transformers + bitsandbytes save (io/bnb4bit.h).
std::vector<std::pair<std::string, Tensor>> named_base_weights(const ModelSpec& spec,
                                                               const BaseWeights& w);

}  // namespace ftune
