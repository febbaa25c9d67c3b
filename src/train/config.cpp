// Loading, validating, resolving and dumping the training configuration, all driven by the
// schema table (config_schema.cpp). Values from the YAML file and from overrides go through one
// typed parser; every problem is collected (with the file:line or override it came from) and
// reported together in one ftune::Error, one line per problem, so a user fixes a config in one
// pass instead of one error per run.
#include "train/config.h"

#include <fmt/format.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>
#include <fstream>
#include <optional>

#include "core/error.h"

namespace fs = std::filesystem;

namespace ftune {
namespace {

// ---- schema lookups ----------------------------------------------------------------------------

const ConfigKey* find_key(std::string_view path) {
  for (const ConfigKey& k : config_schema())
    if (k.path == path) return &k;
  return nullptr;
}

bool is_section(std::string_view name) {
  for (std::string_view s : config_sections())
    if (s == name) return true;
  return false;
}

std::string_view section_of(std::string_view path) { return path.substr(0, path.find('.')); }
std::string_view leaf_of(std::string_view path) { return path.substr(path.find('.') + 1); }

std::vector<std::string> split_choices(std::string_view choices) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= choices.size() && !choices.empty()) {
    size_t bar = choices.find('|', start);
    if (bar == std::string_view::npos) bar = choices.size();
    out.emplace_back(choices.substr(start, bar - start));
    start = bar + 1;
  }
  return out;
}

// ---- "did you mean" ----------------------------------------------------------------------------

// Optimal-string-alignment distance: Levenshtein plus adjacent transpositions, so "trian"
// is one edit from "train".
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

// The closest candidate within about a third of its length in edits, or "".
std::string closest(std::string_view word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const std::string& c : candidates) {
    size_t d = edit_distance(word, c);
    size_t limit = std::max<size_t>(1, c.size() / 3);
    if (d <= limit && d < best_d) {
      best = c;
      best_d = d;
    }
  }
  return best;
}

// Names users bring from HF TrainingArguments / TRL / PEFT / torchtune that ftune spells
// differently; only used to suggest the ftune key, never accepted as-is (one name per knob).
struct Alias {
  std::string_view from, to;
};
constexpr Alias kKeyAliases[] = {
    {"lora_r", "lora.r"},
    {"rank", "lora.r"},
    {"lora_rank", "lora.r"},
    {"lora_alpha", "lora.alpha"},
    {"lora_dropout", "lora.dropout"},
    {"per_device_train_batch_size", "train.micro_batch_size"},
    {"batch_size", "train.micro_batch_size"},
    {"num_train_epochs", "train.num_epochs"},
    {"epochs", "train.num_epochs"},
    {"lr", "train.learning_rate"},
    {"lr_scheduler_type", "train.lr_scheduler"},
    {"warmup", "train.warmup_steps"},
    {"adam_eps", "train.adam_epsilon"},
    {"max_length", "data.max_seq_length"},
    {"seq_len", "data.max_seq_length"},
    {"torch_dtype", "model.dtype"},
    {"model_name_or_path", "model.path"},
    {"train_file", "data.train"},
    {"dataset", "data.train"},
    {"validation_file", "data.validation"},
    {"eval_file", "data.validation"},
    {"nproc_per_node", "distributed.nproc"},
    {"num_gpus", "distributed.gpus"},
};
constexpr Alias kSectionAliases[] = {
    {"training", "train"}, {"trainer", "train"},    {"dataset", "data"}, {"datasets", "data"},
    {"peft", "lora"},      {"adapter", "lora"},     {"log", "logging"},  {"logs", "logging"},
    {"dist", "distributed"}, {"ddp", "distributed"},
};

// Suggestion for an unknown key `leaf` inside a known section.
std::string suggest_key(std::string_view section, std::string_view leaf) {
  std::vector<std::string> same;
  for (const ConfigKey& k : config_schema())
    if (section_of(k.path) == section) same.emplace_back(leaf_of(k.path));
  std::string c = closest(leaf, same);
  if (!c.empty()) return fmt::format("{}.{}", section, c);
  if (leaf.size() >= 3)  // "seed" in lora -> lora.init_seed
    for (const std::string& name : same)
      if (name.find(leaf) != std::string::npos) return fmt::format("{}.{}", section, name);
  for (const Alias& a : kKeyAliases)
    if (a.from == leaf) return std::string(a.to);
  for (const ConfigKey& k : config_schema())  // the right key in the wrong section
    if (leaf_of(k.path) == leaf) return std::string(k.path);
  return "";
}

