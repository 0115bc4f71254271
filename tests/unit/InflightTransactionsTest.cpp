#include "src/InflightTransactions.h"

#include <gtest/gtest.h>

using outbox::InflightTransactions;
using outbox::Lsn;
using outbox::pgoutput::PgTimestamp;

namespace {
PgTimestamp ts(int64_t micros) { return PgTimestamp{micros}; }
}  // namespace

TEST(InflightTransactions, ConfirmsOnlyWhenTransactionAndAllEarlierOnesAreAcknowledged) {
  InflightTransactions ring;
  ring.resetConfirmed(Lsn(100));
  auto t1 = ring.begin(Lsn(190), ts(1));
  ring.addEvent(t1, 10);
  ring.addEvent(t1, 20);
  ring.commit(t1, Lsn(200));
  auto t2 = ring.begin(Lsn(290), ts(2));
  ring.addEvent(t2, 5);
  ring.commit(t2, Lsn(300));
  EXPECT_EQ(ring.inflightEvents(), 3u);
  EXPECT_EQ(ring.inflightBytes(), 35u);

  // The later transaction is acknowledged first: nothing may be confirmed yet.
  ring.acknowledge(t2, 5);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(100));
  ring.acknowledge(t1, 10);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(100)) << "t1 still has an unacknowledged event";
  ring.acknowledge(t1, 20);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(300)) << "t1 complete, and t2 was already complete";
  EXPECT_EQ(ring.inflightEvents(), 0u);
  EXPECT_EQ(ring.inflightBytes(), 0u);
  EXPECT_TRUE(ring.empty());
  EXPECT_FALSE(ring.oldestPendingCommitTime().has_value());
}

TEST(InflightTransactions, SourceLagFollowsTheOldestPendingTransactionAndAcknowledgeReturnsItsCommitTime) {
  InflightTransactions ring;
  auto message = ring.begin(Lsn(50), ts(0));  // a non-transactional message: no commit time
  ring.addEvent(message, 1);
  ring.commit(message, Lsn(60));
  EXPECT_FALSE(ring.oldestPendingCommitTime().has_value()) << "a zero commit time is no time";
  auto t1 = ring.begin(Lsn(100), ts(1000));
  ring.addEvent(t1, 1);
  ring.commit(t1, Lsn(110));
  auto t2 = ring.begin(Lsn(200), ts(2000));
  ring.addEvent(t2, 1);
  EXPECT_EQ(ring.oldestPendingCommitTime()->micros, 1000);
  EXPECT_FALSE(ring.acknowledge(message, 1).has_value());
  EXPECT_EQ(ring.acknowledge(t2, 1)->micros, 2000);
  EXPECT_EQ(ring.oldestPendingCommitTime()->micros, 1000) << "t1 still waits";
  EXPECT_EQ(ring.acknowledge(t1, 1)->micros, 1000);
  EXPECT_EQ(ring.oldestPendingCommitTime()->micros, 2000) << "t2 is open";
  ring.commit(t2, Lsn(210));
  EXPECT_FALSE(ring.oldestPendingCommitTime().has_value());
  EXPECT_EQ(ring.confirmedLsn(), Lsn(210));
}

TEST(InflightTransactions, AnUncommittedTransactionIsNeverConfirmedEvenWhenAllItsEventsAreAcknowledged) {
  InflightTransactions ring;
  auto t1 = ring.begin(Lsn(500), ts(1));
  ring.addEvent(t1, 1);
  ring.acknowledge(t1, 1);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(0));
  EXPECT_TRUE(ring.hasOpenTransaction());
  ring.commit(t1, Lsn(510));
  EXPECT_EQ(ring.confirmedLsn(), Lsn(510));
}

TEST(InflightTransactions, ATransactionWithoutEventsIsConfirmedAtCommitOnlyAfterEarlierOnes) {
  InflightTransactions ring;
  auto t1 = ring.begin(Lsn(100), ts(1));
  ring.addEvent(t1, 1);
  ring.commit(t1, Lsn(110));
  auto t2 = ring.begin(Lsn(200), ts(2));
  ring.commit(t2, Lsn(210));
  EXPECT_EQ(ring.confirmedLsn(), Lsn(0));
  ring.acknowledge(t1, 1);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(210));
}

