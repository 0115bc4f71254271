#pragma once
// Exactly-once mode: the relay's progress topic in Kafka. At start-up (after init_transactions fenced any previous
// instance and aborted its open transaction) it makes sure the topic exists and is compacted, and reads the last
// committed progress record of this relay's key (read_committed, partition 0 to its end). The records themselves
// are written by the relay's transactional producer, in the Kafka transactions they describe.

#include <librdkafka/rdkafka.h>

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

#include "src/RelayConfig.h"
#include "src/TransactionProgress.h"

namespace outbox {

class ProgressStore {
 public:
  // Progress records always go to this partition of the progress topic, so one partition holds a key's history.
  static constexpr int32_t kPartition = 0;

  ProgressStore(const KafkaConfig& config, std::string key);
  ~ProgressStore();
  ProgressStore(const ProgressStore&) = delete;
  ProgressStore& operator=(const ProgressStore&) = delete;

  // Creates the topic (1 partition, cleanup.policy=compact) when it is missing, refuses one without compaction,
  // then reads it: the last record with the key, nullopt when there is none (or it was deleted with a tombstone).
  // `serve` runs between waits (status updates to PostgreSQL) and returns false to give up (a stop was requested;
  // then nullopt is returned and `gaveUp` set). Throws SetupError for what an operator must fix, std::runtime_error
  // for a failure worth retrying (Kafka unreachable).
  std::optional<ProgressRecord> load(const std::function<bool()>& serve, bool& gaveUp);
  // Creates the topic when it is missing, refuses one without compaction (at-least-once mode, before the first
  // checkpoint is written: a broker's auto-create would make it a deleting topic).
  void ensureTopic();

 private:

  const KafkaConfig& config_;
  std::string key_;
  rd_kafka_t* consumer_ = nullptr;
};

}  // namespace outbox
