// The pgoutput decoder on bytes captured from a real PostgreSQL 15.20 server (scripts/devstack): the messages and
// how they were captured are in support/CapturedPgOutput.h.

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>

#include "src/PgOutputDecoder.h"
#include "support/CapturedPgOutput.h"

namespace {

using namespace outbox;
using namespace outbox::pgoutput;
using namespace outbox::captured;

std::string toHex(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (char c : bytes) {
    hex += kHex[static_cast<unsigned char>(c) >> 4];
    hex += kHex[static_cast<unsigned char>(c) & 0xf];
  }
  return hex;
}

// The bytes of the captured message labelled `label`. They live until the end of the test program: decoded
// messages view them, so they must outlive every decoded message (a temporary here would leave views dangling).
template <size_t N>
const std::string& bytesOf(const Captured (&set)[N], std::string_view label) {
  static std::map<const char*, std::string> decoded;  // node-based: references stay valid
  for (const Captured& captured : set) {
    if (label != captured.label) continue;
    auto it = decoded.find(captured.hex);
    if (it == decoded.end()) it = decoded.emplace(captured.hex, fromHex(captured.hex)).first;
    return it->second;
  }
  throw std::invalid_argument("no captured message labelled " + std::string(label));
}

template <typename T>
T decodeAs(PgOutputDecoder& decoder, std::string_view bytes) {
  PgOutputMessage message = decoder.decode(bytes);
  if (!std::holds_alternative<T>(message)) {
    throw std::runtime_error("decoded the wrong alternative: index " + std::to_string(message.index()));
  }
  return std::get<T>(std::move(message));
}

// Decoded messages view their input: a temporary would die before the assertions read the views.
template <typename T>
T decodeAs(PgOutputDecoder& decoder, std::string&& bytes) = delete;
template <typename T>
T decodeReplicationAs(std::string&& bytes) = delete;

template <typename T>
T decodeReplicationAs(std::string_view bytes) {
  ReplicationMessage message = PgOutputDecoder::decodeReplication(bytes);
  if (!std::holds_alternative<T>(message)) throw std::runtime_error("decoded the wrong replication message");
  return std::get<T>(std::move(message));
}

Lsn lsn(const char* text) { return *Lsn::parse(text); }

// Decodes `bytes` with a copy of `decoder` and returns the DecodeError text, or "" when it decoded.
std::string decodeError(const PgOutputDecoder& decoder, std::string_view bytes) {
  PgOutputDecoder copy = decoder;
  try {
    copy.decode(bytes);
  } catch (const DecodeError& e) {
    return e.what();
  }
  return "";
}

void expectText(const ColumnValue& column, std::string_view text) {
  EXPECT_EQ(column.kind, ColumnValue::Kind::Text);
  EXPECT_EQ(column.data, text);
}
void expectNull(const ColumnValue& column) {
  EXPECT_EQ(column.kind, ColumnValue::Kind::Null);
  EXPECT_TRUE(column.data.empty());
}

constexpr RelationId kOutbox{16390};
constexpr RelationId kOutboxFull{16398};
constexpr RelationId kMoods{16405};
constexpr RelationId kChild{16410};
constexpr uint32_t kInt4 = 23, kInt8 = 20, kText = 25, kJsonb = 3802, kBytea = 17;

// ---------------------------------------------------------------------------------------------------------------
// Protocol version 1: one transaction at a time, Begin ... Commit.

TEST(PgOutputDecoder, BeginAndCommit) {
  PgOutputDecoder decoder;
  auto begin = decodeAs<Begin>(decoder, bytesOf(kProto1, "begin insert"));
  EXPECT_EQ(begin.finalLsn, lsn("0/1524918"));
  EXPECT_EQ(begin.commitTime.micros, 0x3042da94f2dfd);
  EXPECT_EQ(begin.xid, Xid{731});

  auto commit = decodeAs<Commit>(decoder, bytesOf(kProto1, "commit insert"));
  EXPECT_EQ(commit.flags, 0);
  EXPECT_EQ(commit.commitLsn, begin.finalLsn) << "Begin announces the LSN of the commit record";
  EXPECT_EQ(commit.endLsn, lsn("0/1524948"));
  EXPECT_EQ(commit.endLsn.toString(), kProto1[3].lsn) << "the slot's lsn column of a Commit is its end LSN";
  EXPECT_EQ(commit.commitTime.micros, begin.commitTime.micros);
}

TEST(PgOutputDecoder, Relation) {
  PgOutputDecoder decoder;
  auto relation = decodeAs<Relation>(decoder, bytesOf(kProto1, "relation outbox"));
  EXPECT_FALSE(relation.xid.has_value());
  EXPECT_EQ(relation.relationId, kOutbox);
  EXPECT_EQ(relation.nspname, "public");
  EXPECT_EQ(relation.relname, "outbox");
  EXPECT_EQ(relation.replicaIdentity, 'd');
  ASSERT_EQ(relation.columns.size(), 5u);
  const struct {
    uint8_t flags;
    const char* name;
    uint32_t typeOid;
  } expected[] = {
      {1, "id", kInt8}, {0, "topic", kText}, {0, "payload", kJsonb}, {0, "blob", kBytea}, {0, "note", kText}};
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(relation.columns[i].flags, expected[i].flags) << i;
    EXPECT_EQ(relation.columns[i].name, expected[i].name) << i;
    EXPECT_EQ(relation.columns[i].typeOid, expected[i].typeOid) << i;
    EXPECT_EQ(relation.columns[i].typeModifier, -1) << i;
  }

