// The pgoutput decoder on the messages of every PostgreSQL version the relay supports (13 to 18), captured by
// tests/data/pgoutput/capture with the protocol version the relay asks of that server (1, 2, 3, 4). Each file holds
// the same workload; decoded and replayed (relations tracked, transactions grouped), every version must give the
// same outcome, so a version-specific decoding difference fails here. The differences that are PostgreSQL's own
// are spelled out: 13 sends no logical decoding messages, and 13 and 14 send transactions without a published
// change as an empty Begin/Commit (15 skips them).

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "src/PgOutputDecoder.h"
#include "src/ReplicationStream.h"
#include "support/CapturedPgOutput.h"

namespace {

using namespace outbox;
using namespace outbox::pgoutput;

struct Capture {
  int serverVersionNum = 0;
  int protoVersion = 0;
  bool messages = false;
  std::vector<std::pair<std::string, std::string>> messagesByLsn;  // (lsn, bytes)
};

std::string capturePath(int major) {
  return std::string(OUTBOX_SOURCE_DIR) + "/tests/data/pgoutput/pg" + std::to_string(major) + ".txt";
}

// The file format of tests/data/pgoutput/capture: '#' comments, "key value" header lines, then "lsn hex" lines.
Capture loadCapture(int major) {
  std::ifstream in(capturePath(major));
  if (!in) throw std::runtime_error("cannot read " + capturePath(major) + " (run tests/data/pgoutput/capture)");
  Capture capture;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string key, value;
    fields >> key >> value;
    if (key == "server_version_num") {
      capture.serverVersionNum = std::stoi(value);
    } else if (key == "proto_version") {
      capture.protoVersion = std::stoi(value);
    } else if (key == "messages") {
      capture.messages = value == "true";
    } else if (key.find('/') != std::string::npos) {
      capture.messagesByLsn.emplace_back(key, captured::fromHex(value));
    } else {
      throw std::runtime_error(capturePath(major) + ": unexpected line: " + line);
    }
  }
  return capture;
}

// What the relay's path makes of the stream, as text: per non-empty transaction its relations, changes and
// messages; a non-transactional message is a group of its own. Column values verbatim, NULL as NULL.
struct Outcome {
  std::vector<std::vector<std::string>> groups;
  int emptyTransactions = 0;
};

std::string typeName(uint32_t oid, const std::map<uint32_t, std::string>& types) {
  static const std::map<uint32_t, std::string> kBuiltin = {
      {20, "int8"}, {23, "int4"}, {25, "text"}, {17, "bytea"}, {3802, "jsonb"}};
  if (auto it = kBuiltin.find(oid); it != kBuiltin.end()) return it->second;
  if (auto it = types.find(oid); it != types.end()) return it->second;
  return "oid " + std::to_string(oid);
}

std::string tupleText(const TupleData& tuple, const Relation& relation) {
  std::string text;
  if (tuple.size() != relation.columns.size()) return "(column count mismatch)";
  for (size_t i = 0; i < tuple.size(); ++i) {
    text += (i ? ", " : "") + std::string(relation.columns[i].name) + "=";
    switch (tuple[i].kind) {
      case ColumnValue::Kind::Null:
        text += "NULL";
        break;
      case ColumnValue::Kind::UnchangedToast:
        text += "UNCHANGED";
        break;
      case ColumnValue::Kind::Text:
        text += std::string(tuple[i].data);
        break;
      case ColumnValue::Kind::Binary:
        text += "binary";
        break;
    }
  }
  return "(" + text + ")";
}

