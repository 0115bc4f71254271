// The relay's exactly-once mode (README "Guarantees"): librdkafka's transactional producer, each Kafka
// transaction carrying whole PostgreSQL transactions (a larger one split) plus the relay's progress record, and a
// replay from the last committed progress after anything that aborts a Kafka transaction.
//
//   unit = a PostgreSQL transaction (by commit LSN) or a non-transactional message (by its LSN)
//   event = (unit, index within the unit)
//
// Kafka transaction lifecycle, all on the event loop's thread:
//   first record -> begin_transaction; records produced (their opaque: a counter into eos_.produced);
//   a bound (events, bytes, time) or an idle stream at a unit boundary -> the progress record (partition 0 of the
//   progress topic, key = transactional id) -> every delivery report served -> commit_transaction -> only then
//   the flush LSN may advance to the progress record's end_lsn.
//   A failed delivery, an abortable error or a lost PostgreSQL connection -> abort_transaction -> stream again
//   from the committed progress; ReplayFilter skips exactly what Kafka has.

#include <poll.h>

#include <algorithm>

#include "common/Log.h"
#include "common/PgConnection.h"
#include "common/UnixTime.h"
#include "src/ProgressStore.h"
#include "src/Relay.h"

namespace outbox {

namespace {
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
constexpr uint64_t kSequenceMask = (uint64_t{1} << 48) - 1;
constexpr int kTransactionCallMs = 500;  // each blocking librdkafka call; the loop keeps PostgreSQL served between

bool isAuthorizationError(rd_kafka_resp_err_t error) {
  return error == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
         error == RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED ||
         error == RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
}

std::string authorizationHint(const std::string& message, const std::string& transactionalId) {
  if (message.find("AUTHORIZATION") == std::string::npos) return "";
  return "; grant the relay's Kafka principal Write and Describe on TransactionalId \"" + transactionalId +
         "\" (and Write on the progress topic)";
}
}  // namespace

bool Relay::eosPrepare(const ServerIdentity& server) {
  eos_.identity.slot = config_.source.slot;
  eos_.identity.database = server.database;
  eos_.identity.systemId = server.systemId;
  eos_.identity.timeline = static_cast<uint32_t>(std::max(0, server.timeline));
  if (!publisher_) {
    eos_.transactionalId = config_.kafka.transactionalId.empty()
                               ? "outbox-relay." + server.database + "." + config_.source.slot
                               : config_.kafka.transactionalId;
    try {
      publisher_ = std::make_unique<KafkaPublisher>(
          config_.kafka, config_.limits, [this](const KafkaPublisher::Delivery& d) { onDelivery(d); },
          eos_.transactionalId);
    } catch (const std::exception& e) {
      throw SetupError(e.what());
    }
    log::info("kafka producer: {}", publisher_->effectiveProperties());
  }
  if (!eos_.initialized) {
    // Fences any earlier producer with this transactional id and aborts its open transaction, so every record of
    // the progress topic is decided before it is read.
    auto lastLog = Clock::now() - std::chrono::hours(1);
    while (true) {
      auto result = publisher_->initTransactions(5000);
      if (result.ok()) break;
      if (result.kind == KafkaPublisher::TransactionResult::Kind::Fatal) {
        throw SetupError("kafka: " + result.message + authorizationHint(result.message, eos_.transactionalId));
      }
      if (Clock::now() - lastLog >= std::chrono::seconds(10)) {
        lastLog = Clock::now();
        log::warn("exactly-once: waiting for Kafka's transaction coordinator: {}", result.message);
      }
      keepAlive();
      pollKafka();
      if (stopRequested() || failedStatus_) return false;
    }
    eos_.initialized = true;
    metrics_.transactionalProducerReady.Set(1);
    log::info("exactly-once: transactional producer ready (transactional.id \"{}\")", eos_.transactionalId);
  }
  if (!eos_.ready) {
    bool gaveUp = false;
    std::optional<ProgressRecord> record = loadProgress(eos_.transactionalId, gaveUp);
    if (gaveUp) return false;
    if (record) {
      if (record->slot != eos_.identity.slot || record->database != eos_.identity.database) {
        throw SetupError(fmt::format(
            "kafka: the progress record of transactional id \"{}\" names slot \"{}\" of database \"{}\", but this "
            "relay streams slot \"{}\" of database \"{}\": two relays share one transactional id. Give each its own "
            "kafka.transactional_id",
            eos_.transactionalId, record->slot, record->database, eos_.identity.slot, eos_.identity.database));
      }
      if (record->systemId != eos_.identity.systemId) {
        throw SetupError(fmt::format(
            "kafka: the progress record of transactional id \"{}\" was written against PostgreSQL system {}, but "
            "this server is system {}: its WAL positions mean nothing here. If the outbox moved to another cluster "
            "on purpose, delete the record (a tombstone: key \"{}\", null value, in topic \"{}\") and the relay "
            "starts from its slot's position",
            eos_.transactionalId, record->systemId, eos_.identity.systemId, eos_.transactionalId,
            config_.kafka.progressTopic));
      }
      if (record->partial && record->commitLsn == Lsn()) {
        log::info("exactly-once: Kafka has the first {} events of the transaction committing at {}: resuming after "
                  "them",
                  record->partial->events, record->partial->commitLsn.toString());
      } else if (record->partial) {
        log::info(
            "exactly-once: Kafka has everything up to the transaction committing at {} (end {}) and the first {} "
            "events of the one committing at {}: resuming after them",
            record->commitLsn.toString(), record->endLsn.toString(), record->partial->events,
            record->partial->commitLsn.toString());
      } else {
        log::info("exactly-once: Kafka has everything up to the transaction committing at {} (end {}): resuming "
                  "after it",
                  record->commitLsn.toString(), record->endLsn.toString());
      }
    } else {
      log::info("exactly-once: no progress record in \"{}\" for \"{}\": starting from the slot's position",
                config_.kafka.progressTopic, eos_.transactionalId);
    }
    eos_.committed = record;
    eos_.ready = true;
  }
  eos_.filter.reset(eos_.committed);
  ProgressRecord base = eos_.committed.value_or(eos_.identity);
  base.slot = eos_.identity.slot;
  base.database = eos_.identity.database;
  base.systemId = eos_.identity.systemId;
  base.timeline = eos_.identity.timeline;
  eos_.tracker.reset(base);
  eos_.skip = 0;
  return true;
}

void Relay::eosBeginUnit(Lsn commitLsn) {
  uint64_t skip = eos_.filter.beginUnit(commitLsn);
  eos_.skip = skip;
  eos_.unit = commitLsn;
  eos_.tracker.beginUnit(commitLsn, skip == ReplayFilter::kAll ? 0 : skip);
  if (skip > 0 && skip != ReplayFilter::kAll) {
    log::info("exactly-once: the transaction committing at {} was split over Kafka transactions; its first {} "
              "events are in Kafka already, publishing the rest",
              commitLsn.toString(), skip);
  }
}

void Relay::eosEndUnit(Lsn endLsn) {
  eos_.tracker.endUnit(endLsn);
  eos_.skip = 0;
  // Nothing of it waits in an open Kafka transaction: confirmable now.
  if (!eos_.open && endLsn > eos_.confirmed) eos_.confirmed = endLsn;
}

bool Relay::eosSkipEvent() {
  if (eos_.skip > 0) {
    if (eos_.skip != ReplayFilter::kAll) --eos_.skip;
    metrics_.replayedEventsSkipped.Increment();
    return true;
  }
  eos_.eventIndex = eos_.tracker.nextIndex();
  return false;
}

bool Relay::eosEnsureOpen() {
  if (eos_.open) return true;
  if (eos_.needReset) return false;
  auto result = publisher_->beginTransaction();
  if (!result.ok()) {
    eosFatal("kafka: " + result.message);
    return false;
  }
  eosCloseTransaction();
  eos_.open = true;
  eos_.openedAt = Clock::now();
  return true;
}

void Relay::eosProduced(InflightTransactions::Sequence txn, uint64_t bytes, uint16_t labels) {
  eos_.produced.push_back(KafkaTxnEvent{txn, eos_.unit, eos_.eventIndex, bytes, labels});
  eos_.tracker.eventIncluded();
  ++eos_.nextCounter;
  ++eos_.events;
  eos_.bytes += bytes;
}

std::optional<Relay::EosRejected> Relay::eosRejected() const {
  auto it = eos_.rejected.find({eos_.unit, eos_.eventIndex});
  if (it == eos_.rejected.end()) return std::nullopt;
  return EosRejected{it->second.error, it->second.confirmed};
}

void Relay::eosFatal(std::string why) {
  if (eos_.needReset) return;
  eos_.needReset = true;
  // Every wait of the transaction's path gives up on needAbort; no librdkafka transaction call follows.
  eos_.needAbort = true;
  eos_.abortReason = std::move(why);
}

bool Relay::holdsSlot() {
  if (!stream_ || stream_->backendPid() == 0) return false;
  PGconn* conn = connectPostgres(config_.source.conninfo, config_.source.password, {},
                                 defaultsNotSetBy(config_.source.conninfo, networkTimeoutDefaults()));
  std::unique_ptr<PGconn, void (*)(PGconn*)> owned(conn, PQfinish);
  if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) return false;
  const char* values[1] = {config_.source.slot.c_str()};
  PgResult result(PQexecParams(conn, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", 1, nullptr,
                               values, nullptr, nullptr, 0));
  if (PQresultStatus(result.get()) != PGRES_TUPLES_OK || PQntuples(result.get()) != 1) return false;
  // Nobody streams from it (this relay's connection is gone too): nobody else took over either.
  if (PQgetisnull(result.get(), 0, 0)) return true;
  return std::atoi(PQgetvalue(result.get(), 0, 0)) == stream_->backendPid();
}

