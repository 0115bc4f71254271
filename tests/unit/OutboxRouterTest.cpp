#include <gtest/gtest.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "common/UnixTime.h"
#include "src/KafkaPublisher.h"
#include "src/OutboxRouter.h"

using namespace outbox;
using namespace outbox::pgoutput;

namespace {

RelayConfig configWithOutbox() {
  RelayConfig config;
  OutboxTableConfig table;
  table.schema = "public";
  table.table = "outbox";
  table.headers = {{"eventType", "type"}};
  config.outboxes.push_back(table);
  return config;
}

Relation outboxRelation(uint32_t id, std::vector<std::pair<const char*, uint32_t>> columns) {
  Relation relation;
  relation.relationId = RelationId{id};
  relation.nspname = "public";
  relation.relname = "outbox";
  for (auto& [name, oid] : columns) relation.columns.push_back(RelationColumn{0, name, oid, -1});
  return relation;
}

const std::vector<std::pair<const char*, uint32_t>> kDebeziumColumns = {
    {"id", 2950}, {"aggregatetype", 1043}, {"aggregateid", 1043}, {"type", 1043}, {"payload", 3802}};

ColumnValue text(std::string_view value) { return ColumnValue{ColumnValue::Kind::Text, value}; }
ColumnValue null() { return ColumnValue{ColumnValue::Kind::Null, {}}; }

Insert insertRow(uint32_t relation, TupleData tuple) {
  Insert insert;
  insert.relationId = RelationId{relation};
  insert.newTuple = std::move(tuple);
  return insert;
}

std::string header(const OutboxRecord& record, std::string_view name) {
  for (auto& [k, v] : record.headers) {
    if (k == name) return std::string(v);
  }
  return "<absent>";
}

// A router for the Debezium columns plus one (`column`, of type `oid`), and a row with a value for it.
struct ExtraColumnRouter {
  ExtraColumnRouter(const RelayConfig& config, const char* column, uint32_t oid) : router(config) {
    auto columns = kDebeziumColumns;
    columns.push_back({column, oid});
    router.onRelation(outboxRelation(1, columns));
  }
  OutboxRouter::Outcome route(ColumnValue extra) {
    return router.routeInsert(insertRow(1, {text("i"), text("t"), text("k"), text("T"), text("{}"), extra}), record,
                              error);
  }
  OutboxRouter router;
  OutboxRecord record;
  std::string error;
};

// Routes a row of a table with only the Debezium columns, where `config` names a column it lacks: every row is a
// dead letter; returns its error.
std::string errorForTableWithoutTheColumn(const RelayConfig& config) {
  OutboxRouter router(config);
  router.onRelation(outboxRelation(3, kDebeziumColumns));
  OutboxRecord record;
  std::string error;
  EXPECT_EQ(router.routeInsert(insertRow(3, {text("i"), text("t"), text("k"), text("T"), text("{}")}), record, error),
            OutboxRouter::Outcome::DeadLettered);
  EXPECT_EQ(record.topic, config.deadLetterTopic);
  return error;
}

}  // namespace

TEST(OutboxRouter, RoutesARowWithDebeziumConventions) {
  RelayConfig config = configWithOutbox();
  OutboxRouter router(config);
  router.onRelation(outboxRelation(16384, kDebeziumColumns));
  OutboxRecord record;
  std::string error;
  auto outcome = router.routeInsert(insertRow(16384, {text("6f1c5a3e-0c1e-4f8e-9b7a-2a4d1c0e9f11"), text("order"),
                                                      text("o-1"), text("OrderCreated"), text(R"({"total": 42})")}),
                                    record, error);
  ASSERT_EQ(outcome, OutboxRouter::Outcome::Routed) << error;
  EXPECT_EQ(record.topic, "outbox.event.order");
  EXPECT_EQ(record.key, "o-1");
  EXPECT_EQ(record.value, R"({"total": 42})");
  EXPECT_EQ(header(record, "id"), "6f1c5a3e-0c1e-4f8e-9b7a-2a4d1c0e9f11");
  EXPECT_EQ(header(record, "eventType"), "OrderCreated");
  EXPECT_EQ(record.bytes(), 3u + 13u);
  EXPECT_EQ(router.outboxName(RelationId{16384}), "public.outbox");
}

TEST(OutboxRouter, IgnoresTablesThatAreNotOutboxesButRejectsUndescribedRelations) {
  RelayConfig config = configWithOutbox();
  OutboxRouter router(config);
  Relation other = outboxRelation(1, kDebeziumColumns);
  other.relname = "orders";
  router.onRelation(other);
  OutboxRecord record;
  std::string error;
  EXPECT_EQ(router.routeInsert(insertRow(1, {text("a"), text("b"), text("c"), text("d"), text("e")}), record, error),
            OutboxRouter::Outcome::NotOutbox);
  EXPECT_THROW(router.routeInsert(insertRow(2, {}), record, error), DecodeError);
}

