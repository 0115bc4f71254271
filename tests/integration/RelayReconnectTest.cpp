// A lost PostgreSQL connection (the walsender terminated, as on a failover or a server restart) costs neither an
// event nor a duplicate: the relay reconnects, resumes after the last transaction it received whole, and skips
// the already-published events of a transaction cut in the middle (README "Guarantees").
#include <gtest/gtest.h>

#include <iostream>
#include <thread>

#include "support/RelayProcess.h"
#include "support/TestEnv.h"

using namespace outbox;
using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

// Terminates the walsender streaming `slot` and waits until the relay streams again on a new one.
void cutConnection(PgConnection& pg, const std::string& slot, RelayProcess& relay) {
  auto pid = slotActivePid(pg, slot);
  ASSERT_TRUE(pid) << "no walsender streams the slot" << relay.logTail();
  ASSERT_EQ(pg.scalar("SELECT pg_terminate_backend(" + std::to_string(*pid) + ")"), "t");
  ASSERT_TRUE(waitFor(
      [&] {
        auto now = slotActivePid(pg, slot);
        return now && *now != *pid;
      },
      2min, 50ms))
      << "the relay did not stream again after its walsender was terminated" << relay.logTail();
}

// A topic's record count, 0 while Kafka still sets the new topic up (its partitions have no leader yet).
int64_t recordsIn(KafkaOffsets& offsets, const std::string& topic) {
  try {
    return offsets.recordCount(topic);
  } catch (const std::exception&) {
    return 0;
  }
}

}  // namespace

TEST(RelayReconnect, TerminatedWalsenderDuringALoadLosesAndDuplicatesNothing) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "reconn");
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config;
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {{"eventType", "type"}}});
  config.source("reconnect_backoff_min_ms", "100");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s));

  BackgroundLoad load(table, makeAggregates(uniqueName("agg"), 50), 20, 5ms);
  KafkaOffsets offsets(kafkaBootstrap());
  auto delivered = [&] {
    return recordsIn(offsets, topicPrefix + ".order") + recordsIn(offsets, topicPrefix + ".customer");
  };
  for (int round = 0; round < 5; ++round) {
    int64_t before = delivered();
    ASSERT_TRUE(waitFor([&] { return delivered() > before + 200; }, 2min, 50ms)) << relay->logTail();
    cutConnection(pg, config.slot(), *relay);
    if (HasFatalFailure()) return;
  }
  load.stop();
  ASSERT_TRUE(relay->running()) << relay->logTail();

  auto rows = outboxRows(pg, table);
  TopicReader reader(kafkaBootstrap(), {topicPrefix + ".order", topicPrefix + ".customer"});
  bool all = readUntilDelivered(reader, idsOf(rows), 5min);
  reader.readUntilQuiet(2s, 30s);
  auto check = checkDelivery(
      rows, reader.records(), [&](const OutboxRow& r) { return topicPrefix + "." + r.aggregatetype; }, "eventType",
      true);
  std::cout << "[ metric ] reconnect_duplicates=" << check.duplicates << " events=" << rows.size() << std::endl;
  EXPECT_TRUE(all) << check.summary();
  EXPECT_EQ(check.missing, 0) << check.summary();
  EXPECT_EQ(check.duplicates, 0) << check.summary();
  EXPECT_EQ(check.wrong, 0) << check.summary();
  EXPECT_EQ(check.outOfOrder, 0) << check.summary();
  EXPECT_NE(relay->log().find("reconnecting"), std::string::npos) << "the relay never noticed a lost connection";
}

TEST(RelayReconnect, ConnectionLostInTheMiddleOfALargeTransactionSkipsWhatWasAlreadyPublished) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "reconnbig");
  std::string topic = uniqueName("t") + ".big";
  RelayConfigBuilder config;
  config.addOutbox({table, topic, {}, {}});
  config.source("reconnect_backoff_min_ms", "100");
  config.limits(500, 1 << 20);  // a small in-flight budget: the relay reads the transaction in many steps
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s));

  constexpr int kRows = 200000;
  pg.exec("INSERT INTO " + table +
          " (aggregatetype, aggregateid, type, payload) SELECT 'big', 'agg-' || (g % 100), 'T', "
          "jsonb_build_object('n', g) FROM generate_series(1, " +
          std::to_string(kRows) + ") g");
  KafkaOffsets offsets(kafkaBootstrap());
  // Cut the connection while the transaction is partly published.
  ASSERT_TRUE(waitFor([&] { return recordsIn(offsets, topic) > kRows / 10; }, 3min, 20ms)) << relay->logTail();
  int64_t atCut = recordsIn(offsets, topic);
  cutConnection(pg, config.slot(), *relay);
  if (HasFatalFailure()) return;
  ASSERT_LT(atCut, kRows) << "the transaction was already through; the test did not cut it in the middle";
  ASSERT_TRUE(waitFor([&] { return recordsIn(offsets, topic) >= kRows; }, 5min, 200ms)) << relay->logTail();

  // Every row exactly once: the high watermark counts every record ever written to the topic.
  ASSERT_TRUE(waitFor([&] { return recordsIn(offsets, topic) == kRows; }, 10s, 500ms))
      << recordsIn(offsets, topic) << " records for " << kRows << " rows";
  std::set<int64_t> seen;
  int64_t duplicates = 0;
  scanTopic(
      kafkaBootstrap(), topic,
      [&](const ConsumedRecord& r) {
        auto at = r.value ? r.value->find("\"n\": ") : std::string::npos;
        ASSERT_NE(at, std::string::npos);
        if (!seen.insert(std::strtoll(r.value->c_str() + at + 5, nullptr, 10)).second) ++duplicates;
      },
      5min);
  std::cout << "[ metric ] mid_transaction_reconnect_cut_at=" << atCut << " duplicates=" << duplicates << std::endl;
  EXPECT_EQ(seen.size(), static_cast<size_t>(kRows));
  EXPECT_EQ(duplicates, 0);
  EXPECT_EQ(offsets.recordCount(topic), kRows) << "records beyond the rows: duplicates";
  EXPECT_TRUE(relay->running()) << relay->logTail();
}
