// The NCCL communicator at world size 1 on the GPU machine: its collectives on device tensors
// and host values, and training through DataParallelSync + NCCL gives the same losses and
// weights as training with no communicator, also with the base sharded (all_gather_async) and
// the communication traced (FTUNE_COMM_TRACE's timeline). Skips without a usable GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <unistd.h>

#include "backend/cuda_ops.h"
#include <fstream>
#include <nlohmann/json.hpp>

#include "dist/base_gather.h"
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

// An NCCL communicator of one rank on GPU 0, with its rendezvous store (which must outlive it).
struct WorldOfOne {
  int port = 0;  // members are initialized in this order
  int fd = bind_listen_socket("127.0.0.1", 0, &port);
  KeyValueStore store{"127.0.0.1", port, 0, 1, 30, fd};
  std::unique_ptr<Communicator> comm = make_nccl_communicator(store, options());
  static CommOptions options() {
    CommOptions o;
    o.cuda_device = 0;
    return o;
  }
};

TrainerOptions constant_lr(int64_t steps) {
  TrainerOptions t;
  t.schedule.kind = "constant";
  t.schedule.base_lr = 1e-2;
  t.schedule.total_steps = steps;
  return t;
}

}  // namespace

TEST(CudaNccl, WorldOfOneMatchesNoCommunicator) {
  if (!have_gpu()) GTEST_SKIP() << "no usable CUDA device";
  cuda_register_allocator();  // device tensors are made before any CudaOps
  WorldOfOne w;
  Communicator* comm = w.comm.get();
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
  const TrainerOptions topts = constant_lr(4);
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

TEST(CudaNccl, ShardedBaseAndTracedReducesMatchNoCommunicator) {
  if (!have_gpu()) GTEST_SKIP() << "no usable CUDA device";
  cuda_register_allocator();
  WorldOfOne w;
  Communicator* comm = w.comm.get();
  // Async gathers of any dtype, waited for by ticket.
  Tensor h = Tensor::empty({4}, DType::BF16);
  for (int i = 0; i < 4; ++i) h.data<uint16_t>()[i] = static_cast<uint16_t>(0x3f80 + i);
  Tensor in = h.to(Device::cuda(0)), out = Tensor::zeros({4}, DType::BF16, Device::cuda(0));
  const uint64_t ticket = comm->all_gather_async(in, out);
  comm->wait_gather(ticket);
  const Tensor back = out.to(Device::cpu());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(back.data<uint16_t>()[i], 0x3f80 + i);

  auto ops = make_cuda_ops(0);
  auto with = tiny_model(*ops);
  auto without = tiny_model(*ops);
  CommShardGatherer gatherer(*comm);
  with->shard_base(gatherer);
  const std::string trace = test::temp_dir("nccl_trace") + "/trace.jsonl";
  SyncOptions so;
  so.trace_path = trace;
  DataParallelSync sync(*comm, *ops, with->lora(), so);
  const TrainerOptions topts = constant_lr(3);
  Trainer a(*with, topts, &sync), b(*without, topts);
  for (int s = 0; s < 3; ++s) {
    const StepStats sa = a.step(window(s)), sb = b.step(window(s));
    EXPECT_NEAR(sa.loss, sb.loss, 1e-6 * std::abs(sb.loss)) << "step " << s;
  }
  EXPECT_GT(with->sharded_layers()->gathers(), 0);
  std::ifstream f(trace);
  int lines = 0;
  for (std::string line; std::getline(f, line); ++lines) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["backend"], "nccl");
    int reduces = 0, marks = 0;
    for (const auto& sp : j["spans"]) {
      if (sp["compute"].get<bool>()) ++marks;
      else if (sp["what"] == "all_reduce (during backward)") ++reduces;
      EXPECT_GE(sp["end_ms"].get<double>(), sp["start_ms"].get<double>());
    }
    EXPECT_EQ(marks, 2);
    EXPECT_EQ(reduces, 2);
    std::printf("step %d: reduce %.3f ms, %.3f ms of it before backward ended at %.3f ms\n",
                j["step"].get<int>(), j["reduce_ms"].get<double>(),
                j["overlapped_ms"].get<double>(), j["backward_end_ms"].get<double>());
  }
  EXPECT_EQ(lines, 3);
}