void Relay::eosHandleFatal() {
  if (publisher_ && publisher_->fenced() && !holdsSlot()) {
    fail(kExitFenced, "kafka: fenced: another relay with transactional.id \"" + eos_.transactionalId +
                          "\" took over (" + eos_.abortReason +
                          "); stopping without confirming anything it did not commit");
    return;
  }
  log::warn("exactly-once: {}{}; replacing the transactional producer and replaying from the last committed progress",
            eos_.abortReason,
            publisher_ && publisher_->fenced()
                ? " (this relay's walsender still holds the slot: the coordinator expired the transaction)"
                : "");
}

void Relay::eosNeedAbort(std::string why) {
  if (eos_.needAbort) return;
  eos_.needAbort = true;
  eos_.abortReason = std::move(why);
}

void Relay::eosOnDelivery(const KafkaPublisher::Delivery& delivery) {
  uint64_t counter = delivery.opaque & kSequenceMask;
  // A record of an aborted Kafka transaction (purged by the abort): nothing to account for any more.
  if (!eos_.open || counter < eos_.counterBase || counter - eos_.counterBase >= eos_.produced.size()) return;
  const KafkaTxnEvent& event = eos_.produced[counter - eos_.counterBase];
  if (delivery.error != RD_KAFKA_RESP_ERR_NO_ERROR) {
    metrics_.publishErrors(rd_kafka_err2name(delivery.error)).Increment();
    if (KafkaPublisher::contentRejection(delivery.error) && delivery.topic != config_.deadLetterTopic) {
      // librdkafka makes the whole transaction abortable. The replay sends this event's dead letter in its place,
      // in the same transaction as the events around it.
      auto& rejection = eos_.rejected[{event.unit, event.index}];
      rejection.error = delivery.error;
      // Refused in a transaction of its own: its own fault. Else perhaps only its batch's.
      rejection.confirmed = eos_.isolating;
      log::warn("exactly-once: Kafka refused event {} of the transaction committing at {} (topic \"{}\"{}): {}; "
                "aborting the Kafka transaction: the replay {}",
                event.index, event.unit.toString(), delivery.topic, eos_.isolating ? ", sent alone" : "",
                rd_kafka_err2str(delivery.error),
                eos_.isolating ? "dead-letters it" : "sends it alone to tell whether it or its batch was refused");
      eos_.abortForRejection = true;
      eosNeedAbort("Kafka refused a record for its content");
      return;
    }
    if (isAuthorizationError(delivery.error)) {
      // Not cured by a replay: stop as at-least-once does, confirming nothing of this transaction.
      fail(kExitDeliveryFailed, std::string("kafka: an event to topic \"") + std::string(delivery.topic) +
                                    "\" failed permanently: " + rd_kafka_err2str(delivery.error) +
                                    "; stopping without confirming it (it is re-sent after a restart)");
      return;
    }
    if (KafkaPublisher::contentRejection(delivery.error)) {
      fail(kExitDeliveryFailed, std::string("kafka: the dead-letter topic \"") + std::string(delivery.topic) +
                                    "\" refused a record: " + rd_kafka_err2str(delivery.error) +
                                    "; stopping without confirming it");
      return;
    }
    eosNeedAbort(std::string("an event to topic \"") + std::string(delivery.topic) +
                 "\" failed: " + rd_kafka_err2str(delivery.error) + " (" + rd_kafka_err2name(delivery.error) + ")");
    return;
  }
  if (auto commitTime = inflight_.acknowledge(event.seq, event.bytes)) {
    eos_.commitTimes.push_back(static_cast<double>(commitTime->unixMicros()) / 1e6);
  }
  auto& [events, bytes] = eos_.acknowledged[event.labels];
  ++events;
  bytes += event.bytes;
}

