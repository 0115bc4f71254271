#include "common/ConfigSupport.h"

#include <fmt/format.h>
#include <fmt/ostream.h>
#include <libpq-fe.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <tuple>

namespace outbox {

namespace {

bool isVariableNameChar(char c, bool first) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || (!first && c >= '0' && c <= '9');
}

// Config files and secret files alike. toml::parse_file() would do for the former, but it does not say why a file
// cannot be read ("No such file or directory", "Permission denied").
std::optional<std::string> readWholeFile(const std::string& path, std::string& error) {
  std::FILE* file = std::fopen(path.c_str(), "rbe");
  if (file == nullptr) {
    error = fmt::format("cannot open \"{}\": {}", path, std::strerror(errno));
    return std::nullopt;
  }
  std::string content;
  char buf[8192];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, file)) > 0;) content.append(buf, n);
  bool failed = std::ferror(file) != 0;
  int readErrno = errno;  // EISDIR for a directory, which opens fine
  std::fclose(file);
  if (!failed) return content;
  error = fmt::format("cannot read \"{}\": {}", path, std::strerror(readErrno));
  return std::nullopt;
}

// toml++'s name of the node's type, with an article: "an integer", "a floating-point".
std::string typeName(const toml::node& node) {
  std::string name = fmt::format("{}", fmt::streamed(node.type()));
  return (name.find_first_of("aeiou") == 0 ? "an " : "a ") + name;
}

std::pair<int, int> positionOf(const toml::source_position& p) {
  return {static_cast<int>(p.line), static_cast<int>(p.column)};
}

std::string joinPath(const std::string& path, std::string_view key) {
  return path.empty() ? tomlKey(key) : path + "." + tomlKey(key);
}

size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t substitution = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, substitution});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// What [min, max] asks of a value below (or above) it. A bound left at the type's limit is not mentioned.
template <typename Int>
std::string rangeMessage(Int min, Int max, bool below) {
  using Limits = std::numeric_limits<Int>;
  if (min != Limits::min() && max != Limits::max()) return fmt::format("must be between {} and {}", min, max);
  if (!below) return fmt::format("must be at most {}", max);
  if (min == 1) return "must be greater than 0";
  if (min == 0) return "must not be negative";
  return fmt::format("must be at least {}", min);
}

}  // namespace

// --- ConfigIssue -----------------------------------------------------------------------------------------------

std::string ConfigIssue::toString() const {
  if (line <= 0) return fmt::format("{}: {}", source, message);
  return fmt::format("{}:{}:{}: {}", source, line, column, message);
}

std::string formatIssues(const std::vector<ConfigIssue>& issues) {
  std::string out;
  for (const ConfigIssue& issue : issues) {
    out += issue.toString();
    out += '\n';
  }
  return out;
}

// --- Variables, secrets, files ---------------------------------------------------------------------------------

std::optional<std::string> expandVariables(std::string_view text, std::string& error,
                                           const std::function<const char*(const char*)>& lookup) {
  std::string out;
  out.reserve(text.size());
  std::vector<std::string> unset;
  size_t i = 0;
  while (i < text.size()) {
    if (text.compare(i, 3, "$${") == 0) {
      out += "${";
      i += 3;
      continue;
    }
    if (text.compare(i, 2, "${") != 0) {
      out += text[i++];
      continue;
    }
    size_t close = text.find('}', i + 2);
    if (close == std::string_view::npos) {
      error =
          fmt::format("\"${{\" at offset {} has no closing \"}}\"; write ${{NAME}}, or $${{ for a literal \"${{\"", i);
      return std::nullopt;
    }
    std::string name(text.substr(i + 2, close - i - 2));
    bool valid = !name.empty();
    for (size_t k = 0; k < name.size() && valid; ++k) valid = isVariableNameChar(name[k], k == 0);
    if (!valid) {
      error = fmt::format(
          "\"${{{}}}\" is not a valid variable reference (names are letters, digits and '_', "
          "not starting with a digit); write $${{ for a literal \"${{\"",
          name);
      return std::nullopt;
    }
    const char* value = lookup ? lookup(name.c_str()) : std::getenv(name.c_str());
    if (value == nullptr) {
      if (std::find(unset.begin(), unset.end(), name) == unset.end()) unset.push_back(name);
    } else {
      out += value;
    }
    i = close + 1;
  }
  if (!unset.empty()) {
    error = unset.size() == 1 ? fmt::format("environment variable {} is not set", unset[0])
                              : fmt::format("environment variables {} are not set", fmt::join(unset, ", "));
    return std::nullopt;
  }
  return out;
}

