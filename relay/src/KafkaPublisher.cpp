#include "src/KafkaPublisher.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>

#include "common/KafkaClientConfig.h"
#include "common/KafkaHealth.h"
#include "common/Log.h"

namespace outbox {

KafkaPublisher::KafkaPublisher(const KafkaConfig& config, const LimitsConfig& limits, DeliveryHandler onDelivery,
                               const std::string& transactionalId)
    : onDelivery_(std::move(onDelivery)), transactional_(!transactionalId.empty()) {
  KafkaClientConfig conf;
  // Delivery guarantees (README "Guarantees"): idempotent producer, all in-sync replicas, and no local expiry:
  // librdkafka's default message.timeout.ms would silently turn an outage of 5 minutes into lost events, so it
  // is 0 (infinite) and an undeliverable event blocks the relay instead.
  conf.set("enable.idempotence", "true");
  conf.set("acks", "all");
  conf.set("message.timeout.ms", "0");
  // A batch the broker refuses for good (a record over the topic's max.message.bytes, an invalid record) is
  // reported to the relay, which dead-letters each of its records, and librdkafka bumps the producer epoch and
  // goes on in order with the records after it. With enable.gapless.guarantee=true librdkafka 2.0.2 instead
  // raises a fatal error for it (rd_kafka_handle_Produce_error: "unable to satisfy gap-less guarantee"), and one
  // oversized row would stop the relay at every restart. Nothing is skipped silently either way: every failed
  // record comes back in a delivery report, and the relay confirms its transaction only once the dead-letter
  // record is acknowledged.
  conf.set("enable.gapless.guarantee", "false");
  // The Java client's partitioner, so a key lands on the same partition as with Debezium / Kafka Connect.
  conf.set("partitioner", "murmur2_random");
  conf.set("linger.ms", "2");
  conf.set("client.id", "outbox-relay");
  // Broker connection states arrive with the statistics: that is how readiness knows Kafka is reachable.
  conf.set("statistics.interval.ms", "1000");
  // librdkafka's own queue must hold at least the relay's in-flight budget: the budget is what bounds memory.
  uint64_t maxMessages = std::clamp<uint64_t>(limits.maxInflightEvents * 2, 100000, 10000000);
  uint64_t maxKbytes = std::clamp<uint64_t>(limits.maxInflightBytes / 1024 * 2, 65536, 2097151);
  conf.set("queue.buffering.max.messages", std::to_string(maxMessages));
  conf.set("queue.buffering.max.kbytes", std::to_string(maxKbytes));
  conf.setUser(config.bootstrapServers, config.properties, config.secretValues);
  // Exactly-once: the transactional producer. The relay's progress record travels in the same Kafka transactions,
  // so a crash at any moment leaves Kafka's committed data and the progress in agreement (README "Guarantees").
  if (transactional_) {
    conf.set("transactional.id", transactionalId);
    // Not 0 (no expiry) here: a record stuck in an open transaction must fail (abortable: the relay aborts and
    // replays) well before the coordinator times the transaction out, which librdkafka 2.0.2 reports as a fatal
    // INVALID_PRODUCER_EPOCH ("fenced"). So a record expires after a quarter of transaction.timeout.ms
    // (librdkafka's default 60 s, or what [kafka.properties] sets).
    long transactionTimeoutMs = 60000;
    for (const auto& [name, value] : config.properties) {
      if (name == "transaction.timeout.ms") transactionTimeoutMs = std::strtol(value.c_str(), nullptr, 10);
    }
    transactionTimeoutMs = std::max(transactionTimeoutMs, 4000L);
    conf.set("transaction.timeout.ms", std::to_string(transactionTimeoutMs));
    conf.set("message.timeout.ms", std::to_string(transactionTimeoutMs / 4));
  }
  effectiveProperties_ = conf.describe();

  rd_kafka_conf_set_opaque(conf.native(), this);
  rd_kafka_conf_set_dr_msg_cb(conf.native(), &KafkaPublisher::deliveryReport);
  rd_kafka_conf_set_error_cb(conf.native(), &KafkaPublisher::errorCallback);
  rd_kafka_conf_set_stats_cb(conf.native(), &KafkaPublisher::statsCallback);
  producer_ = conf.create(RD_KAFKA_PRODUCER, "the Kafka producer");
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  wakeupRead_ = fds[0];
  wakeupWrite_ = fds[1];
  mainQueue_ = rd_kafka_queue_get_main(producer_);
  rd_kafka_queue_io_event_enable(mainQueue_, wakeupWrite_, "1", 1);
}

KafkaPublisher::~KafkaPublisher() {
  for (auto& [name, handle] : topics_) rd_kafka_topic_destroy(handle);
  if (mainQueue_) {
    rd_kafka_queue_io_event_enable(mainQueue_, -1, nullptr, 0);
    rd_kafka_queue_destroy(mainQueue_);
  }
  if (producer_) rd_kafka_destroy(producer_);
  if (wakeupRead_ >= 0) close(wakeupRead_);
  if (wakeupWrite_ >= 0) close(wakeupWrite_);
}

rd_kafka_topic_t* KafkaPublisher::topicHandle(std::string_view topic) {
  auto it = topics_.find(topic);
  if (it != topics_.end()) return it->second;
  std::string name(topic);
  rd_kafka_topic_t* handle = rd_kafka_topic_new(producer_, name.c_str(), nullptr);
  if (handle == nullptr) return nullptr;
  topics_.emplace(std::move(name), handle);
  return handle;
}

KafkaPublisher::ProduceStatus KafkaPublisher::produce(const OutboxRecord& record, uint64_t opaque, std::string& error,
                                                      rd_kafka_resp_err_t& code) {
  return produceImpl(record, record.partition >= 0 ? record.partition : RD_KAFKA_PARTITION_UA, opaque, error, code);
}

KafkaPublisher::ProduceStatus KafkaPublisher::produceToPartition(const OutboxRecord& record, int32_t partition,
                                                                 uint64_t opaque, std::string& error,
                                                                 rd_kafka_resp_err_t& code) {
  return produceImpl(record, partition, opaque, error, code);
}

KafkaPublisher::ProduceStatus KafkaPublisher::produceImpl(const OutboxRecord& record, int32_t partition,
                                                          uint64_t opaque, std::string& error,
                                                          rd_kafka_resp_err_t& code) {
  rd_kafka_topic_t* topic = topicHandle(record.topic);
  if (topic == nullptr) {
    code = RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION;  // rd_kafka_topic_new refuses the name itself
    error = "invalid topic \"" + std::string(record.topic) + "\": " + rd_kafka_err2str(rd_kafka_last_error());
    return ProduceStatus::Failed;
  }
  rd_kafka_headers_t* headers = rd_kafka_headers_new(record.headers.size());
  for (const auto& [name, value] : record.headers) {
    rd_kafka_header_add(headers, name.data(), static_cast<ssize_t>(name.size()), value.data(),
                        static_cast<ssize_t>(value.size()));
  }
  const void* key = record.key ? record.key->data() : nullptr;
  size_t keyLen = record.key ? record.key->size() : 0;
  void* value = record.value ? const_cast<char*>(record.value->data()) : nullptr;
  size_t valueLen = record.value ? record.value->size() : 0;
  rd_kafka_resp_err_t rc = rd_kafka_producev(
      producer_, RD_KAFKA_V_RKT(topic), RD_KAFKA_V_PARTITION(partition), RD_KAFKA_V_KEY(key, keyLen),
      RD_KAFKA_V_VALUE(value, valueLen), RD_KAFKA_V_TIMESTAMP(record.timestampMs),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(headers),
      RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<uintptr_t>(opaque))), RD_KAFKA_V_END);
  if (rc == RD_KAFKA_RESP_ERR_NO_ERROR) return ProduceStatus::Queued;
  rd_kafka_headers_destroy(headers);  // not taken over on failure
  if (rc == RD_KAFKA_RESP_ERR__QUEUE_FULL) return ProduceStatus::QueueFull;
  code = rc;
  error = "cannot produce to \"" + std::string(record.topic) + "\": " + rd_kafka_err2str(rc) + " (" +
          rd_kafka_err2name(rc) + ")";
  return ProduceStatus::Failed;
}

