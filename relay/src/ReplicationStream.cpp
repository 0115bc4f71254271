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
constexpr const char* kUniqueViolation = "23505";  // a catalog row inserted concurrently
constexpr const char* kUndefinedTable = "42P01";
constexpr const char* kUndefinedObject = "42704";  // pgoutput: a publication named in START_REPLICATION is gone
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
  if (PQstatus(conn_) != CONNECTION_OK) {
    // A role without the REPLICATION attribute cannot start a walsender: PostgreSQL 15 says "must be superuser or
    // replication role to start walsender", 16 on "permission denied to start WAL sender". Retrying cannot help.
    std::string message = pgErrorMessage(conn_);
    if (message.find("replication role") != std::string::npos ||
        message.find("permission denied to start WAL sender") != std::string::npos) {
      std::string role = PQuser(conn_) ? PQuser(conn_) : "";
      PQfinish(conn_);
      conn_ = nullptr;
      throw SetupError("PostgreSQL refused a replication connection to role \"" + role + "\" (" + message +
                       "): logical replication needs a role with the REPLICATION attribute; run `ALTER ROLE " + role +
                       " REPLICATION;` as a superuser, or set source.conninfo to a role that has it");
    }
    if (std::optional<std::string> hint = permanentConnectFailureHint(message)) {
      PQfinish(conn_);
      conn_ = nullptr;
      throw ConnectRefusedError("cannot connect to PostgreSQL: " + message + ": " + *hint);
    }
    failConnection("cannot connect to PostgreSQL");
  }
  PQsetNoticeProcessor(
      conn_, [](void*, const char* message) { log::info("postgres: {}", pgMessage(message)); }, nullptr);

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
  // Logical decoding needs wal_level = logical; without it creating or using a slot fails with a message that
  // does not say what to change. (SHOW is a replication command: it works on this connection.)
  PgResult walLevel(PQexec(conn_, "SHOW wal_level"));
  if (PQresultStatus(walLevel.get()) == PGRES_TUPLES_OK && PQntuples(walLevel.get()) == 1) {
    std::string level = PQgetvalue(walLevel.get(), 0, 0);
    if (level != "logical") {
      throw SetupError("the server runs with wal_level = " + level +
                       ", and logical replication needs wal_level = logical: run `ALTER SYSTEM SET wal_level = "
                       "logical;` as a superuser and restart PostgreSQL (wal_level takes effect only at a restart)");
    }
  } else if (PQstatus(conn_) != CONNECTION_OK) {
    failConnection("connection lost running SHOW wal_level");
  }
  // A standby (a multi-host conninfo without target_session_attrs, or a server being demoted) has no slot the relay
  // can stream from: PostgreSQL 16+ would decode there, from a slot of its own that no promotion keeps. Retried:
  // it may be promoted, or the conninfo's next host may be the primary next time.
  PgResult recovery(PQexec(conn_, "SELECT pg_catalog.pg_is_in_recovery()"));
  if (PQresultStatus(recovery.get()) == PGRES_TUPLES_OK && PQntuples(recovery.get()) == 1 &&
      std::string(PQgetvalue(recovery.get(), 0, 0)) == "t") {
    std::string where = std::string(PQhost(conn_) ? PQhost(conn_) : "") + ":" + (PQport(conn_) ? PQport(conn_) : "");
    failConnection("the server at " + where +
                   " is in recovery (a standby): the relay streams from the primary only; list every host in "
                   "source.conninfo with target_session_attrs=primary (or read-write)");
  } else if (PQstatus(conn_) != CONNECTION_OK) {
    failConnection("connection lost running pg_is_in_recovery()");
  }
  // Column values arrive as the walsender's output functions render them: DateStyle ISO whatever the role's or the
  // server's setting, so a timestamp_column (and a timestamp in a header or topic) reads the same everywhere.
  PgResult dateStyle(PQexec(conn_, "SET DateStyle = 'ISO, YMD'"));
  if (PQresultStatus(dateStyle.get()) != PGRES_COMMAND_OK) {
    if (PQstatus(conn_) != CONNECTION_OK) failConnection("connection lost running SET DateStyle");
    log::warn("postgres: cannot set DateStyle = ISO on the replication connection ({}): timestamps arrive in the "
              "server's DateStyle, which timestamp_column may not read",
              pgMessage(PQerrorMessage(conn_)));
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
  if (state == kInsufficientPrivilege || state == kUndefinedTable)
    throw SetupError(message + " (running: " + sql + ")");
  throw ReplicationError(message + " (running: " + sql + ", SQLSTATE " + state + ")");
}

