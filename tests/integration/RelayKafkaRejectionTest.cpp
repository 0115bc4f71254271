// Records Kafka refuses for their own content (README "Guarantees"): an event over its topic's max.message.bytes,
// an event to a topic that does not exist and is not created. Each goes to the dead-letter topic in its place, is
// counted, and the relay goes on with the events after it; the slot advances only once the dead letter is in
// Kafka. When the dead-letter topic refuses too, the relay stops without confirming. And a relay whose librdkafka
// queue stays full still answers a stop and keeps sending status updates.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "support/RelayProcess.h"
#include "support/TestEnv.h"

using namespace outbox;
using namespace outbox::test;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

namespace {

// The value of one series in the relay's /metrics, nullopt when it (or the endpoint) is not there.
std::optional<double> metric(int port, const std::string& series) {
  CommandResult r = runCommand(
      {"/usr/bin/curl", "-sS", "--max-time", "10", "http://127.0.0.1:" + std::to_string(port) + "/metrics"}, 20s);
  if (!r.status.success()) return std::nullopt;
  std::string text = "\n" + r.output;
  size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return std::nullopt;
  return std::stod(text.substr(at + series.size() + 2));
}

std::string rejected(const std::string& reason) { return "outbox_relay_rejected_total{reason=\"" + reason + "\"}"; }

void insertEvent(PgConnection& pg, const std::string& table, const std::string& type, const std::string& id,
                 const std::string& payload) {
  pg.exec("INSERT INTO " + table + " (aggregatetype, aggregateid, type, payload) VALUES ('" + type + "', '" + id +
          "', 'T', '" + payload + "')");
}

// The id of the last row of an aggregate.
std::string lastId(PgConnection& pg, const std::string& table, const std::string& aggregateId) {
  return pg.scalar("SELECT id FROM " + table + " WHERE aggregateid = '" + aggregateId + "' ORDER BY ctid DESC LIMIT 1")
      .value_or("");
}

std::string header(const ConsumedRecord& record, const std::string& name) {
  auto it = record.headers.find(name);
  return it == record.headers.end() ? std::string("<none>") : it->second;
}

const ConsumedRecord* withId(const std::vector<ConsumedRecord>& records, const std::string& id) {
  for (const auto& r : records) {
    auto it = r.headers.find("id");
    if (it != r.headers.end() && it->second == id) return &r;
  }
  return nullptr;
}

// Waits until the slot has confirmed everything committed so far.
bool slotCaughtUp(PgConnection& pg, const std::string& slot) {
  Lsn end = currentWalInsertLsn(pg);
  return waitFor([&] { return confirmedFlushLsn(pg, slot).value_or(Lsn()) >= end; }, 120s, 200ms);
}

}  // namespace

