#pragma once
// What the relay's and the sink's configs share: TOML parsing with toml++, ${VAR} expansion from the
// environment, secrets read from files, and problems reported with their line and column.
//
// A config is read with a ConfigReader (one per file) and walked with ConfigTable views:
//
//   ConfigReader reader(sourceName);
//   if (!reader.parse(text)) return {std::nullopt, reader.finish()};   // TOML syntax error
//   ConfigTable root = reader.root();
//   ConfigTable source = root.table("source");
//   source.require("conninfo", cfg.conninfo);
//   source.get("status_interval_ms", cfg.statusIntervalMs, 1);         // default kept when absent
//   ...
//   auto issues = reader.finish();   // adds every key nobody asked for as "unknown key"
//
// Every problem becomes a ConfigIssue; nothing throws and nothing stops at the first problem.

#include <toml++/toml.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/ConfigSummary.h"
#include "common/Log.h"
#include "common/Redaction.h"

namespace outbox {

// One problem in a config file: "relay.toml:12:3: source.slot: must not be empty".
struct ConfigIssue {
  std::string source;  // file name
  int line = 0;        // 1-based; 0 when the problem has no single place (e.g. a missing key)
  int column = 0;
  std::string message;
  std::string toString() const;
};

// One issue per line, for a start-up error or `--check-config` output.
std::string formatIssues(const std::vector<ConfigIssue>& issues);

template <typename Config>
struct ConfigLoadResult {
  std::optional<Config> config;  // set only when `issues` is empty
  std::vector<ConfigIssue> issues;
  bool ok() const { return config.has_value() && issues.empty(); }
};

// Expands ${VAR} from `lookup` (the environment by default); "$${" is a literal "${".
// An unset variable is an error: returns nullopt and names the variable in `error`.
std::optional<std::string> expandVariables(std::string_view text, std::string& error,
                                           const std::function<const char*(const char*)>& lookup = nullptr);

// Reads a secret from a file, trimming one trailing newline (as `kubectl create secret --from-file` keeps it).
std::optional<std::string> readSecretFile(const std::string& path, std::string& error);

// Reads a whole config file; on failure returns nullopt with `error` naming the path and the reason.
std::optional<std::string> readConfigFile(const std::string& path, std::string& error);

// Reads `path` and hands its text to `parse(text, path)`; an unreadable file is one issue naming the path.
template <typename Config, typename Parse>
ConfigLoadResult<Config> loadConfigFile(const std::string& path, Parse&& parse) {
  std::string error;
  std::optional<std::string> text = readConfigFile(path, error);
  if (!text) return ConfigLoadResult<Config>{std::nullopt, {ConfigIssue{path, 0, 0, error}}};
  return parse(*text, path);
}

// --- Walking a TOML document ------------------------------------------------------------------------------------

class ConfigReader;

// How ConfigTable::entries() treats values of a free-form table.
enum class EntryValues {
  Strings,  // only strings are accepted (e.g. header name -> column)
  Scalars,  // strings, integers, floats and booleans, turned into text (e.g. librdkafka properties)
};

// The integer types ConfigTable::get reads (instantiated in ConfigSupport.cpp).
template <typename T>
concept ConfigInteger = std::is_same_v<T, int> || std::is_same_v<T, int64_t> || std::is_same_v<T, uint64_t>;

// A view of one TOML table inside a ConfigReader, named by its dotted path ("kafka.properties", "outbox[0]").
// Reading a key marks it as known; ConfigReader::finish() reports every other key as unknown. A view of a table
// that is absent from the file reads nothing (every default stays) and reports nothing but missing required keys.
// Views are cheap to copy and refer to their reader, which must outlive them.
class ConfigTable {
 public:
  const std::string& path() const { return path_; }
  // Whether this table exists in the file.
  bool present() const { return table_ != nullptr; }
  // Whether `key` is set (does not mark it as known).
  bool has(std::string_view key) const;
  // "source.slot"; keys that are not bare are quoted: kafka.properties."compression.type".
  std::string keyPath(std::string_view key) const;
  // Where `key` is set (its value), or {0, 0} when it is not.
  std::pair<int, int> position(std::string_view key) const;

  // Typed reads. When the key is absent, `out` keeps its default and the result is false. When the value has the
  // wrong type or is out of range, an issue is recorded at the value, `out` is unchanged and the result is false.
  // Strings have ${VAR} expanded.
  bool get(std::string_view key, std::string& out);
  bool get(std::string_view key, std::optional<std::string>& out);
  bool get(std::string_view key, bool& out);
  // An integer in [min, max]; a value that does not fit the type is out of range too.
  template <ConfigInteger Int>
  bool get(std::string_view key, Int& out, std::type_identity_t<Int> min = std::numeric_limits<Int>::min(),
           std::type_identity_t<Int> max = std::numeric_limits<Int>::max());
  bool get(std::string_view key, double& out);                    // integers are accepted too
  bool get(std::string_view key, std::vector<std::string>& out);  // an array of strings

