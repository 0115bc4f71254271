// What the relay delivers when nothing goes wrong: every committed outbox row and logical message becomes one Kafka
// record with the right topic, key, value and headers, in per-aggregate order; several outbox tables at once; and an
// idle outbox does not hold WAL back.
#include <gtest/gtest.h>

#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "support/RelayProcess.h"
#include "support/TestEnv.h"

using namespace outbox;
using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

std::string hex(const std::optional<std::string>& bytes) {
  if (!bytes) return "null";
  std::string out;
  char buf[4];
  for (unsigned char c : *bytes) {
    std::snprintf(buf, sizeof buf, "%02x", c);
    out += buf;
  }
  return out;
}

}  // namespace

TEST(RelayDelivery, FiftyThousandEventsFromConcurrentWritersArriveInAggregateOrder) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "deliv");
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config;
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {{"eventType", "type"}}});
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  ASSERT_FALSE(slotExists(pg, config.slot()));
  ASSERT_FALSE(publicationExists(pg, config.publication()));

  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << "the relay never streamed from its slot";
  // The relay created what was missing: the slot, and a publication carrying the outbox table.
  EXPECT_TRUE(publicationExists(pg, config.publication()));
  EXPECT_TRUE(pg.scalar("SELECT 1 FROM pg_publication_tables WHERE pubname = '" + config.publication() +
                        "' AND tablename = '" + table + "'"));

  // 4 writers, each with its own connection, own a quarter of 1,000 aggregates: 50,000 events in 25-row
  // transactions, alternately one multi-row INSERT and 25 single-row INSERTs.
  constexpr int kWriters = 4, kAggregates = 1000, kEvents = 50000, kRowsPerTxn = 25;
  auto aggregates = makeAggregates(uniqueName("agg"), kAggregates);
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> failures(kWriters);
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      try {
        std::vector<Aggregate> mine;
        for (int a = w; a < kAggregates; a += kWriters) mine.push_back(aggregates[a]);
        EventWriter writer(table, mine, w, 100 + w);
        for (int txn = 0; txn < kEvents / kWriters / kRowsPerTxn; ++txn)
          writer.writeTransaction(kRowsPerTxn, txn % 2 == 0);
      } catch (...) {
        failures[w] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& f : failures) {
    if (f) std::rethrow_exception(f);
  }
  auto rows = outboxRows(pg, table);
  ASSERT_EQ(rows.size(), static_cast<size_t>(kEvents));

  TopicReader reader(kafkaBootstrap(), {topicPrefix + ".order", topicPrefix + ".customer"});
  bool all = readUntilDelivered(reader, idsOf(rows), 5min);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  reader.readUntilQuiet(2s, 30s);
  auto check = checkDelivery(
      rows, reader.records(), [&](const OutboxRow& r) { return topicPrefix + "." + r.aggregatetype; }, "eventType",
      true);
  std::cout << "[ metric ] delivery_events=" << kEvents << " seconds=" << seconds << " duplicates=" << check.duplicates
            << std::endl;
  EXPECT_TRUE(all) << check.summary();
  EXPECT_EQ(check.missing, 0) << check.summary();
  EXPECT_EQ(check.unexpected, 0) << check.summary();
  EXPECT_EQ(check.wrong, 0) << check.summary();
  EXPECT_EQ(check.outOfOrder, 0) << check.summary();
  EXPECT_TRUE(relay->running()) << "the relay died";
}