std::optional<std::string> readSecretFile(const std::string& path, std::string& error) {
  std::optional<std::string> content = readWholeFile(path, error);
  if (!content) return std::nullopt;
  if (!content->empty() && content->back() == '\n') {
    content->pop_back();
    if (!content->empty() && content->back() == '\r') content->pop_back();
  }
  return content;
}

std::optional<std::string> readConfigFile(const std::string& path, std::string& error) {
  std::optional<std::string> content = readWholeFile(path, error);
  if (!content) error += "; check the path given for the config file";
  return content;
}

namespace {

// The secret in `file` for `key`; an unreadable or empty file is an issue there, saying to fix it or remove `what`.
std::optional<std::string> readSecretAt(ConfigTable& table, std::string_view key, const std::string& file,
                                        std::string_view readableBy, std::string_view what) {
  std::string error;
  std::optional<std::string> secret = readSecretFile(file, error);
  if (!secret) {
    table.invalid(key, fmt::format("{}; create the file (readable by {}) or remove {}", error, readableBy, what));
  } else if (secret->empty()) {
    table.invalid(key, fmt::format("\"{}\" is empty; put the secret in it or remove {}", file, what));
    secret.reset();
  }
  return secret;
}

}  // namespace

// --- ConfigTable -----------------------------------------------------------------------------------------------

ConfigTable::ConfigTable(ConfigReader* reader, const toml::table* table, std::string path)
    : reader_(reader), table_(table), path_(std::move(path)) {
  if (table_ != nullptr) reader_->opened(table_, path_);
}

bool ConfigTable::has(std::string_view key) const { return table_ != nullptr && table_->get(key) != nullptr; }

std::string ConfigTable::keyPath(std::string_view key) const { return joinPath(path_, key); }

std::pair<int, int> ConfigTable::position(std::string_view key) const {
  const toml::node* node = table_ == nullptr ? nullptr : table_->get(key);
  if (node == nullptr) return {0, 0};
  return positionOf(node->source().begin);
}

const toml::node* ConfigTable::lookup(std::string_view key) {
  if (table_ == nullptr) return nullptr;
  auto& known = reader_->opened_[table_].knownKeys;
  if (std::find(known.begin(), known.end(), key) == known.end()) known.emplace_back(key);
  return table_->get(key);
}

std::pair<int, int> ConfigTable::headerPosition() const {
  return table_ == nullptr || path_.empty() ? std::pair<int, int>{0, 0} : positionOf(table_->source().begin);
}

void ConfigTable::invalid(std::string_view key, std::string_view message) {
  auto [line, column] = has(key) ? position(key) : headerPosition();
  reader_->addIssue(line, column, fmt::format("{}: {}", keyPath(key), message));
}

void ConfigTable::invalidTable(std::string_view message) {
  auto [line, column] = headerPosition();
  reader_->addIssue(line, column, fmt::format("{}: {}", path_.empty() ? "(top level)" : path_, message));
}

void ConfigTable::wrongType(std::string_view key, const toml::node& node, std::string_view expected) {
  std::string hint;
  if (node.is_string() && expected != "a string" && expected != "a table")
    hint = " (write it without quotes)";
  else if (expected == "a string" && !node.is_table() && !node.is_array())
    hint = " (put it in double quotes)";
  invalid(key, fmt::format("must be {}, got {}{}", expected, typeName(node), hint));
}

const toml::node* ConfigTable::typed(std::string_view key, toml::node_type type, std::string_view expected) {
  const toml::node* node = lookup(key);
  if (node == nullptr || node->type() == type) return node;
  wrongType(key, *node, expected);
  return nullptr;
}

