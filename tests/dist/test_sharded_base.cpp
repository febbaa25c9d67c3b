// The frozen base sharded across ranks (model/sharded_layers.h), ranks as threads over Gloo:
// a layer packs and unpacks to the same bits (dense with biases, and NF4); a model sharded over
// 1, 2 and 3 ranks computes the same loss and LoRA gradients as the unsharded model (with and
// without checkpointing, dense and NF4) while each rank holds 1/N of the layers; a rank with
// fewer micro-batches keeps step by idle passes; the async gathers and the gradient reductions
// share one ordered queue.
#include <gtest/gtest.h>

#include <cstring>

#include "backend/ops.h"
#include "core/batch.h"
#include "dist/base_gather.h"
#include "dist/communicator.h"
#include "model/llama_model.h"
#include "model/sharded_layers.h"
#include "support/gloo_ranks.h"
#include "support/test_support.h"

using namespace ftune;
using ftune::test::run_ranks;

namespace {

ModelSpec spec_with_biases() {
  ModelSpec s;
  s.vocab_size = 37;
  s.hidden_size = 16;
  s.intermediate_size = 24;
  s.num_layers = 3;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 4;
  s.max_position_embeddings = 64;
  s.proj_bias[0] = s.proj_bias[2] = true;  // q and v only: k's slice of qkv_bias stays zero
  s.proj_bias[static_cast<size_t>(Proj::O)] = true;
  return s;
}

BaseWeights base_weights(const ModelSpec& s, bool nf4) {
  BaseWeights w = random_base_weights(s, 21, 0.3f);
  if (nf4) quantize_base_weights(w, true);
  return w;
}

LoraWeights random_lora(const ModelSpec& spec) {
  LoraSpec ls;
  ls.r = 2;
  ls.dropout = 0.1;
  LoraWeights w = LoraWeights::init(spec, ls, Device::cpu());
  uint64_t k = 5;
  for (auto& p : w.params()) p.value->copy_from(test::random_tensor(p.value->shape(), ++k, 0.3f));
  return w;
}

std::unique_ptr<LlamaModel> make_model(Ops& ops, bool nf4, bool ckpt) {
  const ModelSpec s = spec_with_biases();
  ModelOptions o;
  o.gradient_checkpointing = ckpt;
  auto m = std::make_unique<LlamaModel>(s, base_weights(s, nf4), ops, o);
  m->attach_lora(random_lora(s));
  return m;
}

Batch batch(int seed, int len) {
  std::vector<int32_t> ids;
  for (int j = 0; j < len; ++j) ids.push_back(static_cast<int32_t>((7 * seed + 3 * j + 1) % 37));
  Batch b = batch_from_documents({ids}, {ids}, len, 0);
  b.step = 1;
  b.global_index = seed;
  return b;
}

struct Result {
  double loss = 0;
  std::vector<std::vector<float>> grads;
};

// Forward + backward of `batches` (summed), then the loss and the LoRA gradients.
Result run(LlamaModel& m, const std::vector<Batch>& batches) {
  Result r;
  m.lora().zero_grad();
  for (const Batch& b : batches) r.loss += m.forward_backward(b, 0.5f).loss_sum;
  for (auto& p : m.lora().params()) r.grads.push_back(p.grad->to_vector());
  return r;
}

void expect_same(const Result& got, const Result& want, const std::string& what) {
  EXPECT_NEAR(got.loss, want.loss, 1e-5 * std::abs(want.loss)) << what;
  ASSERT_EQ(got.grads.size(), want.grads.size()) << what;
  for (size_t i = 0; i < got.grads.size(); ++i)
    EXPECT_EQ(test::compare(got.grads[i], want.grads[i], 1e-5f, 1e-7f), "") << what << " grad " << i;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  const Tensor ca = a.is_contiguous() ? a : a.clone(), cb = b.is_contiguous() ? b : b.clone();
  return std::memcmp(ca.raw(), cb.raw(), ca.nbytes()) == 0;
}

}  // namespace

