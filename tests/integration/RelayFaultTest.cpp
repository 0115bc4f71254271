// The relay under faults: kill -9 at random moments, Kafka down for 30 s, a hot standby taking over, SIGTERM. Events
// may be duplicated (the slot replays from its last confirmed position) but never lost, and the slot is never
// confirmed past what Kafka has acknowledged.
#include <gtest/gtest.h>

#include <iostream>
#include <random>
#include <thread>

#include "support/RelayProcess.h"
#include "support/TestEnv.h"

using namespace outbox;
using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

std::vector<std::string> topicsOf(const std::string& prefix) { return {prefix + ".order", prefix + ".customer"}; }

}  // namespace

TEST(RelayFault, KillNineAtRandomMomentsLosesNothing) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "kill");
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config;
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {{"eventType", "type"}}});
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  std::vector<std::unique_ptr<RelayProcess>> relays;
  relays.push_back(RelayProcess::start(config.render(), "relay-0"));
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s));

  unsigned seed = static_cast<unsigned>(std::chrono::system_clock::now().time_since_epoch().count());
  std::cout << "[ info ] kill schedule seed=" << seed << std::endl;
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> delayMs(300, 4000);

  BackgroundLoad load(table, makeAggregates(uniqueName("agg"), 60), 10, 10ms);
  for (int kill = 1; kill <= 10; ++kill) {
    // A random moment: starting up, waiting for the slot, mid-transaction, mid-delivery.
    std::this_thread::sleep_for(std::chrono::milliseconds(delayMs(rng)));
    relays.back()->sigkill();
    auto status = relays.back()->waitExit(30s);
    ASSERT_TRUE(status) << "relay did not die after SIGKILL";
    if (status->exited) {
      ADD_FAILURE() << relays.back()->label() << " had already exited on its own: " << status->toString();
    }
    relays.push_back(RelayProcess::start(config.render(), "relay-" + std::to_string(kill)));
  }
  std::this_thread::sleep_for(1s);
  load.stop();

  auto rows = outboxRows(pg, table);
  std::cout << "[ info ] events written under kill -9: " << rows.size() << std::endl;
  TopicReader reader(kafkaBootstrap(), topicsOf(topicPrefix));
  bool all = readUntilDelivered(reader, idsOf(rows), 5min);
  reader.readUntilQuiet(2s, 30s);
  auto check = checkDelivery(
      rows, reader.records(), [&](const OutboxRow& r) { return topicPrefix + "." + r.aggregatetype; }, "eventType",
      true);
  std::cout << "[ metric ] duplicates=" << check.duplicates << " events=" << rows.size() << " kills=10" << std::endl;
  EXPECT_TRUE(all) << check.summary();
  EXPECT_EQ(check.missing, 0) << check.summary();
  EXPECT_EQ(check.unexpected, 0) << check.summary();
  EXPECT_EQ(check.wrong, 0) << check.summary();
  EXPECT_EQ(check.outOfOrder, 0) << check.summary();

  // The last relay is healthy and stops cleanly.
  relays.back()->sigterm();
  auto status = relays.back()->waitExit(90s);
  ASSERT_TRUE(status) << "the relay did not exit within 90 s of SIGTERM";
  EXPECT_TRUE(status->success()) << status->toString();
}