TEST(OutboxRouter, FollowsARenamedOutboxByItsOid) {
  RelayConfig config = configWithOutbox();
  OutboxRouter router(config);
  router.setOutboxOids({16384});
  Relation renamed = outboxRelation(16384, kDebeziumColumns);
  renamed.relname = "outbox_v2";
  EXPECT_EQ(router.onRelation(renamed), &config.outboxes[0]);
  OutboxRecord record;
  std::string error;
  EXPECT_EQ(router.routeInsert(insertRow(16384, {text("i"), text("order"), text("o-1"), text("T"), text("{}")}), record,
                               error),
            OutboxRouter::Outcome::Routed)
      << error;
  EXPECT_EQ(record.topic, "outbox.event.order");
  EXPECT_EQ(router.outboxName(RelationId{16384}), "public.outbox") << "metric labels keep the configured name";
  // Under its configured name it is no rename; another table of the publication stays no outbox.
  EXPECT_EQ(router.onRelation(outboxRelation(16384, kDebeziumColumns)), nullptr);
  Relation other = outboxRelation(20000, kDebeziumColumns);
  other.relname = "outbox_v2";
  EXPECT_EQ(router.onRelation(other), nullptr);
  EXPECT_EQ(router.routeInsert(insertRow(20000, {text("i"), text("order"), text("o-1"), text("T"), text("{}")}), record,
                               error),
            OutboxRouter::Outcome::NotOutbox);
}

TEST(OutboxRouter, DecodesByteaPayloadsToTheirBytesAndKeepsNullPayloadsNull) {
  RelayConfig config = configWithOutbox();
  OutboxRouter router(config);
  auto columns = kDebeziumColumns;
  columns[4].second = 17;  // bytea
  router.onRelation(outboxRelation(7, columns));
  OutboxRecord record;
  std::string error;
  ASSERT_EQ(
      router.routeInsert(insertRow(7, {text("i"), text("t"), text("k"), text("T"), text("\\x00ff41")}), record, error),
      OutboxRouter::Outcome::Routed);
  EXPECT_EQ(record.value, std::string("\x00\xff\x41", 3));
  ASSERT_EQ(router.routeInsert(insertRow(7, {text("i"), text("t"), text("k"), text("T"), null()}), record, error),
            OutboxRouter::Outcome::Routed);
  EXPECT_FALSE(record.value.has_value());
}

TEST(OutboxRouter, InvalidRowsGoToTheDeadLetterTopicWithTheReason) {
  RelayConfig config = configWithOutbox();
  OutboxRouter router(config);
  router.onRelation(outboxRelation(9, kDebeziumColumns));
  OutboxRecord record;
  std::string error;
  EXPECT_EQ(router.routeInsert(insertRow(9, {text("i"), null(), text("k"), text("T"), text("{}")}), record, error),
            OutboxRouter::Outcome::DeadLettered);
  EXPECT_EQ(record.topic, config.deadLetterTopic);
  EXPECT_NE(error.find("aggregatetype"), std::string::npos) << error;
  EXPECT_EQ(header(record, "error"), error);
  EXPECT_EQ(header(record, "id"), "i");
  EXPECT_EQ(record.value, "{}");

  EXPECT_EQ(router.routeInsert(insertRow(9, {text("i"), text("bad topic!"), text("k"), text("T"), text("{}")}), record,
                               error),
            OutboxRouter::Outcome::DeadLettered);
  EXPECT_NE(error.find("not a valid Kafka topic"), std::string::npos) << error;

  EXPECT_EQ(router.routeInsert(insertRow(9, {null(), text("t"), text("k"), text("T"), text("{}")}), record, error),
            OutboxRouter::Outcome::DeadLettered);
  EXPECT_EQ(router.routeInsert(insertRow(9, {text("i"), text("t"), null(), text("T"), text("{}")}), record, error),
            OutboxRouter::Outcome::DeadLettered);
}

TEST(OutboxRouter, FollowsAlterTableThroughNewRelationMessages) {
  RelayConfig config = configWithOutbox();
  OutboxRouter router(config);
  router.onRelation(outboxRelation(5, kDebeziumColumns));
  // ALTER TABLE outbox ADD COLUMN tenant text (first), then DROP COLUMN type: a new Relation message each time.
  router.onRelation(outboxRelation(
      5, {{"tenant", 25}, {"id", 2950}, {"aggregatetype", 1043}, {"aggregateid", 1043}, {"payload", 3802}}));
  OutboxRecord record;
  std::string error;
  ASSERT_EQ(router.routeInsert(insertRow(5, {text("acme"), text("i"), text("order"), text("o-9"), text("{}")}), record,
                               error),
            OutboxRouter::Outcome::Routed)
      << error;
  EXPECT_EQ(record.topic, "outbox.event.order");
  EXPECT_EQ(record.key, "o-9");
  EXPECT_EQ(header(record, "eventType"), "<absent>") << "the optional type column was dropped";

  // Dropping a required column dead-letters rows (visible), instead of guessing.
  router.onRelation(outboxRelation(5, {{"id", 2950}, {"aggregatetype", 1043}, {"payload", 3802}}));
  EXPECT_EQ(router.routeInsert(insertRow(5, {text("i"), text("order"), text("{}")}), record, error),
            OutboxRouter::Outcome::DeadLettered);
  EXPECT_NE(error.find("aggregateid"), std::string::npos) << error;
}

