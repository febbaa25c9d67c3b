// The FLOP and traffic model of a training step (flop_model.h), counted from
// LlamaModel::layer_forward / layer_backward and lora_group_forward / backward.
#include "model/flop_model.h"

namespace ftune {

StepCost step_cost_per_token(const ModelSpec& s, const LoraSpec& lora, int64_t seq_len,
                             bool checkpointing, DType dtype) {
  const double H = static_cast<double>(s.hidden_size), F = static_cast<double>(s.intermediate_size);
  const double V = static_cast<double>(s.vocab_size), L = static_cast<double>(s.num_layers);
  const double Q = static_cast<double>(s.q_dim() + 2 * s.kv_dim());
  const double r = static_cast<double>(lora.r);
  const double a = static_cast<double>(dtype_size(dtype));
  double base = 0, lora_fb = 0, lora_recompute = 0;
  for (Proj p : kAllProj) {
    const auto sh = s.proj_shape(p);
    const double out = static_cast<double>(sh[0]), in = static_cast<double>(sh[1]);
    base += out * in;
    if (!lora.targets[static_cast<size_t>(p)]) continue;
    // Forward x A^T and t B^T; backward dB, dt, dA and the input gradient: 2 flops per
    // multiply-add each, 6 r (in + out) in all.
    lora_fb += 6.0 * r * (in + out);
    // The recomputed forward: down_proj only remakes its LoRA input cache x A^T.
    lora_recompute += p == Proj::Down ? 2.0 * r * in : 2.0 * r * (in + out);
  }
  StepCost c;
  c.base_gemm_flops = L * 4.0 * base + 4.0 * V * H;  // lm_head: forward + input gradient
  c.lora_gemm_flops = L * lora_fb;
  // A token at position i of a causal row attends to i + 1 keys: (S + 1) / 2 on average;
  // QK^T and PV are 2 hd flops per key and head each.
  const double attn_fwd = 2.0 * static_cast<double>(s.head_dim * s.num_heads) *
                          static_cast<double>(seq_len + 1) * L;
  c.attention_flops = 3.5 * attn_fwd;
  // Non-GEMM traffic per layer (a bytes per element): forward rms_norm (2H), RoPE split (2Q),
  // add + rms_norm (4H), SwiGLU (3F), residual add (3H); backward SwiGLU (5F), two rms_norm
  // backwards (8H), RoPE merge (2Q). Cross-entropy per token: F32 logits written and read,
  // dlogits written and read.
  const double fwd = a * (9.0 * H + 2.0 * Q + 3.0 * F);
  const double bwd = a * (5.0 * F + 8.0 * H + 2.0 * Q);
  c.elementwise_bytes = L * (fwd + bwd) + (8.0 + 2.0 * a) * V;
  if (checkpointing) {
    const double down = static_cast<double>(s.hidden_size) * F;
    c.recompute_gemm_flops = L * (2.0 * (base - down) + lora_recompute);
    c.recompute_attention_flops = attn_fwd;
    c.elementwise_bytes += L * (fwd - a * 3.0 * H);  // no residual add for the skipped output
  }
  return c;
}

int64_t kernels_per_micro_batch(const ModelSpec& s, bool checkpointing) {
  // Per layer: 4 base GEMMs forward, 4 backward, LoRA 2 forward + 4 backward per group (16 + 16),
  // about 20 other kernels (norms, RoPE, SwiGLU, adds, attention, casts).
  const int64_t per_layer = 8 + 24 + 20 + (checkpointing ? 16 : 0);
  return s.num_layers * per_layer + 20;
}

}  // namespace ftune
