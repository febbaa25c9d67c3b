// cuDNN fused SDPA for ftune's packed-document attention (API: cudnn_attention.h). Compiled only
// when CMake finds cuDNN and the cudnn-frontend headers (FTUNE_HAS_CUDNN).
#include "backend/cuda/cudnn/cudnn_attention.h"

#include <cudnn.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#define CUDNN_FRONTEND_SKIP_JSON_LIB 1
#include <cudnn_frontend.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>

#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/device_guard.h"
#include "core/error.h"

namespace ftune::cuda {

namespace fe = cudnn_frontend;

namespace {

// Tensor uids in the graphs' variant packs.
enum Uid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kDo, kDq, kDk, kDv, kSeqQ, kSeqKv, kOffQ, kOffKv, kOffLse
};

struct GraphKey {
  bool backward;
  DType act;
  int64_t batch, max_len, max_total, nh, nkv, hd;
  float scale;
  auto tie() const { return std::tie(backward, act, batch, max_len, max_total, nh, nkv, hd, scale); }
  bool operator<(const GraphKey& o) const { return tie() < o.tie(); }
};

struct Built {
  std::shared_ptr<fe::graph::Graph> graph;  // null: cuDNN refused this shape
  int64_t workspace = 0;
};

struct State {
  std::mutex mu;
  std::map<int, cudnnHandle_t> handles;  // per device
  std::map<std::pair<int, GraphKey>, Built> graphs;
  bool warned = false;
};

State& state() {
  static State* s = new State();  // never destroyed: handles may outlive static destructors
  return *s;
}

std::atomic<int64_t> g_calls{0};

fe::DataType_t fe_type(DType act) {
  return act == DType::BF16 ? fe::DataType_t::BFLOAT16 : fe::DataType_t::HALF;
}

// q/k/v/o-like tensor [batch, heads, max_len, hd] over the packed [tokens, heads, hd] rows.
std::shared_ptr<fe::graph::Tensor_attributes> packed(fe::graph::Graph& g, const char* name,
                                                     int64_t uid, const GraphKey& k,
                                                     int64_t heads,
                                                     std::shared_ptr<fe::graph::Tensor_attributes> off) {
  return g.tensor(fe::graph::Tensor_attributes()
                      .set_name(name)
                      .set_uid(uid)
                      .set_dim({k.batch, heads, k.max_len, k.hd})
                      .set_stride({k.max_len * heads * k.hd, k.hd, heads * k.hd, 1})
                      .set_ragged_offset(std::move(off)));
}
void as_packed(fe::graph::Tensor_attributes& t, int64_t uid, const GraphKey& k, int64_t heads,
               std::shared_ptr<fe::graph::Tensor_attributes> off) {
  t.set_output(true)
      .set_uid(uid)
      .set_dim({k.batch, heads, k.max_len, k.hd})
      .set_stride({k.max_len * heads * k.hd, k.hd, heads * k.hd, 1})
      .set_ragged_offset(std::move(off));
}
std::shared_ptr<fe::graph::Tensor_attributes> index_tensor(fe::graph::Graph& g, const char* name,
                                                           int64_t uid, int64_t count) {
  return g.tensor(fe::graph::Tensor_attributes()
                      .set_name(name)
                      .set_uid(uid)
                      .set_dim({count, 1, 1, 1})
                      .set_stride({1, 1, 1, 1})
                      .set_data_type(fe::DataType_t::INT32));
}
// lse [tokens, nh] fp32 as Stats [batch, nh, max_len, 1].
void stats_layout(fe::graph::Tensor_attributes& t, const GraphKey& k,
                  std::shared_ptr<fe::graph::Tensor_attributes> off) {
  t.set_uid(kStats)
      .set_data_type(fe::DataType_t::FLOAT)
      .set_dim({k.batch, k.nh, k.max_len, 1})
      .set_stride({k.max_len * k.nh, 1, k.nh, 1})
      .set_ragged_offset(std::move(off));
}

std::shared_ptr<fe::graph::Graph> make_graph(const GraphKey& k) {
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(fe_type(k.act))
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  auto off_q = index_tensor(*g, "off_q", kOffQ, k.batch + 1);
  auto off_kv = index_tensor(*g, "off_kv", kOffKv, k.batch + 1);
  auto off_lse = index_tensor(*g, "off_lse", kOffLse, k.batch + 1);
  auto seq_q = index_tensor(*g, "seq_q", kSeqQ, k.batch);
  auto seq_kv = index_tensor(*g, "seq_kv", kSeqKv, k.batch);
  auto q = packed(*g, "Q", kQ, k, k.nh, off_q);
  auto kk = packed(*g, "K", kK, k, k.nkv, off_kv);
  auto v = packed(*g, "V", kV, k, k.nkv, off_kv);
  if (!k.backward) {
    auto opts = fe::graph::SDPA_attributes()
                    .set_name("ftune_sdpa")
                    .set_generate_stats(true)
                    .set_causal_mask(true)
                    .set_attn_scale(k.scale)
                    .set_padding_mask(true)
                    .set_seq_len_q(seq_q)
                    .set_seq_len_kv(seq_kv)
                    .set_max_total_seq_len_q(k.max_total)
                    .set_max_total_seq_len_kv(k.max_total);
    auto [o, stats] = g->sdpa(q, kk, v, opts);
    as_packed(*o, kO, k, k.nh, off_q);
    stats->set_output(true);
    stats_layout(*stats, k, off_lse);
    return g;
  }
  auto o = packed(*g, "O", kO, k, k.nh, off_q);
  auto d_o = packed(*g, "dO", kDo, k, k.nh, off_q);
  auto stats = g->tensor(fe::graph::Tensor_attributes().set_name("Stats"));
  stats_layout(*stats, k, off_lse);
  auto opts = fe::graph::SDPA_backward_attributes()
                  .set_name("ftune_sdpa_backward")
                  .set_causal_mask(true)
                  .set_attn_scale(k.scale)
                  .set_padding_mask(true)
                  .set_seq_len_q(seq_q)
                  .set_seq_len_kv(seq_kv)
                  .set_max_total_seq_len_q(k.max_total)
                  .set_max_total_seq_len_kv(k.max_total);
  auto [dq, dk, dv] = g->sdpa_backward(q, kk, v, o, d_o, stats, opts);
  as_packed(*dq, kDq, k, k.nh, off_q);
  as_packed(*dk, kDk, k, k.nkv, off_kv);
  as_packed(*dv, kDv, k, k.nkv, off_kv);
  return g;
}

}  // namespace

