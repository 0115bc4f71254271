#include "src/PgOutputDecoder.h"

#include <cstdint>
#include <string>
#include <utility>

#include "src/ByteReader.h"

namespace outbox::pgoutput {

namespace {

// The smallest encodings, to refuse a count that what remains cannot hold before reserving memory for it.
constexpr size_t kMinTupleColumnSize = 1;      // kind byte ('n' or 'u')
constexpr size_t kMinRelationColumnSize = 10;  // flags, empty name's NUL, type OID, type modifier

std::string describeByte(char byte) {
  static constexpr char kHex[] = "0123456789abcdef";
  auto value = static_cast<unsigned char>(byte);
  std::string text;
  if (value >= 0x20 && value < 0x7f) {
    text += '\'';
    text += byte;
    text += "' ";
  }
  text += "(0x";
  text += kHex[value >> 4];
  text += kHex[value & 0xf];
  text += ')';
  return text;
}

// TupleData: Int16 column count, then per column a kind byte and, for text and binary values, an Int32 length
// and the bytes.
TupleData readTupleData(ByteReader& in) {
  size_t countOffset = in.offset();
  int16_t count = in.readInt16("column count");
  in.checkCount(count, kMinTupleColumnSize, countOffset, "column count");
  TupleData tuple(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    ColumnValue& column = tuple[static_cast<size_t>(i)];
    size_t kindOffset = in.offset();
    char kind = in.readChar({"column", i + 1, "kind"});
    switch (kind) {
      case 'n':
        column.kind = ColumnValue::Kind::Null;
        break;
      case 'u':  // a TOASTed value the UPDATE did not change: the server does not send it again
        column.kind = ColumnValue::Kind::UnchangedToast;
        break;
      case 't':
      case 'b':
        column.kind = kind == 't' ? ColumnValue::Kind::Text : ColumnValue::Kind::Binary;
        column.data = in.readLengthPrefixed({"column", i + 1, "length"}, {"column", i + 1, "data"});
        break;
      default:
        in.failAt(kindOffset, "unknown kind " + describeByte(kind), {"column", i + 1, "kind"});
    }
  }
  return tuple;
}

Begin readBegin(ByteReader& in) {
  Begin m;
  m.finalLsn = in.readLsn("final LSN");
  m.commitTime = in.readTimestamp("commit timestamp");
  m.xid = in.readXid("xid");
  return m;
}

Commit readCommit(ByteReader& in) {
  Commit m;
  m.flags = in.readUint8("flags");
  m.commitLsn = in.readLsn("commit LSN");
  m.endLsn = in.readLsn("end LSN");
  m.commitTime = in.readTimestamp("commit timestamp");
  return m;
}

Origin readOrigin(ByteReader& in) {
  Origin m;
  m.commitLsn = in.readLsn("commit LSN");
  m.name = in.readCString("origin name");
  return m;
}

Relation readRelation(ByteReader& in, std::optional<Xid> xid) {
  Relation m;
  m.xid = xid;
  m.relationId = in.readRelationId("relation id");
  m.nspname = in.readCString("namespace");
  m.relname = in.readCString("relation name");
  m.replicaIdentity = in.readChar("replica identity");
  size_t countOffset = in.offset();
  int16_t count = in.readInt16("column count");
  in.checkCount(count, kMinRelationColumnSize, countOffset, "column count");
  m.columns.resize(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    RelationColumn& column = m.columns[static_cast<size_t>(i)];
    column.flags = in.readUint8({"column", i + 1, "flags"});
    column.name = in.readCString({"column", i + 1, "name"});
    column.typeOid = in.readUint32({"column", i + 1, "type OID"});
    column.typeModifier = in.readInt32({"column", i + 1, "type modifier"});
  }
  return m;
}

Type readType(ByteReader& in, std::optional<Xid> xid) {
  Type m;
  m.xid = xid;
  m.typeOid = in.readUint32("type OID");
  m.nspname = in.readCString("namespace");
  m.typname = in.readCString("type name");
  return m;
}

Insert readInsert(ByteReader& in, std::optional<Xid> xid) {
  Insert m;
  m.xid = xid;
  m.relationId = in.readRelationId("relation id");
  size_t markerOffset = in.offset();
  char marker = in.readChar("new tuple marker");
  if (marker != 'N') in.failAt(markerOffset, "expected 'N', got " + describeByte(marker), "new tuple marker");
  m.newTuple = readTupleData(in);
  return m;
}

// Update: an optional old tuple ('K' the replica identity key, when it changed; 'O' the whole old row, with
// REPLICA IDENTITY FULL), then 'N' and the new tuple.
Update readUpdate(ByteReader& in, std::optional<Xid> xid) {
  Update m;
  m.xid = xid;
  m.relationId = in.readRelationId("relation id");
  size_t markerOffset = in.offset();
  char marker = in.readChar("tuple marker");
  if (marker == 'K' || marker == 'O') {
    m.oldTuple = readTupleData(in);
    markerOffset = in.offset();
    marker = in.readChar("new tuple marker");
  }
  if (marker != 'N') {
    in.failAt(markerOffset, "expected 'K', 'O' or 'N', got " + describeByte(marker), "tuple marker");
  }
  m.newTuple = readTupleData(in);
  return m;
}

Delete readDelete(ByteReader& in, std::optional<Xid> xid) {
  Delete m;
  m.xid = xid;
  m.relationId = in.readRelationId("relation id");
  size_t markerOffset = in.offset();
  char marker = in.readChar("old tuple marker");
  if (marker != 'K' && marker != 'O') {
    in.failAt(markerOffset, "expected 'K' or 'O', got " + describeByte(marker), "old tuple marker");
  }
  m.oldTuple = readTupleData(in);
  return m;
}

Truncate readTruncate(ByteReader& in, std::optional<Xid> xid) {
  Truncate m;
  m.xid = xid;
  size_t countOffset = in.offset();
  int32_t count = in.readInt32("relation count");
  m.options = in.readUint8("options");
  in.checkCount(count, sizeof(uint32_t), countOffset, "relation count");
  m.relationIds.resize(static_cast<size_t>(count));
  for (int32_t i = 0; i < count; ++i) {
    m.relationIds[static_cast<size_t>(i)] = in.readRelationId({"relation id", i + 1, nullptr});
  }
  return m;
}

Message readMessage(ByteReader& in, std::optional<Xid> xid) {
  Message m;
  m.xid = xid;
  m.transactional = (in.readUint8("flags") & 1) != 0;
  m.lsn = in.readLsn("LSN");
  m.prefix = in.readCString("prefix");
  m.content = in.readLengthPrefixed("content length", "content");
  return m;
}

StreamCommit readStreamCommit(ByteReader& in) {
  StreamCommit m;
  m.xid = in.readXid("xid");
  m.flags = in.readUint8("flags");
  m.commitLsn = in.readLsn("commit LSN");
  m.endLsn = in.readLsn("end LSN");
  m.commitTime = in.readTimestamp("commit timestamp");
  return m;
}

// Xid and subtransaction xid; protocol version 4 (PostgreSQL 16+) appends the abort LSN and time when streaming =
// parallel (pgoutput_stream_abort's write_abort_info). The message has no flag for it: its length tells (fewer
// than 16 more bytes are trailing bytes, an error).
StreamAbort readStreamAbort(ByteReader& in) {
  StreamAbort m;
  m.xid = in.readXid("xid");
  m.subXid = in.readXid("subtransaction xid");
  if (in.remaining() >= 16) {
    m.abortLsn = in.readLsn("abort LSN");
    m.abortTime = in.readTimestamp("abort timestamp");
  }
  return m;
}

BeginPrepare readBeginPrepare(ByteReader& in) {
  BeginPrepare m;
  m.prepareLsn = in.readLsn("prepare LSN");
  m.endLsn = in.readLsn("end LSN");
  m.prepareTime = in.readTimestamp("prepare timestamp");
  m.xid = in.readXid("xid");
  m.gid = in.readCString("gid");
  return m;
}

// Prepare ('P') and Stream Prepare ('p') share one layout.
Prepare readPrepare(ByteReader& in, bool streamed) {
  Prepare m;
  m.streamed = streamed;
  m.flags = in.readUint8("flags");
  m.prepareLsn = in.readLsn("prepare LSN");
  m.endLsn = in.readLsn("end LSN");
  m.prepareTime = in.readTimestamp("prepare timestamp");
  m.xid = in.readXid("xid");
  m.gid = in.readCString("gid");
  return m;
}

CommitPrepared readCommitPrepared(ByteReader& in) {
  CommitPrepared m;
  m.flags = in.readUint8("flags");
  m.commitLsn = in.readLsn("commit LSN");
  m.endLsn = in.readLsn("end LSN");
  m.commitTime = in.readTimestamp("commit timestamp");
  m.xid = in.readXid("xid");
  m.gid = in.readCString("gid");
  return m;
}

RollbackPrepared readRollbackPrepared(ByteReader& in) {
  RollbackPrepared m;
  m.flags = in.readUint8("flags");
  m.prepareEndLsn = in.readLsn("prepare end LSN");
  m.rollbackEndLsn = in.readLsn("rollback end LSN");
  m.prepareTime = in.readTimestamp("prepare timestamp");
  m.rollbackTime = in.readTimestamp("rollback timestamp");
  m.xid = in.readXid("xid");
  m.gid = in.readCString("gid");
  return m;
}

// A message is complete only when nothing follows it.
template <typename T>
PgOutputMessage complete(const ByteReader& in, T&& message) {
  in.expectEnd();
  return PgOutputMessage(std::forward<T>(message));
}

void writeBigEndian64(char* out, uint64_t value) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<char>(value & 0xff);
    value >>= 8;
  }
}

}  // namespace

