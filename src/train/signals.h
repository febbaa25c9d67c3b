// SIGINT / SIGTERM during training: the first one prints one line and asks the training loop
// to stop at the next step boundary (it writes a checkpoint when train.save_on_interrupt and
// the CLI exits 128 + signal: 130 for SIGINT, 143 for SIGTERM); a second one exits at once
// with the same code. Outside an InterruptScope the default actions apply.
#pragma once

namespace ftune {

class InterruptScope {
 public:
  InterruptScope();   // installs the handlers, clears any earlier request
  ~InterruptScope();  // restores the previous handlers
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;
};

// The signal that asked to stop (SIGINT or SIGTERM), or 0.
int interrupt_signal();

// Process exit code for a run stopped by `sig`: 128 + sig.
inline int interrupt_exit_code(int sig) { return 128 + sig; }

}  // namespace ftune
