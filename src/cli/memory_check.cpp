// Memory lower bound of a training or evaluation step (see memory_check.h).
#include "cli/memory_check.h"

#include <algorithm>
#include <unistd.h>

#include "core/error.h"

namespace ftune {

namespace {

uint64_t sat_mul(uint64_t a, uint64_t b) {
  uint64_t r;
  return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}
uint64_t sat_add(uint64_t a, uint64_t b) {
  uint64_t r;
  return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}

double gib(uint64_t b) { return static_cast<double>(b) / (1024.0 * 1024.0 * 1024.0); }

}  // namespace

uint64_t step_memory_lower_bound(const ModelSpec& spec, int64_t rows, int64_t width) {
  const uint64_t tokens = sat_mul(static_cast<uint64_t>(std::max<int64_t>(rows, 0)),
                                  static_cast<uint64_t>(std::max<int64_t>(width, 0)));
  const auto h = static_cast<uint64_t>(spec.hidden_size);
  // Batch: input_ids, labels, position_ids, doc_start (int32 each).
  uint64_t per_token = 16;
  // fp32 residual stream at each of the L+1 layer boundaries (kept even with checkpointing).
  per_token = sat_add(per_token, sat_mul(4, sat_mul(h, static_cast<uint64_t>(spec.num_layers) + 1)));
  // One layer's q, k, v, attention output and the MLP's gate and up activations.
  per_token = sat_add(per_token, sat_mul(4, static_cast<uint64_t>(spec.q_dim() + 2 * spec.kv_dim() +
                                                                  spec.q_dim() +
                                                                  2 * spec.intermediate_size)));
  return sat_mul(tokens, per_token);
}

uint64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return 0;
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page);
}

int64_t longest_example(const std::vector<TokenizedExample>& examples) {
  int64_t m = 0;
  for (const auto& e : examples) m = std::max<int64_t>(m, e.size());
  return m;
}

void check_micro_batch_fits(const ModelSpec& spec, int64_t rows, int64_t width,
                            const std::string& what) {
  const uint64_t need = step_memory_lower_bound(spec, rows, width);
  const uint64_t have = physical_memory_bytes();
  if (have == 0 || need <= have) return;
  fail("a micro-batch of {} rows x {} tokens needs at least {:.1f} GiB of memory, and this "
       "machine has {:.1f} GiB; lower {}",
       rows, width, gib(need), gib(have), what);
}

}  // namespace ftune