PgOutputMessage PgOutputDecoder::decode(std::string_view bytes) {
  ByteReader in(bytes, "pgoutput");
  char type = in.readChar("message type");

  // Inside a stream block, the data messages start with the xid of the (sub)transaction that made the change.
  auto streamXid = [&]() -> std::optional<Xid> {
    if (!inStreamBlock_) return std::nullopt;
    return in.readXid("xid");
  };

  switch (type) {
    case 'B':
      in.setContext("pgoutput Begin");
      return complete(in, readBegin(in));
    case 'C':
      in.setContext("pgoutput Commit");
      return complete(in, readCommit(in));
    case 'O':  // also sent right after Stream Start, without an xid
      in.setContext("pgoutput Origin");
      return complete(in, readOrigin(in));
    case 'R':
      in.setContext("pgoutput Relation");
      return complete(in, readRelation(in, streamXid()));
    case 'Y':
      in.setContext("pgoutput Type");
      return complete(in, readType(in, streamXid()));
    case 'I':
      in.setContext("pgoutput Insert");
      return complete(in, readInsert(in, streamXid()));
    case 'U':
      in.setContext("pgoutput Update");
      return complete(in, readUpdate(in, streamXid()));
    case 'D':
      in.setContext("pgoutput Delete");
      return complete(in, readDelete(in, streamXid()));
    case 'T':
      in.setContext("pgoutput Truncate");
      return complete(in, readTruncate(in, streamXid()));
    case 'M':
      in.setContext("pgoutput Message");
      return complete(in, readMessage(in, streamXid()));
    case 'S': {
      in.setContext("pgoutput Stream Start");
      // A nested Stream Start means we lost track of the stream; every xid read from here on would be wrong.
      if (inStreamBlock_) in.failAt(0, "already inside a stream block", "message type");
      StreamStart m;
      m.xid = in.readXid("xid");
      m.firstSegment = in.readUint8("first segment") != 0;
      in.expectEnd();
      inStreamBlock_ = true;
      return m;
    }
    case 'E':
      in.setContext("pgoutput Stream Stop");
      if (!inStreamBlock_) in.failAt(0, "not inside a stream block", "message type");
      in.expectEnd();
      inStreamBlock_ = false;
      return StreamStop{};
    case 'c':
      in.setContext("pgoutput Stream Commit");
      return complete(in, readStreamCommit(in));
    case 'A':
      in.setContext("pgoutput Stream Abort");
      return complete(in, readStreamAbort(in));
    case 'b':
      in.setContext("pgoutput Begin Prepare");
      return complete(in, readBeginPrepare(in));
    case 'P':
      in.setContext("pgoutput Prepare");
      return complete(in, readPrepare(in, false));
    case 'K':
      in.setContext("pgoutput Commit Prepared");
      return complete(in, readCommitPrepared(in));
    case 'r':
      in.setContext("pgoutput Rollback Prepared");
      return complete(in, readRollbackPrepared(in));
    case 'p':
      in.setContext("pgoutput Stream Prepare");
      return complete(in, readPrepare(in, true));
    default:
      in.failAt(0, "unknown message type " + describeByte(type), "message type");
  }
}

