// Unit tests of issue 8's building blocks: JSON nesting limit, typed JSON field errors,
// non-finite detection, resume log truncation, the memory lower bound, command suggestions,
// tokenizer errors naming the file, unused checkpoint tensors, and the signal handler.
#include <gtest/gtest.h>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <limits>

#include <sys/wait.h>
#include <unistd.h>

#include "cli/command_names.h"
#include "cli/memory_check.h"
#include "core/error.h"
#include "core/finite_check.h"
#include "data/chat_template.h"
#include "data/dataset_format.h"
#include "io/json_fields.h"
#include "io/json_file.h"
#include "io/json_limits.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "model/unused_tensors.h"
#include "support/test_support.h"
#include "train/resume_logs.h"
#include "train/signals.h"
#include "train/tensorboard_writer.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace ftune {
namespace {

std::string read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

TEST(JsonLimits, NestingIsMeasuredOutsideStrings) {
  EXPECT_EQ(json_nesting_overflow(nested(128)), std::string_view::npos);
  EXPECT_EQ(json_nesting_overflow(nested(129)), 128u);
  EXPECT_EQ(json_nesting_overflow("{\"a\": \"[[[[[[\"}", 2), std::string_view::npos);
  EXPECT_EQ(json_nesting_overflow("{\"a\\\"[\": [[1]]}", 2), 10u);  // escaped quote in a key
  EXPECT_EQ(json_nesting_overflow("]]]][[", 1), 5u);                // stray closers do not go below 0
}

TEST(JsonLimits, EveryJsonReaderRefusesDeepNestingWithAMessage) {
  const std::string deep = nested(100000);
  EXPECT_EQ(test::error_of([&] { parse_json_text(deep, "x.json"); }),
            "x.json: line 1, column 129: JSON nested deeper than 128 levels (refused: no real "
            "file nests this deep)");
  EXPECT_NE(test::error_of([&] { Tokenizer::from_json("{\"model\": " + deep + "}", "tok.json"); })
                .find("tokenizer 'tok.json': line 1, column 138: JSON nested deeper"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { parse_dataset_text("{\"text\": \"a\"}\n{\"b\": " + deep + "}\n", "d.jsonl"); })
                .find("d.jsonl:2: column 134: JSON nested deeper than 128 levels"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { parse_dataset_text("[{\"b\": " + deep + "}]", "d.json"); })
                .find("d.json:1: column 134: JSON nested deeper"),
            std::string::npos);
  // A safetensors header nested deep: refused, not a stack overflow.
  const std::string dir = test::temp_dir("deep_st");
  std::string header = "{\"a\": " + deep + "}";
  while ((header.size() % 8) != 0) header += ' ';
  std::string file(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  write(dir + "/m.safetensors", file + header);
  EXPECT_NE(test::error_of([&] { SafetensorsFile::open(dir + "/m.safetensors"); })
                .find("JSON nested deeper than 128 levels"),
            std::string::npos);
}

// Found by fuzz_dataset: a number too large for a double is nlohmann's out_of_range, not a
// parse_error, and escaped the parsers' handlers (ftune printed nlohmann's text, no file/line).
TEST(JsonLimits, NumberOverflowIsAnErrorNamingTheFile) {
  EXPECT_EQ(test::error_of([&] { parse_dataset_text("{\"text\": \"a\"}\n{\"prompt\": 22.2E2222}\n", "d.jsonl"); }),
            "d.jsonl:2: invalid JSON: number overflow parsing '22.2E2222'");
  EXPECT_EQ(test::error_of([&] { parse_dataset_text("[{\"prompt\": 1e999}]", "d.json"); }),
            "d.json: invalid JSON: number overflow parsing '1e999'");
  EXPECT_EQ(test::error_of([&] { parse_json_text("{\"vocab_size\": -1e999}", "config.json"); }),
            "config.json: invalid JSON: number overflow parsing '-1e999'");
  EXPECT_NE(test::error_of([&] { Tokenizer::from_json("{\"model\": 1e400}", "tok.json"); })
                .find("tokenizer 'tok.json': invalid JSON: [json.exception.out_of_range.406] number overflow"),
            std::string::npos);
}

// Found by UBSan (scripts/sanitize.sh): a tensor after an odd-sized one sits at a misaligned
// address in the mapping; reading it as float was undefined behaviour. It is now copied.
TEST(SafetensorsAlignment, MisalignedTensorsAreReadThroughAnAlignedCopy) {
  const std::string dir = test::temp_dir("st_align");
  std::string header = R"({"u": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, )"
                       R"("f": {"dtype": "F32", "shape": [2], "data_offsets": [1, 9]}})";
  while ((header.size() % 8) != 0) header += ' ';
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  const float vals[2] = {1.5f, -2.25f};
  file += header;
  file += '\x07';
  file.append(reinterpret_cast<const char*>(vals), sizeof(vals));
  write(dir + "/m.safetensors", file);
  SafetensorsFile f = SafetensorsFile::open(dir + "/m.safetensors");
  const Tensor t = f.tensor("f");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % alignof(float), 0u);
  EXPECT_EQ(t.f32()[0], 1.5f);
  EXPECT_EQ(t.f32()[1], -2.25f);
  EXPECT_EQ(f.tensor("u").data<uint8_t>()[0], 7);
}

TEST(JsonFields, ErrorsNameFileAndKey) {
  const json j = json::parse(R"({"a": 1, "b": "x", "c": true, "d": -3, "n": null, "big": 18446744073709551615})");
  EXPECT_EQ(json_int(j, "a", "f.json"), 1);
  EXPECT_EQ(json_number(j, "a", "f.json"), 1.0);
  EXPECT_EQ(json_string(j, "b", "f.json"), "x");
  EXPECT_TRUE(json_bool(j, "c", "f.json"));
  EXPECT_EQ(json_int(j, "zz", "f.json", 7), 7);
  EXPECT_EQ(json_number(j, "n", "f.json", 0.5), 0.5);  // null with a default = the default
  EXPECT_EQ(test::error_of([&] { json_int(j, "zz", "f.json"); }), "f.json: missing key 'zz'");
  EXPECT_EQ(test::error_of([&] { json_int(j, "b", "f.json"); }),
            "f.json: key 'b' must be an integer, got string \"x\"");
  EXPECT_EQ(test::error_of([&] { json_number(j, "b", "f.json"); }),
            "f.json: key 'b' must be a number, got string \"x\"");
  EXPECT_EQ(test::error_of([&] { json_bool(j, "a", "f.json"); }),
            "f.json: key 'a' must be true or false, got number 1");
  EXPECT_EQ(test::error_of([&] { json_uint(j, "d", "f.json"); }),
            "f.json: key 'd' must be a non-negative integer, got number -3");
  EXPECT_EQ(test::error_of([&] { json_int(j, "big", "f.json"); }),
            "f.json: key 'big' must be an integer in the int64 range, got number 18446744073709551615");
  EXPECT_EQ(test::error_of([&] { json_string(json::array(), "k", "f.json"); }),
            "f.json: expected a JSON object, got array []");
}

TEST(FiniteCheck, FindsNanAndInfInEveryFloatDtype) {
  Tensor t = Tensor::zeros({3, 4});
  EXPECT_EQ(first_non_finite(t), -1);
  t.f32()[7] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(first_non_finite(t), 7);
  EXPECT_EQ(test::error_of([&] { check_finite(t, "w.safetensors: tensor 'x'"); }),
            "w.safetensors: tensor 'x': element 7 is Inf (non-finite values are refused)");
  t.f32()[5] = std::nanf("");
  EXPECT_EQ(test::error_of([&] { check_finite(t, "t"); }),
            "t: element 5 is NaN (non-finite values are refused)");
  for (DType dt : {DType::BF16, DType::F16}) {
    Tensor h = t.to_dtype(dt);
    EXPECT_EQ(first_non_finite(h), 5) << dtype_name(dt);
    Tensor clean = Tensor::from_vector({1e4f, -2.5f, 0.f, 65000.f}, {4}).to_dtype(dt);
    EXPECT_EQ(first_non_finite(clean), -1) << dtype_name(dt);
  }
  // Large tensors: the hit is found past the first block.
  Tensor big = Tensor::zeros({10000});
  big.f32()[9001] = -std::numeric_limits<float>::infinity();
  EXPECT_EQ(first_non_finite(big), 9001);
}

TEST(ResumeLogs, MetricsAfterTheCheckpointAreDropped) {
  const std::string dir = test::temp_dir("resume_metrics");
  const std::string p = dir + "/metrics.jsonl";
  write(p,
        "{\"step\":1,\"loss\":2}\n{\"step\":2,\"loss\":1.5}\n{\"step\":2,\"eval_loss\":1.4}\n"
        "{\"step\":3,\"loss\":1.2}\n{\"step\":4,\"lo");  // cut short by the crash
  EXPECT_EQ(truncate_metrics_jsonl(p, 2), 2);
  EXPECT_EQ(read(p), "{\"step\":1,\"loss\":2}\n{\"step\":2,\"loss\":1.5}\n{\"step\":2,\"eval_loss\":1.4}\n");
  EXPECT_EQ(truncate_metrics_jsonl(p, 2), 0);
  EXPECT_EQ(truncate_metrics_jsonl(dir + "/none.jsonl", 2), 0);
  EXPECT_FALSE(fs::exists(dir + "/none.jsonl"));
}

TEST(ResumeLogs, TensorBoardEventsAfterTheCheckpointAreDropped) {
  const std::string dir = test::temp_dir("resume_tb");
  const std::string header = tfrecord_frame(tb_encode_file_version_event(1.0));
  std::string keep = header, all = header;
  for (int64_t step = 1; step <= 5; ++step) {
    const std::string rec = tfrecord_frame(tb_encode_scalar_event(2.0, step, "train/loss", 0.5f));
    all += rec;
    if (step <= 3) keep += rec;
  }
  write(dir + "/events.out.tfevents.1.host.1.0", all + all.substr(0, 10));  // + a torn record
  write(dir + "/other.txt", "not an event file");
  EXPECT_EQ(truncate_tensorboard_events(dir, 3), 3);  // steps 4, 5 and the torn tail
  EXPECT_EQ(read(dir + "/events.out.tfevents.1.host.1.0"), keep);
  EXPECT_EQ(read(dir + "/other.txt"), "not an event file");
}

TEST(ResumeLogs, StaleCheckpointTempsAreRemoved) {
  const std::string dir = test::temp_dir("stale_tmp");
  fs::create_directories(dir + "/checkpoints/.tmp-step-4/x");
  fs::create_directories(dir + "/checkpoints/step-2");
  EXPECT_EQ(remove_stale_checkpoint_temps(dir), 1);
  EXPECT_FALSE(fs::exists(dir + "/checkpoints/.tmp-step-4"));
  EXPECT_TRUE(fs::exists(dir + "/checkpoints/step-2"));
}

ModelSpec tiny_spec() {
  ModelSpec s;
  s.vocab_size = 256;
  s.hidden_size = 64;
  s.intermediate_size = 128;
  s.num_layers = 2;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 16;
  return s;
}

TEST(MemoryCheck, LowerBoundAndRefusalWithTheFigures) {
  const ModelSpec s = tiny_spec();
  // per token: 16 (batch) + 4*64*3 (residual at 3 boundaries) + 4*(64+64+64+256) (one layer)
  EXPECT_EQ(step_memory_lower_bound(s, 2, 10), 20u * (16 + 768 + 1792));
  EXPECT_EQ(step_memory_lower_bound(s, int64_t{1} << 40, int64_t{1} << 40), UINT64_MAX);
  EXPECT_GT(physical_memory_bytes(), 0u);
  EXPECT_NO_THROW(check_micro_batch_fits(s, 4, 512, "x"));
  const std::string e = test::error_of([&] { check_micro_batch_fits(s, 65536, 1048576, "--batch-size"); });
  EXPECT_NE(e.find("a micro-batch of 65536 rows x 1048576 tokens needs at least 164864.0 GiB of memory, "
                   "and this machine has"),
            std::string::npos) << e;
  EXPECT_NE(e.find("; lower --batch-size"), std::string::npos) << e;
}

TEST(CommandNames, UnknownCommandsGetTheNearest) {
  EXPECT_EQ(unknown_command_message("train"), "");
  EXPECT_EQ(unknown_command_message("eval"), "");
  EXPECT_EQ(unknown_command_message("doctor"), "");
  EXPECT_EQ(unknown_command_message("generate"), "");
  EXPECT_EQ(unknown_command_message("bench"), "");
  EXPECT_EQ(unknown_command_message("trian"),
            "unknown command 'trian'; did you mean 'train'? (commands: train, eval, generate, "
            "doctor, bench, merge, export, plan)");
  EXPECT_NE(unknown_command_message("generat").find("did you mean 'generate'?"),
            std::string::npos);
  EXPECT_NE(unknown_command_message("docter").find("did you mean 'doctor'?"), std::string::npos);
  EXPECT_NE(unknown_command_message("evaluate").find("did you mean 'eval'?"), std::string::npos);
}

// A minimal byte-level BPE tokenizer.json with the given pre_tokenizer regex.
std::string tokenizer_json(const std::string& vocab, const std::string& regex) {
  return R"({"model": {"type": "BPE", "vocab": )" + vocab +
         R"(, "merges": []}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": ")" + regex +
         R"("}, "behavior": "Isolated", "invert": false}})";
}