Outcome replay(const Capture& capture) {
  PgOutputDecoder decoder;
  Outcome outcome;
  std::map<uint32_t, Relation> relations;
  std::map<uint32_t, std::string> types;
  std::optional<Begin> open;
  std::vector<std::string> current;
  auto relationName = [&](RelationId id) {
    auto it = relations.find(id.value);
    if (it == relations.end())
      throw std::runtime_error("change of relation " + std::to_string(id.value) + " before its Relation");
    return std::string(it->second.nspname) + "." + std::string(it->second.relname);
  };
  for (const auto& [lsn, bytes] : capture.messagesByLsn) {
    PgOutputMessage message = decoder.decode(bytes);
    std::visit(
        [&](const auto& m) {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, Begin>) {
            if (open) throw std::runtime_error("Begin at " + lsn + " inside a transaction");
            open = m;
            current.clear();
          } else if constexpr (std::is_same_v<T, Commit>) {
            if (!open) throw std::runtime_error("Commit at " + lsn + " outside a transaction");
            EXPECT_EQ(m.commitLsn, open->finalLsn) << "Commit at " << lsn;
            EXPECT_GT(m.endLsn, m.commitLsn) << "Commit at " << lsn;
            EXPECT_EQ(m.commitTime.micros, open->commitTime.micros) << "Commit at " << lsn;
            if (current.empty()) {
              ++outcome.emptyTransactions;
            } else {
              outcome.groups.push_back(current);
            }
            open.reset();
          } else if constexpr (std::is_same_v<T, Relation>) {
            EXPECT_FALSE(m.xid) << "no xid outside a stream block";
            std::string text = "relation " + std::string(m.nspname) + "." + std::string(m.relname) + " identity " +
                               m.replicaIdentity + " (";
            for (size_t i = 0; i < m.columns.size(); ++i) {
              text += (i ? ", " : "") + std::string(m.columns[i].name) + " " + typeName(m.columns[i].typeOid, types) +
                      ((m.columns[i].flags & 1) ? " key" : "");
            }
            current.push_back(text + ")");
            relations[m.relationId.value] = m;
          } else if constexpr (std::is_same_v<T, Type>) {
            types[m.typeOid] = std::string(m.nspname) + "." + std::string(m.typname);
            current.push_back("type " + types[m.typeOid]);
          } else if constexpr (std::is_same_v<T, Insert>) {
            current.push_back("insert " + relationName(m.relationId) +
                              tupleText(m.newTuple, relations[m.relationId.value]));
          } else if constexpr (std::is_same_v<T, Update>) {
            const Relation& relation = relations[m.relationId.value];
            current.push_back("update " + relationName(m.relationId) +
                              (m.oldTuple ? " old" + tupleText(*m.oldTuple, relation) : std::string()) + " new" +
                              tupleText(m.newTuple, relation));
          } else if constexpr (std::is_same_v<T, Delete>) {
            current.push_back("delete " + relationName(m.relationId) +
                              tupleText(m.oldTuple, relations[m.relationId.value]));
          } else if constexpr (std::is_same_v<T, Truncate>) {
            std::string text = "truncate";
            for (RelationId id : m.relationIds) text += " " + relationName(id);
            current.push_back(text);
          } else if constexpr (std::is_same_v<T, Message>) {
            EXPECT_NE(m.lsn, Lsn()) << "Message at " << lsn;
            std::string text = std::string("message ") + (m.transactional ? "transactional " : "non-transactional ") +
                               std::string(m.prefix) + ": " + std::string(m.content);
            if (m.transactional != open.has_value()) throw std::runtime_error("Message at " + lsn + " misplaced");
            if (open) {
              current.push_back(text);
            } else {
              outcome.groups.push_back({text});
            }
          } else {
            throw std::runtime_error("message at " + lsn +
                                     " is of a kind a stream without streaming or two_phase "
                                     "never carries (variant index " +
                                     std::to_string(message.index()) + ")");
          }
        },
        message);
  }
  EXPECT_FALSE(open) << "the capture ends inside a transaction";
  EXPECT_FALSE(decoder.inStreamBlock());
  return outcome;
}

