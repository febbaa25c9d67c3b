// metrics.jsonl writer (see metrics_jsonl.h). Keys keep their insertion order (ordered_json)
// so lines read naturally: step first.
#include "train/metrics_jsonl.h"

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace ftune {

MetricsJsonl::MetricsJsonl(const std::string& output_dir, bool append) {
  std::error_code ec;
  std::filesystem::create_directories(output_dir, ec);
  FTUNE_CHECK(!ec, "MetricsJsonl: cannot create '{}': {}", output_dir, ec.message());
  path_ = (std::filesystem::path(output_dir) / "metrics.jsonl").string();
  file_ = std::fopen(path_.c_str(), append ? "ab" : "wb");
  FTUNE_CHECK(file_, "MetricsJsonl: cannot open '{}' for writing", path_);
}

MetricsJsonl::~MetricsJsonl() {
  if (file_) std::fclose(file_);
}

void MetricsJsonl::log_step(const StepMetrics& m) {
  nlohmann::ordered_json j;
  j["step"] = m.step;
  j["epoch"] = m.epoch;
  j["loss"] = m.loss;
  j["lr"] = m.lr;
  j["grad_norm"] = m.grad_norm;
  j["tokens"] = m.tokens;
  j["tokens_per_s"] = m.tokens_per_s;
  j["elapsed_s"] = m.elapsed_s;
  if (!m.memory_mib.empty()) j["memory_mib"] = m.memory_mib;
  if (!m.peak_memory_mib.empty()) j["peak_memory_mib"] = m.peak_memory_mib;
  write_line(j.dump());
}

void MetricsJsonl::log_eval(const EvalMetrics& m) {
  nlohmann::ordered_json j;
  j["step"] = m.step;
  j["epoch"] = m.epoch;
  j["eval_loss"] = m.eval_loss;
  j["eval_perplexity"] = std::exp(m.eval_loss);  // HF run_clm: perplexity = exp(eval_loss)
  j["elapsed_s"] = m.elapsed_s;
  write_line(j.dump());
}

void MetricsJsonl::log_sample(int64_t step, const std::string& prompt, const std::string& sample,
                              double elapsed_s) {
  nlohmann::ordered_json j;
  j["step"] = step;
  j["sample_prompt"] = prompt;
  j["sample"] = sample;
  j["elapsed_s"] = elapsed_s;
  write_line(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

void MetricsJsonl::write_line(const std::string& line) {
  // nlohmann writes NaN/Inf as null, which keeps every line valid JSON.
  bool ok = std::fwrite(line.data(), 1, line.size(), file_) == line.size();
  ok = std::fputc('\n', file_) != EOF && ok;
  ok = std::fflush(file_) == 0 && ok;
  FTUNE_CHECK(ok, "MetricsJsonl: cannot write '{}'", path_);
}

}  // namespace ftune
