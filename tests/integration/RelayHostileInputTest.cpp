// Hostile input on the logical-message path (README "Security"): any role allowed to call pg_logical_emit_message
// writes bytes the relay reads. A message must never stop the relay or rewrite a payload: what cannot become an
// event goes to the dead-letter topic and the relay goes on; what can is forwarded byte for byte.

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "support/RelayProcess.h"
#include "support/TestEnv.h"

using namespace outbox;
using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

int httpStatus(const std::string& address, const std::string& path) {
  CommandResult r = runCommand(
      {"/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "http://" + address + path},
      15s);
  return r.output.empty() ? 0 : std::stoi(r.output);
}

// The value of one series, e.g. metric(address, "outbox_relay_messages_ignored_total{reason=\"disabled\"}").
std::optional<double> metric(const std::string& address, const std::string& series) {
  CommandResult r = runCommand({"/usr/bin/curl", "-s", "--max-time", "10", "http://" + address + "/metrics"}, 15s);
  size_t at = r.output.find("\n" + series + " ");
  if (at == std::string::npos) return std::nullopt;
  return std::stod(r.output.substr(at + series.size() + 2));
}

const std::string kIgnoredDisabled = R"(outbox_relay_messages_ignored_total{reason="disabled"})";
const std::string kIgnoredNonTransactional = R"(outbox_relay_messages_ignored_total{reason="non_transactional"})";
const std::string kMessagesDeadLettered = R"(outbox_relay_events_dead_lettered_total{table="message"})";

// Applies schema/outbox.sql as psql does (idempotent).
void applyOutboxSchema() {
  CommandResult r = runCommand(
      {"/usr/bin/psql", pgUrl(), "-q", "-X", "-v", "ON_ERROR_STOP=1", "-f", sourcePath("schema/outbox.sql")}, 120s);
  ASSERT_TRUE(r.status.success()) << r.output;
}

std::string header(const ConsumedRecord& record, const std::string& name) {
  auto it = record.headers.find(name);
  return it == record.headers.end() ? "<absent>" : it->second;
}

std::string newId(PgConnection& pg) { return *pg.scalar("SELECT gen_random_uuid()"); }

}  // namespace