std::optional<std::string> ConfigTable::expandAt(std::string_view key, const toml::node& node, std::string_view text) {
  return reader_->expand(text, keyPath(key), node.source().begin);
}

bool ConfigTable::get(std::string_view key, std::string& out) {
  const toml::node* node = typed(key, toml::node_type::string, "a string");
  std::optional<std::string> value = node ? expandAt(key, *node, node->as_string()->get()) : std::nullopt;
  if (value) out = std::move(*value);
  return value.has_value();
}

bool ConfigTable::get(std::string_view key, std::optional<std::string>& out) {
  std::string value;
  if (!get(key, value)) return false;
  out = std::move(value);
  return true;
}

bool ConfigTable::get(std::string_view key, bool& out) {
  const toml::node* node = typed(key, toml::node_type::boolean, "true or false");
  if (node != nullptr) out = node->as_boolean()->get();
  return node != nullptr;
}

template <ConfigInteger Int>
bool ConfigTable::get(std::string_view key, Int& out, std::type_identity_t<Int> min, std::type_identity_t<Int> max) {
  const toml::node* node = typed(key, toml::node_type::integer, "an integer");
  if (node == nullptr) return false;
  std::optional<Int> value = node->value<Int>();  // nullopt when it does not fit Int
  if (value && *value >= min && *value <= max) {
    out = *value;
    return true;
  }
  int64_t given = node->as_integer()->get();
  invalid(key, fmt::format("{}, got {}", rangeMessage(min, max, value ? *value < min : given < 0), given));
  return false;
}
template bool ConfigTable::get<int>(std::string_view, int&, int, int);
template bool ConfigTable::get<int64_t>(std::string_view, int64_t&, int64_t, int64_t);
template bool ConfigTable::get<uint64_t>(std::string_view, uint64_t&, uint64_t, uint64_t);

bool ConfigTable::get(std::string_view key, double& out) {
  const toml::node* node = lookup(key);
  if (node == nullptr) return false;
  if (!node->is_number()) {
    wrongType(key, *node, "a number");
    return false;
  }
  out = node->is_integer() ? static_cast<double>(node->as_integer()->get()) : node->as_floating_point()->get();
  return true;
}

bool ConfigTable::get(std::string_view key, std::vector<std::string>& out) {
  const toml::node* node = typed(key, toml::node_type::array, "an array of strings");
  if (node == nullptr) return false;
  std::vector<std::string> values;
  bool ok = true;
  const toml::array& array = *node->as_array();
  for (size_t i = 0; i < array.size(); ++i) {
    const toml::node& element = array[i];
    std::string elementPath = fmt::format("{}[{}]", keyPath(key), i);
    if (!element.is_string()) {
      auto [line, column] = positionOf(element.source().begin);
      reader_->addIssue(line, column, fmt::format("{}: must be a string, got {}", elementPath, typeName(element)));
      ok = false;
      continue;
    }
    std::optional<std::string> value = reader_->expand(element.as_string()->get(), elementPath, element.source().begin);
    if (!value) {
      ok = false;
      continue;
    }
    values.push_back(std::move(*value));
  }
  if (!ok) return false;
  out = std::move(values);
  return true;
}

bool ConfigTable::require(std::string_view key, std::string& out) {
  if (!has(key)) {
    lookup(key);
    // At the table's header when there is one, so that "which [[outbox]]?" has an answer.
    auto [line, column] = headerPosition();
    std::string where = path_.empty()                          ? "at the top level"
                        : path_.find('[') != std::string::npos ? "in this table"
                                                               : fmt::format("in [{}]", path_);
    reader_->addIssue(line, column, fmt::format("{}: is required; set it {}", keyPath(key), where));
    return false;
  }
  std::string value;
  if (!get(key, value)) return false;
  if (value.empty()) {
    invalid(key, "must not be empty");
    return false;
  }
  out = std::move(value);
  return true;
}

bool ConfigTable::getSecretFile(std::string_view key, std::optional<std::string>& path, std::string& secret) {
  std::string file;
  if (!get(key, file)) return false;
  if (file.empty()) {
    invalid(key,
            fmt::format("must not be empty; give the path of a file holding the secret, or remove {}", tomlKey(key)));
    return false;
  }
  std::optional<std::string> content = readSecretAt(*this, key, file, "this process", tomlKey(key));
  if (!content) return false;
  path = std::move(file);
  secret = std::move(*content);
  return true;
}

