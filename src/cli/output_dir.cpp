// train.output_dir checks and the refused-run rollback (see output_dir.h).
#include "cli/output_dir.h"

#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "train/checkpoint.h"

namespace ftune {

namespace fs = std::filesystem;

namespace {

// Entries of output_dir that are not results of a run: caches that any run may reuse.
bool is_reusable_entry(const std::string& name) {
  return name == ".cache" || name == "base_model" || name == kReplacedResultsDir;
}

// The results a run writes, in the order they are moved aside.
constexpr const char* kResults[] = {"adapter", "merged", "checkpoints", "tensorboard",
                                    "metrics.jsonl", "config.resolved.yaml"};

}  // namespace

void check_output_dir(const TrainConfig& cfg, bool resume) {
  FTUNE_CHECK(!cfg.train.output_dir.empty(),
              "train.output_dir is empty: set the folder for the adapter, checkpoints and metrics");
  const fs::path out = cfg.train.output_dir;
  std::error_code ec;
  if (!fs::exists(out, ec)) return;
  FTUNE_CHECK(fs::is_directory(out, ec), "train.output_dir '{}' exists and is not a folder",
              out.string());
  bool has_results = false;
  for (const auto& e : fs::directory_iterator(out))
    if (!is_reusable_entry(e.path().filename().string())) has_results = true;
  if (!has_results || resume) return;
  FTUNE_CHECK(cfg.train.overwrite_output_dir,
              "train.output_dir '{}' already holds results; use --resume to continue, "
              "train.overwrite_output_dir=true to replace them, or another output_dir",
              out.string());
}

void check_resume_possible(const TrainConfig& cfg, const std::string& fingerprint, int world) {
  const auto ck = latest_checkpoint(cfg.train.output_dir);
  FTUNE_CHECK(ck.has_value(), "--resume: no checkpoint in {}/checkpoints", cfg.train.output_dir);
  const std::string fp = checkpoint_fingerprint(*ck);
  FTUNE_CHECK(fp.empty() || fp == fingerprint,
              "--resume: {} was written by a different configuration (model, data, LoRA or "
              "batch settings changed; it ran {} process(es), this run {}: with another process "
              "count keep train.gradient_accumulation_steps x processes the same)",
              *ck, checkpoint_world_size(*ck), world);
}

OutputDirTransaction::OutputDirTransaction(const TrainConfig& cfg, bool resume)
    : out_(cfg.train.output_dir), overwrite_(cfg.train.overwrite_output_dir && !resume),
      cache_dir_(cfg.data.cache_dir) {
  std::error_code ec;
  existed_ = fs::exists(out_, ec);
  base_model_existed_ = fs::exists(fs::path(out_) / "base_model", ec);
  cache_existed_ = cache_dir_.empty() || fs::exists(cache_dir_, ec);
}

OutputDirTransaction::~OutputDirTransaction() {
  if (started_ || committed_) return;
  std::error_code ec;  // best effort: never throw from here
  if (!existed_) {
    fs::remove_all(out_, ec);
    if (!cache_existed_) fs::remove_all(cache_dir_, ec);
    return;
  }
  if (!base_model_existed_) fs::remove_all(fs::path(out_) / "base_model", ec);
  if (!cache_existed_) fs::remove_all(cache_dir_, ec);
}

void OutputDirTransaction::start_writing() {
  started_ = true;
  fs::create_directories(out_);
  if (!overwrite_) return;
  std::vector<fs::path> old;
  for (const char* n : kResults)
    if (fs::exists(fs::path(out_) / n)) old.push_back(fs::path(out_) / n);
  if (old.empty()) return;
  const fs::path park = fs::path(out_) / kReplacedResultsDir;
  if (fs::exists(park)) {
    // An earlier overwriting run failed before it finished: the parked set is the last finished
    // run's results and what lies in output_dir is the failed run's. Keep the parked set (never
    // replace finished results by a failed run's), drop the failed run's files.
    for (const fs::path& p : old) fs::remove_all(p);
  } else {
    fs::create_directories(park);
    for (const fs::path& p : old) fs::rename(p, park / p.filename());
  }
  parked_ = park.string();
  std::fprintf(stderr, "train.overwrite_output_dir: the previous results are kept in %s until "
                       "this run finishes\n", parked_.c_str());
}

void OutputDirTransaction::commit() {
  committed_ = true;
  if (!parked_.empty()) fs::remove_all(parked_);
}

}  // namespace ftune