// ~100,000 nesting levels (what crashed the nlohmann-based relay for good: it read the message again after every
// restart), a 10 MB message, invalid JSON and invalid UTF-8: each is dead-lettered with an "error" header, the relay
// stays up and healthy, the next event is delivered and the slot's confirmed position passes all of them.
TEST(RelayHostileInput, HostileMessagesAreDeadLetteredAndTheRelayStaysUp) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "hostile");
  std::string topicPrefix = uniqueName("hostile");
  std::string deadLetters = uniqueName("hostile_dlq");
  RelayConfigBuilder config;
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {}})
      .messages(topicPrefix + ".{aggregatetype}")
      .metricsListen("127.0.0.1:0");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start("dead_letter_topic = \"" + deadLetters + "\"\n" + config.render());
  std::string admin = adminAddressOf(*relay);
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();

  std::string prefix = sqlLiteral(config.messagePrefix());
  auto head = [&](const std::string& aggregateId) {
    return sqlLiteral(R"({"id":")" + newId(pg) + R"(","aggregatetype":"order","aggregateid":")" + aggregateId +
                      R"(","payload":)");
  };
  // Built by the server, so the test sends a few hundred bytes of SQL, not 10 MB.
  pg.exec("SELECT pg_logical_emit_message(true, " + prefix + ", " + head("deep") +
          " || repeat('[', 100000) || repeat(']', 100000) || '}')");
  pg.exec("SELECT pg_logical_emit_message(true, " + prefix + ", " + head("big") + " || '\"' || repeat('x', " +
          std::to_string(10 * 1024 * 1024) + ") || '\"}')");
  pg.exec("SELECT pg_logical_emit_message(true, " + prefix + ", " + head("invalid") + " || '[1 2]}')");
  // The bytea overload takes any bytes: 0xFF 0xFE is not UTF-8.
  pg.exec("SELECT pg_logical_emit_message(true, " + prefix + ", convert_to(" + head("utf8") +
          " || '\"', 'UTF8') || '\\xfffe'::bytea || convert_to('\"}', 'UTF8'))");
  std::string goodId = newId(pg);
  pg.exec("SELECT pg_logical_emit_message(true, " + prefix + ", " +
          sqlLiteral(R"({"id":")" + goodId + R"(","aggregatetype":"order","aggregateid":"ok","payload":{"n":1}})") +
          ")");
  Lsn end = currentWalLsn(pg);

  TopicReader orders(kafkaBootstrap(), {topicPrefix + ".order"});
  auto& delivered = orders.readUntil(1, 3min);
  ASSERT_EQ(delivered.size(), 1u) << relay->logTail();
  EXPECT_EQ(header(delivered[0], "id"), goodId);
  EXPECT_EQ(delivered[0].value, R"({"n":1})");

  TopicReader dead(kafkaBootstrap(), {deadLetters});
  dead.readUntil(4, 3min);
  auto& dl = dead.readUntilQuiet(3s, 30s);
  ASSERT_EQ(dl.size(), 4u) << relay->logTail();
  // Keyless, so spread over the partitions: told apart by their error. Every one names the message and why.
  const std::vector<std::string> reasons = {"content is nested more than 512 levels deep",
                                            "more than messages.max_bytes = 1000000 (the dead letter carries no value)",
                                            "content is not valid JSON", "content is not valid UTF-8"};
  std::map<std::string, ConsumedRecord> byReason;
  for (const ConsumedRecord& record : dl) {
    std::string error = header(record, "error");
    EXPECT_NE(error.find("logical message (prefix \"" + config.messagePrefix() + "\") at "), std::string::npos)
        << error;
    EXPECT_FALSE(record.key.has_value());
    for (const std::string& reason : reasons) {
      if (error.find(reason) != std::string::npos) byReason[reason] = record;
    }
  }
  ASSERT_EQ(byReason.size(), 4u) << "each reason once";
  const ConsumedRecord& deep = byReason[reasons[0]];
  ASSERT_TRUE(deep.value.has_value());
  EXPECT_EQ(deep.value->size(), 200000u + head("deep").size() - 2 + 1);  // as written (the literal's quotes off)
  EXPECT_EQ(deep.value->substr(deep.value->size() - 3), "]]}");
  const ConsumedRecord& big = byReason[reasons[1]];
  EXPECT_FALSE(big.value.has_value()) << "a 10 MB dead letter would be refused by Kafka too";
  EXPECT_NE(header(big, "error").find("content is 10485"), std::string::npos) << header(big, "error");
  EXPECT_NE(byReason[reasons[2]].value.value_or("").find("[1 2]}"), std::string::npos);
  EXPECT_NE(byReason[reasons[3]].value.value_or("").find("\"\xff\xfe\"}"), std::string::npos) << "the bytes as written";

  EXPECT_TRUE(waitFor([&] { return confirmedFlushLsn(pg, config.slot()).value_or(Lsn()) >= end; }, 60s))
      << "confirmed_flush_lsn " << confirmedFlushLsn(pg, config.slot()).value_or(Lsn()).toString()
      << " never passed the hostile messages (" << end.toString() << ")";
  EXPECT_TRUE(relay->running()) << relay->logTail();
  EXPECT_EQ(httpStatus(admin, "/healthz"), 200);
  EXPECT_EQ(metric(admin, kMessagesDeadLettered), 4.0);

  // A restart reads from the confirmed position: none of them comes back, and the relay stays up.
  relay->sigterm();
  ASSERT_TRUE(relay->waitExit(60s).has_value());
  auto again = RelayProcess::start("dead_letter_topic = \"" + deadLetters + "\"\n" + config.render(), "relay-2");
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << again->logTail();
  std::string laterId = newId(pg);
  pg.exec("SELECT pg_logical_emit_message(true, " + prefix + ", " +
          sqlLiteral(R"({"id":")" + laterId + R"(","aggregatetype":"order","aggregateid":"ok","payload":2})") + ")");
  auto& after = orders.readUntil(2, 3min);
  ASSERT_EQ(after.size(), 2u) << again->logTail();
  EXPECT_EQ(header(after[1], "id"), laterId);
  EXPECT_EQ(dead.readUntilQuiet(3s, 30s).size(), 4u);
  EXPECT_TRUE(again->running()) << again->logTail();
}