bool Relay::eosShouldCommit(bool idle) const {
  if (!eos_.open) return false;
  if (eos_.events >= config_.kafka.transactionMaxEvents || eos_.bytes >= config_.kafka.transactionMaxBytes) {
    return true;
  }
  if (Clock::now() - eos_.openedAt >= milliseconds(config_.kafka.transactionMaxMs)) return true;
  // Nothing more to read at a transaction boundary: commit now rather than wait (latency), while the server
  // decodes what comes next.
  return idle && !resume_.inTransaction();
}

bool Relay::eosCommit() {
  if (!eos_.open) return true;
  auto pastStopBound = [this] { return stopping_ && Clock::now() >= stopDeadline_; };
  auto serve = [this](int waitMs) {
    pollfd fd{publisher_->wakeupFd(), POLLIN, 0};
    ::poll(&fd, 1, waitMs);
    pollKafka();
    keepAlive();
    stopRequested();
  };

  // A dead letter still waiting for room in librdkafka's queue stands for an event the progress counts: it goes
  // into this transaction first.
  while (!pendingDeadLetters_.empty()) {
    retryPendingDeadLetters();
    if (pendingDeadLetters_.empty()) break;
    serve(10);
    if (failedStatus_ || eos_.needAbort || pastStopBound()) return false;
  }
  ProgressRecord progress = eos_.tracker.current();
  std::string value = progress.toJson();
  OutboxRecord record;
  record.topic = config_.kafka.progressTopic;
  record.key = eos_.transactionalId;
  record.value = value;
  while (true) {
    std::string error;
    rd_kafka_resp_err_t code = RD_KAFKA_RESP_ERR_NO_ERROR;
    auto status = publisher_->produceToPartition(record, ProgressStore::kPartition, kProgressOpaque,
                                                 error, code);
    if (status == KafkaPublisher::ProduceStatus::Queued) break;
    if (status == KafkaPublisher::ProduceStatus::Failed) {
      eosNeedAbort("cannot write the progress record: " + error);
      return false;
    }
    serve(10);
    if (failedStatus_ || eos_.needAbort || pastStopBound()) return false;
  }

  // Every record of the transaction acknowledged (or refused: then abort instead) before the commit, so the
  // delivery reports run here and not inside commit_transaction's flush.
  while (publisher_->queueLength() > 0) {
    serve(10);
    if (failedStatus_ || eos_.needAbort || pastStopBound()) return false;
  }
  if (eos_.needAbort) return false;

  auto lastLog = Clock::now();
  while (true) {
    auto result = publisher_->commitTransaction(kTransactionCallMs);
    if (result.ok()) break;
    using Kind = KafkaPublisher::TransactionResult::Kind;
    if (result.kind == Kind::Abortable) {
      eosNeedAbort(result.message);
      return false;
    }
    if (result.kind == Kind::Fatal) {
      eosFatal("kafka: " + result.message);
      return false;
    }
    // Retriable (the coordinator is unreachable or slow): waited out, PostgreSQL kept served.
    if (Clock::now() - lastLog >= std::chrono::seconds(10)) {
      lastLog = Clock::now();
      log::warn("exactly-once: committing the Kafka transaction waits for the coordinator: {}", result.message);
    }
    serve(0);
    if (failedStatus_ || pastStopBound()) return false;
  }

  metrics_.kafkaTransactionsCommitted.Increment();
  eos_.resetsWithoutCommit = 0;
  double now = unixSecondsNow();
  for (double committedAt : eos_.commitTimes) metrics_.commitToAckSeconds.Observe(std::max(0.0, now - committedAt));
  for (const auto& [labels, counts] : eos_.acknowledged) {
    const auto& series = metrics_.labels(labels);
    series.published->Increment(static_cast<double>(counts.first));
    series.bytes->Increment(static_cast<double>(counts.second));
  }
  // Only now may PostgreSQL hear of it: the flush LSN follows the committed progress.
  if (progress.endLsn > eos_.confirmed) eos_.confirmed = progress.endLsn;
  if (eos_.isolating && !eos_.produced.empty()) {
    // The suspect went through alone: it was its batch, not the event.
    eos_.rejected.erase({eos_.produced.front().unit, eos_.produced.front().index});
  }
  for (auto it = eos_.rejected.begin(); it != eos_.rejected.end();) {
    it = it->first.first <= progress.commitLsn ? eos_.rejected.erase(it) : std::next(it);
  }
  eos_.committed = std::move(progress);
  eosCloseTransaction();
  return true;
}

