#pragma once
// The messages of PostgreSQL's pgoutput logical replication protocol, decoded.
// https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html
//
// String and byte fields are views into the buffer that was decoded: they stay valid only as long as that
// buffer (one CopyData message from libpq). Whatever must outlive it is copied by the consumer.

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "src/Lsn.h"

namespace outbox::pgoutput {

// Truncated, unknown or otherwise malformed pgoutput input. The message names what was being read and where.
class DecodeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Microseconds since 2000-01-01 00:00:00 UTC, PostgreSQL's TimestampTz epoch.
struct PgTimestamp {
  int64_t micros = 0;
  // Microseconds since the Unix epoch.
  int64_t unixMicros() const { return micros + 946684800LL * 1000000LL; }
};

// One column of a TupleData.
struct ColumnValue {
  enum class Kind : char { Null = 'n', UnchangedToast = 'u', Text = 't', Binary = 'b' };
  Kind kind = Kind::Null;
  std::string_view data;  // empty for Null / UnchangedToast
};
using TupleData = std::vector<ColumnValue>;

struct Begin {
  Lsn finalLsn;  // LSN of the commit record
  PgTimestamp commitTime;
  Xid xid;
};
struct Commit {
  uint8_t flags = 0;
  Lsn commitLsn;
  Lsn endLsn;  // the position to confirm once this transaction is safely delivered
  PgTimestamp commitTime;
};
struct Origin {
  Lsn commitLsn;
  std::string_view name;
};
struct RelationColumn {
  uint8_t flags = 0;  // 1 = part of the key
  std::string_view name;
  uint32_t typeOid = 0;
  int32_t typeModifier = -1;
};
struct Relation {
  std::optional<Xid> xid;  // only inside a streamed transaction
  RelationId relationId;
  std::string_view nspname;
  std::string_view relname;
  char replicaIdentity = 'd';
  std::vector<RelationColumn> columns;
};
struct Type {
  std::optional<Xid> xid;
  uint32_t typeOid = 0;
  std::string_view nspname;
  std::string_view typname;
};
struct Insert {
  std::optional<Xid> xid;
  RelationId relationId;
  TupleData newTuple;
};
struct Update {
  std::optional<Xid> xid;
  RelationId relationId;
  std::optional<TupleData> oldTuple;  // 'K' (key) or 'O' (old row), when the replica identity sends it
  TupleData newTuple;
};
struct Delete {
  std::optional<Xid> xid;
  RelationId relationId;
  TupleData oldTuple;
};
struct Truncate {
  std::optional<Xid> xid;
  uint8_t options = 0;  // 1 = CASCADE, 2 = RESTART IDENTITY
  std::vector<RelationId> relationIds;
};
// A logical decoding message from pg_logical_emit_message().
struct Message {
  std::optional<Xid> xid;
  bool transactional = false;
  Lsn lsn;
  std::string_view prefix;
  std::string_view content;
};
// Streaming of in-progress transactions (protocol version 2+, when `streaming` is on).
struct StreamStart {
  Xid xid;
  bool firstSegment = false;
};
struct StreamStop {};
struct StreamCommit {
  Xid xid;
  uint8_t flags = 0;
  Lsn commitLsn;
  Lsn endLsn;
  PgTimestamp commitTime;
};
struct StreamAbort {
  Xid xid;
  Xid subXid;
  // Protocol version 4 (PostgreSQL 16+) appends these only when streaming = parallel.
  std::optional<Lsn> abortLsn;
  std::optional<PgTimestamp> abortTime;
};
// Two-phase commit (protocol version 3+, when `two_phase` is on).
struct BeginPrepare {
  Lsn prepareLsn;
  Lsn endLsn;
  PgTimestamp prepareTime;
  Xid xid;
  std::string_view gid;
};
struct Prepare {  // also Stream Prepare ('p'), with `streamed` set
  uint8_t flags = 0;
  Lsn prepareLsn;
  Lsn endLsn;
  PgTimestamp prepareTime;
  Xid xid;
  std::string_view gid;
  bool streamed = false;
};
struct CommitPrepared {
  uint8_t flags = 0;
  Lsn commitLsn;
  Lsn endLsn;
  PgTimestamp commitTime;
  Xid xid;
  std::string_view gid;
};
struct RollbackPrepared {
  uint8_t flags = 0;
  Lsn prepareEndLsn;
  Lsn rollbackEndLsn;
  PgTimestamp prepareTime;
  PgTimestamp rollbackTime;
  Xid xid;
  std::string_view gid;
};

using Message_ =
    std::variant<Begin, Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate, Message, StreamStart,
                 StreamStop, StreamCommit, StreamAbort, BeginPrepare, Prepare, CommitPrepared, RollbackPrepared>;
using PgOutputMessage = Message_;

// The streaming replication protocol's CopyData payloads around pgoutput.
// https://www.postgresql.org/docs/15/protocol-replication.html
struct XLogData {
  Lsn walStart;
  Lsn walEnd;  // the server's current end of WAL
  PgTimestamp sendTime;
  std::string_view data;  // one pgoutput message
};
struct PrimaryKeepalive {
  Lsn walEnd;
  PgTimestamp sendTime;
  bool replyRequested = false;
};
using ReplicationMessage = std::variant<XLogData, PrimaryKeepalive>;

}  // namespace outbox::pgoutput