TEST(InflightTransactions, ServerWalEndAdvancesOnlyWhenNothingIsInFlight) {
  InflightTransactions ring;
  ring.serverWalEnd(Lsn(1000));
  EXPECT_EQ(ring.confirmedLsn(), Lsn(1000)) << "idle: follow the server's WAL end";
  auto t1 = ring.begin(Lsn(1100), ts(1));
  ring.addEvent(t1, 1);
  ring.serverWalEnd(Lsn(1200));
  EXPECT_EQ(ring.confirmedLsn(), Lsn(1000)) << "an open transaction holds the position";
  ring.commit(t1, Lsn(1150));
  ring.serverWalEnd(Lsn(1300));
  EXPECT_EQ(ring.confirmedLsn(), Lsn(1000)) << "an unacknowledged event holds the position";
  ring.acknowledge(t1, 1);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(1150));
  ring.serverWalEnd(Lsn(1300));
  EXPECT_EQ(ring.confirmedLsn(), Lsn(1300));
  ring.serverWalEnd(Lsn(1250));
  EXPECT_EQ(ring.confirmedLsn(), Lsn(1300)) << "never goes backwards";
}

TEST(InflightTransactions, ResumePositionSkipsTransactionsAlreadyWithKafka) {
  InflightTransactions ring;
  ring.resetConfirmed(Lsn(100));
  auto t1 = ring.begin(Lsn(190), ts(1));
  ring.addEvent(t1, 1);
  ring.commit(t1, Lsn(200));
  auto t2 = ring.begin(Lsn(390), ts(2));
  ring.addEvent(t2, 1);
  ring.addEvent(t2, 1);
  // Connection lost here: t1 was received whole (resume after it), t2 is open with two events published.
  EXPECT_EQ(ring.confirmedLsn(), Lsn(100));
  EXPECT_EQ(ring.resumeLsn(), Lsn(200));
  auto open = ring.openTransaction();
  ASSERT_TRUE(open.has_value());
  EXPECT_EQ(open->seq, t2);
  EXPECT_EQ(open->finalLsn, Lsn(390));
  EXPECT_EQ(open->eventsAdded, 2u);
  // The server re-sends t2; the relay skips its first two events and goes on adding to the same entry.
  ring.addEvent(t2, 1);
  ring.commit(t2, Lsn(400));
  ring.acknowledge(t2, 1);
  ring.acknowledge(t1, 1);
  ring.acknowledge(t2, 1);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(200));
  ring.acknowledge(t2, 1);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(400));
}

TEST(InflightTransactions, AbandonedTransactionsReportsOnlyAdjustCounters) {
  InflightTransactions ring;
  auto t1 = ring.begin(Lsn(100), ts(1));
  ring.addEvent(t1, 7);
  ring.abandonOpenTransaction();
  EXPECT_TRUE(ring.empty());
  EXPECT_EQ(ring.inflightEvents(), 1u);
  auto t2 = ring.begin(Lsn(100), ts(1));
  ring.addEvent(t2, 7);
  ring.commit(t2, Lsn(110));
  ring.acknowledge(t1, 7);  // the abandoned copy's report
  EXPECT_EQ(ring.confirmedLsn(), Lsn(0));
  EXPECT_EQ(ring.inflightEvents(), 1u);
  ring.acknowledge(t2, 7);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(110));
  EXPECT_EQ(ring.inflightEvents(), 0u);
  EXPECT_EQ(ring.inflightBytes(), 0u);
}

TEST(InflightTransactions, ManyInterleavedReportsConfirmInCommitOrder) {
  InflightTransactions ring;
  std::vector<InflightTransactions::Sequence> txns;
  for (int i = 0; i < 100; ++i) {
    auto t = ring.begin(Lsn(1000 + i * 10), ts(i));
    for (int e = 0; e < 3; ++e) ring.addEvent(t, 1);
    ring.commit(t, Lsn(1005 + i * 10));
    txns.push_back(t);
  }
  // Acknowledge from the newest to the oldest: nothing is confirmable until the oldest completes.
  for (int i = 99; i >= 1; --i) {
    for (int e = 0; e < 3; ++e) ring.acknowledge(txns[i], 1);
    EXPECT_EQ(ring.confirmedLsn(), Lsn(0));
  }
  for (int e = 0; e < 3; ++e) ring.acknowledge(txns[0], 1);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(1005 + 99 * 10));
  EXPECT_TRUE(ring.empty());
}