TEST(RelayFault, KafkaDownForThirtySecondsLosesNothingAndConfirmsNothingUnacknowledged) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "kdown");
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config;
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {{"eventType", "type"}}});
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s));

  BackgroundLoad load(table, makeAggregates(uniqueName("agg"), 40), 10, 50ms);
  {
    KafkaOffsets offsets(kafkaBootstrap());
    ASSERT_TRUE(waitFor([&] { return offsets.recordCount(topicPrefix + ".order") > 0; }, 2min, 200ms))
        << "nothing was delivered before Kafka was stopped";
  }

  KafkaOutage outage;
  Lsn stoppedAt = currentWalInsertLsn(pg);
  auto outageEnd = std::chrono::steady_clock::now() + 30s;
  // While Kafka is down, no commit made after it stopped may be confirmed: take the first such commit's WAL position
  // after COMMIT (at or past the end of its commit record) as the line the slot must stay below.
  std::optional<Lsn> firstUnackable;
  int samples = 0;
  while (std::chrono::steady_clock::now() < outageEnd) {
    std::this_thread::sleep_for(1s);
    if (!firstUnackable) {
      for (auto& [before, after] : load.commits()) {
        if (before >= stoppedAt) {
          firstUnackable = after;
          break;
        }
      }
    }
    if (!firstUnackable) continue;
    Lsn confirmed = confirmedFlushLsn(pg, config.slot()).value_or(Lsn());
    ++samples;
    EXPECT_LT(confirmed, *firstUnackable) << "with Kafka down, the slot was confirmed to " << confirmed.toString()
                                          << ", past a commit (ending at or before " << firstUnackable->toString()
                                          << ") that Kafka cannot have acknowledged";
  }
  EXPECT_GT(samples, 20);
  EXPECT_TRUE(relay->running()) << "the relay gave up while Kafka was down";
  outage.end();
  std::this_thread::sleep_for(3s);  // a little more load with Kafka back
  load.stop();

  auto rows = outboxRows(pg, table);
  TopicReader reader(kafkaBootstrap(), topicsOf(topicPrefix));
  bool all = readUntilDelivered(reader, idsOf(rows), 5min);
  reader.readUntilQuiet(2s, 30s);
  auto check = checkDelivery(
      rows, reader.records(), [&](const OutboxRow& r) { return topicPrefix + "." + r.aggregatetype; }, "eventType",
      true);
  std::cout << "[ metric ] kafka_down_duplicates=" << check.duplicates << " events=" << rows.size() << std::endl;
  EXPECT_TRUE(all) << check.summary();
  EXPECT_EQ(check.missing, 0) << check.summary();
  EXPECT_EQ(check.unexpected, 0) << check.summary();
  EXPECT_EQ(check.wrong, 0) << check.summary();
  EXPECT_EQ(check.outOfOrder, 0) << check.summary();
  // Once all is delivered the slot catches up with the last commit.
  Lsn last = load.commits().back().second;
  EXPECT_TRUE(waitFor([&] { return confirmedFlushLsn(pg, config.slot()).value_or(Lsn()) >= last; }, 2min, 200ms))
      << "confirmed_flush_lsn " << confirmedFlushLsn(pg, config.slot()).value_or(Lsn()).toString()
      << " never reached the last commit " << last.toString();
  EXPECT_TRUE(relay->running());
}

TEST(RelayFault, HotStandbyTakesOverWhenTheActiveRelayDies) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "standby");
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config;  // slot_busy_retry_ms = 500
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {{"eventType", "type"}}});
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto active = RelayProcess::start(config.render(), "relay-active");
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s));
  auto activePid = slotActivePid(pg, config.slot());
  ASSERT_TRUE(activePid);

  auto standby = RelayProcess::start(config.render(), "relay-standby");
  EventWriter writer(table, makeAggregates(uniqueName("agg"), 20), 0, 7);
  for (int i = 0; i < 20; ++i) writer.writeTransaction(10, i % 2 == 0);
  TopicReader reader(kafkaBootstrap(), topicsOf(topicPrefix));
  ASSERT_TRUE(readUntilDelivered(reader, idsOf(outboxRows(pg, table)), 3min));
  // The standby waits: it neither exits nor takes the slot while the active relay streams.
  EXPECT_FALSE(waitFor([&] { return !standby->running() || slotActivePid(pg, config.slot()) != activePid; }, 3s))
      << "standby running: " << standby->running();
  ASSERT_TRUE(standby->running()) << "the standby exited while the slot was busy";

  active->sigkill();
  ASSERT_TRUE(active->waitExit(30s));
  for (int i = 0; i < 10; ++i) writer.writeTransaction(10, i % 2 == 0);  // while nobody streams
  ASSERT_TRUE(waitFor(
      [&] {
        auto pid = slotActivePid(pg, config.slot());
        return pid && pid != activePid;
      },
      2min, 200ms))
      << "the standby never took the slot over";
  for (int i = 0; i < 10; ++i) writer.writeTransaction(10, i % 2 == 0);

  auto rows = outboxRows(pg, table);
  ASSERT_EQ(rows.size(), 400u);
  bool all = readUntilDelivered(reader, idsOf(rows), 3min);
  reader.readUntilQuiet(2s, 30s);
  auto check = checkDelivery(
      rows, reader.records(), [&](const OutboxRow& r) { return topicPrefix + "." + r.aggregatetype; }, "eventType",
      true);
  std::cout << "[ metric ] standby_duplicates=" << check.duplicates << std::endl;
  EXPECT_TRUE(all) << check.summary();
  EXPECT_EQ(check.missing + check.unexpected + check.wrong + check.outOfOrder, 0) << check.summary();
  EXPECT_TRUE(standby->running());
  standby->sigterm();
  auto status = standby->waitExit(90s);
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->success()) << status->toString();
}

