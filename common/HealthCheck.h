#pragma once
// What /healthz and /readyz answer: a verdict and a one-line reason. Evaluated on the admin server's threads,
// so implementations read only thread-safe state (the metrics' atomic values).

#include <prometheus/gauge.h>

#include <chrono>
#include <functional>
#include <string>

#include "common/UnixTime.h"

namespace outbox {

struct HealthVerdict {
  bool ok = false;
  std::string reason;  // one line: why not (or "ok")
};

struct HealthCheck {
  std::function<HealthVerdict()> live;   // /healthz: the process is alive and its loop is not stalled
  std::function<HealthVerdict()> ready;  // /readyz: doing its job right now
};

// /healthz for an event loop that stamps `lastLoop` (Unix seconds) on every round: alive unless the stamp is older
// than `maxStallSeconds`.
inline std::function<HealthVerdict()> loopAliveCheck(const prometheus::Gauge& lastLoop, int maxStallSeconds) {
  return [&lastLoop, maxStallSeconds] {
    double now = unixSecondsNow();
    double last = lastLoop.Value();
    if (last > 0 && now - last > maxStallSeconds) {
      return HealthVerdict{false, "event loop stalled for more than " + std::to_string(maxStallSeconds) + " s"};
    }
    return HealthVerdict{true, "ok"};
  };
}

}  // namespace outbox
