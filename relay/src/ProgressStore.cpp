#include "src/ProgressStore.h"

#include <fmt/format.h>

#include <chrono>
#include <memory>
#include <thread>

#include "common/KafkaClientConfig.h"
#include "common/KafkaHealth.h"
#include "common/Log.h"
#include "src/ReplicationStream.h"

namespace outbox {

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kRequestTimeoutMs = 10000;

struct QueueDeleter {
  void operator()(rd_kafka_queue_t* q) const { rd_kafka_queue_destroy(q); }
};
struct EventDeleter {
  void operator()(rd_kafka_event_t* e) const { rd_kafka_event_destroy(e); }
};
struct OptionsDeleter {
  void operator()(rd_kafka_AdminOptions_t* o) const { rd_kafka_AdminOptions_destroy(o); }
};
using Event = std::unique_ptr<rd_kafka_event_t, EventDeleter>;

// Waits for the admin request's result on `queue`, serving `client`'s error callbacks meanwhile (a refused login
// is reported there, while the request waits out its timeout).
Event adminResult(rd_kafka_t* client, rd_kafka_queue_t* queue, const char* what) {
  Event event;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kRequestTimeoutMs + 5000);
  while (!event && std::chrono::steady_clock::now() < deadline) {
    event.reset(rd_kafka_queue_poll(queue, 100));
    while (rd_kafka_message_t* served = rd_kafka_consumer_poll(client, 0)) rd_kafka_message_destroy(served);
  }
  if (!event) throw std::runtime_error(std::string("kafka: no answer to ") + what + " within 15 s");
  if (rd_kafka_event_error(event.get()) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    throw std::runtime_error(std::string("kafka: ") + what + " failed: " + rd_kafka_event_error_string(event.get()));
  }
  return event;
}

bool isAuthorization(rd_kafka_resp_err_t error) {
  return error == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
         error == RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED ||
         error == RD_KAFKA_RESP_ERR_POLICY_VIOLATION;
}

}  // namespace

ProgressStore::ProgressStore(const KafkaConfig& config, std::string key) : config_(config), key_(std::move(key)) {
  KafkaClientConfig conf;
  conf.set("client.id", "outbox-relay-progress");
  // Never joins it (partitions are assigned): librdkafka wants a group for consumer_poll.
  conf.set("group.id", "outbox-relay-progress-reader");
  conf.set("enable.auto.commit", "false");
  conf.set("enable.auto.offset.store", "false");
  // Only what committed Kafka transactions hold: a record of an aborted (or still open) one never counts.
  conf.set("isolation.level", "read_committed");
  conf.set("enable.partition.eof", "true");
  conf.set("auto.offset.reset", "earliest");
  conf.setUser(config.bootstrapServers, config.properties, config.secretValues);
  // At a first start this is the relay's first Kafka client to reach the brokers (the checkpoint is read before a
  // slot is created): a refused login gets the same hint as the producer's.
  rd_kafka_conf_set_error_cb(conf.native(), [](rd_kafka_t* rk, int err, const char*, void*) {
    logScramDefectHintOnce(rk, static_cast<rd_kafka_resp_err_t>(err));
  });
  consumer_ = conf.create(RD_KAFKA_CONSUMER, "the progress topic's consumer");
  rd_kafka_poll_set_consumer(consumer_);
}

ProgressStore::~ProgressStore() {
  if (consumer_) {
    rd_kafka_consumer_close(consumer_);
    rd_kafka_destroy(consumer_);
  }
}

