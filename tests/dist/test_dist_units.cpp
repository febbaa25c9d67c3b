// Data-parallel building blocks, in one process: window sharding, launcher environments,
// the rendezvous store and Gloo collectives (ranks as threads), every aggregation mode against
// a direct computation from per-rank gradients, and the consistency checks.
#include <gtest/gtest.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <cstring>
#include <optional>

#include <cmath>
#include <algorithm>
#include <fstream>
#include <filesystem>
#include <map>
#include <mutex>
#include <numeric>
#include <set>
#include <span>
#include <thread>

#include <nlohmann/json.hpp>

#include "backend/ops.h"
#include "data/shard.h"
#include "dist/communicator.h"
#include "dist/consistency.h"
#include "dist/gradient_sync.h"
#include "dist/kv_store.h"
#include "dist/rendezvous.h"
#include "dist/worker_threads.h"
#include "model/llama_model.h"
#include "support/gloo_ranks.h"
#include "support/test_support.h"

using namespace ftune;
using ftune::test::run_ranks;

namespace {

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
  auto m = std::make_unique<LlamaModel>(tiny_spec(), random_base_weights(tiny_spec(), 9, 0.3f), ops);
  LoraSpec ls;
  ls.r = 2;
  ls.dropout = 0.1;
  LoraWeights w = LoraWeights::init(tiny_spec(), ls, Device::cpu());
  uint64_t k = 77;
  for (auto& p : w.params()) p.value->copy_from(test::random_tensor(p.value->shape(), ++k, 0.3f));
  m->attach_lora(std::move(w));
  return m;
}

// Rank r's micro-batches: different lengths so the ranks' token counts differ.
std::vector<Batch> rank_batches(int r, int world) {
  std::vector<Batch> v;
  const int count = r == 0 ? 2 : 1;
  for (int i = 0; i < count; ++i) {
    std::vector<int32_t> ids;
    const int len = 4 + 2 * r + i;
    for (int j = 0; j < len; ++j) ids.push_back(static_cast<int32_t>((7 * r + 3 * j + 5 * i + 1) % 31));
    Batch b = batch_from_documents({ids}, {ids}, 12, 0);
    b.step = 1;
    b.global_index = r * 10 + i;  // distinct dropout keys
    v.push_back(b);
  }
  (void)world;
  return v;
}

std::vector<std::vector<float>> grads_of(LlamaModel& m) {
  std::vector<std::vector<float>> g;
  for (auto& p : m.lora().params()) g.push_back(p.grad->to_vector());
  return g;
}

// Per-rank summed-loss gradients S_r and token counts n_r, computed one rank at a time.
void direct_gradients(int world, std::vector<std::vector<std::vector<float>>>* S,
                      std::vector<int64_t>* n) {
  auto ops = make_cpu_ops();
  auto m = tiny_model(*ops);
  for (int r = 0; r < world; ++r) {
    m->lora().zero_grad();
    int64_t count = 0;
    for (const Batch& b : rank_batches(r, world)) {
      m->forward_backward(b, 1.0f);
      count += count_trained_tokens(b);
    }
    S->push_back(grads_of(*m));
    n->push_back(count);
  }
}

// A communicator that logs the reductions started during backward into a shared event list.
class LoggingComm : public Communicator {
 public:
  LoggingComm(Communicator& inner, std::vector<std::string>& log) : c_(inner), log_(log) {}
  int rank() const override { return c_.rank(); }
  int world_size() const override { return c_.world_size(); }
  std::string backend() const override { return c_.backend(); }
  void all_reduce_sum(Tensor& t) override { c_.all_reduce_sum(t); }
  void all_reduce_sum(std::span<double> v) override { c_.all_reduce_sum(v); }
  void all_gather(const Tensor& in, Tensor& out) override { c_.all_gather(in, out); }
  void all_gather_bytes(std::span<const uint8_t> in, std::span<uint8_t> out) override {
    c_.all_gather_bytes(in, out);
  }
  void barrier() override { c_.barrier(); }
  void all_reduce_sum_async(Tensor& t) override {
    log_.push_back("reduce " + std::to_string(t.numel()));
    c_.all_reduce_sum_async(t);
  }
  void wait_async() override {
    log_.push_back("wait");
    c_.wait_async();
  }

