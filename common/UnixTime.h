#pragma once
// Wall-clock time as Unix time, for metrics (Prometheus timestamps, lag in seconds) and protocol fields.

#include <chrono>
#include <cstdint>

namespace outbox {

inline double unixSecondsNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

inline int64_t unixMicrosNow() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace outbox
