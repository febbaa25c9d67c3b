// The ftune command line: train, eval, doctor. Library errors (ftune::Error) become one
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
  t->add_option("--gpus", train.gpus, "Number of GPUs (same as distributed.gpus=N)")->check(CLI::Range(1, 1024));

  EvalArgs ev;
  auto* e = app.add_subcommand("eval", "Loss and perplexity of a model (+ adapter) on a dataset");
  e->add_option("--model", ev.model, "HF model folder")->required();
  e->add_option("--adapter", ev.adapter, "PEFT adapter folder");
  e->add_option("--data", ev.data, "JSON/JSONL dataset")->required();
  e->add_option("--format", ev.format, "Dataset format (auto, alpaca, sharegpt, messages, text, prompt_completion)");
  e->add_option("--chat-template", ev.chat_template, "Chat template (auto, llama-3, llama-2, mistral, chatml, alpaca)");
  e->add_option("--max-seq-length", ev.max_seq_length, "Tokens per row");
  e->add_option("--batch-size", ev.batch_size, "Rows per forward pass");
  e->add_option("--device", ev.device, "auto, cpu or cuda");

  app.add_subcommand("doctor", "Build options, devices, and whether each part works");

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
      return cmd_train(train);
    }
    if (*e) return cmd_eval(ev);
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