 private:
  Communicator& c_;
  std::vector<std::string>& log_;
};

// How the gradient sums are run: synchronously in finish_window, started in finish_window
// (nobody called the hook), or started by the model's backward as layers finish.
enum class Overlap { off, at_finish, during_backward };

// Runs one synchronized backward per rank under `mode`; returns every rank's final gradients.
// `events` (optional): per rank, the log of layer completions and reductions.
std::vector<std::vector<std::vector<float>>> synced_gradients(
    int world, Aggregation mode, std::vector<double> weights = {},
    Overlap overlap = Overlap::at_finish, std::vector<std::vector<std::string>>* events = nullptr) {
  std::vector<std::vector<std::vector<float>>> out(static_cast<size_t>(world));
  std::vector<GlobalWindow> globals(static_cast<size_t>(world));
  std::vector<std::vector<std::string>> logs(static_cast<size_t>(world));
  auto errors = run_ranks(world, [&](int r, Communicator& inner) {
    std::vector<std::string>& log = logs[static_cast<size_t>(r)];
    LoggingComm comm(inner, log);
    auto ops = make_cpu_ops();
    auto m = tiny_model(*ops);
    SyncOptions so;
    so.aggregation = mode;
    so.rank_weights = weights;
    so.overlap_reduce = overlap != Overlap::off;
    DataParallelSync sync(comm, *ops, m->lora(), so);
    LocalWindow local;
    const auto batches = rank_batches(r, world);
    for (const Batch& b : batches) local.trained_tokens += count_trained_tokens(b);
    const float scale = static_cast<float>(sync.backward_scale(local.trained_tokens));
    m->lora().zero_grad();
    for (size_t i = 0; i < batches.size(); ++i) {
      if (overlap == Overlap::during_backward && i + 1 == batches.size()) {
        auto hook = sync.grads_ready_hook();
        m->set_grads_ready_hook([&log, hook](int layer) {
          log.push_back("layer " + std::to_string(layer));
          if (hook) hook(layer);
        });
      }
      local.loss_sum += m->forward_backward(batches[i], scale).loss_sum;
      local.input_tokens += batches[i].tokens();
    }
    m->set_grads_ready_hook(nullptr);
    log.push_back("finish");
    globals[static_cast<size_t>(r)] = sync.finish_window(local);
    out[static_cast<size_t>(r)] = grads_of(*m);
  });
  for (int r = 0; r < world; ++r) EXPECT_EQ(errors[static_cast<size_t>(r)], "") << "rank " << r;
  if (events) *events = logs;
  // The scalar reduction: totals and per-rank memory slots filled on every rank alike.
  for (const auto& g : globals) {
    EXPECT_EQ(g.trained_tokens, globals[0].trained_tokens);
    EXPECT_EQ(g.memory_mib.size(), static_cast<size_t>(world));
    for (double mib : g.memory_mib) EXPECT_GT(mib, 1.0);
  }
  return out;
}

void expect_close(const std::vector<std::vector<float>>& got,
                  const std::vector<std::vector<float>>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  double max_norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = test::rel_l2(got[i], want[i]);
    max_norm = std::max(max_norm, e);
    EXPECT_LT(e, 1e-5) << what << ": tensor " << i;
  }
}

}  // namespace

