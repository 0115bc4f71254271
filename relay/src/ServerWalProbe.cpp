#include "src/ServerWalProbe.h"

#include "common/Log.h"
#include "common/PgConnection.h"

namespace outbox {

ServerWalProbe::~ServerWalProbe() {
  if (conn_) PQfinish(conn_);
}

std::optional<Lsn> ServerWalProbe::currentWalLsn() {
  if (conn_ && PQstatus(conn_) != CONNECTION_OK) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
  if (!conn_) {
    // Same connection settings as the stream, without replication; bounded so a dead server cannot stall the loop.
    conn_ = connectPostgres(config_.conninfo, config_.password, {{"fallback_application_name", "outbox-relay-lag"},
                                      {"connect_timeout", "5"},
                                      {"options", "-c statement_timeout=5000"}});
    if (PQstatus(conn_) != CONNECTION_OK) {
      log::debug("lag probe: cannot connect: {}", pgErrorMessage(conn_));
      PQfinish(conn_);
      conn_ = nullptr;
      return std::nullopt;
    }
  }
  PgResult result(PQexec(conn_, "SELECT pg_catalog.pg_current_wal_lsn()"));
  std::optional<Lsn> lsn;
  if (PQresultStatus(result.get()) == PGRES_TUPLES_OK && PQntuples(result.get()) == 1) {
    lsn = Lsn::parse(PQgetvalue(result.get(), 0, 0));
  } else {
    log::debug("lag probe: {}", pgErrorMessage(conn_));
  }
  return lsn;
}

}  // namespace outbox