TEST(OutboxRouter, CustomColumnsAndTopicTemplate) {
  RelayConfig config;
  OutboxTableConfig table;
  table.schema = "sales";
  table.table = "events";
  table.idColumn = "event_id";
  table.aggregateTypeColumn = "kind";
  table.aggregateIdColumn = "entity";
  table.payloadColumn = "body";
  table.topicTemplate = "{tenant}.{kind}.v1";
  config.outboxes.push_back(table);
  OutboxRouter router(config);
  Relation relation =
      outboxRelation(3, {{"event_id", 2950}, {"kind", 25}, {"entity", 25}, {"body", 114}, {"tenant", 25}});
  relation.nspname = "sales";
  relation.relname = "events";
  router.onRelation(relation);
  OutboxRecord record;
  std::string error;
  ASSERT_EQ(router.routeInsert(insertRow(3, {text("e1"), text("invoice"), text("inv-1"), text("[1]"), text("acme")}),
                               record, error),
            OutboxRouter::Outcome::Routed)
      << error;
  EXPECT_EQ(record.topic, "acme.invoice.v1");
  EXPECT_EQ(record.key, "inv-1");
  EXPECT_EQ(record.value, "[1]");
}

TEST(OutboxRouter, RoutesLogicalMessagesWithTheConfiguredPrefix) {
  RelayConfig config = configWithOutbox();
  config.messages.enabled = true;
  config.messages.headers = {{"eventType", "type"}};
  OutboxRouter router(config);
  Message message;
  message.transactional = true;
  message.lsn = Lsn(0x100);
  message.prefix = "outbox";
  message.content =
      R"({"id":"e-7","aggregatetype":"customer","aggregateid":"c-7","type":"CustomerRenamed","payload":{"name":"Ada"}})";
  OutboxRecord record;
  std::string error;
  ASSERT_EQ(router.routeMessage(message, record, error), OutboxRouter::Outcome::Routed) << error;
  EXPECT_EQ(record.topic, "outbox.event.customer");
  EXPECT_EQ(record.key, "c-7");
  EXPECT_EQ(record.value, R"({"name":"Ada"})");
  EXPECT_EQ(header(record, "id"), "e-7");
  EXPECT_EQ(header(record, "eventType"), "CustomerRenamed");

  message.prefix = "other";
  EXPECT_EQ(router.routeMessage(message, record, error), OutboxRouter::Outcome::NotOutbox);

  message.prefix = "outbox";
  message.content = "not json";
  EXPECT_EQ(router.routeMessage(message, record, error), OutboxRouter::Outcome::DeadLettered);
  EXPECT_EQ(record.topic, config.deadLetterTopic);
  EXPECT_EQ(record.value, "not json");
  message.content = R"({"aggregatetype":"customer","aggregateid":"c-7"})";
  EXPECT_EQ(router.routeMessage(message, record, error), OutboxRouter::Outcome::DeadLettered);
  EXPECT_NE(error.find("\"id\""), std::string::npos) << error;
}

namespace {
// A router for logical messages with prefix "outbox" (headers eventType <- type, trace <- trace), and one message.
struct MessageRouting {
  RelayConfig config;
  std::unique_ptr<OutboxRouter> router;
  OutboxRecord record;
  std::string error;
  MessageRouting() {
    config.messages.enabled = true;
    config.messages.headers = {{"eventType", "type"}, {"trace", "trace"}};
    router = std::make_unique<OutboxRouter>(config);
  }
  OutboxRouter::Outcome route(std::string_view content) {
    Message message;
    message.transactional = true;
    message.lsn = Lsn(0x2A0);
    message.prefix = "outbox";
    message.content = content;
    error.clear();
    return router->routeMessage(message, record, error);
  }
};

std::string envelope(std::string_view payload) {
  return std::string(R"({"id":"e-1","aggregatetype":"order","aggregateid":"o-1","type":"T","payload":)") +
         std::string(payload) + "}";
}
}  // namespace

TEST(OutboxRouter, MessagePayloadIsForwardedAsWritten) {
  MessageRouting m;
  // Big integers, trailing zeros, key order, unicode escapes, whitespace: none re-rendered.
  for (std::string payload : {std::string(R"({"b":1,"a":2})"), std::string("12345678901234567890123"),
                              std::string("1.10"), std::string("-0.0e+00"), std::string(R"("caf\u00e9")"),
                              std::string("{ \"n\" : [ 1.10 ,\t12345678901234567890123 ] ,\n\"s\":\"\\u00e9\\n\" }"),
                              std::string(R"([true,false,null,{}])"), std::string("1e400")}) {
    ASSERT_EQ(m.route(envelope(payload)), OutboxRouter::Outcome::Routed) << payload << ": " << m.error;
    EXPECT_EQ(m.record.value, payload);
  }
  // Whitespace around the payload is not part of it.
  ASSERT_EQ(m.route(R"({"id":"e-1","aggregatetype":"order","aggregateid":"o-1","payload":  {"x":1}   ,"z":0})"),
            OutboxRouter::Outcome::Routed)
      << m.error;
  EXPECT_EQ(m.record.value, R"({"x":1})");
  // A null or absent payload is a null value.
  ASSERT_EQ(m.route(envelope("null")), OutboxRouter::Outcome::Routed) << m.error;
  EXPECT_FALSE(m.record.value.has_value());
}

