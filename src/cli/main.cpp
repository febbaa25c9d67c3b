// The ftune command line: train, eval, generate, doctor, bench, merge, export, plan. Library errors (ftune::Error) become one
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

  GenerateArgs gen;
  std::string gen_prompt;
  auto* g = app.add_subcommand("generate", "Generate text from a model (+ adapter): --prompt TEXT, or --chat on stdin");
  g->add_option("--model", gen.model, "HF model folder")->required();
  g->add_option("--adapter", gen.adapter, "PEFT adapter folder");
  auto* g_prompt = g->add_option("--prompt", gen_prompt, "Prompt text (raw, or one user turn with --chat-template/--system)");
  auto* g_chat = g->add_flag("--chat", gen.chat, "Interactive chat: one user message per line of stdin");
  g_prompt->excludes(g_chat);
  g->add_option("--max-new-tokens", gen.max_new_tokens, "Most tokens to generate (default 256)");
  g->add_option("--temperature", gen.temperature, "0 = greedy (default); > 0 samples");
  g->add_option("--top-p", gen.top_p, "Nucleus sampling: keep the most likely tokens up to this probability (1 = off)");
  g->add_option("--top-k", gen.top_k, "Keep the k most likely tokens (0 = off)");
  g->add_option("--seed", gen.seed, "Seed of the sampler");
  g->add_option("--device", gen.device, "auto, cpu or cuda");
  g->add_option("--chat-template", gen.chat_template, "auto, llama-3, llama-2, mistral, chatml, alpaca");
  g->add_option("--system", gen.system, "System message");
  g->add_flag("--json", gen.json, "Print one JSON object per reply (prompt_ids, ids, text, stop_reason) instead of streaming");

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
  b->add_flag("--4bit", bench.nf4, "QLoRA: the projections in NF4 (bitsandbytes layout, double quantization)");
  b->add_flag("--fp8", bench.fp8, "The projections in FP8 (E4M3, per-tensor scales), their GEMMs on FP8 tensor cores (model.fp8_base)");
  b->add_option("--repeat-batches", bench.repeat_batches, "Timed steps cycle over this many fixed batches, so the loss falls (0: fresh random batches); RESULT lists every step's loss")->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  b->add_option("--lr", bench.lr, "AdamW learning rate")->check(CLI::PositiveNumber);
  b->add_flag("--offload", bench.offload,
              "Checkpointing with the saved layer inputs in pinned host memory (implies --checkpointing)");
  b->add_flag("--profile", bench.profile, "Also time one step op by op (GEMMs, attention, elementwise, loss, optimizer)");
  b->add_option("--dtype", bench.dtype, "auto, bfloat16, float16 or float32");
  b->add_option("--device", bench.device, "auto, cpu or cuda");
  b->add_option("--peak-tflops", bench.peak_tflops, "Dense bf16 TFLOP/s of the device, for MFU")->check(CLI::PositiveNumber);

  MergeArgs merge;
  auto* mg = app.add_subcommand("merge", "Fold a LoRA adapter into the base weights: an HF model folder");
  mg->add_option("--model", merge.model, "Base HF model folder")->required();
  mg->add_option("--adapter", merge.adapter, "PEFT adapter folder")->required();
  mg->add_option("--out", merge.out, "Output folder (must be empty or absent)")->required();
  mg->add_option("--dtype", merge.dtype, "bf16, fp16 or fp32 (default: the base model's torch_dtype)");
  mg->add_option("--max-shard-size", merge.max_shard_size, "Largest weight file, e.g. 5GB (default), 500MB");
  mg->add_flag("--overwrite", merge.overwrite, "Replace a non-empty --out folder");

  ExportArgs exp;
  auto* ex = app.add_subcommand("export", "Write a model (+ adapter, merged) as one GGUF file for llama.cpp");
  ex->add_option("--model", exp.model, "Base HF model folder")->required();
  ex->add_option("--adapter", exp.adapter, "PEFT adapter folder, merged on the fly");
  ex->add_option("--out", exp.out, "Output FILE.gguf")->required();
  ex->add_option("--format", exp.format, "gguf");
  ex->add_option("--type", exp.type, "f16 (default), bf16, q8_0 or q4_k_m");
  ex->add_flag("--overwrite", exp.overwrite, "Replace an existing --out file");

  PlanArgs plan;
  std::vector<std::string> plan_pos;
  auto* pl = app.add_subcommand("plan", "Memory per part and the fastest configuration that fits (micro-batch, accumulation, checkpointing, 4-bit, GPUs)");
  pl->add_option("config", plan_pos, "CONFIG.yaml (or --preset)");
  pl->add_option("--preset", plan.preset, "llama-3.2-1b, llama-3.2-3b, llama-3-8b, mistral-7b, qwen2.5-7b");
  pl->add_option("--gpus", plan.gpus, "GPUs: N, all, or ids 0,2,3 (default 1)");
  pl->add_option("--gpu-memory-gib", plan.gpu_memory_gib, "Plan for GPUs of this many GiB (no GPU needed)");
  pl->add_option("--seq", plan.seq, "Tokens per row (default: data.max_seq_length; preset: 2048)");
  pl->add_option("--batch", plan.batch, "Micro-batch (rows per GPU per step); default: searched");
  pl->add_option("--lora-r", plan.lora_r, "Preset: LoRA rank (all seven projections)")->check(CLI::Range(int64_t{1}, int64_t{4096}));
  pl->add_option("--checkpointing", plan.checkpointing, "auto, on, off or offload (on, with the saved layer inputs in pinned host memory)");
  pl->add_option("--4bit", plan.load_in_4bit, "NF4 base weights: auto, on or off");
  pl->add_flag("--fp8", plan.fp8, "FP8 base weights (model.fp8_base): memory at 1 byte per projection weight; tokens/s stay the bf16 prediction");
  pl->add_option("--shard-base", plan.shard_base,
                 "base layers sharded over the GPUs (distributed.shard_base): auto, on or off");
  pl->add_option("--device", plan.device, "auto/cuda (GPUs) or cpu (the CPU backend, physical memory)");
  pl->add_flag("--json", plan.json, "Machine-readable output");

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
    if (*g) {
      if (g_prompt->count() > 0) gen.prompt = gen_prompt;
      return cmd_generate(gen);
    }
    if (*b) return cmd_bench(bench);
    if (*mg) return cmd_merge(merge);
    if (*ex) return cmd_export(exp);

    if (*pl) {
      if (plan_pos.size() > 1) fail("plan: more than one config file given");
      if (!plan_pos.empty()) plan.config = plan_pos[0];
      return cmd_plan(plan);
    }
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