// Suggestion for an unknown top-level name: a section, or a key written outside its section.
std::string suggest_section(std::string_view name) {
  std::vector<std::string> sections(config_sections().begin(), config_sections().end());
  std::string c = closest(name, sections);
  if (!c.empty()) return c;
  for (const Alias& a : kSectionAliases)
    if (a.from == name) return std::string(a.to);
  for (const Alias& a : kKeyAliases)
    if (a.from == name) return std::string(a.to);
  for (const ConfigKey& k : config_schema())
    if (leaf_of(k.path) == name) return std::string(k.path);
  return "";
}

std::string did_you_mean(const std::string& suggestion) {
  return suggestion.empty() ? "" : fmt::format("; did you mean '{}'?", suggestion);
}

// ---- value formatting --------------------------------------------------------------------------

// Shortest text that reads back as the same double, always with a '.' or exponent so that it
// reads as a float in YAML.
std::string format_double(double v) {
  std::string s = fmt::format("{}", v);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

std::string format_number(double v) {  // bounds in messages and docs: 1 not 1.0
  return fmt::format("{}", v);
}

// YAML double-quoted scalar (escapes as in YAML 1.2 §5.7).
std::string quote(std::string_view s) {
  std::string out = "\"";
  for (unsigned char ch : s) {
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (ch < 0x20 || ch == 0x7f)
          out += fmt::format("\\x{:02x}", ch);
        else
          out += static_cast<char>(ch);
    }
  }
  return out + "\"";
}

// "[0, 1]", "[0, 1)" or ">= 0".
std::string range_text(const ConfigKey& k) {
  if (std::isinf(k.max)) return fmt::format(">= {}", format_number(k.min));
  return fmt::format("[{}, {}{}", format_number(k.min), format_number(k.max),
                     k.max_exclusive ? ")" : "]");
}

std::string range_problem(const ConfigKey& k, std::string_view got) {
  if (std::isinf(k.max)) return fmt::format("must be >= {}, got {}", format_number(k.min), got);
  return fmt::format("must be in {}, got {}", range_text(k), got);
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += items[i];
  }
  return out;
}

// What a YAML node is, for "expected X, got Y" messages.
std::string describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null: return "nothing";
    case YAML::NodeType::Scalar: return fmt::format("'{}'", n.Scalar());
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    default: return "an undefined value";
  }
}

// ---- typed parsing -----------------------------------------------------------------------------