TEST(ShardedBase, LayersPackAndUnpackToTheSameBits) {
  auto ops = make_cpu_ops();
  const ModelSpec s = spec_with_biases();
  for (bool nf4 : {false, true}) {
    BaseWeights w = base_weights(s, nf4);
    fuse_base_weights(w, *ops, DType::F32);
    const LayerWeights& L = w.layers[1];
    const LayerPackLayout lay = layer_pack_layout(L);
    EXPECT_EQ(lay.quantized, nf4);
    for (const auto& e : lay.entries) EXPECT_EQ(e.offset % 256, 0u);
    Tensor buf = Tensor::zeros({static_cast<int64_t>(lay.bytes) + 100}, DType::U8);
    pack_layer(L, lay, buf);
    const LayerWeights u = unpack_layer(lay, buf);
    const std::string what = nf4 ? "nf4" : "dense";
    EXPECT_TRUE(same_bits(u.attn_norm, L.attn_norm)) << what;
    EXPECT_TRUE(same_bits(u.mlp_norm, L.mlp_norm)) << what;
    EXPECT_TRUE(same_bits(u.qkv_bias, L.qkv_bias)) << what;
    for (size_t p = 0; p < kNumProj; ++p) {
      EXPECT_TRUE(same_bits(u.bias[p], L.bias[p])) << what << " bias " << p;
      if (nf4) {
        EXPECT_EQ(u.nf4[p].shape, L.nf4[p].shape);
        EXPECT_EQ(u.nf4[p].nested_offset, L.nf4[p].nested_offset);
        EXPECT_TRUE(same_bits(u.nf4[p].packed, L.nf4[p].packed)) << p;
        EXPECT_TRUE(same_bits(u.nf4[p].absmax, L.nf4[p].absmax)) << p;
        EXPECT_TRUE(same_bits(u.nf4[p].nested_absmax, L.nf4[p].nested_absmax)) << p;
        EXPECT_TRUE(same_bits(u.nf4[p].code, L.nf4[p].code)) << p;
        EXPECT_TRUE(same_bits(u.nf4[p].nested_code, L.nf4[p].nested_code)) << p;
      } else {
        EXPECT_TRUE(same_bits(u.weight[p], L.weight[p])) << "weight " << p;
      }
    }
    if (!nf4) {
      EXPECT_TRUE(same_bits(u.qkv, L.qkv));
      EXPECT_TRUE(same_bits(u.gate_up, L.gate_up));
      // The per-projection weights are views of the stacked ones, as after fuse_base_weights.
      EXPECT_EQ(u.weight[static_cast<size_t>(Proj::K)].raw(),
                static_cast<uint8_t*>(u.qkv.raw()) + s.q_dim() * s.hidden_size * 4);
    }
    EXPECT_FALSE(u.bias[static_cast<size_t>(Proj::K)].defined());
    Tensor small = Tensor::zeros({static_cast<int64_t>(lay.bytes) - 1}, DType::U8);
    EXPECT_NE(test::error_of([&] { pack_layer(L, lay, small); }).find("buffer holds"),
              std::string::npos);
  }
}

TEST(ShardedBase, OneTwoAndThreeRanksMatchTheUnshardedModel) {
  for (bool nf4 : {false, true}) {
    for (bool ckpt : {false, true}) {
      auto ops = make_cpu_ops();
      const std::vector<Batch> batches = {batch(1, 9), batch(2, 6)};
      auto whole = make_model(*ops, nf4, ckpt);
      const Result want = run(*whole, batches);
      const int64_t whole_bytes = whole->base_bytes_held();
      for (int world : {1, 2, 3}) {
        const std::string what = fmt::format("nf4 {} ckpt {} world {}", nf4, ckpt, world);
        std::vector<Result> got(static_cast<size_t>(world));
        std::vector<int64_t> held(static_cast<size_t>(world)), gathers(static_cast<size_t>(world));
        auto errors = run_ranks(world, [&](int r, Communicator& comm) {
          auto rops = make_cpu_ops();
          auto m = make_model(*rops, nf4, ckpt);
          CommShardGatherer g(comm);
          m->shard_base(g);
          ASSERT_TRUE(m->sharded());
          for (const auto& L : m->base().layers) EXPECT_TRUE(L.empty());
          got[static_cast<size_t>(r)] = run(*m, batches);
          got[static_cast<size_t>(r)] = run(*m, batches);  // again: the cached gathers hold
          held[static_cast<size_t>(r)] = m->sharded_layers()->shard_bytes();
          gathers[static_cast<size_t>(r)] = m->sharded_layers()->gathers();
        });
        for (int r = 0; r < world; ++r) {
          ASSERT_EQ(errors[static_cast<size_t>(r)], "") << what;
          expect_same(got[static_cast<size_t>(r)], want, what + " rank " + std::to_string(r));
          EXPECT_EQ(gathers[static_cast<size_t>(r)], gathers[0]) << what;
        }
        // 1/N of the layers (plus at most 256 bytes of alignment per layer), whatever N.
        int64_t layer_bytes = 0;
        for (const auto& L : whole->base().layers)
          layer_bytes += static_cast<int64_t>(layer_pack_layout(L).bytes);
        EXPECT_LE(held[0], layer_bytes / world + 3 * 256) << what;
        EXPECT_GE(held[0], layer_bytes / world) << what;
        if (world > 1)
          EXPECT_LT(held[0] + base_weight_bytes(whole->base()) - layer_bytes, whole_bytes) << what;
      }
    }
  }
}

