// `ftune eval --model DIR [--adapter DIR] --data FILE`: loss, perplexity and token count of a
// model (optionally with a LoRA adapter) on a dataset, printed as one JSON object on stdout.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/job_setup.h"
#include "cli/memory_check.h"
#include "core/error.h"
#include "data/packing.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/adapter_io.h"
#include "model/unused_tensors.h"

namespace ftune {

namespace fs = std::filesystem;

namespace {
// The same bounds as data.max_seq_length and train.micro_batch_size (docs/CONFIG.md).
constexpr int64_t kMaxSeqLength = 1048576;
constexpr int64_t kMaxMicroBatch = 65536;
}  // namespace

int cmd_eval(const EvalArgs& a) {
  FTUNE_CHECK(!a.model.empty(), "eval: --model is required");
  FTUNE_CHECK(!a.data.empty(), "eval: --data is required");
  FTUNE_CHECK(fs::exists(a.data), "eval: data file '{}' not found", a.data);
  FTUNE_CHECK(fs::exists(a.model + "/tokenizer.json"), "eval: {}: no tokenizer.json", a.model);
  FTUNE_CHECK(a.max_seq_length >= 2 && a.max_seq_length <= kMaxSeqLength,
              "eval: --max-seq-length {} is out of range [2, {}]", a.max_seq_length, kMaxSeqLength);
  FTUNE_CHECK(a.batch_size >= 1 && a.batch_size <= kMaxMicroBatch,
              "eval: --batch-size {} is out of range [1, {}]", a.batch_size, kMaxMicroBatch);
  const Tokenizer tok = Tokenizer::from_file(a.model + "/tokenizer.json");
  DataOptions d;
  d.train = a.data;
  d.format = a.format;
  d.chat_template = a.chat_template;
  d.tokenizer_dir = a.model;
  d.max_seq_length = a.max_seq_length;
  d.shuffle = false;
  d.micro_batch_rows = a.batch_size;
  const PreparedData data = prepare_data(d, tok);
  const ModelSpec spec = model_spec_from_hf(load_hf_config(a.model + "/config.json"),
                                            a.model + "/config.json");
  FTUNE_CHECK(tok.vocab_size() <= spec.vocab_size,
              "{}/tokenizer.json has token ids up to {}, outside the model's vocabulary "
              "(vocab_size {} in {}/config.json)",
              a.model, tok.vocab_size() - 1, spec.vocab_size, a.model);
  check_unused_tensors(spec, CheckpointReader::open_folder(a.model), a.model + "/config.json");
  check_micro_batch_fits(spec, a.batch_size, longest_example(data.train),
                         "--batch-size (or --max-seq-length)");
  auto ops = make_ops(a.device);
  ModelOptions mo;
  mo.dtype = compute_dtype("auto", *ops);
  LlamaModel model = LlamaModel::from_hf_folder(a.model, *ops, mo);
  if (!a.adapter.empty())
    model.attach_lora(load_peft_adapter(a.adapter, model.spec(), ops->device()));
  StepLoss total;
  for (const Batch& b : make_batches(data.train, batch_options(d, data, 0, 0, 1))) {
    const StepLoss l = model.forward(b);
    total.loss_sum += l.loss_sum;
    total.count += l.count;
  }
  FTUNE_CHECK(total.count > 0, "eval: {} has no trained tokens to score", a.data);
  const double loss = total.mean();
  nlohmann::json out = {{"loss", loss},
                        {"perplexity", std::exp(loss)},
                        {"tokens", total.count},
                        {"examples", data.train_stats.examples},
                        {"model", a.model},
                        {"adapter", a.adapter.empty() ? nlohmann::json(nullptr) : nlohmann::json(a.adapter)}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace ftune
