// The ftune command line: train, eval, doctor, bench. Library errors (ftune::Error) become one
// "error: ..." line and exit code 1; usage errors exit 2.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <new>
#include <string>

#include "cli/commands.h"
#include "cli/command_names.h"
#include "core/error.h"

int main(int argc, char** argv) {
  using namespace ftune;
  CLI::App app{"ftune: LoRA fine-tuning of Llama-family models (C++/CUDA)"};
  app.require_subcommand(1);

  TrainArgs train;
  std::vector<std::string> positional;
  auto* t = app.add_subcommand("train", "Fine-tune with LoRA (no config: the embedded default job)");
  t->add_option("args", positional, "CONFIG.yaml and/or section.key=value overrides");
  t->add_flag("--resume", train.resume, "Continue from the newest checkpoint in train.output_dir");
  t->add_option("--gpus", train.gpus, "GPUs, one worker process each: N, all, or ids 0,2,3 (distributed.gpus; env FTUNE_GPUS)");
  t->add_option("--nproc", train.nproc, "Worker processes on the CPU backend (distributed.nproc)")->check(CLI::Range(1, 1024));
  t->add_option("--nnodes", train.nnodes, "Machines of a multi-node job (distributed.nnodes)")->check(CLI::Range(1, 65536));
  t->add_option("--node-rank", train.node_rank, "This machine's index (distributed.node_rank)")->check(CLI::Range(0, 65535));
  t->add_option("--master-addr", train.master_addr, "Host of node 0 (distributed.master_addr)");
  t->add_option("--master-port", train.master_port, "Rendezvous port (distributed.master_port)")->check(CLI::Range(0, 65535));

  EvalArgs ev;
  auto* e = app.add_subcommand("eval", "Loss and perplexity of a model (+ adapter) on a dataset");
  e->add_option("--model", ev.model, "HF model folder")->required();
  e->add_option("--adapter", ev.adapter, "PEFT adapter folder");
  e->add_option("--data", ev.data, "JSON/JSONL dataset")->required();
  e->add_option("--format", ev.format, "Dataset format (auto, alpaca, sharegpt, messages, text, prompt_completion)");
  e->add_option("--chat-template", ev.chat_template, "Chat template: auto (the model's own Jinja template) or a preset (llama-3, llama-2, mistral, chatml, alpaca)");
  e->add_option("--max-seq-length", ev.max_seq_length, "Tokens per row");
  e->add_option("--batch-size", ev.batch_size, "Rows per forward pass");
  e->add_option("--device", ev.device, "auto, cpu or cuda");

  auto* doc = app.add_subcommand("doctor", "Build options, devices, and whether each part works");

  BenchArgs bench;
  auto* b = app.add_subcommand("bench", "Training throughput of a model preset (random weights): tokens/s, TFLOP/s, MFU, peak memory, profile");
  b->add_option("--preset", bench.preset, "llama-3.2-1b, llama-3.2-3b, llama-3-8b, mistral-7b, qwen2.5-7b");
  b->add_option("--batch", bench.batch, "Rows per step")->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  b->add_option("--seq", bench.seq, "Tokens per row")->check(CLI::Range(int64_t{2}, int64_t{1} << 24));
  b->add_option("--steps", bench.steps, "Timed steps")->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  b->add_option("--warmup", bench.warmup, "Untimed steps first")->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  b->add_option("--lora-r", bench.lora_r, "LoRA rank (all seven projections, alpha = r)")->check(CLI::Range(int64_t{1}, int64_t{4096}));
  b->add_flag("--checkpointing", bench.checkpointing, "Recompute each layer's forward during backward");
  b->add_flag("--profile", bench.profile, "Also time one step op by op (GEMMs, attention, elementwise, loss, optimizer)");
  b->add_option("--dtype", bench.dtype, "auto, bfloat16, float16 or float32");
  b->add_option("--device", bench.device, "auto, cpu or cuda");
  b->add_option("--peak-tflops", bench.peak_tflops, "Dense bf16 TFLOP/s of the device, for MFU")->check(CLI::PositiveNumber);

  if (argc >= 2 && argv[1][0] != '-') {
    const std::string cmd = argv[1];
    if (const std::string hint = unknown_command_message(cmd); !hint.empty()) {
      std::fprintf(stderr, "error: %s\n", hint.c_str());
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& err) {
    const int rc = app.exit(err);  // prints help, or the usage error
    return rc == 0 ? 0 : 2;        // one code for every usage error (README)
  }
  try {
    if (*t) {
      for (const auto& a : positional) {
        if (a.find('=') != std::string::npos) train.overrides.push_back(a);
        else if (train.config.empty()) train.config = a;
        else fail("train: more than one config file given ('{}' and '{}')", train.config, a);
      }
      train.argv.assign(argv, argv + argc);
      return cmd_train(train);
    }
    if (*e) return cmd_eval(ev);
    if (*b) return cmd_bench(bench);
    (void)doc;
    return cmd_doctor();
  } catch (const Error& err) {
    std::fprintf(stderr, "error: %s\n", err.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory (a size check missed this case: please report it)\n");
    return 1;
  } catch (const std::exception& err) {
    std::fprintf(stderr, "error: %s\n", err.what());
    return 1;
  }
}
