// metrics.jsonl: one JSON object per line, one line per logged optimizer step and one per
// evaluation, each flushed as written so that a crashed or running job can be tailed and
// plotted (pandas.read_json(path, lines=True)). Non-finite numbers are written as null.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace ftune {

struct StepMetrics {
  int64_t step = 0;          // optimizer steps done (1-based after the first step)
  double epoch = 0;          // fractional epoch, e.g. 1.25
  double loss = 0;           // mean loss per trained token over the step (all ranks)
  double lr = 0;             // learning rate used for the step
  double grad_norm = 0;      // global L2 norm of the gradients before clipping
  int64_t tokens = 0;        // tokens fed through the model in this step (rows x seq_len), all ranks
  double tokens_per_s = 0;   // tokens / wall seconds of this step
  double elapsed_s = 0;      // seconds since training started
  std::vector<double> memory_mib;       // per rank (distributed runs): memory in use, MiB
  std::vector<double> peak_memory_mib;  // per rank: peak so far, MiB
};

struct EvalMetrics {
  int64_t step = 0;
  double epoch = 0;
  double eval_loss = 0;      // mean loss per trained token over the validation set
  double elapsed_s = 0;
};

class MetricsJsonl {
 public:
  // Opens output_dir/metrics.jsonl (creating output_dir): truncated, or appended to when
  // resuming a run.
  explicit MetricsJsonl(const std::string& output_dir, bool append = false);
  ~MetricsJsonl();
  MetricsJsonl(const MetricsJsonl&) = delete;
  MetricsJsonl& operator=(const MetricsJsonl&) = delete;

  // {"step","epoch","loss","lr","grad_norm","tokens","tokens_per_s","elapsed_s"} and, in
  // distributed runs, "memory_mib" and "peak_memory_mib" (lists, one entry per rank)
  void log_step(const StepMetrics& m);
  // {"step","epoch","eval_loss","eval_perplexity","elapsed_s"}, perplexity = exp(eval_loss)
  void log_eval(const EvalMetrics& m);
  // {"step","sample_prompt","sample","elapsed_s"}: a greedy completion of one of
  // train.sample_prompts at an evaluation
  void log_sample(int64_t step, const std::string& prompt, const std::string& sample,
                  double elapsed_s);

  const std::string& path() const { return path_; }

 private:
  void write_line(const std::string& line);

  std::string path_;
  FILE* file_ = nullptr;
};

}  // namespace ftune