// Parses `node` as the value of key `k` into cfg; returns "" or the problem.
std::string parse_value(const ConfigKey& k, const YAML::Node& node, TrainConfig& cfg) {
  ConfigFieldPtr field = k.field(cfg);
  const bool scalar = node.IsScalar();
  const std::string text = scalar ? node.Scalar() : "";
  switch (k.type) {
    case ConfigType::Bool: {
      std::string low = text;
      std::transform(low.begin(), low.end(), low.begin(), ::tolower);
      bool v;
      if (scalar && (low == "true" || low == "yes" || low == "on"))
        v = true;
      else if (scalar && (low == "false" || low == "no" || low == "off"))
        v = false;
      else
        return fmt::format("expected true or false, got {}", describe(node));
      *std::get<bool*>(field) = v;
      return "";
    }
    case ConfigType::Int: {
      if (!scalar) return fmt::format("expected an integer, got {}", describe(node));
      if (!k.choices.empty() && text == k.choices) {  // "auto", held as 0 (kAutoMicroBatch)
        *std::get<int64_t*>(field) = 0;
        return "";
      }
      std::string_view t = text;
      if (!t.empty() && t[0] == '+') t.remove_prefix(1);
      int64_t v = 0;
      auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
      if (t.empty() || ec != std::errc() || end != t.data() + t.size())
        return fmt::format("expected an integer, got '{}'", text);
      double dv = static_cast<double>(v);
      if (dv < k.min || dv > k.max || (k.max_exclusive && dv >= k.max))
        return range_problem(k, text) + (k.choices.empty() ? "" : fmt::format(" (or {})", k.choices));
      *std::get<int64_t*>(field) = v;
      return "";
    }
    case ConfigType::Float: {
      if (!scalar) return fmt::format("expected a number, got {}", describe(node));
      std::string_view t = text;
      if (!t.empty() && t[0] == '+') t.remove_prefix(1);
      double v = 0;
      auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
      if (t.empty() || ec != std::errc() || end != t.data() + t.size() || !std::isfinite(v))
        return fmt::format("expected a number, got '{}'", text);
      if (v < k.min || v > k.max || (k.max_exclusive && v >= k.max))
        return range_problem(k, text);
      *std::get<double*>(field) = v;
      return "";
    }
    case ConfigType::String:
    case ConfigType::Path: {
      if (node.IsNull()) {
        *std::get<std::string*>(field) = "";
        return "";
      }
      if (!scalar) return fmt::format("expected a string, got {}", describe(node));
      *std::get<std::string*>(field) = text;
      return "";
    }
    case ConfigType::Choice: {
      std::vector<std::string> choices = split_choices(k.choices);
      if (!scalar)
        return fmt::format("expected one of {}, got {}", join(choices, ", "), describe(node));
      if (std::find(choices.begin(), choices.end(), text) == choices.end())
        return fmt::format("invalid choice '{}'; expected one of: {}{}", text, join(choices, ", "),
                           did_you_mean(closest(text, choices)));
      *std::get<std::string*>(field) = text;
      return "";
    }
    case ConfigType::List: {
      std::vector<std::string> choices = split_choices(k.choices);
      std::vector<std::string> items;
      if (scalar && text == "all-linear") {
        items = choices;  // PEFT's target_modules="all-linear": every linear layer but lm_head
      } else if (node.IsSequence()) {
        for (const YAML::Node& item : node) {
          if (!item.IsScalar())
            return fmt::format("expected a list of names, got an item that is {}",
                               describe(item));
          const std::string& name = item.Scalar();
          if (std::find(choices.begin(), choices.end(), name) == choices.end())
            return fmt::format("invalid item '{}'; expected items from: {}{}", name,
                               join(choices, ", "), did_you_mean(closest(name, choices)));
          if (std::find(items.begin(), items.end(), name) != items.end())
            return fmt::format("item '{}' is listed twice", name);
          items.push_back(name);
        }
        if (items.empty()) return "must not be empty";
      } else {
        return fmt::format("expected a list (e.g. [{}]) or all-linear, got {}",
                           join(choices, ", "), describe(node));
      }
      *std::get<std::vector<std::string>*>(field) = items;
      return "";
    }
    case ConfigType::Strings: {
      if (!node.IsSequence())
        return fmt::format("expected a list of strings (e.g. [\"Hello\"]), got {}", describe(node));
      std::vector<std::string> items;
      for (const YAML::Node& item : node) {
        if (!item.IsScalar())
          return fmt::format("expected a list of strings, got an item that is {}", describe(item));
        if (item.Scalar().empty()) return fmt::format("item {} is empty", items.size());
        items.push_back(item.Scalar());
      }
      *std::get<std::vector<std::string>*>(field) = items;
      return "";
    }
    case ConfigType::Numbers: {
      std::vector<double> items;
      if (!node.IsSequence())
        return fmt::format("expected a list of numbers (e.g. [1, 2]), got {}", describe(node));
      for (const YAML::Node& item : node) {
        std::string_view t = item.IsScalar() ? std::string_view(item.Scalar()) : std::string_view();
        if (!t.empty() && t[0] == '+') t.remove_prefix(1);
        double v = 0;
        auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
        if (t.empty() || ec != std::errc() || end != t.data() + t.size() || !std::isfinite(v))
          return fmt::format("expected a list of numbers, got an item that is {}", describe(item));
        if (v < k.min || v > k.max)
          return fmt::format("item {}", range_problem(k, item.Scalar()));
        items.push_back(v);
      }
      *std::get<std::vector<double>*>(field) = items;
      return "";
    }
  }
  return "unhandled type";
}

// ---- the loader --------------------------------------------------------------------------------

class ConfigLoader {
 public:
  ConfigLoader() {
    for (const ConfigKey& k : config_schema()) {
      YAML::Node node = YAML::Load(std::string(k.default_value));
      std::string problem = parse_value(k, node, cfg_);
      FTUNE_CHECK(problem.empty(), "config schema: default of {} is invalid: {}", k.path,
                  problem);
    }
  }

  void load_file(const std::string& path) {
    FTUNE_CHECK(fs::is_regular_file(path), "config file not found: '{}'", path);
    std::ifstream f(path, std::ios::binary);
    std::stringstream text;
    text << f.rdbuf();
    FTUNE_CHECK(f.good() || f.eof(), "config file '{}' cannot be read", path);
    load_text(text.str(), path);
  }