  auto full = decodeAs<Relation>(decoder, bytesOf(kProto1, "relation outbox_full"));
  EXPECT_EQ(full.relationId, kOutboxFull);
  EXPECT_EQ(full.relname, "outbox_full");
  EXPECT_EQ(full.replicaIdentity, 'f');
  ASSERT_EQ(full.columns.size(), 2u);
  EXPECT_EQ(full.columns[0].name, "id");
  EXPECT_EQ(full.columns[0].typeOid, kInt4);
  EXPECT_EQ(full.columns[0].flags, 1) << "with REPLICA IDENTITY FULL every column is part of the key";
  EXPECT_EQ(full.columns[1].name, "v");
  EXPECT_EQ(full.columns[1].flags, 1);
}

TEST(PgOutputDecoder, InsertWithTextJsonbByteaAndNull) {
  PgOutputDecoder decoder;
  std::string bytes = bytesOf(kProto1, "insert orders");
  auto insert = decodeAs<Insert>(decoder, bytes);
  EXPECT_FALSE(insert.xid.has_value());
  EXPECT_EQ(insert.relationId, kOutbox);
  ASSERT_EQ(insert.newTuple.size(), 5u);
  expectText(insert.newTuple[0], "1");
  expectText(insert.newTuple[1], "orders");
  expectText(insert.newTuple[2], R"({"id": 42, "total": "9.99"})");  // jsonb in its text output form
  expectText(insert.newTuple[3], R"(\x00ff10)");                     // bytea in its hex text output form
  expectNull(insert.newTuple[4]);
  // Zero-copy: the values are views into the input.
  EXPECT_GE(insert.newTuple[1].data.data(), bytes.data());
  EXPECT_LE(insert.newTuple[1].data.data() + insert.newTuple[1].data.size(), bytes.data() + bytes.size());
}