ConfigTable ConfigTable::table(std::string_view key) {
  const toml::node* node = typed(key, toml::node_type::table, "a table");
  return ConfigTable(reader_, node == nullptr ? nullptr : node->as_table(), keyPath(key));
}

std::vector<ConfigTable> ConfigTable::tables(std::string_view key) {
  std::vector<ConfigTable> result;
  const toml::node* node = lookup(key);
  if (node == nullptr) return result;
  if (!node->is_array()) {
    std::string k = tomlKey(key);
    invalid(key, fmt::format("must be an array of tables, got {}; write [[{}]] above each entry", typeName(*node),
                             path_.empty() ? k : path_ + "." + k));
    return result;
  }
  const toml::array& array = *node->as_array();
  for (size_t i = 0; i < array.size(); ++i) {
    const toml::node& element = array[i];
    std::string elementPath = fmt::format("{}[{}]", keyPath(key), i);
    if (!element.is_table()) {
      auto [line, column] = positionOf(element.source().begin);
      reader_->addIssue(line, column, fmt::format("{}: must be a table, got {}", elementPath, typeName(element)));
      continue;
    }
    result.push_back(ConfigTable(reader_, element.as_table(), elementPath));
  }
  return result;
}

std::vector<std::pair<std::string, std::string>> ConfigTable::entries(EntryValues kind) {
  std::vector<std::pair<std::string, std::string>> result;
  if (table_ == nullptr) return result;
  reader_->opened_[table_].freeForm = true;
  std::vector<std::pair<const toml::key*, const toml::node*>> ordered;
  for (auto&& [k, v] : *table_) ordered.emplace_back(&k, &v);
  std::stable_sort(ordered.begin(), ordered.end(), [](const auto& a, const auto& b) {
    return positionOf(a.second->source().begin) < positionOf(b.second->source().begin);
  });
  for (auto [k, node] : ordered) {
    std::string_view name = k->str();
    if (node->is_string()) {
      std::optional<std::string> value = expandAt(name, *node, node->as_string()->get());
      if (value) result.emplace_back(name, std::move(*value));
    } else if (kind == EntryValues::Scalars && node->is_integer()) {
      result.emplace_back(name, std::to_string(node->as_integer()->get()));
    } else if (kind == EntryValues::Scalars && node->is_boolean()) {
      result.emplace_back(name, node->as_boolean()->get() ? "true" : "false");
    } else if (kind == EntryValues::Scalars && node->is_floating_point()) {
      result.emplace_back(name, fmt::format("{}", node->as_floating_point()->get()));
    } else if (node->is_table() && !node->as_table()->empty()) {
      // `compression.type = "lz4"` is TOML for a table "compression" holding "type": the name needs quotes.
      std::string_view inner = node->as_table()->begin()->first.str();
      invalid(name,
              fmt::format("must be {}, got a table; to set a name that holds dots, quote it: \"{}.{}\" = ...",
                          kind == EntryValues::Scalars ? "a string, number or boolean" : "a string", name, inner));
    } else {
      wrongType(name, *node, kind == EntryValues::Scalars ? "a string, number or boolean" : "a string");
    }
  }
  return result;
}

// --- ConfigReader ----------------------------------------------------------------------------------------------

ConfigReader::ConfigReader(std::string sourceName, Lookup lookup)
    : source_(std::move(sourceName)), lookup_(std::move(lookup)) {}

bool ConfigReader::parse(std::string_view text) {
  static_assert(TOML_EXCEPTIONS, "toml++ reports syntax errors by throwing toml::parse_error");
  try {
    root_ = toml::parse(text, source_);
    return true;
  } catch (const toml::parse_error& e) {
    addIssue(e.source().begin, fmt::format("TOML syntax error: {}", e.description()));
    root_ = toml::table{};
    return false;
  }
}

ConfigTable ConfigReader::root() { return ConfigTable(this, &root_, ""); }