TEST(RelayDelivery, LogicalMessagesBecomeEvents) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "msgs");
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config;
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {{"eventType", "type"}}})
      .messages(topicPrefix + ".{aggregatetype}", {{"eventType", "type"}});
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s));

  std::string prefix = config.messagePrefix();
  auto emit = [&](const std::string& json) {
    return "SELECT pg_logical_emit_message(true, '" + prefix + "', '" + json + "');";
  };
  // Payloads arrive as written: whitespace, key order and number spelling are not re-rendered.
  std::string id1 = *pg.scalar("SELECT gen_random_uuid()");
  std::string id2 = *pg.scalar("SELECT gen_random_uuid()");
  std::string id3 = *pg.scalar("SELECT gen_random_uuid()");
  // 1: a message alone in its transaction (autocommit).
  pg.exec(emit(
      R"({"id":")" + id1 +
      R"(","aggregatetype":"customer","aggregateid":"c-7","type":"CustomerRenamed","payload":{"customerId": "c-7", "name": "Ada", "tags": [1, 2, {"x": null}]}})"));
  // 2: a message and an outbox row in one transaction, with a state change.
  pg.exec(
      "BEGIN;" +
      emit(
          R"({"id":")" + id2 +
          R"(","aggregatetype":"order","aggregateid":"o-1","type":"OrderShipped","payload":{"carrier":"dhl","orderId":"o-1"}})") +
      "INSERT INTO " + table +
      " (aggregatetype, aggregateid, type, payload) VALUES ('order', 'o-1', 'OrderPaid', '{\"orderId\": \"o-1\"}');"
      "COMMIT;");
  // 3: a message whose payload is not an object.
  pg.exec(
      emit(R"({"id":")" + id3 +
           R"(","aggregatetype":"customer","aggregateid":"c-8","type":"CustomerCounted","payload":[1,"two",3.5]})"));
  // Not this relay's prefix: ignored.
  pg.exec("SELECT pg_logical_emit_message(true, '" + prefix + "_other', '{\"id\":\"" + id1 +
          "\",\"aggregatetype\":\"customer\",\"aggregateid\":\"c-9\",\"type\":\"X\",\"payload\":{}}')");

  TopicReader reader(kafkaBootstrap(), {topicPrefix + ".order", topicPrefix + ".customer"});
  reader.readUntil(4, 3min);
  auto& records = reader.readUntilQuiet(3s, 30s);
  ASSERT_EQ(records.size(), 4u);
  std::map<std::string, ConsumedRecord> byId;
  for (auto& r : records) byId[r.headers.count("id") ? r.headers.at("id") : std::string("?")] = r;

  ASSERT_TRUE(byId.count(id1));
  EXPECT_EQ(byId[id1].topic, topicPrefix + ".customer");
  EXPECT_EQ(byId[id1].key, "c-7");
  EXPECT_EQ(byId[id1].value, R"({"customerId": "c-7", "name": "Ada", "tags": [1, 2, {"x": null}]})");
  EXPECT_EQ(byId[id1].headers["eventType"], "CustomerRenamed");

  ASSERT_TRUE(byId.count(id2));
  EXPECT_EQ(byId[id2].topic, topicPrefix + ".order");
  EXPECT_EQ(byId[id2].key, "o-1");
  EXPECT_EQ(byId[id2].value, R"({"carrier":"dhl","orderId":"o-1"})");
  EXPECT_EQ(byId[id2].headers["eventType"], "OrderShipped");

  ASSERT_TRUE(byId.count(id3));
  EXPECT_EQ(byId[id3].key, "c-8");
  EXPECT_EQ(byId[id3].value, R"([1,"two",3.5])");

  auto rowId = pg.scalar("SELECT id FROM " + table);
  ASSERT_TRUE(rowId);
  ASSERT_TRUE(byId.count(*rowId));
  EXPECT_EQ(byId[*rowId].value, R"({"orderId": "o-1"})");
  EXPECT_EQ(byId[*rowId].headers["eventType"], "OrderPaid");
  // The message and the row of one transaction, same aggregate: the row follows the message in the partition.
  EXPECT_EQ(byId[*rowId].partition, byId[id2].partition);
  EXPECT_GT(byId[*rowId].offset, byId[id2].offset);
}

TEST(RelayDelivery, ByteaAndNullPayloads) {
  PgConnection pg(pgUrl());
  std::string jsonTable = createOutboxTable(pg, "jnull");
  std::string byteaTable = createOutboxTable(pg, "bytes", "bytea");
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config;
  config.addOutbox({jsonTable, topicPrefix + ".json", {}, {}}).addOutbox({byteaTable, topicPrefix + ".bytes", {}, {}});
  ReplicationCleanup cleanup(config.slot(), config.publication(), {jsonTable, byteaTable});
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s));

  pg.exec("INSERT INTO " + byteaTable +
          " (aggregatetype, aggregateid, type, payload) VALUES "
          "('blob', 'b-1', 'Raw', '\\x00ff0a41005c27'::bytea), "
          "('blob', 'b-2', 'Empty', ''::bytea), "
          "('blob', 'b-3', 'Null', NULL)");
  pg.exec("INSERT INTO " + jsonTable +
          " (aggregatetype, aggregateid, type, payload) VALUES "
          "('doc', 'j-1', 'Null', NULL), ('doc', 'j-2', 'JsonNull', 'null'::jsonb), "
          "('doc', 'j-3', 'Unicode', '{\"name\": \"Zoë \\u00e9\\n\", \"n\": 1.50}')");

  TopicReader reader(kafkaBootstrap(), {topicPrefix + ".json", topicPrefix + ".bytes"});
  reader.readUntil(6, 3min);
  auto& records = reader.readUntilQuiet(2s, 30s);
  ASSERT_EQ(records.size(), 6u);
  std::map<std::string, ConsumedRecord> byKey;
  for (auto& r : records) byKey[r.key.value_or("?")] = r;

  EXPECT_EQ(byKey["b-1"].topic, topicPrefix + ".bytes");
  EXPECT_EQ(hex(byKey["b-1"].value), "00ff0a41005c27") << "bytea payload must arrive as its raw bytes";
  EXPECT_EQ(hex(byKey["b-2"].value), "") << "an empty bytea is an empty value";
  EXPECT_FALSE(byKey["b-3"].value.has_value()) << "a NULL payload is a null value, got " << hex(byKey["b-3"].value);
  EXPECT_FALSE(byKey["j-1"].value.has_value()) << "a NULL payload is a null value, got " << hex(byKey["j-1"].value);
  EXPECT_EQ(byKey["j-2"].value, "null") << "the JSON null is a value, not a missing payload";
  EXPECT_EQ(byKey["j-3"].value,
            pg.scalar("SELECT payload::text FROM " + jsonTable + " WHERE aggregateid = 'j-3'").value());
  for (auto& [key, r] : byKey) {
    EXPECT_EQ(r.headers.count("id"), 1u) << key;
  }
}