// The outcome of the capture script's workload, with logical decoding messages where the server sends them.
std::vector<std::vector<std::string>> expectedOutcome(bool withMessages) {
  const std::string outbox5 =
      "relation public.outbox identity d (id int8 key, topic text, payload jsonb, blob bytea, note text)";
  std::vector<std::vector<std::string>> expected = {
      {outbox5,
       R"(insert public.outbox(id=1, topic=orders, payload={"id": 42, "total": "9.99"}, blob=\x00ff10, note=NULL))"},
      {"insert public.outbox(id=2, topic=m1, payload=1, blob=NULL, note=NULL)",
       "insert public.outbox(id=3, topic=m2, payload=2, blob=NULL, note=NULL)",
       "insert public.outbox(id=4, topic=m3, payload=NULL, blob=NULL, note=NULL)"},
      {R"(update public.outbox new(id=1, topic=orders, payload={"id": 42, "total": "9.99"}, blob=\x00ff10, note=shipped))"},
      {"delete public.outbox(id=4, topic=NULL, payload=NULL, blob=NULL, note=NULL)"},
  };
  std::vector<std::string> withMessage;
  if (withMessages) withMessage.push_back("message transactional outbox: hello tx");
  withMessage.push_back("insert public.outbox(id=5, topic=after message, payload=NULL, blob=NULL, note=NULL)");
  expected.push_back(withMessage);
  if (withMessages) expected.push_back({"message non-transactional outbox: hello nontx"});
  std::vector<std::vector<std::string>> rest = {
      {"relation public.outbox identity d (id int8 key, topic text, payload jsonb, blob bytea, note text, headers "
       "text)",
       "insert public.outbox(id=6, topic=after add column, payload=NULL, blob=NULL, note=NULL, headers=h=1)"},
      // 7 and 9 were rolled back (the transaction, the savepoint): never sent.
      {"insert public.outbox(id=8, topic=before savepoint, payload=NULL, blob=NULL, note=NULL, headers=NULL)",
       "insert public.outbox(id=10, topic=after savepoint, payload=NULL, blob=NULL, note=NULL, headers=NULL)"},
      // PREPARE TRANSACTION ... COMMIT PREPARED, two_phase off: sent whole at COMMIT PREPARED.
      {"insert public.outbox(id=11, topic=prepared, payload=NULL, blob=NULL, note=NULL, headers=NULL)"},
      {"type public.mood", "relation public.moods identity d (id int4 key, m public.mood)",
       "insert public.moods(id=1, m=happy)"},
      {"relation public.child identity d (id int4 key)", "insert public.child(id=1)"},
      {"relation public.child identity d (id int4 key)", "truncate public.child"},
      {"relation public.outbox identity d (id int8 key, topic text, payload jsonb, blob bytea, headers text)",
       R"(insert public.outbox(id=12, topic=last, payload={"nested": {"a": [1, 2, null]}}, blob=NULL, headers=NULL))"},
  };
  expected.insert(expected.end(), rest.begin(), rest.end());
  return expected;
}

class PgOutputVersions : public ::testing::TestWithParam<int> {};

TEST_P(PgOutputVersions, CaptureUsesTheProtocolTheRelayPicks) {
  int major = GetParam();
  Capture capture = loadCapture(major);
  EXPECT_EQ(capture.serverVersionNum / 10000, major) << capturePath(major);
  EXPECT_EQ(capture.protoVersion, ReplicationStream::protocolVersionFor(capture.serverVersionNum));
  EXPECT_EQ(capture.messages, ReplicationStream::sendsLogicalMessages(capture.serverVersionNum));
  EXPECT_FALSE(capture.messagesByLsn.empty());
}

TEST_P(PgOutputVersions, EveryMessageDecodesToTheSameOutcome) {
  int major = GetParam();
  Capture capture = loadCapture(major);
  Outcome outcome = replay(capture);
  auto expected = expectedOutcome(capture.messages);
  ASSERT_EQ(outcome.groups.size(), expected.size()) << "PostgreSQL " << major;
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(outcome.groups[i], expected[i]) << "group " << i;
  // Transactions without a published change: the insert into a table outside the publication and the two ALTER
  // TABLEs. 13 and 14 send each as Begin/Commit; 15 on skip them. (The non-transactional message's own transaction
  // has no xid: no version sends a Begin for it.)
  EXPECT_EQ(outcome.emptyTransactions, major <= 14 ? 3 : 0) << "PostgreSQL " << major;
}

