#pragma once
// Leveled logging to stderr, plain for terminals or JSON lines for log shippers.
// One process-wide logger: configured once at start-up, then used from the event loop.

#include <fmt/core.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace outbox::log {

enum class Level { Debug = 0, Info = 1, Warn = 2, Error = 3 };
enum class Format { Plain, Json };

void configure(Level level, Format format);
bool parseLevel(std::string_view text, Level& out);
bool parseFormat(std::string_view text, Format& out);
const char* levelName(Level level);     // "debug", "info", "warn", "error"
const char* formatName(Format format);  // "plain", "json"
bool enabled(Level level);

// Writes one record. `fields` are extra key/values (JSON fields, or key=value in plain format).
void write(Level level, std::string_view message, const std::vector<std::pair<std::string, std::string>>& fields = {});

template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::Debug)) write(Level::Debug, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::Info)) write(Level::Info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::Warn)) write(Level::Warn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::Error)) write(Level::Error, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace outbox::log
