#include "src/RelayMetrics.h"

#include "common/MetricsSupport.h"

namespace outbox {

namespace {
using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

using metrics::counter;
using metrics::gauge;
}  // namespace

RelayMetrics::RelayMetrics()
    : transactions(counter(*registry_, "outbox_relay_transactions_total",
                           "Committed transactions received from PostgreSQL that touched an outbox.")),
      inflightEvents(gauge(*registry_, "outbox_relay_inflight_events",
                           "Events handed to Kafka and not yet acknowledged.")),
      inflightBytes(gauge(*registry_, "outbox_relay_inflight_bytes",
                          "Key and value bytes of events handed to Kafka and not yet acknowledged.")),
      kafkaQueueMessages(gauge(*registry_, "outbox_relay_kafka_queue_messages",
                               "Messages librdkafka holds (queued or awaiting a broker acknowledgement).")),
      confirmedFlushLsn(gauge(*registry_, "outbox_relay_confirmed_flush_lsn",
                              "The WAL position last confirmed to PostgreSQL, as a byte offset.")),
      serverWalLsn(gauge(*registry_, "outbox_relay_server_wal_lsn",
                         "PostgreSQL's current WAL position (pg_current_wal_lsn()), as a byte offset.")),
      replicationLagBytes(gauge(*registry_, "outbox_relay_replication_lag_bytes",
                                "Server WAL position minus the confirmed flush position, in bytes.")),
      sourceLagSeconds(gauge(*registry_, "outbox_relay_source_lag_seconds",
                             "Now minus the commit time of the newest fully acknowledged transaction (0 when idle).")),
      commitToAckSeconds(BuildHistogram()
                             .Name("outbox_relay_commit_to_ack_seconds")
                             .Help("Time from a transaction's commit in PostgreSQL to Kafka's acknowledgement of "
                                   "each of its events.")
                             .Register(*registry_)
                             .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025,
                                                                              0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                                                                              30, 60})),
      postgresConnected(gauge(*registry_, "outbox_relay_connected",
                              "1 while the connection to the target is up.", {{"target", "postgres"}})),
      kafkaConnected(BuildGauge()
                         .Name("outbox_relay_connected")
                         .Help("1 while the connection to the target is up.")
                         .Register(*registry_)
                         .Add({{"target", "kafka"}})),
      streaming(gauge(*registry_, "outbox_relay_streaming", "1 while streaming from the replication slot.")),
      standby(gauge(*registry_, "outbox_relay_standby",
                    "1 while waiting for a replication slot another relay holds (hot standby).")),
      lastLoopTimestamp(gauge(*registry_, "outbox_relay_last_loop_timestamp_seconds",
                              "Unix time of the event loop's last iteration.")),
      eventsPublishedFamily_(BuildCounter()
                                 .Name("outbox_relay_events_published_total")
                                 .Help("Outbox events acknowledged by Kafka, by outbox table and topic.")
                                 .Register(*registry_)),
      bytesPublishedFamily_(BuildCounter()
                                .Name("outbox_relay_published_bytes_total")
                                .Help("Key and value bytes of outbox events acknowledged by Kafka.")
                                .Register(*registry_)),
      ignoredFamily_(BuildCounter()
                         .Name("outbox_relay_events_ignored_total")
                         .Help("UPDATE, DELETE and TRUNCATE on outbox tables, which publish nothing.")
                         .Register(*registry_)),
      deadLetteredFamily_(BuildCounter()
                              .Name("outbox_relay_events_dead_lettered_total")
                              .Help("Outbox rows that could not become a valid record and went to the "
                                    "dead-letter topic.")
                              .Register(*registry_)),
      publishErrorsFamily_(BuildCounter()
                               .Name("outbox_relay_publish_errors_total")
                               .Help("Errors publishing to Kafka, by reason.")
                               .Register(*registry_)),
      reconnectsFamily_(BuildCounter()
                            .Name("outbox_relay_reconnects_total")
                            .Help("Connections lost and re-established, by target.")
                            .Register(*registry_)) {
  BuildGauge()
      .Name("outbox_relay_build_info")
      .Help("The relay's version (value 1).")
      .Register(*registry_)
      .Add({{"version", OUTBOX_RELAY_VERSION}})
      .Set(1);
  // Series that exist from the start read 0 instead of "no data" on dashboards, and rate()/increase() see their
  // first increment (a counter series born at 1 has no earlier sample to increase from).
  reconnects("postgres");
  reconnects("kafka");
  publishErrors("queue_full");
  publishErrors("produce_failed");
}

uint16_t RelayMetrics::eventLabels(std::string_view table, std::string_view topic) {
  auto it = eventLabelIndex_.find(std::pair<std::string_view, std::string_view>(table, topic));
  if (it != eventLabelIndex_.end()) return it->second;
  // Bounded cardinality: past 4096 (table, topic) pairs, further ones share one series with topic="other".
  bool overflow = eventLabels_.size() >= 4096;
  std::string key = overflow ? std::string() : std::string(topic);
  std::pair<std::string, std::string> labelKey(overflow ? std::string() : std::string(table), key);
  if (overflow) {
    auto other = eventLabelIndex_.find(labelKey);
    if (other != eventLabelIndex_.end()) return other->second;
  }
  std::string tableLabel = overflow ? "other" : std::string(table);
  std::string topicLabel = overflow ? "other" : std::string(topic);
  // A table's dead-letter counter starts at 0 once the table is seen (see the constructor on why).
  if (!overflow) deadLetteredFamily_.Add({{"table", tableLabel}});
  EventLabels labels;
  labels.published = &eventsPublishedFamily_.Add({{"table", tableLabel}, {"topic", topicLabel}});
  labels.bytes = &bytesPublishedFamily_.Add({{"table", tableLabel}, {"topic", topicLabel}});
  eventLabels_.push_back(labels);
  auto index = static_cast<uint16_t>(eventLabels_.size() - 1);
  eventLabelIndex_.emplace(std::move(labelKey), index);
  return index;
}

prometheus::Counter& RelayMetrics::ignored(std::string_view table, std::string_view operation) {
  return ignoredFamily_.Add({{"table", std::string(table)}, {"operation", std::string(operation)}});
}
prometheus::Counter& RelayMetrics::deadLettered(std::string_view table) {
  return deadLetteredFamily_.Add({{"table", std::string(table)}});
}
prometheus::Counter& RelayMetrics::publishErrors(std::string_view reason) {
  return publishErrorsFamily_.Add({{"reason", std::string(reason)}});
}
prometheus::Counter& RelayMetrics::reconnects(std::string_view target) {
  return reconnectsFamily_.Add({{"target", std::string(target)}});
}

}  // namespace outbox