TEST(OutboxRouter, MessageKeyHeadersAndTopicAreStringValuesOrRawJsonText) {
  MessageRouting m;
  ASSERT_EQ(m.route(R"({"id":"e-\u0031","aggregatetype":"ord\u0065r","aggregateid":12345678901234567890123,)"
                    R"("type":"Caf\u00e9","trace":{"b":1, "a":[1.10]},"payload":{}})"),
            OutboxRouter::Outcome::Routed)
      << m.error;
  EXPECT_EQ(header(m.record, "id"), "e-1");
  EXPECT_EQ(m.record.topic, "outbox.event.order");
  EXPECT_EQ(m.record.key, "12345678901234567890123");
  EXPECT_EQ(header(m.record, "eventType"), "Caf\xc3\xa9");
  EXPECT_EQ(header(m.record, "trace"), R"({"b":1, "a":[1.10]})");
}

TEST(OutboxRouter, MessageNestedDeeperThanTheBoundIsDeadLettered) {
  MessageRouting m;
  auto nested = [](size_t levels) { return std::string(levels, '[') + std::string(levels, ']'); };
  // The top-level object is level 1: a payload of 511 nested arrays reaches exactly 512.
  std::string atBound = envelope(nested(MessageDocument::kMaxDepth - 1));
  ASSERT_EQ(m.route(atBound), OutboxRouter::Outcome::Routed) << m.error;
  EXPECT_EQ(m.record.value, nested(MessageDocument::kMaxDepth - 1));

  std::string deep = envelope(nested(100000));  // what crashed the nlohmann-based router (dump() recursed)
  ASSERT_EQ(m.route(deep), OutboxRouter::Outcome::DeadLettered);
  EXPECT_EQ(m.record.topic, m.config.deadLetterTopic);
  EXPECT_EQ(m.record.value, deep);
  EXPECT_NE(m.error.find("nested more than 512 levels"), std::string::npos) << m.error;
  EXPECT_NE(header(m.record, "error").find("nested more than 512 levels"), std::string::npos);
  ASSERT_EQ(m.route(envelope(nested(MessageDocument::kMaxDepth))), OutboxRouter::Outcome::DeadLettered);
  // Objects count too, also in fields the router does not read.
  std::string objects;
  for (int i = 0; i < 600; ++i) objects += "{\"a\":";
  objects += "1" + std::string(600, '}');
  ASSERT_EQ(m.route(R"({"id":"e","aggregatetype":"o","aggregateid":"a","other":)" + objects + "}"),
            OutboxRouter::Outcome::DeadLettered);
  EXPECT_NE(m.error.find("nested"), std::string::npos) << m.error;
  // Still works afterwards.
  ASSERT_EQ(m.route(envelope("[1]")), OutboxRouter::Outcome::Routed) << m.error;
}

TEST(OutboxRouter, InvalidMessagesAreDeadLetteredWithTheReason) {
  MessageRouting m;
  struct Case {
    std::string content;
    const char* reason;
  };
  std::vector<Case> cases = {
      {"", "empty"},
      {"   ", "empty"},
      {"not json", "not a JSON object"},
      {R"(["id","e"])", "not a JSON object"},
      {R"("just a string")", "not a JSON object"},
      {"42", "not a JSON object"},
      {"null", "not a JSON object"},
      {envelope(R"({"a":1,})"), "not valid JSON"},
      {envelope("[1 2]"), "not valid JSON"},
      {envelope("01"), "not valid JSON"},
      {envelope("1."), "not valid JSON"},
      {envelope("tru"), "not valid JSON"},
      {envelope(R"("bad \x escape")"), "not valid JSON"},
      {envelope("\"a\tb\""), "not valid JSON"},  // an unescaped control character in a string
      {envelope("{\"a\":1"), "not valid JSON"},
      {envelope("1") + " {}", "not valid JSON"},  // trailing content
      {envelope("\"\xff\xfe\""), "not valid UTF-8"},
      {envelope("\"\xc3\""), "not valid UTF-8"},
      {R"({"aggregatetype":"o","aggregateid":"a","payload":1})", "field \"id\" is missing"},
      {R"({"id":null,"aggregatetype":"o","aggregateid":"a"})", "field \"id\" is missing"},
      {R"({"id":"e","aggregatetype":"o","payload":1})", "field \"aggregateid\" is missing"},
      {R"({"id":"e","aggregateid":"a","payload":1})", "field \"aggregatetype\" of the topic template is missing"},
      {R"({"id":"e","aggregatetype":"no spaces","aggregateid":"a"})", "not a valid Kafka topic name"},
      {R"({"id":"e","id":"f","aggregatetype":"o","aggregateid":"a"})", "field \"id\" appears more than once"},
  };
  for (const Case& c : cases) {
    ASSERT_EQ(m.route(c.content), OutboxRouter::Outcome::DeadLettered) << c.content;
    EXPECT_NE(m.error.find(c.reason), std::string::npos) << c.content << " -> " << m.error;
    EXPECT_EQ(m.record.topic, m.config.deadLetterTopic);
    EXPECT_EQ(m.record.value, c.content) << "a dead letter carries the content as written";
    EXPECT_NE(header(m.record, "error").find("logical message (prefix \"outbox\") at 0/2A0: "), std::string::npos)
        << header(m.record, "error");
  }
}

