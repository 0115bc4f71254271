#pragma once
// The relay's event loop: one thread owns the WAL reader, the decoder, the router, the Kafka publisher and the
// acknowledger, and moves each committed outbox event along that path:
//
//   ReplicationStream -> PgOutputDecoder -> OutboxRouter -> KafkaPublisher
//          ^                                                      | delivery reports
//          +------ standby status updates <- InflightTransactions <-+
//
// It sleeps in poll(2) on PostgreSQL's socket, librdkafka's wake-up pipe and the stop pipe. When the in-flight
// budget is full it stops reading WAL but keeps serving Kafka and sending status updates (backpressure).

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/Backoff.h"
#include "src/InflightTransactions.h"
#include "src/KafkaPublisher.h"
#include "src/OutboxRouter.h"
#include "src/PgOutputDecoder.h"
#include "src/RelayConfig.h"
#include "src/RelayMetrics.h"
#include "src/ReplicationStream.h"
#include "src/ServerWalProbe.h"
#include "src/TransactionProgress.h"
#include "src/TransactionResume.h"

namespace outbox {

// Exactly-once mode: the Kafka transaction was aborted; stream again from the last committed progress.
class TransactionReplay : public ReplicationError {
 public:
  using ReplicationError::ReplicationError;
};

class Relay {
 public:
  // Exit statuses of run().
  static constexpr int kExitOk = 0;
  static constexpr int kExitUnconfirmed = 1;     // stopped with events Kafka had not acknowledged (re-sent on restart)
  static constexpr int kExitSetup = 2;           // something only an operator can fix (the log says what)
  static constexpr int kExitDeliveryFailed = 3;  // Kafka refused an event permanently; it was not confirmed
  static constexpr int kExitProtocol = 4;        // the replication stream could not be decoded
  static constexpr int kExitInternal = 5;        // a bug or an impossible state (the log says what)
  static constexpr int kExitFenced = 6;
  // The progress record's opaque: the dead-letter flag with id 0, which no dead letter has.
  static constexpr uint64_t kProgressOpaque = uint64_t{1} << 63;          // exactly-once: another relay with the same transactional.id took over

  Relay(const RelayConfig& config, RelayMetrics& metrics);
  ~Relay();

  // Runs until stop is requested or a fatal error; returns the exit status.
  int run();
  // Async-signal-safe: may be called from a signal handler.
  void requestStop();

 private:
  void connectAndStream();
  void streamLoop();
  void handleCopyData(std::string_view data);
  // Dispatches one pgoutput message to the handler of its kind.
  void handleMessage(const pgoutput::PgOutputMessage& message);
  void onBegin(const pgoutput::Begin& begin);
  void onCommit(const pgoutput::Commit& commit);
  void onInsert(const pgoutput::Insert& insert);
  void onMessage(const pgoutput::Message& message);
  void onRelation(const pgoutput::Relation& relation);
  // A logical message with the configured prefix that is not published: counted, logged at most every 10 s.
  void ignoreMessage(prometheus::Counter& counter, const pgoutput::Message& message, const char* why);
  // An UPDATE, DELETE or TRUNCATE of a relation: counted when it is an outbox table, never published.
  void onIgnored(RelationId relation, RelayMetrics::IgnoredOperation operation);
  // At most every 10 s: how many such changes were ignored since the last time.
  void logIgnoredChanges();
  // The record the router just filled, from outbox `table` ("message" for logical messages), to Kafka.
  void publishRouted(InflightTransactions::Sequence txn, std::string_view table, OutboxRouter::Outcome outcome,
                     const std::string& error);
  void publish(const OutboxRecord& record, InflightTransactions::Sequence txn, uint16_t labels);
  // While librdkafka's queue is full: serves Kafka and the stop pipe for a bounded time and keeps status updates
  // going. False when publishing must end (a failure, or a stop whose bound passed); the event then counts as in
  // flight and is never acknowledged, so its transaction is not confirmed.
  bool serveWhileQueueFull(InflightTransactions::Sequence txn, const OutboxRecord& record);
  void onDelivery(const KafkaPublisher::Delivery& delivery);

