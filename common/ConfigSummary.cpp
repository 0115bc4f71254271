#include "common/ConfigSummary.h"

#include <algorithm>
#include <sstream>

#include "common/Redaction.h"

namespace outbox {

std::string formatToml(const toml::node& node) {
  // Without literal ('...') or multi-line strings: values read the same as in messages, and a secret that slipped
  // through stays on its line.
  constexpr auto flags = toml::format_flags::allow_unicode_strings;
  std::ostringstream out;
  out << toml::toml_formatter(node, flags);
  return out.str();
}

std::string tomlQuote(std::string_view text) { return formatToml(toml::value<std::string>(std::string(text))); }

std::string tomlKey(std::string_view key) {
  bool bare = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
  return bare ? std::string(key) : tomlQuote(key);
}

toml::table tomlTable(const std::vector<std::pair<std::string, std::string>>& pairs) {
  toml::table table;
  for (auto& [name, value] : pairs) table.insert(name, value);
  return table;
}

toml::array tomlArray(const std::vector<std::string>& values) {
  toml::array array;
  for (const std::string& value : values) array.push_back(value);
  return array;
}

void addPasswordFileSummary(toml::table& table, const std::optional<std::string>& passwordFile) {
  if (!passwordFile) return;
  table.insert("password_file", *passwordFile);
  table.insert("password", kRedacted);
}

void addKafkaSummary(toml::table& kafka, const std::vector<std::pair<std::string, std::string>>& properties,
                     const std::vector<std::pair<std::string, std::string>>& secretFiles) {
  toml::table shown;
  for (auto& [name, value] : properties) shown.insert(name, isSecretKafkaProperty(name) ? kRedacted : value);
  if (!shown.empty()) kafka.insert("properties", std::move(shown));
  // The paths are not secret; the values read from them are never shown.
  if (!secretFiles.empty()) kafka.insert("secret_files", tomlTable(secretFiles));
}

}  // namespace outbox
