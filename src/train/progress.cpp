// Console progress line (see progress.h).
#include "train/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace ftune {

ConsoleMode resolve_console_mode(std::string_view mode, FILE* out) {
  if (mode == "bar") return ConsoleMode::Bar;
  if (mode == "plain") return ConsoleMode::Plain;
  if (mode == "none") return ConsoleMode::None;
  if (mode == "auto") return isatty(fileno(out)) ? ConsoleMode::Bar : ConsoleMode::Plain;
  fail("console mode must be auto, bar, plain or none, got '{}'", mode);
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?:??:??";
  auto s = static_cast<int64_t>(std::llround(seconds));
  return fmt::format("{}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60);
}

std::string format_bar(int64_t step, int64_t total, int width) {
  int64_t clamped = std::clamp<int64_t>(step, 0, total);
  int filled = static_cast<int>(clamped * width / total);
  std::string bar = "[";
  if (filled >= width) {
    bar += std::string(width, '=');
  } else if (filled > 0) {
    bar += std::string(filled - 1, '=') + ">" + std::string(width - filled, ' ');
  } else {
    bar += std::string(width, ' ');
  }
  return bar + "]";
}

std::string format_progress_line(const ProgressInfo& p, bool with_bar, int bar_width) {
  std::string line = p.total_steps > 0 ? fmt::format("step {}/{}", p.step, p.total_steps)
                                       : fmt::format("step {}", p.step);
  if (with_bar && p.total_steps > 0) line += fmt::format(" {}", format_bar(p.step, p.total_steps, bar_width));
  line += fmt::format(" loss {:.4f} lr {:.1e} gnorm {:.2f} tok/s {:.0f}", p.loss, p.lr,
                      p.grad_norm, p.tokens_per_s);
  if (p.memory_mib >= 0)
    line += fmt::format(" mem {:.0f}/{:.0f} MiB", p.memory_mib, std::max(p.memory_mib, p.peak_memory_mib));
  if (p.total_steps > 0) line += fmt::format(" ETA {}", format_duration(p.eta_s));
  return line;
}

double estimate_eta(int64_t start_step, int64_t step, int64_t total, double elapsed_s) {
  if (total <= 0 || step <= start_step) return -1;
  return elapsed_s / static_cast<double>(step - start_step) *
         static_cast<double>(std::max<int64_t>(0, total - step));
}

ProgressPrinter::ProgressPrinter(std::string_view mode, int64_t total_steps, int64_t start_step,
                                 FILE* out)
    : mode_(resolve_console_mode(mode, out)),
      total_steps_(total_steps),
      start_step_(start_step),
      out_(out),
      start_(std::chrono::steady_clock::now()) {}

ProgressPrinter::~ProgressPrinter() { finish(); }

void ProgressPrinter::update(int64_t step, double loss, double lr, double grad_norm,
                             double tokens_per_s, double memory_mib, double peak_memory_mib) {
  if (mode_ == ConsoleMode::None) return;
  double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  ProgressInfo p{step,         total_steps_, loss, lr, grad_norm, tokens_per_s,
                 estimate_eta(start_step_, step, total_steps_, elapsed), memory_mib,
                 peak_memory_mib};
  if (mode_ == ConsoleMode::Plain) {
    fmt::print(out_, "{}\n", format_progress_line(p, false));
    std::fflush(out_);
    return;
  }
  draw(format_progress_line(p, true));
}

void ProgressPrinter::draw(const std::string& line) {
  // Pad with spaces over a longer previous line instead of an ANSI erase: works on every
  // terminal, including ones without escape sequences.
  size_t pad = last_line_.size() > line.size() ? last_line_.size() - line.size() : 0;
  fmt::print(out_, "\r{}{}", line, std::string(pad, ' '));
  std::fflush(out_);
  last_line_ = line;
  bar_open_ = true;
}

void ProgressPrinter::message(std::string_view line) {
  if (mode_ == ConsoleMode::None) return;
  if (mode_ == ConsoleMode::Bar && bar_open_) {
    size_t pad = last_line_.size() > line.size() ? last_line_.size() - line.size() : 0;
    fmt::print(out_, "\r{}{}\n", line, std::string(pad, ' '));
    std::string bar = last_line_;
    last_line_.clear();
    draw(bar);
    return;
  }
  fmt::print(out_, "{}\n", line);
  std::fflush(out_);
}

void ProgressPrinter::finish() {
  if (mode_ == ConsoleMode::Bar && bar_open_) {
    std::fputc('\n', out_);
    std::fflush(out_);
    bar_open_ = false;
    last_line_.clear();
  }
}

}  // namespace ftune