INSTANTIATE_TEST_SUITE_P(PostgreSQL, PgOutputVersions, ::testing::Values(13, 14, 15, 16, 17, 18),
                         [](const auto& info) { return "pg" + std::to_string(info.param); });

TEST(PgOutputProtocol, VersionPerServer) {
  EXPECT_EQ(ReplicationStream::protocolVersionFor(130023), 1);
  EXPECT_EQ(ReplicationStream::protocolVersionFor(140000), 2);
  EXPECT_EQ(ReplicationStream::protocolVersionFor(150018), 3);
  EXPECT_EQ(ReplicationStream::protocolVersionFor(160000), 4);
  EXPECT_EQ(ReplicationStream::protocolVersionFor(170010), 4);
  EXPECT_EQ(ReplicationStream::protocolVersionFor(180004), 4);
  EXPECT_FALSE(ReplicationStream::sendsLogicalMessages(130023));
  EXPECT_TRUE(ReplicationStream::sendsLogicalMessages(140000));
  EXPECT_EQ(ReplicationStream::versionString(160014), "16.14");
  EXPECT_EQ(ReplicationStream::versionString(130023), "13.23");
}

// Stream Abort of protocol version 4 with streaming = parallel carries the abort LSN and time (pgoutput.c
// pgoutput_stream_abort, write_abort_info); without, xid and subxid only. Anything in between is an error.
TEST(PgOutputProtocol, StreamAbortWithAndWithoutTheVersion4Fields) {
  PgOutputDecoder decoder;
  std::string plain = captured::fromHex("41000002ef000002f0");
  auto abort = std::get<StreamAbort>(decoder.decode(plain));
  EXPECT_EQ(abort.xid.value, 0x2efu);
  EXPECT_EQ(abort.subXid.value, 0x2f0u);
  EXPECT_FALSE(abort.abortLsn);
  EXPECT_FALSE(abort.abortTime);

  std::string parallel = captured::fromHex("41000002ef000002f0000000000163926800032e2daa5480c8");
  abort = std::get<StreamAbort>(decoder.decode(parallel));
  EXPECT_EQ(abort.abortLsn, *Lsn::parse("0/1639268"));
  ASSERT_TRUE(abort.abortTime);
  EXPECT_EQ(abort.abortTime->micros, 0x32e2daa5480c8);

  for (size_t cut = plain.size() + 1; cut < parallel.size(); ++cut) {
    EXPECT_THROW(decoder.decode(std::string_view(parallel).substr(0, cut)), DecodeError) << cut << " bytes";
  }
  EXPECT_THROW(decoder.decode(parallel + "x"), DecodeError);
}

}  // namespace

// A timeline history file as PostgreSQL writes it (00000003.history after two promotions): where each ancestor
// timeline ended. Exactly-once mode checks its progress against it after a failover.
TEST(TimelineHistory, NamesWhereEachAncestorEnded) {
  const std::string history =
      "1\t0/3000158\tno recovery target specified\n"
      "\n"
      "# a comment\n"
      "2\t0/5A00D10\tno recovery target specified\n";
  EXPECT_EQ(outbox::ReplicationStream::timelineEnd(history, 1), outbox::Lsn(0x3000158));
  EXPECT_EQ(outbox::ReplicationStream::timelineEnd(history, 2), outbox::Lsn(0x5A00D10));
  EXPECT_EQ(outbox::ReplicationStream::timelineEnd(history, 3), std::nullopt) << "the current timeline has no end";
  EXPECT_EQ(outbox::ReplicationStream::timelineEnd("", 1), std::nullopt);
  // Whatever the server sends: never a crash, never a made-up position.
  EXPECT_EQ(outbox::ReplicationStream::timelineEnd("1", 1), std::nullopt);
  EXPECT_EQ(outbox::ReplicationStream::timelineEnd("1\tnot-an-lsn\tx", 1), std::nullopt);
  EXPECT_EQ(outbox::ReplicationStream::timelineEnd("99999999999\t0/1\tx", 1), std::nullopt);
  EXPECT_EQ(outbox::ReplicationStream::timelineEnd("x1\t0/1\tx\n1\t0/2", 1), outbox::Lsn(0x2));
}
