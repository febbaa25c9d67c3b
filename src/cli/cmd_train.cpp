// `ftune train [CONFIG.yaml] [key=value ...]`: validate the config, prepare the data (errors
// before any training), build the model and adapter, train, and save the PEFT adapter.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/embedded_assets.h"
#include "cli/job_setup.h"
#include "cli/memory_check.h"
#include "cli/output_dir.h"
#include "core/error.h"
#include "data/packing.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/unused_tensors.h"
#include "train/signals.h"

namespace ftune {

namespace fs = std::filesystem;

namespace {

TrainConfig load_job_config(const TrainArgs& args) {
  std::vector<std::string> overrides = args.overrides;
  if (args.gpus > 0) overrides.push_back(fmt::format("distributed.gpus={}", args.gpus));
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

}  // namespace

int cmd_train(const TrainArgs& args) {
  const TrainConfig cfg = load_job_config(args);
  FTUNE_CHECK(cfg.distributed.gpus <= 1,
              "distributed.gpus={}: multi-GPU training is not available in this version of ftune "
              "(single device only)",
              cfg.distributed.gpus);
  FTUNE_CHECK(cfg.model.dtype == "auto" || cfg.model.dtype == "float32",
              "model.dtype={}: this version computes in float32 only (use auto or float32)",
              cfg.model.dtype);
  FTUNE_CHECK(!cfg.model.load_in_4bit,
              "model.load_in_4bit: QLoRA (NF4 base weights) is not available in this version");
  // Nothing is written before every input is checked; a refused run leaves output_dir as it was.
  check_output_dir(cfg, args.resume);
  if (args.resume) check_resume_possible(cfg, config_fingerprint(cfg));
  OutputDirTransaction out_dir(cfg, args.resume);

  // Everything that can be wrong with the inputs is checked before any training starts.
  const std::string model_dir = resolve_model_dir(cfg);
  // The model folder is checked (config.json, weights present) before the data is prepared.
  const ModelSpec spec = model_spec_from_hf(load_hf_config(model_dir + "/config.json"),
                                            model_dir + "/config.json");
  check_unused_tensors(spec, CheckpointReader::open_folder(model_dir), model_dir + "/config.json");
  // model.tokenizer is resolved to model.path when unset; the built-in model carries its own.
  const std::string tok_dir = cfg.model.path.empty() ? model_dir : cfg.model.tokenizer;
  FTUNE_CHECK(fs::exists(tok_dir + "/tokenizer.json"), "{}: no tokenizer.json (set model.tokenizer)",
              tok_dir);
  const Tokenizer tok = Tokenizer::from_file(tok_dir + "/tokenizer.json");
  FTUNE_CHECK(tok.vocab_size() <= spec.vocab_size,
              "{}/tokenizer.json has token ids up to {}, outside the model's vocabulary "
              "(vocab_size {} in {}/config.json)",
              tok_dir, tok.vocab_size() - 1, spec.vocab_size, model_dir);
  const DataOptions dopts = data_options_from_config(cfg, tok_dir);
  const PreparedData data = prepare_data(dopts, tok);
  check_micro_batch_fits(spec, cfg.train.micro_batch_size, longest_example(data.train),
                         "train.micro_batch_size (or data.max_seq_length)");
  print_data_summary(data, dopts, cfg.data.train.empty() ? "data (built-in debug set)" : "data " + cfg.data.train);

  auto ops = make_ops(cfg.train.device);
  ModelOptions mopts;
  mopts.gradient_checkpointing = cfg.train.gradient_checkpointing;
  LlamaModel model = LlamaModel::from_hf_folder(model_dir, *ops, mopts);
  model.attach_lora(LoraWeights::init(model.spec(), lora_spec_from_config(cfg), ops->device()));
  std::fprintf(stderr, "model: %s (%s, %lld layers, hidden %lld) on %s; LoRA r=%lld alpha=%g on %s: %lld trainable parameters\n",
               model_dir.c_str(), model.spec().arch.c_str(),
               static_cast<long long>(model.spec().num_layers),
               static_cast<long long>(model.spec().hidden_size), ops->device().str().c_str(),
               static_cast<long long>(cfg.lora.r), cfg.lora.alpha,
               fmt::format("{}", fmt::join(cfg.lora.target_modules, ",")).c_str(),
               static_cast<long long>(model.lora().num_params()));

  out_dir.start_writing();
  write_resolved_config(cfg, cfg.train.output_dir + "/config.resolved.yaml");

  TrainData td;
  td.epoch_batches = [&](int64_t epoch) {
    return make_batches(data.train, batch_options(dopts, data, epoch, 0, 1));
  };
  if (!data.validation.empty()) {
    BatchOptions vb = batch_options(dopts, data, 0, 0, 1);
    vb.shuffle = false;
    td.validation = make_batches(data.validation, vb);
  }
  TrainLoopOptions lopts = loop_options_from_config(cfg);
  lopts.resume = args.resume;
  lopts.adapter_meta.base_model_name_or_path = fs::absolute(model_dir).string();
  TrainSummary s;
  {
    InterruptScope signals;
    s = run_training(model, lopts, td);
  }
  if (s.interrupted != 0) {
    if (s.checkpoint_dir.empty())
      std::fprintf(stderr, "interrupted after %lld steps: no checkpoint written\n",
                   static_cast<long long>(s.steps));
    else
      std::fprintf(stderr, "interrupted after %lld steps: checkpoint %s; continue with --resume\n",
                   static_cast<long long>(s.steps), s.checkpoint_dir.c_str());
    return interrupt_exit_code(s.interrupted);
  }
  out_dir.commit();
  if (s.steps == 0) {
    std::fprintf(stderr, "nothing to do: the newest checkpoint is already at train.max_steps\n");
    return 0;
  }
  std::fprintf(stderr, "done: %lld steps in %.1f s, loss %.4f -> %.4f", static_cast<long long>(s.steps),
               s.seconds, s.first_loss, s.final_loss);
  if (s.eval_loss >= 0)
    std::fprintf(stderr, ", validation loss %.4f (perplexity %.3f)", s.eval_loss, std::exp(s.eval_loss));
  std::fprintf(stderr, "\nadapter: %s\n", s.adapter_dir.c_str());
  return 0;
}

}  // namespace ftune
