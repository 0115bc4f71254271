// The foundation every integration test stands on: the dev stack's PostgreSQL is set up for logical
// decoding and its Kafka broker takes and returns records.
#include <gtest/gtest.h>

#include "support/TestEnv.h"

using namespace outbox::test;
using namespace std::chrono_literals;

TEST(DevStack, PostgresIsReadyForLogicalReplication) {
  PgConnection pg(pgUrl());
  EXPECT_EQ(pg.scalar("SHOW wal_level"), "logical");
  EXPECT_GE(std::stoi(*pg.scalar("SHOW max_replication_slots")), 10);
  EXPECT_GE(std::stoi(*pg.scalar("SHOW max_wal_senders")), 10);
  EXPECT_GT(std::stoi(*pg.scalar("SHOW max_prepared_transactions")), 0);
  EXPECT_EQ(pg.scalar("SELECT current_setting('server_version_num')::int / 10000"), "15");
}

TEST(DevStack, KafkaRoundTripsARecord) {
  std::string topic = uniqueName("devstack_roundtrip");
  produce(kafkaBootstrap(), topic, "order-1", R"({"total":42})", {{"id", "e-1"}});
  TopicReader reader(kafkaBootstrap(), {topic});
  auto& records = reader.readUntil(1, 60s);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].topic, topic);
  EXPECT_EQ(records[0].key, "order-1");
  EXPECT_EQ(records[0].value, R"({"total":42})");
  EXPECT_EQ(records[0].headers.at("id"), "e-1");
}
