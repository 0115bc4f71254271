#pragma once
// outbox-sink as a black box for integration tests: a config rendered for one test (unique consumer group,
// topics, read-model tables), the real build/bin/outbox-sink as a subprocess, order events produced to Kafka with
// the headers the relay writes ("id", "eventType"), and the read model they must produce, computed directly from
// the events.

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support/RelayProcess.h"
#include "support/TestEnv.h"

namespace outbox::test {

// One statement of a multi-statement projection ([[projection.statements]]).
struct SinkStatement {
  std::string sql;
  std::vector<std::string> params;
};

// Renders a sink config. Defaults: PGURL / KAFKA_BOOTSTRAP from the environment, a unique consumer group, metrics
// off, quick metadata refresh and a short session timeout so that tests need not wait for Kafka's defaults.
class SinkConfigBuilder {
 public:
  SinkConfigBuilder();
  // Sets `key` of `section` ("" = top level, "kafka.properties", ...) to a TOML value text, e.g. set("batch",
  // "max_events", "500"); replaces an earlier value.
  SinkConfigBuilder& set(const std::string& section, const std::string& key, const std::string& tomlValue);
  SinkConfigBuilder& kafkaProperty(const std::string& name, const std::string& value);
  SinkConfigBuilder& projection(const std::string& name, const std::string& topic, const std::string& eventType,
                                const std::string& sql, const std::vector<std::string>& params);
  // A projection of several statements, rendered as [[projection.statements]] tables.
  SinkConfigBuilder& projection(const std::string& name, const std::string& topic, const std::string& eventType,
                                const std::vector<SinkStatement>& statements);
  SinkConfigBuilder& metricsListen(const std::string& address);  // enables [metrics]
  const std::string& group() const { return group_; }
  std::string render() const;

 private:
  std::string group_;
  std::vector<std::pair<std::string, std::vector<std::pair<std::string, std::string>>>> sections_;
  std::vector<std::string> projections_;
};

// build/bin/outbox-sink --config FILE.
class SinkProcess : public ChildProcess {
 public:
  explicit SinkProcess(const std::string& configToml, const std::string& label = "sink");
  static std::unique_ptr<SinkProcess> start(const std::string& configToml, const std::string& label = "sink") {
    return std::make_unique<SinkProcess>(configToml, label);
  }
  // The admin server's address from the start-up log ("serving /metrics ... on HOST:PORT"), once it is there.
  std::optional<std::string> adminAddress() const;
};

// One order event as the relay publishes it.
struct TestEvent {
  std::string topic;
  std::string key;    // aggregateid
  std::string value;  // JSON payload
  std::string id;     // header "id"
  std::string type;   // header "eventType"
};

// Deterministic order events: mostly OrderCreated {orderId, customerId, total} for new orders, sometimes
// OrderCancelled {orderId, customerId} of an earlier, not yet cancelled order (same key, so after its creation).
class OrderStream {
 public:
  OrderStream(std::string topic, std::string prefix, unsigned seed = 7, int customers = 50);
  TestEvent next();

 private:
  std::string topic_;
  std::string prefix_;
  std::mt19937 random_;
  int customers_;
  int64_t orders_ = 0;
  int64_t events_ = 0;
  std::vector<std::pair<std::string, std::string>> open_;  // orderId, customerId
};

// Produces events with an idempotent producer (no duplicates from retries).
class EventProducer {
 public:
  explicit EventProducer(const std::string& bootstrap);
  ~EventProducer();
  EventProducer(const EventProducer&) = delete;
  EventProducer& operator=(const EventProducer&) = delete;
  void send(const TestEvent& event);
  void flush();  // throws when something was not delivered

 private:
  void* producer_ = nullptr;  // rd_kafka_t*
};

// Produces OrderStream events in a thread, `perRound` every `pause`, until stop(); remembers every event.
class BackgroundOrders {
 public:
  BackgroundOrders(OrderStream stream, int perRound, std::chrono::milliseconds pause);
  ~BackgroundOrders();
  // Stops, flushes, rethrows a failure of the thread and returns every event produced.
  std::vector<TestEvent> stop();
  int64_t produced() const { return produced_.load(); }

 private:
  OrderStream stream_;
  int perRound_;
  std::chrono::milliseconds pause_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> produced_{0};
  std::vector<TestEvent> events_;
  std::exception_ptr failure_;
  std::thread thread_;
};

// The read model of one test: <prefix>_orders (order_id PK, customer_id, total CHECK >= 0, status),
// <prefix>_counts (customer_id PK, created, cancelled: counters, so a double application shows) and
// <prefix>_applied (one row per applied event, no key: a double application shows as a repeated event_id).
class OrderReadModel {
 public:
  OrderReadModel(PgConnection& pg, const std::string& prefix);
  ~OrderReadModel();
  // Adds the five projections over `topic` to `config`.
  void addProjections(SinkConfigBuilder& config, const std::string& topic) const;
  // Compares the tables with the model computed from `events` (each event once); empty when exact, else the
  // first problems.
  std::string differences(const std::vector<TestEvent>& events);
  int64_t appliedRows();

 private:
  PgConnection& pg_;
  std::string prefix_;
};

// Sum of the next offsets `group` stored for `topic` (the records it has consumed past, every test topic starts
// at offset 0); waits until it reaches `expected`. A fresh connection per query: tests restart the database.
int64_t storedOffsetSum(const std::string& group, const std::string& topic);
bool waitForStoredOffsets(const std::string& group, const std::string& topic, int64_t expected,
                          std::chrono::milliseconds timeout);

// Produces every event and flushes.
void produceAll(const std::vector<TestEvent>& events);
std::vector<TestEvent> takeEvents(OrderStream& stream, int count);

}  // namespace outbox::test
