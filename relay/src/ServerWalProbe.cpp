#include "src/ServerWalProbe.h"

#include "common/Log.h"
#include "src/PgConnect.h"

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
    conn_ = connectToSource(config_, {{"fallback_application_name", "outbox-relay-lag"},
                                      {"connect_timeout", "5"},
                                      {"options", "-c statement_timeout=5000"}});
    if (PQstatus(conn_) != CONNECTION_OK) {
      log::debug("lag probe: cannot connect: {}", PQerrorMessage(conn_));
      PQfinish(conn_);
      conn_ = nullptr;
      return std::nullopt;
    }
  }
  PGresult* result = PQexec(conn_, "SELECT pg_catalog.pg_current_wal_lsn()");
  std::optional<Lsn> lsn;
  if (PQresultStatus(result) == PGRES_TUPLES_OK && PQntuples(result) == 1) lsn = Lsn::parse(PQgetvalue(result, 0, 0));
  else log::debug("lag probe: {}", PQerrorMessage(conn_));
  PQclear(result);
  return lsn;
}

}  // namespace outbox
