#pragma once
// The WAL reader: one libpq streaming-replication connection (replication=database) to one logical slot.
//
// Modelled on PostgreSQL's pg_recvlogical.c: IDENTIFY_SYSTEM, CREATE_REPLICATION_SLOT when missing,
// START_REPLICATION with pgoutput's options, then CopyBoth: non-blocking reads of CopyData messages and
// standby status updates. https://www.postgresql.org/docs/15/protocol-replication.html

#include <libpq-fe.h>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "src/Lsn.h"
#include "src/RelayConfig.h"

namespace outbox {

// The connection failed or broke: reconnect with backoff.
class ReplicationError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// The slot is in use by another process (another relay): this one is a hot standby; retry later.
class SlotBusyError : public ReplicationError {
 public:
  using ReplicationError::ReplicationError;
};
// The connection attempt failed in a way no retry cures (the server's certificate does not verify, authentication
// failed, no pg_hba.conf entry); the message names the fix. Fatal at start-up; after the relay has streamed once, the
// relay retries it like any lost connection (a certificate or password being rotated).
class ConnectRefusedError : public ReplicationError {
 public:
  using ReplicationError::ReplicationError;
};
// Something only an operator can fix (missing publication with create_publication = false, a slot of the wrong
// plugin, a missing table, no permission): retrying is pointless until they do; the message says what to run.
class SetupError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The replication slot this process was streaming from is gone (dropped, or a failover to a server without it).
class SlotLostError : public SetupError {
 public:
  using SetupError::SetupError;
};

// A configured outbox table as found on the server: its OID and its current name (which differs from the
// configured one when it was renamed while this process streamed from it).
struct ResolvedOutboxTable {
  const OutboxTableConfig* config = nullptr;
  uint32_t oid = 0;
  std::string schema;
  std::string table;
  bool renamed() const { return schema != config->schema || table != config->table; }
};

struct ServerIdentity {
  std::string systemId;
  int timeline = 0;
  Lsn xlogPos;
  std::string database;
  int serverVersion = 0;  // e.g. 150018
};

class ReplicationStream {
 public:
  explicit ReplicationStream(const SourceConfig& config);
  ~ReplicationStream();
  ReplicationStream(const ReplicationStream&) = delete;
  ReplicationStream& operator=(const ReplicationStream&) = delete;

  // Connects and runs IDENTIFY_SYSTEM.
  const ServerIdentity& connect();
  // Finds each configured outbox table: by `knownOids[i]` first (the OID this process streamed it under, 0 when
  // none; it follows a rename), else by its configured name. A table found neither way is a SetupError.
  std::vector<ResolvedOutboxTable> resolveOutboxTables(const std::vector<const OutboxTableConfig*>& tables,
                                                       const std::vector<uint32_t>& knownOids);
  // Makes sure the publication exists and carries every outbox table (creating it when config allows). A role that
  // may not create it (not the tables' owner) gets a SetupError with the statement a DBA runs and the setting.
  void ensurePublication(const std::vector<ResolvedOutboxTable>& tables);
  // The slot as the server has it, after checking that it uses pgoutput and belongs to this database (and, with
  // source.failover, switching it to FAILOVER when it is not). nullopt: there is no such slot. Whether a missing
  // slot may be created is the relay's decision (a slot it streamed from before, by this process's memory or its
  // checkpoint in Kafka, is lost, not new).
  struct SlotState {
    Lsn confirmedFlush;  // 0/0 when not set yet
    bool failover = false;
    // Set when the server invalidated the slot (wal_status "lost", or PostgreSQL 17's invalidation_reason, e.g.
    // wal_removed past max_slot_wal_keep_size): it exists but can never stream again.
    std::string invalidated;
  };
  std::optional<SlotState> findSlot();
  // Creates the slot (with FAILOVER under source.failover); returns its consistent point, where it starts. A
  // slot created concurrently by another relay counts as created (0/0 returned: the server starts it there).
  Lsn createSlot();
  // The SQL a DBA runs to create the slot by hand, for error messages.
  std::string createSlotSql() const;
  // Drops the slot (an invalidated one, before re-creating it).
  void dropSlot();
  // The server's timeline history file for `timeline` (TIMELINE_HISTORY; empty for timeline 1, which has none).
  std::string timelineHistory(int timeline);
  // In a timeline history file ("<parent tli>\t<switchpoint>\t<reason>" per line): where `timeline` ended, the
  // switchpoint at which the next one branched off. nullopt when the history does not name it (the current
  // timeline, or one that is not an ancestor). Pure; throws nothing.
  static std::optional<Lsn> timelineEnd(std::string_view history, uint32_t timeline);
  // The highest pgoutput protocol version this server and this relay both speak: 1 on PostgreSQL 13, 2 on 14, 3 on
  // 15, 4 on 16 and later. `serverVersion` as PQserverVersion (e.g. 160014).
  static int protocolVersionFor(int serverVersion);
  int protocolVersion() const;
  // Whether pgoutput on this server can send logical decoding messages (the `messages` option, PostgreSQL 14+).
  static bool sendsLogicalMessages(int serverVersion);
  // "16.14" for 160014 (PostgreSQL 10 and later number their releases major.minor).
  static std::string versionString(int serverVersion);
  // START_REPLICATION from `from` (the server starts at the slot's confirmed position if that is later).
  void start(Lsn from);

  enum class ReadStatus { Message, WouldBlock };
  // Reads one CopyData message without blocking. The view stays valid until the next read() call.
  // Throws ReplicationError when the stream ended or broke.
  ReadStatus read(std::string_view& message);
  // Sends a standby status update ('r'): written, flushed and applied all at `confirmed`. Never blocks: the
  // stream is in libpq's non-blocking mode, and what the socket does not take now goes out with flush().
  void sendStatus(Lsn confirmed);
  // Something is waiting to be sent (wait for the socket to be writable, then flush()).
  bool flushPending() const { return flushPending_; }
  // Sends on what sendStatus() left, without blocking. Throws ReplicationError when the connection broke.
  void flush();
  int socket() const;
  // Ends the copy stream politely (PQputCopyEnd) and reads the server's last results for up to `drainBound`, so
  // a final ErrorResponse is not missed; then closes the connection.
  void close(std::chrono::milliseconds drainBound = std::chrono::seconds(5));
  bool isOpen() const { return conn_ != nullptr; }
  // START_REPLICATION succeeded on the open connection: status updates can be sent.
  bool isStreaming() const { return conn_ != nullptr && streaming_; }
  // The walsender serving this connection (PQbackendPID); 0 without a connection.
  int backendPid() const;

 private:
  PGresult* exec(const std::string& sql);  // throws on failure
  std::string quoteIdentifier(std::string_view identifier) const;
  std::string quoteLiteral(std::string_view literal) const;
  // "the owner of the outbox tables (role x)": who may run CREATE PUBLICATION for them.
  std::string tableOwnersClause(const std::vector<ResolvedOutboxTable>& tables);
  void freeBuffer();
  [[noreturn]] void failConnection(const std::string& what);

  SourceConfig config_;
  PGconn* conn_ = nullptr;
  char* buffer_ = nullptr;
  bool flushPending_ = false;
  bool streaming_ = false;
  ServerIdentity identity_;
};

}  // namespace outbox
