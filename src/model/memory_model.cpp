// The memory model (memory_model.h): every tensor a training step holds at its peak, counted
// from the allocations in llama_model.cpp, lora.cpp, weights.cpp, train/optimizer.cpp and the
// backends' workspaces. Names in the items follow LlamaModel::LayerCache.
#include "model/memory_model.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"
#include "model/llama_model.h"

namespace ftune {

namespace {

// The projection groups LlamaModel runs as one fused linear (llama_model.cpp `Group`), with
// their input width.
struct GroupShape {
  const char* name;
  std::vector<Proj> members;
  int64_t in;
};

std::vector<GroupShape> groups_of(const ModelSpec& s) {
  return {{"qkv", {Proj::Q, Proj::K, Proj::V}, s.hidden_size},
          {"o", {Proj::O}, s.q_dim()},
          {"gate_up", {Proj::Gate, Proj::Up}, s.hidden_size},
          {"down", {Proj::Down}, s.intermediate_size}};
}

int64_t targeted(const LoraSpec& l, const GroupShape& g) {
  int64_t k = 0;
  for (Proj p : g.members) k += l.targets[static_cast<size_t>(p)] ? 1 : 0;
  return k;
}

// The caching allocator's size classes (backend/cuda/cuda_allocator.cpp).
int64_t cuda_rounded(int64_t bytes) {
  const int64_t b = std::max<int64_t>(bytes, 1);
  const int64_t g = b <= (int64_t{1} << 20) ? 512 : (int64_t{2} << 20);
  return (b + g - 1) / g * g;
}

// flash_attention_workspace_bytes (backend/cuda/flash_attention.cpp): dq accumulator, D and the
// key-block order, each on a 256-byte boundary.
int64_t flash_workspace_bytes(int64_t n, int64_t nh, int64_t hd) {
  auto up = [](int64_t b) { return (b + 255) / 256 * 256; };
  return up(n * nh * hd * 4) + up(n * nh * 4) + up((n + 15) / 16 * 4);
}

bool flash_attention_used(const MemoryModelInput& in) {
  const int64_t hd = in.spec.head_dim;
  return in.backend == BackendKind::Cuda && in.dtype != DType::F32 &&
         (hd == 16 || hd == 32 || hd == 64 || hd == 96 || hd == 128);
}

int64_t sum_items(const std::vector<MemoryItem>& v) {
  int64_t t = 0;
  for (const auto& i : v) t += i.total();
  return t;
}

}  // namespace

int64_t nf4_bytes(int64_t numel) {
  return (numel + 1) / 2 + (numel + kNf4BlockSize - 1) / kNf4BlockSize * 4;
}

int64_t MemoryEstimate::tensor_peak() const {
  return base_weights + lora_params + lora_grads + optimizer_state + activations +
         attention_workspace + lm_head_ce_workspace + gemm_workspace + fp8_workspace;
}

int64_t MemoryEstimate::device_total() const {
  return tensor_peak() + host_workspaces + allocator_overhead + cuda_context;
}

MemoryEstimate estimate_memory(const MemoryModelInput& in) {
  const ModelSpec& s = in.spec;
  s.validate();
  in.lora.validate();
  FTUNE_CHECK(in.micro_batch >= 1 && in.seq_len >= 1,
              "memory model: micro-batch {} x {} tokens (both must be >= 1)", in.micro_batch,
              in.seq_len);
  FTUNE_CHECK(in.backend == BackendKind::Cuda || in.dtype == DType::F32,
              "memory model: the CPU backend computes in F32 (asked for {})", dtype_name(in.dtype));
  const int64_t a = static_cast<int64_t>(dtype_size(in.dtype));
  const int64_t N = in.micro_batch * in.seq_len;
  const int64_t H = s.hidden_size, F = s.intermediate_size, V = s.vocab_size, L = s.num_layers;
  const int64_t nh = s.num_heads, hd = s.head_dim, qd = s.q_dim(), kvd = s.kv_dim();
  const int64_t Q = qd + 2 * kvd;  // fused q/k/v width
  const int64_t r = in.lora.r;
  const bool dropout = in.lora.dropout > 0.0;
  const bool cuda = in.backend == BackendKind::Cuda;
  // Checkpointing runs the MLP in row chunks (llama_model.cpp): its transients and LoRA caches
  // take Nm rows at a time.
  const int64_t mlp_chunk = mlp_chunk_rows(in.mlp_chunk_tokens);
  const bool mlp_chunked = in.checkpointing && N > mlp_chunk;
  const int64_t Nm = mlp_chunked ? mlp_chunk : N;

  MemoryEstimate e;
  std::vector<MemoryItem> base, lora, act, ws, host;

  // ---- frozen base weights (weights.cpp: q/k/v and gate/up fused per layer) ----
  base.push_back({"base weights", "embed_tokens [V, H]", V * H * a, 1});
  if (!s.tie_word_embeddings) base.push_back({"base weights", "lm_head [V, H]", V * H * a, 1});
  base.push_back({"base weights", "norm [H]", H * a, 1});
  // One decoder layer's tensors (each once; `count` L when held whole).
  std::vector<MemoryItem> layer;
  layer.push_back({"base weights", "layer norms [H]", H * a, 2});
  auto proj = [&](const char* name, int64_t rows, int64_t cols) {
    const int64_t n = rows * cols;
    layer.push_back({"base weights",
                     std::string(name) + (in.load_in_4bit ? " (NF4 + absmax)"
                                          : in.fp8_base   ? " (FP8 + scale)"
                                                          : ""),
                     in.load_in_4bit ? nf4_bytes(n) : in.fp8_base ? n + 4 : n * a, 1});
  };
  proj("q/k/v [(nh+2nkv)hd, H]", Q, H);
  proj("o_proj [H, nh hd]", H, qd);
  proj("gate/up [2F, H]", 2 * F, H);
  proj("down_proj [H, F]", H, F);
  const auto& pb = s.proj_bias;
  if (pb[0] || pb[1] || pb[2]) layer.push_back({"base weights", "q/k/v bias", Q * a, 1});
  if (pb[static_cast<size_t>(Proj::O)]) layer.push_back({"base weights", "o_proj bias", H * a, 1});
  if (pb[static_cast<size_t>(Proj::Gate)]) layer.push_back({"base weights", "gate bias", F * a, 1});
  if (pb[static_cast<size_t>(Proj::Up)]) layer.push_back({"base weights", "up bias", F * a, 1});
  if (pb[static_cast<size_t>(Proj::Down)]) layer.push_back({"base weights", "down bias", H * a, 1});
  if (in.shard_base) {
    // model/sharded_layers.cpp: a layer's tensors packed at 256-byte offsets, padded to N equal
    // shards; each rank keeps its shard of every layer and two gather buffers of N shards.
    FTUNE_CHECK(in.world_size >= 1, "memory model: world size {}", in.world_size);
    constexpr int64_t kAlign = 256;
    int64_t packed = 0;
    for (const auto& i : layer) packed += (i.total() + kAlign - 1) / kAlign * kAlign;
    const int64_t w = in.world_size;
    const int64_t shard = ((packed + w - 1) / w + kAlign - 1) / kAlign * kAlign;
    base.push_back({"base weights", fmt::format("layer shards (1/{} of each layer)", w), shard, L});
    base.push_back({"base weights", "gather buffers (2 whole layers)", shard * w, 2});
  } else {
    for (MemoryItem i : layer) {
      i.count *= L;
      base.push_back(i);
    }
  }

  // ---- LoRA: one flat F32 buffer each for params, grads, AdamW m and v (+ compute copy) ----
  int64_t n_lora = 0;
  for (Proj p : kAllProj) {
    if (!in.lora.targets[static_cast<size_t>(p)]) continue;
    const auto sh = s.proj_shape(p);
    n_lora += r * (sh[0] + sh[1]);
  }
  n_lora *= L;
  lora.push_back({"lora params", "A/B masters (F32)", 4 * n_lora, 1});
  if (a != 4) lora.push_back({"lora params", "A/B compute copies", a * n_lora, 1});
  lora.push_back({"lora grads", "dA/dB (F32)", 4 * n_lora, 1});
  lora.push_back({"optimizer", "AdamW m, v (F32)", 4 * n_lora, 2});

  // ---- activations at the peak: the backward of the last layer ----
  act.push_back({"activations", "batch ids/positions/doc_start/targets (I32)", 4 * N, 4});
  act.push_back({"activations", "loss accumulator (F64)", 8, 1});
  const int64_t rope_pos = std::max<int64_t>(in.seq_len, std::min<int64_t>(s.max_position_embeddings, 4096));
  act.push_back({"activations", "RoPE cos/sin tables (F32)", rope_pos * (hd / 2) * 4, 2});
  // Layer inputs: the embedding output and every layer's output (the last one is the final
  // norm's input), kept in both modes.
  // With offload (CUDA) the device holds, at that peak, the last layer's input, the final
  // output and the prefetched input of the layer before; the others wait in pinned host memory.
  const bool offload = cuda && in.checkpointing && in.offload && L >= 2;
  if (offload) {
    act.push_back({"activations", "layer inputs [N, H] (2 on the device + the output)", N * H * a, 3});
  } else {
    act.push_back({"activations", "layer inputs [N, H] (L + 1)", N * H * a, L + 1});
  }
  act.push_back({"activations", "final norm out + its grad [N, H]", N * H * a, 2});
  act.push_back({"activations", "final norm rstd [N] (F32)", N * 4, 1});
  act.push_back({"activations", "running input grad dx [N, H]", N * H * a, 1});
  // One layer's cache (LayerCache without x): all L layers without checkpointing, the one being
  // recomputed with it.
  const int64_t layers_kept = in.checkpointing ? 1 : L;
  std::vector<MemoryItem> cache = {
      {"activations", "layer cache: n1, h, n2 [N, H]", N * H * a, 3},
      {"activations", "layer cache: rstd1, rstd2 [N] (F32)", N * 4, 2},
      {"activations", "layer cache: q, attn [N, nh hd]", N * qd * a, 2},
      {"activations", "layer cache: k, v [N, nkv hd]", N * kvd * a, 2},
      {"activations", "layer cache: lse [N, nh] (F32)", N * nh * 4, 1},
      {"activations", "layer cache: gu [N, 2F]", N * 2 * F * a, 1},
      {"activations", "layer cache: m [N, F]", N * F * a, 1},
  };
  // Chunked, the MLP's tensors and LoRA caches exist only inside its backward, one chunk at a
  // time: they join the MLP's backward steps below instead of the layer cache.
  std::vector<MemoryItem> mlp_chunk_items;
  if (mlp_chunked) {
    cache.resize(cache.size() - 2);
    mlp_chunk_items = {{"activations", "MLP chunk: gu [Nm, 2F]", Nm * 2 * F * a, 1},
                       {"activations", "MLP chunk: m [Nm, F]", Nm * F * a, 1}};
  }
  const auto groups = groups_of(s);
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const GroupShape& g = groups[gi];
    const int64_t k = targeted(in.lora, g);
    if (k == 0) continue;
    const bool in_chunk = mlp_chunked && gi >= 2;  // gate/up and down: the MLP's rows
    std::vector<MemoryItem>& to = in_chunk ? mlp_chunk_items : cache;
    const int64_t rows = in_chunk ? Nm : N;
    const std::string gn = std::string(in_chunk ? "MLP chunk: LoRA " : "layer cache: LoRA ") + g.name;
    if (!dropout) {
      if (k == static_cast<int64_t>(g.members.size()))
        to.push_back({"activations", gn + " x A^T [N, k r]", rows * k * r * a, 1});
      else
        to.push_back({"activations", gn + " x A^T [N, r]", rows * r * a, k});
    } else {  // dropout(x) and its mask are regenerated in backward, not kept
      to.push_back({"activations", gn + " dropout(x) A^T [N, r]", rows * r * a, k});
    }
  }
  int64_t cache_bytes = 0;
  for (auto& c : cache) {
    cache_bytes += c.total();
    c.count *= layers_kept;
    act.push_back(c);
  }
  // The largest set of layer_backward temporaries, step by step (llama_model.cpp).
  auto lora_bwd = [&](const GroupShape& g, int64_t rows) -> std::vector<MemoryItem> {
    const int64_t k = targeted(in.lora, g);
    if (k == 0) return {};
    const std::string gn = std::string("backward: LoRA ") + g.name;
    if (!dropout && k == static_cast<int64_t>(g.members.size()))
      return {{"activations", gn + " dt [N, k r]", rows * k * r * a, 1}};
    std::vector<MemoryItem> v = {{"activations", gn + " dt [N, r]", rows * r * a, 1}};
    if (dropout) v.push_back({"activations", gn + " dropout(x) regenerated, then its grad", rows * g.in * a, 1});
    return v;
  };
  const auto G = groups_of(s);
  auto with = [](std::vector<MemoryItem> v, const std::vector<MemoryItem>& more) {
    v.insert(v.end(), more.begin(), more.end());
    return v;
  };
  const MemoryItem dm{"activations", "backward: dm [Nm, F]", Nm * F * a, 1};
  const MemoryItem dgu{"activations", "backward: dgu [Nm, 2F]", Nm * 2 * F * a, 1};
  const MemoryItem dn2{"activations", "backward: dn2 [N, H]", N * H * a, 1};
  const MemoryItem dattn{"activations", "backward: dattn [N, nh hd]", N * qd * a, 1};
  const MemoryItem dq{"activations", "backward: dq [N, nh hd]", N * qd * a, 1};
  const MemoryItem dkv{"activations", "backward: dk, dv [N, nkv hd]", N * kvd * a, 2};
  const MemoryItem dqkv{"activations", "backward: dqkv [N, (nh+2nkv) hd]", N * Q * a, 1};
  const MemoryItem dn1{"activations", "backward: dn1 [N, H]", N * H * a, 1};
  std::vector<MemoryItem> attn_step = {dn2, dattn, dq, dkv};
  if (cuda && !flash_attention_used(in))
    attn_step.push_back({"activations", "backward: attention delta [N, nh] (F32)", N * nh * 4, 1});
  // Chunked, dn2 [N, H] is made before the MLP's chunks, and the chunk's own tensors (gu, m and
  // the LoRA caches) are live.
  std::vector<MemoryItem> mlp_extra, mlp_extra_without_m;
  if (mlp_chunked) {
    mlp_extra = mlp_chunk_items;
    mlp_extra.push_back(dn2);
    for (const MemoryItem& i : mlp_extra)  // m is freed before dgu is made
      if (i.name.find(": m [") == std::string::npos) mlp_extra_without_m.push_back(i);
  }
  const std::vector<std::vector<MemoryItem>> steps = {
      with(with({dm}, lora_bwd(G[3], Nm)), mlp_extra),  // down projection
      with({dm, dgu}, mlp_extra_without_m),             // SwiGLU
      with({dgu, dn2}, lora_bwd(G[2], Nm)),             // gate/up
      with({dn2, dattn}, lora_bwd(G[1], N)),            // o_proj
      attn_step,                                        // attention
      {dn2, dq, dkv, dqkv},                             // RoPE merge
      with({dn2, dqkv, dn1}, lora_bwd(G[0], N)),        // q/k/v
  };
  size_t worst = 0;
  for (size_t i = 1; i < steps.size(); ++i)
    if (sum_items(steps[i]) > sum_items(steps[worst])) worst = i;
  act.insert(act.end(), steps[worst].begin(), steps[worst].end());

