// Console progress for training: on a terminal a live line redrawn in place with '\r'
//   step 12/100 [==>                 ] loss 2.3456 lr 2.0e-04 gnorm 1.23 tok/s 1234 ETA 0:01:23
// otherwise (logs, pipes, CI) one plain line per update; or nothing (logging.console none).
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace ftune {

enum class ConsoleMode { Bar, Plain, None };

// "bar" | "plain" | "none" | "auto" (bar when `out` is a terminal, else plain).
ConsoleMode resolve_console_mode(std::string_view mode, FILE* out);

struct ProgressInfo {
  int64_t step = 0;
  int64_t total_steps = 0;  // <= 0: unknown (no bar, no ETA)
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;
  double tokens_per_s = 0;
  double eta_s = -1;        // < 0: unknown
  double memory_mib = -1;   // distributed runs: the largest rank's memory in use; < 0: none
  double peak_memory_mib = -1;  // and the largest peak
};

// "H:MM:SS" (hours unbounded); "?:??:??" for a negative or non-finite duration.
std::string format_duration(double seconds);
// The bar part "[=====>    ]" of `width` cells for step/total.
std::string format_bar(int64_t step, int64_t total, int width);
// The whole line, with the bar when with_bar is set.
std::string format_progress_line(const ProgressInfo& p, bool with_bar, int bar_width = 20);
// Seconds left, from the pace since start: elapsed / (step - start_step) * (total - step);
// -1 when unknown (no step done yet or total unknown).
double estimate_eta(int64_t start_step, int64_t step, int64_t total, double elapsed_s);

class ProgressPrinter {
 public:
  // start_step: the step training resumes from (0 for a fresh run), so that the ETA is
  // measured on the steps this process ran.
  ProgressPrinter(std::string_view mode, int64_t total_steps, int64_t start_step = 0,
                  FILE* out = stderr);
  ~ProgressPrinter();

  // memory_mib / peak_memory_mib: the largest over ranks (distributed runs), shown as
  // "mem 123/456 MiB" when >= 0.
  void update(int64_t step, double loss, double lr, double grad_norm, double tokens_per_s,
              double memory_mib = -1, double peak_memory_mib = -1);
  // A line of its own (an eval result, a checkpoint note) that does not tear the live bar.
  void message(std::string_view line);
  // Ends the live line with a newline (idempotent; also done by the destructor).
  void finish();

  ConsoleMode mode() const { return mode_; }

 private:
  void draw(const std::string& line);

  ConsoleMode mode_;
  int64_t total_steps_;
  int64_t start_step_;
  FILE* out_;
  std::chrono::steady_clock::time_point start_;
  std::string last_line_;    // the bar currently shown (redrawn after message())
  bool bar_open_ = false;    // a bar line is on screen without its newline
};

}  // namespace ftune
