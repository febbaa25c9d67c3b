// Files compiled into the ftune binary (cmake/embed_assets.cmake): the default job's YAML and
// the small byte-level BPE tokenizer shipped in assets/tokenizer.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace ftune {

struct EmbeddedAsset {
  std::string name;  // e.g. "tokenizer_json"
  std::string_view bytes;
};

const std::vector<EmbeddedAsset>& embedded_assets();
// The asset of that name; throws ftune::Error when absent.
std::string_view embedded_asset(std::string_view name);

}  // namespace ftune
