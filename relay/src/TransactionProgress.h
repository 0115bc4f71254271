#pragma once
// Exactly-once mode's bookkeeping (README "Guarantees"): what the relay has put in Kafka, as a position in the
// stream of committed PostgreSQL transactions, and which decoded events a resuming relay skips.
//
// The stream is a sequence of units in commit order: a PostgreSQL transaction, named by its commit LSN
// (Begin.final_lsn; unique, increasing in stream order), or a non-transactional logical message, named by its own
// LSN. Each outbox event is (unit, index of the event within the unit). Never a per-row LSN: the rows of a COPY or
// a multi-row INSERT share one, and transactions arrive in commit order, not in the order of their rows' LSNs.
//
// A ProgressRecord travels in every Kafka transaction the relay commits (to the compacted progress topic, keyed by
// the transactional id): the last unit included whole, and, when a unit larger than the transaction bounds was
// split, how many events of the next unit are included. A read_committed read of it at start-up says exactly what
// is in Kafka; ReplayFilter skips that, and nothing else, from what the slot sends again.
//
// Pure logic, no I/O.

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "src/Lsn.h"

namespace outbox {

struct ProgressRecord {
  static constexpr int kFormat = 1;
  std::string slot;
  std::string database;
  std::string systemId;  // IDENTIFY_SYSTEM's systemid: LSNs mean something only on this cluster
  uint32_t timeline = 0;
  Lsn commitLsn;  // the last unit included whole: its commit LSN (a message: its LSN); 0/0 for none yet
  Lsn endLsn;     // where streaming may resume after it (the end of its commit record)
  struct Partial {
    Lsn commitLsn;        // the split unit
    uint64_t events = 0;  // its first `events` events are included
    bool operator==(const Partial&) const = default;
  };
  std::optional<Partial> partial;
  // When it was written (ISO 8601 UTC), for the operator reading a slot-lost error; empty when not recorded.
  std::string time;

  bool operator==(const ProgressRecord&) const = default;
  std::string toJson() const;
  // Throws std::invalid_argument saying what is wrong: the record comes from Kafka, where anything with write
  // access to the topic can put bytes.
  static ProgressRecord parse(std::string_view json);
};

// Decides, for each unit the server sends, which of its events are already in Kafka.
class ReplayFilter {
 public:
  // What Kafka has: nothing is skipped without a record.
  void reset(const std::optional<ProgressRecord>& committed);
  // A unit begins. Returns how many of its first events to skip (UINT64_MAX: all of it).
  uint64_t beginUnit(Lsn commitLsn) const;
  static constexpr uint64_t kAll = UINT64_MAX;

 private:
  std::optional<ProgressRecord> committed_;
};

// The units and events of the Kafka transaction being filled, and the ProgressRecord that describes it.
class ProgressTracker {
 public:
  // Starts from what Kafka has (nullopt: nothing yet); identity fields are copied into every record.
  void reset(const ProgressRecord& base);
  // A unit begins; `alreadyInKafka` events of it (ReplayFilter) are counted as included.
  void beginUnit(Lsn commitLsn, uint64_t alreadyInKafka);
  // The index within the open unit of its next event.
  uint64_t nextIndex() const { return openEvents_; }
  // That event is in the Kafka transaction now (its record, or the dead letter standing for it, was queued): a
  // record written from here on counts it. Never before: a commit in between (one that isolates a suspect) must
  // not claim an event that is not in Kafka.
  void eventIncluded() { ++openEvents_; }
  // The open unit ended at `endLsn`: included whole from now.
  void endUnit(Lsn endLsn);
  bool unitOpen() const { return open_.has_value(); }
  // The record for a Kafka transaction committed now.
  ProgressRecord current() const;

 private:
  ProgressRecord record_;
  std::optional<Lsn> open_;
  uint64_t openEvents_ = 0;
};

}  // namespace outbox