  // `path` names the origin in messages (a file, or e.g. "<default job>").
  void load_text(const std::string& yaml_text, const std::string& path) {
    YAML::Node root;
    try {
      root = YAML::Load(yaml_text);
    } catch (const YAML::ParserException& e) {
      fail("{}:{}:{}: YAML syntax error: {}", path, e.mark.line + 1, e.mark.column + 1, e.msg);
    } catch (const YAML::Exception& e) {
      fail("config file '{}': {}", path, e.what());
    }
    auto where = [&](const YAML::Node& n) { return fmt::format("{}:{}", path, n.Mark().line + 1); };
    if (root.IsNull()) return;  // an empty file: all defaults
    if (!root.IsMap()) {
      problem(where(root), "(top level)",
              fmt::format("expected a mapping of sections ({}), got {}",
                          join({config_sections().begin(), config_sections().end()}, ", "),
                          describe(root)));
      return;
    }
    std::map<std::string, std::string> seen_sections;
    for (const auto& kv : root) {
      const YAML::Node& key = kv.first;
      const YAML::Node& value = kv.second;
      if (!key.IsScalar()) {
        problem(where(key), "(top level)", "expected a section name");
        continue;
      }
      const std::string section = key.Scalar();
      if (!is_section(section)) {
        problem(where(key), section, "unknown section" + did_you_mean(suggest_section(section)));
        continue;
      }
      if (auto it = seen_sections.find(section); it != seen_sections.end()) {
        problem(where(key), section, fmt::format("duplicate section (first at {})", it->second));
        continue;
      }
      seen_sections[section] = where(key);
      if (value.IsNull()) continue;  // "lora:" with nothing under it
      if (!value.IsMap()) {
        problem(where(key), section, fmt::format("expected a mapping of keys, got {}",
                                                 describe(value)));
        continue;
      }
      std::map<std::string, std::string> seen_keys;
      for (const auto& entry : value) {
        if (!entry.first.IsScalar()) {
          problem(where(entry.first), section, "expected a key name");
          continue;
        }
        const std::string leaf = entry.first.Scalar();
        const std::string path = fmt::format("{}.{}", section, leaf);
        const std::string loc = where(entry.first);
        if (auto it = seen_keys.find(leaf); it != seen_keys.end()) {
          problem(loc, path, fmt::format("duplicate key (first at {})", it->second));
          continue;
        }
        seen_keys[leaf] = loc;
        set(path, entry.second, loc);
      }
    }
  }

  void apply_override(const std::string& ov) {
    size_t eq = ov.find('=');
    if (eq == std::string::npos) {
      problem(ov, "(override)", "expected section.key=value");
      return;
    }
    std::string path = trim(ov.substr(0, eq));
    std::string text = ov.substr(eq + 1);
    size_t dot = path.find('.');
    if (dot == std::string::npos) {
      problem(ov, path, "expected section.key=value" + did_you_mean(suggest_section(path)));
      return;
    }
    std::string section = path.substr(0, dot);
    if (!is_section(section)) {
      problem(ov, path, "unknown section" + did_you_mean(suggest_section(section)));
      return;
    }
    // Text keys (paths, names) take the text verbatim, so "run #3" or "a: b" need no YAML
    // quoting on a command line; a fully quoted value is still read as YAML ("" = empty).
    const ConfigKey* k = find_key(path);
    const bool text_key = k && (k->type == ConfigType::String || k->type == ConfigType::Path);
    const bool quoted = text.size() >= 2 && (text.front() == '"' || text.front() == '\'') &&
                        text.back() == text.front();
    if (text_key && !quoted) {
      set(path, YAML::Node(text), ov);
      return;
    }
    YAML::Node node;
    try {
      node = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      problem(ov, path, fmt::format("cannot parse value '{}': {}", text, e.msg));
      return;
    }
    set(path, node, ov);
  }

