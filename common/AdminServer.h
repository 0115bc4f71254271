#pragma once
// The admin HTTP endpoint: /metrics (prometheus-cpp's own Exposer), /healthz and /readyz.
//
// prometheus-cpp serves with civetweb; the health endpoints are answered from civetweb's begin_request hook on
// the same server, so there is one port and no hand-written HTTP server. They run on civetweb's threads and
// read only the metrics' atomic values.

#include <prometheus/exposer.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/HealthCheck.h"

struct CivetCallbacks;

namespace prometheus {
class Registry;
}

namespace outbox {

class AdminServer {
 public:
  // Listens on "host:port" (port 0 picks a free one). Throws when it cannot bind.
  AdminServer(const std::string& listen, std::shared_ptr<prometheus::Registry> registry, HealthCheck health);
  ~AdminServer();
  // "host:port" actually bound.
  std::string listeningAddress() const;

 private:
  std::unique_ptr<CivetCallbacks> callbacks_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string host_;
};

// Why `listen` is not a usable "host:port" (or "[ipv6]:port"; port 0 lets the system pick), or nullopt.
std::optional<std::string> listenAddressError(std::string_view listen);

// For main(): starts the admin server and logs where it serves; when it cannot bind, logs why with the fix and
// returns nullptr (the caller exits with its setup status).
std::unique_ptr<AdminServer> startAdminServer(const std::string& listen, std::shared_ptr<prometheus::Registry> registry,
                                              HealthCheck health);

}  // namespace outbox