TEST(RelayDelivery, SeveralOutboxTablesWithCustomColumnNames) {
  PgConnection pg(pgUrl());
  std::string plain = createOutboxTable(pg, "plain");
  std::string schema = uniqueName("svc");
  pg.exec("CREATE SCHEMA " + schema);
  pg.exec("CREATE TABLE " + schema +
          ".events (event_id uuid PRIMARY KEY DEFAULT gen_random_uuid(), kind text NOT NULL, entity text NOT NULL, "
          "event_name text NOT NULL, body jsonb, tenant text, created timestamptz DEFAULT now())");
  std::string custom = schema + ".events";
  std::string topicA = uniqueName("ta"), topicB = uniqueName("tb");
  RelayConfigBuilder config;
  config.addOutbox({plain, topicA + ".{aggregatetype}", {}, {{"eventType", "type"}}})
      .addOutbox({custom,
                  topicB + ".{kind}.events",
                  {{"id_column", "event_id"},
                   {"aggregatetype_column", "kind"},
                   {"aggregateid_column", "entity"},
                   {"type_column", "event_name"},
                   {"payload_column", "body"}},
                  {{"eventName", "event_name"}, {"tenant", "tenant"}}});
  ReplicationCleanup cleanup(config.slot(), config.publication(), {plain, custom});
  cleanup.addSchema(schema);
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s));

  pg.exec(
      "BEGIN;"
      "INSERT INTO " +
      plain +
      " (aggregatetype, aggregateid, type, payload) VALUES "
      "('order', 'o-1', 'OrderPlaced', '{\"total\": 42.5}'), ('order', 'o-2', 'OrderPlaced', '{\"total\": 1}');"
      "INSERT INTO " +
      custom +
      " (kind, entity, event_name, body, tenant) VALUES "
      "('invoice', 'i-1', 'InvoiceIssued', '{\"amount\": 42.5}', 'acme');"
      "COMMIT;");
  pg.exec("INSERT INTO " + custom +
          " (kind, entity, event_name, body, tenant) VALUES "
          "('invoice', 'i-1', 'InvoicePaid', '{\"paid\": true}', 'acme'), "
          "('refund', 'r-1', 'RefundIssued', '{}', 'globex')");

  TopicReader reader(kafkaBootstrap(),
                     {topicA + ".order", topicB + ".invoice.events", topicB + ".refund.events", topicA + ".invoice"});
  reader.readUntil(5, 3min);
  auto& records = reader.readUntilQuiet(2s, 30s);
  ASSERT_EQ(records.size(), 5u);

  auto plainRows = outboxRows(pg, plain);
  std::vector<ConsumedRecord> plainRecords, customRecords;
  for (auto& r : records) (r.topic.rfind(topicA, 0) == 0 ? plainRecords : customRecords).push_back(r);
  auto check = checkDelivery(
      plainRows, plainRecords, [&](const OutboxRow& r) { return topicA + "." + r.aggregatetype; }, "eventType");
  EXPECT_EQ(check.missing + check.unexpected + check.wrong + check.duplicates, 0) << check.summary();

  std::map<std::string, OutboxRow> customRows;
  for (auto& r : pg.rows("SELECT event_id, kind, entity, event_name, body::text FROM " + custom)) {
    customRows[r[0]] = OutboxRow{r[0], r[1], r[2], r[3], r[4]};
  }
  check = checkDelivery(
      customRows, customRecords, [&](const OutboxRow& r) { return topicB + "." + r.aggregatetype + ".events"; },
      "eventName");
  EXPECT_EQ(check.missing + check.unexpected + check.wrong + check.duplicates, 0) << check.summary();
  for (auto& r : customRecords) {
    EXPECT_EQ(r.headers["tenant"], r.key == "r-1" ? "globex" : "acme");
  }
}

