// `outbox-relay replay`: rows still in the outbox published again as the live relay routes them, plus the header
// outbox_replay; a selection (aggregate, ids, a time range); --dry-run lists and sends nothing; the slot is never
// touched (no relay runs here, and none is needed).
#include <gtest/gtest.h>

#include "support/RelayProcess.h"
#include "support/TestEnv.h"

using namespace outbox;
using namespace outbox::test;
using namespace std::chrono_literals;

namespace {
size_t countOf(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}
}  // namespace

TEST(RelayReplay, PublishesTheSelectedRowsAgainAsTheLiveRelayRoutesThem) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "replay");
  std::string topic = uniqueName("replay");
  RelayConfigBuilder config;
  config.addOutbox({table, topic + ".{aggregatetype}", {{"timestamp_column", "created_at"}}, {{"eventType", "type"}}});
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  pg.exec("INSERT INTO " + table + " (aggregatetype, aggregateid, type, payload, created_at) VALUES "
          "('a', 'k1', 'First', '{\"n\": 1}', '2026-01-01 10:00:00+00'), "
          "('a', 'k2', 'Second', '{\"n\": 2}', '2026-01-02 10:00:00+00'), "
          "('b', 'k1', 'Third', '{\"n\": 3}', '2026-01-03 10:00:00+00')");
  std::string file = writeTempFile("relay.toml", config.render());
  std::string k2 = *pg.scalar("SELECT id::text FROM " + table + " WHERE aggregateid = 'k2'");

  // A dry run lists what it would send, and sends nothing.
  CommandResult dry = runCommand({binPath("outbox-relay"), "replay", "--config", file, "--aggregate-id", "k1",
                                  "--dry-run"},
                                 60s);
  EXPECT_TRUE(dry.status.success()) << dry.output;
  EXPECT_EQ(countOf(dry.output, "would publish"), 2u) << dry.output;
  EXPECT_NE(dry.output.find("dry run: 2 row(s) selected, 2 would be published"), std::string::npos) << dry.output;
  KafkaOffsets offsets(kafkaBootstrap());
  EXPECT_EQ(offsets.recordCount(topic + ".a") + offsets.recordCount(topic + ".b"), 0);

  // The aggregate k1, then one row by its id, then a time range: each as the live relay would route it.
  CommandResult byAggregate =
      runCommand({binPath("outbox-relay"), "replay", "--config", file, "--aggregate-id", "k1"}, 120s);
  EXPECT_TRUE(byAggregate.status.success()) << byAggregate.output;
  CommandResult byId = runCommand({binPath("outbox-relay"), "replay", "--config", file, "--id", k2}, 120s);
  EXPECT_TRUE(byId.status.success()) << byId.output;
  CommandResult byTime = runCommand({binPath("outbox-relay"), "replay", "--config", file, "--since",
                                     "2026-01-02 00:00:00+00", "--until", "2026-01-03 00:00:00+00"},
                                    120s);
  EXPECT_TRUE(byTime.status.success()) << byTime.output;
  EXPECT_NE(byTime.output.find("replay: 1 row(s) selected, 1 published"), std::string::npos) << byTime.output;

  TopicReader reader(kafkaBootstrap(), {topic + ".a", topic + ".b"});
  std::vector<ConsumedRecord> records = reader.readUntil(4, 2min);  // a copy: the checks below look headers up
  ASSERT_EQ(records.size(), 4u);
  std::map<std::string, int> types;
  for (auto& r : records) {
    ++types[r.headers["eventType"]];
    EXPECT_EQ(r.headers["outbox_replay"].size(), 24u) << r.headers["outbox_replay"];  // its RFC 3339 start time
    EXPECT_EQ(r.topic, topic + "." + (r.headers["eventType"] == "Third" ? "b" : "a"));
    EXPECT_EQ(r.key, r.headers["eventType"] == "Second" ? "k2" : "k1");
    if (r.headers["eventType"] == "Second") {
      EXPECT_EQ(r.headers["id"], k2);
      EXPECT_EQ(r.value, R"({"n": 2})");
      EXPECT_EQ(r.timestampMs, 1767348000000);  // 2026-01-02 10:00 UTC, the timestamp column
    }
  }
  EXPECT_EQ(types, (std::map<std::string, int>{{"First", 1}, {"Second", 2}, {"Third", 1}}));
  // No slot, no publication: replay reads the table, never the WAL.
  EXPECT_FALSE(slotExists(pg, config.slot()));
  EXPECT_FALSE(publicationExists(pg, config.publication()));

  // A row the live relay would dead-letter (its topic name is not one Kafka takes) is listed as left out: exit 1.
  pg.exec("INSERT INTO " + table + " (aggregatetype, aggregateid, type, payload) VALUES ('bad topic!', 'k9', 'Bad', '{}')");
  CommandResult bad = runCommand({binPath("outbox-relay"), "replay", "--config", file, "--aggregate-id", "k9"}, 60s);
  EXPECT_EQ(bad.status.code, 1) << bad.output;
  EXPECT_NE(bad.output.find("left out (the live relay dead-letters it)"), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("1 row(s) selected, 0 published, 1 left out"), std::string::npos) << bad.output;

  // A table not in the config: a setup error naming it.
  CommandResult noTable = runCommand({binPath("outbox-relay"), "replay", "--config", file, "--table", "nope"}, 60s);
  EXPECT_EQ(noTable.status.code, 2) << noTable.output;
  EXPECT_NE(noTable.output.find("is not one of the [[outbox]] tables"), std::string::npos) << noTable.output;
}
