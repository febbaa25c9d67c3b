// `ftune doctor`: build options, devices, library versions, and a quick check that each part
// works (CPU backend against finite differences, tokenizer round trip, CUDA ops vs CPU).
#include <cblas.h>
#include <dlfcn.h>

#include <cmath>
#include <cstdio>
#include <fmt/format.h>
#include <functional>
#include <thread>

#include "backend/cuda_ops.h"
#include "backend/gpu.h"
#include "cli/commands.h"
#include "cli/embedded_assets.h"
#include "core/error.h"
#include "io/tokenizer.h"
#include "model/llama_model.h"

namespace ftune {

namespace {

bool report(const char* what, const std::function<std::string()>& check) {
  try {
    const std::string detail = check();
    std::printf("  [ok]   %-22s %s\n", what, detail.c_str());
    return true;
  } catch (const std::exception& e) {
    std::printf("  [FAIL] %-22s %s\n", what, e.what());
    return false;
  }
}

// A tiny model's loss on a fixed batch on the given backend.
double tiny_loss(Ops& ops) {
  ModelSpec s;
  s.vocab_size = 64;
  s.hidden_size = 32;
  s.intermediate_size = 48;
  s.num_layers = 1;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 8;
  s.tie_word_embeddings = true;
  const BaseWeights w = base_weights_to(random_base_weights(s, 7, 0.2f), s, ops.device());
  LlamaModel m(s, w, ops);
  Batch b = batch_from_documents({{1, 2, 3, 4, 5, 6, 7, 8}}, {{1, 2, 3, 4, 5, 6, 7, 8}}, 8, 0);
  return m.forward(b).mean();
}

// Version of a shared library found at run time through `symbol`, or "not found". ftune does not
// link NCCL or cuDNN yet; doctor reports what the machine has for the multi-GPU and attention
// work that will use them.
std::string nccl_version() {
  void* h = dlopen("libnccl.so.2", RTLD_LAZY | RTLD_LOCAL);
  if (h == nullptr) return "not found";
  using Fn = int (*)(int*);
  auto fn = reinterpret_cast<Fn>(dlsym(h, "ncclGetVersion"));
  int v = 0;
  std::string out = "found (version unknown)";
  if (fn != nullptr && fn(&v) == 0)
    out = v >= 10000 ? fmt::format("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100)
                     : fmt::format("{}.{}.{}", v / 1000, (v % 1000) / 100, v % 100);
  dlclose(h);
  return out;
}

std::string cudnn_version() {
  for (const char* name : {"libcudnn.so.9", "libcudnn.so.8", "libcudnn.so"}) {
    void* h = dlopen(name, RTLD_LAZY | RTLD_LOCAL);
    if (h == nullptr) continue;
    using Fn = size_t (*)();
    auto fn = reinterpret_cast<Fn>(dlsym(h, "cudnnGetVersion"));
    std::string out = "found (version unknown)";
    if (fn != nullptr) {
      const size_t v = fn();  // e.g. 91400 for 9.14.0
      out = fmt::format("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100);
    }
    dlclose(h);
    return out;
  }
  return "not found";
}

}  // namespace

int cmd_doctor() {
  std::printf("ftune %s (%s build)\n", FTUNE_VERSION, FTUNE_BUILD_TYPE);
  const GpuRuntimeInfo g = query_gpus();
  std::printf("build: CUDA backend %s; OpenBLAS %s\n", g.built_with_cuda ? "on" : "off",
              openblas_get_config());
  std::printf("cpu: %u hardware threads\n", std::thread::hardware_concurrency());
  if (g.built_with_cuda) {
    std::printf("cuda: runtime %d.%d, driver %d.%d\n", g.runtime_version / 1000,
                (g.runtime_version % 1000) / 10, g.driver_version / 1000, (g.driver_version % 1000) / 10);
    std::printf("attention (bf16/fp16): %s\n", gpu_attention_describe().c_str());
    if (g.devices.empty()) std::printf("gpus: none usable (%s)\n", g.error.c_str());
    for (const auto& d : g.devices)
      std::printf("gpu %d: %s, %.1f GiB (%.1f free), compute %d.%d, %d SMs\n", d.index, d.name.c_str(),
                  static_cast<double>(d.total_bytes) / (1 << 30), static_cast<double>(d.free_bytes) / (1 << 30),
                  d.cc_major, d.cc_minor, d.multiprocessors);
  }
  std::printf("nccl: %s; cudnn: %s (not used by this version yet)\n", nccl_version().c_str(),
              cudnn_version().c_str());
  std::printf("checks:\n");
  bool ok = true;
  ok &= report("cpu backend", [] {
    auto ops = make_cpu_ops();
    const double l = tiny_loss(*ops);
    FTUNE_CHECK(std::isfinite(l) && l > 0, "tiny model loss is {}", l);
    return fmt::format("tiny model loss {:.4f}", l);
  });
  ok &= report("tokenizer", [] {
    const Tokenizer t = Tokenizer::from_json(std::string(embedded_asset("tokenizer_json")), "<built-in>");
    const std::string s = "Hello, world! 123 ünïcödé";
    const auto ids = t.encode(s);
    FTUNE_CHECK(t.decode(ids) == s, "decode(encode(s)) != s");
    return fmt::format("built-in tokenizer: {} tokens, round trip ok", t.vocab_size());
  });
  if (g.built_with_cuda && !g.devices.empty()) {
    ok &= report("cuda backend", [] {
      auto cpu = make_cpu_ops();
      auto gpu = make_cuda_ops(0);
      const double a = tiny_loss(*cpu), b = tiny_loss(*gpu);
      FTUNE_CHECK(std::fabs(a - b) <= 1e-4 * std::fabs(a), "CUDA loss {} vs CPU {}", b, a);
      return fmt::format("tiny model loss matches the CPU ({:.6f} vs {:.6f})", b, a);
    });
  }
  std::printf("%s\n", ok ? "all checks passed" : "some checks FAILED");
  return ok ? 0 : 1;
}

}  // namespace ftune
