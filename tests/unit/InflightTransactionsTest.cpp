#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "src/InflightTransactions.h"

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

TEST(InflightTransactions, TransactionsWithoutEventsBehindAPendingOneKeepNoEntryOfTheirOwn) {
  // A Kafka outage under write load on other tables of a shared publication (or PostgreSQL <= 14, which sends
  // every transaction): one transaction with an event waits, a million empty ones follow.
  InflightTransactions ring;
  auto t1 = ring.begin(Lsn(100), ts(1));
  ring.addEvent(t1, 10);
  ring.commit(t1, Lsn(110));
  for (int i = 1; i <= 1000000; ++i) {
    auto empty = ring.begin(Lsn(110 + i * 10), ts(1 + i));
    ring.commit(empty, Lsn(115 + i * 10));
    ASSERT_LE(ring.transactions(), 2u) << "after " << i << " empty transactions";
  }
  EXPECT_EQ(ring.transactions(), 1u) << "the empty ones fold into t1";
  EXPECT_EQ(ring.confirmedLsn(), Lsn(0)) << "t1 is not acknowledged: nothing after it is confirmable";
  EXPECT_EQ(ring.resumeLsn(), Lsn(115 + 1000000 * 10));
  EXPECT_EQ(ring.oldestPendingCommitTime()->micros, 1) << "the source lag is still t1's";
  ring.acknowledge(t1, 10);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(115 + 1000000 * 10)) << "t1 and every empty transaction after it";
  EXPECT_TRUE(ring.empty());
}

TEST(InflightTransactions, EmptyTransactionsOnAnIdleRingAreConfirmedAtOnce) {
  InflightTransactions ring;
  for (int i = 1; i <= 100; ++i) {
    auto empty = ring.begin(Lsn(i * 10), ts(i));
    ring.commit(empty, Lsn(i * 10 + 5));
    EXPECT_EQ(ring.confirmedLsn(), Lsn(i * 10 + 5));
    EXPECT_TRUE(ring.empty());
  }
}

TEST(InflightTransactions, MixedEmptyAndEventTransactionsConfirmOnlyOverAcknowledgedOnesInOrder) {
  InflightTransactions ring;
  auto t1 = ring.begin(Lsn(100), ts(1));
  ring.addEvent(t1, 1);
  ring.commit(t1, Lsn(110));
  auto e1 = ring.begin(Lsn(120), ts(2));
  ring.commit(e1, Lsn(125));
  auto t2 = ring.begin(Lsn(200), ts(3));
  ring.addEvent(t2, 1);
  ring.addEvent(t2, 1);
  ring.commit(t2, Lsn(210));
  auto e2 = ring.begin(Lsn(220), ts(4));
  ring.commit(e2, Lsn(225));
  auto e3 = ring.begin(Lsn(230), ts(5));
  ring.commit(e3, Lsn(235));
  auto t3 = ring.begin(Lsn(300), ts(6));
  ring.addEvent(t3, 1);
  ring.commit(t3, Lsn(310));
  auto e4 = ring.begin(Lsn(320), ts(7));
  ring.commit(e4, Lsn(325));
  EXPECT_EQ(ring.transactions(), 3u) << "t1+e1, t2+e2+e3, t3+e4";

  // Out of order: t3 first, then t2 partly, then t1.
  ring.acknowledge(t3, 1);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(0));
  EXPECT_EQ(ring.transactions(), 2u) << "t3 complete: folded into t2's entry";
  ring.acknowledge(t2, 1);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(0));
  ring.acknowledge(t1, 1);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(125)) << "t1 and e1; t2 still has an event out";
  EXPECT_EQ(ring.oldestPendingCommitTime()->micros, 3);
  ring.acknowledge(t2, 1);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(325)) << "t2, e2, e3, t3 (acknowledged earlier) and e4";
  EXPECT_TRUE(ring.empty());
}

TEST(InflightTransactions, AcknowledgedTransactionsBehindAStuckOneAreFoldedSoTheRingFollowsTheBudget) {
  // One partition's leader is away: the oldest transaction's event waits while later ones, on other partitions,
  // are acknowledged. The ring must not grow with them.
  InflightTransactions ring;
  auto stuck = ring.begin(Lsn(100), ts(1));
  ring.addEvent(stuck, 1);
  ring.commit(stuck, Lsn(110));
  for (int i = 1; i <= 10000; ++i) {
    auto t = ring.begin(Lsn(110 + i * 10), ts(1 + i));
    ring.addEvent(t, 1);
    ring.commit(t, Lsn(115 + i * 10));
    ring.acknowledge(t, 1);
    ASSERT_LE(ring.transactions(), ring.inflightEvents() + 2);
  }
  EXPECT_EQ(ring.transactions(), 1u);
  EXPECT_EQ(ring.inflightEvents(), 1u);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(0));
  ring.acknowledge(stuck, 1);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(115 + 10000 * 10));
}

