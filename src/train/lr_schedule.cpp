#include "train/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace ftune {

void LrSchedule::validate() const {
  FTUNE_CHECK(kind == "constant" || kind == "linear" || kind == "cosine",
              "lr schedule: unknown kind '{}' (constant, linear, cosine)", kind);
  FTUNE_CHECK(base_lr >= 0, "lr schedule: learning rate must be >= 0, got {}", base_lr);
  FTUNE_CHECK(warmup_steps >= 0 && total_steps >= 1, "lr schedule: warmup {} / total {} steps",
              warmup_steps, total_steps);
}

double LrSchedule::factor(int64_t step) const {
  const double s = static_cast<double>(step);
  if (step < warmup_steps) return s / static_cast<double>(std::max<int64_t>(1, warmup_steps));
  if (kind == "constant") return 1.0;
  const double span = static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  if (kind == "linear")
    return std::max(0.0, static_cast<double>(total_steps - step) / span);
  // cosine, num_cycles = 0.5
  const double progress = (s - static_cast<double>(warmup_steps)) / span;
  return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
}

}  // namespace ftune