TEST(ShardedBase, ARankWithFewerMicroBatchesKeepsStepByIdlePasses) {
  // Rank 0 trains two micro-batches, rank 1 one and then an idle pass; the grads-ready hook
  // runs on both for every layer of the last pass. Each rank's gradients equal the unsharded
  // model's on its own batches.
  auto ops = make_cpu_ops();
  const std::vector<std::vector<Batch>> mine = {{batch(1, 9), batch(2, 6)}, {batch(3, 7)}};
  std::vector<Result> want;
  for (const auto& b : mine) {
    auto m = make_model(*ops, false, true);
    want.push_back(run(*m, b));
  }
  std::vector<Result> got(2);
  std::vector<std::vector<int>> hooks(2);
  auto errors = run_ranks(2, [&](int r, Communicator& comm) {
    auto rops = make_cpu_ops();
    auto m = make_model(*rops, false, true);
    CommShardGatherer g(comm);
    m->shard_base(g);
    const auto& batches = mine[static_cast<size_t>(r)];
    Result& res = got[static_cast<size_t>(r)];
    m->lora().zero_grad();
    for (size_t i = 0; i < 2; ++i) {
      if (i == 1) m->set_grads_ready_hook([&, r](int l) { hooks[static_cast<size_t>(r)].push_back(l); });
      if (i < batches.size())
        res.loss += m->forward_backward(batches[i], 0.5f).loss_sum;
      else
        m->idle_pass(true);
    }
    m->set_grads_ready_hook(nullptr);
    m->idle_pass(false);  // an evaluation pass with nothing to evaluate
    for (auto& p : m->lora().params()) res.grads.push_back(p.grad->to_vector());
  });
  ASSERT_EQ(errors[0], "");
  ASSERT_EQ(errors[1], "");
  for (int r = 0; r < 2; ++r) {
    expect_same(got[static_cast<size_t>(r)], want[static_cast<size_t>(r)], "rank " + std::to_string(r));
    EXPECT_EQ(hooks[static_cast<size_t>(r)], (std::vector<int>{2, 1, 0}));
  }
}

TEST(ShardedBase, AsyncGathersAndReductionsRunInIssueOrder) {
  const int world = 3;
  auto errors = run_ranks(world, [&](int r, Communicator& comm) {
    std::vector<Tensor> shards, fulls, sums;
    std::vector<uint64_t> tickets;
    for (int i = 0; i < 4; ++i) {
      Tensor s = Tensor::empty({5 + i}, DType::BF16);
      for (int j = 0; j < 5 + i; ++j) s.data<uint16_t>()[j] = static_cast<uint16_t>(1000 * r + 10 * i + j);
      shards.push_back(s);
      fulls.push_back(Tensor::zeros({world * (5 + i)}, DType::BF16));
      tickets.push_back(comm.all_gather_async(shards.back(), fulls.back()));
      Tensor t = Tensor::from_vector({static_cast<float>(r + i), 1.0f}, {2});
      sums.push_back(t);
      comm.all_reduce_sum_async(sums.back());
    }
    EXPECT_LT(tickets[0], tickets[3]);
    comm.wait_gather(tickets[2]);  // the earlier ones are done too
    for (int i = 0; i < 3; ++i)
      for (int q = 0; q < world; ++q)
        for (int j = 0; j < 5 + i; ++j)
          ASSERT_EQ(fulls[static_cast<size_t>(i)].data<uint16_t>()[q * (5 + i) + j], 1000 * q + 10 * i + j);
    comm.wait_async();
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(sums[static_cast<size_t>(i)].f32()[0], static_cast<float>(0 + 1 + 2 + world * i));
      EXPECT_EQ(sums[static_cast<size_t>(i)].f32()[1], static_cast<float>(world));
    }
    for (int j = 0; j < 8; ++j) EXPECT_EQ(fulls[3].data<uint16_t>()[2 * 8 + j], 2000 + 30 + j);
    Tensor bad = Tensor::zeros({world * 5 + 1}, DType::BF16);
    EXPECT_NE(test::error_of([&] { comm.all_gather_async(shards[0], bad); }).find("world_size"),
              std::string::npos);
  });
  for (int r = 0; r < world; ++r) EXPECT_EQ(errors[static_cast<size_t>(r)], "") << r;
}
