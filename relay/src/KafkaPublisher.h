#pragma once
// Publishes outbox records with librdkafka's idempotent producer and hands delivery reports back.
//
// Delivery reports run on the thread that calls poll(), so the relay's single event loop owns all state
// without locks (librdkafka examples/idempotent_producer.c). wakeupFd() becomes readable when reports or
// errors wait, so the loop can sleep in poll(2) on PostgreSQL's socket and Kafka at once.

#include <librdkafka/rdkafka.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "src/OutboxRecord.h"
#include "src/RelayConfig.h"

namespace outbox {

class KafkaPublisher {
 public:
  struct Delivery {
    uint64_t opaque = 0;  // what produce() was given (the transaction's sequence)
    uint64_t bytes = 0;   // OutboxRecord::bytes() of the record
    rd_kafka_resp_err_t error = RD_KAFKA_RESP_ERR_NO_ERROR;
    std::string_view topic;
    // Only for a failed delivery (valid during the handler): the record as it was produced, for the dead-letter
    // path.
    std::optional<std::string_view> key;
    std::optional<std::string_view> value;
    std::vector<std::pair<std::string_view, std::string_view>> headers;
  };
  using DeliveryHandler = std::function<void(const Delivery&)>;

  // Throws std::runtime_error naming the property when the Kafka configuration is invalid. A non-empty
  // `transactionalId` makes it librdkafka's transactional producer (exactly-once mode): nothing is sent to the
  // transaction coordinator before initTransactions().
  KafkaPublisher(const KafkaConfig& config, const LimitsConfig& limits, DeliveryHandler onDelivery,
                 const std::string& transactionalId = "");
  ~KafkaPublisher();
  KafkaPublisher(const KafkaPublisher&) = delete;
  KafkaPublisher& operator=(const KafkaPublisher&) = delete;

  enum class ProduceStatus { Queued, QueueFull, Failed };
  // Hands one record to librdkafka. QueueFull: poll() and try again. Failed: `error` says why (permanent) and
  // `code` is librdkafka's error code.
  ProduceStatus produce(const OutboxRecord& record, uint64_t opaque, std::string& error, rd_kafka_resp_err_t& code);

  // Why Kafka refused a record for its own content (README "Guarantees"): such a record goes to the dead-letter
  // topic and the relay goes on. Any other error (authorization, a fatal producer error, ...) stops the relay.
  enum class Rejection { TooLarge, UnknownTopic, InvalidTopic, InvalidRecord, UnknownPartition };
  static constexpr Rejection kRejections[] = {Rejection::TooLarge, Rejection::UnknownTopic, Rejection::InvalidTopic,
                                              Rejection::InvalidRecord, Rejection::UnknownPartition};
  static std::optional<Rejection> contentRejection(rd_kafka_resp_err_t error);
  // The metric label: too_large, unknown_topic, invalid_topic, invalid_record.
  static std::string_view rejectionName(Rejection rejection);

  // Hands one record to librdkafka for a given partition (the progress record's fixed partition 0).
  ProduceStatus produceToPartition(const OutboxRecord& record, int32_t partition, uint64_t opaque, std::string& error,
                                   rd_kafka_resp_err_t& code);

  // The transactional producer's calls (librdkafka's rd_kafka_*_transaction), each bounded by `timeoutMs`.
  struct TransactionResult {
    enum class Kind { Ok, Retriable, Abortable, Fatal };
    Kind kind = Kind::Ok;
    bool fenced = false;  // Fatal because another producer with the same transactional.id took over
    std::string message;
    bool ok() const { return kind == Kind::Ok; }
  };
  TransactionResult initTransactions(int timeoutMs);
  TransactionResult beginTransaction();
  TransactionResult commitTransaction(int timeoutMs);
  TransactionResult abortTransaction(int timeoutMs);
  bool transactional() const { return transactional_; }

  // Serves waiting delivery reports and errors without blocking.
  void poll();
  int wakeupFd() const { return wakeupRead_; }
  // Messages librdkafka still holds (queued, in flight to or awaiting acknowledgement from the broker).
  int queueLength() const;

  // A fatal producer error (idempotence guarantees could not be kept, or fenced by a newer transactional
  // producer): the relay must stop.
  const std::optional<std::string>& fatalError() const { return fatalError_; }
  bool fenced() const { return fenced_; }
  // Whether any broker connection is up: from librdkafka's statistics (every second), from "all brokers down"
  // errors, and from successful deliveries.
  bool brokersReachable() const { return brokersReachable_; }
  // How many times the brokers became reachable again after being unreachable.
  uint64_t reconnects() const { return reconnects_; }

  // The librdkafka properties in effect, with secrets redacted, for the start-up log.
  const std::string& effectiveProperties() const { return effectiveProperties_; }

 private:
  static void deliveryReport(rd_kafka_t*, const rd_kafka_message_t* message, void* self);
  static int statsCallback(rd_kafka_t*, char* json, size_t length, void* self);
  static void errorCallback(rd_kafka_t*, int err, const char* reason, void* self);
  rd_kafka_topic_t* topicHandle(std::string_view topic);
  TransactionResult transactionResult(rd_kafka_error_t* error, const char* what);
  ProduceStatus produceImpl(const OutboxRecord& record, int32_t partition, uint64_t opaque, std::string& error,
                            rd_kafka_resp_err_t& code);

  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };

  DeliveryHandler onDelivery_;
  rd_kafka_t* producer_ = nullptr;
  rd_kafka_queue_t* mainQueue_ = nullptr;
  std::unordered_map<std::string, rd_kafka_topic_t*, StringHash, std::equal_to<>> topics_;
  int wakeupRead_ = -1;
  int wakeupWrite_ = -1;
  std::optional<std::string> fatalError_;
  bool fenced_ = false;
  bool transactional_ = false;
  bool brokersReachable_ = false;
  uint64_t reconnects_ = 0;
  bool everReachable_ = false;
  void setReachable(bool reachable);
  std::string effectiveProperties_;
};

}  // namespace outbox
