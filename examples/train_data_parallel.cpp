// Embedding ftune: the built-in tiny job trained by two CPU worker processes with one call to
// enable data parallelism, then the metrics read back. CI builds and runs this program
// (argv[1]: the ftune binary the workers run, argv[2]: an output folder), both as the launcher
// of its workers and as the two ranks of a torchrun-style environment.
//
//   ./train_data_parallel ./build/ftune /tmp/ftune-example
//   torchrun --no-python --nproc_per_node=2 ./train_data_parallel ./build/ftune /tmp/ftune-example
#include <cstdio>
#include <exception>

#include "api/ftune.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s FTUNE_BINARY OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  try {
    auto job = ftune::api::Job::builtin({"train.max_steps=6", "data.max_seq_length=256",
                                         "logging.console=plain", "lora.dropout=0.05"});
    job.set("train.output_dir", argv[2]).set("train.overwrite_output_dir", "true");
    job.enable_data_parallel({.devices = 2, .on_gpus = false, .micro_batch_size = 2,
                              .aggregation = "token_mean", .rank_weights = {}, .shard_weights = {}});
    job.worker_binary(argv[1]);
    const ftune::api::TrainResult r = job.train();
    // Started by torchrun/srun/mpirun, this program runs once per rank and train() returns in
    // each; rank 0 reports.
    if (!ftune::api::is_main_process()) return 0;

    std::printf("steps %lld, loss %.4f -> %.4f, validation loss %.4f, adapter in %s\n",
                static_cast<long long>(r.steps), r.first_loss, r.final_loss, r.eval_loss,
                r.adapter_dir.c_str());
    for (const auto& m : r.metrics)
      std::printf("  step %lld loss %.4f grad_norm %.3f memory rank0 %.0f MiB rank1 %.0f MiB\n",
                  static_cast<long long>(m.step), m.loss, m.grad_norm,
                  m.memory_mib.size() > 0 ? m.memory_mib[0] : 0.0,
                  m.memory_mib.size() > 1 ? m.memory_mib[1] : 0.0);
    std::printf("this process: rank %d of %d, main %s, memory %.0f MiB on %s\n",
                ftune::api::rank(), ftune::api::world_size(),
                ftune::api::is_main_process() ? "yes" : "no", ftune::api::device_memory().in_use_mib,
                ftune::api::device_memory().device.c_str());
    // What CI checks: every step logged, per-rank memory reported, and training helped.
    const bool ok = r.steps == 6 && r.metrics.back().memory_mib.size() == 2 &&
                    r.final_loss < r.first_loss && r.eval_loss > 0;
    if (!ok) std::fprintf(stderr, "example: unexpected result\n");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
