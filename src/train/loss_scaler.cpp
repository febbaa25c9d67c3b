#include "train/loss_scaler.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace ftune {

LossScaler::LossScaler(LossScalerOptions o) : opts_(o), scale_(o.init_scale) {
  FTUNE_CHECK(std::isfinite(o.init_scale) && o.init_scale >= o.min_scale && o.min_scale > 0 &&
                  o.growth_factor > 1.0 && o.backoff_factor > 0.0 && o.backoff_factor < 1.0 &&
                  o.growth_interval >= 1,
              "loss scaler: init_scale {} (>= min_scale {} > 0), growth_factor {} (> 1), "
              "backoff_factor {} (in (0, 1)) and growth_interval {} (>= 1)",
              o.init_scale, o.min_scale, o.growth_factor, o.backoff_factor, o.growth_interval);
}

bool LossScaler::update(bool gradients_finite) {
  if (!opts_.enabled) return true;
  if (!gradients_finite) {
    FTUNE_CHECK(scale_ > opts_.min_scale,
                "float16 training: the gradients overflow even at loss scale {} (the model or "
                "the learning rate diverged); use bfloat16 or float32",
                scale_);
    scale_ = std::max(opts_.min_scale, scale_ * opts_.backoff_factor);
    good_ = 0;
    ++skipped_;
    return false;
  }
  if (++good_ >= opts_.growth_interval) {
    const double grown = scale_ * opts_.growth_factor;
    if (std::isfinite(grown)) scale_ = grown;
    good_ = 0;
  }
  return true;
}

LossScalerState LossScaler::state() const {
  LossScalerState s;
  s.scale = opts_.enabled ? scale_ : 0.0;
  s.good_steps = good_;
  s.skipped_steps = skipped_;
  return s;
}

void LossScaler::load_state(const LossScalerState& s) {
  FTUNE_CHECK(s.good_steps >= 0 && s.skipped_steps >= 0,
              "loss scaler: good_steps {} and skipped_steps {} must be >= 0", s.good_steps,
              s.skipped_steps);
  skipped_ = s.skipped_steps;
  if (!opts_.enabled) return;
  FTUNE_CHECK(std::isfinite(s.scale) && s.scale >= opts_.min_scale,
              "loss scaler: scale {} must be finite and >= {}", s.scale, opts_.min_scale);
  scale_ = s.scale;
  good_ = s.good_steps;
}

}  // namespace ftune
