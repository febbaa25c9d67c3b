// libFuzzer target: dataset text (JSON array or JSONL), format detection, record conversion and
// rendering with the Llama-3 template.
#include "data/chat_template.h"
#include "data/dataset_format.h"
#include "data/tokenize_example.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ftune;
  static const ChatTemplate tmpl = chat_template_by_name("llama-3");
  fuzz::expect_accept_or_refuse([&] {
    const auto records = parse_dataset_text(fuzz::as_text(data, size), "data.jsonl");
    if (records.empty()) return;
    const DatasetFormat f = detect_format(records.front());
    for (const auto& r : records) {
      fuzz::expect_accept_or_refuse([&] {
        const SourceExample ex = convert_record(r, f);
        (void)render_example(ex, &tmpl, true);
      });
    }
  });
  return 0;
}