void cudnn_attention_release() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  s.graphs.clear();  // the graphs first: they were built on the handles
  for (const auto& [device, h] : s.handles) {
    DeviceGuard g(device);
    cudnnDestroy(h);
  }
  s.handles.clear();
}

namespace {

cudnnHandle_t handle_for(State& s, int device) {
  auto it = s.handles.find(device);
  if (it != s.handles.end()) return it->second;
  cudnnHandle_t h = nullptr;
  const cudnnStatus_t st = cudnnCreate(&h);
  FTUNE_CHECK(st == CUDNN_STATUS_SUCCESS, "cudnn attention: cudnnCreate failed: {}",
              cudnnGetErrorString(st));
  s.handles[device] = h;
  return h;
}

// The graph for `key` on `device`, built on first use; null when cuDNN refuses it (then the
// reason is logged once per process).
const Built& graph_for(State& s, cudnnHandle_t h, int device, const GraphKey& key) {
  auto [it, fresh] = s.graphs.try_emplace({device, key});
  if (!fresh) return it->second;
  std::shared_ptr<fe::graph::Graph> g;
  std::string why;
  try {
    g = make_graph(key);
    auto check = [&](fe::error_t e, const char* step) {
      if (e.is_good()) return true;
      why = std::string(step) + ": " + e.get_message();
      return false;
    };
    if (check(g->validate(), "validate") && check(g->build_operation_graph(h), "operation graph") &&
        check(g->create_execution_plans({fe::HeurMode_t::A}), "execution plans") &&
        check(g->check_support(h), "support") && check(g->build_plans(h), "build plans")) {
      int64_t ws = 0;
      if (check(g->get_workspace_size(ws), "workspace size")) {
        it->second.graph = g;
        it->second.workspace = ws;
        return it->second;
      }
    }
  } catch (const std::exception& e) {
    why = e.what();
  }
  if (!s.warned) {
    s.warned = true;
    spdlog::warn(
        "cuDNN attention refused {} (batch {}, length {}, heads {}/{}, head dim {}): {}; using "
        "ftune's flash-attention kernels for such calls",
        key.backward ? "the backward" : "the forward", key.batch, key.max_len, key.nh, key.nkv,
        key.hd, why);
  }
  return it->second;  // graph stays null: refused
}

bool offsets_fit(const CudnnDocuments& docs, int nh, int hd) {
  return docs.n * static_cast<int64_t>(nh) * hd < std::numeric_limits<int32_t>::max();
}

bool run(const CudaContext& ctx, const GraphKey& key, std::unordered_map<int64_t, void*>& pack) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  cudnnHandle_t h = handle_for(s, ctx.device);
  const Built& b = graph_for(s, h, ctx.device, key);
  if (!b.graph) return false;
  FTUNE_CHECK(cudnnSetStream(h, ctx.stream) == CUDNN_STATUS_SUCCESS,
              "cudnn attention: cudnnSetStream failed");
  void* ws = nullptr;
  if (b.workspace > 0) {
    FTUNE_CHECK(ctx.ws != nullptr, "cudnn attention: no workspaces");
    Tensor view = workspace_view(ctx.ws->cudnn_workspace, {b.workspace}, DType::U8, ctx.device);
    ws = view.raw();
  }
  fe::error_t e = b.graph->execute(h, pack, ws);
  FTUNE_CHECK(e.is_good(), "cudnn attention: {} failed: {}",
              key.backward ? "backward" : "forward", e.get_message());
  g_calls.fetch_add(1, std::memory_order_relaxed);
  return true;
}

