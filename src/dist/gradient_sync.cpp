// Gradient aggregation across ranks (the formulas are in gradient_sync.h).
#include "dist/gradient_sync.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "dist/consistency.h"

namespace ftune {

Aggregation parse_aggregation(std::string_view name) {
  if (name == "token_mean") return Aggregation::token_mean;
  if (name == "mean") return Aggregation::mean;
  if (name == "weighted") return Aggregation::weighted;
  if (name == "median") return Aggregation::median;
  fail("distributed.aggregation: unknown mode '{}' (token_mean, mean, weighted, median)", name);
}

std::vector<GradBucket> layer_buckets(LoraWeights& lora) {
  FTUNE_CHECK(lora.flat_grads.defined() && lora.layer_range.size() == lora.layers.size(),
              "data parallelism needs the adapter's gradients in one flat buffer "
              "(LoraWeights::allocate/init)");
  std::vector<GradBucket> out;
  for (int l = static_cast<int>(lora.layers.size()) - 1; l >= 0; --l) {
    const auto [first, last] = lora.layer_range[static_cast<size_t>(l)];
    if (last <= first) continue;
    out.push_back(GradBucket{l, lora.flat_grads.slice_rows(first, last)});
  }
  return out;
}

std::pair<double, double> host_memory_mib() {
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const double page_mib = static_cast<double>(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
  return {static_cast<double>(resident) * page_mib, static_cast<double>(ru.ru_maxrss) / 1024.0};
}

DataParallelSync::DataParallelSync(Communicator& comm, Ops& ops, LoraWeights& lora,
                                   SyncOptions opts, MemoryProbe memory)
    : comm_(comm), ops_(ops), lora_(lora), opts_(std::move(opts)), memory_(std::move(memory)),
      buckets_(layer_buckets(lora)) {
  if (!opts_.trace_path.empty()) comm_.set_tracing(true);
  if (opts_.aggregation == Aggregation::weighted) {
    FTUNE_CHECK(static_cast<int>(opts_.rank_weights.size()) == comm.world_size(),
                "distributed.aggregation=weighted needs distributed.rank_weights with one weight "
                "per rank ({} ranks, {} weights)",
                comm.world_size(), opts_.rank_weights.size());
    for (size_t r = 0; r < opts_.rank_weights.size(); ++r)
      FTUNE_CHECK(opts_.rank_weights[r] > 0,
                  "distributed.rank_weights: weight of rank {} must be positive, got {}", r,
                  opts_.rank_weights[r]);
  }
}

double DataParallelSync::backward_scale(int64_t n) {
  if (opts_.aggregation == Aggregation::token_mean) return 1.0;
  if (n == 0) return 0.0;
  const double w = opts_.aggregation == Aggregation::weighted
                       ? opts_.rank_weights[static_cast<size_t>(rank())]
                       : 1.0;
  return w / static_cast<double>(n);
}

GlobalWindow DataParallelSync::finish_window(const LocalWindow& local) {
  const int W = world_size(), r = rank();
  // The gradient sums started during backward; a rank whose backward started none of them (an
  // empty window, or overlap off) starts them now, in the same order as everyone else.
  if (overlaps()) {
    start_buckets_through(0);
    comm_.wait_async();
    started_ = 0;
    if (!opts_.trace_path.empty()) trace_ = comm_.take_trace();
  } else if (opts_.aggregation != Aggregation::median) {
    for (GradBucket& b : buckets_) comm_.all_reduce_sum(b.grads);
  }
  // The step's one scalar reduction: totals, then per-rank slots (trained tokens, memory,
  // micro-batches and compute seconds for auto shard weights).
  enum { kTrained, kLoss, kInput, kStop, kFixed };
  std::vector<double> v(kFixed + 5 * static_cast<size_t>(W), 0.0);
  v[kTrained] = static_cast<double>(local.trained_tokens);
  v[kLoss] = local.loss_sum;
  v[kInput] = static_cast<double>(local.input_tokens);
  v[kStop] = local.stop_request ? 1.0 : 0.0;  // the step-boundary stop vote (train/signals.h)
  const auto [mem, peak] = memory_();
  v[kFixed + r] = static_cast<double>(local.trained_tokens);
  v[kFixed + W + r] = mem;
  v[kFixed + 2 * W + r] = peak;
  v[kFixed + 3 * W + r] = static_cast<double>(local.micro_batches);
  v[kFixed + 4 * W + r] = local.compute_s;
  comm_.all_reduce_sum(v);

  GlobalWindow g;
  g.trained_tokens = static_cast<int64_t>(v[kTrained]);
  g.loss_sum = v[kLoss];
  g.input_tokens = static_cast<int64_t>(v[kInput]);
  g.stop_requests = static_cast<int64_t>(v[kStop]);
  std::vector<double> counts(v.begin() + kFixed, v.begin() + kFixed + W);
  g.memory_mib.assign(v.begin() + kFixed + W, v.begin() + kFixed + 2 * W);
  g.peak_memory_mib.assign(v.begin() + kFixed + 2 * W, v.begin() + kFixed + 3 * W);
  g.micro_batches.assign(v.begin() + kFixed + 3 * W, v.begin() + kFixed + 4 * W);
  g.compute_s.assign(v.begin() + kFixed + 4 * W, v.end());
  if (g.trained_tokens == 0) return g;  // the trainer reports it

  double post = 1.0;
  switch (opts_.aggregation) {
    case Aggregation::token_mean: post = 1.0 / v[kTrained]; break;
    case Aggregation::mean:
      post = 1.0 / static_cast<double>(std::count_if(counts.begin(), counts.end(),
                                                     [](double c) { return c > 0; }));
      break;
    case Aggregation::weighted: {
      double wsum = 0;
      for (int k = 0; k < W; ++k)
        if (counts[static_cast<size_t>(k)] > 0) wsum += opts_.rank_weights[static_cast<size_t>(k)];
      post = 1.0 / wsum;
      break;
    }
    case Aggregation::median:
      for (GradBucket& b : buckets_) median_bucket(b, counts);
      return g;
  }
  if (post != 1.0) ops_.scale(lora_.flat_grads, static_cast<float>(post));
  return g;
}

std::function<void(int)> DataParallelSync::grads_ready_hook() {
  if (!overlaps()) return nullptr;
  return [this](int layer) {
    if (!opts_.trace_path.empty()) comm_.trace_mark(fmt::format("layer {} gradients ready", layer));
    start_buckets_through(layer);
  };
}

void DataParallelSync::start_buckets_through(int layer) {
  while (started_ < buckets_.size() && buckets_[started_].layer >= layer)
    comm_.all_reduce_sum_async(buckets_[started_++].grads);
}

void DataParallelSync::median_bucket(GradBucket& b, const std::vector<double>& counts) {
  const int W = world_size();
  const int64_t n = b.grads.numel();
  Tensor all = Tensor::empty({n * W}, DType::F32, b.grads.device());
  comm_.all_gather(b.grads, all);
  Tensor host = all.device().is_cpu() ? all : all.to(Device::cpu());
  std::vector<int> active;
  for (int k = 0; k < W; ++k)
    if (counts[static_cast<size_t>(k)] > 0) active.push_back(k);
  Tensor med = Tensor::empty({n});
  const float* src = host.f32();
  float* dst = med.f32();
  std::vector<float> col(active.size());
  for (int64_t i = 0; i < n; ++i) {
    for (size_t a = 0; a < active.size(); ++a) col[a] = src[static_cast<int64_t>(active[a]) * n + i];
    std::sort(col.begin(), col.end());
    const size_t m = col.size() / 2;
    dst[i] = col.size() % 2 ? col[m] : 0.5f * (col[m - 1] + col[m]);
  }
  b.grads.copy_from(med);
}

StepLoss DataParallelSync::reduce_eval(const StepLoss& local) {
  double v[2] = {local.loss_sum, static_cast<double>(local.count)};
  comm_.all_reduce_sum(v);
  return {v[0], static_cast<int64_t>(v[1])};
}

OverlapSummary summarize_overlap(const std::vector<CommSpan>& spans) {
  OverlapSummary o;
  for (const auto& s : spans)
    if (s.compute) {
      o.backward_end_ms = std::max(o.backward_end_ms, s.end_ms);
      ++o.marks;
    }
  for (const auto& s : spans) {
    if (s.compute) continue;
    ++o.reduces;
    o.reduce_ms += s.end_ms - s.start_ms;
    o.overlapped_ms += std::max(0.0, std::min(s.end_ms, o.backward_end_ms) - s.start_ms);
  }
  return o;
}

void DataParallelSync::after_step(int64_t step, const AdamW& optimizer) {
  if (!opts_.trace_path.empty() && !trace_.empty()) {
    const OverlapSummary o = summarize_overlap(trace_);
    nlohmann::json spans = nlohmann::json::array();
    for (const auto& e : trace_)
      spans.push_back({{"what", e.what}, {"start_ms", e.start_ms}, {"end_ms", e.end_ms},
                       {"compute", e.compute}});
    const nlohmann::json j = {{"step", step},
                              {"rank", rank()},
                              {"backend", comm_.backend()},
                              {"reduce_ms", o.reduce_ms},
                              {"overlapped_ms", o.overlapped_ms},
                              {"backward_end_ms", o.backward_end_ms},
                              {"spans", spans}};
    std::ofstream f(opts_.trace_path, std::ios::app);
    f << j.dump() << "\n";
    FTUNE_CHECK(f.good(), "FTUNE_COMM_TRACE: cannot write {}", opts_.trace_path);
    trace_.clear();
  }
  if (opts_.verify_every <= 0 || step % opts_.verify_every != 0) return;
  std::vector<std::pair<std::string, const Tensor*>> named;
  for (auto& p : lora_.params()) named.emplace_back(p.name, p.value);
  const auto state = optimizer.state();
  for (const auto& [name, t] : state) named.emplace_back(name, &t);
  verify_replicas(comm_, named, step);
}

}  // namespace ftune