// With the outbox idle while another table takes writes, the relay still confirms the WAL it has read, so the slot
// does not hold WAL back: confirmed_flush_lsn keeps up with pg_current_wal_lsn().
TEST(RelayDelivery, IdleOutboxSlotKeepsUpWithTheWal) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "idle");
  std::string other = uniqueName("busy");
  pg.exec("CREATE TABLE " + other + " (n bigserial PRIMARY KEY, filler text)");
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config;  // status_interval_ms = 1000
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {}});
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table, other});
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s));

  // One event first, so the relay has published and confirmed something.
  pg.exec("INSERT INTO " + table + " (aggregatetype, aggregateid, type, payload) VALUES ('order', 'o', 'T', '{}')");

  std::atomic<bool> stop{false};
  std::exception_ptr failure;
  std::thread busy([&] {
    try {
      PgConnection writer(pgUrl());
      while (!stop) {
        writer.exec("INSERT INTO " + other + " (filler) SELECT repeat('x', 200) FROM generate_series(1, 50)");
        std::this_thread::sleep_for(20ms);
      }
    } catch (...) {
      failure = std::current_exception();
    }
  });
  // While the other table is written: each sampled WAL position is confirmed soon after (a few status intervals;
  // the bound is generous, a relay that only confirms outbox commits never gets there).
  for (int sample = 0; sample < 4; ++sample) {
    std::this_thread::sleep_for(2s);  // let WAL of the other table accumulate
    Lsn target = currentWalLsn(pg);
    auto start = std::chrono::steady_clock::now();
    bool caughtUp = waitFor([&] { return confirmedFlushLsn(pg, config.slot()).value_or(Lsn()) >= target; }, 60s, 100ms);
    double lag = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_TRUE(caughtUp) << "sample " << sample << ": confirmed_flush_lsn "
                          << confirmedFlushLsn(pg, config.slot()).value_or(Lsn()).toString()
                          << " did not reach pg_current_wal_lsn() " << target.toString() << " taken 60 s earlier";
    std::cout << "[ metric ] idle_outbox_confirm_lag_s=" << lag << std::endl;
    if (!caughtUp) break;
  }
  stop = true;
  busy.join();
  if (failure) std::rethrow_exception(failure);
  Lsn end = currentWalLsn(pg);
  EXPECT_TRUE(waitFor([&] { return confirmedFlushLsn(pg, config.slot()).value_or(Lsn()) >= end; }, 60s, 100ms))
      << "after the writes stopped, confirmed_flush_lsn "
      << confirmedFlushLsn(pg, config.slot()).value_or(Lsn()).toString() << " never reached " << end.toString();
  TopicReader reader(kafkaBootstrap(), {topicPrefix + ".order"});
  EXPECT_EQ(reader.readUntil(1, 2min).size(), 1u);
  EXPECT_TRUE(relay->running());
}

// README "Guarantees": an outbox row that cannot become a valid record is not dropped: it goes to the dead-letter
// topic with an "error" header, and the events after it are published as usual.
TEST(RelayDelivery, InvalidRowGoesToTheDeadLetterTopicAndLaterEventsFlow) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "dlq");
  std::string topicPrefix = uniqueName("t");
  std::string deadLetters = uniqueName("dlq");
  RelayConfigBuilder config;
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {}});
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start("dead_letter_topic = \"" + deadLetters + "\"\n" + config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();

  // "bad type" makes a topic name Kafka refuses (a space).
  pg.exec("INSERT INTO " + table +
          " (aggregatetype, aggregateid, type, payload) VALUES ('bad type', 'a-1', 'T', '{\"n\": 1}')");
  pg.exec("INSERT INTO " + table +
          " (aggregatetype, aggregateid, type, payload) VALUES ('order', 'a-1', 'T', '{\"n\": 2}')");

  TopicReader dead(kafkaBootstrap(), {deadLetters});
  auto& dl = dead.readUntil(1, 3min);
  ASSERT_EQ(dl.size(), 1u) << relay->logTail();
  EXPECT_EQ(dl[0].key, "a-1");
  EXPECT_EQ(dl[0].value, "{\"n\": 1}");
  ASSERT_EQ(dl[0].headers.count("error"), 1u);
  EXPECT_NE(dl[0].headers.at("error").find("not a valid Kafka topic"), std::string::npos) << dl[0].headers.at("error");
  EXPECT_EQ(dl[0].headers.count("id"), 1u);

  TopicReader orders(kafkaBootstrap(), {topicPrefix + ".order"});
  auto& ok = orders.readUntil(1, 3min);
  ASSERT_EQ(ok.size(), 1u);
  EXPECT_EQ(ok[0].value, "{\"n\": 2}");
  EXPECT_TRUE(relay->running()) << relay->logTail();
}

