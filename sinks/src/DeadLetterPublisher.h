#pragma once
// Puts poison events on the dead-letter topic: the original key, value and headers, plus headers naming where the
// event came from and why it failed. The caller flushes before committing the batch that moves past the events,
// so a poison event is never committed past without being in the dead-letter topic (it may land there twice if
// the sink dies between the flush and the commit).

#include <librdkafka/rdkafka.h>

#include <cstdint>
#include <string>

#include "src/Projection.h"
#include "src/SinkConfig.h"

namespace outbox::sink {

// Dead-letter header names.
inline constexpr const char* kDlqTopicHeader = "dlq.original.topic";
inline constexpr const char* kDlqPartitionHeader = "dlq.original.partition";
inline constexpr const char* kDlqOffsetHeader = "dlq.original.offset";
inline constexpr const char* kDlqErrorHeader = "dlq.error";
inline constexpr const char* kDlqGroupHeader = "dlq.consumer.group";

class DeadLetterPublisher {
 public:
  explicit DeadLetterPublisher(const SinkConfig& config);
  ~DeadLetterPublisher();
  DeadLetterPublisher(const DeadLetterPublisher&) = delete;
  DeadLetterPublisher& operator=(const DeadLetterPublisher&) = delete;

  // Queues `event` for the dead-letter topic; false with `error` when librdkafka refuses it.
  bool publish(const SinkEvent& event, const std::string& reason, std::string& error);
  // Waits until every queued event is acknowledged; false with `error` on a timeout or a failed delivery.
  bool flush(int timeoutMs, std::string& error);
  void poll() { rd_kafka_poll(producer_, 0); }

 private:
  static void deliveryReport(rd_kafka_t*, const rd_kafka_message_t* message, void* opaque);
  const SinkConfig& config_;
  rd_kafka_t* producer_ = nullptr;
  int64_t failures_ = 0;
  std::string lastFailure_;
};

}  // namespace outbox::sink