ReplicationMessage PgOutputDecoder::decodeReplication(std::string_view bytes) {
  ByteReader in(bytes, "replication");
  char type = in.readChar("message type");
  switch (type) {
    case 'w': {
      in.setContext("replication XLogData");
      XLogData m;
      m.walStart = in.readLsn("WAL start");
      m.walEnd = in.readLsn("WAL end");
      m.sendTime = in.readTimestamp("send time");
      m.data = in.readBytes(in.remaining(), "data");
      return m;
    }
    case 'k': {
      in.setContext("replication keepalive");
      PrimaryKeepalive m;
      m.walEnd = in.readLsn("WAL end");
      m.sendTime = in.readTimestamp("send time");
      m.replyRequested = in.readUint8("reply requested") != 0;
      in.expectEnd();
      return m;
    }
    default:
      in.failAt(0, "unknown message type " + describeByte(type), "message type");
  }
}

std::string PgOutputDecoder::encodeStandbyStatusUpdate(Lsn write, Lsn flush, Lsn apply, PgTimestamp now,
                                                       bool replyRequested) {
  std::string out(34, '\0');
  out[0] = 'r';
  writeBigEndian64(&out[1], write.value());
  writeBigEndian64(&out[9], flush.value());
  writeBigEndian64(&out[17], apply.value());
  writeBigEndian64(&out[25], static_cast<uint64_t>(now.micros));
  out[33] = replyRequested ? 1 : 0;
  return out;
}

}  // namespace outbox::pgoutput