TEST(OutboxRouter, MessageLargerThanMaxBytesIsDeadLetteredWithoutItsContent) {
  MessageRouting m;
  m.config.messages.maxBytes = 100;
  std::string fits = envelope("\"" + std::string(100 - envelope("\"\"").size(), 'x') + "\"");
  ASSERT_EQ(fits.size(), 100u);
  ASSERT_EQ(m.route(fits), OutboxRouter::Outcome::Routed) << m.error;
  std::string tooLarge = envelope("\"" + std::string(101 - envelope("\"\"").size(), 'x') + "\"");
  ASSERT_EQ(m.route(tooLarge), OutboxRouter::Outcome::DeadLettered);
  EXPECT_FALSE(m.record.value.has_value());
  EXPECT_NE(m.error.find("101 bytes, more than messages.max_bytes = 100"), std::string::npos) << m.error;
}

TEST(OutboxRouter, ValidatesTopicNamesAsKafkaDoes) {
  EXPECT_TRUE(OutboxRouter::isValidTopic("outbox.event.order"));
  EXPECT_TRUE(OutboxRouter::isValidTopic("a-b_C.9"));
  EXPECT_FALSE(OutboxRouter::isValidTopic(""));
  EXPECT_FALSE(OutboxRouter::isValidTopic("."));
  EXPECT_FALSE(OutboxRouter::isValidTopic(".."));
  EXPECT_FALSE(OutboxRouter::isValidTopic("a b"));
  EXPECT_FALSE(OutboxRouter::isValidTopic("ä"));
  EXPECT_FALSE(OutboxRouter::isValidTopic(std::string(250, 'a')));
  EXPECT_TRUE(OutboxRouter::isValidTopic(std::string(249, 'a')));
}

// The saga example's shape: a topic from a column, correlation columns as headers; a NULL column adds no header
// (an event that caused nothing else has no causation_id), the others are copied as they are.
TEST(OutboxRouter, NullHeaderColumnsAddNoHeaderAndATopicComesFromAColumn) {
  RelayConfig config;
  OutboxTableConfig table;
  table.schema = "public";
  table.table = "outbox";
  table.topicTemplate = "saga.{destination}";
  table.headers = {{"eventType", "type"}, {"destination", "destination"}, {"causation_id", "causation_id"},
                   {"reply_to", "reply_to"}};
  config.outboxes.push_back(table);
  OutboxRouter router(config);
  auto columns = kDebeziumColumns;
  columns.insert(columns.end(), {{"destination", 25}, {"causation_id", 25}, {"reply_to", 25}});
  router.onRelation(outboxRelation(16384, columns));
  OutboxRecord record;
  std::string error;
  ASSERT_EQ(router.routeInsert(insertRow(16384, {text("i-1"), text("order"), text("o-1"), text("ReserveCredit"),
                                                 text("{}"), text("customer.commands"), null(), text("order.replies")}),
                               record, error),
            OutboxRouter::Outcome::Routed)
      << error;
  EXPECT_EQ(record.topic, "saga.customer.commands");
  EXPECT_EQ(header(record, "reply_to"), "order.replies");
  EXPECT_EQ(header(record, "causation_id"), "<absent>");
  EXPECT_EQ(record.headers.size(), 4u);  // id, eventType, destination, reply_to
  ASSERT_EQ(router.routeInsert(insertRow(16384, {text("i-2"), text("order"), text("o-1"), text("CreditReserved"),
                                                 text("{}"), text("order.replies"), text("i-1"), null()}),
                               record, error),
            OutboxRouter::Outcome::Routed)
      << error;
  EXPECT_EQ(record.topic, "saga.order.replies");
  EXPECT_EQ(header(record, "causation_id"), "i-1");
  EXPECT_EQ(header(record, "reply_to"), "<absent>");
}