  // The dead-letter path for a record Kafka refused for its own content (KafkaPublisher::contentRejection): a
  // record to the dead-letter topic takes its place and its acknowledgement stands for the event's (same
  // transaction, same in-flight bytes), so the transaction is confirmed only once the dead letter is in Kafka.
  struct OwnedRecord {
    std::string topic;
    std::optional<std::string> key;
    std::optional<std::string> value;
    std::vector<std::pair<std::string, std::string>> headers;
    OutboxRecord view() const;
  };
  struct DeadLetter {
    InflightTransactions::Sequence txn = 0;
    uint64_t originalBytes = 0;  // what the event weighs in the in-flight budget
    KafkaPublisher::Rejection rejection = KafkaPublisher::Rejection::InvalidRecord;
    std::string originalTopic;
  };
  // `counted`: the event is already in flight (a failed delivery report) rather than refused by produce().
  void deadLetterRejected(InflightTransactions::Sequence txn, uint64_t originalBytes, rd_kafka_resp_err_t error,
                          const OutboxRecord& original, bool counted);
  void produceDeadLetter(uint64_t id, OwnedRecord record);
  // Queued, or false: queue full (try again later) / failed (the relay stops).
  bool tryProduceDeadLetter(uint64_t id, OwnedRecord& record, bool& queueFull);
  void retryPendingDeadLetters();
  void onDeadLetterDelivery(const KafkaPublisher::Delivery& delivery);
  void fail(int exitStatus, const std::string& why);
  bool backpressured() const;
  bool stopRequested();
  // Serves Kafka (and the stop pipe) for up to `duration` without a PostgreSQL connection.
  void waitServing(std::chrono::milliseconds duration);
  void sendStatus();
  void shutdown();
  void refreshGauges();
  void probeLag();
  // The position PostgreSQL may be told is flushed: Kafka acknowledged (at-least-once) or committed (exactly-once)
  // everything before it.
  Lsn confirmedLsn() const;
  // Serves librdkafka's callbacks and notes a fatal producer error (a no-op before the producer exists).
  void pollKafka();
  // Status updates while the loop cannot read WAL (a blocking Kafka call): a broken connection is logged and left
  // for the read loop to notice.
  void keepAlive();
  int fatalExitStatus() const;

  // The slot across connections (RelaySlot.cpp; README "High availability").
  struct SlotLoss {
    std::string systemId;
    uint32_t timeline = 0;
    Lsn lastConfirmed;
    std::string time;  // when the checkpoint naming it was written; empty when unknown
    std::string how;   // "while this relay was streaming from it", ...
  };
  // The checkpoint's key in the progress topic: the transactional id in exactly-once mode, else
  // "outbox-relay.<database>.<slot>" (the exactly-once default, so either mode finds the other's record).
  std::string checkpointKey(const std::string& database) const;
  // The last record of `key` in the progress topic (nullopt: none, or `gaveUp` because a stop came first).
  std::optional<ProgressRecord> loadProgress(const std::string& key, bool& gaveUp);
  // The slot's confirmed position, creating the slot when it is new. A slot this relay streamed from before (this
  // process, or its checkpoint, says so) is lost: SlotLostError, or with source.on_slot_lost = "recreate" a gap
  // record and a new slot (`recreated`). nullopt: a stop came first.
  std::optional<Lsn> prepareSlot(const ServerIdentity& server, bool& recreated);
  void publishGapRecord(const SlotLoss& loss, const ServerIdentity& server);
  // At-least-once: the progress topic exists and is compacted before the first checkpoint goes to it. `required`:
  // Kafka unreachable is a ReplicationError (retried), else logged (the checkpoint waits).
  void ensureCheckpointTopic(bool required);
  // At-least-once: the confirmed position to the progress topic, at most once per status interval (at once after
  // a (re)connect or a re-created slot).
  void maybeWriteCheckpoint();
  // Exactly-once: empty when Kafka's committed progress names positions of this server's history; else what
  // happened and what to do (an asynchronous failover lost transactions the relay had published). `history`: the
  // server's timeline history file (ReplicationStream::timelineHistory).
  std::string eosProgressOffHistory(const ServerIdentity& server, const std::string& history) const;

