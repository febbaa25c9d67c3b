// Signal handlers for a graceful stop (see signals.h). The handler only touches a lock-free
// atomic and calls write(2) and _exit(2), which are async-signal-safe.
#include "train/signals.h"

#include <atomic>
#include <csignal>
#include <cstring>

#include <unistd.h>

namespace ftune {

namespace {

std::atomic<int> g_signal{0};
struct sigaction g_old_int {}, g_old_term {};

void write_stderr(const char* s) {
  ssize_t r = ::write(STDERR_FILENO, s, std::strlen(s));
  (void)r;
}

extern "C" void on_stop_signal(int sig) {
  int expected = 0;
  if (!g_signal.compare_exchange_strong(expected, sig)) {
    write_stderr("\nftune: second signal: exiting now, without a checkpoint\n");
    ::_exit(128 + sig);
  }
  write_stderr(sig == SIGINT
                   ? "\nftune: SIGINT received: stopping at the end of this step (Ctrl-C again "
                     "exits at once)\n"
                   : "\nftune: SIGTERM received: stopping at the end of this step\n");
}

}  // namespace

InterruptScope::InterruptScope() {
  g_signal.store(0);
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // blocking reads and writes carry on; the loop polls the flag
  sigaction(SIGINT, &sa, &g_old_int);
  sigaction(SIGTERM, &sa, &g_old_term);
}

InterruptScope::~InterruptScope() {
  sigaction(SIGINT, &g_old_int, nullptr);
  sigaction(SIGTERM, &g_old_term, nullptr);
}

int interrupt_signal() { return g_signal.load(); }

}  // namespace ftune