TEST(RelayFault, SigtermFlushesConfirmsAndExitsZero) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "term");
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config;
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {{"eventType", "type"}}});
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  EventWriter writer(table, makeAggregates(uniqueName("agg"), 100), 0, 11);
  TopicReader reader(kafkaBootstrap(), topicsOf(topicPrefix));

  // 1. Everything delivered, then SIGTERM: exit 0, and the slot is confirmed through the last commit.
  {
    auto relay = RelayProcess::start(config.render(), "relay-1");
    ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s));
    std::pair<Lsn, Lsn> last;
    for (int i = 0; i < 50; ++i) last = writer.writeTransaction(100, i % 2 == 0);
    ASSERT_TRUE(readUntilDelivered(reader, idsOf(outboxRows(pg, table)), 3min));
    relay->sigterm();
    auto status = relay->waitExit(90s);
    ASSERT_TRUE(status) << "no exit within 90 s of SIGTERM";
    EXPECT_TRUE(status->success()) << status->toString();
    ASSERT_TRUE(waitFor([&] { return !slotActivePid(pg, config.slot()); }, 30s));
    Lsn confirmed = confirmedFlushLsn(pg, config.slot()).value_or(Lsn());
    EXPECT_GT(confirmed, last.first) << "confirmed_flush_lsn " << confirmed.toString()
                                     << " is before the last commit (which starts after " << last.first.toString()
                                     << ")";
    EXPECT_EQ(pendingInsertsInSlot(pg, config.slot(), config.publication()), 0)
        << "inserts remain in the slot after confirmed_flush_lsn " << confirmed.toString();
  }

  // 2. SIGTERM right after a burst: the relay flushes what it has in flight and exits 0, having confirmed no more
  //    than Kafka acknowledged: whatever was not delivered is still in the slot.
  {
    auto relay = RelayProcess::start(config.render(), "relay-2");
    ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s));
    for (int i = 0; i < 30; ++i) writer.writeTransaction(1000, true);
    relay->sigterm();
    auto status = relay->waitExit(90s);
    ASSERT_TRUE(status) << "no exit within 90 s of SIGTERM";
    EXPECT_TRUE(status->success()) << status->toString();
    ASSERT_TRUE(waitFor([&] { return !slotActivePid(pg, config.slot()); }, 30s));
    auto rows = outboxRows(pg, table);
    reader.readUntilQuiet(3s, 60s);
    auto check =
        checkDelivery(rows, reader.records(), [&](const OutboxRow& r) { return topicPrefix + "." + r.aggregatetype; });
    int64_t pending = pendingInsertsInSlot(pg, config.slot(), config.publication());
    std::cout << "[ info ] after SIGTERM mid-burst: delivered=" << check.delivered << " of " << rows.size()
              << ", still in the slot=" << pending << std::endl;
    EXPECT_GE(pending, check.missing) << "the slot was confirmed past events Kafka never received\n" << check.summary();
    EXPECT_EQ(check.unexpected + check.wrong, 0) << check.summary();
  }

  // 3. A new relay delivers the rest.
  auto relay = RelayProcess::start(config.render(), "relay-3");
  auto rows = outboxRows(pg, table);
  ASSERT_EQ(rows.size(), 35000u);
  bool all = readUntilDelivered(reader, idsOf(rows), 5min);
  reader.readUntilQuiet(2s, 30s);
  auto check = checkDelivery(
      rows, reader.records(), [&](const OutboxRow& r) { return topicPrefix + "." + r.aggregatetype; }, "eventType",
      true);
  std::cout << "[ metric ] sigterm_duplicates=" << check.duplicates << std::endl;
  EXPECT_TRUE(all) << check.summary();
  EXPECT_EQ(check.missing + check.unexpected + check.wrong + check.outOfOrder, 0) << check.summary();
}