  // Exactly-once mode (RelayExactlyOnce.cpp; README "Guarantees").
  bool exactlyOnce() const { return config_.kafka.exactlyOnce(); }
  // After the slot was taken: the transactional producer (created, init_transactions) and the committed progress,
  // once per process; then, at every (re)connect, replay from that progress. False when a stop came first.
  bool eosPrepare(const ServerIdentity& server);
  void eosBeginUnit(Lsn commitLsn);
  void eosEndUnit(Lsn endLsn);
  // For each outbox event of the open unit before it is published: true when Kafka has it already (skip it).
  bool eosSkipEvent();
  // Opens the Kafka transaction before the first record of it; false after a failure (the relay stops).
  bool eosEnsureOpen();
  void eosProduced(InflightTransactions::Sequence txn, uint64_t bytes, uint16_t labels);
  // The event being published was refused for its content in an aborted Kafka transaction: the error, and
  // whether it was refused alone (confirmed: dead-letter it) or in a batch (a suspect: send it alone).
  struct EosRejected {
    rd_kafka_resp_err_t error;
    bool confirmed;
  };
  std::optional<EosRejected> eosRejected() const;
  void eosOnDelivery(const KafkaPublisher::Delivery& delivery);
  // Whether the open Kafka transaction should be committed now (`idle`: the WAL stream had nothing more).
  bool eosShouldCommit(bool idle) const;
  // Writes the progress record and commits. False when it did not commit (then an abort, a failure or a stop
  // whose bound passed: the caller looks at eos_.needAbort / failedStatus_).
  bool eosCommit();
  // Aborts the open Kafka transaction (if any) and forgets what it held.
  void eosAbort(const std::string& why);
  void eosNeedAbort(std::string why);
  // The Kafka transaction's bookkeeping emptied (after a commit, or before a new one).
  void eosCloseTransaction();
  // And what was in flight with it (an abort purged its records).
  void eosForgetTransaction();
  // A fatal producer error: decided at the top of the loop (eosHandleFatal), never inside a librdkafka callback.
  void eosFatal(std::string why);
  // Fenced by another relay that holds the slot: exit 6. Fenced while this relay's own walsender still holds the
  // slot (the coordinator timed the transaction out over a long outage: librdkafka 2.0.2 reports that epoch bump
  // as fenced), or any other fatal error: a new producer, initialised afresh, replays from the committed progress.
  void eosHandleFatal();
  // Whether no other process streams from the slot: its active walsender is this relay's, or none is (asked on a
  // connection of its own).
  bool holdsSlot();
  // Forgets the producer and the progress (the slot was lost to another relay); without aborting anything.
  void eosDropProducer();

