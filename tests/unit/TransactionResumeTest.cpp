#include <gtest/gtest.h>

#include "src/TransactionResume.h"

using outbox::InflightTransactions;
using outbox::Lsn;
using outbox::TransactionResume;
using outbox::pgoutput::Begin;
using outbox::pgoutput::Commit;
using outbox::pgoutput::DecodeError;
using outbox::pgoutput::PgTimestamp;

namespace {
Begin beginAt(uint64_t finalLsn) { return Begin{Lsn(finalLsn), PgTimestamp{1}, {}}; }
Commit commitAt(uint64_t endLsn) { return Commit{0, Lsn(endLsn - 1), Lsn(endLsn), PgTimestamp{1}}; }

// What the relay does with one outbox event of the current transaction: skip it when Kafka has it already, else
// hand it to Kafka (here: add it to the acknowledger). Returns whether it was published.
bool receiveEvent(TransactionResume& resume, InflightTransactions& ring) {
  auto txn = resume.current("event outside a transaction");
  if (resume.skipAlreadyPublished()) return false;
  ring.addEvent(txn, 1);
  return true;
}
}  // namespace

TEST(TransactionResume, WithNothingOpenEveryTransactionIsNewAndNoEventIsSkipped) {
  InflightTransactions ring;
  TransactionResume resume(ring);
  resume.reconnected();
  EXPECT_FALSE(resume.inTransaction());
  auto began = resume.begin(beginAt(190));
  EXPECT_FALSE(began.resumed);
  EXPECT_FALSE(began.abandoned.has_value());
  EXPECT_TRUE(resume.inTransaction());
  EXPECT_EQ(resume.current("x"), began.seq);
  EXPECT_TRUE(receiveEvent(resume, ring));
  EXPECT_TRUE(receiveEvent(resume, ring));
  resume.commit(commitAt(200));
  EXPECT_FALSE(resume.inTransaction());
  ring.acknowledge(began.seq, 1);
  ring.acknowledge(began.seq, 1);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(200));
}

TEST(TransactionResume, TheReSentOpenTransactionSkipsTheEventsKafkaAlreadyHas) {
  InflightTransactions ring;
  TransactionResume resume(ring);
  auto first = resume.begin(beginAt(390));
  EXPECT_TRUE(receiveEvent(resume, ring));
  EXPECT_TRUE(receiveEvent(resume, ring));
  // The connection is lost here; the server re-sends the transaction from its Begin.
  resume.reconnected();
  EXPECT_FALSE(resume.inTransaction()) << "a new connection starts outside any transaction";
  auto again = resume.begin(beginAt(390));
  EXPECT_TRUE(again.resumed);
  EXPECT_EQ(again.alreadyPublished, 2u);
  EXPECT_FALSE(again.abandoned.has_value());
  EXPECT_EQ(again.seq, first.seq) << "the same acknowledger entry is taken up again";
  EXPECT_FALSE(receiveEvent(resume, ring)) << "event 1 is with Kafka already";
  EXPECT_FALSE(receiveEvent(resume, ring)) << "event 2 is with Kafka already";
  EXPECT_TRUE(receiveEvent(resume, ring)) << "event 3 is new";
  resume.commit(commitAt(400));
  EXPECT_EQ(ring.inflightEvents(), 3u) << "three events in Kafka's hands, none twice";
  for (int i = 0; i < 2; ++i) ring.acknowledge(first.seq, 1);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(0));
  ring.acknowledge(first.seq, 1);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(400));
}

TEST(TransactionResume, LostAgainDuringTheReSendSkipsEverythingPublishedSoFar) {
  InflightTransactions ring;
  TransactionResume resume(ring);
  resume.begin(beginAt(390));
  EXPECT_TRUE(receiveEvent(resume, ring));
  resume.reconnected();
  resume.reconnected();  // lost again before the re-send began: still expected
  auto again = resume.begin(beginAt(390));
  EXPECT_TRUE(again.resumed);
  EXPECT_EQ(again.alreadyPublished, 1u);
  EXPECT_FALSE(receiveEvent(resume, ring));
  EXPECT_TRUE(receiveEvent(resume, ring));
  EXPECT_TRUE(receiveEvent(resume, ring));
  resume.reconnected();  // lost in the middle of the re-send, with three events published
  auto third = resume.begin(beginAt(390));
  EXPECT_EQ(third.alreadyPublished, 3u);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(receiveEvent(resume, ring)) << "event " << i + 1;
  EXPECT_TRUE(receiveEvent(resume, ring));
  EXPECT_EQ(ring.inflightEvents(), 4u);
}

