#include "src/Sink.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "common/Backoff.h"
#include "common/KafkaClientConfig.h"
#include "common/KafkaHealth.h"
#include "common/Log.h"
#include "common/UnixTime.h"

namespace outbox::sink {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

struct PartitionList {
  rd_kafka_topic_partition_list_t* list;
  explicit PartitionList(int size) : list(rd_kafka_topic_partition_list_new(size)) {}
  ~PartitionList() { rd_kafka_topic_partition_list_destroy(list); }
  void add(const TopicPartition& tp, int64_t offset) {
    rd_kafka_topic_partition_list_add(list, tp.first.c_str(), tp.second)->offset = offset;
  }
};

Backoff databaseBackoff(const SinkConfig& config) {
  return Backoff(config.database.reconnectBackoffMinMs, config.database.reconnectBackoffMaxMs);
}

std::string describe(const TopicPartition& tp) { return fmt::format("{} [{}]", tp.first, tp.second); }

// The views of one Kafka message that the projections read.
SinkEvent toEvent(rd_kafka_message_t* m) {
  SinkEvent e;
  e.topic = rd_kafka_topic_name(m->rkt);
  e.partition = m->partition;
  e.offset = m->offset;
  rd_kafka_timestamp_type_t type;
  e.timestampMs = rd_kafka_message_timestamp(m, &type);
  if (m->key != nullptr) e.key = std::string_view(static_cast<const char*>(m->key), m->key_len);
  if (m->payload != nullptr) e.payload = std::string_view(static_cast<const char*>(m->payload), m->len);
  rd_kafka_headers_t* headers = nullptr;
  if (rd_kafka_message_headers(m, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    const char* name;
    const void* value;
    size_t size;
    for (size_t i = 0; rd_kafka_header_get_all(headers, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i) {
      e.headers.emplace_back(
          name, value != nullptr ? std::string_view(static_cast<const char*>(value), size) : std::string_view());
    }
  }
  return e;
}

}  // namespace

Sink::Sink(const SinkConfig& config, SinkMetrics& metrics)
    : config_(config), metrics_(metrics), projections_(config.projections), applier_(config, projections_) {}

Sink::~Sink() {
  discardPending();
  if (consumer_ != nullptr) rd_kafka_destroy(consumer_);
}

void Sink::fail(int status, const std::string& message) {
  log::error("{}", message);
  if (!failed_) exitStatus_ = status;
  failed_ = true;
  stop_.store(true);
}

void Sink::databaseError(const std::string& sqlState) {
  metrics_.dbErrors(sqlStateClass(sqlState)).Increment();
  metrics_.databaseWaiting.Set(1);
}

void Sink::sleepWhileRunning(milliseconds duration) {
  auto until = Clock::now() + duration;
  while (!stop_.load() && Clock::now() < until) {
    metrics_.lastLoopTimestamp.Set(unixSecondsNow());
    std::this_thread::sleep_for(std::min<Clock::duration>(milliseconds(50), until - Clock::now()));
  }
}

bool Sink::connectDatabase() {
  Backoff backoff = databaseBackoff(config_);
  while (!stop_.load()) {
    std::string error;
    BatchApplier::ConnectResult result = applier_.connect(error);
    if (result == BatchApplier::ConnectResult::Ok) {
      metrics_.databaseConnected.Set(1);
      return true;
    }
    metrics_.databaseConnected.Set(0);
    if (result == BatchApplier::ConnectResult::Fatal) {
      fail(kExitSetup, "read-model database: " + error);
      return false;
    }
    databaseError(applier_.lastSqlState());
    milliseconds wait = backoff.next();
    log::warn("read-model database unavailable, retrying in {} ms: {}", wait.count(), error);
    sleepWhileRunning(wait);
  }
  return false;
}

int Sink::run() {
  if (!connectDatabase()) return failed_ ? exitStatus_ : kExitOk;
  log::info("connected to the read-model database; {} projection(s) prepared", projections_.all().size());

  try {
    if (config_.onError == OnError::DeadLetter) deadLetters_ = std::make_unique<DeadLetterPublisher>(config_);
    KafkaClientConfig conf;
    conf.set("group.id", config_.kafka.groupId);
    conf.set("client.id", "outbox-sink");
    conf.set("enable.auto.commit", "false");
    conf.set("enable.auto.offset.store", "false");
    conf.set("auto.offset.reset", config_.kafka.initialOffset);
    conf.set("enable.partition.eof", "false");
    // Broker connection states arrive with the statistics: one way readiness learns Kafka works again.
    conf.set("statistics.interval.ms", "1000");
    conf.setUser(config_.kafka.bootstrapServers, config_.kafka.properties, config_.kafka.secretValues);
    rd_kafka_conf_set_opaque(conf.native(), this);
    rd_kafka_conf_set_rebalance_cb(conf.native(), &Sink::rebalanceCallback);
    rd_kafka_conf_set_error_cb(conf.native(), &Sink::errorCallback);
    rd_kafka_conf_set_stats_cb(conf.native(), &Sink::statsCallback);
    consumer_ = conf.create(RD_KAFKA_CONSUMER, "the Kafka consumer");
    log::info("kafka consumer: {}", conf.describe());
  } catch (const std::exception& e) {
    log::error("{}", e.what());
    return kExitSetup;
  }
  rd_kafka_poll_set_consumer(consumer_);
  std::vector<std::string> topics = config_.subscription();
  {
    PartitionList list(static_cast<int>(topics.size()));
    for (const std::string& t : topics) rd_kafka_topic_partition_list_add(list.list, t.c_str(), RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t rc = rd_kafka_subscribe(consumer_, list.list);
    if (rc != RD_KAFKA_RESP_ERR_NO_ERROR) {
      log::error("cannot subscribe to {}: {}", fmt::join(topics, ", "), rd_kafka_err2str(rc));
      return kExitSetup;
    }
  }
  log::info("consumer group {} subscribed to {}", config_.kafka.groupId, fmt::join(topics, ", "));

  nextLag_ = Clock::now();
  nextPrune_ = Clock::now() + milliseconds(config_.deduplication.pruneIntervalMs);
  while (!stop_.load()) {
    metrics_.lastLoopTimestamp.Set(unixSecondsNow());
    if (rewindNeeded_) {
      rewind();
      continue;
    }
    int timeoutMs = 200;
    if (!pending_.empty()) {
      auto left = std::chrono::duration_cast<milliseconds>(batchDeadline_ - Clock::now()).count();
      timeoutMs = static_cast<int>(std::clamp<int64_t>(left, 0, 200));
    }
    rd_kafka_message_t* message = rd_kafka_consumer_poll(consumer_, timeoutMs);
    if (message != nullptr) handleMessage(message);
    if (!pending_.empty() && !rewindNeeded_ &&
        (pending_.size() >= static_cast<size_t>(config_.batch.maxEvents) || Clock::now() >= batchDeadline_)) {
      flushBatch();
    }
    if (deadLetters_) deadLetters_->poll();
    if (Clock::now() >= nextLag_) updateLag();
    maybePrune();
  }

  // Graceful stop: finish the batch, commit it, leave the group (the revoke callback runs inside close).
  if (!failed_ && !rewindNeeded_) flushBatch();
  discardPending();
  log::info("leaving consumer group {}", config_.kafka.groupId);
  rd_kafka_resp_err_t rc = rd_kafka_consumer_close(consumer_);
  if (rc != RD_KAFKA_RESP_ERR_NO_ERROR) log::warn("closing the consumer: {}", rd_kafka_err2str(rc));
  if (deadLetters_) {
    std::string error;
    if (!deadLetters_->flush(config_.shutdownTimeoutMs, error)) log::warn("{}", error);
  }
  log::info("stopped");
  return exitStatus_;
}

void Sink::handleMessage(rd_kafka_message_t* message) {
  if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    if (message->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      log::warn("kafka: {}{}", rd_kafka_message_errstr(message),
                message->rkt != nullptr ? fmt::format(" ({})", rd_kafka_topic_name(message->rkt)) : std::string());
    }
    if (message->err == RD_KAFKA_RESP_ERR__FATAL) kafkaFatal();
    rd_kafka_message_destroy(message);
    return;
  }
  kafkaWorks("a record fetched");
  TopicPartition tp(rd_kafka_topic_name(message->rkt), message->partition);
  auto position = position_.find(tp);
  if (rewindNeeded_ || assigned_.count(tp) == 0 ||
      (position != position_.end() && message->offset < position->second)) {
    // Not ours any more, or from before a seek: the database says where this partition goes on.
    rd_kafka_message_destroy(message);
    return;
  }
  position_[tp] = message->offset + 1;
  if (pending_.empty()) batchDeadline_ = Clock::now() + milliseconds(config_.batch.maxWaitMs);
  pending_.push_back(message);
  metrics_.consumed.Increment();
}

void Sink::discardPending() {
  for (rd_kafka_message_t* m : pending_) rd_kafka_message_destroy(m);
  pending_.clear();
}

void Sink::flushBatch() {
  if (pending_.empty()) return;
  auto started = Clock::now();
  std::vector<SinkEvent> events;
  events.reserve(pending_.size());
  std::map<TopicPartition, int64_t> next;
  for (rd_kafka_message_t* m : pending_) {
    events.push_back(toEvent(m));
    int64_t& n = next[TopicPartition(events.back().topic, m->partition)];
    n = std::max(n, m->offset + 1);
  }

  StagedBatch batch = applier_.stage(events, stored_, next);
  std::string error;
  bool committed = false;
  switch (batch.status) {
    case StagedBatch::Status::Staged: {
      bool deadLettered = true;
      for (const PoisonEvent& p : batch.poison) {
        const SinkEvent& e = events[p.index];
        log::warn("dead-lettering {} [{}] offset {}: {}", e.topic, e.partition, e.offset, p.error);
        if (!deadLetters_->publish(e, p.error, error)) {
          deadLettered = false;
          break;
        }
      }
      if (deadLettered && !batch.poison.empty()) {
        deadLettered = deadLetters_->flush(config_.deadLetterFlushTimeoutMs, error);
      }
      if (!deadLettered) {
        applier_.rollback();
        log::error("{}; rolling back the batch and retrying", error);
        break;
      }
      committed = applier_.commit(error);
      if (!committed) {
        ++transientFailures_;
        metrics_.dbRetries.Increment();
        databaseError(applier_.lastSqlState());
        log::warn("read-model database: {}; rewinding to the stored offsets", error);
        applier_.disconnect();
        metrics_.databaseConnected.Set(0);
      }
      break;
    }
    case StagedBatch::Status::Transient:
      // Not the events' fault (see classifySqlState): nothing is dead-lettered, the batch is retried as it was.
      ++transientFailures_;
      metrics_.dbRetries.Increment();
      databaseError(batch.sqlState);
      log::warn("read-model database: {}; rolling back, rewinding to the stored offsets and retrying", batch.error);
      applier_.disconnect();
      metrics_.databaseConnected.Set(0);
      break;
    case StagedBatch::Status::Conflict:
      metrics_.offsetConflicts.Increment();
      log::warn("{}; rewinding to the stored offsets", batch.error);
      break;
    case StagedBatch::Status::Poison: {
      const SinkEvent& e = events[batch.poison.front().index];
      fail(kExitPoisonEvent, fmt::format("cannot apply {} [{}] offset {}: {}; on_error = \"stop\": stopping without "
                                         "committing it",
                                         e.topic, e.partition, e.offset, batch.error));
      break;
    }
    case StagedBatch::Status::Fatal:
      fail(kExitFailure, "read-model database: " + batch.error);
      break;
  }

  if (!committed) {
    discardPending();
    rewindNeeded_ = true;
    return;
  }

  PartitionList commitList(static_cast<int>(next.size()));
  for (const auto& [tp, offset] : next) {
    stored_[tp] = offset;
    commitList.add(tp, offset);
  }
  // Only for lag tools: the database is the source of truth, so a lost Kafka commit is harmless.
  rd_kafka_commit(consumer_, commitList.list, 1);

  transientFailures_ = 0;
  metrics_.databaseWaiting.Set(0);
  for (const auto& entry : next) updateLag(entry.first);
  metrics_.batches.Increment();
  metrics_.batchSeconds.Observe(std::chrono::duration<double>(Clock::now() - started).count());
  for (size_t i = 0; i < batch.appliedByProjection.size(); ++i) {
    if (batch.appliedByProjection[i] > 0) {
      metrics_.applied(projections_.at(i).name()).Increment(static_cast<double>(batch.appliedByProjection[i]));
    }
  }
  if (batch.duplicates > 0) metrics_.skippedDuplicate.Increment(static_cast<double>(batch.duplicates));
  if (batch.noProjection > 0) metrics_.skippedNoProjection.Increment(static_cast<double>(batch.noProjection));
  if (!batch.poison.empty()) metrics_.deadLettered.Increment(static_cast<double>(batch.poison.size()));
  log::debug("committed a batch of {} event(s)", pending_.size());
  discardPending();
}

void Sink::rewind() {
  discardPending();
  Backoff backoff = databaseBackoff(config_);
  if (transientFailures_ > 1) {
    // The first retry is immediate; a failure that repeats (serialization failures, deadlocks under contention)
    // waits min, 2 min, 4 min ... up to the maximum.
    milliseconds wait = backoff.afterFailures(transientFailures_ - 1);
    log::info("retrying in {} ms ({} transient failures in a row)", wait.count(), transientFailures_);
    sleepWhileRunning(wait);
  }
  while (!stop_.load()) {
    if (!applier_.connected()) {
      if (!connectDatabase()) return;
      log::info("reconnected to the read-model database");
    }
    std::vector<TopicPartition> partitions(assigned_.begin(), assigned_.end());
    std::string error;
    std::optional<StoredOffsets> stored = applier_.storedOffsets(partitions, error);
    if (!stored) {
      databaseError(applier_.lastSqlState());
      milliseconds wait = backoff.next();
      log::warn("cannot read stored offsets, retrying in {} ms: {}", wait.count(), error);
      applier_.disconnect();
      metrics_.databaseConnected.Set(0);
      sleepWhileRunning(wait);
      continue;
    }
    if (!partitions.empty()) {
      PartitionList list(static_cast<int>(partitions.size()));
      for (const auto& [tp, offset] : *stored) {
        int64_t logical = config_.kafka.initialOffset == "latest" ? RD_KAFKA_OFFSET_END : RD_KAFKA_OFFSET_BEGINNING;
        list.add(tp, offset ? *offset : logical);
        stored_[tp] = offset;
        position_[tp] = offset ? *offset : -1;
      }
      rd_kafka_error_t* seekError = rd_kafka_seek_partitions(consumer_, list.list, 10000);
      if (seekError != nullptr) {
        log::warn("kafka: seek: {}", rd_kafka_error_string(seekError));
        rd_kafka_error_destroy(seekError);
      }
      for (int i = 0; i < list.list->cnt; ++i) {
        const rd_kafka_topic_partition_t& p = list.list->elems[i];
        if (p.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
          log::warn("kafka: seek {} [{}]: {}", p.topic, p.partition, rd_kafka_err2str(p.err));
        }
      }
      log::info("rewound {} partition(s) to the offsets stored in the database", partitions.size());
    }
    if (partitions.empty()) metrics_.databaseWaiting.Set(0);  // no batch left to retry
    rewindNeeded_ = false;
    return;
  }
}

void Sink::kafkaFatal() {
  if (kafkaFatalReported_) return;
  kafkaFatalReported_ = true;
  char reason[512];
  rd_kafka_fatal_error(consumer_, reason, sizeof reason);
  fail(kExitFailure, std::string("kafka: fatal consumer error: ") + reason);
}

void Sink::kafkaUnavailable(rd_kafka_resp_err_t err) {
  // A refused authentication or TLS handshake is the cause the operator must see: the broker connection it breaks and
  // "all brokers down" that follow do not replace it in /readyz.
  auto refusal = [](int e) { return e == RD_KAFKA_RESP_ERR__AUTHENTICATION || e == RD_KAFKA_RESP_ERR__SSL; };
  if (refusal(err) || !refusal(metrics_.kafkaError.load())) metrics_.kafkaError.store(err);
  if (metrics_.kafkaUnavailable.Value() >= 1) return;
  metrics_.kafkaUnavailableSince.store(static_cast<int64_t>(unixSecondsNow()));
  metrics_.kafkaUnavailable.Set(1);
}

void Sink::kafkaWorks(const char* evidence) {
  if (metrics_.kafkaUnavailable.Value() < 1) return;
  log::info("kafka: the consumer works again ({}) after {} s", evidence,
            static_cast<int64_t>(unixSecondsNow()) - metrics_.kafkaUnavailableSince.load());
  metrics_.kafkaUnavailable.Set(0);
  metrics_.kafkaError.store(RD_KAFKA_RESP_ERR_NO_ERROR);
}

void Sink::errorCallback(rd_kafka_t* rk, int err, const char* reason, void* opaque) {
  // With an error_cb, librdkafka hands its client-level errors (broker connections, authentication, all brokers
  // down) here instead of logging them; consumer errors, the fatal one included (librdkafka 2.0.2 raises it on the
  // consumer group's queue), still come back from rd_kafka_consumer_poll() as messages: handleMessage().
  auto* self = static_cast<Sink*>(opaque);
  auto code = static_cast<rd_kafka_resp_err_t>(err);
  if (code == RD_KAFKA_RESP_ERR__FATAL) {
    self->kafkaFatal();
    return;
  }
  if (code == RD_KAFKA_RESP_ERR__AUTHENTICATION || code == RD_KAFKA_RESP_ERR__SSL) {
    // Configuration, not an outage: librdkafka retries, but only the operator can fix it.
    log::error("kafka: {} ({}); retrying", reason, rd_kafka_err2name(code));
  } else {
    log::warn("kafka: {} ({})", reason, rd_kafka_err2name(code));
  }
  if (isKafkaConnectivityError(code)) self->kafkaUnavailable(code);
  logScramDefectHintOnce(rk, code);
}

int Sink::statsCallback(rd_kafka_t*, char* json, size_t length, void* opaque) {
  // A snapshot served after an error was taken after it (both come through the same queue, in order). Parsed only
  // while it can change something.
  auto* self = static_cast<Sink*>(opaque);
  if (self->metrics_.kafkaUnavailable.Value() < 1) return 0;
  std::optional<bool> up = kafkaStatsShowBrokerUp(json, length);
  if (up && *up) self->kafkaWorks("a broker up in librdkafka's statistics");
  return 0;  // librdkafka frees the JSON
}

void Sink::rebalanceCallback(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* partitions,
                             void* opaque) {
  auto* self = static_cast<Sink*>(opaque);
  bool cooperative = std::strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    self->onAssign(partitions);
    if (cooperative) {
      rd_kafka_error_t* e = rd_kafka_incremental_assign(rk, partitions);
      if (e != nullptr) {
        log::error("kafka: incremental assign: {}", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
      }
    } else {
      rd_kafka_assign(rk, partitions);
    }
  } else {
    self->onRevoke(partitions);
    if (cooperative) {
      rd_kafka_error_t* e = rd_kafka_incremental_unassign(rk, partitions);
      if (e != nullptr) rd_kafka_error_destroy(e);
    } else {
      rd_kafka_assign(rk, nullptr);
    }
  }
}

void Sink::onAssign(rd_kafka_topic_partition_list_t* partitions) {
  kafkaWorks("partitions assigned");
  std::vector<TopicPartition> tps;
  for (int i = 0; i < partitions->cnt; ++i)
    tps.emplace_back(partitions->elems[i].topic, partitions->elems[i].partition);
  // The positions come from the database. Without it nothing can be applied anyway, so wait for it here (the
  // consumer's heartbeats go on in librdkafka's threads; max.poll.interval.ms bounds the wait).
  std::optional<StoredOffsets> stored;
  Backoff backoff = databaseBackoff(config_);
  while (!stop_.load()) {
    std::string error;
    if (!applier_.connected()) {
      if (applier_.connect(error) != BatchApplier::ConnectResult::Ok) {
        databaseError(applier_.lastSqlState());
        milliseconds wait = backoff.next();
        log::warn("assignment: read-model database unavailable, retrying in {} ms: {}", wait.count(), error);
        metrics_.databaseConnected.Set(0);
        sleepWhileRunning(wait);
        continue;
      }
      metrics_.databaseConnected.Set(1);
    }
    stored = applier_.storedOffsets(tps, error);
    if (stored) break;
    databaseError(applier_.lastSqlState());
    milliseconds wait = backoff.next();
    log::warn("assignment: cannot read stored offsets, retrying in {} ms: {}", wait.count(), error);
    applier_.disconnect();
    metrics_.databaseConnected.Set(0);
    sleepWhileRunning(wait);
  }
  // Stopping before the database answered: nothing may be applied from these positions.
  if (!stored) rewindNeeded_ = true;
  int64_t logical = config_.kafka.initialOffset == "latest" ? RD_KAFKA_OFFSET_END : RD_KAFKA_OFFSET_BEGINNING;
  std::vector<std::string> described;
  for (int i = 0; i < partitions->cnt; ++i) {
    TopicPartition tp(partitions->elems[i].topic, partitions->elems[i].partition);
    std::optional<int64_t> offset = stored ? (*stored)[tp] : std::nullopt;
    partitions->elems[i].offset = offset ? *offset : logical;
    assigned_.insert(tp);
    stored_[tp] = offset;
    position_[tp] = offset ? *offset : -1;
    described.push_back(
        fmt::format("{}@{}", describe(tp), offset ? std::to_string(*offset) : config_.kafka.initialOffset));
  }
  metrics_.assignedPartitions.Set(static_cast<double>(assigned_.size()));
  log::info("assigned {}", fmt::join(described, ", "));
  nextLag_ = Clock::now();
}

void Sink::onRevoke(rd_kafka_topic_partition_list_t* partitions) {
  // Finish the batch while the partitions are still ours; if the assignment was lost (session timeout), another
  // instance may already own them: drop the batch (its conditional offset write would fail anyway).
  if (rd_kafka_assignment_lost(consumer_)) {
    log::warn("assignment lost: dropping the current batch of {} event(s)", pending_.size());
    discardPending();
  } else if (!rewindNeeded_ && !failed_) {
    flushBatch();
  } else {
    discardPending();
  }
  std::vector<std::string> described;
  for (int i = 0; i < partitions->cnt; ++i) {
    TopicPartition tp(partitions->elems[i].topic, partitions->elems[i].partition);
    assigned_.erase(tp);
    stored_.erase(tp);
    position_.erase(tp);
    metrics_.removeLag(tp.first, tp.second);
    described.push_back(describe(tp));
  }
  metrics_.assignedPartitions.Set(static_cast<double>(assigned_.size()));
  log::info("revoked {}", fmt::join(described, ", "));
}

void Sink::updateLag() {
  nextLag_ = Clock::now() + milliseconds(config_.metrics.lagIntervalMs);
  for (const TopicPartition& tp : assigned_) updateLag(tp);
}

void Sink::updateLag(const TopicPartition& tp) {
  // The high watermark librdkafka learnt from its last fetch response: no request to the broker.
  int64_t low = -1;
  int64_t high = -1;
  if (rd_kafka_get_watermark_offsets(consumer_, tp.first.c_str(), tp.second, &low, &high) !=
          RD_KAFKA_RESP_ERR_NO_ERROR ||
      high < 0) {
    return;
  }
  auto it = stored_.find(tp);
  int64_t committed = it != stored_.end() && it->second ? *it->second : std::max<int64_t>(low, 0);
  metrics_.setLag(tp.first, tp.second, std::max<int64_t>(0, high - committed));
}

void Sink::maybePrune() {
  if (!config_.deduplication.enabled || !pending_.empty() || Clock::now() < nextPrune_) return;
  nextPrune_ = Clock::now() + milliseconds(config_.deduplication.pruneIntervalMs);
  std::string error;
  int64_t deleted = applier_.pruneProcessedEvents(error);
  if (deleted < 0) {
    log::warn("pruning processed event ids: {}", error);
    return;
  }
  metrics_.dedupPruned.Increment(static_cast<double>(deleted));
  if (deleted > 0)
    log::info("pruned {} processed event id(s) older than {} h", deleted, config_.deduplication.retentionHours);
}

}  // namespace outbox::sink