  e.boundary_per_token = H * a;
  e.layer_cache_per_token = cache_bytes / N;
  e.transient_per_token = sum_items(steps[worst]) / N;
  e.kept_per_token = (offload ? 3 : L + 1) * H * a + layers_kept * e.layer_cache_per_token + 3 * H * a + 4;

  // ---- workspaces ----
  const int64_t chunk = std::min(ce_chunk_rows(in.ce_chunk_tokens, in.load_in_4bit), N);
  if (cuda) {
    ws.push_back({"gemm workspace", "cuBLASLt workspace", int64_t{32} << 20, 1});
    ws.push_back({"lm_head+CE workspace", "logits chunk [chunk, V] (F32)", chunk * V * 4, 1});
    if (a != 4) ws.push_back({"lm_head+CE workspace", "dlogits chunk [chunk, V]", chunk * V * a, 1});
    ws.push_back({"lm_head+CE workspace", "row losses [chunk] (F64)", chunk * 8, 1});
    if (in.fp8_base) {
      // lora.cpp base_backward: the largest matrix transposed (codes) and the E5M2 codes of its
      // output gradient, alive together during one GEMM (the forward's E4M3 input is smaller).
      const int64_t biggest = std::max({Q * H, H * qd, 2 * F * H, H * F});
      ws.push_back({"fp8 workspace", "transposed weight codes + gradient codes",
                    biggest + Nm * std::max(2 * F, Q), 1});
    }
    if (in.cudnn_attention && in.dtype != DType::F32) {
      // cuDNN's SDPA backward workspace, measured on an H200 (cuDNN 9.14, llama-3.2-1b and
      // llama-3-8b): the flash kernels' dq accumulator and D plus, with grouped-query heads,
      // two fp32 [N, nh, hd] full-head dK/dV buffers (+0.125 GiB at both points).
      // Sized for the graph's token bound: N rounded up to a power of two (at least 64).
      int64_t Nb = 64;
      while (Nb < N) Nb *= 2;
      const int64_t full_head = in.spec.num_kv_heads < nh ? 2 * Nb * nh * hd * 4 : 0;
      ws.push_back({"attention workspace", "cuDNN SDPA backward: dq accumulator, stats, full-head dK/dV",
                    flash_workspace_bytes(Nb, nh, hd) + full_head, 1});
    } else if (flash_attention_used(in)) {
      ws.push_back({"attention workspace", "flash backward dq accumulator, D, block order",
                    flash_workspace_bytes(N, nh, hd), 1});
    }
  } else {
    host.push_back({"host workspace", "lm_head+CE logits chunk (F32)", chunk * V * 4, 1});
    host.push_back({"host workspace", "lm_head+CE row losses (F64)", N * 8, 1});
    host.push_back({"host workspace", "attention backward delta, doc ends", N * nh * 4 + N * 8, 1});
  }