TEST(PgOutputDecoder, InsertInBinaryFormat) {
  PgOutputDecoder decoder;
  std::string bytes = fromHex(kProto1BinaryInsert.hex);
  auto insert = decodeAs<Insert>(decoder, bytes);
  EXPECT_EQ(insert.relationId, kOutbox);
  ASSERT_EQ(insert.newTuple.size(), 5u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(insert.newTuple[i].kind, ColumnValue::Kind::Binary) << i;
  EXPECT_EQ(insert.newTuple[0].data, std::string_view("\0\0\0\0\0\0\0\1", 8)) << "int8 1, big-endian";
  EXPECT_EQ(insert.newTuple[1].data, "orders");
  EXPECT_EQ(insert.newTuple[2].data,
            "\x01"
            R"({"id": 42, "total": "9.99"})")
      << "jsonb binary: version 1 + text";
  EXPECT_EQ(insert.newTuple[3].data, std::string_view("\x00\xff\x10", 3)) << "bytea binary: the raw bytes";
  expectNull(insert.newTuple[4]);
}

TEST(PgOutputDecoder, UpdateWithoutOldTuple) {
  PgOutputDecoder decoder;
  auto update = decodeAs<Update>(decoder, bytesOf(kProto1, "update note"));
  EXPECT_FALSE(update.xid.has_value());
  EXPECT_EQ(update.relationId, kOutbox);
  EXPECT_FALSE(update.oldTuple.has_value()) << "the key did not change: no 'K' tuple";
  ASSERT_EQ(update.newTuple.size(), 5u);
  expectText(update.newTuple[0], "1");
  expectText(update.newTuple[1], "orders");
  expectText(update.newTuple[2], R"({"id": 42, "total": "9.99"})");
  expectText(update.newTuple[3], R"(\x00ff10)");
  expectText(update.newTuple[4], "shipped");
}

TEST(PgOutputDecoder, UpdateOfTheKeySendsTheOldKey) {
  PgOutputDecoder decoder;
  auto update = decodeAs<Update>(decoder, bytesOf(kProto1, "update key"));
  EXPECT_EQ(update.relationId, kOutbox);
  ASSERT_TRUE(update.oldTuple.has_value());
  ASSERT_EQ(update.oldTuple->size(), 5u);
  expectText((*update.oldTuple)[0], "1");
  for (size_t i = 1; i < 5; ++i) expectNull((*update.oldTuple)[i]);  // only key columns are sent
  ASSERT_EQ(update.newTuple.size(), 5u);
  expectText(update.newTuple[0], "100");
  expectText(update.newTuple[4], "shipped");
}

TEST(PgOutputDecoder, UpdateWithReplicaIdentityFullSendsTheOldRow) {
  PgOutputDecoder decoder;
  auto update = decodeAs<Update>(decoder, bytesOf(kProto1, "update full"));
  EXPECT_EQ(update.relationId, kOutboxFull);
  ASSERT_TRUE(update.oldTuple.has_value());
  ASSERT_EQ(update.oldTuple->size(), 2u);
  expectText((*update.oldTuple)[0], "1");
  expectText((*update.oldTuple)[1], "a");
  ASSERT_EQ(update.newTuple.size(), 2u);
  expectText(update.newTuple[0], "1");
  expectText(update.newTuple[1], "b");
}

TEST(PgOutputDecoder, UpdateLeavingAToastedValueUnchanged) {
  PgOutputDecoder decoder;
  auto update = decodeAs<Update>(decoder, bytesOf(kProto1, "update unchanged toast"));
  EXPECT_EQ(update.relationId, kOutbox);
  EXPECT_FALSE(update.oldTuple.has_value());
  ASSERT_EQ(update.newTuple.size(), 5u);  // id, topic, payload, blob, headers (note was dropped)
  expectText(update.newTuple[0], "8");
  expectText(update.newTuple[1], "big2");
  EXPECT_EQ(update.newTuple[2].kind, ColumnValue::Kind::UnchangedToast) << "the 72 kB payload is not resent";
  EXPECT_TRUE(update.newTuple[2].data.empty());
  expectNull(update.newTuple[3]);
  expectNull(update.newTuple[4]);
}

TEST(PgOutputDecoder, DeleteSendsTheKeyOrTheOldRow) {
  PgOutputDecoder decoder;
  auto byKey = decodeAs<Delete>(decoder, bytesOf(kProto1, "delete"));
  EXPECT_FALSE(byKey.xid.has_value());
  EXPECT_EQ(byKey.relationId, kOutbox);
  ASSERT_EQ(byKey.oldTuple.size(), 5u);
  expectText(byKey.oldTuple[0], "100");
  for (size_t i = 1; i < 5; ++i) expectNull(byKey.oldTuple[i]);

  auto full = decodeAs<Delete>(decoder, bytesOf(kProto1, "delete full"));
  EXPECT_EQ(full.relationId, kOutboxFull);
  ASSERT_EQ(full.oldTuple.size(), 2u);
  expectText(full.oldTuple[0], "1");
  expectText(full.oldTuple[1], "b");
}

TEST(PgOutputDecoder, LogicalDecodingMessages) {
  PgOutputDecoder decoder;
  auto transactional = decodeAs<Message>(decoder, bytesOf(kProto1, "message transactional"));
  EXPECT_FALSE(transactional.xid.has_value());
  EXPECT_TRUE(transactional.transactional);
  EXPECT_EQ(transactional.lsn, lsn("0/1524B98"));
  EXPECT_EQ(transactional.prefix, "outbox");
  EXPECT_EQ(transactional.content, "hello tx");

  // Non-transactional: decoded at once, outside any Begin/Commit (there is none around it in kProto1).
  auto nonTransactional = decodeAs<Message>(decoder, bytesOf(kProto1, "message non-transactional"));
  EXPECT_FALSE(nonTransactional.transactional);
  EXPECT_EQ(nonTransactional.lsn, lsn("0/1524C98"));
  EXPECT_EQ(nonTransactional.prefix, "outbox");
  EXPECT_EQ(nonTransactional.content, "hello nontx");
}

TEST(PgOutputDecoder, AlterTableSendsANewRelationBeforeTheNextRow) {
  PgOutputDecoder decoder;
  auto added = decodeAs<Relation>(decoder, bytesOf(kProto1, "relation after add column"));
  EXPECT_EQ(added.relationId, kOutbox);
  ASSERT_EQ(added.columns.size(), 6u);
  EXPECT_EQ(added.columns[5].name, "headers");
  EXPECT_EQ(added.columns[5].typeOid, kText);
  auto insert = decodeAs<Insert>(decoder, bytesOf(kProto1, "insert after add column"));
  ASSERT_EQ(insert.newTuple.size(), 6u);
  expectText(insert.newTuple[1], "t3");
  expectText(insert.newTuple[5], "h=1");

  auto dropped = decodeAs<Relation>(decoder, bytesOf(kProto1, "relation after drop column"));
  EXPECT_EQ(dropped.relationId, kOutbox);
  ASSERT_EQ(dropped.columns.size(), 5u);
  const char* names[] = {"id", "topic", "payload", "blob", "headers"};
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(dropped.columns[i].name, names[i]);
  auto after = decodeAs<Insert>(decoder, bytesOf(kProto1, "insert after drop column"));
  ASSERT_EQ(after.newTuple.size(), 5u) << "dropped columns are not sent";
  expectText(after.newTuple[0], "4");
  expectText(after.newTuple[1], "t4");
}

TEST(PgOutputDecoder, MultiRowInsertIsOneInsertPerRow) {
  PgOutputDecoder decoder;
  auto begin = decodeAs<Begin>(decoder, bytesOf(kProto1, "begin multi-row"));
  const char* topics[] = {"m1", "m2", "m3"};
  for (int row = 1; row <= 3; ++row) {
    auto insert = decodeAs<Insert>(decoder, bytesOf(kProto1, "insert row " + std::to_string(row)));
    ASSERT_EQ(insert.newTuple.size(), 5u);
    expectText(insert.newTuple[0], std::to_string(4 + row));
    expectText(insert.newTuple[1], topics[row - 1]);
    if (row < 3) {
      expectText(insert.newTuple[2], std::to_string(row));
    } else {
      expectNull(insert.newTuple[2]);
    }
  }
  auto commit = decodeAs<Commit>(decoder, bytesOf(kProto1, "commit multi-row"));
  EXPECT_EQ(commit.commitLsn, begin.finalLsn);
  EXPECT_EQ(begin.xid, Xid{739});
}

TEST(PgOutputDecoder, TypeMessageForAnEnum) {
  PgOutputDecoder decoder;
  auto type = decodeAs<Type>(decoder, bytesOf(kProto1, "type mood"));
  EXPECT_FALSE(type.xid.has_value());
  EXPECT_EQ(type.typeOid, 16385u);
  EXPECT_EQ(type.nspname, "public");
  EXPECT_EQ(type.typname, "mood");
  auto relation = decodeAs<Relation>(decoder, bytesOf(kProto1, "relation moods"));
  EXPECT_EQ(relation.relationId, kMoods);
  ASSERT_EQ(relation.columns.size(), 2u);
  EXPECT_EQ(relation.columns[1].name, "m");
  EXPECT_EQ(relation.columns[1].typeOid, type.typeOid);
  auto insert = decodeAs<Insert>(decoder, bytesOf(kProto1, "insert mood"));
  ASSERT_EQ(insert.newTuple.size(), 2u);
  expectText(insert.newTuple[1], "happy");
}

TEST(PgOutputDecoder, Truncate) {
  PgOutputDecoder decoder;
  auto truncate = decodeAs<Truncate>(decoder, bytesOf(kProto1, "truncate"));
  EXPECT_FALSE(truncate.xid.has_value());
  EXPECT_EQ(truncate.options, 3) << "1 = CASCADE | 2 = RESTART IDENTITY";
  ASSERT_EQ(truncate.relationIds.size(), 2u);
  EXPECT_EQ(truncate.relationIds[0], kOutbox);
  EXPECT_EQ(truncate.relationIds[1], kChild);
}

TEST(PgOutputDecoder, OriginOfAReplicatedTransaction) {
  PgOutputDecoder decoder;
  auto begin = decodeAs<Begin>(decoder, bytesOf(kProto1, "begin origin"));
  // pg_replication_origin_xact_setup's timestamp becomes the commit timestamp: 2024-01-02 03:04:05 UTC.
  EXPECT_EQ(begin.commitTime.unixMicros(), 1704164645LL * 1000000);
  auto origin = decodeAs<Origin>(decoder, bytesOf(kProto1, "origin"));
  EXPECT_EQ(origin.commitLsn, lsn("0/ABCDEF"));
  EXPECT_EQ(origin.name, "upstream");
  auto insert = decodeAs<Insert>(decoder, bytesOf(kProto1, "insert child origin"));
  EXPECT_EQ(insert.relationId, kChild);
}

// Every captured message decodes, in order, to the type its first byte names, and Begin/Commit pair up.
template <size_t N>
void decodeAll(const Captured (&set)[N], bool streaming) {
  PgOutputDecoder decoder;
  std::optional<Begin> open;
  for (const Captured& captured : set) {
    SCOPED_TRACE(captured.label);
    std::string bytes = fromHex(captured.hex);
    PgOutputMessage message;
    ASSERT_NO_THROW(message = decoder.decode(bytes));
    if (auto* begin = std::get_if<Begin>(&message)) {
      EXPECT_FALSE(open.has_value());
      open = *begin;
    } else if (auto* commit = std::get_if<Commit>(&message)) {
      ASSERT_TRUE(open.has_value());
      EXPECT_EQ(commit->commitLsn, open->finalLsn);
      EXPECT_EQ(commit->endLsn.toString(), captured.lsn);
      open.reset();
    }
    EXPECT_TRUE(streaming || !decoder.inStreamBlock());
  }
  EXPECT_FALSE(open.has_value());
  EXPECT_FALSE(decoder.inStreamBlock());
}

TEST(PgOutputDecoder, DecodesEveryCapturedMessageInOrder) {
  decodeAll(kProto1, false);
  decodeAll(kProto2Streaming, true);
  decodeAll(kProto3TwoPhase, true);
}

// ---------------------------------------------------------------------------------------------------------------
// Protocol version 2: streaming of large in-progress transactions.

TEST(PgOutputDecoder, StreamedTransaction) {
  PgOutputDecoder decoder;
  auto start = decodeAs<StreamStart>(decoder, bytesOf(kProto2Streaming, "stream start first"));
  EXPECT_EQ(start.xid, Xid{750});
  EXPECT_TRUE(start.firstSegment);
  EXPECT_TRUE(decoder.inStreamBlock());

  auto message = decodeAs<Message>(decoder, bytesOf(kProto2Streaming, "stream message"));
  EXPECT_EQ(message.xid, Xid{750});
  EXPECT_TRUE(message.transactional);
  EXPECT_EQ(message.prefix, "outbox");
  EXPECT_EQ(message.content, "in stream");

  auto relation = decodeAs<Relation>(decoder, bytesOf(kProto2Streaming, "stream relation"));
  EXPECT_EQ(relation.xid, Xid{750});
  EXPECT_EQ(relation.relationId, kOutbox);
  ASSERT_EQ(relation.columns.size(), 6u);
  EXPECT_EQ(relation.columns[5].name, "note2");

  auto insert = decodeAs<Insert>(decoder, bytesOf(kProto2Streaming, "stream insert"));
  EXPECT_EQ(insert.xid, Xid{750});
  EXPECT_EQ(insert.relationId, kOutbox);
  ASSERT_EQ(insert.newTuple.size(), 6u);
  expectText(insert.newTuple[1], "stream");
  expectText(insert.newTuple[5], std::string(200, 'x'));

  decodeAs<StreamStop>(decoder, bytesOf(kProto2Streaming, "stream stop"));
  EXPECT_FALSE(decoder.inStreamBlock());

  auto next = decodeAs<StreamStart>(decoder, bytesOf(kProto2Streaming, "stream start next"));
  EXPECT_EQ(next.xid, Xid{750});
  EXPECT_FALSE(next.firstSegment);
  decoder.reset();

  auto commit = decodeAs<StreamCommit>(decoder, bytesOf(kProto2Streaming, "stream commit"));
  EXPECT_EQ(commit.xid, Xid{750});
  EXPECT_EQ(commit.flags, 0);
  EXPECT_EQ(commit.commitLsn, lsn("0/158FE78"));
  EXPECT_EQ(commit.endLsn, lsn("0/158FEA8"));
  EXPECT_EQ(commit.commitTime.micros, 0x3042daa546affLL);
}

TEST(PgOutputDecoder, StreamedTransactionAborted) {
  PgOutputDecoder decoder;
  auto abort = decodeAs<StreamAbort>(decoder, bytesOf(kProto2Streaming, "stream abort"));
  EXPECT_EQ(abort.xid, Xid{751});
  EXPECT_EQ(abort.subXid, Xid{751}) << "the top-level transaction aborted: subxid is the xid";
}

TEST(PgOutputDecoder, StreamedSubtransactionRolledBack) {
  PgOutputDecoder decoder;
  auto start = decodeAs<StreamStart>(decoder, bytesOf(kProto2Streaming, "sub: stream start"));
  EXPECT_EQ(start.xid, Xid{752});
  auto child = decodeAs<Insert>(decoder, bytesOf(kProto2Streaming, "sub: insert child"));
  EXPECT_EQ(child.xid, Xid{752});
  EXPECT_EQ(child.relationId, kChild);
  // Changes made in the subtransaction carry the subtransaction's own xid, not the one of Stream Start.
  auto relation = decodeAs<Relation>(decoder, bytesOf(kProto2Streaming, "sub: relation outbox"));
  EXPECT_EQ(relation.xid, Xid{753});
  auto insert = decodeAs<Insert>(decoder, bytesOf(kProto2Streaming, "sub: insert outbox"));
  EXPECT_EQ(insert.xid, Xid{753});
  expectText(insert.newTuple[1], "sub");
  decoder.reset();

  auto abort = decodeAs<StreamAbort>(decoder, bytesOf(kProto2Streaming, "stream abort subtransaction"));
  EXPECT_EQ(abort.xid, Xid{752});
  EXPECT_EQ(abort.subXid, Xid{753});

  decodeAs<StreamStart>(decoder, bytesOf(kProto2Streaming, "sub: stream start last"));
  auto after = decodeAs<Insert>(decoder, bytesOf(kProto2Streaming, "sub: insert child after rollback"));
  EXPECT_EQ(after.xid, Xid{754}) << "ROLLBACK TO SAVEPOINT starts a new subtransaction";
  expectText(after.newTuple[0], "2");
  decodeAs<StreamStop>(decoder, bytesOf(kProto2Streaming, "sub: stream stop last"));
  auto commit = decodeAs<StreamCommit>(decoder, bytesOf(kProto2Streaming, "sub: stream commit"));
  EXPECT_EQ(commit.xid, Xid{752});
  EXPECT_EQ(commit.endLsn, lsn("0/16392A0"));
}

TEST(PgOutputDecoder, XidIsReadOnlyInsideAStreamBlock) {
  // The same bytes mean different things inside and outside a stream block: the decoder must know which.
  PgOutputDecoder decoder;
  std::string insert = bytesOf(kProto1, "insert orders");
  EXPECT_NO_THROW(decoder.decode(insert));
  decodeAs<StreamStart>(decoder, bytesOf(kProto2Streaming, "stream start first"));
  EXPECT_THROW(decoder.decode(insert), DecodeError);
  EXPECT_NO_THROW(decoder.decode(bytesOf(kProto2Streaming, "stream insert")));
  decodeAs<StreamStop>(decoder, bytesOf(kProto2Streaming, "stream stop"));
  EXPECT_THROW(decoder.decode(bytesOf(kProto2Streaming, "stream insert")), DecodeError);
  EXPECT_NO_THROW(decoder.decode(insert));
}

TEST(PgOutputDecoder, StreamBlocksDoNotNest) {
  PgOutputDecoder decoder;
  std::string start = bytesOf(kProto2Streaming, "stream start first");
  std::string stop = bytesOf(kProto2Streaming, "stream stop");
  EXPECT_EQ(decodeError(decoder, stop),
            "pgoutput Stream Stop: not inside a stream block reading message type at offset 0 (message is 1 bytes)");
  decoder.decode(start);
  EXPECT_EQ(decodeError(decoder, start),
            "pgoutput Stream Start: already inside a stream block reading message type at offset 0 (message is 6 "
            "bytes)");
  EXPECT_TRUE(decoder.inStreamBlock()) << "a failed decode leaves the state alone";
  decoder.reset();
  EXPECT_FALSE(decoder.inStreamBlock());
}

// ---------------------------------------------------------------------------------------------------------------
// Protocol version 3: two-phase commit.

TEST(PgOutputDecoder, PreparedTransactionCommitted) {
  PgOutputDecoder decoder;
  auto begin = decodeAs<BeginPrepare>(decoder, bytesOf(kProto3TwoPhase, "begin prepare commit"));
  EXPECT_EQ(begin.prepareLsn, lsn("0/1639358"));
  EXPECT_EQ(begin.endLsn, lsn("0/1639458"));
  EXPECT_EQ(begin.prepareTime.micros, 0x3042dab089f2bLL);
  EXPECT_EQ(begin.xid, Xid{755});
  EXPECT_EQ(begin.gid, "gid-commit");

  auto insert = decodeAs<Insert>(decoder, bytesOf(kProto3TwoPhase, "insert child 10"));
  EXPECT_FALSE(insert.xid.has_value());
  expectText(insert.newTuple.at(0), "10");

  auto prepare = decodeAs<Prepare>(decoder, bytesOf(kProto3TwoPhase, "prepare commit"));
  EXPECT_EQ(prepare.flags, 0);
  EXPECT_EQ(prepare.prepareLsn, begin.prepareLsn);
  EXPECT_EQ(prepare.endLsn, begin.endLsn);
  EXPECT_EQ(prepare.prepareTime.micros, begin.prepareTime.micros);
  EXPECT_EQ(prepare.xid, Xid{755});
  EXPECT_EQ(prepare.gid, "gid-commit");
  EXPECT_FALSE(prepare.streamed);

  auto commit = decodeAs<CommitPrepared>(decoder, bytesOf(kProto3TwoPhase, "commit prepared"));
  EXPECT_EQ(commit.flags, 0);
  EXPECT_EQ(commit.commitLsn, lsn("0/1639458"));
  EXPECT_EQ(commit.endLsn, lsn("0/1639498"));
  EXPECT_EQ(commit.commitTime.micros, 0x3042dab089fd8LL);
  EXPECT_EQ(commit.xid, Xid{755});
  EXPECT_EQ(commit.gid, "gid-commit");
}

TEST(PgOutputDecoder, PreparedTransactionRolledBack) {
  PgOutputDecoder decoder;
  auto begin = decodeAs<BeginPrepare>(decoder, bytesOf(kProto3TwoPhase, "begin prepare rollback"));
  EXPECT_EQ(begin.xid, Xid{756});
  EXPECT_EQ(begin.gid, "gid-rollback");
  auto prepare = decodeAs<Prepare>(decoder, bytesOf(kProto3TwoPhase, "prepare rollback"));
  EXPECT_EQ(prepare.gid, "gid-rollback");
  auto rollback = decodeAs<RollbackPrepared>(decoder, bytesOf(kProto3TwoPhase, "rollback prepared"));
  EXPECT_EQ(rollback.flags, 0);
  EXPECT_EQ(rollback.prepareEndLsn, prepare.endLsn);
  EXPECT_EQ(rollback.prepareEndLsn, lsn("0/1639618"));
  EXPECT_EQ(rollback.rollbackEndLsn, lsn("0/1639658"));
  EXPECT_EQ(rollback.prepareTime.micros, prepare.prepareTime.micros);
  EXPECT_EQ(rollback.rollbackTime.micros, 0x3042dab08a24cLL);
  EXPECT_EQ(rollback.xid, Xid{756});
  EXPECT_EQ(rollback.gid, "gid-rollback");
}

TEST(PgOutputDecoder, StreamedPreparedTransaction) {
  PgOutputDecoder decoder;
  auto start = decodeAs<StreamStart>(decoder, bytesOf(kProto3TwoPhase, "stream start"));
  EXPECT_EQ(start.xid, Xid{757});
  EXPECT_TRUE(start.firstSegment);
  auto insert = decodeAs<Insert>(decoder, bytesOf(kProto3TwoPhase, "stream insert"));
  EXPECT_EQ(insert.xid, Xid{757});
  expectText(insert.newTuple.at(1), "prep-stream");
  decodeAs<StreamStop>(decoder, bytesOf(kProto3TwoPhase, "stream stop"));

  auto prepare = decodeAs<Prepare>(decoder, bytesOf(kProto3TwoPhase, "stream prepare"));
  EXPECT_TRUE(prepare.streamed);
  EXPECT_EQ(prepare.flags, 0);
  EXPECT_EQ(prepare.prepareLsn, lsn("0/16641C0"));
  EXPECT_EQ(prepare.endLsn, lsn("0/16642E0"));
  EXPECT_EQ(prepare.prepareTime.micros, 0x3042dab08b03bLL);
  EXPECT_EQ(prepare.xid, Xid{757});
  EXPECT_EQ(prepare.gid, "gid-stream");

  auto commit = decodeAs<CommitPrepared>(decoder, bytesOf(kProto3TwoPhase, "commit prepared streamed"));
  EXPECT_EQ(commit.commitLsn, prepare.endLsn);
  EXPECT_EQ(commit.endLsn, lsn("0/1664320"));
  EXPECT_EQ(commit.xid, Xid{757});
  EXPECT_EQ(commit.gid, "gid-stream");
}

// ---------------------------------------------------------------------------------------------------------------
// Malformed input: always a DecodeError, never a crash or a read out of bounds.

// Each prefix is copied into a heap block of exactly its size, so that AddressSanitizer sees any read past it.
template <size_t N>
void expectEveryPrefixFails(const Captured (&set)[N]) {
  PgOutputDecoder decoder;  // walks the captured sequence, so stream messages are cut in the right state
  for (const Captured& captured : set) {
    std::string bytes = fromHex(captured.hex);
    for (size_t length = 0; length < bytes.size(); ++length) {
      auto prefix = std::make_unique<char[]>(length);
      if (length > 0) std::memcpy(prefix.get(), bytes.data(), length);
      PgOutputDecoder copy = decoder;
      EXPECT_THROW(copy.decode(std::string_view(prefix.get(), length)), DecodeError)
          << captured.label << " cut to " << length << " of " << bytes.size() << " bytes";
    }
    std::string longer = bytes + '\0';
    EXPECT_NE(decodeError(decoder, longer).find("1 trailing bytes after a complete message"), std::string::npos)
        << captured.label;
    decoder.decode(bytes);
  }
}

TEST(PgOutputDecoder, EveryTruncationAndEveryTrailingByteIsAnError) {
  expectEveryPrefixFails(kProto1);
  expectEveryPrefixFails(kProto2Streaming);
  expectEveryPrefixFails(kProto3TwoPhase);
}

TEST(PgOutputDecoder, ErrorsNameTheMessageTheFieldAndTheOffset) {
  PgOutputDecoder decoder;
  std::string insert = bytesOf(kProto1, "insert orders");  // I, relid, N, count, then t len "1", t len "orders", ...
  EXPECT_EQ(decodeError(decoder, insert.substr(0, 28)),
            "pgoutput Insert: truncated reading column 3 length at offset 26 (message is 28 bytes)");
  EXPECT_EQ(decodeError(decoder, insert.substr(0, 3)),
            "pgoutput Insert: truncated reading relation id at offset 1 (message is 3 bytes)");
  EXPECT_EQ(decodeError(decoder, ""), "pgoutput: truncated reading message type at offset 0 (message is 0 bytes)");
  EXPECT_EQ(decodeError(decoder, insert + "xy"),
            "pgoutput Insert: 2 trailing bytes after a complete message at offset 71 (message is 73 bytes)");
}

TEST(PgOutputDecoder, UnknownMessageType) {
  PgOutputDecoder decoder;
  EXPECT_EQ(decodeError(decoder, "Z"),
            "pgoutput: unknown message type 'Z' (0x5a) reading message type at offset 0 (message is 1 bytes)");
  EXPECT_EQ(decodeError(decoder, std::string_view("\0\0\0", 3)),
            "pgoutput: unknown message type (0x00) reading message type at offset 0 (message is 3 bytes)");
  // A Begin with a lowercase type is not a Begin.
  std::string begin = bytesOf(kProto1, "begin insert");
  begin[0] = 'x';
  EXPECT_THROW(decoder.decode(begin), DecodeError);
}

TEST(PgOutputDecoder, UnknownColumnKind) {
  PgOutputDecoder decoder;
  std::string insert = bytesOf(kProto1, "insert orders");
  ASSERT_EQ(insert[14], 't');  // kind of column 2
  insert[14] = 'x';
  EXPECT_EQ(decodeError(decoder, insert),
            "pgoutput Insert: unknown kind 'x' (0x78) reading column 2 kind at offset 14 (message is 71 bytes)");
}

TEST(PgOutputDecoder, BadLengths) {
  PgOutputDecoder decoder;
  const std::string insert = bytesOf(kProto1, "insert orders");
  auto patched = [&](size_t offset, std::string_view bytes) {
    std::string copy = insert;
    copy.replace(offset, bytes.size(), bytes);
    return copy;
  };
  // Column 1's length (offset 9) negative, or larger than the message.
  EXPECT_EQ(decodeError(decoder, patched(9, "\xff\xff\xff\xff")),
            "pgoutput Insert: negative length -1 reading column 1 length at offset 9 (message is 71 bytes)");
  EXPECT_EQ(decodeError(decoder, patched(9, "\x7f\xff\xff\xff")),
            "pgoutput Insert: truncated reading column 1 data at offset 13 (message is 71 bytes)");
  EXPECT_EQ(decodeError(decoder, patched(9, std::string_view("\x00\x00\x00\x02", 4))),
            "pgoutput Insert: unknown kind (0x00) reading column 2 kind at offset 15 (message is 71 bytes)");
  // The column count (offset 6) negative, or more than the bytes could hold: refused before allocating.
  EXPECT_EQ(decodeError(decoder, patched(6, "\xff\xff")),
            "pgoutput Insert: negative count -1 reading column count at offset 6 (message is 71 bytes)");
  EXPECT_EQ(decodeError(decoder, patched(6, "\x7f\xff")),
            "pgoutput Insert: count 32767 cannot fit in the 63 bytes that remain reading column count at offset 6 "
            "(message is 71 bytes)");
  // Fewer columns than sent: the rest is trailing garbage.
  EXPECT_THROW(decoder.decode(patched(6, std::string_view("\x00\x04", 2))), DecodeError);

  std::string truncate = bytesOf(kProto1, "truncate");  // T, count (offset 1), options, relids
  truncate.replace(1, 4, "\xff\xff\xff\xfe");
  EXPECT_EQ(decodeError(decoder, truncate),
            "pgoutput Truncate: negative count -2 reading relation count at offset 1 (message is 14 bytes)");
  truncate.replace(1, 4, std::string_view("\x10\x00\x00\x00", 4));
  EXPECT_THROW(decoder.decode(truncate), DecodeError);

  std::string message = bytesOf(kProto1, "message transactional");  // M, flags, lsn, "outbox\0", length at 17
  message.replace(17, 4, std::string_view("\x80\x00\x00\x00", 4));
  EXPECT_EQ(decodeError(decoder, message),
            "pgoutput Message: negative length -2147483648 reading content length at offset 17 (message is 29 "
            "bytes)");

  std::string relation = bytesOf(kProto1, "relation child");  // R, relid, "public\0", "child\0", ident, count
  relation.replace(19, 2, std::string_view("\x00\x09", 2));
  EXPECT_THROW(decoder.decode(relation), DecodeError);
}

TEST(PgOutputDecoder, MissingNulTerminator) {
  PgOutputDecoder decoder;
  std::string type = bytesOf(kProto1, "type mood");  // ends with the NUL of "mood"
  type.pop_back();
  EXPECT_EQ(decodeError(decoder, type),
            "pgoutput Type: missing NUL terminator reading type name at offset 12 (message is 16 bytes)");
  std::string origin = bytesOf(kProto1, "origin");
  origin.back() = 'x';
  EXPECT_EQ(decodeError(decoder, origin),
            "pgoutput Origin: missing NUL terminator reading origin name at offset 9 (message is 18 bytes)");
}

TEST(PgOutputDecoder, BadTupleMarkers) {
  PgOutputDecoder decoder;
  std::string update = bytesOf(kProto1, "update key");
  ASSERT_EQ(update[5], 'K');
  update[5] = 'X';
  EXPECT_EQ(decodeError(decoder, update),
            "pgoutput Update: expected 'K', 'O' or 'N', got 'X' (0x58) reading tuple marker at offset 5 (message is "
            "97 bytes)");
  std::string del = bytesOf(kProto1, "delete");
  del[5] = 'N';
  EXPECT_THROW(decoder.decode(del), DecodeError);
  std::string insert = bytesOf(kProto1, "insert orders");
  insert[5] = 'K';
  EXPECT_THROW(decoder.decode(insert), DecodeError);
}

// ---------------------------------------------------------------------------------------------------------------
// The streaming replication protocol around pgoutput.

TEST(PgOutputDecoder, XLogData) {
  std::string bytes = fromHex(kXLogDataBegin);
  auto xlog = decodeReplicationAs<XLogData>(bytes);
  EXPECT_EQ(xlog.walStart, lsn("0/1524800"));
  EXPECT_EQ(xlog.walEnd, lsn("0/1524800"));
  EXPECT_EQ(xlog.sendTime.micros, 0x3042dab84a906LL);
  EXPECT_EQ(toHex(xlog.data), kProto1[0].hex);
  PgOutputDecoder decoder;
  auto begin = decodeAs<Begin>(decoder, xlog.data);
  EXPECT_EQ(begin.xid, Xid{731});

  std::string relationBytes = fromHex(kXLogDataRelation);
  auto relationData = decodeReplicationAs<XLogData>(relationBytes);
  EXPECT_EQ(relationData.walStart, Lsn()) << "the walsender sends Relation messages with no WAL position";
  EXPECT_EQ(relationData.walEnd, Lsn());
  EXPECT_EQ(toHex(relationData.data), kProto1[1].hex);

  // An XLogData header without data is well-formed; the pgoutput decoder then refuses the empty message.
  auto empty = decodeReplicationAs<XLogData>(std::string_view(bytes).substr(0, 25));
  EXPECT_TRUE(empty.data.empty());
  for (size_t length = 0; length < 25; ++length) {
    auto prefix = std::make_unique<char[]>(length);
    if (length > 0) std::memcpy(prefix.get(), bytes.data(), length);
    EXPECT_THROW(PgOutputDecoder::decodeReplication(std::string_view(prefix.get(), length)), DecodeError) << length;
  }
}

TEST(PgOutputDecoder, PrimaryKeepalive) {
  std::string first = fromHex(kKeepalive);
  auto keepalive = decodeReplicationAs<PrimaryKeepalive>(first);
  EXPECT_EQ(keepalive.walEnd, lsn("0/1524798"));
  EXPECT_EQ(keepalive.sendTime.micros, 0x3042dab84a7e1LL);
  EXPECT_FALSE(keepalive.replyRequested);

  std::string bytes = fromHex(kKeepaliveReplyRequested);
  auto urgent = decodeReplicationAs<PrimaryKeepalive>(bytes);
  EXPECT_EQ(urgent.walEnd, lsn("0/1684E70"));
  EXPECT_EQ(urgent.sendTime.micros, 0x3042dade2330bLL);
  EXPECT_TRUE(urgent.replyRequested);

  for (size_t length = 0; length < bytes.size(); ++length) {
    auto prefix = std::make_unique<char[]>(length);
    if (length > 0) std::memcpy(prefix.get(), bytes.data(), length);
    EXPECT_THROW(PgOutputDecoder::decodeReplication(std::string_view(prefix.get(), length)), DecodeError) << length;
  }
  try {
    PgOutputDecoder::decodeReplication(bytes + "!");
    ADD_FAILURE() << "trailing byte accepted";
  } catch (const DecodeError& e) {
    EXPECT_STREQ(e.what(),
                 "replication keepalive: 1 trailing bytes after a complete message at offset 18 (message is 19 "
                 "bytes)");
  }
  try {
    PgOutputDecoder::decodeReplication("r");
    ADD_FAILURE() << "unknown type accepted";
  } catch (const DecodeError& e) {
    EXPECT_STREQ(e.what(),
                 "replication: unknown message type 'r' (0x72) reading message type at offset 0 (message is 1 bytes)");
  }
}

TEST(PgOutputDecoder, StandbyStatusUpdate) {
  std::string update = PgOutputDecoder::encodeStandbyStatusUpdate(lsn("16/B374D848"), lsn("16/B374D800"), lsn("0/1"),
                                                                  PgTimestamp{0x3042dab84a7e1LL}, true);
  ASSERT_EQ(update.size(), 34u);
  EXPECT_EQ(toHex(update),
            "72"                // 'r'
            "00000016b374d848"  // write
            "00000016b374d800"  // flush
            "0000000000000001"  // apply
            "0003042dab84a7e1"  // clock, microseconds since 2000-01-01
            "01");              // reply requested
  EXPECT_EQ(toHex(PgOutputDecoder::encodeStandbyStatusUpdate(Lsn(), Lsn(), Lsn(UINT64_MAX), PgTimestamp{-1}, false)),
            "72" + std::string(32, '0') + std::string(32, 'f') + "00");
}

}  // namespace