std::string ReplicationStream::quoteIdentifier(std::string_view identifier) const {
  return escapeIdentifier(conn_, identifier).value_or("");
}

std::string ReplicationStream::quoteLiteral(std::string_view literal) const {
  char* quoted = PQescapeLiteral(conn_, literal.data(), literal.size());
  std::string out = quoted ? quoted : "";
  PQfreemem(quoted);
  return out;
}

std::vector<ResolvedOutboxTable> ReplicationStream::resolveOutboxTables(
    const std::vector<const OutboxTableConfig*>& tables, const std::vector<uint32_t>& knownOids) {
  std::vector<ResolvedOutboxTable> resolved;
  for (size_t i = 0; i < tables.size(); ++i) {
    const OutboxTableConfig* table = tables[i];
    ResolvedOutboxTable entry{table, 0, table->schema, table->table};
    // The table this process streamed first, under whatever name it has now: pending WAL of it is decoded under
    // its OID, and the publication follows it by OID too.
    if (i < knownOids.size() && knownOids[i] != 0) {
      PgResult byOid(
          exec("SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
               "ON n.oid = c.relnamespace WHERE c.oid = " +
               std::to_string(knownOids[i])));
      if (PQntuples(byOid.get()) == 1) {
        entry.oid = knownOids[i];
        entry.schema = PQgetvalue(byOid.get(), 0, 0);
        entry.table = PQgetvalue(byOid.get(), 0, 1);
      }
    }
    if (entry.oid == 0) {
      PgResult byName(
          exec("SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = "
               "c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname = " +
               quoteLiteral(table->schema) + " AND c.relname = " + quoteLiteral(table->table)));
      if (PQntuples(byName.get()) == 1) entry.oid = static_cast<uint32_t>(std::stoul(PQgetvalue(byName.get(), 0, 0)));
    }
    if (entry.oid == 0) {
      // Renamed or dropped while no relay streamed it. Relaying on would skip its rows silently: stop, and say
      // which tables the publication holds that no [[outbox]] names (a renamed outbox is among them).
      std::string others;
      PgResult members(
          exec("SELECT schemaname || '.' || tablename FROM pg_catalog.pg_publication_tables WHERE "
               "pubname = " +
               quoteLiteral(config_.publication) + " ORDER BY 1"));
      for (int row = 0; row < PQntuples(members.get()); ++row) {
        std::string name = PQgetvalue(members.get(), row, 0);
        bool configured = false;
        for (const auto* t : tables) configured = configured || name == t->schema + "." + t->table;
        if (!configured) others += (others.empty() ? "" : ", ") + name;
      }
      throw SetupError("outbox table " + table->schema + "." + table->table +
                       " does not exist (renamed or dropped?): rename it back, or change [[outbox]] table to the "
                       "new name" +
                       (others.empty() ? std::string()
                                       : " (publication \"" + config_.publication + "\" also holds " + others +
                                             ", which no [[outbox]] names)") +
                       "; nothing was confirmed");
    }
    resolved.push_back(std::move(entry));
  }
  return resolved;
}

std::string ReplicationStream::tableOwnersClause(const std::vector<ResolvedOutboxTable>& tables) {
  std::string oids;
  for (const auto& table : tables) oids += (oids.empty() ? "" : ", ") + std::to_string(table.oid);
  std::vector<std::string> owners;
  if (!oids.empty()) {
    PgResult found(exec("SELECT DISTINCT pg_catalog.pg_get_userbyid(relowner) FROM pg_catalog.pg_class WHERE oid IN (" +
                        oids + ") ORDER BY 1"));
    for (int row = 0; row < PQntuples(found.get()); ++row) owners.push_back(PQgetvalue(found.get(), row, 0));
  }
  if (owners.empty()) return "the owner of the outbox tables";
  if (owners.size() == 1) return "the owner of the outbox tables (role " + quoteIdentifier(owners[0]) + ")";
  std::string list;
  for (const auto& owner : owners) list += (list.empty() ? "" : ", ") + quoteIdentifier(owner);
  return "a role that is a member of every owner of the outbox tables (" + list + ")";
}

