#pragma once
// Every metric of the relay, declared together (README "Metrics" documents each).
// prometheus-cpp: the registry is served on /metrics by the admin server. Label lookups take a lock in
// prometheus-cpp, so the per-event counters are resolved once per label set and cached.

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "src/RelayConfig.h"

namespace outbox {

struct SlotHealth;

class RelayMetrics {
  // First member: every metric below is registered in it while the constructor runs.
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();

 public:
  // Registers every metric. The series whose labels `config` already tells (per outbox table, for logical
  // messages, per static topic) are created at 0 here, so they are there from the first scrape.
  explicit RelayMetrics(const RelayConfig& config);
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // The `table` label of logical messages, in place of an outbox table's "schema.table".
  static constexpr std::string_view kMessageTable = "message";

  // A (table, topic) pair's counters, resolved once; its index travels with each Kafka message.
  struct EventLabels {
    prometheus::Counter* published = nullptr;  // acknowledged by Kafka
    prometheus::Counter* bytes = nullptr;
  };
  uint16_t eventLabels(std::string_view table, std::string_view topic);
  const EventLabels& labels(uint16_t index) const { return eventLabels_[index]; }

  enum class IgnoredOperation { Update, Delete, Truncate };
  prometheus::Counter& ignored(std::string_view table, IgnoredOperation operation);
  prometheus::Counter& deadLettered(std::string_view table);
  // Records Kafka refused for their content and sent to the dead-letter topic, by KafkaPublisher::rejectionName.
  prometheus::Counter& rejected(std::string_view reason);
  prometheus::Counter& publishErrors(std::string_view reason);
  prometheus::Counter& reconnects(std::string_view target);
  // outbox_relay_source_info{pgoutput_protocol, server_version} 1: the server connected to last and the pgoutput
  // protocol version asked of it. One series: a connection to another server version replaces it.
  void sourceInfo(int pgoutputProtocol, const std::string& serverVersion);
  // The slot-health series from a read of the slot's row (the lag probe's). NaN until the first read; a failed
  // probe leaves the last values. A missing row sets outbox_relay_slot_exists to 0 and leaves the others as the
  // slot was last seen.
  void slotHealth(const SlotHealth& slot);
  // The wal_status values and (PostgreSQL 17, 18) invalidation reasons exported from the start; another value the
  // server reports gets its own series when it first appears.
  static constexpr std::string_view kSlotWalStatuses[] = {"reserved", "extended", "unreserved", "lost"};
  static constexpr std::string_view kSlotInvalidationReasons[] = {"wal_removed", "rows_removed",
                                                                  "wal_level_insufficient", "idle_timeout"};

  prometheus::Counter& transactions;
  // Logical messages with the configured prefix that publish nothing: non-transactional ones (unless
  // messages.non_transactional = "publish"), and every one while [messages] is disabled.
  prometheus::Counter& messagesIgnoredNonTransactional;
  prometheus::Counter& messagesIgnoredDisabled;
  // Relation messages of a configured outbox table under another name (renamed while the relay streams it).
  prometheus::Counter& outboxRenamed;
  // The slot this process streamed from was gone at a reconnect (the relay then stops, exit status 2).
  prometheus::Counter& slotsLost;
  prometheus::Gauge& inflightEvents;
  prometheus::Gauge& inflightBytes;
  prometheus::Gauge& inflightTransactions;
  prometheus::Gauge& kafkaQueueMessages;
  prometheus::Gauge& confirmedFlushLsn;
  prometheus::Gauge& serverWalLsn;
  prometheus::Gauge& replicationLagBytes;
  prometheus::Gauge& sourceLagSeconds;
  prometheus::Histogram& commitToAckSeconds;
  prometheus::Gauge& postgresConnected;
  prometheus::Gauge& kafkaConnected;
  prometheus::Gauge& streaming;
  prometheus::Gauge& standby;  // waiting for a slot another relay holds
  prometheus::Gauge& lastLoopTimestamp;
  // Exactly-once mode: Kafka transactions by outcome, whether init_transactions succeeded (0 on a hot standby,
  // which never initialises the producer before it holds the slot), and the events a resuming relay skipped
  // because its committed progress says Kafka has them.
  prometheus::Counter& kafkaTransactionsCommitted;
  prometheus::Counter& kafkaTransactionsAborted;
  prometheus::Gauge& transactionalProducerReady;
  prometheus::Counter& replayedEventsSkipped;
  prometheus::Counter& traceContextsDropped;
  // Slot health (see slotHealth()).
  prometheus::Gauge& slotExists;
  prometheus::Gauge& slotActive;
  prometheus::Gauge& slotSafeWalSizeBytes;
  prometheus::Gauge& slotConflicting;
  prometheus::Gauge& slotInactiveSeconds;
  prometheus::Gauge& slotFailover;
  prometheus::Gauge& slotSynced;

 private:
  // Sets the series of `family` labelled `label` = `value` to 1 and every other one to 0 (none when `value` is "").
  void oneHot(prometheus::Family<prometheus::Gauge>& family,
              std::map<std::string, prometheus::Gauge*, std::less<>>& series, const char* label,
              std::string_view value);

  prometheus::Family<prometheus::Counter>& eventsPublishedFamily_;
  prometheus::Family<prometheus::Counter>& bytesPublishedFamily_;
  prometheus::Family<prometheus::Counter>& ignoredFamily_;
  prometheus::Family<prometheus::Counter>& deadLetteredFamily_;
  prometheus::Family<prometheus::Counter>& rejectedFamily_;
  prometheus::Family<prometheus::Counter>& publishErrorsFamily_;
  prometheus::Family<prometheus::Counter>& reconnectsFamily_;
  prometheus::Family<prometheus::Gauge>& sourceInfoFamily_;
  prometheus::Gauge* sourceInfo_ = nullptr;
  prometheus::Family<prometheus::Gauge>& slotWalStatusFamily_;
  prometheus::Family<prometheus::Gauge>& slotInvalidatedFamily_;
  std::map<std::string, prometheus::Gauge*, std::less<>> slotWalStatus_;
  std::map<std::string, prometheus::Gauge*, std::less<>> slotInvalidated_;
  std::vector<EventLabels> eventLabels_;
  struct PairLess {  // compares (table, topic) pairs of strings or string_views without allocating
    using is_transparent = void;
    template <class A, class B>
    bool operator()(const A& a, const B& b) const {
      return std::pair<std::string_view, std::string_view>(a.first, a.second) <
             std::pair<std::string_view, std::string_view>(b.first, b.second);
    }
  };
  std::map<std::pair<std::string, std::string>, uint16_t, PairLess> eventLabelIndex_;
};

}  // namespace outbox
