#pragma once
// outbox-sink's configuration, loaded from TOML (see examples/sink.toml and README "outbox-sink").
// Parsed with the ConfigReader the relay uses: ${VAR} expansion, secrets from files, unknown keys are errors,
// every problem reported with its line and column.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/ConfigSupport.h"
#include "common/Log.h"

namespace outbox::sink {

struct SinkDatabaseConfig {
  std::string conninfo;                     // libpq URI or key=value string of the read-model database
  std::optional<std::string> passwordFile;  // read at start-up into `password`
  std::string password;                     // secret: never logged
  bool createTables = true;                 // CREATE TABLE IF NOT EXISTS the sink's own tables at start-up
  std::string schema = "public";            // where outbox_sink_offsets / outbox_sink_processed_events live
  // The projections' search_path ("view_v2, public"), set on every connection: the same projections build a
  // read model in another schema (a rebuild beside the live version). Empty: the database's default.
  std::vector<std::string> searchPath;
  int reconnectBackoffMinMs = 200;
  int reconnectBackoffMaxMs = 10000;
};

struct SinkKafkaConfig {
  std::string bootstrapServers;
  std::string groupId = "outbox-sink";
  // Topic names, or regular expressions starting with "^". Empty: the topics of the projections.
  std::vector<std::string> topics;
  std::string eventTypeHeader = "eventType";
  // Where a partition starts when the database holds no offset for it: "earliest" or "latest".
  std::string initialOffset = "earliest";
  std::vector<std::pair<std::string, std::string>> properties;    // any librdkafka property
  std::vector<std::pair<std::string, std::string>> secretFiles;   // property -> file path
  std::vector<std::pair<std::string, std::string>> secretValues;  // filled from secretFiles; never logged
};

struct BatchConfig {
  int maxEvents = 500;  // 1 turns batching off: one transaction per event
  int maxWaitMs = 100;  // how long a partial batch may wait for more events
};

struct DeduplicationConfig {
  bool enabled = false;
  std::string idHeader = "id";
  int64_t retentionHours = 168;
  int64_t pruneIntervalMs = 600000;
};

enum class OnError { DeadLetter, Stop };

// One statement of a multi-statement projection ([[projection.statements]]).
struct StatementConfig {
  std::string sql;                  // a statement with $1..$n
  std::vector<std::string> params;  // as ProjectionConfig::params
};

struct ProjectionConfig {
  std::string name;   // label of the applied-events metric
  std::string topic;  // a topic name, or a regular expression starting with "^"
  // Values of the event type header it applies to (TOML: event_type = "X", or event_types = ["X", "Y"]);
  // "*" = any event, with or without the header.
  std::vector<std::string> eventTypes;
  // Either one statement (TOML: sql + params, as here) or several ([[projection.statements]], each with its own sql
  // + params), never both.
  std::string sql;                  // a statement with $1..$n
  std::vector<std::string> params;  // JSON pointers into the payload ("/customerId") or record attributes ("@key")
  std::vector<StatementConfig> statements;  // run in order, in the event's unit; empty: the one of sql + params
};

struct SinkMetricsConfig {
  bool enabled = true;
  std::string listen = "0.0.0.0:9188";
  int lagIntervalMs = 5000;
};

struct SinkConfig {
  log::Level logLevel = log::Level::Info;
  log::Format logFormat = log::Format::Plain;
  SinkDatabaseConfig database;
  SinkKafkaConfig kafka;
  BatchConfig batch;
  DeduplicationConfig deduplication;
  OnError onError = OnError::DeadLetter;
  std::string deadLetterTopic = "outbox.sink.deadletter";
  int deadLetterFlushTimeoutMs = 30000;
  std::vector<ProjectionConfig> projections;
  SinkMetricsConfig metrics;
  int shutdownTimeoutMs = 30000;

  // The topics to subscribe to: kafka.topics, or else every projection's topic (first occurrence order).
  std::vector<std::string> subscription() const;
  // The effective configuration as TOML with every secret replaced by "<redacted>", for the start-up log.
  std::string redactedSummary() const;
};

// Parses and validates a sink config. Every problem is collected, each with its line and column.
ConfigLoadResult<SinkConfig> parseSinkConfig(std::string_view tomlText, const std::string& sourceName);
ConfigLoadResult<SinkConfig> loadSinkConfig(const std::string& path);

// The highest $n a statement uses and whether every $1..$n appears; quoted literals, quoted identifiers and
// comments are skipped. Exposed for tests.
struct SqlParameters {
  int highest = 0;
  std::vector<int> unused;  // numbers below `highest` that never appear
};
SqlParameters scanSqlParameters(std::string_view sql);

}  // namespace outbox::sink
