// `ftune train [CONFIG.yaml] [key=value ...] [--nproc N | --gpus N|all|ids]`: validate the
// config, prepare the data (errors before any training), build the model and adapter, train,
// and save the PEFT adapter. Three roles, one pipeline:
//  - one process (the default, or N = 1): trains alone;
//  - launcher (--nproc N / --gpus with more than one device, --nnodes): prepares what must be
//    done once (output folder, built-in model, token cache), then starts and supervises one
//    worker per device (src/dist/launcher.h);
//  - worker (started by ftune's launcher, torchrun, srun or mpirun: src/dist/rendezvous.h):
//    joins the rendezvous, checks every rank runs the same job, trains its shard.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <new>
#include <optional>
#include <span>
#include <unistd.h>
#include <filesystem>
#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/embedded_assets.h"
#include "cli/generation_setup.h"
#include "cli/job_setup.h"
#include "cli/memory_check.h"
#include "cli/output_dir.h"
#include "cli/train_job.h"
#include "train/checkpoint.h"
#include "core/error.h"
#include "data/packing.h"
#include "dist/communicator.h"
#include "dist/base_gather.h"
#include "dist/consistency.h"
#include "dist/gradient_sync.h"
#include "dist/kv_store.h"
#include "dist/launcher.h"
#include "dist/rendezvous.h"
#include "dist/worker_threads.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "backend/cuda_ops.h"
#include "backend/gpu.h"
#include "data/token_cache.h"
#include "model/generator.h"
#include "model/unused_tensors.h"
#include "train/signals.h"