// schema/outbox.sql takes EXECUTE on pg_logical_emit_message from PUBLIC: a login without grants cannot forge an
// event (it could publish PaymentApproved into outbox.event.payments before), a member of outbox_writer can. And
// with [messages] at its default (off), even a superuser's message with the default prefix publishes nothing.
TEST(RelayHostileInput, ForgedMessagesAreRefusedAndMessagesAreOffByDefault) {
  applyOutboxSchema();
  PgConnection pg(pgUrl());
  std::string forger = uniqueName("it_forger");
  std::string writer = uniqueName("it_writer");
  pg.exec("CREATE ROLE " + forger + " LOGIN PASSWORD 'forger-pw'");
  pg.exec("CREATE ROLE " + writer + " LOGIN PASSWORD 'writer-pw' IN ROLE outbox_writer");
  struct DropRoles {
    PgConnection& pg;
    std::string a, b;
    ~DropRoles() {
      try {
        pg.exec("DROP ROLE IF EXISTS " + a + "; DROP ROLE IF EXISTS " + b);
      } catch (...) {
      }
    }
  } dropRoles{pg, forger, writer};

  std::string forged =
      R"({"id":"6f1c5a3e-0c1e-4f8e-9b7a-2a4d1c0e9f11","aggregatetype":"payments","aggregateid":"p-1","type":"PaymentApproved","payload":{}})";
  {
    PgConnection asForger(pgConninfoWith({{"user", forger}, {"password", "forger-pw"}}));
    for (const std::string& content : {sqlLiteral(forged), sqlLiteral(forged) + "::bytea"}) {
      try {
        asForger.exec("SELECT pg_logical_emit_message(true, 'outbox', " + content + ")");
        ADD_FAILURE() << "a role without grants emitted a logical message (" << content.substr(content.size() - 7)
                      << ")";
      } catch (const std::exception& e) {
        EXPECT_NE(std::string(e.what()).find("permission denied for function pg_logical_emit_message"),
                  std::string::npos)
            << e.what();
      }
    }
    try {
      asForger.exec("INSERT INTO public.outbox (aggregatetype, aggregateid, type) VALUES ('payments', 'p', 'X')");
      ADD_FAILURE() << "a role without grants inserted into public.outbox";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("permission denied for table outbox"), std::string::npos) << e.what();
    }
  }
  {
    PgConnection asWriter(pgConninfoWith({{"user", writer}, {"password", "writer-pw"}}));
    // Inside a transaction that rolls back: allowed, and publishes nothing anywhere.
    asWriter.exec("BEGIN; SELECT pg_logical_emit_message(true, 'it_writer_probe', '{}'); ROLLBACK");
  }

  // A relay with the default [messages] (off, prefix "outbox"); its outbox table is what it relays.
  std::string table = createOutboxTable(pg, "offdefault");
  std::string topicPrefix = uniqueName("offdefault");
  std::string aggregateType = uniqueName("forged");
  std::string deadLetters = uniqueName("offdefault_dlq");
  RelayConfigBuilder config;
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {}})
      .omitMessagesSection()
      .metricsListen("127.0.0.1:0");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start("dead_letter_topic = \"" + deadLetters + "\"\n" + config.render());
  std::string admin = adminAddressOf(*relay);
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();
  EXPECT_EQ(metric(admin, kIgnoredDisabled), 0.0) << "exported at 0 from the start";

  // The default topic template would make outbox.event.<aggregatetype> of it.
  pg.exec("SELECT pg_logical_emit_message(true, 'outbox', " +
          sqlLiteral(R"({"id":"6f1c5a3e-0c1e-4f8e-9b7a-2a4d1c0e9f12","aggregatetype":")" + aggregateType +
                     R"(","aggregateid":"p-1","type":"PaymentApproved","payload":{}})") +
          ")");
  pg.exec("INSERT INTO " + table + " (aggregatetype, aggregateid, type, payload) VALUES ('order', 'o-1', 'T', '{}')");
  TopicReader later(kafkaBootstrap(), {topicPrefix + ".order"});
  ASSERT_EQ(later.readUntil(1, 3min).size(), 1u) << relay->logTail();
  EXPECT_TRUE(waitFor([&] { return metric(admin, kIgnoredDisabled) == 1.0; }, 30s))
      << metric(admin, kIgnoredDisabled).value_or(-1);
  KafkaOffsets offsets(kafkaBootstrap());
  EXPECT_EQ(offsets.recordCount("outbox.event." + aggregateType), 0);
  EXPECT_EQ(offsets.recordCount(deadLetters), 0);
  EXPECT_NE(relay->log().find("ignored 1 logical message(s) with prefix \"outbox\""), std::string::npos)
      << relay->logTail();
  EXPECT_TRUE(relay->running());
}

