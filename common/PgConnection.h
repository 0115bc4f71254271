#pragma once
// libpq set-up both binaries share: opening a connection from a configured conninfo plus a password read from a
// file, and owning results.
//
// The configured conninfo (URI or key=value) is expanded as "dbname" first and the program's extra parameters
// after it, so those win (e.g. replication=database); the password file's secret goes in last as the "password"
// parameter, never as part of a string that could be logged.

#include <libpq-fe.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace outbox {

struct PgResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

using PgParameters = std::vector<std::pair<const char*, const char*>>;

// Returns the connection whatever its status (check PQstatus; the caller PQfinish-es it). Blocking.
PGconn* connectPostgres(const std::string& conninfo, const std::string& password, const PgParameters& extra);

// A libpq message (PQerrorMessage, PQresultErrorMessage, a notice) without its trailing newline; "" for null.
std::string pgMessage(const char* text);
// PQerrorMessage without its trailing newline(s); "not connected" for no connection.
std::string pgErrorMessage(const PGconn* conn);
// The SQLSTATE of a failed result, "" when it has none (no result: the connection broke).
// https://www.postgresql.org/docs/current/errcodes-appendix.html
std::string pgSqlState(const PGresult* result);

}  // namespace outbox