void ProgressStore::ensureTopic() {
  const std::string& topic = config_.progressTopic;
  std::unique_ptr<rd_kafka_queue_t, QueueDeleter> queue(rd_kafka_queue_new(consumer_));
  std::unique_ptr<rd_kafka_AdminOptions_t, OptionsDeleter> options(
      rd_kafka_AdminOptions_new(consumer_, RD_KAFKA_ADMIN_OP_ANY));
  char errstr[512];
  rd_kafka_AdminOptions_set_request_timeout(options.get(), kRequestTimeoutMs, errstr, sizeof errstr);

  // Create it when missing: one partition (records go to partition 0 anyway), the broker's replication factor.
  rd_kafka_NewTopic_t* newTopic = rd_kafka_NewTopic_new(topic.c_str(), 1, -1, errstr, sizeof errstr);
  if (newTopic == nullptr) throw SetupError(fmt::format("kafka.progress_topic \"{}\": {}", topic, errstr));
  rd_kafka_NewTopic_set_config(newTopic, "cleanup.policy", "compact");
  rd_kafka_CreateTopics(consumer_, &newTopic, 1, options.get(), queue.get());
  rd_kafka_NewTopic_destroy(newTopic);
  Event created = adminResult(consumer_, queue.get(), "creating the progress topic");
  size_t count = 0;
  bool mayExist = false;  // created now, or it existed already
  const rd_kafka_topic_result_t** results =
      rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(created.get()), &count);
  for (size_t i = 0; i < count; ++i) {
    rd_kafka_resp_err_t error = rd_kafka_topic_result_error(results[i]);
    if (error == RD_KAFKA_RESP_ERR_NO_ERROR || error == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) mayExist = true;
    if (error == RD_KAFKA_RESP_ERR_NO_ERROR) {
      log::info("created the progress topic \"{}\" (cleanup.policy=compact)", topic);
    } else if (error != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS && !isAuthorization(error)) {
      throw std::runtime_error(fmt::format("kafka: cannot create the progress topic \"{}\": {}", topic,
                                           rd_kafka_topic_result_error_string(results[i])));
    }
    // Not allowed to create topics: it may exist already (checked below).
  }

  // A progress topic that deletes old records by age would lose the record of a relay idle for longer than the
  // retention: the relay would then resume from its slot and could publish what Kafka already has. A topic just
  // created may take a moment to be known to every broker: asked again for up to 15 s.
  for (int attempt = 0;; ++attempt) {
    rd_kafka_ConfigResource_t* resource = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic.c_str());
    rd_kafka_DescribeConfigs(consumer_, &resource, 1, options.get(), queue.get());
    rd_kafka_ConfigResource_destroy(resource);
    Event described = adminResult(consumer_, queue.get(), "describing the progress topic");
    size_t resources = 0;
    const rd_kafka_ConfigResource_t** found = rd_kafka_DescribeConfigs_result_resources(
        rd_kafka_event_DescribeConfigs_result(described.get()), &resources);
    if (resources == 0) return;
    rd_kafka_resp_err_t error = rd_kafka_ConfigResource_error(found[0]);
    if (error == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART && attempt < 30 && mayExist) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      continue;
    }
    if (error == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
      throw SetupError(fmt::format(
          "kafka: the progress topic \"{}\" does not exist and the relay may not create it: create it with one "
          "partition and cleanup.policy=compact (kafka-topics.sh --create --topic {} --partitions 1 --config "
          "cleanup.policy=compact), or grant the relay's principal Create on it",
          topic, topic));
    }
    if (error != RD_KAFKA_RESP_ERR_NO_ERROR) {
      log::warn("cannot check the progress topic \"{}\"'s cleanup.policy ({}): make sure it is "
                "compact",
                topic, rd_kafka_ConfigResource_error_string(found[0]));
      return;
    }
    size_t entries = 0;
    const rd_kafka_ConfigEntry_t** configs = rd_kafka_ConfigResource_configs(found[0], &entries);
    for (size_t e = 0; e < entries; ++e) {
      if (std::string_view(rd_kafka_ConfigEntry_name(configs[e])) != "cleanup.policy") continue;
      const char* value = rd_kafka_ConfigEntry_value(configs[e]);
      if (value == nullptr || std::string_view(value).find("compact") == std::string_view::npos) {
        throw SetupError(fmt::format(
            "kafka: the progress topic \"{}\" has cleanup.policy={}, so the relay's progress record could expire "
            "and a restart would publish again what Kafka has: set cleanup.policy=compact on it "
            "(kafka-configs.sh --alter --entity-type topics --entity-name {} --add-config cleanup.policy=compact) "
            "or name another topic in kafka.progress_topic",
            topic, value ? value : "(none)", topic));
      }
    }
    return;
  }
}

