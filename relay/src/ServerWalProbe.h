#pragma once
// Reads the server's current WAL position on a normal (non-replication) connection, for the replication-lag
// metric: lag = pg_current_wal_lsn() - confirmed flush. A failure is logged and retried on the next probe; it
// never disturbs streaming.

#include <libpq-fe.h>

#include <optional>

#include "src/Lsn.h"
#include "src/RelayConfig.h"

namespace outbox {

class ServerWalProbe {
public:
  explicit ServerWalProbe(const SourceConfig& config) : config_(config) {}
  ~ServerWalProbe();
  ServerWalProbe(const ServerWalProbe&) = delete;
  ServerWalProbe& operator=(const ServerWalProbe&) = delete;

  std::optional<Lsn> currentWalLsn();

private:
  const SourceConfig& config_;
  PGconn* conn_ = nullptr;
};

}  // namespace outbox
