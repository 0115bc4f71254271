#pragma once
// One outbox event as it goes to Kafka. Views only: they point into the decoded WAL message or the router's
// scratch buffers and live until the next event is routed; the publisher copies what it keeps.

#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace outbox {

struct OutboxRecord {
  std::string_view topic;
  std::optional<std::string_view> key;    // aggregateid; nullopt -> no key
  std::optional<std::string_view> value;  // payload as stored; nullopt -> null value (tombstone)
  std::vector<std::pair<std::string_view, std::string_view>> headers;
  // The record's timestamp (CreateTime), Unix epoch milliseconds; 0: the time librdkafka produces it.
  int64_t timestampMs = 0;
  // The partition; -1 (RD_KAFKA_PARTITION_UA): the partitioner's, from the key.
  int32_t partition = -1;

  // What the record weighs against the in-flight byte budget (and what delivery reports give back).
  uint64_t bytes() const { return (key ? key->size() : 0) + (value ? value->size() : 0); }
};

}  // namespace outbox