GraphKey key_for(bool backward, const CudnnDocuments& docs, DType act, int nh, int nkv, int hd,
                 float scale) {
  // The token total bounds cuDNN's ragged workspaces; rounded up so that batches of slightly
  // different sizes (padding to the longest row) share graphs.
  int64_t total = 64;
  while (total < docs.n) total *= 2;
  return GraphKey{backward, act, docs.batch, docs.max_len, total, nh, nkv, hd, scale};
}

void add_ragged(std::unordered_map<int64_t, void*>& pack, const CudnnRagged& r) {
  pack[kSeqQ] = const_cast<int32_t*>(r.lengths);
  pack[kSeqKv] = const_cast<int32_t*>(r.lengths);
  pack[kOffQ] = const_cast<int32_t*>(r.off_q);
  pack[kOffKv] = const_cast<int32_t*>(r.off_kv);
  pack[kOffLse] = const_cast<int32_t*>(r.off_lse);
}

}  // namespace

bool cudnn_attention_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("FTUNE_ATTENTION");
    if (v == nullptr || *v == '\0' || std::strcmp(v, "auto") == 0 || std::strcmp(v, "cudnn") == 0)
      return true;
    FTUNE_CHECK(std::strcmp(v, "flash") == 0,
                "FTUNE_ATTENTION={} is not one of auto, cudnn, flash", v);
    return false;
  }();
  return on;
}

int64_t cudnn_attention_calls() { return g_calls.load(std::memory_order_relaxed); }

std::string cudnn_attention_describe() {
  const size_t v = cudnnGetVersion();
  const std::string lib = fmt::format("cuDNN {}.{}.{}, cudnn-frontend {}.{}.{}", v / 10000,
                                      v / 100 % 100, v % 100, CUDNN_FRONTEND_MAJOR_VERSION,
                                      CUDNN_FRONTEND_MINOR_VERSION, CUDNN_FRONTEND_PATCH_VERSION);
  if (!cudnn_attention_enabled()) return "ftune's flash kernels (FTUNE_ATTENTION=flash; " + lib + " built in)";
  return "cuDNN fused SDPA (" + lib + "); ftune's flash kernels where cuDNN refuses a shape";
}

bool cudnn_attention_forward(const CudaContext& ctx, const CudnnDocuments& docs,
                             const CudnnRagged& ragged, DType act, const void* q, const void* k,
                             const void* v, int nh, int nkv, int hd, float scale, void* o,
                             float* lse) {
  if (!cudnn_attention_enabled() || docs.n == 0 || !offsets_fit(docs, nh, hd)) return false;
  std::unordered_map<int64_t, void*> pack{{kQ, const_cast<void*>(q)},
                                          {kK, const_cast<void*>(k)},
                                          {kV, const_cast<void*>(v)},
                                          {kO, o},
                                          {kStats, lse}};
  add_ragged(pack, ragged);
  return run(ctx, key_for(false, docs, act, nh, nkv, hd, scale), pack);
}

bool cudnn_attention_backward(const CudaContext& ctx, const CudnnDocuments& docs,
                              const CudnnRagged& ragged, DType act, const void* q, const void* k,
                              const void* v, const void* o, const float* lse, const void* d_o,
                              int nh, int nkv, int hd, float scale, void* dq, void* dk, void* dv) {
  if (!cudnn_attention_enabled() || docs.n == 0 || !offsets_fit(docs, nh, hd)) return false;
  std::unordered_map<int64_t, void*> pack{{kQ, const_cast<void*>(q)},
                                          {kK, const_cast<void*>(k)},
                                          {kV, const_cast<void*>(v)},
                                          {kO, const_cast<void*>(o)},
                                          {kDo, const_cast<void*>(d_o)},
                                          {kStats, const_cast<float*>(lse)},
                                          {kDq, dq},
                                          {kDk, dk},
                                          {kDv, dv}};
  add_ragged(pack, ragged);
  return run(ctx, key_for(true, docs, act, nh, nkv, hd, scale), pack);
}

}  // namespace ftune::cuda