// A record's timestamp is its transaction's commit time (not when the relay produced it), or the value of the
// table's timestamp_column; a NULL there falls back to the commit time. The relay reads timestamps in DateStyle ISO
// whatever the session's own (here German, from the conninfo's options).
TEST(RelayDelivery, RecordTimestampIsTheCommitTimeOrTheTimestampColumn) {
  PgConnection pg(pgUrl());
  std::string plain = createOutboxTable(pg, "tsplain");
  std::string stamped = createOutboxTable(pg, "tsstamped");
  pg.exec("ALTER TABLE " + stamped + " ADD COLUMN occurred_at timestamptz");
  std::string topic = uniqueName("ts");
  std::string deadLetters = uniqueName("dlq");
  RelayConfigBuilder config;
  config.conninfo(pgUrl() + (pgUrl().find('?') == std::string::npos ? "?" : "&") +
                  "options=-c%20DateStyle%3DGerman%20-c%20TimeZone%3DAsia/Kolkata")
      .addOutbox({plain, topic + ".plain", {}, {}})
      .addOutbox({stamped, topic + ".stamped", {{"timestamp_column", "occurred_at"}}, {}});
  ReplicationCleanup cleanup(config.slot(), config.publication(), {plain, stamped});
  auto relay = RelayProcess::start("dead_letter_topic = \"" + deadLetters + "\"\n" + config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();

  // A transaction held open for two seconds: its commit time is well after its rows were written.
  auto epochMs = [&](const std::string& expr) { return std::stoll(*pg.scalar("SELECT (extract(epoch FROM " + expr + ") * 1000)::bigint")); };
  pg.exec("BEGIN");
  pg.exec("INSERT INTO " + plain + " (aggregatetype, aggregateid, type, payload) VALUES ('a', 'k1', 'T', '{}')");
  pg.exec("INSERT INTO " + stamped +
          " (aggregatetype, aggregateid, type, payload, occurred_at) VALUES "
          "('a', 'k2', 'T', '{}', '2021-06-01 12:34:56.789+02'), ('a', 'k3', 'T', '{}', NULL)");
  int64_t written = epochMs("clock_timestamp()");
  std::this_thread::sleep_for(2s);
  int64_t beforeCommit = epochMs("clock_timestamp()");
  pg.exec("COMMIT");
  int64_t afterCommit = epochMs("clock_timestamp()");
  // A row with a timestamp Kafka cannot take goes to the dead-letter topic, saying why.
  pg.exec("INSERT INTO " + stamped +
          " (aggregatetype, aggregateid, type, payload, occurred_at) VALUES ('a', 'k4', 'T', '{}', '1969-07-20 "
          "20:17:40+00')");

  TopicReader reader(kafkaBootstrap(), {topic + ".plain", topic + ".stamped", deadLetters});
  auto& records = reader.readUntil(4, 3min);
  ASSERT_EQ(records.size(), 4u) << relay->logTail();
  std::map<std::string, ConsumedRecord> byKey;
  for (auto& r : records) byKey[r.key.value_or("")] = r;
  for (const char* key : {"k1", "k3"}) {
    const ConsumedRecord& r = byKey[key];
    EXPECT_TRUE(r.createTime) << key;
    // The commit time: after the rows were written and the two seconds passed, not at the insert.
    EXPECT_GE(r.timestampMs, beforeCommit - 1) << key;
    EXPECT_LE(r.timestampMs, afterCommit + 1) << key;
    EXPECT_GT(r.timestampMs, written + 1500) << key;
  }
  EXPECT_EQ(byKey["k1"].topic, topic + ".plain");
  EXPECT_EQ(byKey["k3"].topic, topic + ".stamped");
  EXPECT_EQ(byKey["k2"].topic, topic + ".stamped");
  EXPECT_EQ(byKey["k2"].timestampMs, 1622543696789);  // 2021-06-01 10:34:56.789 UTC
  EXPECT_TRUE(byKey["k2"].createTime);
  ConsumedRecord& dead = byKey["k4"];
  EXPECT_EQ(dead.topic, deadLetters);
  EXPECT_NE(dead.headers["error"].find("\"occurred_at\" (timestamp_column) is \"1969-07-21 01:47:40+05:30\""),
            std::string::npos)
      << dead.headers["error"];
}

// key_column: another column is the key (NULL there: no key), or "" for records without a key; by default the key
// is the aggregate id.
TEST(RelayDelivery, KeyColumnOrNoKey) {
  PgConnection pg(pgUrl());
  std::string byColumn = createOutboxTable(pg, "keycol");
  std::string keyless = createOutboxTable(pg, "keyless");
  pg.exec("ALTER TABLE " + byColumn + " ADD COLUMN routing_key text");
  std::string topic = uniqueName("key");
  RelayConfigBuilder config;
  config.addOutbox({byColumn, topic + ".column", {{"key_column", "routing_key"}}, {{"eventType", "type"}}})
      .addOutbox({keyless, topic + ".none", {{"key_column", ""}}, {{"eventType", "type"}}});
  ReplicationCleanup cleanup(config.slot(), config.publication(), {byColumn, keyless});
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();
  pg.exec("INSERT INTO " + byColumn +
          " (aggregatetype, aggregateid, type, payload, routing_key) VALUES ('a', 'agg-1', 'WithKey', '{}', 'rk-1'), "
          "('a', 'agg-2', 'NullKey', '{}', NULL)");
  pg.exec("INSERT INTO " + keyless + " (aggregatetype, aggregateid, type, payload) VALUES ('a', 'agg-3', 'NoKey', '{}')");
  TopicReader reader(kafkaBootstrap(), {topic + ".column", topic + ".none"});
  auto& records = reader.readUntil(3, 3min);
  ASSERT_EQ(records.size(), 3u) << relay->logTail();
  std::map<std::string, ConsumedRecord> byType;
  for (auto& r : records) byType[r.headers.at("eventType")] = r;
  EXPECT_EQ(byType["WithKey"].key, "rk-1");
  EXPECT_EQ(byType["NullKey"].key, std::nullopt);
  EXPECT_EQ(byType["NoKey"].key, std::nullopt);
  EXPECT_EQ(byType["NoKey"].topic, topic + ".none");

  // Order is kept per key: rows of many aggregates under one routing key arrive in one partition, in commit order.
  for (int i = 0; i < 30; ++i) {
    pg.exec("INSERT INTO " + byColumn + " (aggregatetype, aggregateid, type, payload, routing_key) VALUES ('a', 'agg-" +
            std::to_string(i) + "', 'Ordered', '{\"n\": " + std::to_string(i) + "}', 'rk-order')");
  }
  TopicReader ordered(kafkaBootstrap(), {topic + ".column"});
  std::vector<ConsumedRecord> all = ordered.readUntil(32, 3min);
  std::vector<int> sequence;
  std::set<int32_t> partitions;
  for (auto& r : all) {
    if (r.key != "rk-order") continue;
    sequence.push_back(nlohmann::json::parse(r.value.value_or("null")).at("n").get<int>());
    partitions.insert(r.partition);
  }
  std::vector<int> expected(30);
  for (int i = 0; i < 30; ++i) expected[i] = i;
  EXPECT_EQ(sequence, expected);
  EXPECT_EQ(partitions.size(), 1u);
}

// partition_column: the row's partition; NULL there: the key's. A number the topic has no partition for is a dead
// letter (Kafka refused it: unknown_partition), not a stopped relay; one that is no partition number at all is
// dead-lettered by the router. Later events flow. In both delivery modes.
class PartitionColumn : public ::testing::TestWithParam<bool> {};

TEST_P(PartitionColumn, PicksThePartition) {
  const bool exactlyOnce = GetParam();
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "partcol");
  pg.exec("ALTER TABLE " + table + " ADD COLUMN part text");
  std::string topic = uniqueName("part");
  createTopic(topic, 3);
  std::string deadLetters = uniqueName("dlq");
  RelayConfigBuilder config;
  config.addOutbox({table, topic, {{"partition_column", "part"}}, {{"eventType", "type"}}});
  if (exactlyOnce) config.exactlyOnce();
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start("dead_letter_topic = \"" + deadLetters + "\"\n" + config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();
  pg.exec("INSERT INTO " + table +
          " (aggregatetype, aggregateid, type, payload, part) VALUES ('a', 'P2', 'T', '{}', '2'), "
          "('a', 'P0', 'T', '{}', '0'), ('a', 'Null', 'T', '{}', NULL), ('a', 'P7', 'T', '{}', '7'), "
          "('a', 'Minus', 'T', '{}', '-1')");
  pg.exec("INSERT INTO " + table + " (aggregatetype, aggregateid, type, payload, part) VALUES ('a', 'After', 'T', '{}', '1')");
  TopicReader reader(kafkaBootstrap(), {topic, deadLetters});
  auto& records = reader.readUntil(6, 3min);
  ASSERT_EQ(records.size(), 6u) << relay->logTail();
  std::map<std::string, ConsumedRecord> byType;
  for (auto& r : records) byType[r.key.value_or("")] = r;  // the aggregate id, kept by a dead letter too
  EXPECT_EQ(byType["P2"].topic, topic);
  EXPECT_EQ(byType["P2"].partition, 2);
  EXPECT_EQ(byType["P0"].partition, 0);
  EXPECT_EQ(byType["After"].partition, 1);
  EXPECT_EQ(byType["Null"].topic, topic);  // the key's partition, whichever it is
  EXPECT_EQ(byType["P7"].topic, deadLetters);
  EXPECT_NE(byType["P7"].headers["error"].find("_UNKNOWN_PARTITION"), std::string::npos) << byType["P7"].headers["error"];
  EXPECT_EQ(byType["Minus"].topic, deadLetters);
  EXPECT_NE(byType["Minus"].headers["error"].find("not a partition number"), std::string::npos);
  EXPECT_TRUE(relay->running());
}

INSTANTIATE_TEST_SUITE_P(RelayDelivery, PartitionColumn, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "ExactlyOnce" : "AtLeastOnce"; });