  struct KafkaTxnEvent {
    InflightTransactions::Sequence seq = 0;
    Lsn unit;
    uint64_t index = 0;
    uint64_t bytes = 0;
    uint16_t labels = 0;
  };
  struct ExactlyOnceState {
    bool initialized = false;  // init_transactions succeeded
    bool ready = false;        // and the committed progress was read
    std::string transactionalId;
    std::optional<ProgressRecord> committed;  // what Kafka has
    ProgressRecord identity;                  // slot, database, system id, timeline of this connection
    ReplayFilter filter;
    ProgressTracker tracker;
    uint64_t skip = 0;  // events of the open unit still to skip (ReplayFilter::kAll: all)
    Lsn unit;           // the open unit
    uint64_t eventIndex = 0;  // index within the unit of the event being published
    // The Kafka transaction being filled.
    bool open = false;
    std::chrono::steady_clock::time_point openedAt;
    uint64_t events = 0;
    uint64_t bytes = 0;
    uint64_t counterBase = 0;  // the opaque counter of its first record
    uint64_t nextCounter = 0;
    std::vector<KafkaTxnEvent> produced;  // by counter - counterBase
    std::vector<double> commitTimes;      // unix seconds of the PostgreSQL commit of each acknowledged event
    std::unordered_map<uint16_t, std::pair<uint64_t, uint64_t>> acknowledged;  // labels -> (events, bytes)
    bool needAbort = false;
    bool needReset = false;      // a fatal producer error: a new producer is needed
    int resetsWithoutCommit = 0;  // consecutive producer resets with no commit in between (bounded)
    bool abortForRejection = false;  // the replay dead-letters: no backoff
    std::string abortReason;
    // Events Kafka refused for their content in an aborted transaction, by (unit, index). The broker refuses a
    // whole batch (max.message.bytes counts the batch), so a refused event is first a suspect: the replay sends
    // it alone in a Kafka transaction of its own. Refused alone, it is confirmed, and the next replay
    // dead-letters it; taken alone, it was innocent.
    struct Rejection {
      rd_kafka_resp_err_t error = RD_KAFKA_RESP_ERR_NO_ERROR;
      bool confirmed = false;
    };
    std::map<std::pair<Lsn, uint64_t>, Rejection> rejected;
    bool isolating = false;  // the open Kafka transaction holds one suspect alone
    Lsn confirmed;
  };
  ExactlyOnceState eos_;

  const RelayConfig& config_;
  RelayMetrics& metrics_;
  std::unique_ptr<KafkaPublisher> publisher_;
  std::unique_ptr<ReplicationStream> stream_;
  pgoutput::PgOutputDecoder decoder_;
  OutboxRouter router_;
  InflightTransactions inflight_;
  // The transaction being received, and which of its events a lost connection made the server send again.
  TransactionResume resume_{inflight_};
  OutboxRecord record_;
  ServerWalProbe walProbe_;
  std::chrono::steady_clock::time_point lastLagProbe_;

  // Reconnect backoff: doubles per failed attempt, back to the minimum once streaming resumed.
  Backoff backoff_;
  int stopPipe_[2] = {-1, -1};
  bool stopping_ = false;
  // Set when the stop arrives: the one bound (shutdown_timeout_ms) for reading to a commit and draining Kafka.
  std::chrono::steady_clock::time_point stopDeadline_{};
  bool readingToCommit_ = false;
  std::optional<int> failedStatus_;
  bool replyRequested_ = false;
  Lsn lastSentStatus_;
  uint64_t kafkaReconnectsSeen_ = 0;
  std::chrono::steady_clock::time_point lastStatusAt_;
  std::chrono::steady_clock::time_point lastIgnoredLog_;
  std::chrono::steady_clock::time_point lastTraceDropLog_;
  uint64_t ignoredSinceLog_ = 0;
  std::unordered_map<uint64_t, DeadLetter> deadLetters_;             // by id, until acknowledged
  std::deque<std::pair<uint64_t, OwnedRecord>> pendingDeadLetters_;  // waiting for room in librdkafka's queue
  uint64_t nextDeadLetter_ = 1;
  std::chrono::steady_clock::time_point lastMessageIgnoredLog_;
  // The OIDs of the [[outbox]] tables, by entry, as first resolved by this process (they follow a rename), and
  // whether this process has streamed from the slot (a slot that disappears after that is never re-created).
  std::vector<uint32_t> outboxOids_;
  std::string outboxOidsSystem_;  // the system identifier of the server they were resolved on
  bool streamedFromSlot_ = false;
  bool connectedOnce_ = false;
  // The server of the last connection that streamed: a promotion shows as another timeline, another cluster as
  // another system identifier.
  std::optional<ServerIdentity> knownServer_;
  bool checkpointTopicReady_ = false;
  std::chrono::steady_clock::time_point lastCheckpointTopicTry_{};
  bool checkpointUrgent_ = true;
  Lsn lastCheckpointLsn_;
  std::chrono::steady_clock::time_point lastCheckpointAt_{};  // a connection to PostgreSQL succeeded since start: a refused one is retried then
  uint64_t messagesIgnoredSinceLog_ = 0;
};

}  // namespace outbox
