// train.output_dir as a transaction: a refused or failed run leaves the folder as it found it.
// Checks happen before anything is written; what a refused run created (the folder itself, the
// built-in base_model/, the token cache) is removed again; old results are moved aside, never
// deleted, until the new run has finished.
#pragma once
#include <string>

#include "train/config.h"

namespace ftune {

// Where train.overwrite_output_dir=true parks the previous run's results until the new run ends.
inline constexpr const char* kReplacedResultsDir = ".replaced-results";

// Read-only checks: output_dir is not empty and not a file; an existing folder with results is
// only used with --resume or train.overwrite_output_dir=true.
void check_output_dir(const TrainConfig& cfg, bool resume);

// --resume, checked before anything is written: a checkpoint exists and was written by the
// same configuration (same fingerprint; `world` = this run's process count, for the message).
void check_resume_possible(const TrainConfig& cfg, const std::string& fingerprint,
                           int world = 1);

class OutputDirTransaction {
 public:
  // Records what exists now; writes nothing. With --resume old results are never moved aside
  // (the run continues them), whatever train.overwrite_output_dir says.
  OutputDirTransaction(const TrainConfig& cfg, bool resume);
  // Not committed and not started: removes what this run created (see above).
  ~OutputDirTransaction();
  OutputDirTransaction(const OutputDirTransaction&) = delete;
  OutputDirTransaction& operator=(const OutputDirTransaction&) = delete;

  // Every input is valid: from here the run writes. With overwrite, the old results move to
  // output_dir/.replaced-results (replacing an older parked set).
  void start_writing();
  // The run ended well: the parked old results are deleted.
  void commit();
  // Where the old results were parked ("" when none).
  const std::string& parked() const { return parked_; }

 private:
  std::string out_;
  bool overwrite_ = false;
  bool existed_ = false, base_model_existed_ = false, cache_existed_ = false;
  bool started_ = false, committed_ = false;
  std::string cache_dir_;
  std::string parked_;
};

}  // namespace ftune
