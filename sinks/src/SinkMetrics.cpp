#include "src/SinkMetrics.h"

#include "common/MetricsSupport.h"

namespace outbox::sink {

namespace {
using prometheus::BuildCounter;
using prometheus::BuildGauge;

using metrics::counter;
using metrics::gauge;
}  // namespace

// Poison events are not among them: they count as dead-lettered.
constexpr const char* kSkippedHelp =
    "Events committed past with no projection applied, by reason: duplicate (its id was applied before), "
    "no_projection (none matches).";

SinkMetrics::SinkMetrics(const std::vector<ProjectionConfig>& projections)
    : consumed(counter(*registry_, "outbox_sink_events_consumed_total",
                       "Records read from Kafka and handed to a batch (re-reads after a rewind count again).")),
      skippedNoProjection(
          counter(*registry_, "outbox_sink_events_skipped_total", kSkippedHelp, {{"reason", "no_projection"}})),
      skippedDuplicate(
          counter(*registry_, "outbox_sink_events_skipped_total", kSkippedHelp, {{"reason", "duplicate"}})),
      deadLettered(counter(*registry_, "outbox_sink_events_dead_lettered_total",
                           "Poison events sent to the dead-letter topic and committed past.")),
      batches(counter(*registry_, "outbox_sink_batches_total", "Batches committed to the read-model database.")),
      batchSeconds(metrics::secondsHistogram(
          *registry_, "outbox_sink_batch_seconds",
          "Time from staging a batch to its commit, dead letters included; committed batches only.")),
      dbRetries(counter(*registry_, "outbox_sink_db_retries_total",
                        "Batches that failed on a transient database error (or at COMMIT) and were retried from the "
                        "stored offsets.")),
      offsetConflicts(counter(*registry_, "outbox_sink_offset_conflicts_total",
                              "Batches rolled back because another instance had moved a partition's stored offset.")),
      dedupPruned(counter(*registry_, "outbox_sink_dedup_pruned_total",
                          "Processed-event ids deleted after the deduplication retention.")),
      assignedPartitions(gauge(*registry_, "outbox_sink_assigned_partitions",
                               "Partitions assigned to this instance by the consumer group.")),
      databaseConnected(gauge(*registry_, "outbox_sink_database_connected",
                              "1 while the connection to the read-model database is up.")),
      databaseWaiting(gauge(*registry_, "outbox_sink_database_waiting",
                            "1 while the sink waits out a database error that is not the data's fault (retried with "
                            "backoff, never dead-lettered; /readyz answers not ready); 0 again after a commit.")),
      kafkaUnavailable(gauge(*registry_, "outbox_sink_kafka_unavailable",
                             "1 while Kafka refuses the consumer or none of its brokers is up (authentication or TLS "
                             "failure, all brokers down; /readyz answers not ready); 0 again once it demonstrably "
                             "works: a record fetched, a partition assigned, a broker up in librdkafka's statistics.")),
      lastLoopTimestamp(gauge(*registry_, "outbox_sink_last_loop_timestamp_seconds",
                              "Unix time the event loop last went round (also while it waits out a backoff).")),
      appliedFamily_(BuildCounter()
                         .Name("outbox_sink_events_applied_total")
                         .Help("Committed applications of a projection to an event, by projection.")
                         .Register(*registry_)),
      lagFamily_(BuildGauge()
                     .Name("outbox_sink_consumer_lag")
                     .Help("Records in a partition after the committed position: high watermark minus the next "
                           "offset stored in the database (the low watermark while none is stored).")
                     .Register(*registry_)),
      dbErrorsFamily_(BuildCounter()
                          .Name("outbox_sink_db_errors_total")
                          .Help("Read-model database errors the sink waited out and retried (connecting, reading "
                                "offsets, a batch, its commit), by SQLSTATE class; \"none\": the connection failed.")
                          .Register(*registry_)) {
  metrics::buildInfo(*registry_, "outbox_sink_build_info", "The sink's version (value 1).");
  // Series that exist from the start read 0 instead of "no data" on dashboards, and rate()/increase() see their
  // first increment (a counter series born at 1 has no earlier sample to increase from). The lag of a partition
  // cannot be known before it is assigned.
  for (const ProjectionConfig& p : projections) applied(p.name);
}

prometheus::Counter& SinkMetrics::applied(const std::string& projection) {
  auto it = appliedByProjection_.find(projection);
  if (it != appliedByProjection_.end()) return *it->second;
  prometheus::Counter* c = &appliedFamily_.Add({{"projection", projection}});
  appliedByProjection_.emplace(projection, c);
  return *c;
}

prometheus::Counter& SinkMetrics::dbErrors(const std::string& sqlStateClass) {
  auto it = dbErrorsByClass_.find(sqlStateClass);
  if (it != dbErrorsByClass_.end()) return *it->second;
  prometheus::Counter* c = &dbErrorsFamily_.Add({{"sqlstate_class", sqlStateClass}});
  dbErrorsByClass_.emplace(sqlStateClass, c);
  return *c;
}

void SinkMetrics::setLag(const std::string& topic, int32_t partition, int64_t lag) {
  auto key = std::make_pair(topic, partition);
  auto it = lagByPartition_.find(key);
  if (it == lagByPartition_.end()) {
    prometheus::Gauge* g = &lagFamily_.Add({{"topic", topic}, {"partition", std::to_string(partition)}});
    it = lagByPartition_.emplace(key, g).first;
  }
  it->second->Set(static_cast<double>(lag));
}

void SinkMetrics::removeLag(const std::string& topic, int32_t partition) {
  auto it = lagByPartition_.find(std::make_pair(topic, partition));
  if (it == lagByPartition_.end()) return;
  lagFamily_.Remove(it->second);
  lagByPartition_.erase(it);
}

}  // namespace outbox::sink
