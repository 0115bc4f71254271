#pragma once
// The read-model side of outbox-sink: one libpq connection, one transaction per batch.
//
// A batch is planned once (BatchPlan: per event its de-duplication insert and its projections' statements with
// their parameters, then the partitions' next offsets) and sent in a transaction that is left open, so that the
// caller can put poison events on the dead-letter topic and flush it before commit() makes the batch, its
// offsets and its de-duplication ids durable together. The plan goes out pipelined first, in one round trip; only
// when a statement fails for a data error (or an id turns out recorded meanwhile) is it sent again one statement
// at a time, each event inside a savepoint, to find and skip the poison event. Any other failure (see
// classifySqlState) rolls the whole batch back to be retried: an event is poison only by its data.
//
// The offsets are written conditionally (WHERE next_offset = the value this instance last read or wrote): if
// another instance of the group moved a partition meanwhile (a rebalance this instance missed, a zombie), the
// batch is a Conflict and rolls back, so an event is never applied twice even across instances.

#include <libpq-fe.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "src/BatchPlan.h"
#include "src/Projection.h"
#include "src/SinkConfig.h"

namespace outbox::sink {

// An event no projection could apply: it goes to the dead-letter topic (or stops the sink).
struct PoisonEvent {
  size_t index = 0;  // into the batch
  std::string error;
};

struct StagedBatch {
  enum class Status {
    Staged,     // the transaction is open and holds the batch; commit() or rollback()
    Transient,  // the database's environment failed (rolled back; not the data's fault): reconnect, rewind, retry
    Conflict,   // another instance moved a stored offset (rolled back): re-read offsets, rewind
    Poison,     // on_error = "stop" and an event failed (rolled back): poison[0] says which
    Fatal,      // a data error in the sink's own statements (rolled back)
  };
  Status status = Status::Staged;
  std::string error;
  std::string sqlState;  // of the failure, when the server sent one (Transient, Fatal)
  std::vector<PoisonEvent> poison;
  int64_t duplicates = 0;
  int64_t noProjection = 0;
  std::vector<int64_t> appliedByProjection;  // index = projection index
};

// Whose fault a failed statement is, by its SQLSTATE's class
// (https://www.postgresql.org/docs/current/errcodes-appendix.html). An allowlist: only class 22 (data exception: a cast
// that fails, a value out of range) and 23 (integrity constraint violation: NOT NULL, CHECK, unique, foreign key) are
// the event's, and make it poison. Everything else is the environment's and is retried, never dead-lettered: a broken
// connection (no SQLSTATE), 08 connection, 25006 read-only transaction (a failover onto a standby), 40 serialization
// failure or deadlock, 42 undefined table or column and 42501 permission denied (a migration half-way), 53 insufficient
// resources, 55 lock not available, 57014 statement timeout, 57P0x shutdown, 0A000 cached plan invalidated by DDL
// (statements are prepared again on the reconnect that follows), 58 system error, XX internal error.
enum class SqlFault { Data, Environment };
SqlFault classifySqlState(const char* sqlState);
// The class of a SQLSTATE ("22"), "none" without one (the connection failed): a metric label.
std::string sqlStateClass(std::string_view sqlState);

class BatchApplier {
 public:
  BatchApplier(const SinkConfig& config, ProjectionSet& projections);
  ~BatchApplier();
  BatchApplier(const BatchApplier&) = delete;
  BatchApplier& operator=(const BatchApplier&) = delete;

  enum class ConnectResult { Ok, Transient, Fatal };
  // Connects, creates the sink's tables (database.create_tables) and prepares every statement. Fatal: at the
  // first connection, a connection no retry cures (a certificate that does not verify, a failed authentication: see
  // permanentConnectFailureHint), a projection's SQL does not prepare, or a data error creating the tables (a setup
  // error, not retried). On a reconnect every statement prepared before, so a failure to prepare one again is the
  // environment's (a table renamed by a migration for a moment): Transient.
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
  // The SQLSTATE of the last failure connect(), storedOffsets() or commit() reported; empty without one.
  const std::string& lastSqlState() const { return lastSqlState_; }
  void rollback();

  // Deletes processed-event ids older than the retention; returns the count, or -1 with `error` set.
  int64_t pruneProcessedEvents(std::string& error);

 private:
  bool exec(const char* sql, std::string& error);
  // The error text of `r` (or of the connection) with its SQLSTATE; remembers the SQLSTATE in lastSqlState_.
  std::string describe(const PGresult* r);
  // Whether `r` failed for a reason of the environment (see classifySqlState), the connection's included.
  bool environmentFailure(const PGresult* r) const;
  // The fast way: every statement of the plan, then one Sync (libpq pipeline mode), no savepoints. Sets `redo`
  // (and rolls back) when a statement fails for a reason other than a transient one, or when an event id was
  // recorded by another transaction since the look-up: the plan is then sent again with sendOneByOne().
  StagedBatch sendPipelined(const BatchPlan& plan, bool& redo);
  // The exact way: one statement at a time, each event between SAVEPOINT and RELEASE, or ROLLBACK TO when one of
  // its statements fails for a data error (the event is poison and skipped). The de-duplication insert runs first
  // inside the savepoint and decides duplicates; a poison event's ROLLBACK TO takes its id back out.
  StagedBatch sendOneByOne(const BatchPlan& plan);
  const char* statementName(const PlannedStatement& statement) const;
  std::string table(const char* name) const;
  StagedBatch failed(StagedBatch::Status status, std::string error);
  StagedBatch stopped(size_t index, const std::string& error);  // rolls back: Poison, on_error = "stop"

  const SinkConfig& config_;
  ProjectionSet& projections_;
  // Prepared statement names per projection and statement: "p<projection>", or "p<projection>_<statement>" for
  // each of a multi-statement projection's.
  std::vector<std::vector<std::string>> projectionStatements_;
  PGconn* conn_ = nullptr;
  bool inTransaction_ = false;
  bool preparedBefore_ = false;  // a connect() succeeded once: later prepare failures are the environment's
  std::string lastSqlState_;
};

}  // namespace outbox::sink
