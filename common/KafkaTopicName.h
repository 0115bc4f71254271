#pragma once
// Kafka's rule for topic names, for config checks and for topics the router builds from event data.

#include <optional>
#include <string>
#include <string_view>

namespace outbox {

// 1..249 of [a-zA-Z0-9._-], not "." or "..".
inline bool isKafkaTopicChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}
bool isValidKafkaTopic(std::string_view topic);
// Why `topic` is not a valid Kafka topic name (for a config issue), or nullopt.
std::optional<std::string> kafkaTopicNameError(std::string_view topic);

}  // namespace outbox
