#include "src/RelayMetrics.h"

#include <limits>

#include "common/MetricsSupport.h"
#include "src/KafkaPublisher.h"
#include "src/ServerWalProbe.h"

namespace outbox {

namespace {
using prometheus::BuildCounter;
using prometheus::BuildGauge;

using metrics::counter;
using metrics::gauge;

constexpr const char* kMessagesIgnoredHelp =
    "Logical messages with the configured prefix that were not published, by reason: non_transactional "
    "(pg_logical_emit_message(false, ...), unless messages.non_transactional = \"publish\"), disabled ([messages] "
    "is off).";
constexpr const char* kConnectedHelp =
    "1 while the connection to the target is up (postgres: the replication connection; kafka: at least one broker).";
constexpr const char* kKafkaTransactionsHelp =
    "Exactly-once mode: Kafka transactions ended, by outcome: committed (its events and progress record visible to "
    "read_committed consumers), aborted (replayed from the last committed progress).";
constexpr double kUnknown = std::numeric_limits<double>::quiet_NaN();
}  // namespace

RelayMetrics::RelayMetrics(const RelayConfig& config)
    : transactions(counter(*registry_, "outbox_relay_transactions_total",
                           "Committed transactions received from the replication slot, counted at their Commit "
                           "(from PostgreSQL 15 on, pgoutput sends only those with a published change or a "
                           "logical message).")),
      messagesIgnoredNonTransactional(counter(*registry_, "outbox_relay_messages_ignored_total", kMessagesIgnoredHelp,
                                              {{"reason", "non_transactional"}})),
      messagesIgnoredDisabled(
          counter(*registry_, "outbox_relay_messages_ignored_total", kMessagesIgnoredHelp, {{"reason", "disabled"}})),
      outboxRenamed(counter(*registry_, "outbox_relay_outbox_renamed_total",
                            "Relation messages describing a configured outbox table under another name (renamed "
                            "while the relay streams it, matched by OID); its rows are still relayed.")),
      slotsLost(counter(*registry_, "outbox_relay_slot_lost_total",
                        "Reconnects that found the replication slot this process had streamed from gone; the relay "
                        "then stops with exit status 2 instead of creating a new slot.")),
      inflightEvents(
          gauge(*registry_, "outbox_relay_inflight_events", "Events handed to Kafka and not yet acknowledged.")),
      inflightBytes(gauge(*registry_, "outbox_relay_inflight_bytes",
                          "Key and value bytes of events handed to Kafka and not yet acknowledged.")),
      inflightTransactions(gauge(*registry_, "outbox_relay_inflight_transactions",
                                 "Entries of the acknowledger's ring: transactions (or runs of them folded "
                                 "together) not yet confirmable; at most the in-flight events plus 2.")),
      kafkaQueueMessages(gauge(*registry_, "outbox_relay_kafka_queue_messages",
                               "librdkafka's out-queue length (rd_kafka_outq_len): messages queued or awaiting a "
                               "broker acknowledgement, plus delivery reports and events not yet served.")),
      confirmedFlushLsn(gauge(*registry_, "outbox_relay_confirmed_flush_lsn",
                              "The WAL position last confirmed to PostgreSQL in a standby status update, as a "
                              "byte offset.")),
      serverWalLsn(gauge(*registry_, "outbox_relay_server_wal_lsn",
                         "PostgreSQL's current WAL position (pg_current_wal_lsn()), as a byte offset, read every "
                         "source.lag_poll_interval_ms.")),
      replicationLagBytes(gauge(*registry_, "outbox_relay_replication_lag_bytes",
                                "Server WAL position minus the position the relay can confirm (everything before "
                                "it acknowledged by Kafka), in bytes, as of the last WAL position read.")),
      sourceLagSeconds(gauge(*registry_, "outbox_relay_source_lag_seconds",
                             "Now minus the commit time of the oldest transaction whose events Kafka has not all "
                             "acknowledged yet (0 when none waits).")),
      commitToAckSeconds(
          metrics::secondsHistogram(*registry_, "outbox_relay_commit_to_ack_seconds",
                                    "Time from a transaction's commit in PostgreSQL to Kafka's acknowledgement of "
                                    "each of its events (logical messages outside a transaction have no commit "
                                    "time and are not observed).")),
      postgresConnected(gauge(*registry_, "outbox_relay_connected", kConnectedHelp, {{"target", "postgres"}})),
      kafkaConnected(gauge(*registry_, "outbox_relay_connected", kConnectedHelp, {{"target", "kafka"}})),
      streaming(gauge(*registry_, "outbox_relay_streaming", "1 while streaming from the replication slot.")),
      standby(gauge(*registry_, "outbox_relay_standby",
                    "1 while waiting for a replication slot another relay holds (hot standby).")),
      lastLoopTimestamp(gauge(*registry_, "outbox_relay_last_loop_timestamp_seconds",
                              "Unix time of the event loop's last iteration.")),
      kafkaTransactionsCommitted(counter(*registry_, "outbox_relay_kafka_transactions_total", kKafkaTransactionsHelp,
                                         {{"outcome", "committed"}})),
      kafkaTransactionsAborted(counter(*registry_, "outbox_relay_kafka_transactions_total", kKafkaTransactionsHelp,
                                       {{"outcome", "aborted"}})),
      transactionalProducerReady(gauge(*registry_, "outbox_relay_transactional_producer_ready",
                                       "Exactly-once mode: 1 once init_transactions succeeded (after the relay took "
                                       "the slot; 0 on a hot standby).")),
      replayedEventsSkipped(counter(*registry_, "outbox_relay_replayed_events_skipped_total",
                                    "Exactly-once mode: events the slot sent again that the committed progress "
                                    "record shows Kafka has already; skipped, not published twice.")),
      traceContextsDropped(counter(*registry_, "outbox_relay_trace_contexts_dropped_total",
                                   "Rows whose tracing_column held no valid W3C trace context (a malformed "
                                   "traceparent or tracestate): published without it.")),
      slotExists(gauge(*registry_, "outbox_relay_slot_exists",
                       "1 while the replication slot (source.slot) has a row in pg_replication_slots, 0 when it is "
                       "gone; read every source.lag_poll_interval_ms, NaN until the first read.")),
      slotActive(gauge(*registry_, "outbox_relay_slot_active",
                       "1 while a walsender streams from the replication slot (this relay or the one holding it).")),
      slotSafeWalSizeBytes(gauge(*registry_, "outbox_relay_slot_safe_wal_size_bytes",
                                 "pg_replication_slots.safe_wal_size: bytes of WAL the server can write before the "
                                 "slot is in danger of being lost (max_slot_wal_keep_size); NaN when unlimited "
                                 "(max_slot_wal_keep_size = -1) or the slot is lost.")),
      slotConflicting(gauge(*registry_, "outbox_relay_slot_conflicting",
                            "1 when the slot was invalidated by a recovery conflict (pg_replication_slots.conflicting, "
                            "PostgreSQL 16+; 0 before).")),
      slotInactiveSeconds(gauge(*registry_, "outbox_relay_slot_inactive_seconds",
                                "Seconds since the slot became inactive (now() - inactive_since, PostgreSQL 17+), "
                                "0 while active; before 17, NaN while inactive.")),
      slotFailover(gauge(*registry_, "outbox_relay_slot_failover",
                         "1 when the slot is synchronised to standbys (pg_replication_slots.failover, PostgreSQL 17+; "
                         "0 before).")),
      slotSynced(gauge(*registry_, "outbox_relay_slot_synced",
                       "1 when the slot read is a standby's copy synchronised from the primary "
                       "(pg_replication_slots.synced, PostgreSQL 17+; 0 before).")),
      eventsPublishedFamily_(BuildCounter()
                                 .Name("outbox_relay_events_published_total")
                                 .Help("Outbox events acknowledged by Kafka, by outbox table (\"message\" for "
                                       "logical messages) and topic.")
                                 .Register(*registry_)),
      bytesPublishedFamily_(BuildCounter()
                                .Name("outbox_relay_published_bytes_total")
                                .Help("Key and value bytes of outbox events acknowledged by Kafka.")
                                .Register(*registry_)),
      ignoredFamily_(BuildCounter()
                         .Name("outbox_relay_events_ignored_total")
                         .Help("UPDATE, DELETE and TRUNCATE changes of outbox tables received, which publish "
                               "nothing (a publication with publish = 'insert' sends none).")
                         .Register(*registry_)),
      deadLetteredFamily_(BuildCounter()
                              .Name("outbox_relay_events_dead_lettered_total")
                              .Help("Outbox rows and logical messages that could not become a valid record and "
                                    "were sent to the dead-letter topic instead, by outbox table (\"message\" for "
                                    "logical messages).")
                              .Register(*registry_)),
      rejectedFamily_(BuildCounter()
                          .Name("outbox_relay_rejected_total")
                          .Help("Records Kafka refused for their own content and sent to the dead-letter topic "
                                "instead (counted once the dead-letter record is acknowledged), by reason: "
                                "too_large (without its payload), unknown_topic, invalid_topic, invalid_record.")
                          .Register(*registry_)),
      publishErrorsFamily_(BuildCounter()
                               .Name("outbox_relay_publish_errors_total")
                               .Help("Errors publishing to Kafka, by reason: queue_full (retried), produce_failed "
                                     "or the librdkafka error name of a failed delivery (both stop the relay).")
                               .Register(*registry_)),
      reconnectsFamily_(BuildCounter()
                            .Name("outbox_relay_reconnects_total")
                            .Help("Connections lost, by target: postgres counts every failed or broken "
                                  "replication connection (retried with backoff), kafka every return of the "
                                  "brokers after all were unreachable.")
                            .Register(*registry_)),
      sourceInfoFamily_(BuildGauge()
                            .Name("outbox_relay_source_info")
                            .Help("1, labelled with the PostgreSQL server version (major.minor) last connected to "
                                  "and the pgoutput protocol version the relay asked of it (1 on 13, 2 on 14, 3 on "
                                  "15, 4 on 16+); absent until the first connection.")
                            .Register(*registry_)),
      slotWalStatusFamily_(BuildGauge()
                               .Name("outbox_relay_slot_wal_status")
                               .Help("1 for the replication slot's pg_replication_slots.wal_status, 0 for the others: "
                                     "reserved, extended (past max_wal_size, within max_slot_wal_keep_size), "
                                     "unreserved (WAL it needs is due for removal at the next checkpoint), lost.")
                               .Register(*registry_)),
      slotInvalidatedFamily_(BuildGauge()
                                 .Name("outbox_relay_slot_invalidated")
                                 .Help("1 for the reason the replication slot was invalidated, 0 for the others: "
                                       "pg_replication_slots.invalidation_reason on PostgreSQL 17+; before, "
                                       "wal_removed for wal_status lost, and on 16 conflict for a conflicting slot.")
                                 .Register(*registry_)) {
  metrics::buildInfo(*registry_, "outbox_relay_build_info", "The relay's version (value 1).");
  // Series that exist from the start read 0 instead of "no data" on dashboards, and rate()/increase() see their
  // first increment (a counter series born at 1 has no earlier sample to increase from). So every series whose
  // labels are known before the first event is created here: both targets, the publish errors the relay names
  // itself (a failed delivery's reason is librdkafka's error name, known only when it happens), and per outbox.
  reconnects("postgres");
  reconnects("kafka");
  // Slot health is unknown until the lag probe has read the slot: NaN, which no alert's comparison matches.
  for (prometheus::Gauge* g : {&slotExists, &slotActive, &slotSafeWalSizeBytes, &slotConflicting, &slotInactiveSeconds,
                               &slotFailover, &slotSynced}) {
    g->Set(kUnknown);
  }
  for (std::string_view status : kSlotWalStatuses) {
    slotWalStatus_.emplace(status, &slotWalStatusFamily_.Add({{"status", std::string(status)}}))
        .first->second->Set(kUnknown);
  }
  for (std::string_view reason : kSlotInvalidationReasons) {
    slotInvalidated_.emplace(reason, &slotInvalidatedFamily_.Add({{"reason", std::string(reason)}}))
        .first->second->Set(kUnknown);
  }
  publishErrors("queue_full");
  publishErrors("produce_failed");
  for (auto rejection : KafkaPublisher::kRejections) rejected(KafkaPublisher::rejectionName(rejection));
  // A topic template without placeholders is the topic itself (the config check allows braces only around
  // placeholders); any other topic is known only when an event names it.
  auto staticTopic = [](const std::string& topicTemplate) { return topicTemplate.find('{') == std::string::npos; };
  for (const OutboxTableConfig& outbox : config.outboxes) {
    std::string table = outbox.schema + "." + outbox.table;  // as OutboxRouter names it
    for (auto operation : {IgnoredOperation::Update, IgnoredOperation::Delete, IgnoredOperation::Truncate}) {
      ignored(table, operation);
    }
    deadLettered(table);
    if (staticTopic(outbox.topicTemplate)) eventLabels(table, outbox.topicTemplate);
  }
  if (config.messages.enabled) {
    deadLettered(kMessageTable);
    if (staticTopic(config.messages.topicTemplate)) eventLabels(kMessageTable, config.messages.topicTemplate);
  }
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
  EventLabels labels;
  labels.published = &eventsPublishedFamily_.Add({{"table", tableLabel}, {"topic", topicLabel}});
  labels.bytes = &bytesPublishedFamily_.Add({{"table", tableLabel}, {"topic", topicLabel}});
  eventLabels_.push_back(labels);
  auto index = static_cast<uint16_t>(eventLabels_.size() - 1);
  eventLabelIndex_.emplace(std::move(labelKey), index);
  return index;
}

prometheus::Counter& RelayMetrics::ignored(std::string_view table, IgnoredOperation operation) {
  const char* name = operation == IgnoredOperation::Update   ? "update"
                     : operation == IgnoredOperation::Delete ? "delete"
                                                             : "truncate";
  return ignoredFamily_.Add({{"table", std::string(table)}, {"operation", name}});
}
prometheus::Counter& RelayMetrics::deadLettered(std::string_view table) {
  return deadLetteredFamily_.Add({{"table", std::string(table)}});
}
prometheus::Counter& RelayMetrics::rejected(std::string_view reason) {
  return rejectedFamily_.Add({{"reason", std::string(reason)}});
}
prometheus::Counter& RelayMetrics::publishErrors(std::string_view reason) {
  return publishErrorsFamily_.Add({{"reason", std::string(reason)}});
}
prometheus::Counter& RelayMetrics::reconnects(std::string_view target) {
  return reconnectsFamily_.Add({{"target", std::string(target)}});
}
void RelayMetrics::sourceInfo(int pgoutputProtocol, const std::string& serverVersion) {
  prometheus::Gauge& current = sourceInfoFamily_.Add(
      {{"pgoutput_protocol", std::to_string(pgoutputProtocol)}, {"server_version", serverVersion}});
  if (sourceInfo_ && sourceInfo_ != &current) sourceInfoFamily_.Remove(sourceInfo_);
  sourceInfo_ = &current;
  current.Set(1);
}

void RelayMetrics::oneHot(prometheus::Family<prometheus::Gauge>& family,
                          std::map<std::string, prometheus::Gauge*, std::less<>>& series, const char* label,
                          std::string_view value) {
  if (!value.empty() && series.find(value) == series.end()) {
    series.emplace(std::string(value), &family.Add({{label, std::string(value)}}));
  }
  for (auto& [name, gauge] : series) gauge->Set(name == value ? 1 : 0);
}

void RelayMetrics::slotHealth(const SlotHealth& slot) {
  slotExists.Set(slot.exists ? 1 : 0);
  if (!slot.exists) return;  // nothing else to read: the series keep how the slot was last seen
  slotActive.Set(slot.active ? 1 : 0);
  oneHot(slotWalStatusFamily_, slotWalStatus_, "status", slot.walStatus);
  slotSafeWalSizeBytes.Set(slot.safeWalSize ? static_cast<double>(*slot.safeWalSize) : kUnknown);
  slotConflicting.Set(slot.conflicting ? 1 : 0);
  oneHot(slotInvalidatedFamily_, slotInvalidated_, "reason", slot.invalidationReason);
  slotInactiveSeconds.Set(slot.inactiveSeconds.value_or(kUnknown));
  slotFailover.Set(slot.failover ? 1 : 0);
  slotSynced.Set(slot.synced ? 1 : 0);
}

}  // namespace outbox
