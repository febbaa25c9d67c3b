// `ftune merge` and `ftune export` from the command line: what they write, and that bad input
// (missing adapter files, an adapter for other shapes, an unknown --type or --dtype, a non-empty
// output folder, an existing output file) is one `error:` line with exit code 1 and changes
// nothing on disk. The values themselves are checked in tests/unit/test_merge.cpp and
// tests/py/test_merge_export.py.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include <sys/wait.h>

#include "io/safetensors.h"
#include "support/cli_run.h"
#include "support/test_support.h"

namespace fs = std::filesystem;
using nlohmann::json;

using ftune::test::CliRun;
using ftune::test::run_ftune;

namespace {

int lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

// A folder with a tiny model (base_model/: the built-in model with its tokenizer) and a trained
// adapter (adapter/), from a 2-step `ftune train`.
std::string trained(const std::string& tag) {
  const std::string d = ftune::test::temp_dir(tag);
  const CliRun r = run_ftune("train train.max_steps=2 train.eval_steps=0 logging.console=none "
                             "train.output_dir=out", d);
  EXPECT_EQ(r.code, 0) << r.err;
  return d;
}

}  // namespace

TEST(CliExport, MergeAndExportWriteTheirOutputs) {
  const std::string d = trained("cli_export_ok");
  CliRun r = run_ftune("merge --model out/base_model --adapter out/adapter --out merged "
                       "--max-shard-size 300KB", d);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("merged 14 adapted tensors into merged (float32,"), std::string::npos) << r.err;
  const json idx = json::parse(std::ifstream(d + "/merged/model.safetensors.index.json"));
  EXPECT_GT(idx["weight_map"].size(), 10u);
  EXPECT_TRUE(fs::exists(d + "/merged/tokenizer.json"));
  EXPECT_TRUE(fs::exists(d + "/merged/generation_config.json"));
  // The merged folder is a model ftune reads back.
  const ftune::CheckpointReader ck = ftune::CheckpointReader::open_folder(d + "/merged");
  EXPECT_EQ(ck.names().size(), ftune::CheckpointReader::open_folder(d + "/out/base_model").names().size());

  r = run_ftune("export --model out/base_model --adapter out/adapter --out m.gguf --type q8_0", d);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("wrote m.gguf (llama,"), std::string::npos) << r.err;
  std::ifstream g(d + "/m.gguf", std::ios::binary);
  char magic[4];
  g.read(magic, 4);
  EXPECT_EQ(std::string(magic, 4), "GGUF");
  // Exporting the merged folder gives the same file as merging on the fly.
  r = run_ftune("export --model merged --out m2.gguf --type q8_0", d);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(fs::file_size(d + "/m.gguf"), fs::file_size(d + "/m2.gguf"));
}

TEST(CliExport, BadInputIsOneLineAndChangesNothing) {
  const std::string d = trained("cli_export_bad");
  auto expect_error = [&](const std::string& args, const std::string& message) {
    SCOPED_TRACE(args);
    const CliRun r = run_ftune(args, d);
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_EQ(lines(r.err), 1) << r.err;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
  };
  // Missing adapter files.
  fs::create_directories(d + "/noadapter");
  expect_error("merge --model out/base_model --adapter noadapter --out m1",
               "noadapter: no adapter_config.json");
  fs::copy_file(d + "/out/adapter/adapter_config.json", d + "/noadapter/adapter_config.json");
  expect_error("export --model out/base_model --adapter noadapter --out m1.gguf",
               "noadapter: no adapter_model.safetensors");
  expect_error("merge --model out/base_model --adapter nowhere --out m1",
               "adapter folder 'nowhere' does not exist");
  // An adapter for another shape (rank 16 trained on hidden 128; claim rank 8).
  fs::copy(d + "/out/adapter", d + "/otherrank", fs::copy_options::recursive);
  {
    json cfg = json::parse(std::ifstream(d + "/otherrank/adapter_config.json"));
    cfg["r"] = 8;
    std::ofstream(d + "/otherrank/adapter_config.json") << cfg.dump();
  }
  expect_error("merge --model out/base_model --adapter otherrank --out m1",
               "tensor 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' has shape "
               "[16, 128], expected [8, 128]");
  // Unknown --type / --format / --dtype.
  expect_error("export --model out/base_model --out m1.gguf --type q3_k",
               "unknown GGUF type 'q3_k' (expected f16, bf16, q8_0 or q4_k_m)");
  expect_error("export --model out/base_model --out m1.gguf --format onnx",
               "export: unknown --format 'onnx' (supported: gguf)");
  expect_error("merge --model out/base_model --adapter out/adapter --out m1 --dtype int4",
               "unknown dtype 'int4' (expected bf16, fp16 or fp32)");
  expect_error("merge --model out/base_model --adapter out/adapter --out m1 --max-shard-size lots",
               "invalid size 'lots'");
  // A non-empty output folder, an existing output file.
  fs::create_directories(d + "/full");
  std::ofstream(d + "/full/notes.txt") << "mine";
  expect_error("merge --model out/base_model --adapter out/adapter --out full",
               "merge: output folder 'full' is not empty (use --overwrite to replace it)");
  EXPECT_TRUE(fs::exists(d + "/full/notes.txt"));
  std::ofstream(d + "/taken.gguf") << "mine";
  expect_error("export --model out/base_model --out taken.gguf",
               "export: output file 'taken.gguf' exists (use --overwrite to replace it)");
  // Nothing was written by any refused run: no m1, m1.gguf, temporaries.
  for (const auto& e : fs::directory_iterator(d)) {
    const std::string n = e.path().filename().string();
    EXPECT_TRUE(n == "out" || n == "noadapter" || n == "otherrank" || n == "full" || n == "taken.gguf")
        << "left behind: " << n;
  }
  // --overwrite replaces them.
  CliRun r = run_ftune("merge --model out/base_model --adapter out/adapter --out full --overwrite", d);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(fs::exists(d + "/full/notes.txt"));
  r = run_ftune("export --model out/base_model --out taken.gguf --overwrite --type f16", d);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_GT(fs::file_size(d + "/taken.gguf"), 1000u);
  // Missing required options are usage errors (exit 2).
  r = run_ftune("merge --model out/base_model --out x", d);
  EXPECT_EQ(r.code, 2);
}

TEST(CliExport, SaveMergedWritesOutputDirMerged) {
  const std::string d = ftune::test::temp_dir("cli_save_merged");
  const CliRun ok = run_ftune("train train.max_steps=2 train.eval_steps=0 logging.console=none "
                              "train.output_dir=out2 train.save_merged=true", d);
  ASSERT_EQ(ok.code, 0) << ok.err;
  EXPECT_NE(ok.err.find("merged model: out2/merged"), std::string::npos) << ok.err;
  EXPECT_TRUE(fs::exists(d + "/out2/merged/model.safetensors"));
  // The merged weights are the merge of the run's own base model and adapter.
  const CliRun m = run_ftune("merge --model out2/base_model --adapter out2/adapter --out again", d);
  ASSERT_EQ(m.code, 0) << m.err;
  std::ifstream a(d + "/out2/merged/model.safetensors", std::ios::binary),
      b(d + "/again/model.safetensors", std::ios::binary);
  const std::string sa((std::istreambuf_iterator<char>(a)), {}), sb((std::istreambuf_iterator<char>(b)), {});
  EXPECT_EQ(sa, sb);
}
