// Dynamic loss scaling for float16 training (what torch.cuda.amp.GradScaler does): the loss is
// multiplied by a large scale before backward so that small fp16 gradients do not flush to
// zero; the gradients are divided by it again before clipping and the update. A step whose
// gradients overflowed (a non-finite norm) is skipped and the scale halves; after
// `growth_interval` good steps in a row it doubles. bf16 and fp32 need none of this.
#pragma once
#include <cstdint>

namespace ftune {

struct LossScalerOptions {
  bool enabled = false;
  double init_scale = 65536.0;  // 2^16, as GradScaler
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
  double min_scale = 1.0;  // never below: a model that overflows at scale 1 fails loudly
};

struct LossScalerState {
  double scale = 0.0;       // 0 = scaling off
  int64_t good_steps = 0;   // finite steps since the last change of scale
  int64_t skipped_steps = 0;
};

class LossScaler {
 public:
  explicit LossScaler(LossScalerOptions o = {});

  bool enabled() const { return opts_.enabled; }
  // The factor the backward's loss gradient is multiplied by (1 when off).
  double scale() const { return opts_.enabled ? scale_ : 1.0; }

  // After a step's gradients are known: true = apply the update; false = they overflowed, skip
  // it (the scale backs off). Always true when off.
  bool update(bool gradients_finite);

  LossScalerState state() const;
  // Restores a checkpoint's state; throws ftune::Error on a scale that is not finite and >= 1.
  void load_state(const LossScalerState& s);
  int64_t skipped_steps() const { return skipped_; }

 private:
  LossScalerOptions opts_;
  double scale_;
  int64_t good_ = 0;
  int64_t skipped_ = 0;
};

}  // namespace ftune
