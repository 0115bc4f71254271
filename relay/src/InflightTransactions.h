#pragma once
// The acknowledger: which WAL position may be confirmed to PostgreSQL.
//
// Transactions arrive from the WAL in commit order. Their events go to Kafka, whose delivery reports come back
// in any order across partitions. A transaction's commit position may be confirmed (flushed) only when it and
// every earlier transaction are fully acknowledged: the confirmed position advances over the oldest entries
// while they are complete (as Bottled Water's ring of in-flight transactions does). Everything else stays in
// WAL, so a crash at any moment re-sends what Kafka might not have; nothing is lost.
//
// Memory is bounded by the in-flight budget, not by the number of transactions: a committed transaction with
// nothing left to acknowledge (no outbox events at all, as PostgreSQL <= 14 or a publication shared with other
// tables sends them, or all of its events acknowledged already) never keeps an entry behind an older one. Its
// commit position is folded into the entry before it, which then confirms up to there once it completes: that
// is exact, since nothing of the folded transaction waits. So every entry but the oldest and the open one has an
// unacknowledged event, and the ring holds at most inflightEvents() + 2 entries.
//
// Pure logic, no I/O: the event loop feeds it and reads `confirmedLsn()`.

#include <cstdint>
#include <deque>
#include <optional>

#include "src/Lsn.h"
#include "src/PgOutputMessages.h"

namespace outbox {

class InflightTransactions {
 public:
  // Identifies a transaction for the life of the process; travels with each Kafka message as its opaque.
  using Sequence = uint64_t;

  // A transaction whose events are about to be published. `finalLsn` is its commit record's position
  // (Begin.final_lsn), used in logs.
  Sequence begin(Lsn finalLsn, pgoutput::PgTimestamp commitTime);
  // One event of the transaction handed to Kafka, with its size for the in-flight byte budget.
  void addEvent(Sequence txn, uint64_t bytes);
  // The transaction's Commit arrived: no more events will be added; `endLsn` becomes confirmable once all of
  // its events are acknowledged.
  void commit(Sequence txn, Lsn endLsn);
  // A delivery report: Kafka acknowledged one event of `txn`. Returns the transaction's commit time (for the
  // commit-to-acknowledgement latency), nullopt for an abandoned transaction or one without a commit time.
  std::optional<pgoutput::PgTimestamp> acknowledge(Sequence txn, uint64_t bytes);
  // The server reported its WAL end in a keepalive. With nothing in flight and no transaction open, everything
  // the server decoded up to there was either published and acknowledged or not an outbox event, so an idle
  // outbox on a busy database does not hold back WAL.
  void serverWalEnd(Lsn walEnd);
  // Sets the starting point (the slot's confirmed position) after (re)connecting.
  void resetConfirmed(Lsn lsn);
  // Starts over at `lsn` (the slot's position on a server the relay's positions do not hold on: a promoted standby,
  // a re-created slot): forgets every transaction, and the confirmed and received positions, even when later.
  // The in-flight counters keep counting what Kafka still holds; its late acknowledgements confirm nothing.
  void restartFrom(Lsn lsn);

  Lsn confirmedLsn() const { return confirmed_; }
  // Commit time of the oldest transaction not yet fully acknowledged (for the source-lag metric: how long the
  // oldest committed event has waited for Kafka); nullopt when nothing with a commit time is in flight.
  std::optional<pgoutput::PgTimestamp> oldestPendingCommitTime() const;
  uint64_t inflightEvents() const { return inflightEvents_; }
  uint64_t inflightBytes() const { return inflightBytes_; }
  bool hasOpenTransaction() const { return !ring_.empty() && !ring_.back().committed; }
  bool empty() const { return ring_.empty(); }
  // Entries in the ring (transactions, or runs of them folded together): at most inflightEvents() + 2.
  size_t transactions() const { return ring_.size(); }
  // Where to resume streaming after a lost connection: the end of the last transaction received whole.
  // Transactions up to there are in Kafka's hands already (or acknowledged), so asking the server to start
  // there instead of at the confirmed position avoids publishing them twice.
  Lsn resumeLsn() const { return received_ > confirmed_ ? received_ : confirmed_; }

  // The open (not yet committed) transaction, if any. After a lost connection the server re-sends it from its
  // start; the first `eventsAdded` of its events are already with Kafka and are skipped, not published twice.
  struct OpenTransaction {
    Sequence seq = 0;
    Lsn finalLsn;
    uint64_t eventsAdded = 0;
  };
  std::optional<OpenTransaction> openTransaction() const;
  // Drops an open transaction's bookkeeping (when the server re-sends something else than expected). Events of
  // it already handed to Kafka still get delivery reports; those only adjust the in-flight counters.
  void abandonOpenTransaction();
  // Exactly-once mode, after the Kafka transaction was aborted (its records purged) and before replaying from the
  // committed progress: forgets every transaction and both in-flight counters. Sequences keep increasing, so a
  // late delivery report of a purged record never matches a new transaction.
  void clear();

 private:
  struct Entry {
    Sequence seq = 0;
    Lsn finalLsn;
    Lsn endLsn;
    pgoutput::PgTimestamp commitTime;
    uint64_t pending = 0;
    uint64_t added = 0;
    bool committed = false;
  };
  // The entry of `seq`, or ring_.end().
  std::deque<Entry>::iterator find(Sequence seq);
  void advance();
  // `entry` is committed and has nothing pending: confirm it if it is the oldest, else fold it into the one
  // before it.
  void settle(std::deque<Entry>::iterator entry);

  std::deque<Entry> ring_;
  Sequence nextSeq_ = 1;
  Lsn confirmed_;
  Lsn received_;
  uint64_t inflightEvents_ = 0;
  uint64_t inflightBytes_ = 0;
};

}  // namespace outbox
