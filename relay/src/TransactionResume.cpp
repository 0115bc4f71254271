#include "src/TransactionResume.h"

namespace outbox {

void TransactionResume::reconnected() {
  expected_ = inflight_.openTransaction();
  current_.reset();
  skip_ = 0;
}

TransactionResume::Began TransactionResume::begin(const pgoutput::Begin& begin) {
  Began began;
  if (expected_) {
    if (expected_->finalLsn == begin.finalLsn) {
      current_ = began.seq = expected_->seq;
      skip_ = began.alreadyPublished = expected_->eventsAdded;
      began.resumed = true;
      expected_.reset();
      return began;
    }
    // The server re-sent something else first: this transaction is published afresh.
    began.abandoned = expected_->finalLsn;
    inflight_.abandonOpenTransaction();
    expected_.reset();
  }
  current_ = began.seq = inflight_.begin(begin.finalLsn, begin.commitTime);
  skip_ = 0;
  return began;
}

void TransactionResume::commit(const pgoutput::Commit& commit) {
  if (!current_) throw pgoutput::DecodeError("pgoutput Commit without Begin");
  inflight_.commit(*current_, commit.endLsn);
  current_.reset();
}

TransactionResume::Sequence TransactionResume::current(const char* message) const {
  if (!current_) throw pgoutput::DecodeError(message);
  return *current_;
}

bool TransactionResume::skipAlreadyPublished() {
  if (skip_ == 0) return false;
  --skip_;
  return true;
}

TransactionResume::Sequence TransactionResume::beginStandalone(Lsn lsn) {
  if (expected_) {
    // A non-transactional message before the re-sent open transaction: that one is published afresh.
    inflight_.abandonOpenTransaction();
    expected_.reset();
  }
  return inflight_.begin(lsn, pgoutput::PgTimestamp{});
}

}  // namespace outbox
