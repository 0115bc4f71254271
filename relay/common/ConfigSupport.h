#pragma once
// What the relay's and the sink's configs share: TOML parsing with toml++, ${VAR} expansion from the
// environment, secrets read from files, and problems reported with their line and column.

#include <toml++/toml.h>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace outbox {

// One problem in a config file: "relay.toml:12:3: source.slot: must not be empty".
struct ConfigIssue {
  std::string source;  // file name
  int line = 0;        // 1-based; 0 when the problem has no single place (e.g. a missing key)
  int column = 0;
  std::string message;
  std::string toString() const;
};

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

}  // namespace outbox