std::optional<KafkaPublisher::Rejection> KafkaPublisher::contentRejection(rd_kafka_resp_err_t error) {
  switch (error) {
    // Over message.max.bytes at produce() time, or over the topic's max.message.bytes from the broker.
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
      return Rejection::TooLarge;
    // The topic does not exist and is not created (broker auto.create.topics.enable=false, or the client's
    // allow.auto.create.topics=false): librdkafka waits topic.metadata.propagation.max.ms from the topic's first
    // use, then fails the queued records with UNKNOWN_TOPIC_OR_PART and later produce() calls at once with
    // __UNKNOWN_TOPIC (librdkafka 2.0.2 rd_kafka_topic_set_notexists), also with message.timeout.ms=0.
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
      return Rejection::UnknownTopic;
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
      return Rejection::InvalidTopic;
    // A partition_column naming a partition the topic does not have: at produce() time when librdkafka knows the
    // topic, else in the delivery report once it does.
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
      return Rejection::UnknownPartition;
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR__BAD_MSG:
      return Rejection::InvalidRecord;
    default:
      // Authorization (TOPIC_/CLUSTER_/TRANSACTIONAL_ID_AUTHORIZATION_FAILED), __FATAL, timeouts, ...: not the
      // record's fault.
      return std::nullopt;
  }
}