void ReplicationStream::ensurePublication(const std::vector<ResolvedOutboxTable>& tables) {
  const std::string& pub = config_.publication;
  PgResult found(exec("SELECT pubinsert FROM pg_catalog.pg_publication WHERE pubname = " + quoteLiteral(pub)));
  std::string tableList;
  for (const auto& table : tables) {
    if (!tableList.empty()) tableList += ", ";
    tableList += quoteIdentifier(table.schema) + "." + quoteIdentifier(table.table);
  }
  std::string createSql = "CREATE PUBLICATION " + quoteIdentifier(pub) +
                          (tableList.empty() ? std::string() : " FOR TABLE " + tableList) +
                          " WITH (publish = 'insert')";
  if (PQntuples(found.get()) == 0) {
    // Who may run it: CREATE PUBLICATION ... FOR TABLE needs ownership of every table named and CREATE on the
    // database (PostgreSQL 13-18), which the least-privilege role of schema/outbox.sql has neither of.
    std::string dba = "run `" + createSql + ";` in database " + quoteIdentifier(identity_.database) + " as " +
                      tableOwnersClause(tables) + ", with CREATE on the database, or as a superuser";
    if (!config_.createPublication) {
      throw SetupError("publication \"" + pub + "\" does not exist and source.create_publication is false: " + dba +
                       ", then start the relay again");
    }
    log::info("creating publication: {}", createSql);
    PGresult* created = PQexec(conn_, createSql.c_str());
    auto status = PQresultStatus(created);
    std::string state = pgSqlState(created);
    PQclear(created);
    if (status == PGRES_COMMAND_OK) return;
    std::string message = pgErrorMessage(conn_);
    if (PQstatus(conn_) != CONNECTION_OK) failConnection("connection lost creating the publication");
    if (state == kDuplicateObject || state == kUniqueViolation) {
      // Another relay (a hot standby) created it at the same moment: the retry finds it.
      throw ReplicationError("publication \"" + pub + "\" was created concurrently (" + message + ")");
    }
    if (state == kInsufficientPrivilege) {
      std::string role = PQuser(conn_) ? PQuser(conn_) : "";
      throw SetupError("cannot create publication \"" + pub + "\" as role \"" + role + "\" (" + message +
                       "): creating a publication needs ownership of the outbox tables and CREATE on the database, "
                       "which a least-privilege relay role does not have. Have a DBA " +
                       dba + ", and set source.create_publication = false for this role");
    }
    throw SetupError("cannot create publication \"" + pub + "\": " + message + " (running: " + createSql +
                     ", SQLSTATE " + state + ")");
  }
  if (std::string(PQgetvalue(found.get(), 0, 0)) != "t") {
    throw SetupError("publication \"" + pub + "\" does not publish inserts: run `ALTER PUBLICATION " +
                     quoteIdentifier(pub) + " SET (publish = 'insert');`");
  }
  for (const auto& table : tables) {
    PgResult member(exec("SELECT 1 FROM pg_catalog.pg_publication_tables WHERE pubname = " + quoteLiteral(pub) +
                         " AND schemaname = " + quoteLiteral(table.schema) +
                         " AND tablename = " + quoteLiteral(table.table)));
    if (PQntuples(member.get()) == 0) {
      std::string qualified = quoteIdentifier(table.schema) + "." + quoteIdentifier(table.table);
      throw SetupError("publication \"" + pub + "\" does not include outbox table " + qualified +
                       ": run `ALTER PUBLICATION " + quoteIdentifier(pub) + " ADD TABLE " + qualified + ";`");
    }
  }
}

std::string ReplicationStream::createSlotSql() const {
  return "SELECT pg_create_logical_replication_slot('" + config_.slot + "', 'pgoutput'" +
         (config_.failover ? ", false, false, true" : "") + ");";
}