// tracing_column: Debezium's serialized span context (Java Properties text) or a bare traceparent becomes the W3C
// headers traceparent and tracestate; one that is not valid is left out, counted and logged, and the event is
// published all the same.
TEST(RelayDelivery, TracingColumnBecomesTraceContextHeaders) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "tracing");
  pg.exec("ALTER TABLE " + table + " ADD COLUMN tracingspancontext text");
  std::string topic = uniqueName("trace");
  RelayConfigBuilder config;
  config.addOutbox({table, topic, {{"tracing_column", "tracingspancontext"}}, {{"eventType", "type"}}})
      .metricsListen("127.0.0.1:0");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start(config.render());
  std::string metrics = adminAddressOf(*relay);
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();
  const std::string parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  pg.exec("INSERT INTO " + table + " (aggregatetype, aggregateid, type, payload, tracingspancontext) VALUES "
          "('a', 'k', 'Debezium', '{}', E'#Wed Dec 02 03:12:11 UTC 2026\\ntracestate=congo\\\\=t61rcWkgMzE\\ntraceparent=" +
          parent + "\\n'), ('a', 'k', 'Bare', '{}', '" + parent + "'), ('a', 'k', 'Invalid', '{}', 'traceparent=nope'), "
          "('a', 'k', 'None', '{}', NULL)");
  TopicReader reader(kafkaBootstrap(), {topic});
  auto& records = reader.readUntil(4, 3min);
  ASSERT_EQ(records.size(), 4u) << relay->logTail();
  std::map<std::string, ConsumedRecord> byType;
  for (auto& r : records) byType[r.headers.at("eventType")] = r;
  EXPECT_EQ(byType["Debezium"].headers["traceparent"], parent);
  EXPECT_EQ(byType["Debezium"].headers["tracestate"], "congo=t61rcWkgMzE");
  EXPECT_EQ(byType["Bare"].headers["traceparent"], parent);
  EXPECT_EQ(byType["Bare"].headers.count("tracestate"), 0u);
  EXPECT_EQ(byType["Invalid"].headers.count("traceparent"), 0u);
  EXPECT_EQ(byType["None"].headers.count("traceparent"), 0u);
  EXPECT_EQ(scrapeValue(metrics, "outbox_relay_trace_contexts_dropped_total"), 1.0);
  EXPECT_NE(relay->log().find("holds no valid W3C trace context"), std::string::npos);
}

