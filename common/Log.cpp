#include "common/Log.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

namespace outbox::log {

namespace {
Level g_level = Level::Info;
Format g_format = Format::Plain;

std::string timestamp() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03d}Z", buf, static_cast<int>(millis));
}
}  // namespace

const char* levelName(Level level) {
  switch (level) {
    case Level::Debug:
      return "debug";
    case Level::Info:
      return "info";
    case Level::Warn:
      return "warn";
    case Level::Error:
      return "error";
  }
  return "info";
}

const char* formatName(Format format) { return format == Format::Json ? "json" : "plain"; }

void configure(Level level, Format format) {
  g_level = level;
  g_format = format;
}

bool parseLevel(std::string_view text, Level& out) {
  for (Level l : {Level::Debug, Level::Info, Level::Warn, Level::Error}) {
    if (text == levelName(l)) {
      out = l;
      return true;
    }
  }
  return false;
}

bool parseFormat(std::string_view text, Format& out) {
  if (text == "plain")
    out = Format::Plain;
  else if (text == "json")
    out = Format::Json;
  else
    return false;
  return true;
}

bool enabled(Level level) { return level >= g_level; }

void write(Level level, std::string_view message, const std::vector<std::pair<std::string, std::string>>& fields) {
  if (!enabled(level)) return;
  std::string line;
  if (g_format == Format::Json) {
    nlohmann::json record = {{"ts", timestamp()}, {"level", levelName(level)}, {"msg", message}};
    for (auto& [k, v] : fields) record[k] = v;
    line = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    line = fmt::format("{} {:<5} {}", timestamp(), levelName(level), message);
    for (auto& [k, v] : fields) line += fmt::format(" {}={}", k, v);
  }
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace outbox::log