// A logical message's payload is forwarded as written: big integers, trailing zeros, key order, unicode escapes and
// whitespace arrive byte for byte (the nlohmann-based router re-rendered them). So does a json or text payload
// column (jsonb is normalized by PostgreSQL itself when stored).
TEST(RelayHostileInput, PayloadsArriveByteIdentical) {
  PgConnection pg(pgUrl());
  std::string jsonTable = createOutboxTable(pg, "verbatimj", "json");
  std::string textTable = createOutboxTable(pg, "verbatimt", "text");
  std::string topicPrefix = uniqueName("verbatim");
  RelayConfigBuilder config;
  config.addOutbox({jsonTable, topicPrefix + ".{aggregatetype}", {}, {}})
      .addOutbox({textTable, topicPrefix + ".{aggregatetype}", {}, {}})
      .messages(topicPrefix + ".{aggregatetype}", {{"eventType", "type"}});
  ReplicationCleanup cleanup(config.slot(), config.publication(), {jsonTable, textTable});
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();

  const std::vector<std::string> payloads = {
      R"({"b":1,"a":2})",
      "12345678901234567890123",
      "1.10",
      R"("\u00e9")",
      "{ \"amount\" :  1.10 ,\n  \"big\": 12345678901234567890123,\t\"name\": \"caf\\u00e9\", \"z\": [ ] }",
      R"({"z":{"y":[1.0e+2,-0,"\"quoted\"",null,true]},"a":"\ud83d\ude00"})",
  };
  std::map<std::string, std::string> expected;  // event id -> payload
  for (const std::string& payload : payloads) {
    std::string id = newId(pg);
    expected[id] = payload;
    pg.exec("SELECT pg_logical_emit_message(true, " + sqlLiteral(config.messagePrefix()) + ", " +
            sqlLiteral(R"({"payload": )" + payload + R"( , "type":"T\u00e9","aggregateid":"a-1","id":")" + id +
                       R"(","aggregatetype":"order"})") +
            ")");
  }
  for (const std::string& table : {jsonTable, textTable}) {
    for (const std::string& payload : {payloads[0], payloads[4], payloads[5]}) {
      std::string id = *pg.scalar("INSERT INTO " + table +
                                  " (aggregatetype, aggregateid, type, payload) VALUES ('order', 'a-1', 'T', " +
                                  sqlLiteral(payload) + ") RETURNING id");
      expected[id] = payload;
    }
  }

  TopicReader reader(kafkaBootstrap(), {topicPrefix + ".order"});
  reader.readUntil(expected.size(), 3min);
  auto& records = reader.readUntilQuiet(3s, 30s);
  ASSERT_EQ(records.size(), expected.size()) << relay->logTail();
  for (const ConsumedRecord& record : records) {
    std::string id = header(record, "id");
    ASSERT_EQ(expected.count(id), 1u) << id;
    EXPECT_EQ(record.value, expected[id]) << "event " << id;
    EXPECT_EQ(record.key, "a-1");
  }
  // Headers and keys are a JSON string's value (unescaped), as before.
  size_t messages = 0;
  for (const ConsumedRecord& record : records) {
    if (record.headers.count("eventType") && header(record, "eventType") == "T\xc3\xa9") ++messages;
  }
  EXPECT_EQ(messages, payloads.size());
  EXPECT_TRUE(relay->running());
}