void Relay::eosDropProducer() {
  if (!publisher_) return;
  if (eos_.open) {
    log::warn("exactly-once: the slot is held by another relay: dropping the open Kafka transaction of {} records "
              "(aborted by the relay that initialised the transactional id after this one)",
              eos_.events);
  }
  publisher_.reset();
  eos_.initialized = false;
  eos_.ready = false;
  eos_.committed.reset();
  eos_.rejected.clear();
  eosForgetTransaction();
  metrics_.transactionalProducerReady.Set(0);
}

void Relay::eosCloseTransaction() {
  eos_.open = false;
  eos_.isolating = false;
  eos_.events = 0;
  eos_.bytes = 0;
  eos_.produced.clear();
  eos_.commitTimes.clear();
  eos_.acknowledged.clear();
  eos_.counterBase = eos_.nextCounter;  // a late report of one of its records matches nothing
}

void Relay::eosForgetTransaction() {
  eosCloseTransaction();
  eos_.needAbort = false;
  eos_.abortReason.clear();
  deadLetters_.clear();
  pendingDeadLetters_.clear();
  inflight_.clear();
}

void Relay::eosAbort(const std::string& why) {
  if (eos_.open) {
    while (true) {
      auto result = publisher_->abortTransaction(kTransactionCallMs);
      if (result.ok()) break;
      if (result.kind != KafkaPublisher::TransactionResult::Kind::Retriable) {
        eosFatal("kafka: " + result.message);
        return;
      }
      keepAlive();
      pollKafka();
      if (stopRequested() && Clock::now() >= stopDeadline_) return;
      if (failedStatus_) return;
    }
    metrics_.kafkaTransactionsAborted.Increment();
    log::warn("exactly-once: aborted the Kafka transaction of {} records: {}", eos_.events, why);
  }
  eosForgetTransaction();
}

}  // namespace outbox