TEST(TokenizerErrors, NameTheTokenizerFile) {
  EXPECT_NE(test::error_of([&] { Tokenizer::from_json(tokenizer_json("{}", "a+"), "/m/tokenizer.json"); })
                .find("/m/tokenizer.json: model: the vocabulary is empty"),
            std::string::npos);
  const std::string bad = test::error_of(
      [&] { Tokenizer::from_json(tokenizer_json(R"({"a": 0})", "(unclosed"), "/m/tokenizer.json"); });
  EXPECT_NE(bad.find("/m/tokenizer.json"), std::string::npos) << bad;
  EXPECT_NE(bad.find("(unclosed"), std::string::npos) << bad;
  // Catastrophic backtracking past PCRE2's match limit, at encode time.
  const Tokenizer t = Tokenizer::from_json(tokenizer_json(R"({"a": 0, "b": 1})", "(a+)+$"), "/m/tokenizer.json");
  const std::string slow = test::error_of([&] { t.encode(std::string(40, 'a') + "!", false); });
  EXPECT_NE(slow.find("tokenizer '/m/tokenizer.json'"), std::string::npos) << slow;
  EXPECT_NE(slow.find("match limit"), std::string::npos) << slow;
}

TEST(ChatTemplateHint, NamesModelChatTemplate) {
  const std::string e = test::error_of([&] { resolve_chat_template("auto", ""); });
  EXPECT_NE(e.find("set model.chat_template to one of"), std::string::npos) << e;
  EXPECT_EQ(e.find("data.chat_template"), std::string::npos) << e;
}

