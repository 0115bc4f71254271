#include "src/InflightTransactions.h"

#include <algorithm>
#include <iterator>
#include <stdexcept>

namespace outbox {

InflightTransactions::Sequence InflightTransactions::begin(Lsn finalLsn, pgoutput::PgTimestamp commitTime) {
  if (hasOpenTransaction()) throw std::logic_error("InflightTransactions: begin while a transaction is open");
  Entry entry;
  entry.seq = nextSeq_++;
  entry.finalLsn = finalLsn;
  entry.commitTime = commitTime;
  ring_.push_back(entry);
  return entry.seq;
}

std::deque<InflightTransactions::Entry>::iterator InflightTransactions::find(Sequence seq) {
  // Sequences in the ring increase (abandoned ones leave gaps): binary search. Delivery reports mostly concern
  // the oldest transactions, events are added to the newest, and the ring can hold many thousand entries.
  auto it = std::lower_bound(ring_.begin(), ring_.end(), seq, [](const Entry& e, Sequence s) { return e.seq < s; });
  return it != ring_.end() && it->seq == seq ? it : ring_.end();
}

std::optional<pgoutput::PgTimestamp> InflightTransactions::oldestPendingCommitTime() const {
  for (const Entry& entry : ring_) {
    if (entry.commitTime.micros != 0) return entry.commitTime;  // non-transactional messages have none
  }
  return std::nullopt;
}

void InflightTransactions::addEvent(Sequence txn, uint64_t bytes) {
  auto entry = find(txn);
  if (entry == ring_.end() || entry->committed)
    throw std::logic_error("InflightTransactions: event for a closed transaction");
  ++entry->pending;
  ++entry->added;
  ++inflightEvents_;
  inflightBytes_ += bytes;
}

void InflightTransactions::commit(Sequence txn, Lsn endLsn) {
  auto entry = find(txn);
  if (entry == ring_.end() || entry->committed)
    throw std::logic_error("InflightTransactions: commit of an unknown transaction");
  entry->committed = true;
  entry->endLsn = endLsn;
  if (endLsn > received_) received_ = endLsn;
  if (entry->pending == 0) settle(entry);
}

std::optional<pgoutput::PgTimestamp> InflightTransactions::acknowledge(Sequence txn, uint64_t bytes) {
  // In-flight counters track what Kafka holds, whether or not the transaction is still tracked.
  if (inflightEvents_ > 0) --inflightEvents_;
  inflightBytes_ = inflightBytes_ >= bytes ? inflightBytes_ - bytes : 0;
  auto entry = find(txn);
  if (entry == ring_.end()) return std::nullopt;  // an abandoned transaction's event
  if (entry->pending > 0) --entry->pending;
  std::optional<pgoutput::PgTimestamp> commitTime;
  if (entry->commitTime.micros != 0) commitTime = entry->commitTime;
  if (entry->committed && entry->pending == 0) settle(entry);
  return commitTime;
}

void InflightTransactions::settle(std::deque<Entry>::iterator entry) {
  if (entry == ring_.begin()) {
    advance();
    return;
  }
  // An older transaction still waits for Kafka. Confirming this one needs nothing more than that one (and all
  // before it) completing, so its end position moves into the previous entry and its own entry goes: an outage
  // under a stream of transactions without outbox events grows nothing. The previous entry is committed (only the
  // newest can be open) and, by this same rule, still has something pending.
  auto previous = std::prev(entry);
  if (entry->endLsn > previous->endLsn) previous->endLsn = entry->endLsn;
  ring_.erase(entry);
}

void InflightTransactions::advance() {
  while (!ring_.empty() && ring_.front().committed && ring_.front().pending == 0) {
    if (ring_.front().endLsn > confirmed_) confirmed_ = ring_.front().endLsn;
    ring_.pop_front();
  }
}

void InflightTransactions::serverWalEnd(Lsn walEnd) {
  if (ring_.empty() && walEnd > confirmed_) confirmed_ = walEnd;
  if (ring_.empty() && walEnd > received_) received_ = walEnd;
}

void InflightTransactions::resetConfirmed(Lsn lsn) {
  if (lsn > confirmed_) confirmed_ = lsn;
  if (lsn > received_) received_ = lsn;
}

void InflightTransactions::restartFrom(Lsn lsn) {
  ring_.clear();
  confirmed_ = lsn;
  received_ = lsn;
}

std::optional<InflightTransactions::OpenTransaction> InflightTransactions::openTransaction() const {
  if (!hasOpenTransaction()) return std::nullopt;
  return OpenTransaction{ring_.back().seq, ring_.back().finalLsn, ring_.back().added};
}

void InflightTransactions::abandonOpenTransaction() {
  if (!hasOpenTransaction()) return;
  // Its events still in Kafka's queue will report back; they only adjust the in-flight counters.
  ring_.pop_back();
  advance();
}

void InflightTransactions::clear() {
  ring_.clear();
  inflightEvents_ = 0;
  inflightBytes_ = 0;
}

}  // namespace outbox
