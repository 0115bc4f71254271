#pragma once
// The effective configuration as TOML for the start-up log (built as a toml::table, printed by toml++'s
// formatter), and TOML quoting for config messages.

#include <toml++/toml.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace outbox {

// `node` as TOML text (toml++'s formatter), strings in double quotes: "a \"b\"".
std::string formatToml(const toml::node& node);

// `text` as a TOML string, quotes included, for messages that quote a value.
std::string tomlQuote(std::string_view text);

// A key as written in TOML: bare when it can be (slot), quoted otherwise ("compression.type").
std::string tomlKey(std::string_view key);

toml::table tomlTable(const std::vector<std::pair<std::string, std::string>>& pairs);
toml::array tomlArray(const std::vector<std::string>& values);

// Adds "properties" (secret values as kRedacted, see isSecretKafkaProperty) and "secret_files" (the paths) to a
// summary's [kafka] table, each when not empty.
// Adds password_file (the path) and password = "<redacted>" to a summary's table when a password file is set.
void addPasswordFileSummary(toml::table& table, const std::optional<std::string>& passwordFile);

void addKafkaSummary(toml::table& kafka, const std::vector<std::pair<std::string, std::string>>& properties,
                     const std::vector<std::pair<std::string, std::string>>& secretFiles);

}  // namespace outbox