TEST(TransactionResume, AnotherTransactionFirstAbandonsTheOpenOneAndPublishesAfresh) {
  InflightTransactions ring;
  TransactionResume resume(ring);
  auto open = resume.begin(beginAt(390));
  EXPECT_TRUE(receiveEvent(resume, ring));
  resume.reconnected();
  auto other = resume.begin(beginAt(590));
  EXPECT_FALSE(other.resumed);
  ASSERT_TRUE(other.abandoned.has_value());
  EXPECT_EQ(*other.abandoned, Lsn(390));
  EXPECT_NE(other.seq, open.seq);
  EXPECT_TRUE(receiveEvent(resume, ring)) << "nothing of the other transaction is skipped";
  resume.commit(commitAt(600));
  ring.acknowledge(open.seq, 1);  // the abandoned entry's report only adjusts the counters
  EXPECT_EQ(ring.confirmedLsn(), Lsn(0));
  ring.acknowledge(other.seq, 1);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(600));
  EXPECT_TRUE(ring.empty());

  // Should the abandoned transaction still come, it is a new one: all of its events are published.
  auto late = resume.begin(beginAt(390));
  EXPECT_FALSE(late.resumed);
  EXPECT_FALSE(late.abandoned.has_value());
  EXPECT_TRUE(receiveEvent(resume, ring));
}

TEST(TransactionResume, AStandaloneMessageFirstAbandonsTheOpenTransaction) {
  InflightTransactions ring;
  TransactionResume resume(ring);
  auto open = resume.begin(beginAt(390));
  EXPECT_TRUE(receiveEvent(resume, ring));
  resume.reconnected();
  auto message = resume.beginStandalone(Lsn(350));
  EXPECT_NE(message, open.seq);
  EXPECT_FALSE(resume.inTransaction()) << "a standalone message is no transaction of the stream";
  ring.addEvent(message, 1);
  resume.endStandalone(message, Lsn(350));
  ring.acknowledge(message, 1);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(350)) << "the abandoned entry no longer holds the position";
  auto again = resume.begin(beginAt(390));
  EXPECT_FALSE(again.resumed) << "published afresh";
  EXPECT_FALSE(again.abandoned.has_value());
  EXPECT_TRUE(receiveEvent(resume, ring));
}

TEST(TransactionResume, AStandaloneMessageWithNothingExpectedAbandonsNothing) {
  InflightTransactions ring;
  TransactionResume resume(ring);
  auto t1 = resume.begin(beginAt(190));
  EXPECT_TRUE(receiveEvent(resume, ring));
  resume.commit(commitAt(200));
  resume.reconnected();  // t1 was received whole: the server does not send it again
  auto message = resume.beginStandalone(Lsn(250));
  ring.addEvent(message, 1);
  resume.endStandalone(message, Lsn(250));
  ring.acknowledge(message, 1);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(0)) << "t1 is still in flight and holds the position";
  ring.acknowledge(t1.seq, 1);
  EXPECT_EQ(ring.confirmedLsn(), Lsn(250));
}

TEST(TransactionResume, ChangesOutsideATransactionAreProtocolErrors) {
  InflightTransactions ring;
  TransactionResume resume(ring);
  EXPECT_THROW(resume.commit(commitAt(200)), DecodeError);
  try {
    resume.current("pgoutput Insert outside a transaction");
    FAIL() << "no DecodeError";
  } catch (const DecodeError& e) {
    EXPECT_STREQ(e.what(), "pgoutput Insert outside a transaction");
  }
  resume.begin(beginAt(190));
  resume.commit(commitAt(200));
  EXPECT_THROW(resume.current("after Commit"), DecodeError);
  EXPECT_THROW(resume.commit(commitAt(300)), DecodeError) << "a second Commit";
  resume.begin(beginAt(290));
  resume.reconnected();
  EXPECT_THROW(resume.current("after a reconnect"), DecodeError) << "the new connection is outside it";
}