  // Checks that need the final values: files that must exist, and keys that exclude each other.
  void check_final() {
    for (const ConfigKey& k : config_schema()) {
      if (k.type != ConfigType::Path) continue;
      const std::string& p = *std::get<std::string*>(k.field(cfg_));
      std::error_code ec;
      if (!p.empty() && !fs::exists(p, ec))
        problem(origin(k.path), std::string(k.path), fmt::format("file not found: '{}'", p));
    }
    const TrainSection& t = cfg_.train;
    if (trim(t.output_dir).empty())
      problem(origin("train.output_dir"), "train.output_dir",
              "must not be empty (the folder for the adapter, checkpoints and metrics)");
    if (t.warmup_steps > 0 && t.warmup_ratio > 0)
      problem(origin("train.warmup_ratio"), "train.warmup_ratio",
              fmt::format("set together with train.warmup_steps ({}); set only one",
                          origin("train.warmup_steps")));
    if (cfg_.model.fp8_base && cfg_.model.load_in_4bit)
      problem(origin("model.fp8_base"), "model.fp8_base",
              fmt::format("set together with model.load_in_4bit ({}); the base is either FP8 or "
                          "NF4, set only one", origin("model.load_in_4bit")));
    if (cfg_.model.fp8_base && cfg_.distributed.shard_base == "true")
      problem(origin("model.fp8_base"), "model.fp8_base",
              fmt::format("set together with distributed.shard_base: true ({}); a sharded base "
                          "is bf16/fp16 or NF4, turn one of them off",
                          origin("distributed.shard_base")));
    const DataConfig& d = cfg_.data;
    if (!d.validation.empty() && d.validation_split > 0)
      problem(origin("data.validation_split"), "data.validation_split",
              fmt::format("set together with data.validation ({}); set only one",
                          origin("data.validation")));
  }

  TrainConfig finish() {
    check_final();
    if (!problems_.empty()) throw Error(join(problems_, "\n"));
    resolve(cfg_);
    return cfg_;
  }

 private:
  static std::string trim(const std::string& s) {
    size_t b = s.find_first_not_of(" \t");
    size_t e = s.find_last_not_of(" \t");
    return b == std::string::npos ? "" : s.substr(b, e - b + 1);
  }

  static void resolve(TrainConfig& c) {
    if (c.model.tokenizer.empty()) c.model.tokenizer = c.model.path;
    if (c.data.cache_dir.empty()) c.data.cache_dir = (fs::path(c.train.output_dir) / ".cache").string();
    if (c.lora.init_seed == -1) c.lora.init_seed = c.train.seed;
  }

  void set(const std::string& path, const YAML::Node& value, const std::string& where) {
    const ConfigKey* k = find_key(path);
    if (!k) {
      std::string section(section_of(path));
      problem(where, path, "unknown key" + did_you_mean(suggest_key(section, leaf_of(path))));
      return;
    }
    std::string p = parse_value(*k, value, cfg_);
    if (!p.empty()) {
      problem(where, path, p);
      return;
    }
    origins_[path] = where;
  }

  std::string origin(std::string_view path) const {
    auto it = origins_.find(std::string(path));
    return it == origins_.end() ? "default" : it->second;
  }

  void problem(const std::string& where, const std::string& path, const std::string& what) {
    problems_.push_back(fmt::format("{}: {}: {}", where, path, what));
  }

  TrainConfig cfg_;
  std::map<std::string, std::string> origins_;  // key path -> "file:line" or override text
  std::vector<std::string> problems_;
};

std::string type_name(ConfigType t) {
  switch (t) {
    case ConfigType::Bool: return "bool";
    case ConfigType::Int: return "int";
    case ConfigType::Float: return "float";
    case ConfigType::String: return "string";
    case ConfigType::Path: return "path";
    case ConfigType::Choice: return "choice";
    case ConfigType::List: return "list";
    case ConfigType::Numbers: return "numbers";
    case ConfigType::Strings: return "strings";
  }
  return "?";
}

std::string value_text(const ConfigKey& k, const TrainConfig& cfg) {
  ConfigFieldPtr f = k.field(const_cast<TrainConfig&>(cfg));  // read only
  switch (k.type) {
    case ConfigType::Bool: return *std::get<bool*>(f) ? "true" : "false";
    case ConfigType::Int:
      if (!k.choices.empty() && *std::get<int64_t*>(f) == 0) return std::string(k.choices);
      return fmt::format("{}", *std::get<int64_t*>(f));
    case ConfigType::Float: return format_double(*std::get<double*>(f));
    case ConfigType::String:
    case ConfigType::Path: return quote(*std::get<std::string*>(f));
    case ConfigType::Choice: return *std::get<std::string*>(f);  // validated identifier
    case ConfigType::List: return "[" + join(*std::get<std::vector<std::string>*>(f), ", ") + "]";
    case ConfigType::Strings: {
      std::vector<std::string> items;
      for (const std::string& v : *std::get<std::vector<std::string>*>(f)) items.push_back(quote(v));
      return "[" + join(items, ", ") + "]";
    }
    case ConfigType::Numbers: {
      std::vector<std::string> items;
      for (double v : *std::get<std::vector<double>*>(f)) items.push_back(format_double(v));
      return "[" + join(items, ", ") + "]";
    }
  }
  return "";
}

}  // namespace

