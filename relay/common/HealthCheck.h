#pragma once
// What /healthz and /readyz answer: a verdict and a one-line reason. Evaluated on the admin server's threads,
// so implementations read only thread-safe state (the metrics' atomic values).

#include <functional>
#include <string>

namespace outbox {

struct HealthVerdict {
  bool ok = false;
  std::string reason;  // one line: why not (or "ok")
};

struct HealthCheck {
  std::function<HealthVerdict()> live;   // /healthz: the process is alive and its loop is not stalled
  std::function<HealthVerdict()> ready;  // /readyz: doing its job right now
};

}  // namespace outbox
