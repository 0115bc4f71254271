#include "src/ServerWalProbe.h"

#include <string>
#include <vector>

#include "common/Log.h"

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
    std::vector<const char*> keys = {"dbname", "fallback_application_name", "connect_timeout", "options"};
    std::vector<const char*> values = {config_.conninfo.c_str(), "outbox-relay-lag", "5", "-c statement_timeout=5000"};
    if (!config_.password.empty()) {
      keys.push_back("password");
      values.push_back(config_.password.c_str());
    }
    keys.push_back(nullptr);
    values.push_back(nullptr);
    conn_ = PQconnectdbParams(keys.data(), values.data(), 1);
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