std::optional<ReplicationStream::SlotState> ReplicationStream::findSlot() {
  const std::string& slot = config_.slot;
  const bool hasFailover = identity_.serverVersion >= 170000;  // pg_replication_slots.failover is new in 17
  if (config_.failover && !hasFailover) {
    throw SetupError("source.failover = true, but PostgreSQL " + versionString(identity_.serverVersion) +
                     " has no failover slots (they are new in PostgreSQL 17): set source.failover = false (a "
                     "promoted standby then has no slot: see source.on_slot_lost), or upgrade to PostgreSQL 17");
  }
  // wal_status is there from PostgreSQL 13 on; invalidation_reason from 17.
  PgResult found(exec(std::string("SELECT plugin, database, confirmed_flush_lsn, ") +
                      (hasFailover ? "failover" : "false") + ", " +
                      (hasFailover ? "COALESCE(invalidation_reason, CASE WHEN wal_status = 'lost' THEN 'wal_removed' END)"
                                   : "CASE WHEN wal_status = 'lost' THEN 'wal_removed' END") +
                      " FROM pg_catalog.pg_replication_slots WHERE slot_name = " + quoteLiteral(slot)));
  if (PQntuples(found.get()) == 0) return std::nullopt;
  std::string plugin = PQgetvalue(found.get(), 0, 0);
  std::string database = PQgetvalue(found.get(), 0, 1);
  if (plugin != "pgoutput") {
    throw SetupError("replication slot \"" + slot + "\" uses plugin \"" + plugin +
                     "\", not pgoutput: configure another source.slot, or drop it with SELECT "
                     "pg_drop_replication_slot('" +
                     slot + "')");
  }
  if (database != identity_.database) {
    throw SetupError("replication slot \"" + slot + "\" belongs to database \"" + database + "\", not \"" +
                     identity_.database + "\": configure another source.slot");
  }
  SlotState state;
  state.confirmedFlush =
      PQgetisnull(found.get(), 0, 2) ? Lsn() : Lsn::parse(PQgetvalue(found.get(), 0, 2)).value_or(Lsn());
  state.failover = std::string(PQgetvalue(found.get(), 0, 3)) == "t";
  if (!PQgetisnull(found.get(), 0, 4)) {
    state.invalidated = PQgetvalue(found.get(), 0, 4);
    return state;
  }
  if (config_.failover && !state.failover) {
    // The slot predates source.failover: switched in place, its position kept. (Refused while another process
    // streams from it: SlotBusyError, retried as a hot standby.)
    log::info("switching replication slot \"{}\" to FAILOVER (source.failover = true)", slot);
    PgResult altered(exec("ALTER_REPLICATION_SLOT " + quoteIdentifier(slot) + " (FAILOVER true)"));
    state.failover = true;
  }
  return state;
}

void ReplicationStream::dropSlot() {
  log::info("dropping replication slot \"{}\"", config_.slot);
  PgResult dropped(exec("DROP_REPLICATION_SLOT " + quoteIdentifier(config_.slot)));
}

std::string ReplicationStream::timelineHistory(int timeline) {
  if (timeline <= 1) return "";
  PgResult history(exec("TIMELINE_HISTORY " + std::to_string(timeline)));
  if (PQntuples(history.get()) != 1 || PQnfields(history.get()) < 2) return "";
  return std::string(PQgetvalue(history.get(), 0, 1), static_cast<size_t>(PQgetlength(history.get(), 0, 1)));
}

std::optional<Lsn> ReplicationStream::timelineEnd(std::string_view history, uint32_t timeline) {
  // Format of PostgreSQL's writeTimeLineHistory(): one line per ancestor, "parentTLI<TAB>switchpoint<TAB>reason";
  // blank lines and lines starting with '#' are comments.
  size_t pos = 0;
  while (pos < history.size()) {
    size_t end = history.find('\n', pos);
    std::string_view line = history.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    pos = end == std::string_view::npos ? history.size() : end + 1;
    size_t tab = line.find('\t');
    if (line.empty() || line[0] == '#' || tab == std::string_view::npos) continue;
    uint64_t tli = 0;
    bool digits = tab > 0 && tab <= 10;
    for (size_t i = 0; i < tab && digits; ++i) {
      digits = line[i] >= '0' && line[i] <= '9';
      tli = tli * 10 + static_cast<uint64_t>(line[i] - '0');
    }
    if (!digits || tli != timeline) continue;
    std::string_view rest = line.substr(tab + 1);
    size_t tab2 = rest.find('\t');
    return Lsn::parse(std::string(rest.substr(0, tab2)));
  }
  return std::nullopt;
}

