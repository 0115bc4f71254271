#include "src/ReplicationStream.h"

#include <poll.h>

#include <chrono>
#include <cstring>
#include <memory>

#include "common/Log.h"
#include "common/PgConnection.h"
#include "common/UnixTime.h"
#include "src/PgOutputDecoder.h"

namespace outbox {

namespace {

// PostgreSQL timestamps count microseconds from 2000-01-01.
pgoutput::PgTimestamp nowPg() { return pgoutput::PgTimestamp{unixMicrosNow() - 946684800LL * 1000000LL}; }

// SQLSTATEs (https://www.postgresql.org/docs/15/errcodes-appendix.html)
constexpr const char* kObjectInUse = "55006";      // slot active for another PID
constexpr const char* kDuplicateObject = "42710";  // slot created concurrently
constexpr const char* kInsufficientPrivilege = "42501";
constexpr const char* kUndefinedTable = "42P01";
}  // namespace

ReplicationStream::ReplicationStream(const SourceConfig& config) : config_(config) {}

ReplicationStream::~ReplicationStream() {
  freeBuffer();
  if (conn_) PQfinish(conn_);
}

void ReplicationStream::freeBuffer() {
  if (buffer_) {
    PQfreemem(buffer_);
    buffer_ = nullptr;
  }
}

void ReplicationStream::failConnection(const std::string& what) {
  std::string message = what + ": " + pgErrorMessage(conn_);
  freeBuffer();
  if (conn_) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
  throw ReplicationError(message);
}

const ServerIdentity& ReplicationStream::connect() {
  if (conn_) close();
  conn_ = connectPostgres(config_.conninfo, config_.password,
                          {{"replication", "database"}, {"fallback_application_name", "outbox-relay"}},
                          networkTimeoutDefaults());
  if (PQstatus(conn_) != CONNECTION_OK) failConnection("cannot connect to PostgreSQL");
  PQsetNoticeProcessor(conn_, [](void*, const char* message) { log::info("postgres: {}", pgMessage(message)); }, nullptr);

  PgResult ident(PQexec(conn_, "IDENTIFY_SYSTEM"));
  if (PQresultStatus(ident.get()) != PGRES_TUPLES_OK || PQntuples(ident.get()) != 1 || PQnfields(ident.get()) < 4) {
    failConnection("IDENTIFY_SYSTEM failed (is this a replication=database connection to PostgreSQL 10+?)");
  }
  identity_.systemId = PQgetvalue(ident.get(), 0, 0);
  identity_.timeline = std::atoi(PQgetvalue(ident.get(), 0, 1));
  identity_.xlogPos = Lsn::parse(PQgetvalue(ident.get(), 0, 2)).value_or(Lsn());
  identity_.database = PQgetisnull(ident.get(), 0, 3) ? "" : PQgetvalue(ident.get(), 0, 3);
  identity_.serverVersion = PQserverVersion(conn_);
  if (identity_.database.empty()) {
    throw SetupError("the connection is not to a database: source.conninfo must name one (dbname=...)");
  }
  return identity_;
}

PGresult* ReplicationStream::exec(const std::string& sql) {
  PGresult* result = PQexec(conn_, sql.c_str());
  auto status = PQresultStatus(result);
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return result;
  std::string state = pgSqlState(result);
  std::string message = pgErrorMessage(conn_);
  PQclear(result);
  if (PQstatus(conn_) != CONNECTION_OK) failConnection("connection lost running \"" + sql + "\"");
  if (state == kObjectInUse) throw SlotBusyError(message);
  if (state == kInsufficientPrivilege || state == kUndefinedTable) throw SetupError(message + " (running: " + sql + ")");
  throw ReplicationError(message + " (running: " + sql + ", SQLSTATE " + state + ")");
}

std::string ReplicationStream::quoteIdentifier(std::string_view identifier) const {
  char* quoted = PQescapeIdentifier(conn_, identifier.data(), identifier.size());
  std::string out = quoted ? quoted : "";
  PQfreemem(quoted);
  return out;
}

std::string ReplicationStream::quoteLiteral(std::string_view literal) const {
  char* quoted = PQescapeLiteral(conn_, literal.data(), literal.size());
  std::string out = quoted ? quoted : "";
  PQfreemem(quoted);
  return out;
}

void ReplicationStream::ensurePublication(const std::vector<const OutboxTableConfig*>& tables) {
  const std::string& pub = config_.publication;
  PgResult found(exec("SELECT pubinsert FROM pg_catalog.pg_publication WHERE pubname = " + quoteLiteral(pub)));
  std::string tableList;
  for (const auto* table : tables) {
    if (!tableList.empty()) tableList += ", ";
    tableList += quoteIdentifier(table->schema) + "." + quoteIdentifier(table->table);
  }
  std::string createSql = "CREATE PUBLICATION " + quoteIdentifier(pub) +
                          (tableList.empty() ? std::string() : " FOR TABLE " + tableList) +
                          " WITH (publish = 'insert')";
  if (PQntuples(found.get()) == 0) {
    if (!config_.createPublication) {
      throw SetupError("publication \"" + pub + "\" does not exist and source.create_publication is false: run `" +
                       createSql + ";` as the owner of the outbox tables");
    }
    log::info("creating publication: {}", createSql);
    try {
      PgResult created(exec(createSql));
    } catch (const ReplicationError& e) {
      throw SetupError(std::string("cannot create publication \"") + pub + "\": " + e.what());
    }
    return;
  }
  if (std::string(PQgetvalue(found.get(), 0, 0)) != "t") {
    throw SetupError("publication \"" + pub + "\" does not publish inserts: run `ALTER PUBLICATION " +
                     quoteIdentifier(pub) + " SET (publish = 'insert');`");
  }
  for (const auto* table : tables) {
    PgResult member(exec("SELECT 1 FROM pg_catalog.pg_publication_tables WHERE pubname = " + quoteLiteral(pub) +
                       " AND schemaname = " + quoteLiteral(table->schema) +
                       " AND tablename = " + quoteLiteral(table->table)));
    if (PQntuples(member.get()) == 0) {
      std::string qualified = quoteIdentifier(table->schema) + "." + quoteIdentifier(table->table);
      throw SetupError("publication \"" + pub + "\" does not include outbox table " + qualified +
                       ": run `ALTER PUBLICATION " + quoteIdentifier(pub) + " ADD TABLE " + qualified + ";`");
    }
  }
}

Lsn ReplicationStream::ensureSlot() {
  const std::string& slot = config_.slot;
  PgResult found(exec("SELECT plugin, database, confirmed_flush_lsn FROM pg_catalog.pg_replication_slots "
                    "WHERE slot_name = " + quoteLiteral(slot)));
  if (PQntuples(found.get()) == 0) {
    std::string createSql = "CREATE_REPLICATION_SLOT " + quoteIdentifier(slot) + " LOGICAL pgoutput NOEXPORT_SNAPSHOT";
    if (!config_.createSlot) {
      throw SetupError("replication slot \"" + slot + "\" does not exist and source.create_slot is false: run `SELECT "
                       "pg_create_logical_replication_slot('" + slot + "', 'pgoutput');` in database " +
                       identity_.database);
    }
    log::info("creating logical replication slot \"{}\" (pgoutput)", slot);
    PGresult* created = PQexec(conn_, createSql.c_str());
    auto status = PQresultStatus(created);
    std::string state = pgSqlState(created);
    PQclear(created);
    if (status != PGRES_TUPLES_OK && state != kDuplicateObject) {
      if (PQstatus(conn_) != CONNECTION_OK) failConnection("connection lost creating the replication slot");
      throw SetupError("cannot create replication slot \"" + slot + "\": " + pgErrorMessage(conn_));
    }
    return Lsn();
  }
  std::string plugin = PQgetvalue(found.get(), 0, 0);
  std::string database = PQgetvalue(found.get(), 0, 1);
  if (plugin != "pgoutput") {
    throw SetupError("replication slot \"" + slot + "\" uses plugin \"" + plugin +
                     "\", not pgoutput: configure another source.slot, or drop it with SELECT "
                     "pg_drop_replication_slot('" + slot + "')");
  }
  if (database != identity_.database) {
    throw SetupError("replication slot \"" + slot + "\" belongs to database \"" + database + "\", not \"" +
                     identity_.database + "\": configure another source.slot");
  }
  return PQgetisnull(found.get(), 0, 2) ? Lsn() : Lsn::parse(PQgetvalue(found.get(), 0, 2)).value_or(Lsn());
}

int ReplicationStream::protocolVersion() const {
  // pgoutput versions: 1 (PG 10), 2 (PG 14, streaming), 3 (PG 15, two-phase), 4 (PG 16, parallel streaming;
  // not implemented here). The relay turns neither streaming nor two_phase on, so every version sends
  // committed transactions whole, in commit order.
  if (identity_.serverVersion >= 150000) return 3;
  if (identity_.serverVersion >= 140000) return 2;
  return 1;
}

void ReplicationStream::start(Lsn from) {
  int proto = protocolVersion();
  std::string sql = "START_REPLICATION SLOT " + quoteIdentifier(config_.slot) + " LOGICAL " + from.toString() +
                    " (proto_version '" + std::to_string(proto) + "', publication_names " +
                    quoteLiteral(quoteIdentifier(config_.publication));
  // Logical decoding messages (pg_logical_emit_message) are sent from PostgreSQL 14 on.
  if (identity_.serverVersion >= 140000) sql += ", messages 'true'";
  sql += ")";
  PgResult result(PQexec(conn_, sql.c_str()));
  if (PQresultStatus(result.get()) != PGRES_COPY_BOTH) {
    std::string state = pgSqlState(result.get());
    std::string message = pgErrorMessage(conn_);
    if (state == kObjectInUse) throw SlotBusyError(message);
    failConnection("START_REPLICATION failed");
  }
  // From here on nothing waits on the server: reads are PQgetCopyData(async), status updates are queued and
  // flushed as the socket takes them (a server that stops reading cannot stall the event loop).
  if (PQsetnonblocking(conn_, 1) != 0) failConnection("cannot make the replication connection non-blocking");
  flushPending_ = false;
  log::info("streaming from slot \"{}\" at {} (pgoutput protocol version {})", config_.slot, from.toString(), proto);
}

ReplicationStream::ReadStatus ReplicationStream::read(std::string_view& message) {
  freeBuffer();
  int n = PQgetCopyData(conn_, &buffer_, 1);
  if (n == 0) {
    if (!PQconsumeInput(conn_)) failConnection("lost the replication connection");
    n = PQgetCopyData(conn_, &buffer_, 1);
  }
  if (n > 0) {
    message = std::string_view(buffer_, static_cast<size_t>(n));
    return ReadStatus::Message;
  }
  if (n == 0) return ReadStatus::WouldBlock;
  if (n == -1) {
    // The server ended the copy stream: read its final result for the reason.
    PgResult result(PQgetResult(conn_));
    std::string reason = result ? pgMessage(PQresultErrorMessage(result.get())) : "";
    failConnection("the server ended the replication stream" + (reason.empty() ? "" : " (" + reason + ")"));
  }
  failConnection("reading the replication stream failed");
}

void ReplicationStream::sendStatus(Lsn confirmed) {
  // No reply requested: keepalives come on the server's own schedule.
  std::string update =
      pgoutput::PgOutputDecoder::encodeStandbyStatusUpdate(confirmed, confirmed, confirmed, nowPg(), false);
  // In non-blocking mode PQputCopyData returns 0 when libpq's buffer is full; a server that took nothing for that
  // long is behind tcp_user_timeout, and the update is skipped (the next one carries a position at least as new).
  int queued = PQputCopyData(conn_, update.data(), static_cast<int>(update.size()));
  if (queued < 0) failConnection("cannot send a standby status update");
  if (queued == 0) log::debug("postgres: send buffer full; standby status update skipped");
  flushPending_ = true;
  flush();
}

void ReplicationStream::flush() {
  if (!flushPending_ || !conn_) return;
  int flushed = PQflush(conn_);
  if (flushed < 0) failConnection("cannot send a standby status update");
  flushPending_ = flushed == 1;
}

int ReplicationStream::socket() const { return conn_ ? PQsocket(conn_) : -1; }

void ReplicationStream::close(std::chrono::milliseconds drainBound) {
  freeBuffer();
  flushPending_ = false;
  if (!conn_) return;
  // Drain until the server's CopyDone and final results, bounded so a dead server cannot hang shutdown.
  auto deadline = std::chrono::steady_clock::now() + drainBound;
  bool ended = PQputCopyEnd(conn_, nullptr) == 1;
  // Non-blocking (once streaming): wait for the socket to take CopyDone, within the bound.
  int flushed = ended ? PQflush(conn_) : -1;
  while (flushed == 1 && std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{PQsocket(conn_), POLLOUT, 0};
    ::poll(&pfd, 1, 100);
    flushed = PQflush(conn_);
  }
  if (flushed == 0) {
    while (std::chrono::steady_clock::now() < deadline) {
      char* data = nullptr;
      int n = PQgetCopyData(conn_, &data, 1);
      if (data) PQfreemem(data);
      if (n > 0) continue;
      if (n == 0) {
        pollfd pfd{PQsocket(conn_), POLLIN, 0};
        ::poll(&pfd, 1, 100);
        if (!PQconsumeInput(conn_)) break;
        continue;
      }
      // The copy ended: read the final results. PQgetResult waits while libpq is busy, so only call it when not.
      while (std::chrono::steady_clock::now() < deadline) {
        if (PQisBusy(conn_)) {
          pollfd pfd{PQsocket(conn_), POLLIN, 0};
          ::poll(&pfd, 1, 100);
          if (!PQconsumeInput(conn_)) break;
          continue;
        }
        PgResult result(PQgetResult(conn_));
        if (!result) break;
        if (PQresultStatus(result.get()) == PGRES_FATAL_ERROR) {
          log::warn("postgres: {}", pgMessage(PQresultErrorMessage(result.get())));
        }
      }
      break;
    }
  }
  PQfinish(conn_);
  conn_ = nullptr;
}

}  // namespace outbox