// [outbox.envelope]: the value is {"payload": <the payload>, <field>: <column>, ...}, each column as JSON by its type.
TEST(RelayDelivery, EnvelopePlacesColumnsBesideThePayload) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "envelope");
  pg.exec("ALTER TABLE " + table + " ADD COLUMN version int, ADD COLUMN tags jsonb, ADD COLUMN amount numeric");
  std::string topic = uniqueName("env");
  RelayConfigBuilder config;
  config.addOutbox({table, topic, {}, {{"eventType", "type"}}});
  std::string rendered = config.render() +
                         "[outbox.envelope]\neventType = \"type\"\neventVersion = \"version\"\ntags = \"tags\"\n"
                         "amount = \"amount\"\n";
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start(rendered);
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();
  pg.exec("INSERT INTO " + table +
          " (aggregatetype, aggregateid, type, payload, version, tags, amount) VALUES "
          "('a', 'k1', 'OrderCreated', '{\"total\": 42.5}', 2, '[\"new\"]', 19.90), "
          "('a', 'k2', 'Bare', '{}', NULL, NULL, 'NaN')");
  TopicReader reader(kafkaBootstrap(), {topic});
  auto& records = reader.readUntil(2, 3min);
  ASSERT_EQ(records.size(), 2u) << relay->logTail();
  std::map<std::string, nlohmann::json> byKey;
  for (auto& r : records) byKey[r.key.value_or("")] = nlohmann::json::parse(r.value.value_or("null"));
  EXPECT_EQ(byKey["k1"], nlohmann::json::parse(
                             R"({"payload": {"total": 42.5}, "eventType": "OrderCreated", "eventVersion": 2,
                                 "tags": ["new"], "amount": 19.90})"));
  EXPECT_EQ(byKey["k2"], nlohmann::json::parse(
                             R"({"payload": {}, "eventType": "Bare", "eventVersion": null, "tags": null,
                                 "amount": "NaN"})"));
}

