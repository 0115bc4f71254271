#include "common/AdminServer.h"

#include <CivetServer.h>
#include <civetweb.h>
#include <prometheus/registry.h>

#include <cstring>
#include <stdexcept>

#include "common/Log.h"

namespace outbox {

namespace {
// civetweb's begin_request hook has no user pointer of ours, and one process serves one admin endpoint.
HealthCheck* g_health = nullptr;

int answer(mg_connection* conn, const HealthVerdict& verdict) {
  std::string body = (verdict.ok ? "ok" : verdict.reason) + "\n";
  mg_printf(conn,
            "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n%s",
            verdict.ok ? 200 : 503, verdict.ok ? "OK" : "Service Unavailable", body.size(), body.c_str());
  return verdict.ok ? 200 : 503;
}

int beginRequest(mg_connection* conn) {
  const mg_request_info* info = mg_get_request_info(conn);
  if (info == nullptr || info->local_uri == nullptr || g_health == nullptr) return 0;
  if (std::strcmp(info->local_uri, "/healthz") == 0) return answer(conn, g_health->live());
  if (std::strcmp(info->local_uri, "/readyz") == 0) return answer(conn, g_health->ready());
  return 0;  // not ours: civetweb goes on to prometheus-cpp's handlers
}

HealthCheck g_healthStorage;
}  // namespace

AdminServer::AdminServer(const std::string& listen, std::shared_ptr<prometheus::Registry> registry, HealthCheck health)
    : callbacks_(std::make_unique<CivetCallbacks>()) {
  auto colon = listen.rfind(':');
  host_ = colon == std::string::npos ? listen : listen.substr(0, colon);
  g_healthStorage = std::move(health);
  g_health = &g_healthStorage;
  callbacks_->begin_request = &beginRequest;
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(listen, 2, callbacks_.get());
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("cannot listen on ") + listen + ": " + e.what());
  }
  exposer_->RegisterCollectable(registry);
}

AdminServer::~AdminServer() {
  exposer_.reset();
  g_health = nullptr;
}

std::string AdminServer::listeningAddress() const {
  auto ports = exposer_->GetListeningPorts();
  return host_ + ":" + (ports.empty() ? std::string("?") : std::to_string(ports.front()));
}

// "host:port" (or "[ipv6]:port") with a port in 0..65535 (0: the system picks a free one).
std::optional<std::string> listenAddressError(std::string_view listen) {
  size_t colon = listen.rfind(':');
  if (colon == std::string_view::npos) return "must be host:port, e.g. \"0.0.0.0:9187\"";
  std::string_view host = listen.substr(0, colon);
  std::string_view port = listen.substr(colon + 1);
  if (host.empty()) return "has no host; write host:port, e.g. \"0.0.0.0:9187\"";
  if (host.front() == '[' ? host.back() != ']' || host.size() < 3 : host.find(':') != std::string_view::npos) {
    return "write an IPv6 address in brackets, e.g. \"[::]:9187\"";
  }
  bool digits = !port.empty() && port.size() <= 5 &&
                std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
  int number = digits ? std::stoi(std::string(port)) : 0;
  if (!digits || number > 65535) {
    return fmt::format("has port {}, which is not a port number (0-65535); write host:port, e.g. \"0.0.0.0:9187\"",
                       "\"" + std::string(port) + "\"");
  }
  return std::nullopt;
}

std::unique_ptr<AdminServer> startAdminServer(const std::string& listen, std::shared_ptr<prometheus::Registry> registry,
                                              HealthCheck health) {
  try {
    auto admin = std::make_unique<AdminServer>(listen, std::move(registry), std::move(health));
    log::info("serving /metrics, /healthz and /readyz on {}", admin->listeningAddress());
    return admin;
  } catch (const std::exception& e) {
    log::error("cannot serve metrics on {}: {} (set metrics.listen to a free address:port)", listen, e.what());
    return nullptr;
  }
}

}  // namespace outbox