TEST(Shard, WindowsSplitByWeightsCoverEveryMicroBatchOnce) {
  EXPECT_EQ(split_by_weights(6, {}, 3), (std::vector<int64_t>{2, 2, 2}));
  EXPECT_EQ(split_by_weights(7, {}, 3), (std::vector<int64_t>{3, 2, 2}));
  const std::vector<double> w{1, 1, 2, 2};
  EXPECT_EQ(split_by_weights(12, w, 4), (std::vector<int64_t>{2, 2, 4, 4}));
  EXPECT_EQ(split_by_weights(5, w, 4), (std::vector<int64_t>{1, 1, 2, 1}));
  EXPECT_EQ(split_by_weights(2, {}, 3), (std::vector<int64_t>{1, 1, 0}));
  for (int world : {1, 2, 3, 5}) {
    for (int64_t count : {0, 1, 4, 9, 13}) {
      std::vector<int> seen(static_cast<size_t>(count), 0);
      int64_t expect_begin = 10;
      for (int r = 0; r < world; ++r) {
        const auto [b, e] = window_share(10, 10 + count, {}, r, world);
        EXPECT_EQ(b, expect_begin);  // contiguous, in rank order
        expect_begin = e;
        for (int64_t i = b; i < e; ++i) ++seen[static_cast<size_t>(i - 10)];
      }
      EXPECT_EQ(expect_begin, 10 + count);
      for (int s : seen) EXPECT_EQ(s, 1);
    }
  }
  EXPECT_NE(test::error_of([] { split_by_weights(4, std::vector<double>{1, 0}, 2); }).find("positive"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { split_by_weights(4, std::vector<double>{1, 2, 3}, 2); })
                .find("3 entries for 2 ranks"),
            std::string::npos);
}

