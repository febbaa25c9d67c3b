// The NCCL communicator at world size 1 on the GPU machine: its collectives on device tensors
// and host values, and training through DataParallelSync + NCCL gives the same losses and
// weights as training with no communicator. Skips without a usable GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <unistd.h>

#include "backend/cuda_ops.h"
#include "dist/communicator.h"
#include "dist/gradient_sync.h"
#include "dist/kv_store.h"
#include "model/llama_model.h"
#include "cuda/cuda_test_support.h"
#include "support/test_support.h"
#include "train/trainer.h"

using namespace ftune;

namespace {

bool have_gpu() { return test::no_gpu_reason().empty(); }

ModelSpec tiny_spec() {
  ModelSpec s;
  s.vocab_size = 31;
  s.hidden_size = 16;
  s.intermediate_size = 24;
  s.num_layers = 2;
  s.num_heads = 2;
  s.num_kv_heads = 1;
  s.head_dim = 8;
  return s;
}

std::unique_ptr<LlamaModel> tiny_model(Ops& ops) {
  BaseWeights w = random_base_weights(tiny_spec(), 9, 0.3f);
  auto m = std::make_unique<LlamaModel>(tiny_spec(), base_weights_to(w, tiny_spec(), ops.device()), ops);
  LoraSpec ls;
  ls.r = 2;
  ls.dropout = 0.1;
  m->attach_lora(LoraWeights::init(tiny_spec(), ls, ops.device()));
  return m;
}

std::vector<Batch> window(int step) {
  std::vector<Batch> v;
  for (int i = 0; i < 2; ++i) {
    std::vector<int32_t> ids;
    for (int j = 0; j < 7; ++j) ids.push_back(static_cast<int32_t>((i * 7 + j * 3 + step * 5) % 31));
    Batch b = batch_from_documents({ids}, {ids}, 8, 0);
    b.step = step;
    b.global_index = i;
    v.push_back(b);
  }
  return v;
}

}  // namespace

TEST(CudaNccl, WorldOfOneMatchesNoCommunicator) {
  if (!have_gpu()) GTEST_SKIP() << "no usable CUDA device";
  cuda_register_allocator();  // device tensors are made before any CudaOps
  int port = 0;
  const int fd = bind_listen_socket("127.0.0.1", 0, &port);
  KeyValueStore store("127.0.0.1", port, 0, 1, 30, fd);
  CommOptions o;
  o.cuda_device = 0;
  auto comm = make_nccl_communicator(store, o);
  EXPECT_EQ(comm->backend(), "nccl");

  Tensor t = Tensor::from_vector({1, -2, 3}, {3}).to(Device::cuda(0));
  comm->all_reduce_sum(t);
  EXPECT_EQ(t.to(Device::cpu()).to_vector(), (std::vector<float>{1, -2, 3}));
  std::vector<double> v{2.5, 1e10};
  comm->all_reduce_sum(v);
  EXPECT_EQ(v, (std::vector<double>{2.5, 1e10}));
  Tensor g = Tensor::empty({3}, DType::F32, Device::cuda(0));
  comm->all_gather(t, g);
  EXPECT_EQ(g.to(Device::cpu()).to_vector(), (std::vector<float>{1, -2, 3}));

  auto ops = make_cuda_ops(0);
  auto with = tiny_model(*ops);
  auto without = tiny_model(*ops);
  DataParallelSync sync(*comm, *ops, with->lora(), SyncOptions{});
  TrainerOptions topts;
  topts.schedule.kind = "constant";
  topts.schedule.base_lr = 1e-2;
  topts.schedule.total_steps = 4;
  Trainer a(*with, topts, &sync), b(*without, topts);
  for (int s = 0; s < 4; ++s) {
    const StepStats sa = a.step(window(s)), sb = b.step(window(s));
    EXPECT_NEAR(sa.loss, sb.loss, 1e-6 * std::abs(sb.loss)) << "step " << s;
    EXPECT_NEAR(sa.grad_norm, sb.grad_norm, 1e-5 * sb.grad_norm) << "step " << s;
    EXPECT_EQ(sa.memory_mib.size(), 1u);
  }
  auto pa = with->lora().params(), pb = without->lora().params();
  for (size_t i = 0; i < pa.size(); ++i)
    EXPECT_LT(test::rel_l2(pa[i].value->to(Device::cpu()).to_vector(),
                           pb[i].value->to(Device::cpu()).to_vector()),
              1e-5)
        << pa[i].name;
}