// [[outbox]] cloudevents: binary mode adds the ce_* headers and content-type; structured mode makes the value the
// CloudEvent itself. The Debezium headers stay in both.
TEST(RelayDelivery, CloudEventsBinaryAndStructured) {
  PgConnection pg(pgUrl());
  std::string binary = createOutboxTable(pg, "cebinary");
  std::string structured = createOutboxTable(pg, "cestructured");
  std::string topic = uniqueName("ce");
  RelayConfigBuilder config;
  config.addOutbox({binary, topic + ".binary", {{"cloudevents", "binary"}, {"cloudevents_source", "/orders"}},
                    {{"eventType", "type"}}})
      .addOutbox({structured, topic + ".structured", {{"cloudevents", "structured"}, {"cloudevents_source", "/orders"}},
                  {{"eventType", "type"}}});
  ReplicationCleanup cleanup(config.slot(), config.publication(), {binary, structured});
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();
  auto epochMs = [&] { return std::stoll(*pg.scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")); };
  int64_t before = epochMs();
  pg.exec("BEGIN; INSERT INTO " + binary +
          " (aggregatetype, aggregateid, type, payload) VALUES ('order', 'o-1', 'OrderCreated', '{\"total\": 42}'); "
          "INSERT INTO " + structured +
          " (aggregatetype, aggregateid, type, payload) VALUES ('order', 'o-1', 'OrderCreated', '{\"total\": 42}'); "
          "COMMIT");
  int64_t after = epochMs();
  TopicReader reader(kafkaBootstrap(), {topic + ".binary", topic + ".structured"});
  auto& records = reader.readUntil(2, 3min);
  ASSERT_EQ(records.size(), 2u) << relay->logTail();
  std::map<std::string, ConsumedRecord> byTopic;
  for (auto& r : records) byTopic[r.topic] = r;
  ConsumedRecord& b = byTopic[topic + ".binary"];
  std::string id = b.headers["id"];
  EXPECT_FALSE(id.empty());
  EXPECT_EQ(b.headers["ce_specversion"], "1.0");
  EXPECT_EQ(b.headers["ce_id"], id);
  EXPECT_EQ(b.headers["ce_source"], "/orders");
  EXPECT_EQ(b.headers["ce_type"], "OrderCreated");
  EXPECT_EQ(b.headers["content-type"], "application/json");
  EXPECT_EQ(b.headers["eventType"], "OrderCreated");
  // ce_time is the commit time, as the record's timestamp.
  EXPECT_EQ(b.headers["ce_time"].size(), 24u) << b.headers["ce_time"];
  EXPECT_GE(b.timestampMs, before - 1);
  EXPECT_LE(b.timestampMs, after + 1);
  EXPECT_EQ(nlohmann::json::parse(b.value.value_or("null")), nlohmann::json::parse(R"({"total": 42})"));

  ConsumedRecord& s = byTopic[topic + ".structured"];
  EXPECT_EQ(s.headers["content-type"], "application/cloudevents+json");
  EXPECT_EQ(s.headers.count("ce_id"), 0u);
  nlohmann::json event = nlohmann::json::parse(s.value.value_or("null"));
  EXPECT_EQ(event["specversion"], "1.0");
  EXPECT_EQ(event["id"], s.headers["id"]);
  EXPECT_EQ(event["source"], "/orders");
  EXPECT_EQ(event["type"], "OrderCreated");
  EXPECT_EQ(event["time"], b.headers["ce_time"]);  // one transaction: one commit time
  EXPECT_EQ(event["datacontenttype"], "application/json");
  EXPECT_EQ(event["data"], nlohmann::json::parse(R"({"total": 42})"));
}

// README "Record timestamps": a timestamp the topic's message.timestamp.after.max.ms refuses is a dead letter counted
// as invalid_record, and the events after it flow.
TEST(RelayDelivery, ATimestampTheBrokerRefusesIsADeadLetter) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "tsfuture");
  pg.exec("ALTER TABLE " + table + " ADD COLUMN occurred_at timestamptz");
  std::string topic = uniqueName("tsfuture");
  createTopic(topic, 1, {{"message.timestamp.after.max.ms", "3600000"}});
  std::string deadLetters = uniqueName("dlq");
  RelayConfigBuilder config;
  config.addOutbox({table, topic, {{"timestamp_column", "occurred_at"}}, {{"eventType", "type"}}})
      .metricsListen("127.0.0.1:0");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start("dead_letter_topic = \"" + deadLetters + "\"\n" + config.render());
  std::string metrics = adminAddressOf(*relay);
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();
  pg.exec("INSERT INTO " + table + " (aggregatetype, aggregateid, type, payload, occurred_at) VALUES "
          "('a', 'future', 'T', '{}', '2100-01-01 00:00:00+00')");
  // The next event only once the first is dead-lettered: in at-least-once mode the broker refuses the whole batch,
  // and an event batched with it would be dead-lettered too (README "Record timestamps").
  ASSERT_TRUE(waitFor([&] { return scrapeValue(metrics, "outbox_relay_rejected_total{reason=\"invalid_record\"}") == 1.0; },
                      60s, 250ms))
      << relay->logTail();
  pg.exec("INSERT INTO " + table + " (aggregatetype, aggregateid, type, payload, occurred_at) VALUES "
          "('a', 'now', 'T', '{}', NULL)");
  TopicReader reader(kafkaBootstrap(), {topic, deadLetters});
  std::vector<ConsumedRecord> records = reader.readUntil(2, 3min);
  ASSERT_EQ(records.size(), 2u) << relay->logTail();
  std::map<std::string, ConsumedRecord> byKey;
  for (auto& r : records) byKey[r.key.value_or("")] = r;
  EXPECT_EQ(byKey["now"].topic, topic);
  EXPECT_EQ(byKey["future"].topic, deadLetters);
  EXPECT_NE(byKey["future"].headers["error"].find("INVALID_TIMESTAMP"), std::string::npos) << byKey["future"].headers["error"];
  EXPECT_EQ(scrapeValue(metrics, "outbox_relay_rejected_total{reason=\"invalid_record\"}"), 1.0);
  EXPECT_TRUE(relay->running());
}