std::string_view KafkaPublisher::rejectionName(Rejection rejection) {
  switch (rejection) {
    case Rejection::TooLarge:
      return "too_large";
    case Rejection::UnknownTopic:
      return "unknown_topic";
    case Rejection::InvalidTopic:
      return "invalid_topic";
    case Rejection::InvalidRecord:
      return "invalid_record";
    case Rejection::UnknownPartition:
      return "unknown_partition";
  }
  return "invalid_record";
}

void KafkaPublisher::poll() {
  char drain[64];
  while (read(wakeupRead_, drain, sizeof drain) > 0) {
  }
  while (rd_kafka_poll(producer_, 0) > 0) {
  }
}

KafkaPublisher::TransactionResult KafkaPublisher::transactionResult(rd_kafka_error_t* error, const char* what) {
  TransactionResult result;
  if (error == nullptr) return result;
  result.message = std::string(what) + ": " + rd_kafka_error_string(error) + " (" + rd_kafka_error_name(error) + ")";
  if (rd_kafka_error_is_fatal(error)) {
    result.kind = TransactionResult::Kind::Fatal;
  } else if (rd_kafka_error_txn_requires_abort(error)) {
    result.kind = TransactionResult::Kind::Abortable;
  } else if (rd_kafka_error_is_retriable(error)) {
    result.kind = TransactionResult::Kind::Retriable;
  } else {
    // Neither retriable nor abortable (an invalid state, a configuration refused by the broker such as a missing
    // TransactionalId ACL): nothing the relay can repair by itself.
    result.kind = TransactionResult::Kind::Fatal;
  }
  rd_kafka_resp_err_t code = rd_kafka_error_code(error);
  if (result.kind == TransactionResult::Kind::Fatal) {
    char detail[512] = "";
    rd_kafka_resp_err_t original = rd_kafka_fatal_error(producer_, detail, sizeof detail);
    if (original != RD_KAFKA_RESP_ERR_NO_ERROR) code = original;
    result.fenced = code == RD_KAFKA_RESP_ERR__FENCED || code == RD_KAFKA_RESP_ERR_PRODUCER_FENCED ||
                    code == RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH;
    if (result.fenced) fenced_ = true;
    if (!fatalError_) fatalError_ = result.message;
  }
  rd_kafka_error_destroy(error);
  return result;
}