// An event over its topic's max.message.bytes: the broker refuses its batch (MSG_SIZE_TOO_LARGE in the delivery
// report). It reaches the dead-letter topic without its payload, with headers telling its topic, key, size, error
// and id; the events after it, of the same aggregate and others, are published in order, and the slot advances.
TEST(RelayKafkaRejection, OversizedEventIsDeadLetteredWithoutPayloadAndLaterEventsFlow) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "big");
  std::string topicPrefix = uniqueName("t");
  std::string deadLetters = uniqueName("dlq");
  createTopic(topicPrefix + ".order", 3, {{"max.message.bytes", "4096"}});
  int port = freeLoopbackPort();
  RelayConfigBuilder config;
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {}})
      .metricsListen("127.0.0.1:" + std::to_string(port));
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start("dead_letter_topic = \"" + deadLetters + "\"\n" + config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();
  // Every reason the relay knows is there from the first scrape, at 0.
  ASSERT_TRUE(waitFor([&] { return metric(port, rejected("too_large")).has_value(); }, 30s)) << relay->logTail();
  for (const char* reason : {"too_large", "unknown_topic", "invalid_topic", "invalid_record"}) {
    EXPECT_EQ(metric(port, rejected(reason)), 0.0) << reason;
  }

  TopicReader orders(kafkaBootstrap(), {topicPrefix + ".order", topicPrefix + ".customer"});
  insertEvent(pg, table, "order", "a-1", "{\"n\": 1}");
  ASSERT_EQ(orders.readUntil(1, 2min).size(), 1u) << relay->logTail();

  std::string big = "{\"big\": \"" + std::string(20000, 'x') + "\"}";
  insertEvent(pg, table, "order", "a-1", big);
  std::string bigId = lastId(pg, table, "a-1");
  TopicReader dead(kafkaBootstrap(), {deadLetters});
  auto& dl = dead.readUntil(1, 3min);
  ASSERT_EQ(dl.size(), 1u) << relay->logTail();
  EXPECT_EQ(dl[0].key, "a-1");
  EXPECT_FALSE(dl[0].value.has_value()) << "the payload of a record too large must not be in the dead letter";
  EXPECT_EQ(header(dl[0], "id"), bigId);
  EXPECT_EQ(header(dl[0], "original_topic"), topicPrefix + ".order");
  EXPECT_EQ(header(dl[0], "original_key"), "a-1");
  EXPECT_EQ(header(dl[0], "original_size"), std::to_string(3 + big.size()));
  EXPECT_THAT(header(dl[0], "error"), HasSubstr("MSG_SIZE_TOO_LARGE"));
  EXPECT_TRUE(waitFor([&] { return metric(port, rejected("too_large")) == 1.0; }, 60s)) << relay->logTail();

  // Later events of the same aggregate and of others.
  insertEvent(pg, table, "order", "a-1", "{\"n\": 3}");
  insertEvent(pg, table, "customer", "c-1", "{\"n\": 4}");
  insertEvent(pg, table, "order", "a-2", "{\"n\": 5}");
  insertEvent(pg, table, "order", "a-1", "{\"n\": 6}");
  auto& ok = orders.readUntil(5, 3min);
  ASSERT_EQ(ok.size(), 5u) << relay->logTail();
  std::vector<std::string> a1;
  for (const auto& r : ok) {
    if (r.key == "a-1") a1.push_back(r.value.value_or(""));
  }
  EXPECT_EQ(a1, (std::vector<std::string>{"{\"n\": 1}", "{\"n\": 3}", "{\"n\": 6}"}));
  EXPECT_EQ(withId(ok, bigId), nullptr) << "the oversized event must not reach its topic";
  EXPECT_TRUE(slotCaughtUp(pg, config.slot())) << "the slot did not advance past the dead-lettered event";
  EXPECT_TRUE(relay->running()) << relay->logTail();
  EXPECT_THAT(relay->log(), HasSubstr("without its payload"));
}

// A topic that does not exist and is not created. The dev stack's broker auto-creates topics, so the relay asks it
// not to (allow.auto.create.topics=false): the broker then answers UNKNOWN_TOPIC_OR_PART exactly as one with
// auto.create.topics.enable=false. After topic.metadata.propagation.max.ms the queued event fails in its delivery
// report; later ones fail in produce() at once (__UNKNOWN_TOPIC). Both reach the dead-letter topic with their
// payload, and the events to the topic that exists flow on.
TEST(RelayKafkaRejection, EventToAMissingTopicIsDeadLetteredWithItsPayload) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "missing");
  std::string topicPrefix = uniqueName("t");
  std::string deadLetters = uniqueName("dlq");
  createTopic(topicPrefix + ".customer", 3, {});
  createTopic(deadLetters, 1, {});
  int port = freeLoopbackPort();
  RelayConfigBuilder config;
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {}})
      .metricsListen("127.0.0.1:" + std::to_string(port))
      .kafkaProperty("allow.auto.create.topics", "false")
      .kafkaProperty("topic.metadata.propagation.max.ms", "3000");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start("dead_letter_topic = \"" + deadLetters + "\"\n" + config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();

  insertEvent(pg, table, "order", "a-1", "{\"n\": 1}");
  insertEvent(pg, table, "customer", "c-1", "{\"n\": 2}");
  TopicReader dead(kafkaBootstrap(), {deadLetters});
  ASSERT_EQ(dead.readUntil(1, 3min).size(), 1u) << relay->logTail();
  insertEvent(pg, table, "order", "a-1", "{\"n\": 3}");
  insertEvent(pg, table, "customer", "c-1", "{\"n\": 4}");
  auto& dl = dead.readUntil(2, 3min);
  ASSERT_EQ(dl.size(), 2u) << relay->logTail();
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(dl[i].key, "a-1");
    EXPECT_EQ(header(dl[i], "original_topic"), topicPrefix + ".order");
    EXPECT_EQ(dl[i].headers.count("id"), 1u);
  }
  EXPECT_EQ(dl[0].value, "{\"n\": 1}");
  EXPECT_EQ(dl[1].value, "{\"n\": 3}");
  EXPECT_THAT(header(dl[0], "error"), HasSubstr("UNKNOWN_TOPIC_OR_PART"));  // the delivery report
  EXPECT_THAT(header(dl[1], "error"), HasSubstr("_UNKNOWN_TOPIC"));         // produce(), once known missing

  TopicReader customers(kafkaBootstrap(), {topicPrefix + ".customer"});
  auto& ok = customers.readUntil(2, 3min);
  ASSERT_EQ(ok.size(), 2u) << relay->logTail();
  EXPECT_EQ(ok[0].value, "{\"n\": 2}");
  EXPECT_EQ(ok[1].value, "{\"n\": 4}");
  EXPECT_TRUE(waitFor([&] { return metric(port, rejected("unknown_topic")) == 2.0; }, 60s)) << relay->logTail();
  EXPECT_TRUE(slotCaughtUp(pg, config.slot()));
  EXPECT_TRUE(relay->running()) << relay->logTail();
}