TEST(UnusedTensors, LayerBeyondTheConfigIsAnErrorOthersAreListed) {
  const ModelSpec s = tiny_spec();
  const std::string dir = test::temp_dir("unused_tensors");
  std::vector<std::pair<std::string, Tensor>> t;
  t.emplace_back("model.embed_tokens.weight", Tensor::zeros({2}));
  t.emplace_back("model.layers.0.self_attn.rotary_emb.inv_freq", Tensor::zeros({2}));
  t.emplace_back("model.vision_tower.weight", Tensor::zeros({2}));
  write_safetensors(dir + "/model.safetensors", t);
  CheckpointReader ck = CheckpointReader::open_folder(dir);
  EXPECT_EQ(unused_tensors(s, ck), std::vector<std::string>{"model.vision_tower.weight"});
  EXPECT_NO_THROW(check_unused_tensors(s, ck, dir + "/config.json"));  // a warning only
  t.emplace_back("model.layers.2.input_layernorm.weight", Tensor::zeros({2}));
  write_safetensors(dir + "/model.safetensors", t);
  CheckpointReader ck2 = CheckpointReader::open_folder(dir);
  EXPECT_NE(test::error_of([&] { check_unused_tensors(s, ck2, "cfg.json"); })
                .find("tensor 'model.layers.2.input_layernorm.weight' belongs to layer 2, but "
                      "cfg.json says num_hidden_layers = 2"),
            std::string::npos);
}

// The handler in a child process: the first SIGINT only sets the flag; the second exits 130 at
// once; SIGTERM's code is 143.
TEST(Signals, FirstSignalAsksToStopSecondExitsAtOnce) {
  for (int sig : {SIGINT, SIGTERM}) {
    const pid_t pid = fork();
    if (pid == 0) {
      InterruptScope scope;
      if (interrupt_signal() != 0) _exit(2);
      raise(sig);
      if (interrupt_signal() != sig) _exit(3);
      raise(sig);
      _exit(4);  // not reached
    }
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), interrupt_exit_code(sig));
  }
  EXPECT_EQ(interrupt_exit_code(SIGINT), 130);
  EXPECT_EQ(interrupt_exit_code(SIGTERM), 143);
}

}  // namespace
}  // namespace ftune