Lsn ReplicationStream::createSlot() {
  const std::string& slot = config_.slot;
  // PostgreSQL 15 and later take options in parentheses; FAILOVER is new in 17 (findSlot refused it before).
  std::string createSql = "CREATE_REPLICATION_SLOT " + quoteIdentifier(slot) + " LOGICAL pgoutput " +
                          (config_.failover ? "(SNAPSHOT 'nothing', FAILOVER true)" : "NOEXPORT_SNAPSHOT");
  log::info("creating logical replication slot \"{}\" (pgoutput{})", slot, config_.failover ? ", failover" : "");
  PgResult created(PQexec(conn_, createSql.c_str()));
  auto status = PQresultStatus(created.get());
  std::string state = pgSqlState(created.get());
  if (status == PGRES_TUPLES_OK) {
    // consistent_point: where decoding of the new slot begins.
    return PQntuples(created.get()) == 1 && PQnfields(created.get()) >= 2 && !PQgetisnull(created.get(), 0, 1)
               ? Lsn::parse(PQgetvalue(created.get(), 0, 1)).value_or(Lsn())
               : Lsn();
  }
  if (state == kDuplicateObject) return Lsn();
  if (PQstatus(conn_) != CONNECTION_OK) failConnection("connection lost creating the replication slot");
  throw SetupError("cannot create replication slot \"" + slot + "\": " + pgErrorMessage(conn_));
}

int ReplicationStream::protocolVersionFor(int serverVersion) {
  // pgoutput versions (https://www.postgresql.org/docs/16/protocol-logical-replication.html): 1 (PG 10), 2 (PG 14,
  // streaming), 3 (PG 15, two-phase), 4 (PG 16, parallel streaming; still the highest in 17 and 18). The relay
  // turns neither streaming nor two_phase on, so every version sends committed transactions whole, in commit order,
  // in the same message formats: what 2, 3 and 4 add is sent only with those options (4 changes Stream Abort, and
  // only with streaming = parallel). The decoder reads every format of every version all the same.
  if (serverVersion >= 160000) return 4;
  if (serverVersion >= 150000) return 3;
  if (serverVersion >= 140000) return 2;
  return 1;
}

bool ReplicationStream::sendsLogicalMessages(int serverVersion) {
  // pgoutput's `messages` option is new in PostgreSQL 14; 13 refuses it ("unrecognized pgoutput option").
  return serverVersion >= 140000;
}

int ReplicationStream::protocolVersion() const { return protocolVersionFor(identity_.serverVersion); }

std::string ReplicationStream::versionString(int serverVersion) {
  return std::to_string(serverVersion / 10000) + "." + std::to_string(serverVersion % 10000);
}

void ReplicationStream::start(Lsn from) {
  int proto = protocolVersion();
  std::string sql = "START_REPLICATION SLOT " + quoteIdentifier(config_.slot) + " LOGICAL " + from.toString() +
                    " (proto_version '" + std::to_string(proto) + "', publication_names " +
                    quoteLiteral(quoteIdentifier(config_.publication));
  // Logical decoding messages (pg_logical_emit_message) are sent from PostgreSQL 14 on.
  if (sendsLogicalMessages(identity_.serverVersion)) sql += ", messages 'true'";
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
  streaming_ = true;
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
    if (result && pgSqlState(result.get()) == kUndefinedObject && reason.find("publication") != std::string::npos) {
      // pgoutput looks the publication up with the catalog as of each change it decodes: once it was dropped,
      // every change committed before it exists again fails, also after a re-creation (PostgreSQL 15), so a
      // reconnect would only fail again. Nothing past the last confirmed position was confirmed.
      const char* context = PQresultErrorField(result.get(), PG_DIAG_CONTEXT);
      std::string where = context ? " (" + pgMessage(context) + ")" : "";
      throw SetupError(
          "the server cannot decode the replication stream: " + reason + where + ". Publication \"" +
          config_.publication +
          "\" was dropped while changes were being written; PostgreSQL decodes each "
          "change with the catalog as of that change, so the changes committed while it did not exist cannot be "
          "decoded, also after re-creating it. Nothing after the last confirmed position was confirmed. To "
          "continue: re-create the publication if it is missing (CREATE PUBLICATION " +
          quoteIdentifier(config_.publication) +
          " FOR TABLE ... WITH (publish = 'insert'), or restart the relay "
          "with source.create_publication = true), then, if this error comes back, move the slot past the "
          "changes written while it was missing with SELECT pg_replication_slot_advance('" +
          config_.slot +
          "', '<LSN>') while the relay is stopped, <LSN> being a position after the re-creation (the error's LSN "
          "is one inside the gap) -- the events written in the gap are then not relayed: republish them from the "
          "outbox table");
    }
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
  streaming_ = false;
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

int ReplicationStream::backendPid() const { return conn_ ? PQbackendPID(conn_) : 0; }

}  // namespace outbox
