#pragma once
// Wall-clock time as Unix time, for metrics (Prometheus timestamps, lag in seconds) and protocol fields.

#include <chrono>
#include <cstdint>
#include <ctime>
#include <string>

#include <fmt/chrono.h>

namespace outbox {

inline double unixSecondsNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

inline int64_t unixMicrosNow() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ISO 8601 in UTC to the second, e.g. "2026-12-01T16:32:03Z" (for records humans read).
inline std::string utcIsoTime(int64_t unixMicros) {
  std::time_t seconds = static_cast<std::time_t>(unixMicros / 1000000);
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", fmt::gmtime(seconds));
}

// RFC 3339 / ISO 8601 in UTC to the millisecond, e.g. "2026-12-01T16:32:03.123Z" (CloudEvents' time, the replay
// header); "" for 0 or less.
inline std::string utcIsoTimeMillis(int64_t unixMs) {
  if (unixMs <= 0) return "";
  std::time_t seconds = static_cast<std::time_t>(unixMs / 1000);
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03d}Z", fmt::gmtime(seconds), static_cast<int>(unixMs % 1000));
}

}  // namespace outbox
