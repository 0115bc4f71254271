#pragma once
// The relay's configuration, loaded from TOML (see examples/relay.toml and README "Configuration").

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/ConfigSupport.h"
#include "common/Log.h"

namespace outbox {

struct SourceConfig {
  std::string conninfo;                     // libpq URI or key=value; the relay adds replication=database
  std::optional<std::string> passwordFile;  // read at start-up into `password`
  std::string password;                     // secret: never logged
  std::string slot = "outbox_relay";
  bool createSlot = true;
  std::string publication = "outbox_relay";
  bool createPublication = true;
  int statusIntervalMs = 10000;  // standby status update period
  int reconnectBackoffMinMs = 500;
  int reconnectBackoffMaxMs = 30000;
  int slotBusyRetryMs = 5000;    // hot standby: how often to retry a slot another relay holds
  int lagPollIntervalMs = 5000;  // how often to read pg_current_wal_lsn() for the lag metric
  // PostgreSQL 17+: the slot is created with FAILOVER (or switched to it), so a standby with
  // sync_replication_slots = on keeps a copy that survives a promotion (README "High availability").
  bool failover = false;
  // The slot is missing although this relay streamed from it (its checkpoint in Kafka, or this process, says so):
  // Fail stops with the gap named; Recreate creates a new slot at the current WAL position, counts the loss and
  // records the gap on the dead-letter topic.
  enum class OnSlotLost { Fail, Recreate };
  OnSlotLost onSlotLost = OnSlotLost::Fail;
};

struct KafkaConfig {
  std::string bootstrapServers;
  // Any librdkafka property, applied after the relay's defaults (so these win). Properties that would weaken a
  // delivery guarantee (guardedKafkaProperties) are refused unless `unsafeOverrides`.
  std::vector<std::pair<std::string, std::string>> properties;
  bool unsafeOverrides = false;  // TOML: kafka.unsafe_overrides
  // librdkafka properties whose value is read from a file (e.g. "sasl.password"); secret: never logged.
  std::vector<std::pair<std::string, std::string>> secretFiles;
  std::vector<std::pair<std::string, std::string>> secretValues;  // filled from secretFiles at load time