// pg_logical_emit_message(false, ...) is decoded when written, outside any transaction's fate. By default it is
// ignored and counted; with messages.non_transactional = "publish" it is published at once, even when the
// transaction that wrote it rolls back.
TEST(RelayHostileInput, NonTransactionalMessagesAreIgnoredUnlessOptedIn) {
  PgConnection pg(pgUrl());
  for (bool publish : {false, true}) {
    SCOPED_TRACE(publish ? "non_transactional = \"publish\"" : "default");
    std::string table = createOutboxTable(pg, "nontx");
    std::string topicPrefix = uniqueName("nontx");
    RelayConfigBuilder config;
    config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {}})
        .messages(topicPrefix + ".{aggregatetype}")
        .metricsListen("127.0.0.1:0");
    if (publish) config.messagesOption("non_transactional", "\"publish\"");
    ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
    auto relay = RelayProcess::start(config.render());
    std::string admin = adminAddressOf(*relay);
    ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();
    EXPECT_EQ(metric(admin, kIgnoredNonTransactional), 0.0) << "exported at 0 from the start";

    std::string prefix = sqlLiteral(config.messagePrefix());
    auto message = [&](const std::string& id, const std::string& aggregateId) {
      return sqlLiteral(R"({"id":")" + id + R"(","aggregatetype":"order","aggregateid":")" + aggregateId +
                        R"(","payload":{}})");
    };
    std::string rolledBack = newId(pg), committed = newId(pg), transactional = newId(pg);
    pg.exec("BEGIN; SELECT pg_logical_emit_message(false, " + prefix + ", " + message(rolledBack, "rb") +
            "); ROLLBACK");
    pg.exec("SELECT pg_logical_emit_message(false, " + prefix + ", " + message(committed, "c") + ")");
    pg.exec("SELECT pg_logical_emit_message(true, " + prefix + ", " + message(transactional, "t") + ")");

    TopicReader reader(kafkaBootstrap(), {topicPrefix + ".order"});
    size_t expected = publish ? 3 : 1;
    reader.readUntil(expected, 3min);
    auto& records = reader.readUntilQuiet(3s, 30s);
    ASSERT_EQ(records.size(), expected) << relay->logTail();
    std::set<std::string> ids;
    for (const ConsumedRecord& record : records) ids.insert(header(record, "id"));
    EXPECT_EQ(ids.count(transactional), 1u);
    EXPECT_EQ(ids.count(rolledBack), publish ? 1u : 0u) << "published although its transaction rolled back";
    EXPECT_EQ(ids.count(committed), publish ? 1u : 0u);
    EXPECT_TRUE(waitFor([&] { return metric(admin, kIgnoredNonTransactional) == (publish ? 0.0 : 2.0); }, 30s))
        << metric(admin, kIgnoredNonTransactional).value_or(-1);
    if (!publish) {
      EXPECT_NE(relay->log().find("it is non-transactional"), std::string::npos) << relay->logTail();
    }
    Lsn end = currentWalLsn(pg);
    EXPECT_TRUE(waitFor([&] { return confirmedFlushLsn(pg, config.slot()).value_or(Lsn()) >= end; }, 60s));
    EXPECT_TRUE(relay->running()) << relay->logTail();
  }
}