  // A string that must be set and non-empty; records "<path>: is required ..." otherwise (at the table's header
  // when the table is in the file, without a place when it is not).
  bool require(std::string_view key, std::string& out);

  // Reads `key` as a file path into `path` and the file's content (see readSecretFile) into `secret`.
  // An unreadable or empty file is an issue naming the path.
  bool getSecretFile(std::string_view key, std::optional<std::string>& path, std::string& secret);

  // A sub-table. Absent: a view with present() == false. Not a table: an issue, and an absent view.
  ConfigTable table(std::string_view key);
  // An array of tables ([[key]]). Absent: empty. Anything else (e.g. a single [key]): an issue.
  std::vector<ConfigTable> tables(std::string_view key);
  // Every key of this free-form table with its value as text (${VAR} expanded), in file order; all its keys count
  // as known. Values of other types are issues and are left out.
  std::vector<std::pair<std::string, std::string>> entries(EntryValues kind = EntryValues::Strings);

  // Records "<path>.<key>: <message>" at the key's value; when the key is not set (a default is wrong), at this
  // table's header, or without a place when the table is absent too.
  void invalid(std::string_view key, std::string_view message);
  // Records "<path>: <message>" at this table's header (or without a place when it is absent).
  void invalidTable(std::string_view message);

 private:
  friend class ConfigReader;
  ConfigTable(ConfigReader* reader, const toml::table* table, std::string path);
  const toml::node* lookup(std::string_view key);  // marks `key` as known
  // lookup(), and nullptr with a wrong-type issue when the value is not of `type`.
  const toml::node* typed(std::string_view key, toml::node_type type, std::string_view expected);
  std::pair<int, int> headerPosition() const;  // {0, 0} for the root or an absent table
  void wrongType(std::string_view key, const toml::node& node, std::string_view expected);
  std::optional<std::string> expandAt(std::string_view key, const toml::node& node, std::string_view text);

  ConfigReader* reader_;
  const toml::table* table_;
  std::string path_;
};

// One config file: parses it, hands out ConfigTable views, and collects every issue.
class ConfigReader {
 public:
  using Lookup = std::function<const char*(const char*)>;

  // `sourceName` prefixes every issue (normally the file path). `lookup` resolves ${VAR} (default: getenv).
  explicit ConfigReader(std::string sourceName, Lookup lookup = nullptr);
  ConfigReader(const ConfigReader&) = delete;
  ConfigReader& operator=(const ConfigReader&) = delete;

  // Parses TOML text. A syntax error becomes an issue at toml++'s line and column, root() is then empty, and the
  // result is false (the caller should stop and return finish()).
  bool parse(std::string_view text);
  ConfigTable root();

  void addIssue(int line, int column, std::string message);
  void addIssue(const toml::source_position& where, std::string message);
  bool hasIssues() const { return !issues_.empty(); }
  const std::vector<ConfigIssue>& issues() const { return issues_; }
  const std::string& sourceName() const { return source_; }

  // Expands ${VAR} in a value read at `where`; an unset variable is an issue naming `path` and the variable.
  std::optional<std::string> expand(std::string_view text, std::string_view path, const toml::source_position& where);

  // Adds an "unknown key" issue for every key of every table opened through a view that no one read, then
  // returns all issues in file order (issues without a place last).
  std::vector<ConfigIssue> finish();

 private:
  friend class ConfigTable;
  struct OpenedTable {
    std::string path;
    std::vector<std::string> knownKeys;
    bool freeForm = false;  // read with entries(): every key is known
  };
  void opened(const toml::table* table, const std::string& path);

  std::string source_;
  Lookup lookup_;
  toml::table root_;
  std::map<const toml::table*, OpenedTable> opened_;
  std::vector<const toml::table*> openOrder_;
  std::vector<ConfigIssue> issues_;
};

// Ends a parse: the config when nothing was wrong, else every issue (see ConfigReader::finish).
template <typename Config>
ConfigLoadResult<Config> finishConfig(ConfigReader& reader, Config&& config) {
  std::vector<ConfigIssue> issues = reader.finish();
  if (!issues.empty()) return {std::nullopt, std::move(issues)};
  return {std::forward<Config>(config), {}};
}

// The [log] table both binaries share: level (debug|info|warn|error) and format (plain|json).
void readLogSection(ConfigTable root, log::Level& level, log::Format& format);

// [kafka.secret_files] (librdkafka property -> file holding its value), read into `files` and `values`.
// A property also set in `properties`, an unreadable or empty file is an issue; `reader` names the program.
void readKafkaSecretFiles(ConfigTable secretFiles, const ConfigTable& properties, const char* reader,
                          std::vector<std::pair<std::string, std::string>>& files,
                          std::vector<std::pair<std::string, std::string>>& values);

}  // namespace outbox
