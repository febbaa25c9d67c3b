// distributed.shard_base and distributed.max_memory_gib decided before a run starts
// (cli/job_setup.h decide_shard_base): auto shards a model that does not fit and would fit
// sharded, never one that sharding makes bigger; caps refuse a rank before anything starts and
// say what could help; malformed caps and sample prompts with a sharded base are refused.
#include <gtest/gtest.h>

#include <fstream>

#include "cli/job_setup.h"
#include "model/presets.h"
#include "support/test_support.h"
#include "train/config.h"

namespace ftune {
namespace {

// A job on llama-3-8b's config.json (weights are never read here).
TrainConfig job_8b(const std::string& shard_base, const std::vector<double>& caps = {}) {
  const std::string dir = test::temp_dir("shard_decision");
  for (const auto& p : model_presets())
    if (std::string(p.name) == "llama-3-8b") std::ofstream(dir + "/config.json") << p.config_json;
  TrainConfig c = default_config();
  c.model.path = dir;
  c.data.max_seq_length = 2048;
  c.train.micro_batch_size = 1;
  c.train.gradient_checkpointing = "true";
  c.distributed.shard_base = shard_base;
  c.distributed.max_memory_gib = caps;
  return c;
}

constexpr int64_t kGiB = int64_t{1} << 30;

}  // namespace

TEST(ShardDecision, AutoShardsOnlyWhatDoesNotFitAndFitsSharded) {
  // 80 GiB: the whole bf16 8B fits; 10 GiB: it does not (15 GiB of weights), a quarter does.
  EXPECT_FALSE(decide_shard_base(job_8b("auto"), 4, 0, true, 80 * kGiB).shard);
  const ShardDecision d = decide_shard_base(job_8b("auto"), 4, 0, true, 10 * kGiB);
  EXPECT_TRUE(d.shard);
  EXPECT_NE(d.note.find("distributed.shard_base: auto -> true (the whole model needs "),
            std::string::npos) << d.note;
  // One process: nothing to shard over; true says so, auto stays quiet.
  EXPECT_FALSE(decide_shard_base(job_8b("auto"), 1, 0, true, 10 * kGiB).shard);
  const ShardDecision one = decide_shard_base(job_8b("true"), 1, 0, true, 80 * kGiB);
  EXPECT_FALSE(one.shard);
  EXPECT_EQ(one.note, "distributed.shard_base: true has no effect with one process");
  EXPECT_TRUE(decide_shard_base(job_8b("true"), 2, 1, true, 80 * kGiB).shard);
  EXPECT_FALSE(decide_shard_base(job_8b("false"), 4, 0, true, 10 * kGiB).shard);
  // Unknown device memory (CPU workers) and no cap: never on its own.
  EXPECT_FALSE(decide_shard_base(job_8b("auto"), 4, 0, false, 0).shard);
}

TEST(ShardDecision, CapsDecideAndRefuseNamingTheRank) {
  // One cap per rank: rank 1's 14 GiB makes auto shard there (13.1 GiB sharded over 2; the
  // ranks then vote), rank 0's 80 GiB does not.
  EXPECT_FALSE(decide_shard_base(job_8b("auto", {80, 14}), 2, 0, true, 140 * kGiB).shard);
  EXPECT_TRUE(decide_shard_base(job_8b("auto", {80, 14}), 2, 1, true, 140 * kGiB).shard);
  // Too small even sharded over 2; unsharded, the hint says sharding would help.
  const std::string sharded =
      test::error_of([] { decide_shard_base(job_8b("auto", {4}), 2, 1, true, 140 * kGiB); });
  EXPECT_EQ(sharded.rfind("rank 1: the job needs ", 0), 0u) << sharded;
  EXPECT_NE(sharded.find("GiB on its device with the base sharded over 2 ranks, more than its "
                         "distributed.max_memory_gib 4.00; lower train.micro_batch_size"),
            std::string::npos) << sharded;
  const std::string whole =
      test::error_of([] { decide_shard_base(job_8b("false", {10}), 2, 0, true, 140 * kGiB); });
  EXPECT_NE(whole.find("more than its distributed.max_memory_gib 10.00; set "
                       "distributed.shard_base: true, lower"),
            std::string::npos) << whole;
  // Malformed caps.
  EXPECT_NE(test::error_of([] { decide_shard_base(job_8b("auto", {1, 2, 3}), 2, 0, true, 0); })
                .find("distributed.max_memory_gib has 3 entries for 2 processes"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { decide_shard_base(job_8b("auto", {0}), 2, 0, true, 0); })
                .find("distributed.max_memory_gib: entry 0 is 0; caps must be positive"),
            std::string::npos);
  // Sample prompts generate on rank 0 alone.
  TrainConfig c = job_8b("true");
  c.train.sample_prompts = {"hi"};
  EXPECT_NE(test::error_of([&] { decide_shard_base(c, 2, 0, true, 0); })
                .find("train.sample_prompts generate on rank 0 alone"),
            std::string::npos);
}

}  // namespace ftune
