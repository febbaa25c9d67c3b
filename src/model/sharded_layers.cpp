#include "model/sharded_layers.h"

#include <algorithm>

#include "core/error.h"

namespace ftune {

namespace {

constexpr size_t kAlign = 256;

size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// The tensor of `w` an entry stands for (const and mutable).
template <class L>
auto& field_of(L& w, LayerPackLayout::Field f, int proj) {
  using F = LayerPackLayout;
  const auto p = static_cast<size_t>(proj);
  switch (f) {
    case F::kAttnNorm: return w.attn_norm;
    case F::kMlpNorm: return w.mlp_norm;
    case F::kQkv: return w.qkv;
    case F::kGateUp: return w.gate_up;
    case F::kWeightO: return w.weight[static_cast<size_t>(Proj::O)];
    case F::kWeightDown: return w.weight[static_cast<size_t>(Proj::Down)];
    case F::kQkvBias: return w.qkv_bias;
    case F::kBiasO: return w.bias[static_cast<size_t>(Proj::O)];
    case F::kBiasGate: return w.bias[static_cast<size_t>(Proj::Gate)];
    case F::kBiasUp: return w.bias[static_cast<size_t>(Proj::Up)];
    case F::kBiasDown: return w.bias[static_cast<size_t>(Proj::Down)];
    case F::kNf4Packed: return w.nf4[p].packed;
    case F::kNf4Code: return w.nf4[p].code;
    case F::kNf4Absmax: return w.nf4[p].absmax;
    case F::kNf4NestedAbsmax: return w.nf4[p].nested_absmax;
    case F::kNf4NestedCode: return w.nf4[p].nested_code;
  }
  fail("sharded layers: unknown field {}", static_cast<int>(f));
}

// A typed view of `bytes` bytes at `offset` of a U8 buffer, keeping the buffer alive.
Tensor view_at(const Tensor& buffer, size_t offset, DType dt, const Shape& shape) {
  auto owner = std::make_shared<Tensor>(buffer);
  return Tensor::borrow(static_cast<uint8_t*>(buffer.raw()) + offset, shape, dt, owner,
                        buffer.device());
}

}  // namespace

LayerPackLayout layer_pack_layout(const LayerWeights& w) {
  using F = LayerPackLayout;
  FTUNE_CHECK(!w.empty(), "sharded layers: the layer has no tensors");
  LayerPackLayout lay;
  lay.quantized = w.quantized();
  for (Proj p : kAllProj) {
    const size_t i = static_cast<size_t>(p);
    lay.rows[i] = w.proj_rows(p);
    lay.has_bias[i] = w.bias[i].defined();
  }
  auto add = [&](F::Field f, int proj) {
    const Tensor& t = field_of(w, f, proj);
    if (!t.defined()) return;
    FTUNE_CHECK(t.is_contiguous(), "sharded layers: a strided layer tensor (field {})",
                static_cast<int>(f));
    lay.entries.push_back({f, proj, t.dtype(), t.shape(), align_up(lay.bytes)});
    lay.bytes = lay.entries.back().offset + t.nbytes();
  };
  add(F::kAttnNorm, 0);
  add(F::kMlpNorm, 0);
  if (lay.quantized) {
    for (int p = 0; p < kNumProj; ++p) {
      const Nf4Weight& q = w.nf4[static_cast<size_t>(p)];
      FTUNE_CHECK(q.defined(), "sharded layers: a layer with some projections in NF4 and some not");
      Nf4Weight& meta = lay.nf4_meta[static_cast<size_t>(p)];
      meta.shape = q.shape;
      meta.blocksize = q.blocksize;
      meta.nested_blocksize = q.nested_blocksize;
      meta.nested_offset = q.nested_offset;
      for (F::Field f : {F::kNf4Packed, F::kNf4Code, F::kNf4Absmax, F::kNf4NestedAbsmax,
                         F::kNf4NestedCode})
        add(f, p);
    }
  } else {
    FTUNE_CHECK(w.qkv.defined() && w.gate_up.defined(),
                "sharded layers: the layer is not fused (q/k/v and gate/up stacked)");
    for (F::Field f : {F::kQkv, F::kGateUp, F::kWeightO, F::kWeightDown}) add(f, 0);
  }
  for (F::Field f : {F::kQkvBias, F::kBiasO, F::kBiasGate, F::kBiasUp, F::kBiasDown}) add(f, 0);
  return lay;
}

void pack_layer(const LayerWeights& w, const LayerPackLayout& layout, Tensor& buffer) {
  FTUNE_CHECK(buffer.dtype() == DType::U8 && buffer.nbytes() >= layout.bytes,
              "pack_layer: the buffer holds {} bytes, the layer {}", buffer.nbytes(), layout.bytes);
  for (const auto& e : layout.entries) {
    Tensor dst = view_at(buffer, e.offset, e.dtype, e.shape);
    dst.copy_from(field_of(w, e.field, e.proj));
  }
}

LayerWeights unpack_layer(const LayerPackLayout& layout, const Tensor& buffer) {
  FTUNE_CHECK(buffer.dtype() == DType::U8 && buffer.nbytes() >= layout.bytes,
              "unpack_layer: the buffer holds {} bytes, the layer {}", buffer.nbytes(),
              layout.bytes);
  LayerWeights w;
  if (layout.quantized) w.nf4 = layout.nf4_meta;
  for (const auto& e : layout.entries)
    field_of(w, e.field, e.proj) = view_at(buffer, e.offset, e.dtype, e.shape);
  auto rows = [&](Proj p) { return layout.rows[static_cast<size_t>(p)]; };
  if (!layout.quantized) {
    int64_t r = 0;
    for (Proj p : {Proj::Q, Proj::K, Proj::V}) {
      w.weight[static_cast<size_t>(p)] = w.qkv.slice_rows(r, r + rows(p));
      r += rows(p);
    }
    w.weight[static_cast<size_t>(Proj::Gate)] = w.gate_up.slice_rows(0, rows(Proj::Gate));
    w.weight[static_cast<size_t>(Proj::Up)] =
        w.gate_up.slice_rows(rows(Proj::Gate), rows(Proj::Gate) + rows(Proj::Up));
  }
  if (w.qkv_bias.defined()) {
    int64_t off = 0;
    for (Proj p : {Proj::Q, Proj::K, Proj::V}) {
      if (layout.has_bias[static_cast<size_t>(p)])
        w.bias[static_cast<size_t>(p)] = w.qkv_bias.slice_flat(off, {rows(p)});
      off += rows(p);
    }
  }
  return w;
}

ShardedLayers::ShardedLayers(ShardGatherer& g, Device device) : g_(g), device_(device) {
  FTUNE_CHECK(g.world_size() >= 1 && g.rank() >= 0 && g.rank() < g.world_size(),
              "sharded layers: rank {} of {}", g.rank(), g.world_size());
}

void ShardedLayers::add(LayerWeights& w) {
  FTUNE_CHECK(w.attn_norm.device() == device_, "sharded layers: layer {} is on {}, expected {}",
              layers_.size(), w.attn_norm.device().str(), device_.str());
  Layer L;
  L.layout = layer_pack_layout(w);
  FTUNE_CHECK(layers_.empty() || L.layout.quantized == layers_[0].layout.quantized,
              "sharded layers: some layers are NF4 and some are not");
  const auto world = static_cast<size_t>(g_.world_size());
  L.shard_bytes = align_up((L.layout.bytes + world - 1) / world);
  // The whole layer packed once (padding zeroed, so every rank's bytes are defined), then this
  // rank's part copied out; w's own tensors go.
  Tensor full = Tensor::zeros({static_cast<int64_t>(L.shard_bytes * world)}, DType::U8, device_);
  pack_layer(w, L.layout, full);
  L.shard = Tensor::empty({static_cast<int64_t>(L.shard_bytes)}, DType::U8, device_);
  L.shard.copy_from(full.slice_flat(static_cast<int64_t>(L.shard_bytes) * g_.rank(),
                                    {static_cast<int64_t>(L.shard_bytes)}));
  w = LayerWeights();
  layers_.push_back(std::move(L));
}

ShardedLayers::Slot* ShardedLayers::find(int l) {
  for (Slot& s : slots_)
    if (s.layer == l) return &s;
  return nullptr;
}

void ShardedLayers::finish(Slot& s) {
  if (!s.pending) return;
  g_.wait_gather(s.ticket);
  s.pending = false;
}

void ShardedLayers::start(Slot& s, int l) {
  finish(s);  // a gather still writing into this buffer must land first
  const Layer& L = layers_[static_cast<size_t>(l)];
  if (!s.buffer.defined())
    s.buffer = Tensor::empty({static_cast<int64_t>(largest_shard()) * g_.world_size()}, DType::U8,
                             device_);
  Tensor full = s.buffer.slice_flat(0, {static_cast<int64_t>(L.shard_bytes) * g_.world_size()});
  s.layer = l;
  s.view = unpack_layer(L.layout, full);
  s.ticket = g_.start_gather(L.shard, full);
  s.pending = true;
  ++gathers_;
}

const LayerWeights& ShardedLayers::acquire(int l, int next) {
  FTUNE_CHECK(l >= 0 && l < size() && next >= -1 && next < size(),
              "sharded layers: acquire({}, {}) of {} layers", l, next, size());
  Slot* s = find(l);
  if (s == nullptr) {  // not prefetched: the buffer used longest ago
    s = slots_[0].last_use <= slots_[1].last_use ? &slots_[0] : &slots_[1];
    start(*s, l);
  }
  finish(*s);
  s->last_use = ++clock_;
  if (next >= 0 && next != l && find(next) == nullptr) start(*(s == &slots_[0] ? &slots_[1] : &slots_[0]), next);
  return s->view;
}

int64_t ShardedLayers::shard_bytes() const {
  int64_t n = 0;
  for (const Layer& L : layers_) n += static_cast<int64_t>(L.shard_bytes);
  return n;
}

size_t ShardedLayers::largest_shard() const {
  size_t most = 0;
  for (const Layer& x : layers_) most = std::max(most, x.shard_bytes);
  return most;
}

int64_t ShardedLayers::buffer_bytes() const {
  return 2 * static_cast<int64_t>(largest_shard()) * g_.world_size();
}

}  // namespace ftune