KafkaPublisher::TransactionResult KafkaPublisher::initTransactions(int timeoutMs) {
  return transactionResult(rd_kafka_init_transactions(producer_, timeoutMs), "init_transactions");
}

KafkaPublisher::TransactionResult KafkaPublisher::beginTransaction() {
  return transactionResult(rd_kafka_begin_transaction(producer_), "begin_transaction");
}

KafkaPublisher::TransactionResult KafkaPublisher::commitTransaction(int timeoutMs) {
  return transactionResult(rd_kafka_commit_transaction(producer_, timeoutMs), "commit_transaction");
}

KafkaPublisher::TransactionResult KafkaPublisher::abortTransaction(int timeoutMs) {
  return transactionResult(rd_kafka_abort_transaction(producer_, timeoutMs), "abort_transaction");
}

int KafkaPublisher::queueLength() const { return rd_kafka_outq_len(producer_); }

void KafkaPublisher::deliveryReport(rd_kafka_t*, const rd_kafka_message_t* message, void* opaque) {
  auto* self = static_cast<KafkaPublisher*>(opaque);
  Delivery delivery;
  delivery.opaque = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(message->_private));
  delivery.bytes = message->key_len + message->len;
  delivery.error = message->err;
  delivery.topic = rd_kafka_topic_name(message->rkt);
  if (message->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    self->setReachable(true);
  } else {
    if (message->key) delivery.key = std::string_view(static_cast<const char*>(message->key), message->key_len);
    if (message->payload) delivery.value = std::string_view(static_cast<const char*>(message->payload), message->len);
    rd_kafka_headers_t* headers = nullptr;
    if (rd_kafka_message_headers(message, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      const char* name = nullptr;
      const void* value = nullptr;
      size_t size = 0;
      for (size_t i = 0; rd_kafka_header_get_all(headers, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i) {
        delivery.headers.emplace_back(name, std::string_view(static_cast<const char*>(value), value ? size : 0));
      }
    }
  }
  self->onDelivery_(delivery);
}

void KafkaPublisher::setReachable(bool reachable) {
  if (reachable && !brokersReachable_ && everReachable_) ++reconnects_;
  if (reachable) everReachable_ = true;
  brokersReachable_ = reachable;
}

int KafkaPublisher::statsCallback(rd_kafka_t*, char* json, size_t length, void* opaque) {
  auto* self = static_cast<KafkaPublisher*>(opaque);
  if (std::optional<bool> up = kafkaStatsShowBrokerUp(json, length)) self->setReachable(*up);
  return 0;  // librdkafka frees the JSON
}

void KafkaPublisher::errorCallback(rd_kafka_t* rk, int err, const char* reason, void* opaque) {
  auto* self = static_cast<KafkaPublisher*>(opaque);
  auto code = static_cast<rd_kafka_resp_err_t>(err);
  if (code == RD_KAFKA_RESP_ERR__FATAL) {
    char detail[512];
    rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, detail, sizeof detail);
    self->fatalError_ = std::string(rd_kafka_err2name(orig)) + ": " + detail;
    if (orig == RD_KAFKA_RESP_ERR__FENCED || orig == RD_KAFKA_RESP_ERR_PRODUCER_FENCED ||
        orig == RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH) {
      self->fenced_ = true;
    }
    log::error("kafka: fatal producer error: {}", *self->fatalError_);
    return;
  }
  if (code == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) self->setReachable(false);
  // Transient: librdkafka retries by itself (connection refused, broker restarting, ...).
  log::warn("kafka: {} ({})", reason, rd_kafka_err2name(code));
  logScramDefectHintOnce(rk, code);
}

}  // namespace outbox