TEST(Rendezvous, ReadsEveryLauncherEnvironment) {
  DistributedConfig cfg;
  auto env_of = [](std::map<std::string, std::string> m) {
    return [m = std::move(m)](const char* n) -> const char* {
      auto it = m.find(n);
      return it == m.end() ? nullptr : it->second.c_str();
    };
  };
  EXPECT_FALSE(rank_info_from_env(env_of({{"HOME", "/root"}}), cfg, false).has_value());

  auto t = rank_info_from_env(env_of({{"RANK", "3"}, {"LOCAL_RANK", "1"}, {"WORLD_SIZE", "4"},
                                      {"LOCAL_WORLD_SIZE", "2"}, {"MASTER_ADDR", "n0"},
                                      {"MASTER_PORT", "29500"}}),
                              cfg, true);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->launcher, "torchrun");
  EXPECT_EQ(t->rank, 3);
  EXPECT_EQ(t->local_rank, 1);
  EXPECT_EQ(t->world_size, 4);
  EXPECT_EQ(t->local_world_size, 2);
  EXPECT_EQ(t->master_addr, "n0");
  EXPECT_EQ(t->master_port, 29501);  // torch's own store holds MASTER_PORT
  EXPECT_EQ(t->cuda_device, 1);
  EXPECT_EQ(t->device, "cuda:1");

  auto s = rank_info_from_env(env_of({{"SLURM_PROCID", "5"}, {"SLURM_LOCALID", "1"},
                                      {"SLURM_NTASKS", "8"}, {"SLURM_NNODES", "2"},
                                      {"SLURM_STEP_ID", "0"}, {"SLURM_JOB_ID", "1234"},
                                      {"SLURM_JOB_NODELIST", "gpu[07-08],x1"}}),
                              cfg, false);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->launcher, "slurm");
  EXPECT_EQ(s->rank, 5);
  EXPECT_EQ(s->local_rank, 1);
  EXPECT_EQ(s->world_size, 8);
  EXPECT_EQ(s->local_world_size, 4);
  EXPECT_EQ(s->master_addr, "gpu07");
  EXPECT_EQ(s->master_port, 21234);
  EXPECT_EQ(s->device, "cpu");

  auto o = rank_info_from_env(env_of({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"},
                                      {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                      {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}}),
                              cfg, false);
  ASSERT_TRUE(o);
  EXPECT_EQ(o->launcher, "mpirun");
  EXPECT_EQ(o->rank, 1);
  EXPECT_EQ(o->master_addr, "127.0.0.1");

  auto f = rank_info_from_env(env_of({{"FTUNE_RANK", "2"}, {"FTUNE_WORLD_SIZE", "3"},
                                      {"FTUNE_LOCAL_RANK", "2"}, {"FTUNE_LOCAL_WORLD_SIZE", "3"},
                                      {"FTUNE_MASTER_ADDR", "127.0.0.1"}, {"FTUNE_MASTER_PORT", "4000"},
                                      {"FTUNE_DEVICE", "cuda:5"}, {"RANK", "0"}, {"WORLD_SIZE", "9"}}),
                              cfg, true);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->launcher, "ftune");  // ftune's own variables win
  EXPECT_EQ(f->rank, 2);
  EXPECT_EQ(f->world_size, 3);
  EXPECT_EQ(f->device, "cuda:5");
  EXPECT_EQ(f->cuda_device, 0);  // CUDA_VISIBLE_DEVICES narrowed to that GPU

  EXPECT_NE(test::error_of([&] {
              rank_info_from_env(env_of({{"RANK", "4"}, {"WORLD_SIZE", "4"}}), cfg, false);
            }).find("rank 4 of world size 4"),
            std::string::npos);

  EXPECT_EQ(first_slurm_host("node[10,20-23]"), "node10");
  EXPECT_EQ(first_slurm_host("a1,b2"), "a1");
  EXPECT_EQ(first_slurm_host("single"), "single");
  EXPECT_EQ(parse_gpu_selection("4", 8), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(parse_gpu_selection("all", 3), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(parse_gpu_selection("0,2,3", 4), (std::vector<int>{0, 2, 3}));
  EXPECT_NE(test::error_of([] { parse_gpu_selection("0,5", 4); }).find("device 5 does not exist"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { parse_gpu_selection("1,1", 4); }).find("listed twice"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { parse_gpu_selection("many", 4); }).find("not a count"),
            std::string::npos);
  EXPECT_GE(threads_per_worker(1), threads_per_worker(2));
  EXPECT_EQ(threads_per_worker(100000), 1);
}

TEST(Gloo, CollectivesOverTheRendezvousStore) {
  const int world = 3;
  auto errors = run_ranks(world, [&](int r, Communicator& comm) {
    EXPECT_EQ(comm.rank(), r);
    EXPECT_EQ(comm.world_size(), world);
    Tensor t = Tensor::from_vector({1.0f * r, 2.0f, -0.5f * r}, {3});
    comm.all_reduce_sum(t);
    EXPECT_EQ(t.to_vector(), (std::vector<float>{3.0f, 6.0f, -1.5f}));
    std::vector<double> v{1.0, static_cast<double>(r), 1e-300};
    comm.all_reduce_sum(v);
    EXPECT_EQ(v, (std::vector<double>{3.0, 3.0, 3e-300}));
    Tensor in = Tensor::from_vector({static_cast<float>(r), 10.0f + r}, {2});
    Tensor out = Tensor::empty({6});
    comm.all_gather(in, out);
    EXPECT_EQ(out.to_vector(), (std::vector<float>{0, 10, 1, 11, 2, 12}));
  });
  for (const auto& e : errors) EXPECT_EQ(e, "");
}

TEST(Aggregation, EveryModeMatchesTheDirectComputation) {
  const int W = 3;
  std::vector<std::vector<std::vector<float>>> S;
  std::vector<int64_t> n;
  direct_gradients(W, &S, &n);
  ASSERT_EQ(n.size(), 3u);
  EXPECT_NE(n[0], n[1]);  // the modes differ only when the counts do
  const size_t T = S[0].size();
  const int64_t N = std::accumulate(n.begin(), n.end(), int64_t{0});
  auto combine = [&](const std::function<float(size_t, size_t)>& f) {
    std::vector<std::vector<float>> g(T);
    for (size_t t = 0; t < T; ++t)
      for (size_t i = 0; i < S[0][t].size(); ++i) g[t].push_back(f(t, i));
    return g;
  };
  auto mean_r = [&](int r, size_t t, size_t i) {
    return static_cast<double>(S[static_cast<size_t>(r)][t][i]) / static_cast<double>(n[static_cast<size_t>(r)]);
  };
  const auto token_mean = combine([&](size_t t, size_t i) {
    double s = 0;
    for (int r = 0; r < W; ++r) s += S[static_cast<size_t>(r)][t][i];
    return static_cast<float>(s / static_cast<double>(N));
  });
  const auto mean = combine([&](size_t t, size_t i) {
    double s = 0;
    for (int r = 0; r < W; ++r) s += mean_r(r, t, i);
    return static_cast<float>(s / W);
  });
  const std::vector<double> w{1.0, 3.0, 0.5};
  const auto weighted = combine([&](size_t t, size_t i) {
    double s = 0;
    for (int r = 0; r < W; ++r) s += w[static_cast<size_t>(r)] * mean_r(r, t, i);
    return static_cast<float>(s / 4.5);
  });
  const auto median = combine([&](size_t t, size_t i) {
    std::vector<double> c{mean_r(0, t, i), mean_r(1, t, i), mean_r(2, t, i)};
    std::sort(c.begin(), c.end());
    return static_cast<float>(c[1]);
  });
  // The modes really differ from each other on these gradients.
  EXPECT_GT(test::rel_l2(mean[0], token_mean[0]), 1e-3);
  EXPECT_GT(test::rel_l2(weighted[0], mean[0]), 1e-3);
  EXPECT_GT(test::rel_l2(median[0], mean[0]), 1e-3);

  const auto got_tm = synced_gradients(W, Aggregation::token_mean);
  const auto got_mean = synced_gradients(W, Aggregation::mean);
  const auto got_w = synced_gradients(W, Aggregation::weighted, w);
  const auto got_med = synced_gradients(W, Aggregation::median);
  for (int r = 0; r < W; ++r) {
    expect_close(got_tm[static_cast<size_t>(r)], token_mean, "token_mean rank " + std::to_string(r));
    expect_close(got_mean[static_cast<size_t>(r)], mean, "mean rank " + std::to_string(r));
    expect_close(got_w[static_cast<size_t>(r)], weighted, "weighted rank " + std::to_string(r));
    expect_close(got_med[static_cast<size_t>(r)], median, "median rank " + std::to_string(r));
    // Every rank holds the very same bits afterwards.
    EXPECT_EQ(got_tm[static_cast<size_t>(r)], got_tm[0]);
    EXPECT_EQ(got_med[static_cast<size_t>(r)], got_med[0]);
  }
}

TEST(Consistency, MismatchesNameTheRankAndTheTensor) {
  auto errors = run_ranks(3, [&](int r, Communicator& comm) {
    check_same_job(comm, {{"config", 11}, {"model", 22}, {"data", r == 2 ? 34u : 33u}});
  });
  for (const auto& e : errors)
    EXPECT_NE(e.find("rank 2 has a different data than rank 0"), std::string::npos) << e;

  auto errors2 = run_ranks(3, [&](int r, Communicator& comm) {
    Tensor a = Tensor::from_vector({1, 2, 3}, {3});
    Tensor b = Tensor::from_vector({4, 5, r == 1 ? 6.5f : 6.0f}, {3});
    Tensor c = Tensor::from_vector({7, r == 1 ? 0.0f : 8.0f}, {2});
    verify_replicas(comm, {{"layers.0.lora_A", &a}, {"layers.0.lora_B", &b}, {"layers.1.exp_avg", &c}}, 12);
  });
  for (const auto& e : errors2)
    EXPECT_NE(e.find("consistency check at step 12: rank 1 differs from rank 0 in 'layers.0.lora_B'"),
              std::string::npos)
        << e;
  // Identical replicas pass.
  auto ok = run_ranks(2, [&](int, Communicator& comm) {
    Tensor a = Tensor::from_vector({1, 2, 3}, {3});
    verify_replicas(comm, {{"a", &a}}, 1);
    check_same_job(comm, {{"config", 1}});
  });
  for (const auto& e : ok) EXPECT_EQ(e, "");
}

TEST(ExampleConfigs, EveryExampleYamlIsValid) {
  namespace fs = std::filesystem;
  int n = 0;
  for (const auto& e : fs::directory_iterator(test::data_path("../examples/configs"))) {
    if (e.path().extension() != ".yaml") continue;
    ++n;
    // The model and data folders of the examples are the user's; everything else must load.
    const TrainConfig c = load_config(e.path().string(), {"model.path=\"\"", "data.train=\"\""});
    if (c.distributed.gpus != "1") {
      EXPECT_FALSE(parse_gpu_selection(c.distributed.gpus, -1).empty());
    }
    if (!c.distributed.shard_weights.empty()) {
      const int world = static_cast<int>(parse_gpu_selection(c.distributed.gpus, -1).size());
      EXPECT_EQ(split_by_weights(12, c.distributed.shard_weights, world),
                (std::vector<int64_t>{2, 2, 4, 4}));
    }
  }
  EXPECT_GE(n, 5);
}

// ---- rendezvous admission (issue: a run listens only for its own workers) ----
namespace {

// A raw client of the store's wire format (kv_store.cpp): op, u32 key length, key, u32 value
// length, value. Returns the reply's value, or nullopt when the server closed the connection.
std::optional<std::vector<char>> raw_request(int port, char op, const std::string& key,
                                             const std::vector<char>& value) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  const uint32_t kl = static_cast<uint32_t>(key.size()), vl = static_cast<uint32_t>(value.size());
  std::string msg(1, op);
  msg.append(reinterpret_cast<const char*>(&kl), 4).append(key);
  msg.append(reinterpret_cast<const char*>(&vl), 4).append(value.begin(), value.end());
  EXPECT_EQ(::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL), static_cast<ssize_t>(msg.size()));
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char rop = 0;
  uint32_t rkl = 0, rvl = 0;
  std::optional<std::vector<char>> out;
  if (::recv(fd, &rop, 1, MSG_WAITALL) == 1 && ::recv(fd, &rkl, 4, MSG_WAITALL) == 4) {
    std::string rkey(rkl, '\0');
    if ((rkl == 0 || ::recv(fd, rkey.data(), rkl, MSG_WAITALL) == static_cast<ssize_t>(rkl)) &&
        ::recv(fd, &rvl, 4, MSG_WAITALL) == 4) {
      std::vector<char> v(rvl);
      if (rvl == 0 || ::recv(fd, v.data(), rvl, MSG_WAITALL) == static_cast<ssize_t>(rvl)) out = v;
    }
  }
  ::close(fd);
  return out;
}

