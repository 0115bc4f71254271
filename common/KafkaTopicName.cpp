#include "common/KafkaTopicName.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/ConfigSummary.h"

namespace outbox {

bool isValidKafkaTopic(std::string_view topic) {
  return !topic.empty() && topic.size() <= 249 && topic != "." && topic != ".." &&
         std::all_of(topic.begin(), topic.end(), isKafkaTopicChar);
}

std::optional<std::string> kafkaTopicNameError(std::string_view topic) {
  if (topic.empty()) return "must not be empty; give a Kafka topic name";
  if (topic.size() > 249 || topic == "." || topic == "..") {
    return fmt::format("{} is not a valid Kafka topic name (at most 249 characters, not \".\" or \"..\")",
                       tomlQuote(topic));
  }
  for (char c : topic) {
    if (!isKafkaTopicChar(c)) {
      return fmt::format("{} holds '{}', but Kafka topic names may only contain letters, digits, '.', '_' and '-'",
                         tomlQuote(topic), c);
    }
  }
  return std::nullopt;
}

}  // namespace outbox