  // README "Guarantees". AtLeastOnce: the idempotent producer; a crash re-sends what Kafka may already have.
  // ExactlyOnce: librdkafka's transactional producer; each Kafka transaction carries whole PostgreSQL transactions
  // (one larger than the bounds below is split) and the relay's progress record, so a read_committed consumer sees
  // every event once across crashes and restarts.
  enum class Delivery { AtLeastOnce, ExactlyOnce };
  Delivery delivery = Delivery::AtLeastOnce;
  // Exactly-once only. Empty: "outbox-relay.<database>.<slot>", the database as the server names it.
  std::string transactionalId;
  // Compacted. Exactly-once: the progress record of each Kafka transaction, keyed by the transactional id.
  // At-least-once: the relay's checkpoint (its confirmed position), keyed by "outbox-relay.<database>.<slot>".
  std::string progressTopic = "outbox-relay.progress";
  // A Kafka transaction commits once it holds this many events or bytes or has been open this long, and as soon
  // as the WAL stream has nothing more at a PostgreSQL transaction boundary.
  uint64_t transactionMaxEvents = 10000;
  uint64_t transactionMaxBytes = 8ull * 1024 * 1024;
  int transactionMaxMs = 100;
  bool exactlyOnce() const { return delivery == Delivery::ExactlyOnce; }
};

// One outbox table and how its rows become Kafka records.
struct OutboxTableConfig {
  std::string schema = "public";
  std::string table;  // from `table = "schema.name"` or `"name"`
  std::string idColumn = "id";
  std::string aggregateTypeColumn = "aggregatetype";
  std::string aggregateIdColumn = "aggregateid";
  std::string typeColumn = "type";
  std::string payloadColumn = "payload";
  // The Kafka record's timestamp (Debezium's table.field.event.timestamp): a timestamptz/timestamp column (a
  // timestamp without time zone is taken as UTC) or an integer column of Unix epoch milliseconds. Empty (the
  // default), or NULL in a row: the commit time of the row's transaction.
  std::string timestampColumn;
  // The Kafka record's key (Debezium's table.field.event.key): nullopt (the default) = the aggregate id column;
  // a column name = that column (NULL in a row: no key); "" = no key at all.
  std::optional<std::string> keyColumn;
  // The record's partition (Debezium's partition placement): an integer column; NULL in a row (or unset): the
  // key's murmur2 partition.
  std::string partitionColumn;
  // W3C trace context (Debezium's tracing.span.context.field, e.g. "tracingspancontext"): a column holding a
  // traceparent, or Java Properties text with traceparent= and tracestate= lines (what Debezium's outbox extensions
  // write). Becomes the headers traceparent and tracestate. Empty: off.
  std::string tracingColumn;
  // Debezium's table.fields.additional.placement with "envelope": field name -> column. When any is set, the
  // record's value is a JSON object {"payload": <payload>, <field>: <column value>, ...} instead of the payload.
  std::vector<std::pair<std::string, std::string>> envelope;
  // CloudEvents 1.0 over Kafka: Binary adds the ce_* headers (ce_specversion, ce_id = the event id, ce_source,
  // ce_type = the type column, ce_time = the record timestamp) and content-type; Structured makes the value the
  // CloudEvent JSON itself (data = the payload), content-type application/cloudevents+json. The Debezium headers
  // (id, [outbox.headers]) stay in both. Not with [outbox.envelope].
  enum class CloudEvents { Off, Binary, Structured };
  CloudEvents cloudEvents = CloudEvents::Off;
  std::string cloudEventsSource = "outbox-relay";  // the ce source attribute (a URI-reference)
  // {column} placeholders are replaced by that column's value.
  std::string topicTemplate = "outbox.event.{aggregatetype}";
  // Kafka header name -> column name. The header "id" (the event id) is always set.
  std::vector<std::pair<std::string, std::string>> headers;
};

// pg_logical_emit_message(true, prefix, json) as an outbox without a table. Off by default: EXECUTE on
// pg_logical_emit_message is granted to PUBLIC unless revoked (schema/outbox.sql does), so with messages on, any
// login that may call it can publish an event (README "Security").
struct MessagesConfig {
  bool enabled = false;
  std::string prefix = "outbox";
  std::string topicTemplate = "outbox.event.{aggregatetype}";  // {field} from the JSON document
  std::vector<std::pair<std::string, std::string>> headers;    // header name -> JSON field
  // pg_logical_emit_message(false, ...): decoded when written, outside any transaction's fate (published even if
  // the writer rolls back, and ahead of the rows of its transaction). Ignored (and counted) unless "publish".
  enum class NonTransactional { Ignore, Publish };
  NonTransactional nonTransactional = NonTransactional::Ignore;
  // A message larger than this goes to the dead-letter topic without its content (librdkafka's default
  // message.max.bytes is 1000000).
  uint64_t maxBytes = 1000000;
};

struct LimitsConfig {
  uint64_t maxInflightEvents = 10000;
  uint64_t maxInflightBytes = 8ull * 1024 * 1024;
};

struct MetricsConfig {
  bool enabled = true;
  std::string listen = "0.0.0.0:9187";  // address:port for /metrics, /healthz, /readyz
};

struct LogConfig {
  log::Level level = log::Level::Info;
  log::Format format = log::Format::Plain;
};

struct RelayConfig {
  LogConfig log;
  SourceConfig source;
  KafkaConfig kafka;
  std::vector<OutboxTableConfig> outboxes;
  MessagesConfig messages;
  LimitsConfig limits;
  MetricsConfig metrics;
  // On SIGTERM/SIGINT: how long to wait for Kafka to acknowledge what is in flight before confirming and exiting.
  int shutdownTimeoutMs = 30000;
  // Where rows that cannot become a valid record go (TOML: dead_letter_topic at top level), with an "error"
  // header saying why: a NULL aggregate type, a topic name Kafka refuses, invalid message JSON.
  std::string deadLetterTopic = "outbox.deadletter";

  // The effective configuration as TOML (toml++'s formatter: keys sorted) with every secret replaced by
  // "<redacted>", for the start-up log.
  std::string redactedSummary() const;
};

// A librdkafka property the relay sets for a delivery guarantee (README "Guarantees").
struct GuardedKafkaProperty {
  std::vector<std::string_view> names;    // the property and its librdkafka aliases
  std::string_view relayValue;            // what the relay sets
  std::string_view guarantee;             // what a different value gives up
  bool (*keeps)(std::string_view value);  // whether a value keeps the guarantee
};
const std::vector<GuardedKafkaProperty>& guardedKafkaProperties();
// One warning per guarded property that [kafka.properties] overrides (with unsafe_overrides = true), naming the
// property, the value given and the guarantee given up; empty when none is overridden.
std::vector<std::string> unsafeOverrideWarnings(const KafkaConfig& kafka);

// Parses and validates a relay config file. Every problem is collected (not just the first), each with its
// line and column; unknown keys are errors.
ConfigLoadResult<RelayConfig> loadRelayConfig(const std::string& path);
ConfigLoadResult<RelayConfig> parseRelayConfig(std::string_view tomlText, const std::string& sourceName);

}  // namespace outbox