TrainConfig default_config() { return ConfigLoader().finish(); }

TrainConfig load_config_text(const std::string& yaml_text, const std::string& origin,
                             const std::vector<std::string>& overrides) {
  ConfigLoader loader;
  loader.load_text(yaml_text, origin);
  for (const std::string& ov : overrides) loader.apply_override(ov);
  return loader.finish();
}

TrainConfig load_config(const std::string& yaml_path, const std::vector<std::string>& overrides) {
  ConfigLoader loader;
  if (!yaml_path.empty()) loader.load_file(yaml_path);
  for (const std::string& ov : overrides) loader.apply_override(ov);
  return loader.finish();
}

std::string to_resolved_yaml(const TrainConfig& cfg) {
  std::string out =
      "# ftune resolved configuration: every key with its final value (docs/CONFIG.md).\n"
      "# Reload with: ftune train <this file> [section.key=value ...]\n";
  for (std::string_view section : config_sections()) {
    std::vector<std::pair<std::string, std::string_view>> lines;
    size_t width = 0;
    for (const ConfigKey& k : config_schema()) {
      if (section_of(k.path) != section) continue;
      lines.emplace_back(fmt::format("  {}: {}", leaf_of(k.path), value_text(k, cfg)), k.doc);
      // Align the comments, except after a line too long to be worth aligning to.
      if (lines.back().first.size() <= 40) width = std::max(width, lines.back().first.size());
    }
    out += fmt::format("{}:\n", section);
    for (const auto& [text, doc] : lines) out += fmt::format("{:<{}}  # {}\n", text, width, doc);
  }
  return out;
}

void write_resolved_config(const TrainConfig& cfg, const std::string& path) {
  const std::string text = to_resolved_yaml(cfg);
  fs::path target(path);
  if (target.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(target.parent_path(), ec);
    FTUNE_CHECK(!ec, "write_resolved_config: cannot create '{}': {}",
                target.parent_path().string(), ec.message());
  }
  // Same folder as the target, so that rename() is atomic: readers see the old file or the
  // complete new one, never a partial write.
  const std::string tmp = fmt::format("{}.tmp.{}", path, static_cast<long>(getpid()));
  FILE* f = std::fopen(tmp.c_str(), "wb");
  FTUNE_CHECK(f, "write_resolved_config: cannot open '{}' for writing", tmp);
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  ok = std::fflush(f) == 0 && ok;
  ok = fsync(fileno(f)) == 0 && ok;
  ok = std::fclose(f) == 0 && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    fail("write_resolved_config: failed to write '{}'", path);
  }
}

std::string config_reference_markdown(std::string_view section) {
  std::string out =
      "| key | type | default | allowed | meaning |\n"
      "| --- | --- | --- | --- | --- |\n";
  for (const ConfigKey& k : config_schema()) {
    if (section_of(k.path) != section) continue;
    std::string allowed;
    switch (k.type) {
      case ConfigType::Bool: allowed = "true, false"; break;
      case ConfigType::Int:
        allowed = range_text(k) + (k.choices.empty() ? "" : fmt::format(" or {}", k.choices));
        break;
      case ConfigType::Float: allowed = range_text(k); break;
      case ConfigType::String: allowed = "any text"; break;
      case ConfigType::Path: allowed = "empty or an existing path"; break;
      case ConfigType::Choice: allowed = join(split_choices(k.choices), ", "); break;
      case ConfigType::List:
        allowed = "list of: " + join(split_choices(k.choices), ", ") + "; or all-linear";
        break;
      case ConfigType::Numbers: allowed = "list of numbers " + range_text(k); break;
      case ConfigType::Strings: allowed = "list of non-empty strings"; break;
    }
    out += fmt::format("| `{}` | {} | `{}` | {} | {} |\n", k.path, type_name(k.type),
                       k.default_value, allowed, k.doc);
  }
  return out;
}

}  // namespace ftune