void ConfigReader::addIssue(int line, int column, std::string message) {
  issues_.push_back(ConfigIssue{source_, line, column, std::move(message)});
}

void ConfigReader::addIssue(const toml::source_position& where, std::string message) {
  auto [line, column] = positionOf(where);
  addIssue(line, column, std::move(message));
}

std::optional<std::string> ConfigReader::expand(std::string_view text, std::string_view path,
                                                const toml::source_position& where) {
  std::string error;
  std::optional<std::string> value = expandVariables(text, error, lookup_);
  if (!value) {
    if (error.rfind("environment variable", 0) == 0) {
      error += "; export it before starting, or write $${ for a literal \"${\"";
    }
    addIssue(where, fmt::format("{}: {}", path, error));
  }
  return value;
}

void ConfigReader::opened(const toml::table* table, const std::string& path) {
  auto [it, inserted] = opened_.try_emplace(table);
  if (inserted) {
    it->second.path = path;
    openOrder_.push_back(table);
  }
}

std::vector<ConfigIssue> ConfigReader::finish() {
  for (const toml::table* table : openOrder_) {
    const OpenedTable& state = opened_[table];
    if (state.freeForm) continue;
    for (auto&& [k, node] : *table) {
      std::string_view name = k.str();
      if (std::find(state.knownKeys.begin(), state.knownKeys.end(), name) != state.knownKeys.end()) continue;
      std::string hint;
      const std::string* closest = nullptr;
      size_t best = 3;  // suggest only near misses: typos, or a known key with a part missing or added
      for (const std::string& known : state.knownKeys) {
        size_t d = editDistance(name, known);
        bool prefix =
            std::min(name.size(), known.size()) >= 4 && (known.rfind(name, 0) == 0 || name.rfind(known, 0) == 0);
        if (prefix && d >= best) d = best - 1;
        if (d < best) {
          best = d;
          closest = &known;
        }
      }
      if (closest != nullptr) {
        hint = fmt::format("did you mean {}?", tomlKey(*closest));
      } else if (state.knownKeys.empty()) {
        hint = "remove it";
      } else {
        std::vector<std::string> keys;
        for (const std::string& known : state.knownKeys) keys.push_back(tomlKey(known));
        hint = fmt::format("remove it, or use one of: {}", fmt::join(keys, ", "));
      }
      toml::source_position where = k.source().begin;
      if (where.line == 0) where = node.source().begin;
      addIssue(where, fmt::format("{}: unknown key; {}", joinPath(state.path, name), hint));
    }
  }
  opened_.clear();
  openOrder_.clear();
  std::stable_sort(issues_.begin(), issues_.end(), [](const ConfigIssue& a, const ConfigIssue& b) {
    auto rank = [](const ConfigIssue& i) { return std::tuple(i.line == 0, i.line, i.column); };
    return rank(a) < rank(b);
  });
  return issues_;
}

void readLogSection(ConfigTable root, log::Level& level, log::Format& format) {
  ConfigTable t = root.table("log");
  std::string text;
  if (t.get("level", text) && !log::parseLevel(text, level)) {
    t.invalid("level", fmt::format("must be one of debug, info, warn, error, got {}", tomlQuote(text)));
  }
  if (t.get("format", text) && !log::parseFormat(text, format)) {
    t.invalid("format", fmt::format("must be plain or json, got {}", tomlQuote(text)));
  }
}

void readKafkaSecretFiles(ConfigTable secretFiles, const ConfigTable& properties, const char* reader,
                          std::vector<std::pair<std::string, std::string>>& files,
                          std::vector<std::pair<std::string, std::string>>& values) {
  for (auto& [name, path] : secretFiles.entries(EntryValues::Strings)) {
    if (properties.has(name)) {
      secretFiles.invalid(name, "is also set in [kafka.properties]; keep only one of them");
      continue;
    }
    std::optional<std::string> secret =
        readSecretAt(secretFiles, name, path, fmt::format("the {}", reader), "this entry");
    if (!secret) continue;
    files.emplace_back(name, path);
    values.emplace_back(name, std::move(*secret));
  }
}

}  // namespace outbox