std::vector<char> hello(int32_t world, const std::string& token) {
  std::vector<char> v(sizeof world);
  std::memcpy(v.data(), &world, sizeof world);
  v.insert(v.end(), token.begin(), token.end());
  return v;
}

}  // namespace

TEST(Rendezvous, AdmitsOnlyWorkersWithTheJobToken) {
  ::setenv("FTUNE_JOB_TOKEN", "0123456789abcdef", 1);
  EXPECT_EQ(rendezvous_job_token(), "0123456789abcdef");
  int port = 0;
  const int listen_fd = bind_listen_socket("127.0.0.1", 0, &port);
  std::unique_ptr<KeyValueStore> rank0;
  std::thread t0([&] { rank0 = std::make_unique<KeyValueStore>("127.0.0.1", port, 0, 2, 30, listen_fd); });
  // Rank 0's own hello is in: the server is up once its constructor returns.
  t0.join();
  // A wrong token, a wrong world size, and a request before any hello are all turned away.
  EXPECT_EQ(raw_request(port, 'H', "1", hello(2, "fedcba9876543210")), std::vector<char>{'E'});
  EXPECT_EQ(raw_request(port, 'H', "1", hello(3, "0123456789abcdef")), std::vector<char>{'E'});
  EXPECT_FALSE(raw_request(port, 'S', "secret", {'x'}).has_value());
  EXPECT_FALSE(raw_request(port, 'G', "secret", {}).has_value());
  // The job's token is admitted, and a genuine rank 1 works with rank 0.
  EXPECT_EQ(raw_request(port, 'H', "1", hello(2, "0123456789abcdef")), std::vector<char>{'K'});
  KeyValueStore rank1("127.0.0.1", port, 1, 2, 30);
  rank1.set("k", {'v'});
  EXPECT_EQ(rank0->get("k"), std::vector<char>{'v'});
  ::unsetenv("FTUNE_JOB_TOKEN");
  // Two tokens drawn for two jobs differ and are 128 bits of hex.
  const std::string a = new_job_token(), b = new_job_token();
  EXPECT_EQ(a.size(), 32u);
  EXPECT_NE(a, b);
}

