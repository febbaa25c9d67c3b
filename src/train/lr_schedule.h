// Learning-rate schedules with linear warmup, matching HF transformers' get_*_schedule_with_warmup
// (optimization.py): the LR used for optimizer step `step` (0-based) is base_lr * factor(step).
#pragma once
#include <cstdint>
#include <string>

namespace ftune {

struct LrSchedule {
  std::string kind = "constant";  // constant | linear | cosine
  double base_lr = 2e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;

  double factor(int64_t step) const;
  double lr(int64_t step) const { return base_lr * factor(step); }
  void validate() const;
};

}  // namespace ftune
