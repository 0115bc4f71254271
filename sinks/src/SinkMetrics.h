#pragma once
// Every metric of outbox-sink, declared together (README "outbox-sink" lists them). Served on /metrics by the
// admin server. Label lookups lock inside prometheus-cpp, so per-projection counters are resolved once.

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "src/SinkConfig.h"

namespace outbox::sink {

class SinkMetrics {
  // First member: every metric below is registered in it while the constructor runs.
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();

 public:
  // Every series whose labels are known at start exists from the first scrape, at 0: the applied counter of each
  // of `projections` too.
  explicit SinkMetrics(const std::vector<ProjectionConfig>& projections);
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  prometheus::Counter& applied(const std::string& projection);
  // outbox_sink_db_errors_total{sqlstate_class}: "08", "25", ..., "none" for a connection that failed.
  prometheus::Counter& dbErrors(const std::string& sqlStateClass);
  // Sets the lag of one partition; removeLag() drops its series when the partition is revoked.
  void setLag(const std::string& topic, int32_t partition, int64_t lag);
  void removeLag(const std::string& topic, int32_t partition);

  prometheus::Counter& consumed;
  prometheus::Counter& skippedNoProjection;
  prometheus::Counter& skippedDuplicate;
  prometheus::Counter& deadLettered;
  prometheus::Counter& batches;
  prometheus::Histogram& batchSeconds;
  prometheus::Counter& dbRetries;
  prometheus::Counter& offsetConflicts;
  prometheus::Counter& dedupPruned;
  prometheus::Gauge& assignedPartitions;
  prometheus::Gauge& databaseConnected;
  prometheus::Gauge& databaseWaiting;
  prometheus::Gauge& kafkaUnavailable;
  prometheus::Gauge& lastLoopTimestamp;
  // Why Kafka is unavailable while kafkaUnavailable is 1, for /readyz: librdkafka's last error code and since when
  // (Unix seconds). Written by the event loop, read by the admin server's threads.
  std::atomic<int> kafkaError{0};
  std::atomic<int64_t> kafkaUnavailableSince{0};

 private:
  prometheus::Family<prometheus::Counter>& appliedFamily_;
  prometheus::Family<prometheus::Gauge>& lagFamily_;
  prometheus::Family<prometheus::Counter>& dbErrorsFamily_;
  std::map<std::string, prometheus::Counter*> appliedByProjection_;
  std::map<std::string, prometheus::Counter*> dbErrorsByClass_;
  std::map<std::pair<std::string, int32_t>, prometheus::Gauge*> lagByPartition_;
};

}  // namespace outbox::sink
