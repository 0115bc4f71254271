#include "src/DeadLetterPublisher.h"

#include <fmt/format.h>

#include <stdexcept>

#include "common/Log.h"

namespace outbox::sink {

rd_kafka_conf_t* makeKafkaConf(const SinkConfig& config,
                               std::initializer_list<std::pair<const char*, std::string>> defaults) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char err[512];
  auto set = [&](const std::string& key, const std::string& value) {
    if (rd_kafka_conf_set(conf, key.c_str(), value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      throw std::runtime_error("kafka property \"" + key + "\": " + err);
    }
  };
  set("bootstrap.servers", config.kafka.bootstrapServers);
  for (const auto& [key, value] : defaults) set(key, value);
  for (const auto& [key, value] : config.kafka.properties) set(key, value);
  for (const auto& [key, value] : config.kafka.secretValues) set(key, value);
  rd_kafka_conf_set_log_cb(conf, &kafkaLogCallback);
  return conf;
}

void kafkaLogCallback(const rd_kafka_t*, int level, const char* facility, const char* message) {
  // Syslog levels; called from librdkafka's threads, the logger writes whole lines.
  log::Level mapped = level <= 3   ? log::Level::Error
                      : level == 4 ? log::Level::Warn
                      : level <= 6 ? log::Level::Info
                                   : log::Level::Debug;
  if (!log::enabled(mapped)) return;
  log::write(mapped, std::string("kafka: ") + message, {{"facility", facility}});
}

DeadLetterPublisher::DeadLetterPublisher(const SinkConfig& config) : config_(config) {
  // Consumer-only properties in [kafka.properties] would make librdkafka warn; they are harmless.
  rd_kafka_conf_t* conf = makeKafkaConf(
      config,
      {{"enable.idempotence", "true"}, {"acks", "all"}, {"linger.ms", "0"}, {"client.id", "outbox-sink-deadletter"}});
  rd_kafka_conf_set_opaque(conf, this);
  rd_kafka_conf_set_dr_msg_cb(conf, &DeadLetterPublisher::deliveryReport);
  char err[512];
  producer_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (producer_ == nullptr) {
    rd_kafka_conf_destroy(conf);
    throw std::runtime_error(std::string("cannot create the dead-letter producer: ") + err);
  }
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
