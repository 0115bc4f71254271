#pragma once
// The read-model side of outbox-sink: one libpq connection, one transaction per batch.
//
// A batch is staged (BEGIN, for each event: de-duplication by id, SAVEPOINT, every matching projection's
// statement, RELEASE or ROLLBACK TO SAVEPOINT; then the partitions' next offsets) and left open, so that the
// caller can put poison events on the dead-letter topic and flush it before commit() makes the batch, its
// offsets and its de-duplication ids durable together.
//
// The offsets are written conditionally (WHERE next_offset = the value this instance last read or wrote): if
// another instance of the group moved a partition meanwhile (a rebalance this instance missed, a zombie), the
// batch is a Conflict and rolls back, so an event is never applied twice even across instances.

#include <libpq-fe.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "src/Projection.h"
#include "src/SinkConfig.h"

namespace outbox::sink {

using TopicPartition = std::pair<std::string, int32_t>;
// The next offset stored in the database per partition; nullopt = no row yet.
using StoredOffsets = std::map<TopicPartition, std::optional<int64_t>>;

// An event no projection could apply: it goes to the dead-letter topic (or stops the sink).
struct PoisonEvent {
  size_t index = 0;  // into the batch
  std::string error;
};

struct StagedBatch {
  enum class Status {
    Staged,     // the transaction is open and holds the batch; commit() or rollback()
    Transient,  // a transient database error (rolled back): reconnect, rewind, retry
    Conflict,   // another instance moved a stored offset (rolled back): re-read offsets, rewind
    Poison,     // on_error = "stop" and an event failed (rolled back): poison[0] says which
    Fatal,      // an error retrying cannot fix (rolled back)
  };
  Status status = Status::Staged;
  std::string error;
  std::vector<PoisonEvent> poison;
  int64_t duplicates = 0;
  int64_t noProjection = 0;
  std::vector<int64_t> appliedByProjection;  // index = projection index
};

// Whether a SQLSTATE (or its absence: a broken connection) is worth retrying: connection exceptions (08*),
// serialization failure (40001), deadlock (40P01), operator intervention (57P01..57P03), insufficient
// resources (53*), lock not available (55P03). https://www.postgresql.org/docs/current/errcodes-appendix.html
bool isTransientSqlState(const char* sqlState);

class BatchApplier {
 public:
  BatchApplier(const SinkConfig& config, ProjectionSet& projections);
  ~BatchApplier();
  BatchApplier(const BatchApplier&) = delete;
  BatchApplier& operator=(const BatchApplier&) = delete;

  enum class ConnectResult { Ok, Transient, Fatal };
  // Connects, creates the sink's tables (database.create_tables) and prepares every statement. Fatal: a
  // projection's SQL does not prepare, or the tables cannot be created (a setup error, not retried).
  ConnectResult connect(std::string& error);
  bool connected() const;
  void disconnect();

  // The stored next offsets of this group for `partitions`; nullopt with `error` on failure (transient).
  std::optional<StoredOffsets> storedOffsets(const std::vector<TopicPartition>& partitions, std::string& error);

  // Stages `events` (in consumption order) with, per partition in `nextOffsets`, the expected stored value
  // (`expected`) and the new one. See StagedBatch::Status.
  StagedBatch stage(const std::vector<SinkEvent>& events, const StoredOffsets& expected,
                    const std::map<TopicPartition, int64_t>& nextOffsets);
  // Commits the staged batch; false with `error` when the outcome is unknown or failed (treat as transient).
  bool commit(std::string& error);
  void rollback();

  // Deletes processed-event ids older than the retention; returns the count, or -1 with `error` set.
  int64_t pruneProcessedEvents(std::string& error);

 private:
  bool exec(const char* sql, std::string& error);
  // The fast way: the whole batch in pipelined round trips (libpq pipeline mode), no savepoints. Sets `fallback`
  // (and rolls back) when a statement fails for a reason other than a transient one: the batch is then staged
  // again one event at a time, with savepoints, to find and skip the poison event.
  StagedBatch stagePipelined(const std::vector<SinkEvent>& events, const StoredOffsets& expected,
                             const std::map<TopicPartition, int64_t>& nextOffsets, bool& fallback);
  StagedBatch stageOneByOne(const std::vector<SinkEvent>& events, const StoredOffsets& expected,
                            const std::map<TopicPartition, int64_t>& nextOffsets);
  std::string table(const char* name) const;
  StagedBatch failed(StagedBatch::Status status, std::string error);

  const SinkConfig& config_;
  ProjectionSet& projections_;
  PGconn* conn_ = nullptr;
  bool inTransaction_ = false;
};

}  // namespace outbox::sink