TEST(OutboxRouter, ParsesTimestampColumnTextAsEpochMilliseconds) {
  auto ms = &OutboxRouter::parseTimestampMs;
  EXPECT_EQ(ms("1764645131123"), 1764645131123);
  EXPECT_EQ(ms("0"), 0);
  EXPECT_EQ(ms("1970-01-01 00:00:00"), 0);
  EXPECT_EQ(ms("1970-01-01 00:00:00+00"), 0);
  EXPECT_EQ(ms("2026-12-02 03:12:11.123456+00"), 1796181131123);
  EXPECT_EQ(ms("2026-12-02T03:12:11.1+00:00"), 1796181131100);
  EXPECT_EQ(ms("2026-12-02 08:42:11.123+05:30"), 1796181131123);
  EXPECT_EQ(ms("2026-12-01 22:12:11.123-05"), 1796181131123);
  EXPECT_EQ(ms("2026-12-02 03:12:11"), 1796181131000);          // a timestamp without time zone: UTC
  EXPECT_EQ(ms("2024-02-29 00:00:00+00"), 1709164800000);       // a leap day
  EXPECT_EQ(ms("9999-12-31 23:59:59.999+00"), 253402300799999);
  for (const char* bad : {"", "-1", "1969-12-31 23:59:59+00", "2025-02-29 00:00:00", "2026-13-01 00:00:00",
                          "2026-12-02 24:00:00", "2026-12-02 03:12:60", "2026-12-02", "infinity", "-infinity",
                          "0044-03-15 12:00:00 BC", "10000-01-01 00:00:00+00", "12/02/2026 03:12:11.123 UTC",
                          "Wed Dec 02 03:12:11 2026 UTC", "2026-12-02 03:12:11.+00", "2026-12-02 03:12:11+0",
                          "2026-12-02 03:12:11+00:", "2026-12-02 03:12:11 +00", "1000000000000000",
                          "253402300800000", "2026-12-02 03:12:11.1234567890+00"}) {
    EXPECT_EQ(ms(bad), std::nullopt) << bad;
  }
}

TEST(OutboxRouter, RecordTimestampIsTheCommitTimeOrTheTimestampColumn) {
  RelayConfig config = configWithOutbox();
  OutboxRouter plain(config);
  plain.onRelation(outboxRelation(1, kDebeziumColumns));
  OutboxRecord record;
  std::string error;
  plain.beginTransaction(1796181131123);
  ASSERT_EQ(plain.routeInsert(insertRow(1, {text("i"), text("t"), text("k"), text("T"), text("{}")}), record, error),
            OutboxRouter::Outcome::Routed);
  EXPECT_EQ(record.timestampMs, 1796181131123);

  config.outboxes[0].timestampColumn = "occurred_at";
  OutboxRouter router(config);
  auto columns = kDebeziumColumns;
  columns.push_back({"occurred_at", 1184});
  router.onRelation(outboxRelation(2, columns));
  router.beginTransaction(1796181131123);
  ASSERT_EQ(router.routeInsert(insertRow(2, {text("i"), text("t"), text("k"), text("T"), text("{}"),
                                             text("2026-12-02 03:00:00+00")}),
                               record, error),
            OutboxRouter::Outcome::Routed)
      << error;
  EXPECT_EQ(record.timestampMs, 1796180400000);
  // NULL: the commit time.
  ASSERT_EQ(router.routeInsert(insertRow(2, {text("i"), text("t"), text("k"), text("T"), text("{}"), null()}),
                               record, error),
            OutboxRouter::Outcome::Routed);
  EXPECT_EQ(record.timestampMs, 1796181131123);
  // Not a time Kafka takes: a dead letter saying which column and why.
  ASSERT_EQ(router.routeInsert(insertRow(2, {text("i"), text("t"), text("k"), text("T"), text("{}"),
                                             text("1969-07-20 20:17:40+00")}),
                               record, error),
            OutboxRouter::Outcome::DeadLettered);
  EXPECT_EQ(record.topic, config.deadLetterTopic);
  EXPECT_NE(error.find("\"occurred_at\" (timestamp_column)"), std::string::npos) << error;
  // A table without the column: every row is a dead letter naming it.
  EXPECT_NE(errorForTableWithoutTheColumn(config).find("no timestamp column \"occurred_at\""), std::string::npos);
}

TEST(OutboxRouter, KeyIsTheAggregateIdAnotherColumnOrNone) {
  RelayConfig config = configWithOutbox();
  auto columns = kDebeziumColumns;
  columns.push_back({"partition_key", 25});
  OutboxRecord record;
  std::string error;
  auto route = [&](OutboxRouter& router, ColumnValue keyColumn) {
    router.onRelation(outboxRelation(1, columns));
    EXPECT_EQ(router.routeInsert(insertRow(1, {text("i"), text("t"), text("agg-1"), text("T"), text("{}"), keyColumn}),
                                 record, error),
              OutboxRouter::Outcome::Routed)
        << error;
  };
  OutboxRouter byDefault(config);
  route(byDefault, text("pk-1"));
  EXPECT_EQ(record.key, "agg-1");

  config.outboxes[0].keyColumn = "partition_key";
  OutboxRouter byColumn(config);
  route(byColumn, text("pk-1"));
  EXPECT_EQ(record.key, "pk-1");
  route(byColumn, null());
  EXPECT_EQ(record.key, std::nullopt);

  config.outboxes[0].keyColumn = "";
  OutboxRouter none(config);
  route(none, text("pk-1"));
  EXPECT_EQ(record.key, std::nullopt);

  config.outboxes[0].keyColumn = "missing";
  EXPECT_NE(errorForTableWithoutTheColumn(config).find("no key column \"missing\""), std::string::npos);
}