TEST(Aggregation, BucketsAreReducedWhileBackwardGoesOn) {
  const int W = 3;
  const ModelSpec spec = tiny_spec();
  // Bucket sizes: layer l's LoRA parameters (the same for both layers of the tiny model).
  auto ops = make_cpu_ops();
  auto m = tiny_model(*ops);
  const auto [first, last] = m->lora().layer_range[1];
  const std::string bucket = "reduce " + std::to_string(last - first);
  for (Aggregation mode : {Aggregation::token_mean, Aggregation::mean, Aggregation::weighted}) {
    const std::vector<double> w = mode == Aggregation::weighted ? std::vector<double>{1, 3, 0.5}
                                                                : std::vector<double>{};
    std::vector<std::vector<std::string>> ev;
    const auto during = synced_gradients(W, mode, w, Overlap::during_backward, &ev);
    const auto at_finish = synced_gradients(W, mode, w, Overlap::at_finish);
    const auto off = synced_gradients(W, mode, w, Overlap::off);
    for (int r = 0; r < W; ++r) {
      // Layer 1's sum starts before layer 0's backward is done, both before finish_window, and
      // finish_window waits for them; with accumulation only the last micro-batch does this.
      const std::vector<std::string> want{"layer 1", bucket, "layer 0", bucket, "finish", "wait"};
      EXPECT_EQ(ev[static_cast<size_t>(r)], want) << "rank " << r;
      // The same bits however the sums were scheduled.
      EXPECT_EQ(during[static_cast<size_t>(r)], at_finish[static_cast<size_t>(r)]);
      EXPECT_EQ(during[static_cast<size_t>(r)], off[static_cast<size_t>(r)]);
    }
  }
  (void)spec;
  // median needs the step's counts first: nothing is started during backward.
  std::vector<std::vector<std::string>> ev;
  synced_gradients(W, Aggregation::median, {}, Overlap::during_backward, &ev);
  for (int r = 0; r < W; ++r)
    EXPECT_EQ(ev[static_cast<size_t>(r)],
              (std::vector<std::string>{"layer 1", "layer 0", "finish"})) << "rank " << r;
}

