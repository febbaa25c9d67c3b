// Writes a known set of scalars with TensorBoardWriter into <log_dir>, for
// tests/py/test_tensorboard_events.py to read back with the real tensorboard package.
// The values follow formulas that the Python test recomputes independently:
//   train/loss  step s = 1..50: 3 / (1 + 0.1 s)
//   train/lr    step s = 1..50: 2e-4 (1 - s / 50)
//   eval/loss   step s = 10, 20, ..., 50: 2.5 - 0.01 s
//   edge/values step s = 0..5: 0, -1.5, 1e30, 1e-30, 65504.5, 3.4e38; then step 2^40: 7
// Prints the event file's path.
#include <cstdint>
#include <cstdio>
#include <exception>

#include "train/tensorboard_writer.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: write_tb_events <log_dir>\n");
    return 2;
  }
  try {
    ftune::TensorBoardWriter w(argv[1]);
    for (int s = 1; s <= 50; ++s) {
      w.add_scalar("train/loss", static_cast<float>(3.0 / (1.0 + 0.1 * s)), s);
      w.add_scalar("train/lr", static_cast<float>(2e-4 * (1.0 - s / 50.0)), s);
      if (s % 10 == 0) w.add_scalar("eval/loss", static_cast<float>(2.5 - 0.01 * s), s);
    }
    const float edge[] = {0.0f, -1.5f, 1e30f, 1e-30f, 65504.5f, 3.4e38f};
    for (int s = 0; s < 6; ++s) w.add_scalar("edge/values", edge[s], s);
    w.add_scalar("edge/values", 7.0f, int64_t{1} << 40);
    w.flush();
    std::printf("%s\n", w.path().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "write_tb_events: %s\n", e.what());
    return 1;
  }
  return 0;
}
