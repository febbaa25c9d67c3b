// Config loading: schema defaults, every kind of error message (with file:line and
// did-you-mean), typed overrides, the resolved dump round trip, and docs/CONFIG.md coverage.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"
#include "support/test_support.h"
#include "train/config.h"

using namespace ftune;
namespace fs = std::filesystem;

namespace {

std::string write_file(const std::string& dir, const std::string& name, const std::string& text) {
  std::string p = dir + "/" + name;
  std::ofstream(p) << text;
  return p;
}

// The error message of load_config, or "" when it loads.
std::string load_error(const std::string& path, const std::vector<std::string>& ov = {}) {
  try {
    load_config(path, ov);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST(Config, DefaultsFromSchema) {
  TrainConfig c = default_config();
  EXPECT_EQ(c.model.path, "");
  EXPECT_EQ(c.model.dtype, "auto");
  EXPECT_EQ(c.model.chat_template, "auto");
  EXPECT_FALSE(c.model.load_in_4bit);
  EXPECT_EQ(c.lora.r, 16);
  EXPECT_EQ(c.lora.alpha, 16.0);
  EXPECT_EQ(c.lora.dropout, 0.0);
  EXPECT_EQ(c.lora.target_modules,
            (std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                      "up_proj", "down_proj"}));
  EXPECT_FALSE(c.lora.use_rslora);
  EXPECT_EQ(c.data.max_seq_length, 2048);
  EXPECT_EQ(c.data.truncation, "truncate");
  EXPECT_TRUE(c.data.packing);
  EXPECT_TRUE(c.data.train_on_responses_only);
  EXPECT_TRUE(c.data.shuffle);
  EXPECT_EQ(c.data.seed, 42);
  EXPECT_EQ(c.data.validation_split, 0.0);
  EXPECT_EQ(c.train.output_dir, "outputs");
  EXPECT_EQ(c.train.max_steps, -1);
  EXPECT_EQ(c.train.num_epochs, 1);
  EXPECT_EQ(c.train.micro_batch_size, 2);
  EXPECT_EQ(c.train.gradient_accumulation_steps, 1);
  EXPECT_EQ(c.train.learning_rate, 2e-4);
  EXPECT_EQ(c.train.adam_beta1, 0.9);
  EXPECT_EQ(c.train.adam_beta2, 0.999);
  EXPECT_EQ(c.train.adam_epsilon, 1e-8);
  EXPECT_EQ(c.train.max_grad_norm, 1.0);
  EXPECT_EQ(c.train.gradient_checkpointing, "layer");
  EXPECT_EQ(c.train.seed, 42);
  EXPECT_EQ(c.train.logging_steps, 1);
  EXPECT_EQ(c.train.device, "auto");
  EXPECT_EQ(c.distributed.gpus, "1");
  EXPECT_EQ(c.distributed.nproc, 1);
  EXPECT_EQ(c.distributed.aggregation, "token_mean");
  EXPECT_TRUE(c.distributed.shard_weights.empty());
  EXPECT_TRUE(c.distributed.check_consistency);
  EXPECT_TRUE(c.logging.tensorboard);
  EXPECT_TRUE(c.logging.jsonl);
  EXPECT_EQ(c.logging.console, "auto");
  // Resolved sentinels.
  EXPECT_EQ(c.data.cache_dir, (fs::path("outputs") / ".cache").string());
  EXPECT_EQ(c.lora.init_seed, 42);  // -1 -> train.seed
  EXPECT_EQ(c.model.tokenizer, "");  // model.path is empty too
  // No file = defaults.
  EXPECT_EQ(load_config(""), c);
}

TEST(Config, SchemaRowsFillDistinctFieldsInSectionOrder) {
  TrainConfig c;
  std::set<const void*> fields;
  std::set<std::string_view> paths;
  size_t section = 0;
  auto sections = config_sections();
  for (const ConfigKey& k : config_schema()) {
    const void* p = std::visit([](auto* f) -> const void* { return f; }, k.field(c));
    EXPECT_TRUE(fields.insert(p).second) << k.path << " shares a field with another row";
    EXPECT_TRUE(paths.insert(k.path).second) << k.path << " listed twice";
    std::string_view sec = k.path.substr(0, k.path.find('.'));
    while (section < sections.size() && sections[section] != sec) ++section;
    ASSERT_LT(section, sections.size()) << k.path << " is out of section order";
    EXPECT_FALSE(k.doc.empty()) << k.path;
    EXPECT_EQ(k.doc.find('|'), std::string_view::npos) << k.path << ": '|' breaks the docs table";
    EXPECT_EQ(k.doc.find('\n'), std::string_view::npos) << k.path;
  }
}

TEST(Config, LoadsValuesFromYaml) {
  std::string dir = test::temp_dir("cfg_load");
  std::string data = write_file(dir, "train.jsonl", "{\"text\": \"hi\"}\n");
  std::string p = write_file(dir, "c.yaml",
                             "model:\n"
                             "  dtype: bfloat16\n"
                             "  load_in_4bit: yes\n"
                             "lora:\n"
                             "  r: 8\n"
                             "  alpha: 32\n"
                             "  dropout: 0.05\n"
                             "  target_modules: [q_proj, v_proj]\n"
                             "data:\n"
                             "  train: " + data + "\n"
                             "  validation_split: 0.1\n"
                             "train:\n"
                             "  learning_rate: 1.0e-4\n"
                             "  lr_scheduler: cosine\n"
                             "  max_steps: 100\n"
                             "  output_dir: " + dir + "/out\n"
                             "distributed:\n"
                             "logging:\n"
                             "  console: plain\n");
  TrainConfig c = load_config(p);
  EXPECT_EQ(c.model.dtype, "bfloat16");
  EXPECT_TRUE(c.model.load_in_4bit);
  EXPECT_EQ(c.lora.r, 8);
  EXPECT_EQ(c.lora.alpha, 32.0);
  EXPECT_EQ(c.lora.dropout, 0.05);
  EXPECT_EQ(c.lora.target_modules, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_EQ(c.data.train, data);
  EXPECT_EQ(c.data.validation_split, 0.1);
  EXPECT_EQ(c.train.learning_rate, 1e-4);
  EXPECT_EQ(c.train.lr_scheduler, "cosine");
  EXPECT_EQ(c.train.max_steps, 100);
  EXPECT_EQ(c.data.cache_dir, (fs::path(dir + "/out") / ".cache").string());
  EXPECT_EQ(c.logging.console, "plain");
  EXPECT_EQ(c.train.micro_batch_size, 2);  // untouched keys keep defaults
}

TEST(Config, AllLinearExpandsToSevenProjections) {
  TrainConfig c = load_config("", {"lora.target_modules=all-linear"});
  EXPECT_EQ(c.lora.target_modules, default_config().lora.target_modules);
  EXPECT_EQ(c.lora.target_modules.size(), 7u);
}

TEST(Config, UnknownKeyWithLineAndSuggestion) {
  std::string dir = test::temp_dir("cfg_unknown");
  std::string p = write_file(dir, "c.yaml",
                             "train:\n"
                             "  max_steps: 10\n"
                             "  learnig_rate: 1e-4\n");
  EXPECT_EQ(load_error(p),
            p + ":3: train.learnig_rate: unknown key; did you mean 'train.learning_rate'?");
}

TEST(Config, UnknownSectionWithSuggestion) {
  std::string dir = test::temp_dir("cfg_section");
  std::string p = write_file(dir, "c.yaml",
                             "# comment\n"
                             "trian:\n"
                             "  max_steps: 10\n");
  EXPECT_EQ(load_error(p), p + ":2: trian: unknown section; did you mean 'train'?");
}

TEST(Config, HfNamesAndMisplacedKeysAreSuggested) {
  std::string dir = test::temp_dir("cfg_alias");
  std::string p = write_file(dir, "c.yaml",
                             "learning_rate: 1e-4\n"
                             "lora:\n"
                             "  lora_alpha: 32\n"
                             "  seed: 3\n"
                             "train:\n"
                             "  per_device_train_batch_size: 4\n");
  auto lines = lines_of(load_error(p));
  ASSERT_EQ(lines.size(), 4u) << load_error(p);
  EXPECT_EQ(lines[0],
            p + ":1: learning_rate: unknown section; did you mean 'train.learning_rate'?");
  EXPECT_EQ(lines[1], p + ":3: lora.lora_alpha: unknown key; did you mean 'lora.alpha'?");
  EXPECT_EQ(lines[2], p + ":4: lora.seed: unknown key; did you mean 'lora.init_seed'?");
  EXPECT_EQ(lines[3],
            p + ":6: train.per_device_train_batch_size: unknown key; did you mean "
                "'train.micro_batch_size'?");
}

TEST(Config, UnknownKeyWithoutSuggestion) {
  std::string dir = test::temp_dir("cfg_nosugg");
  std::string p = write_file(dir, "c.yaml", "train:\n  zzzzzz: 1\n");
  EXPECT_EQ(load_error(p), p + ":2: train.zzzzzz: unknown key");
}

TEST(Config, WrongTypes) {
  std::string dir = test::temp_dir("cfg_types");
  std::string p = write_file(dir, "c.yaml",
                             "train:\n"
                             "  learning_rate: abc\n"
                             "  max_steps: 1.5\n"
                             "  gradient_checkpointing: maybe\n"
                             "  output_dir: [a, b]\n"
                             "lora:\n"
                             "  target_modules: q_proj\n"
                             "model: 3\n");
  auto lines = lines_of(load_error(p));
  ASSERT_EQ(lines.size(), 6u) << load_error(p);
  EXPECT_EQ(lines[0], p + ":2: train.learning_rate: expected a number, got 'abc'");
  EXPECT_EQ(lines[1], p + ":3: train.max_steps: expected an integer, got '1.5'");
  EXPECT_EQ(lines[2], p + ":4: train.gradient_checkpointing: invalid choice 'maybe'; expected one "
                         "of: none, layer, offload, true, false");
  EXPECT_EQ(lines[3], p + ":5: train.output_dir: expected a string, got a list");
  EXPECT_EQ(lines[4],
            p + ":7: lora.target_modules: expected a list (e.g. [q_proj, k_proj, v_proj, o_proj, "
                "gate_proj, up_proj, down_proj]) or all-linear, got 'q_proj'");
  EXPECT_EQ(lines[5], p + ":8: model: expected a mapping of keys, got '3'");
}

TEST(Config, OutOfRangeValues) {
  std::string dir = test::temp_dir("cfg_range");
  std::string p = write_file(dir, "c.yaml",
                             "data:\n"
                             "  validation_split: 0.75\n"
                             "lora:\n"
                             "  dropout: 1.0\n"
                             "  r: 0\n"
                             "train:\n"
                             "  max_grad_norm: -1\n"
                             "  warmup_ratio: 1.5\n");
  auto lines = lines_of(load_error(p));
  ASSERT_EQ(lines.size(), 5u) << load_error(p);
  EXPECT_EQ(lines[0], p + ":2: data.validation_split: must be in [0, 0.5], got 0.75");
  EXPECT_EQ(lines[1], p + ":4: lora.dropout: must be in [0, 1), got 1.0");
  EXPECT_EQ(lines[2], p + ":5: lora.r: must be in [1, 4096], got 0");
  EXPECT_EQ(lines[3], p + ":7: train.max_grad_norm: must be >= 0, got -1");
  EXPECT_EQ(lines[4], p + ":8: train.warmup_ratio: must be in [0, 1], got 1.5");
}

TEST(Config, InvalidChoices) {
  std::string dir = test::temp_dir("cfg_choice");
  std::string p = write_file(dir, "c.yaml",
                             "train:\n"
                             "  lr_scheduler: cosin\n"
                             "lora:\n"
                             "  target_modules: [q_proj, qkv_proj]\n"
                             "distributed:\n"
                             "  aggregation: sum\n");
  auto lines = lines_of(load_error(p));
  ASSERT_EQ(lines.size(), 3u) << load_error(p);
  EXPECT_EQ(lines[0],
            p + ":2: train.lr_scheduler: invalid choice 'cosin'; expected one of: constant, "
                "linear, cosine; did you mean 'cosine'?");
  EXPECT_EQ(lines[1],
            p + ":4: lora.target_modules: invalid item 'qkv_proj'; expected items from: q_proj, "
                "k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj; did you mean 'q_proj'?");
  EXPECT_EQ(lines[2],
            p + ":6: distributed.aggregation: invalid choice 'sum'; expected one of: "
                "token_mean, mean, weighted, median");
}

TEST(Config, MissingFiles) {
  std::string dir = test::temp_dir("cfg_files");
  std::string p = write_file(dir, "c.yaml",
                             "model:\n"
                             "  path: " + dir + "/no_model\n"
                             "data:\n"
                             "  train: " + dir + "/no_train.jsonl\n"
                             "  validation: " + dir + "/no_val.jsonl\n");
  auto lines = lines_of(load_error(p));
  ASSERT_EQ(lines.size(), 3u) << load_error(p);
  EXPECT_EQ(lines[0], p + ":2: model.path: file not found: '" + dir + "/no_model'");
  EXPECT_EQ(lines[1], p + ":4: data.train: file not found: '" + dir + "/no_train.jsonl'");
  EXPECT_EQ(lines[2], p + ":5: data.validation: file not found: '" + dir + "/no_val.jsonl'");
  // Existing ones pass, and model.tokenizer follows model.path.
  fs::create_directories(dir + "/model");
  TrainConfig c = load_config("", {"model.path=" + dir + "/model"});
  EXPECT_EQ(c.model.tokenizer, dir + "/model");
}

TEST(Config, CrossKeyConflicts) {
  std::string dir = test::temp_dir("cfg_cross");
  std::string val = write_file(dir, "val.jsonl", "{}\n");
  std::string p = write_file(dir, "c.yaml",
                             "data:\n"
                             "  validation: " + val + "\n"
                             "  validation_split: 0.1\n"
                             "train:\n"
                             "  warmup_steps: 10\n"
                             "  warmup_ratio: 0.1\n");
  auto lines = lines_of(load_error(p));
  ASSERT_EQ(lines.size(), 2u) << load_error(p);
  EXPECT_EQ(lines[0], p + ":6: train.warmup_ratio: set together with train.warmup_steps (" + p +
                          ":5); set only one");
  EXPECT_EQ(lines[1], p + ":3: data.validation_split: set together with data.validation (" + p +
                          ":2); set only one");
}

TEST(Config, Fp8BaseExcludesNf4AndAShardedBase) {
  EXPECT_EQ(load_error("", {"model.fp8_base=true", "model.load_in_4bit=true"}),
            "model.fp8_base=true: model.fp8_base: set together with model.load_in_4bit "
            "(model.load_in_4bit=true); the base is either FP8 or NF4, set only one");
  EXPECT_EQ(load_error("", {"distributed.shard_base=true", "model.fp8_base=true"}),
            "model.fp8_base=true: model.fp8_base: set together with distributed.shard_base: true "
            "(distributed.shard_base=true); a sharded base is bf16/fp16 or NF4, turn one of them "
            "off");
  TrainConfig c = load_config("", {"model.fp8_base=true"});
  EXPECT_TRUE(c.model.fp8_base);
  EXPECT_FALSE(default_config().model.fp8_base);
}

TEST(Config, DuplicateKeysAndSyntaxErrors) {
  std::string dir = test::temp_dir("cfg_dup");
  std::string p = write_file(dir, "c.yaml", "train:\n  seed: 1\n  seed: 2\n");
  EXPECT_EQ(load_error(p), p + ":3: train.seed: duplicate key (first at " + p + ":2)");
  std::string bad = write_file(dir, "bad.yaml", "train:\n  seed: [1, 2\n");
  std::string e = load_error(bad);
  EXPECT_EQ(e.rfind(bad + ":", 0), 0u) << e;
  EXPECT_NE(e.find("YAML syntax error"), std::string::npos) << e;
  EXPECT_EQ(load_error(dir + "/nope.yaml"), "config file not found: '" + dir + "/nope.yaml'");
  std::string list = write_file(dir, "list.yaml", "- a\n- b\n");
  EXPECT_EQ(load_error(list), list +
                                  ":1: (top level): expected a mapping of sections (model, lora, "
                                  "data, train, distributed, logging), got a list");
}

TEST(Config, OverridesAreTypedAndValidated) {
  TrainConfig c = load_config("", {"train.learning_rate=1e-4", "lora.r=8",
                                   "lora.target_modules=[q_proj, o_proj]", "data.packing=false",
                                   "train.output_dir=runs/x", "logging.run_name=my run"});
  EXPECT_EQ(c.train.learning_rate, 1e-4);
  EXPECT_EQ(c.lora.r, 8);
  EXPECT_EQ(c.lora.target_modules, (std::vector<std::string>{"q_proj", "o_proj"}));
  EXPECT_FALSE(c.data.packing);
  EXPECT_EQ(c.train.output_dir, "runs/x");
  EXPECT_EQ(c.data.cache_dir, (fs::path("runs/x") / ".cache").string());
  EXPECT_EQ(c.logging.run_name, "my run");
  // Text keys take the text verbatim; a quoted value is read as YAML.
  TrainConfig t = load_config("", {"logging.run_name=run #3: a", "data.cache_dir=\"\"",
                                   "train.output_dir='x y'"});
  EXPECT_EQ(t.logging.run_name, "run #3: a");
  EXPECT_EQ(t.train.output_dir, "x y");
  EXPECT_EQ(t.data.cache_dir, (fs::path("x y") / ".cache").string());

  auto lines = lines_of(load_error("", {"train.learning_rate=abc", "train.lr=1", "trian.seed=1",
                                        "lora.r=0", "seed", "train.device=tpu"}));
  ASSERT_EQ(lines.size(), 6u);
  EXPECT_EQ(lines[0], "train.learning_rate=abc: train.learning_rate: expected a number, got 'abc'");
  EXPECT_EQ(lines[1], "train.lr=1: train.lr: unknown key; did you mean 'train.learning_rate'?");
  EXPECT_EQ(lines[2], "trian.seed=1: trian.seed: unknown section; did you mean 'train'?");
  EXPECT_EQ(lines[3], "lora.r=0: lora.r: must be in [1, 4096], got 0");
  EXPECT_EQ(lines[4], "seed: (override): expected section.key=value");
  EXPECT_EQ(lines[5],
            "train.device=tpu: train.device: invalid choice 'tpu'; expected one of: auto, cpu, "
            "cuda; did you mean 'cpu'?");
}

TEST(Config, OverridesWinOverFileAndReportOwnOrigin) {
  std::string dir = test::temp_dir("cfg_ovfile");
  std::string p = write_file(dir, "c.yaml", "train:\n  warmup_steps: 5\n  seed: 7\n");
  TrainConfig c = load_config(p, {"train.seed=9"});
  EXPECT_EQ(c.train.seed, 9);
  EXPECT_EQ(c.train.warmup_steps, 5);
  EXPECT_EQ(c.lora.init_seed, 9);
  EXPECT_EQ(load_error(p, {"train.warmup_ratio=0.1"}),
            "train.warmup_ratio=0.1: train.warmup_ratio: set together with train.warmup_steps (" +
                p + ":2); set only one");
}

TEST(Config, ResolvedDumpRoundTrips) {
  std::string dir = test::temp_dir("cfg_round");
  // Non-default values everywhere the types allow, including text that needs quoting.
  TrainConfig c = load_config(
      "", {"model.dtype=float16", "model.chat_template=chatml", "model.load_in_4bit=true",
           "model.seed=5", "lora.r=64", "lora.alpha=12.5", "lora.dropout=0.1",
           "lora.target_modules=[down_proj, q_proj]", "lora.use_rslora=true",
           "lora.init_seed=3", "data.validation_split=0.05", "data.format=sharegpt",
           "data.max_seq_length=512", "data.truncation=drop", "data.cache_dir=/tmp/c d",
           "train.output_dir=out: \"quoted\" #x", "train.learning_rate=3.3e-5",
           "train.adam_epsilon=1e-10", "train.warmup_ratio=0.03", "train.max_steps=1000",
           "distributed.gpus=4", "distributed.aggregation=median", "distributed.master_port=29511",
           "distributed.shard_weights=[1, 2.5]", "distributed.rank_weights=[3]",
           "logging.console=none", "logging.run_name=true"});
  EXPECT_EQ(c.train.output_dir, "out: \"quoted\" #x");
  EXPECT_EQ(c.logging.run_name, "true");
  std::string path = dir + "/sub/config.resolved.yaml";
  write_resolved_config(c, path);
  EXPECT_EQ(read_text(path), to_resolved_yaml(c));
  EXPECT_EQ(load_config(path), c);
  EXPECT_EQ(load_config(path).train.adam_epsilon, 1e-10);
  // And the defaults.
  write_resolved_config(default_config(), path);
  EXPECT_EQ(load_config(path), default_config());
  // Every key appears in the dump with its doc comment.
  std::string text = to_resolved_yaml(c);
  for (const ConfigKey& k : config_schema()) {
    std::string leaf(k.path.substr(k.path.find('.') + 1));
    EXPECT_NE(text.find("  " + leaf + ": "), std::string::npos) << k.path;
    EXPECT_NE(text.find("# " + std::string(k.doc)), std::string::npos) << k.path;
  }
  // No temporary file left behind.
  size_t files = 0;
  for (auto& e : fs::directory_iterator(dir + "/sub")) files += e.is_regular_file();
  EXPECT_EQ(files, 1u);
}

TEST(Config, DocsListEveryKeyWithSchemaValues) {
  std::string docs = read_text(test::data_path("../docs/CONFIG.md"));
  ASSERT_FALSE(docs.empty()) << "docs/CONFIG.md missing";
  for (const ConfigKey& k : config_schema())
    EXPECT_NE(docs.find("`" + std::string(k.path) + "`"), std::string::npos)
        << k.path << " is not documented in docs/CONFIG.md";
  for (std::string_view s : config_sections()) {
    std::string table = config_reference_markdown(s);
    EXPECT_NE(docs.find(table), std::string::npos)
        << "docs/CONFIG.md is out of date with the schema; section '" << s
        << "' should hold exactly:\n"
        << table;
  }
}

TEST(Config, SamplePromptsAreAListOfTextThatRoundTrips) {
  const std::string d = test::temp_dir("cfg_samples");
  const std::string p = write_file(d, "s.yaml",
                                   "train:\n  sample_prompts: [\"Hi: there\", 'quote \" and \\\\ slash',"
                                   " \"two\\nlines\"]\n  sample_max_new_tokens: 8\n");
  const TrainConfig c = load_config(p);
  EXPECT_EQ(c.train.sample_prompts,
            (std::vector<std::string>{"Hi: there", "quote \" and \\\\ slash", "two\nlines"}));
  EXPECT_EQ(c.train.sample_max_new_tokens, 8);
  EXPECT_TRUE(default_config().train.sample_prompts.empty());
  EXPECT_EQ(default_config().train.sample_max_new_tokens, 64);
  // The resolved dump reads back to the same values.
  EXPECT_EQ(load_config_text(to_resolved_yaml(c), "<dump>"), c);
  // An override takes a YAML flow list.
  EXPECT_EQ(load_config("", {"train.sample_prompts=[a b, c]"}).train.sample_prompts,
            (std::vector<std::string>{"a b", "c"}));
  const std::string bad = write_file(d, "b.yaml",
                                     "train:\n  sample_prompts: hello\n  sample_max_new_tokens: 0\n");
  const auto lines = lines_of(load_error(bad));
  ASSERT_EQ(lines.size(), 2u) << load_error(bad);
  EXPECT_EQ(lines[0], bad + ":2: train.sample_prompts: expected a list of strings (e.g. [\"Hello\"]), got 'hello'");
  EXPECT_NE(lines[1].find("train.sample_max_new_tokens"), std::string::npos);
  EXPECT_NE(load_error(write_file(d, "e.yaml", "train:\n  sample_prompts: [\"\"]\n")).find("item 0 is empty"),
            std::string::npos);
}
