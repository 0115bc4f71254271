// The pgoutput protocol version per PostgreSQL server version (README "How it works"), against whatever server the
// dev stack runs (the test matrix runs it on 13 to 18): the relay asks for 1 on 13, 2 on 14, 3 on 15, 4 on 16 and
// later, says so in its log and in outbox_relay_source_info, and delivers. Logical decoding messages need 14: on
// 13, [messages] enabled = true stops the relay at setup with the fix named; on 14+ a message is delivered.

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>

#include "support/RelayProcess.h"
#include "support/TestEnv.h"

using namespace outbox;
using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

// What the server version calls for, written out here rather than asked of the relay's code.
int expectedProtocol(int serverVersionNum) {
  if (serverVersionNum >= 160000) return 4;
  if (serverVersionNum >= 150000) return 3;
  if (serverVersionNum >= 140000) return 2;
  return 1;
}

int serverVersionNum(PgConnection& pg) { return std::stoi(pg.scalar("SHOW server_version_num").value_or("0")); }

std::string scrape(const std::string& address) {
  return runCommand({"/usr/bin/curl", "-s", "--max-time", "10", "http://" + address + "/metrics"}, 15s).output;
}

std::string header(const ConsumedRecord& record, const std::string& name) {
  auto it = record.headers.find(name);
  return it == record.headers.end() ? "<absent>" : it->second;
}

}  // namespace

TEST(RelayPgOutputProtocol, ProtocolPerServerVersionInLogAndMetricAndAnEventIsDelivered) {
  PgConnection pg(pgUrl());
  int version = serverVersionNum(pg);
  ASSERT_GE(version, 130000) << "the relay supports PostgreSQL 13 and later";
  int proto = expectedProtocol(version);
  std::string versionLabel = std::to_string(version / 10000) + "." + std::to_string(version % 10000);

  std::string table = createOutboxTable(pg, "proto");
  std::string topicPrefix = uniqueName("proto");
  RelayConfigBuilder config;
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {}}).metricsListen("127.0.0.1:0");
  if (version < 140000) config.disableMessages();  // PostgreSQL 13 sends none (see the test below)
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start(config.render());
  std::string admin = adminAddressOf(*relay);
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();

  const std::string series = "outbox_relay_source_info{pgoutput_protocol=\"" + std::to_string(proto) +
                             "\",server_version=\"" + versionLabel + "\"} 1";
  std::string metrics;
  EXPECT_TRUE(waitFor(
      [&] {
        metrics = scrape(admin);
        return metrics.find("\n" + series + "\n") != std::string::npos;
      },
      60s))
      << "no " << series << " in:\n"
      << metrics;
  // One series only: the server connected to.
  size_t first = metrics.find("\noutbox_relay_source_info{");
  ASSERT_NE(first, std::string::npos);
  EXPECT_EQ(metrics.find("\noutbox_relay_source_info{", first + 1), std::string::npos) << metrics;
  EXPECT_NE(relay->log().find("(pgoutput protocol version " + std::to_string(proto) + ")"), std::string::npos)
      << relay->logTail();

  std::string id = *pg.scalar("INSERT INTO " + table +
                              " (aggregatetype, aggregateid, type, payload) VALUES ('order', 'p1', 'created', "
                              "'{\"n\": 1}') RETURNING id");
  TopicReader reader(kafkaBootstrap(), {topicPrefix + ".order"});
  auto& records = reader.readUntil(1, 3min);
  ASSERT_EQ(records.size(), 1u) << relay->logTail();
  EXPECT_EQ(header(records[0], "id"), id);
  EXPECT_EQ(records[0].key.value_or(""), "p1");
  EXPECT_EQ(records[0].value.value_or(""), R"({"n": 1})");
  EXPECT_TRUE(relay->running()) << relay->logTail();
}

TEST(RelayPgOutputProtocol, LogicalMessagesNeedPostgreSQL14) {
  PgConnection pg(pgUrl());
  int version = serverVersionNum(pg);
  std::string topicPrefix = uniqueName("protomsg");
  RelayConfigBuilder config;
  config.messages(topicPrefix + ".{aggregatetype}");
  ReplicationCleanup cleanup(config.slot(), config.publication());
  auto relay = RelayProcess::start(config.render());

  if (version < 140000) {
    // Would otherwise be dropped without a trace: pgoutput on 13 has no messages option.
    auto status = relay->waitExit(120s);
    ASSERT_TRUE(status) << "the relay kept running with [messages] on PostgreSQL 13:\n" << relay->logTail();
    EXPECT_TRUE(status->exited && status->code == 2) << status->toString();
    std::string log = relay->log();
    EXPECT_NE(log.find("cannot send logical decoding messages"), std::string::npos) << log;
    EXPECT_NE(log.find("set messages.enabled = false"), std::string::npos) << log;
    EXPECT_NE(log.find("upgrade PostgreSQL to 14 or later"), std::string::npos) << log;
    EXPECT_FALSE(slotExists(pg, config.slot())) << "the setup stopped before creating anything";
    EXPECT_EQ(log.find("could not confirm the final position"), std::string::npos) << "nothing was streamed";
    return;
  }
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();
  std::string id = *pg.scalar("SELECT gen_random_uuid()");
  pg.exec("SELECT pg_logical_emit_message(true, '" + config.messagePrefix() + "', '{\"id\":\"" + id +
          "\",\"aggregatetype\":\"order\",\"aggregateid\":\"m1\",\"payload\":{\"n\":2}}')");
  TopicReader reader(kafkaBootstrap(), {topicPrefix + ".order"});
  auto& records = reader.readUntil(1, 3min);
  ASSERT_EQ(records.size(), 1u) << relay->logTail();
  EXPECT_EQ(header(records[0], "id"), id);
  EXPECT_EQ(records[0].value.value_or(""), R"({"n":2})");
  EXPECT_TRUE(relay->running()) << relay->logTail();
}