TEST(Aggregation, TraceRecordsEveryBucketReduceAgainstTheBackward) {
  // FTUNE_COMM_TRACE's file: one line per step and rank, with a compute mark per layer as its
  // gradients become final and one span per bucket reduce, each issued after its layer's mark.
  const std::string dir = test::temp_dir("comm_trace");
  auto errors = run_ranks(2, [&](int r, Communicator& comm) {
    auto ops = make_cpu_ops();
    auto m = tiny_model(*ops);
    SyncOptions so;
    so.trace_path = dir + "/trace.rank" + std::to_string(r) + ".jsonl";
    DataParallelSync sync(comm, *ops, m->lora(), so);
    TrainerOptions to;
    to.schedule = {"constant", 1e-3, 0, 10};
    Trainer t(*m, to, &sync);
    for (int step = 0; step < 2; ++step) t.step(rank_batches(r, 2));
  });
  ASSERT_EQ(errors[0], "");
  ASSERT_EQ(errors[1], "");
  for (int r = 0; r < 2; ++r) {
    std::ifstream f(dir + "/trace.rank" + std::to_string(r) + ".jsonl");
    std::vector<nlohmann::json> lines;
    for (std::string line; std::getline(f, line);) lines.push_back(nlohmann::json::parse(line));
    ASSERT_EQ(lines.size(), 2u) << r;
    for (size_t i = 0; i < lines.size(); ++i) {
      const auto& j = lines[i];
      EXPECT_EQ(j["step"], static_cast<int>(i) + 1);
      EXPECT_EQ(j["rank"], r);
      EXPECT_EQ(j["backend"], "gloo");
      std::vector<std::string> order;
      double mark1 = -1;
      for (const auto& sp : j["spans"]) {
        order.push_back(sp["what"].get<std::string>());
        EXPECT_GE(sp["end_ms"].get<double>(), sp["start_ms"].get<double>());
        if (sp["what"] == "layer 1 gradients ready") mark1 = sp["start_ms"].get<double>();
        if (!sp["compute"].get<bool>()) {
          EXPECT_GE(sp["start_ms"].get<double>(), mark1);
        }
      }
      ASSERT_EQ(order.size(), 4u);
      EXPECT_EQ(order[0], "layer 1 gradients ready");
      EXPECT_EQ(std::count(order.begin(), order.end(), "all_reduce (during backward)"), 2);
      EXPECT_EQ(std::count(order.begin(), order.end(), "layer 0 gradients ready"), 1);
      EXPECT_LE(j["overlapped_ms"].get<double>(), j["reduce_ms"].get<double>() + 1e-9);
    }
  }
  // The summary on a timeline made by hand: 2 of the 5 reduce milliseconds before backward ends.
  const OverlapSummary o = summarize_overlap({{"layer 1", 1, 1, true},
                                              {"reduce", 2, 5, false},
                                              {"layer 0", 4, 4, true},
                                              {"reduce", 4.5, 6.5, false}});
  EXPECT_EQ(o.marks, 2);
  EXPECT_EQ(o.reduces, 2);
  EXPECT_DOUBLE_EQ(o.reduce_ms, 5.0);
  EXPECT_DOUBLE_EQ(o.overlapped_ms, 2.0);
  EXPECT_DOUBLE_EQ(o.backward_end_ms, 4.0);
}

