// On --resume the run continues from checkpoint step N, but the crashed run may have logged
// steps after N. Those lines (metrics.jsonl) and events (TensorBoard files) are dropped before
// the resumed run logs the same steps again, so every step appears once. Also removes the
// temporary folders of checkpoints a crash left half written.
#pragma once
#include <cstdint>
#include <string>

namespace ftune {

// Keeps the lines of metrics.jsonl whose "step" is <= last_step; drops the rest and any line
// that is not a JSON object (a line cut short by the crash). Rewritten atomically; returns the
// number of lines dropped. A missing file is left missing.
int64_t truncate_metrics_jsonl(const std::string& path, int64_t last_step);

// Rewrites each events.out.tfevents.* file in log_dir keeping only events with step <= last_step
// (events without a step, like the file-version header, are kept) and stopping at the first
// damaged record. Returns the number of events dropped.
int64_t truncate_tensorboard_events(const std::string& log_dir, int64_t last_step);

// Removes output_dir/checkpoints/.tmp-step-* (half-written checkpoints of a killed run).
// Returns how many were removed.
int remove_stale_checkpoint_temps(const std::string& output_dir);

}  // namespace ftune
