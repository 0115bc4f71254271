#pragma once
// libpq set-up both binaries share: opening a connection from a configured conninfo plus a password read from a
// file, and owning results.
//
// The configured conninfo (URI or key=value) is expanded as "dbname" first and the program's extra parameters
// after it, so those win (e.g. replication=database); the password file's secret goes in last as the "password"
// parameter, never as part of a string that could be logged. Defaults (network timeouts) are different: one is
// added only when the user's conninfo does not set that key and the environment variable libpq reads for it
// (PGCONNECT_TIMEOUT, ...) is unset, so the user's own value always wins.

#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace outbox {

struct PgResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

using PgParameters = std::vector<std::pair<const char*, const char*>>;

// Bounds on a connection to a server that stops answering (network partition, a host that froze): a connection
// attempt gives up after connect_timeout = 10 s; TCP keepalives (idle 10 s, then 3 probes 5 s apart) find a dead
// peer of an idle connection in about 25 s, and tcp_user_timeout = 30 s drops a connection whose sent data stays
// unacknowledged that long. https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-PARAMKEYWORDS
const PgParameters& networkTimeoutDefaults();

// Those of `defaults` that neither `conninfo` (URI or key=value) nor libpq's environment variable for that key
// sets. When the conninfo cannot be parsed, all of them (libpq reports the error when connecting).
PgParameters defaultsNotSetBy(const std::string& conninfo, const PgParameters& defaults);

// Returns the connection whatever its status (check PQstatus; the caller PQfinish-es it). Blocking.
// PQescapeIdentifier: `name` quoted for SQL; nullopt when libpq refuses it (invalid in the connection's encoding,
// or out of memory).
std::optional<std::string> escapeIdentifier(PGconn* conn, std::string_view name);

PGconn* connectPostgres(const std::string& conninfo, const std::string& password, const PgParameters& extra,
                        const PgParameters& defaults = {});
// The same, started without blocking (PQconnectStartParams): drive it with PQconnectPoll. Null when out of memory.
// Note that libpq resolves a host name (not a hostaddr) synchronously here.
PGconn* startConnectPostgres(const std::string& conninfo, const std::string& password, const PgParameters& extra,
                             const PgParameters& defaults = {});

// What to change when a failed connection attempt's message (PQerrorMessage) is one no retry can cure: the server's
// certificate does not verify or does not name the host connected to, TLS is required but the server has none, a
// certificate or key file cannot be used, authentication failed, or pg_hba.conf has no entry for the connection.
// nullopt for anything else (a server that is down, starting or restarting: worth retrying).
std::optional<std::string> permanentConnectFailureHint(const std::string& message);

// A libpq message (PQerrorMessage, PQresultErrorMessage, a notice) without its trailing newline; "" for null.
std::string pgMessage(const char* text);
// PQerrorMessage without its trailing newline(s); "not connected" for no connection.
std::string pgErrorMessage(const PGconn* conn);
// The SQLSTATE of a failed result, "" when it has none (no result: the connection broke).
// https://www.postgresql.org/docs/current/errcodes-appendix.html
std::string pgSqlState(const PGresult* result);

}  // namespace outbox