// When the dead-letter topic refuses the dead letter too (here: it does not exist either), nothing is left to stand
// for the event: the relay stops with exit status 3 and the slot keeps the event.
TEST(RelayKafkaRejection, DeadLetterTopicRefusingStopsWithoutConfirming) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "nodlq");
  std::string topicPrefix = uniqueName("t");
  std::string deadLetters = uniqueName("dlq");  // never created
  RelayConfigBuilder config;
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {}})
      .kafkaProperty("allow.auto.create.topics", "false")
      .kafkaProperty("topic.metadata.propagation.max.ms", "3000");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start("dead_letter_topic = \"" + deadLetters + "\"\n" + config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();
  Lsn before = currentWalInsertLsn(pg);
  insertEvent(pg, table, "order", "a-1", "{\"n\": 1}");
  Lsn after = currentWalInsertLsn(pg);

  auto status = relay->waitExit(2min);
  ASSERT_TRUE(status) << "the relay did not stop: " << relay->logTail();
  EXPECT_TRUE(status->exited && status->code == 3) << status->toString() << "\n" << relay->logTail();
  EXPECT_THAT(relay->log(), HasSubstr("dead-letter topic"));
  EXPECT_LT(confirmedFlushLsn(pg, config.slot()).value_or(Lsn()), after)
      << "confirmed past an event neither its topic nor the dead-letter topic took (before it: " << before.toString()
      << ")";
  EXPECT_EQ(pendingInsertsInSlot(pg, config.slot(), config.publication()), 1);
}

// librdkafka's queue full (a queue of 5 and Kafka down): the relay keeps sending status updates while it waits for
// room, and a stop ends it within shutdown_timeout_ms, without confirming what Kafka does not have.
TEST(RelayKafkaRejection, QueueFullStillSendsStatusAndHonoursStop) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "qfull");
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config;
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {}})
      .kafkaProperty("queue.buffering.max.messages", "5");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start("shutdown_timeout_ms = 3000\n" + config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();
  // Kafka known first, so that the queue fills with events rather than waiting for metadata.
  insertEvent(pg, table, "order", "a-0", "{\"n\": 0}");
  TopicReader reader(kafkaBootstrap(), {topicPrefix + ".order"});
  ASSERT_EQ(reader.readUntil(1, 2min).size(), 1u) << relay->logTail();
  ASSERT_TRUE(slotCaughtUp(pg, config.slot()));

  KafkaOutage outage;
  pg.exec("INSERT INTO " + table +
          " (aggregatetype, aggregateid, type, payload) SELECT 'order', 'a-' || i, 'T', '{}' FROM "
          "generate_series(1, 20) i");
  auto replyTime = [&] {
    return pg
        .scalar(
            "SELECT reply_time FROM pg_stat_replication WHERE pid = (SELECT active_pid FROM "
            "pg_replication_slots WHERE slot_name = '" +
            config.slot() + "')")
        .value_or("");
  };
  // Wait until the relay is stuck on the full queue (the log says so via the queue_full metric only, so give it
  // time to get there), then watch the walsender hear from it.
  std::this_thread::sleep_for(3s);
  std::string first = replyTime();
  ASSERT_FALSE(first.empty()) << relay->logTail();
  EXPECT_TRUE(waitFor([&] { return replyTime() > first; }, 15s, 200ms))
      << "no status update reached PostgreSQL while the queue was full\n"
      << relay->logTail();

  Lsn confirmed = confirmedFlushLsn(pg, config.slot()).value_or(Lsn());
  auto asked = std::chrono::steady_clock::now();
  relay->sigterm();
  auto status = relay->waitExit(30s);
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - asked).count();
  ASSERT_TRUE(status) << "the relay ignored the stop while librdkafka's queue was full\n" << relay->logTail();
  EXPECT_TRUE(status->exited && status->code == 1) << status->toString() << "\n" << relay->logTail();
  EXPECT_LT(took, 20.0);
  EXPECT_EQ(confirmedFlushLsn(pg, config.slot()).value_or(Lsn()), confirmed);
  EXPECT_EQ(pendingInsertsInSlot(pg, config.slot(), config.publication()), 20);
}