TEST(Gloo, AsyncReductionsRunInOrder) {
  const int world = 2;
  auto errors = run_ranks(world, [&](int r, Communicator& comm) {
    std::vector<Tensor> ts;
    for (int k = 0; k < 5; ++k) ts.push_back(Tensor::from_vector({1.0f * r + k, 2.0f * k}, {2}));
    for (Tensor& t : ts) comm.all_reduce_sum_async(t);
    comm.wait_async();
    for (int k = 0; k < 5; ++k)
      EXPECT_EQ(ts[static_cast<size_t>(k)].to_vector(),
                (std::vector<float>{1.0f + 2.0f * k, 4.0f * k}));
    // A synchronous collective after the wait still pairs up across ranks.
    std::vector<double> v{1.0};
    comm.all_reduce_sum(v);
    EXPECT_EQ(v[0], 2.0);
  });
  for (const auto& e : errors) EXPECT_EQ(e, "");
}

TEST(Gloo, AsyncReductionFailureSurfacesAtTheWait) {
  auto errors = run_ranks(2, [&](int r, Communicator& comm) {
    if (r == 1) throw std::runtime_error("rank 1 stopped");  // its sockets close
    Tensor t = Tensor::from_vector({1.0f, 2.0f}, {2});
    comm.all_reduce_sum_async(t);
    comm.wait_async();
  });
  EXPECT_EQ(errors[1], "rank 1 stopped");
  EXPECT_NE(errors[0].find("gloo all_reduce (during backward) failed on rank 0"), std::string::npos)
      << errors[0];
}