TEST(OutboxRouter, PartitionColumnPicksThePartition) {
  RelayConfig config = configWithOutbox();
  config.outboxes[0].partitionColumn = "part";
  ExtraColumnRouter r(config, "part", 23);
  auto route = [&](ColumnValue part) { return r.route(part); };
  const OutboxRecord& record = r.record;
  const std::string& error = r.error;
  ASSERT_EQ(route(text("2")), OutboxRouter::Outcome::Routed) << error;
  EXPECT_EQ(record.partition, 2);
  ASSERT_EQ(route(null()), OutboxRouter::Outcome::Routed) << error;
  EXPECT_EQ(record.partition, -1);  // the key's
  ASSERT_EQ(route(text("2147483647")), OutboxRouter::Outcome::Routed) << error;
  EXPECT_EQ(record.partition, 2147483647);
  for (const char* bad : {"-1", "x", "", "2147483648", "99999999999", "1.5"}) {
    EXPECT_EQ(route(text(bad)), OutboxRouter::Outcome::DeadLettered) << bad;
    EXPECT_EQ(record.partition, -1) << bad;
    EXPECT_NE(error.find("\"part\" (partition_column)"), std::string::npos) << error;
  }
  EXPECT_EQ(KafkaPublisher::contentRejection(RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION),
            KafkaPublisher::Rejection::UnknownPartition);
}

