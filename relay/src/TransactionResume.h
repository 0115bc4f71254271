#pragma once
// Which in-flight transaction each decoded event belongs to, and, after a lost connection, which of the events
// the server sends again were already handed to Kafka.
//
// The relay asks the server to resume at the end of the last transaction it received whole
// (InflightTransactions::resumeLsn), so the one transaction that was open when the connection broke is re-sent
// from its Begin. Its entry stays in the acknowledger: when that Begin arrives the entry is taken up again, and
// the first `eventsAdded` outbox events of it are skipped by count, since Kafka has them already. If anything else
// comes first (another transaction, a non-transactional message), the open entry is abandoned and what follows is
// published afresh: the abandoned transaction's events may then reach Kafka twice, but none is lost.
//
// Pure logic, no I/O: the event loop feeds it the decoded messages; it keeps the acknowledger's transactions.

#include <cstdint>
#include <optional>

#include "src/InflightTransactions.h"
#include "src/Lsn.h"
#include "src/PgOutputMessages.h"

namespace outbox {

class TransactionResume {
 public:
  using Sequence = InflightTransactions::Sequence;

  explicit TransactionResume(InflightTransactions& inflight) : inflight_(inflight) {}

  // A new replication connection: nothing is being received; the acknowledger's open transaction, if any, is the
  // one the server will send again first.
  void reconnected();

  struct Began {
    Sequence seq = 0;
    bool resumed = false;           // the expected re-sent transaction, taken up again
    uint64_t alreadyPublished = 0;  // resumed: how many of its first outbox events will be skipped
    // Set when another transaction arrived than the expected one, whose entry was abandoned: where that one
    // commits (for the log; its events may be published twice).
    std::optional<Lsn> abandoned;
  };
  // A Begin: opens (or takes up again) the transaction its events belong to.
  Began begin(const pgoutput::Begin& begin);
  // A Commit: the transaction being received is complete. Throws DecodeError when none is.
  void commit(const pgoutput::Commit& commit);

  // The transaction being received, for an event of it. Throws DecodeError saying `message` when none is
  // (a change outside Begin..Commit breaks the protocol).
  Sequence current(const char* message) const;
  // Called for each outbox event of the current transaction, in stream order, before publishing it: true while
  // it is one of those already handed to Kafka before the connection was lost (then skip it).
  bool skipAlreadyPublished();

  // A non-transactional logical message: a unit of its own, outside any transaction's fate. It ends the wait
  // for the expected re-sent transaction (abandoning that one). Publish the message under the returned sequence,
  // then endStandalone() it.
  Sequence beginStandalone(Lsn lsn);
  // The standalone message is complete and becomes confirmable at `lsn` once acknowledged.
  void endStandalone(Sequence seq, Lsn lsn) { inflight_.commit(seq, lsn); }

  // Between a Begin and its Commit.
  bool inTransaction() const { return current_.has_value(); }

 private:
  InflightTransactions& inflight_;
  std::optional<Sequence> current_;
  uint64_t skip_ = 0;
  std::optional<InflightTransactions::OpenTransaction> expected_;
};

}  // namespace outbox
