#include "src/DeadLetterPublisher.h"

#include <fmt/format.h>

#include <stdexcept>

#include "common/KafkaClientConfig.h"
#include "common/Log.h"

namespace outbox::sink {

DeadLetterPublisher::DeadLetterPublisher(const SinkConfig& config) : config_(config) {
  // Consumer-only properties in [kafka.properties] would make librdkafka warn; they are harmless.
  KafkaClientConfig conf;
  conf.set("enable.idempotence", "true");
  conf.set("acks", "all");
  conf.set("linger.ms", "0");
  conf.set("client.id", "outbox-sink-deadletter");
  conf.setUser(config.kafka.bootstrapServers, config.kafka.properties, config.kafka.secretValues);
  rd_kafka_conf_set_opaque(conf.native(), this);
  rd_kafka_conf_set_dr_msg_cb(conf.native(), &DeadLetterPublisher::deliveryReport);
  producer_ = conf.create(RD_KAFKA_PRODUCER, "the dead-letter producer");
}

DeadLetterPublisher::~DeadLetterPublisher() {
  if (producer_ == nullptr) return;
  rd_kafka_flush(producer_, 5000);
  rd_kafka_destroy(producer_);
}

void DeadLetterPublisher::deliveryReport(rd_kafka_t*, const rd_kafka_message_t* message, void* opaque) {
  auto* self = static_cast<DeadLetterPublisher*>(opaque);
  if (message->err) {
    ++self->failures_;
    self->lastFailure_ = rd_kafka_err2str(message->err);
  }
}

bool DeadLetterPublisher::publish(const SinkEvent& event, const std::string& reason, std::string& error) {
  rd_kafka_headers_t* headers = rd_kafka_headers_new(event.headers.size() + 5);
  for (const auto& [name, value] : event.headers) {
    rd_kafka_header_add(headers, name.data(), static_cast<ssize_t>(name.size()), value.data(),
                        static_cast<ssize_t>(value.size()));
  }
  std::string partition = std::to_string(event.partition);
  std::string offset = std::to_string(event.offset);
  auto add = [&](const char* name, const std::string& value) {
    rd_kafka_header_add(headers, name, -1, value.data(), static_cast<ssize_t>(value.size()));
  };
  add(kDlqTopicHeader, std::string(event.topic));
  add(kDlqPartitionHeader, partition);
  add(kDlqOffsetHeader, offset);
  add(kDlqErrorHeader, reason);
  add(kDlqGroupHeader, config_.kafka.groupId);
  const void* key = event.key ? event.key->data() : nullptr;
  size_t keyLen = event.key ? event.key->size() : 0;
  void* value = event.payload ? const_cast<char*>(event.payload->data()) : nullptr;
  size_t valueLen = event.payload ? event.payload->size() : 0;
  while (true) {
    rd_kafka_resp_err_t rc =
        rd_kafka_producev(producer_, RD_KAFKA_V_TOPIC(config_.deadLetterTopic.c_str()), RD_KAFKA_V_KEY(key, keyLen),
                          RD_KAFKA_V_VALUE(value, valueLen), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_END);
    if (rc == RD_KAFKA_RESP_ERR_NO_ERROR) return true;  // headers now belong to the message
    if (rc == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      rd_kafka_poll(producer_, 100);
      continue;
    }
    rd_kafka_headers_destroy(headers);
    error = fmt::format("cannot produce to dead-letter topic {}: {}", config_.deadLetterTopic, rd_kafka_err2str(rc));
    return false;
  }
}

bool DeadLetterPublisher::flush(int timeoutMs, std::string& error) {
  rd_kafka_resp_err_t rc = rd_kafka_flush(producer_, timeoutMs);
  if (rc != RD_KAFKA_RESP_ERR_NO_ERROR) {
    error = fmt::format("dead-letter topic {}: flush: {}", config_.deadLetterTopic, rd_kafka_err2str(rc));
    return false;
  }
  if (failures_ > 0) {
    error = fmt::format("dead-letter topic {}: {} event(s) not delivered: {}", config_.deadLetterTopic, failures_,
                        lastFailure_);
    failures_ = 0;
    return false;
  }
  return true;
}

}  // namespace outbox::sink