  e.base_weights = sum_items(base);
  for (const auto& i : lora) {
    if (i.part == "lora params") e.lora_params += i.total();
    else if (i.part == "lora grads") e.lora_grads += i.total();
    else e.optimizer_state += i.total();
  }
  e.activations = sum_items(act);
  for (const auto& i : ws) {
    if (i.part == "gemm workspace") e.gemm_workspace += i.total();
    else if (i.part == "attention workspace") e.attention_workspace += i.total();
    else if (i.part == "fp8 workspace") e.fp8_workspace += i.total();
    else e.lm_head_ce_workspace += i.total();
  }
  e.host_workspaces = sum_items(host);
  if (offload) {
    e.pinned_host = N * H * a * L;
    e.items.push_back({"pinned host", "saved layer inputs [N, H] (offload)", N * H * a, L});
  }
  for (auto* v : {&base, &lora, &act, &ws, &host}) e.items.insert(e.items.end(), v->begin(), v->end());
  if (cuda) {
    int64_t rounding = 0;
    for (auto* v : {&base, &lora, &act, &ws})
      for (const auto& i : *v) rounding += (cuda_rounded(i.bytes) - i.bytes) * i.count;
    e.allocator_overhead =
        rounding + static_cast<int64_t>(kAllocatorCacheFraction * static_cast<double>(e.activations));
    e.cuda_context = kCudaContextBytes + (in.world_size > 1 ? kNcclBuffersBytes : 0);
  }
  return e;
}

}  // namespace ftune