TEST(OutboxRouter, TraceContextFromABareTraceparentOrDebeziumsPropertiesText) {
  const std::string parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  std::string p, s;
  EXPECT_TRUE(OutboxRouter::parseTraceContext(parent, p, s));
  EXPECT_EQ(p, parent);
  EXPECT_EQ(s, "");
  EXPECT_TRUE(OutboxRouter::parseTraceContext("  " + parent + "\n", p, s));
  EXPECT_EQ(p, parent);
  // What Debezium's outbox extension stores (java.util.Properties.store: a date comment, escaped '=' and ':').
  std::string properties = "#Wed Dec 02 03:12:11 UTC 2026\ntracestate=congo\\=t61rcWkgMzE,rojo\\=00f067aa0ba902b7\n"
                           "traceparent=" + parent + "\n";
  EXPECT_TRUE(OutboxRouter::parseTraceContext(properties, p, s));
  EXPECT_EQ(p, parent);
  EXPECT_EQ(s, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
  EXPECT_TRUE(OutboxRouter::parseTraceContext("traceparent : " + parent + "\r\ntracestate:a\\u003db", p, s));
  EXPECT_EQ(p, parent);
  EXPECT_EQ(s, "a=b");
  // Nothing there: no headers, nothing dropped.
  EXPECT_TRUE(OutboxRouter::parseTraceContext("", p, s));
  EXPECT_TRUE(OutboxRouter::parseTraceContext("#only a comment\n", p, s));
  EXPECT_EQ(p, "");
  // Invalid: dropped (and counted by the relay).
  for (const std::string& bad :
       {std::string("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"),  // upper case
        std::string("00-00000000000000000000000000000000-b7ad6b7169203331-01"),  // zero trace id
        std::string("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"),  // zero parent id
        std::string("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),  // version ff
        std::string("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331"), std::string("garbage"),
        "traceparent=" + parent + "x", std::string("tracestate=a=b"), std::string("traceparent=\\u00e9")}) {
    EXPECT_FALSE(OutboxRouter::parseTraceContext(bad, p, s)) << bad;
    EXPECT_EQ(p, "") << bad;
    EXPECT_EQ(s, "") << bad;
  }
  // A valid traceparent with an invalid tracestate: the traceparent stays, the tracestate is dropped.
  EXPECT_FALSE(OutboxRouter::parseTraceContext("traceparent=" + parent + "\ntracestate=" + std::string(600, 'a'), p, s));
  EXPECT_EQ(p, parent);
  EXPECT_EQ(s, "");
  EXPECT_FALSE(OutboxRouter::parseTraceContext(std::string(9000, ' '), p, s));
}

TEST(OutboxRouter, TracingColumnBecomesTraceContextHeaders) {
  RelayConfig config = configWithOutbox();
  config.outboxes[0].tracingColumn = "tracingspancontext";
  ExtraColumnRouter r(config, "tracingspancontext", 25);
  auto route = [&](ColumnValue trace) { return r.route(trace); };
  const OutboxRecord& record = r.record;
  OutboxRouter& router = r.router;
  ASSERT_EQ(route(text("traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\ntracestate=k\\=v")),
            OutboxRouter::Outcome::Routed);
  EXPECT_EQ(header(record, "traceparent"), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  EXPECT_EQ(header(record, "tracestate"), "k=v");
  EXPECT_FALSE(router.traceContextDropped());
  ASSERT_EQ(route(text("not a trace")), OutboxRouter::Outcome::Routed);
  EXPECT_EQ(header(record, "traceparent"), "<absent>");
  EXPECT_TRUE(router.traceContextDropped());
  ASSERT_EQ(route(null()), OutboxRouter::Outcome::Routed);
  EXPECT_EQ(header(record, "traceparent"), "<absent>");
  EXPECT_FALSE(router.traceContextDropped());
}

TEST(OutboxRouter, EnvelopePlacesColumnsBesideThePayload) {
  RelayConfig config = configWithOutbox();
  config.outboxes[0].envelope = {{"eventType", "type"}, {"version", "v"}, {"ok", "flag"}, {"meta", "meta"},
                                 {"ratio", "ratio"}, {"note", "note"}};
  auto columns = kDebeziumColumns;
  for (auto c : std::vector<std::pair<const char*, uint32_t>>{
           {"v", 23}, {"flag", 16}, {"meta", 3802}, {"ratio", 1700}, {"note", 25}}) {
    columns.push_back(c);
  }
  OutboxRouter router(config);
  router.onRelation(outboxRelation(1, columns));
  OutboxRecord record;
  std::string error;
  ASSERT_EQ(router.routeInsert(insertRow(1, {text("i"), text("t"), text("k"), text("OrderCreated"),
                                             text(R"({"total": 42})"), text("3"), text("t"), text(R"({"a": [1]})"),
                                             text("NaN"), text("say \"hi\"\n")}),
                               record, error),
            OutboxRouter::Outcome::Routed)
      << error;
  EXPECT_EQ(record.value, R"({"payload":{"total": 42},"eventType":"OrderCreated","version":3,"ok":true,)"
                          R"("meta":{"a": [1]},"ratio":"NaN","note":"say \"hi\"\n"})");
  auto parsed = nlohmann::json::parse(*record.value);
  EXPECT_EQ(parsed["payload"]["total"], 42);
  // NULLs are JSON nulls, the payload too.
  ASSERT_EQ(router.routeInsert(insertRow(1, {text("i"), text("t"), text("k"), text("T"), null(), null(), null(),
                                             null(), text("-1.5e+30"), null()}),
                               record, error),
            OutboxRouter::Outcome::Routed);
  EXPECT_EQ(record.value, R"({"payload":null,"eventType":"T","version":null,"ok":null,"meta":null,"ratio":-1.5e+30,"note":null})");
  // A bytea payload is base64 in the envelope.
  std::string bytes;
  OutboxRouter::appendJsonValue(bytes, std::string_view("\x00\xff" "A", 3), 17, true);
  EXPECT_EQ(bytes, "\"AP9B\"");
  // A missing envelope column: every row is a dead letter naming it.
  config.outboxes[0].envelope = {{"x", "nope"}};
  EXPECT_NE(errorForTableWithoutTheColumn(config).find("no envelope column \"nope\""), std::string::npos);
}

TEST(OutboxRouter, CloudEventsBinaryAndStructured) {
  EXPECT_EQ(utcIsoTimeMillis(1796181131123), "2026-12-02T03:12:11.123Z");
  EXPECT_EQ(utcIsoTimeMillis(1709164800000), "2024-02-29T00:00:00.000Z");
  EXPECT_EQ(utcIsoTimeMillis(0), "");
  RelayConfig config = configWithOutbox();
  config.outboxes[0].cloudEvents = OutboxTableConfig::CloudEvents::Binary;
  config.outboxes[0].cloudEventsSource = "/orders";
  OutboxRecord record;
  std::string error;
  // An OrderCreated row committed at 2026-12-02T03:12:11.123Z through `router`.
  auto routeOrderCreated = [&](OutboxRouter& router) {
    router.onRelation(outboxRelation(1, kDebeziumColumns));
    router.beginTransaction(1796181131123);
    return router.routeInsert(
        insertRow(1, {text("e-1"), text("order"), text("o-1"), text("OrderCreated"), text(R"({"total": 42})")}), record,
        error);
  };
  {
    OutboxRouter router(config);
    ASSERT_EQ(routeOrderCreated(router), OutboxRouter::Outcome::Routed) << error;
    EXPECT_EQ(header(record, "ce_specversion"), "1.0");
    EXPECT_EQ(header(record, "ce_id"), "e-1");
    EXPECT_EQ(header(record, "ce_source"), "/orders");
    EXPECT_EQ(header(record, "ce_type"), "OrderCreated");
    EXPECT_EQ(header(record, "ce_time"), "2026-12-02T03:12:11.123Z");
    EXPECT_EQ(header(record, "content-type"), "application/json");
    EXPECT_EQ(header(record, "id"), "e-1");  // the Debezium headers stay
    EXPECT_EQ(record.value, R"({"total": 42})");
    // No type: no CloudEvent; a dead letter saying so.
    EXPECT_EQ(router.routeInsert(insertRow(1, {text("e-2"), text("order"), text("o-1"), null(), text("{}")}), record,
                                 error),
              OutboxRouter::Outcome::DeadLettered);
    EXPECT_NE(error.find("a CloudEvent needs a type"), std::string::npos) << error;
  }
  config.outboxes[0].cloudEvents = OutboxTableConfig::CloudEvents::Structured;
  OutboxRouter router(config);
  ASSERT_EQ(routeOrderCreated(router), OutboxRouter::Outcome::Routed) << error;
  EXPECT_EQ(record.value, R"({"specversion":"1.0","id":"e-1","source":"/orders","type":"OrderCreated",)"
                          R"("time":"2026-12-02T03:12:11.123Z","datacontenttype":"application/json",)"
                          R"("data":{"total": 42}})");
  EXPECT_EQ(header(record, "content-type"), "application/cloudevents+json");
  EXPECT_EQ(header(record, "ce_id"), "<absent>");
}
