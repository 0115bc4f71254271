#pragma once
// The sink's event loop: a Kafka consumer group member that gathers records into batches and hands each batch to
// the BatchApplier, one PostgreSQL transaction per batch, with the batch's offsets in the same transaction.
//
//   Kafka (consumer group) ──► batch ──► BatchApplier (BEGIN … projections … offsets) ──► COMMIT
//        ▲  seek to stored offsets            │ poison events                               │
//        └── on assign / after a rollback     └──► DeadLetterPublisher (flushed before COMMIT) └─► Kafka commit (async)
//
// The database, not Kafka, holds the positions: on every assignment and after every rolled-back batch the consumer
// seeks to the offsets stored in the read-model database, so what is applied and where to resume always agree.
// Kafka's committed offsets are written after each database commit only so that lag tools see progress.

#include <librdkafka/rdkafka.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "src/BatchApplier.h"
#include "src/DeadLetterPublisher.h"
#include "src/Projection.h"
#include "src/SinkConfig.h"
#include "src/SinkMetrics.h"

namespace outbox::sink {

// Exit statuses of outbox-sink (also in --help).
enum ExitStatus : int {
  kExitOk = 0,
  kExitFailure = 1,      // a fatal Kafka or database error
  kExitSetup = 2,        // configuration or setup error (e.g. a projection's SQL does not prepare)
  kExitPoisonEvent = 3,  // on_error = "stop" and an event could not be applied
};

class Sink {
 public:
  Sink(const SinkConfig& config, SinkMetrics& metrics);
  ~Sink();
  Sink(const Sink&) = delete;
  Sink& operator=(const Sink&) = delete;

  // Runs until requestStop() (then finishes the batch, commits and leaves the group) or a fatal error.
  int run();
  // Async-signal-safe.
  void requestStop() { stop_.store(true); }

 private:
  static void rebalanceCallback(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* partitions,
                                void* opaque);
  // librdkafka's error_cb and stats_cb. Both run on this thread, inside rd_kafka_consumer_poll() (the main queue is
  // forwarded to the consumer's).
  static void errorCallback(rd_kafka_t* rk, int err, const char* reason, void* opaque);
  static int statsCallback(rd_kafka_t* rk, char* json, size_t length, void* opaque);
  // Readiness: Kafka refuses the consumer or cannot be reached (`err`), or it demonstrably works again (`evidence`).
  void kafkaUnavailable(rd_kafka_resp_err_t err);
  void kafkaWorks(const char* evidence);
  void kafkaFatal();
  void onAssign(rd_kafka_topic_partition_list_t* partitions);
  void onRevoke(rd_kafka_topic_partition_list_t* partitions);

  bool connectDatabase();  // retries transient failures until connected or stopped; false when fatal/stopped
  void handleMessage(rd_kafka_message_t* message);
  // Applies and commits the pending batch. On failure the batch is dropped and rewindNeeded_ is set.
  void flushBatch();
  void discardPending();
  // Reconnects if needed, re-reads the stored offsets of the assigned partitions and seeks to them.
  void rewind();
  void updateLag();  // of every assigned partition
  void updateLag(const TopicPartition& tp);
  void maybePrune();
  void sleepWhileRunning(std::chrono::milliseconds duration);
  void fail(int status, const std::string& message);
  // Counts a database error the sink waits out (by SQLSTATE class) and marks the sink as waiting until a commit.
  void databaseError(const std::string& sqlState);

  const SinkConfig& config_;
  SinkMetrics& metrics_;
  ProjectionSet projections_;
  BatchApplier applier_;
  std::unique_ptr<DeadLetterPublisher> deadLetters_;
  rd_kafka_t* consumer_ = nullptr;
  std::atomic<bool> stop_{false};
  int exitStatus_ = kExitOk;
  bool failed_ = false;
  bool kafkaFatalReported_ = false;

  std::set<TopicPartition> assigned_;
  StoredOffsets stored_;                        // what the database holds, as of our last read or commit
  std::map<TopicPartition, int64_t> position_;  // next offset to accept (stale records below it are dropped)
  std::vector<rd_kafka_message_t*> pending_;
  std::chrono::steady_clock::time_point batchDeadline_;
  bool rewindNeeded_ = false;
  int transientFailures_ = 0;  // in a row; the retries back off exponentially
  std::chrono::steady_clock::time_point nextLag_;
  std::chrono::steady_clock::time_point nextPrune_;
};

}  // namespace outbox::sink