namespace ftune {

namespace fs = std::filesystem;

namespace {

TrainConfig load_job_config(const TrainArgs& args) {
  std::vector<std::string> overrides = args.overrides;
  std::string gpus = args.gpus;
  if (gpus.empty())
    if (const char* env = std::getenv("FTUNE_GPUS"); env && *env) gpus = env;
  if (!gpus.empty()) overrides.push_back("distributed.gpus=" + gpus);
  if (args.nproc > 0) overrides.push_back(fmt::format("distributed.nproc={}", args.nproc));
  if (args.nnodes > 0) overrides.push_back(fmt::format("distributed.nnodes={}", args.nnodes));
  if (args.node_rank >= 0) overrides.push_back(fmt::format("distributed.node_rank={}", args.node_rank));
  if (!args.master_addr.empty()) overrides.push_back("distributed.master_addr=" + args.master_addr);
  if (args.master_port >= 0) overrides.push_back(fmt::format("distributed.master_port={}", args.master_port));
  if (!args.config.empty()) return load_config(args.config, overrides);
  return load_config_text(std::string(embedded_asset("default_job_yaml")), "<default job>",
                          overrides);
}

void print_data_summary(const PreparedData& d, const DataOptions& o, const std::string& label) {
  const DataStats& s = d.train_stats;
  std::fprintf(stderr,
               "%s: %lld examples (%lld records; dropped %lld too long, %lld with nothing to "
               "train; %lld truncated to %lld tokens), %lld tokens, %lld trained%s\n",
               label.c_str(), static_cast<long long>(s.examples), static_cast<long long>(s.records),
               static_cast<long long>(s.dropped_too_long), static_cast<long long>(s.dropped_untrained),
               static_cast<long long>(s.truncated), static_cast<long long>(o.max_seq_length),
               static_cast<long long>(s.tokens), static_cast<long long>(s.trained_tokens),
               d.train_from_cache ? " (token cache)" : "");
  if (!d.validation.empty())
    std::fprintf(stderr, "validation: %lld examples, %lld tokens\n",
                 static_cast<long long>(d.validation_stats.examples),
                 static_cast<long long>(d.validation_stats.tokens));
}

// What the one-process run, the launcher and every worker prepare alike.
struct JobInputs {
  std::string model_dir;
  std::string tok_dir;
  DataOptions dopts;
  PreparedData data;
};

// `host_activations`: the micro-batches are computed in host memory (CPU backend), so a
// micro-batch that cannot fit in this machine's memory is refused here (cli/memory_check.h).
JobInputs prepare_inputs(const TrainConfig& cfg, bool print_summary, bool host_activations) {
  JobInputs in;
  // Everything that can be wrong with the inputs is checked before any training starts.
  in.model_dir = resolve_model_dir(cfg);
  // The model folder is checked (config.json, weights present) before the data is prepared.
  const ModelSpec spec = model_spec_from_hf(load_hf_config(in.model_dir + "/config.json"),
                                            in.model_dir + "/config.json");
  check_unused_tensors(spec, CheckpointReader::open_folder(in.model_dir),
                       in.model_dir + "/config.json");
  // model.tokenizer is resolved to model.path when unset; the built-in model carries its own.
  in.tok_dir = cfg.model.path.empty() ? in.model_dir : cfg.model.tokenizer;
  FTUNE_CHECK(fs::exists(in.tok_dir + "/tokenizer.json"), "{}: no tokenizer.json (set model.tokenizer)",
              in.tok_dir);
  const Tokenizer tok = Tokenizer::from_file(in.tok_dir + "/tokenizer.json");
  FTUNE_CHECK(tok.vocab_size() <= spec.vocab_size,
              "{}/tokenizer.json has token ids up to {}, outside the model's vocabulary "
              "(vocab_size {} in {}/config.json)",
              in.tok_dir, tok.vocab_size() - 1, spec.vocab_size, in.model_dir);
  in.dopts = data_options_from_config(cfg, in.tok_dir);
  in.data = prepare_data(in.dopts, tok);
  if (host_activations)
    check_micro_batch_fits(spec, cfg.train.micro_batch_size, longest_example(in.data.train),
                           "train.micro_batch_size (or data.max_seq_length)");
  if (print_summary)
    print_data_summary(in.data, in.dopts,
                       cfg.data.train.empty() ? "data (built-in debug set)" : "data " + cfg.data.train);
  return in;
}

uint64_t examples_hash(const std::vector<TokenizedExample>& ex) {
  Fnv1a64 h;
  for (const auto& e : ex) {
    h.field(std::string_view(reinterpret_cast<const char*>(e.ids.data()), e.ids.size() * 4));
    h.field(std::string_view(reinterpret_cast<const char*>(e.labels.data()), e.labels.size() * 4));
  }
  return h.value();
}

// train.sample_prompts: greedy completions by the model being trained (model/generator.h), each
// prompt a user turn of the data's chat template when the data has one, else raw text.
std::function<std::vector<std::pair<std::string, std::string>>()> make_sample_hook(
    const TrainConfig& cfg, const JobInputs& in, LlamaModel& model,
    const std::string& chat_template) {
  auto tok = std::make_shared<Tokenizer>(Tokenizer::from_file(in.tok_dir + "/tokenizer.json"));
  std::optional<ChatTemplate> tmpl;
  if (!chat_template.empty()) tmpl = generation_chat_template(chat_template, in.tok_dir, *tok);
  GenerationOptions opts;
  opts.max_new_tokens = cfg.train.sample_max_new_tokens;
  opts.stop_ids = stop_token_ids(in.model_dir, in.tok_dir, model.spec(), *tok, tmpl ? &*tmpl : nullptr);
  std::vector<std::pair<std::string, std::vector<int32_t>>> prompts;
  for (const std::string& p : cfg.train.sample_prompts)
    prompts.emplace_back(p, tmpl ? chat_prompt_ids(*tok, *tmpl, {{"user", p}}) : raw_prompt_ids(*tok, p));
  return [&model, tok, opts, prompts] {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& [text, ids] : prompts) {
      Generator gen(model, static_cast<int64_t>(ids.size()) + opts.max_new_tokens);  // fresh: the adapter changed
      GenerationResult r = gen.generate(ids, opts);
      if (r.stop_reason == "stop") r.ids.pop_back();
      out.emplace_back(text, tok->decode(r.ids, /*skip_special_tokens=*/true));
    }
    return out;
  };
}

// Builds the model, trains, saves. make_sync (distributed runs) gets the model once built and
// returns the GradientSync to train with (owned by the caller); null for one process.
// before_writing (may be empty) runs once the model is loaded, before training writes anything
// (the one-process run starts its output_dir transaction there: cli/output_dir.h). SIGINT and
// SIGTERM during training stop it at a step boundary (summary.interrupted; train/signals.h).
TrainSummary train_model(const TrainConfig& cfg, const JobInputs& in, Ops& ops, bool resume,
                         bool main, int world,
                         const std::function<GradientSync*(LlamaModel&)>& make_sync,
                         const std::function<void(int64_t)>& on_progress,
                         const std::function<void()>& before_writing = nullptr,
                         ShardGatherer* shard_base = nullptr) {
  ModelOptions mopts;
  mopts.gradient_checkpointing = checkpointing_on(cfg);
  mopts.offload_checkpoints = checkpointing_offload(cfg);
  mopts.dtype = compute_dtype(cfg.model.dtype, ops);
  mopts.load_in_4bit = cfg.model.load_in_4bit;
  mopts.double_quant = cfg.model.bnb_4bit_use_double_quant;
  mopts.fp8_base = cfg.model.fp8_base;
  LlamaModel model = LlamaModel::from_hf_folder(in.model_dir, ops, mopts, shard_base);
  model.attach_lora(LoraWeights::init(model.spec(), lora_spec_from_config(cfg), ops.device()));
  if (main)
    std::fprintf(stderr, "model: %s (%s, %lld layers, hidden %lld) on %s in %s; LoRA r=%lld alpha=%g on %s: %lld trainable parameters\n",
                 in.model_dir.c_str(), model.spec().arch.c_str(),
                 static_cast<long long>(model.spec().num_layers),
                 static_cast<long long>(model.spec().hidden_size), ops.device().str().c_str(),
                 dtype_name(mopts.dtype).data(), static_cast<long long>(cfg.lora.r), cfg.lora.alpha,
                 fmt::format("{}", fmt::join(cfg.lora.target_modules, ",")).c_str(),
                 static_cast<long long>(model.lora().num_params()));
  if (main) {
    const bool nf4 = model.base_is_nf4();
    std::string sharded;
    if (const ShardedLayers* sh = model.sharded_layers())
      sharded = fmt::format(" (layers sharded over {} ranks: {:.1f} MiB of shards + {:.1f} MiB of "
                            "gather buffers per rank)", world,
                            static_cast<double>(sh->shard_bytes()) / (1024.0 * 1024.0),
                            static_cast<double>(sh->buffer_bytes()) / (1024.0 * 1024.0));
    std::fprintf(stderr, "base weights: %.1f MiB on %s%s%s\n",
                 static_cast<double>(base_weight_bytes(model.base()) +
                                     (model.sharded() ? model.sharded_layers()->shard_bytes() : 0)) /
                     (1024.0 * 1024.0),
                 ops.device().str().c_str(),
                 nf4                       ? " (projections in NF4, dequantized one matrix at a time)"
                 : cfg.model.fp8_base ? " (projections in FP8 E4M3, per-tensor scales)"
                                      : "",
                 sharded.c_str());
  }
  GradientSync* sync = make_sync ? make_sync(model) : nullptr;
  if (before_writing) before_writing();

  TrainData td;
  const PreparedData& data = in.data;
  const DataOptions& dopts = in.dopts;
  // The epoch's GLOBAL micro-batch list (rank 0 of 1); each rank trains its share of every
  // window (data/shard.h), so the list is the same for any number of processes.
  td.epoch = [&](int64_t epoch) {
    auto plan = std::make_shared<BatchPlan>(plan_batches(data.train, batch_options(dopts, data, epoch, 0, 1)));
    return EpochBatches{plan->size(), [plan, &data](int64_t i) { return build_batch(data.train, *plan, i); }};
  };
  if (!data.validation.empty()) {
    BatchOptions vb = batch_options(dopts, data, 0, 0, 1);
    vb.shuffle = false;
    td.validation = make_batches(data.validation, vb);
  }
  TrainLoopOptions lopts = loop_options_from_config(cfg);
  lopts.trainer.loss_scaling.enabled = mopts.dtype == DType::F16;  // float16: dynamic loss scale
  lopts.config_fingerprint = config_fingerprint(cfg, world);
  lopts.resume = resume;
  lopts.is_main_process = main;
  lopts.shard_weights = cfg.distributed.shard_weights;
  lopts.auto_shard_steps = cfg.distributed.auto_shard_steps;
  lopts.on_progress = on_progress;
  lopts.adapter_meta.base_model_name_or_path = fs::absolute(in.model_dir).string();
  if (main && !cfg.train.sample_prompts.empty())
    lopts.samples = make_sample_hook(cfg, in, model, data.chat_template);
  InterruptScope signals;
  return run_training(model, lopts, td, sync);
}

// A run stopped by SIGINT/SIGTERM at a step boundary: what was saved, and the exit code.
int report_interrupted(const TrainSummary& s) {
  if (s.checkpoint_dir.empty())
    std::fprintf(stderr, "interrupted after %lld steps: no checkpoint written\n",
                 static_cast<long long>(s.steps));
  else
    std::fprintf(stderr, "interrupted after %lld steps: checkpoint %s; continue with --resume\n",
                 static_cast<long long>(s.steps), s.checkpoint_dir.c_str());
  return interrupt_exit_code(s.interrupted);
}

void print_done(const TrainSummary& s) {
  std::fprintf(stderr, "done: %lld steps in %.1f s, loss %.4f -> %.4f", static_cast<long long>(s.steps),
               s.seconds, s.first_loss, s.final_loss);
  if (s.eval_loss >= 0)
    std::fprintf(stderr, ", validation loss %.4f (perplexity %.3f)", s.eval_loss, std::exp(s.eval_loss));
  if (s.peak_memory_mib >= 0)
    std::fprintf(stderr, ", peak %s memory %.2f GiB", s.memory_device.c_str(),
                 s.peak_memory_mib / 1024.0);
  std::fprintf(stderr, "\nadapter: %s\n", s.adapter_dir.c_str());
  if (!s.merged_dir.empty()) std::fprintf(stderr, "merged model: %s\n", s.merged_dir.c_str());
}

// ---- worker --------------------------------------------------------------------------------

// Memory in use on a rank's device, for out-of-memory messages.
struct MemoryNote {
  std::string text;
};
MemoryNote memory_note(const RankInfo& ri) {
  if (ri.cuda_device >= 0) {
    const GpuRuntimeInfo g = query_gpus();
    for (const auto& d : g.devices)
      if (d.index == ri.cuda_device)
        return {fmt::format("{:.0f} of {:.0f} MiB in use on the GPU",
                            static_cast<double>(d.total_bytes - d.free_bytes) / 1048576.0,
                            static_cast<double>(d.total_bytes) / 1048576.0)};
  }
  const auto [mem, peak] = host_memory_mib();
  return {fmt::format("host memory in use {:.0f} MiB, peak {:.0f} MiB", mem, peak)};
}

int run_worker(const TrainConfig& cfg, const TrainArgs& args, const RankInfo& ri,
               TrainSummary* summary) {
  size_worker_threads(ri.local_world_size);
  send_heartbeat(ri.heartbeat_fd);
  const bool main = ri.rank == 0;
  int64_t step = 0;
  try {
    KeyValueStore store(ri.master_addr, ri.master_port, ri.rank, ri.world_size,
                        static_cast<int>(cfg.distributed.timeout_s), ri.store_fd);
    const bool gpu = ri.cuda_device >= 0;
    // Rank 0 first (output folder, built-in model, token cache), then the others reuse them.
    // Under another launcher (torchrun, srun, mpirun) rank 0 owns the output_dir transaction
    // (cli/output_dir.h); under ftune's the launcher did it.
    const bool owns_output = main && ri.launcher != "ftune";
    std::optional<OutputDirTransaction> out_dir;
    JobInputs in;
    if (main) {
      if (owns_output) {
        check_output_dir(cfg, args.resume);
        if (args.resume)
          check_resume_possible(cfg, config_fingerprint(cfg, ri.world_size), ri.world_size);
        out_dir.emplace(cfg, args.resume);
      }
      in = prepare_inputs(cfg, owns_output, !gpu);
      if (owns_output) {
        out_dir->start_writing();
        write_resolved_config(cfg, cfg.train.output_dir + "/config.resolved.yaml");
      }
      store.set("ftune/rank0_prepared", {'1'});
    } else {
      send_heartbeat(ri.heartbeat_fd, true);  // waiting for rank 0 is not a hang
      (void)store.get("ftune/rank0_prepared");
      send_heartbeat(ri.heartbeat_fd);
      in = prepare_inputs(cfg, false, !gpu);
    }
    send_heartbeat(ri.heartbeat_fd);

    std::string backend = cfg.distributed.backend;
    if (backend == "auto") backend = gpu ? "nccl" : "gloo";
    FTUNE_CHECK(!(backend == "nccl" && !gpu), "distributed.backend=nccl needs GPU workers (--gpus)");
    auto ops = gpu ? make_cuda_ops(ri.cuda_device) : make_cpu_ops();
    CommOptions co;
    co.rank = ri.rank;
    co.world_size = ri.world_size;
    // Under ftune's launcher, which stops a rank quiet for timeout_s, collectives wait a little
    // longer, so the report names the quiet rank rather than those waiting for it.
    co.timeout_s = static_cast<int>(cfg.distributed.timeout_s) + (ri.launcher == "ftune" ? 10 : 0);
    co.local_addr = ri.master_addr == "127.0.0.1" || ri.master_addr == "localhost" ? "127.0.0.1" : "";
    if (co.local_addr.empty()) {
      char host[256] = {0};
      gethostname(host, sizeof host - 1);
      co.local_addr = host;
    }
    co.cuda_device = ri.cuda_device;
    co.on_wait = [fd = ri.heartbeat_fd](bool waiting) { send_heartbeat(fd, waiting); };
    std::unique_ptr<Communicator> comm =
        backend == "nccl" ? make_nccl_communicator(store, co) : make_gloo_communicator(store, co);
    if (main)
      std::fprintf(stderr, "distributed: %d ranks (%s, launched by %s), aggregation %s\n",
                   ri.world_size, comm->backend().c_str(), ri.launcher.c_str(),
                   cfg.distributed.aggregation.c_str());

    int64_t device_memory = 0;
    if (gpu)
      for (const auto& d : query_gpus().devices)
        if (d.index == ri.cuda_device) device_memory = d.total_bytes;
    ShardDecision shard = decide_shard_base(cfg, ri.world_size, ri.rank, gpu, device_memory);
    if (cfg.distributed.shard_base == "auto" && ri.world_size > 1) {
      // Every rank must shard alike: one rank whose device is too small decides for all.
      double votes = shard.shard ? 1.0 : 0.0;
      comm->all_reduce_sum(std::span<double>(&votes, 1));
      if (votes > 0 && !shard.shard) {
        check_sharded_base_config(cfg);
        shard.shard = true;
        shard.note = fmt::format("distributed.shard_base: auto -> true ({:.0f} of {} ranks would "
                                 "not fit the whole model)", votes, ri.world_size);
      }
    }
    if (main && !shard.note.empty()) std::fprintf(stderr, "%s\n", shard.note.c_str());
    std::optional<CommShardGatherer> gatherer;
    if (shard.shard) gatherer.emplace(*comm);

    std::unique_ptr<DataParallelSync> sync;
    auto make_sync = [&](LlamaModel& model) -> GradientSync* {
      if (cfg.distributed.check_consistency) {
        // Keys that name this machine's place may differ between nodes; the rest may not.
        TrainConfig same = cfg;
        same.distributed.node_rank = 0;
        same.distributed.gpus = "";
        same.distributed.master_addr = "";
        same.distributed.master_port = 0;
        Fnv1a64 ch;
        ch.field(to_resolved_yaml(same));
        check_same_job(*comm, {{"config", ch.value()},
                               {"model", model_folder_hash(in.model_dir)},
                               {"data", examples_hash(in.data.train) ^ (examples_hash(in.data.validation) * 31)}});
      }
      SyncOptions so;
      so.aggregation = parse_aggregation(cfg.distributed.aggregation);
      so.rank_weights = cfg.distributed.rank_weights;
      so.verify_every = cfg.distributed.verify_every;
      // FTUNE_COMM_TRACE=PREFIX: each rank appends its steps' communication timeline to
      // PREFIX.rank<r>.jsonl (dist/gradient_sync.h: what overlaps backward).
      if (const char* t = std::getenv("FTUNE_COMM_TRACE"); t != nullptr && *t != '\0')
        so.trace_path = fmt::format("{}.rank{}.jsonl", t, ri.rank);
      MemoryProbe probe = host_memory_mib;
      if (gpu) {  // tensor memory on this rank's GPU (the device allocator's live bytes and peak)
        probe = []() -> std::pair<double, double> {
          const MemoryStats m = memory_stats(DeviceType::CUDA);
          return {static_cast<double>(m.live_bytes) / 1048576.0,
                  static_cast<double>(m.peak_bytes) / 1048576.0};
        };
      }
      sync = std::make_unique<DataParallelSync>(*comm, model.ops(), model.lora(), so, probe);
      return sync.get();
    };
    const TrainSummary s = train_model(cfg, in, *ops, args.resume, main, ri.world_size, make_sync,
                                       [&](int64_t st) {
                                         step = st;
                                         send_heartbeat(ri.heartbeat_fd);
                                       },
                                       nullptr, gatherer ? &*gatherer : nullptr);
    *summary = s;
    if (s.interrupted != 0) {
      if (main) return report_interrupted(s);
      return interrupt_exit_code(s.interrupted);
    }
    if (out_dir) out_dir->commit();
    if (main) {
      if (s.steps == 0)
        std::fprintf(stderr, "nothing to do: the newest checkpoint is already at train.max_steps\n");
      else
        print_done(s);
    }
    return 0;
  } catch (const CommError& e) {
    std::fprintf(stderr, "error: rank %d (%s): %s\n", ri.rank, ri.device.c_str(), e.what());
    return kExitPeerLost;
  } catch (const Error& e) {
    // A device allocation failure (the CUDA allocator's error) gets the same rank, step and
    // advice as a host one; other errors pass through as they are.
    const std::string what = e.what();
    if (what.find("out of memory") == std::string::npos &&
        what.find("out of host memory") == std::string::npos)
      throw;
    const MemoryNote note = memory_note(ri);
    throw Error(fmt::format("rank {} ({}): out of memory at step {} ({}); lower "
                            "train.micro_batch_size or data.max_seq_length, turn on "
                            "train.gradient_checkpointing, or use fewer processes per device: {}",
                            ri.rank, ri.device, step + 1, note.text, what));
  } catch (const std::bad_alloc&) {
    const auto [mem, peak] = host_memory_mib();
    std::fprintf(stderr,
                 "error: rank %d (%s): out of memory at step %lld (host memory in use %.0f MiB, "
                 "peak %.0f MiB); lower train.micro_batch_size or data.max_seq_length, or run "
                 "fewer processes per machine\n",
                 ri.rank, ri.device.c_str(), static_cast<long long>(step + 1), mem, peak);
    return 1;
  }
}

}  // namespace