TEST(InflightTransactions, AnOpenTransactionAfterFoldedOnesIsStillResumedAndConfirmedInOrder) {
  InflightTransactions ring;
  auto t1 = ring.begin(Lsn(100), ts(1));
  ring.addEvent(t1, 1);
  ring.commit(t1, Lsn(110));
  auto e1 = ring.begin(Lsn(120), ts(2));
  ring.commit(e1, Lsn(125));
  auto t2 = ring.begin(Lsn(200), ts(3));
  ring.addEvent(t2, 1);
  ring.acknowledge(t2, 1);
  // Connection lost with t2 open: its entry is still there to be resumed.
  auto open = ring.openTransaction();
  ASSERT_TRUE(open.has_value());
  EXPECT_EQ(open->seq, t2);
  EXPECT_EQ(open->eventsAdded, 1u);
  EXPECT_EQ(ring.resumeLsn(), Lsn(125));
  ring.commit(t2, Lsn(210));
  EXPECT_EQ(ring.transactions(), 1u) << "t2 committed with nothing pending: folded into t1's entry";
  EXPECT_EQ(ring.confirmedLsn(), Lsn(0));
  ring.acknowledge(t1, 1);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(210));
}

TEST(InflightTransactions, RandomOutOfOrderAcknowledgementsNeverConfirmPastAnUnacknowledgedEvent) {
  // A model check: random transactions (some empty), acknowledged in random order; after every step the confirmed
  // position is exactly the end of the longest fully acknowledged prefix of committed transactions.
  std::mt19937 rng(42);
  for (int round = 0; round < 50; ++round) {
    InflightTransactions ring;
    struct Txn {
      InflightTransactions::Sequence seq;
      Lsn end;
      int unacked;
    };
    std::vector<Txn> txns;
    std::vector<size_t> outstanding;  // index into txns, one per unacknowledged event
    for (int i = 0; i < 200; ++i) {
      auto seq = ring.begin(Lsn(1000 + i * 10), ts(1 + i));
      int events = static_cast<int>(rng() % 4) - 1;  // -1 and 0: empty
      if (events < 0) events = 0;
      for (int e = 0; e < events; ++e) {
        ring.addEvent(seq, 1);
        outstanding.push_back(txns.size());
      }
      ring.commit(seq, Lsn(1005 + i * 10));
      txns.push_back({seq, Lsn(1005 + i * 10), events});
    }
    auto expected = [&] {
      Lsn lsn;
      for (const Txn& t : txns) {
        if (t.unacked > 0) break;
        lsn = t.end;
      }
      return lsn;
    };
    EXPECT_EQ(ring.confirmedLsn(), expected());
    std::shuffle(outstanding.begin(), outstanding.end(), rng);
    for (size_t index : outstanding) {
      ring.acknowledge(txns[index].seq, 1);
      --txns[index].unacked;
      ASSERT_EQ(ring.confirmedLsn(), expected()) << "round " << round;
      ASSERT_LE(ring.transactions(), ring.inflightEvents() + 2);
    }
    EXPECT_EQ(ring.confirmedLsn(), Lsn(1005 + 199 * 10));
    EXPECT_TRUE(ring.empty());
  }
}

// A promoted standby's slot is behind what the relay confirmed on the old primary: resetConfirmed keeps the later
// position (right on the same history), restartFrom goes back to the slot's, and the old stream's late
// acknowledgements confirm nothing of the new one.
TEST(InflightTransactions, RestartFromGoesBackToTheSlotAndIgnoresTheOldStream) {
  InflightTransactions ring;
  ring.resetConfirmed(Lsn(100));
  auto old = ring.begin(Lsn(190), ts(1));
  ring.addEvent(old, 10);
  ring.commit(old, Lsn(200));
  auto done = ring.begin(Lsn(290), ts(2));
  ring.commit(done, Lsn(300));
  ring.resetConfirmed(Lsn(50));
  EXPECT_EQ(ring.confirmedLsn(), Lsn(100)) << "resetConfirmed never goes back";

  ring.restartFrom(Lsn(150));
  EXPECT_EQ(ring.confirmedLsn(), Lsn(150));
  EXPECT_EQ(ring.resumeLsn(), Lsn(150));
  EXPECT_TRUE(ring.empty());
  EXPECT_EQ(ring.inflightEvents(), 1u) << "Kafka still holds the old stream's record";
  auto fresh = ring.begin(Lsn(190), ts(3));
  ring.addEvent(fresh, 10);
  ring.commit(fresh, Lsn(200));
  EXPECT_FALSE(ring.acknowledge(old, 10).has_value()) << "the old stream's acknowledgement matches nothing";
  EXPECT_EQ(ring.confirmedLsn(), Lsn(150)) << "and confirms nothing of the new stream";
  EXPECT_EQ(ring.inflightEvents(), 1u);
  ring.acknowledge(fresh, 10);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(200));
  EXPECT_EQ(ring.inflightEvents(), 0u);
}