std::optional<ProgressRecord> ProgressStore::load(const std::function<bool()>& serve, bool& gaveUp) {
  gaveUp = false;
  ensureTopic();
  const std::string& topic = config_.progressTopic;
  int64_t low = 0, high = 0;
  // The high watermark now, after init_transactions: a transaction of a previous instance is committed or aborted
  // by then, so every record up to here is decided. Reading to it (not to the first end of partition, which under
  // read_committed is the last stable offset) means no committed record of this key is missed.
  rd_kafka_resp_err_t error =
      rd_kafka_query_watermark_offsets(consumer_, topic.c_str(), kPartition, &low, &high, kRequestTimeoutMs);
  if (error != RD_KAFKA_RESP_ERR_NO_ERROR) {
    throw std::runtime_error(fmt::format("kafka: cannot read the progress topic \"{}\"'s end offset: {}", topic,
                                         rd_kafka_err2str(error)));
  }
  std::optional<ProgressRecord> last;
  if (high <= low) return last;

  rd_kafka_topic_partition_list_t* assignment = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(assignment, topic.c_str(), kPartition)->offset = RD_KAFKA_OFFSET_BEGINNING;
  error = rd_kafka_assign(consumer_, assignment);
  rd_kafka_topic_partition_list_destroy(assignment);
  if (error != RD_KAFKA_RESP_ERR_NO_ERROR) {
    throw std::runtime_error(fmt::format("kafka: cannot read the progress topic: {}", rd_kafka_err2str(error)));
  }
  auto started = Clock::now();
  auto lastLog = started;
  int64_t position = low;
  while (position < high) {
    if (!serve()) {
      gaveUp = true;
      rd_kafka_assign(consumer_, nullptr);
      return std::nullopt;
    }
    rd_kafka_message_t* message = rd_kafka_consumer_poll(consumer_, 100);
    if (message != nullptr) {
      std::unique_ptr<rd_kafka_message_t, void (*)(rd_kafka_message_t*)> owned(message, rd_kafka_message_destroy);
      if (message->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        position = std::max(position, message->offset);
      } else if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        log::warn("reading the progress topic: {}", rd_kafka_message_errstr(message));
      } else {
        position = std::max(position, message->offset + 1);
        std::string_view key(static_cast<const char*>(message->key), message->key ? message->key_len : 0);
        if (message->key != nullptr && key == key_) {
          if (message->payload == nullptr) {
            last.reset();  // a tombstone: the progress was deleted on purpose
          } else {
            try {
              last = ProgressRecord::parse(
                  std::string_view(static_cast<const char*>(message->payload), message->len));
            } catch (const std::invalid_argument& e) {
              throw SetupError(fmt::format(
                  "kafka: the progress record of \"{}\" in topic \"{}\" (partition {}, offset {}) is not one this "
                  "relay wrote: {}. If something else writes to that topic, give the relay its own "
                  "kafka.progress_topic; to start over from the slot's position, delete the record (produce a "
                  "tombstone: key \"{}\", null value)",
                  key_, topic, kPartition, message->offset, e.what(), key_));
            }
          }
        }
      }
    }
    if (Clock::now() - lastLog >= std::chrono::seconds(10)) {
      lastLog = Clock::now();
      log::warn(
          "still reading the progress topic \"{}\" (at offset {} of {}, {} s): an open transaction of "
          "another producer on it holds read_committed readers back until it ends (at most its "
          "transaction.timeout.ms)",
          topic, position, high,
          std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started).count());
    }
  }
  rd_kafka_assign(consumer_, nullptr);
  return last;
}

}  // namespace outbox