int cmd_train(const TrainArgs& args) {
  return run_train_job(load_job_config(args), args).exit_code;
}

namespace {

// Total memory of CUDA device `index` (0 when unknown).
int64_t gpu_memory(int index) {
  const GpuRuntimeInfo g = query_gpus();
  for (const auto& d : g.devices)
    if (d.index == index) return d.total_bytes;
  return 0;
}

}  // namespace

TrainOutcome run_train_job(const TrainConfig& job, const TrainArgs& args) {
  TrainOutcome outcome;
  // train.micro_batch_size: auto and train.effective_batch_size are resolved below, once the
  // processes and devices are known; `cfg` holds the resolved values from there on.
  TrainConfig cfg = job;
  const DistributedConfig& dc = cfg.distributed;
  FTUNE_CHECK(dc.auto_shard_steps == 0 || dc.aggregation == "token_mean",
              "distributed.auto_shard_steps needs aggregation token_mean (with {} the shares "
              "change the result)", dc.aggregation);
  const bool want_gpus = dc.gpus != "1";
  FTUNE_CHECK(!(dc.nproc > 1 && want_gpus),
              "--nproc {} (CPU workers) and --gpus {} both given; choose one", dc.nproc, dc.gpus);
  const bool cpu_workers = dc.nproc > 1 || (dc.nnodes > 1 && !want_gpus);
  bool gpu = !cpu_workers && want_gpus;
  if (!cpu_workers && !want_gpus && cfg.train.device != "cpu") {
    // One device per rank under an external launcher follows train.device.
    const GpuRuntimeInfo g = query_gpus();
    gpu = cfg.train.device == "cuda" || (g.built_with_cuda && !g.devices.empty());
  }

  if (auto ri = rank_info_from_env(process_env(), dc, gpu)) {
    // Under ftune's launcher the batch plan arrives resolved on the command line.
    cfg = resolve_batch_plan(cfg, ri->world_size, ri->cuda_device >= 0,
                             ri->cuda_device >= 0 ? gpu_memory(ri->cuda_device)
                                                  : static_cast<int64_t>(physical_memory_bytes()) /
                                                        std::max(ri->local_world_size, 1),
                             ri->rank == 0 && ri->launcher != "ftune");
    outcome.role = "worker";
    outcome.rank = ri->rank;
    outcome.world_size = ri->world_size;
    outcome.exit_code = run_worker(cfg, args, *ri, &outcome.summary);
    return outcome;
  }

  // Not started by a launcher: this process trains alone or becomes the launcher.
  std::vector<WorkerSpec> workers;
  std::vector<std::string> args_with_plan;  // the workers' command line, when the plan changed it
  if (cpu_workers) {
    FTUNE_CHECK(cfg.train.device != "cuda", "--nproc runs CPU workers; train.device=cuda "
                "contradicts it (use --gpus for GPU workers)");
    for (int i = 0; i < dc.nproc; ++i) workers.push_back({i, i, "cpu", ""});
  } else if (want_gpus) {
    const GpuRuntimeInfo g = query_gpus();
    const int visible = g.built_with_cuda ? count_visible_gpus(process_env()) : -1;
    const std::vector<int> ids = parse_gpu_selection(dc.gpus, visible);  // syntax first
    FTUNE_CHECK(g.built_with_cuda, "--gpus {}: this ftune was built without CUDA; use --nproc N "
                "for CPU worker processes", dc.gpus);
    for (size_t i = 0; i < ids.size(); ++i)
      workers.push_back({static_cast<int>(i), static_cast<int>(i), fmt::format("cuda:{}", ids[i]),
                         std::to_string(ids[i])});
  }
  if (workers.size() <= 1 && dc.nnodes <= 1) {
    // One process: N equal to one.
    FTUNE_CHECK(cfg.distributed.shard_weights.size() <= 1, "distributed.shard_weights has {} "
                "entries for 1 process", cfg.distributed.shard_weights.size());
    cfg = resolve_batch_plan(cfg, 1, gpu, gpu ? gpu_memory(0) : static_cast<int64_t>(physical_memory_bytes()),
                             true);
    // Nothing is written before every input is checked; a refused run leaves output_dir as it
    // was (cli/output_dir.h).
    const ShardDecision shard = decide_shard_base(cfg, 1, 0, gpu, gpu ? gpu_memory(0) : 0);
    if (!shard.note.empty()) std::fprintf(stderr, "%s\n", shard.note.c_str());
    check_output_dir(cfg, args.resume);
    if (args.resume) check_resume_possible(cfg, config_fingerprint(cfg, 1), 1);
    OutputDirTransaction out_dir(cfg, args.resume);
    auto ops = make_ops(cfg.train.device);
    const JobInputs in = prepare_inputs(cfg, true, ops->device().is_cpu());
    const TrainSummary s = train_model(cfg, in, *ops, args.resume, true, 1, nullptr, nullptr, [&] {
      out_dir.start_writing();
      write_resolved_config(cfg, cfg.train.output_dir + "/config.resolved.yaml");
    });
    outcome.role = "single";
    outcome.summary = s;
    if (s.interrupted != 0) {
      outcome.exit_code = report_interrupted(s);
      return outcome;
    }
    out_dir.commit();
    if (s.steps == 0) {
      std::fprintf(stderr, "nothing to do: the newest checkpoint is already at train.max_steps\n");
      return outcome;
    }
    print_done(s);
    return outcome;
  }

  // Launcher: what must happen once, then the workers.
  LaunchPlan plan;
  const int local = static_cast<int>(std::max<size_t>(workers.size(), 1));
  plan.world_size = local * static_cast<int>(dc.nnodes);
  {
    // The smallest device decides the batch plan; the workers get it on their command line, so
    // every rank trains the same micro-batch.
    int64_t mem = static_cast<int64_t>(physical_memory_bytes()) / local;
    if (!cpu_workers) {
      mem = 0;
      for (const auto& w : workers) {
        const int64_t m = gpu_memory(std::stoi(w.cuda_visible));
        mem = mem == 0 ? m : std::min(mem, m);
      }
    }
    const TrainConfig before = cfg;
    cfg = resolve_batch_plan(cfg, plan.world_size, !cpu_workers, mem, dc.node_rank == 0);
    if (cfg.train.micro_batch_size != before.train.micro_batch_size ||
        cfg.train.gradient_accumulation_steps != before.train.gradient_accumulation_steps) {
      args_with_plan = args.argv;
      args_with_plan.push_back(fmt::format("train.micro_batch_size={}", cfg.train.micro_batch_size));
      args_with_plan.push_back(
          fmt::format("train.gradient_accumulation_steps={}", cfg.train.gradient_accumulation_steps));
    }
  }
  for (auto& w : workers) {
    w.rank += static_cast<int>(dc.node_rank) * local;
    plan.workers.push_back(w);
  }
  FTUNE_CHECK(dc.shard_weights.empty() || static_cast<int>(dc.shard_weights.size()) == plan.world_size,
              "distributed.shard_weights has {} entries for {} ranks", dc.shard_weights.size(),
              plan.world_size);
  FTUNE_CHECK(dc.aggregation != "weighted" || static_cast<int>(dc.rank_weights.size()) == plan.world_size,
              "distributed.aggregation=weighted needs distributed.rank_weights with one weight per "
              "rank ({} ranks, {} weights)", plan.world_size, dc.rank_weights.size());
  // Memory caps and the sharded base, for every rank of this machine, before anything starts
  // (each worker decides again, with the same result, and says why).
  for (const auto& w : plan.workers)
    (void)decide_shard_base(cfg, plan.world_size, w.rank, !cpu_workers,
                            cpu_workers ? 0 : gpu_memory(std::stoi(w.cuda_visible)));
  plan.master_addr = dc.master_addr.empty() ? "127.0.0.1" : dc.master_addr;
  plan.master_port = static_cast<int>(dc.master_port);
  FTUNE_CHECK(dc.nnodes == 1 || (dc.master_port > 0 && !dc.master_addr.empty()),
              "--nnodes {}: set --master-addr (node 0's host) and --master-port", dc.nnodes);
  FTUNE_CHECK(dc.node_rank < dc.nnodes, "--node-rank {} with --nnodes {}", dc.node_rank, dc.nnodes);
  plan.hosts_store = dc.node_rank == 0;
  // The rendezvous admits only workers that present this job's token: a fresh random one on one
  // machine; across machines every launcher must hold the same, so it comes from the
  // environment (FTUNE_JOB_TOKEN, or torchrun's/SLURM's job id) there.
  plan.job_token = rendezvous_job_token();
  if (plan.job_token.empty() && dc.nnodes == 1) plan.job_token = new_job_token();
  plan.timeout_s = static_cast<int>(dc.timeout_s);
  plan.threads_per_worker = threads_per_worker(local);
  plan.argv = args_with_plan.empty() ? args.argv : args_with_plan;
  plan.exe = args.worker_exe;
  std::optional<OutputDirTransaction> out_dir;
  if (dc.node_rank == 0) {
    // Refused here, before any worker starts and before anything is written.
    check_output_dir(cfg, args.resume);
    if (args.resume)
      check_resume_possible(cfg, config_fingerprint(cfg, plan.world_size), plan.world_size);
    out_dir.emplace(cfg, args.resume);
    (void)prepare_inputs(cfg, true, cpu_workers);  // fills the token cache
    out_dir->start_writing();
    write_resolved_config(cfg, cfg.train.output_dir + "/config.resolved.yaml");
  }
  std::fprintf(stderr, "launcher: %zu worker(s) on this machine (%s), %d threads each, world size %d\n",
               plan.workers.size(), plan.workers.front().device == "cpu" ? "cpu" : "gpus",
               plan.threads_per_worker, plan.world_size);
  const int sig = run_launcher(plan);
  outcome.role = "launcher";
  if (sig != 0) {
    // The workers stopped at a step boundary; rank 0 said what it saved.
    outcome.exit_code = interrupt_exit_code(sig);
    outcome.world_size = plan.world_size;
    return outcome;
  }
  if (out_dir) out_dir->commit();
  outcome.world_size = plan.world_size;
  outcome.summary.adapter_dir = cfg.train.output_dir + "/adapter";
  return outcome;
}

}  // namespace ftune
