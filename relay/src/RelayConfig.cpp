#include "src/RelayConfig.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "common/AdminServer.h"
#include "common/KafkaTopicName.h"

namespace outbox {

namespace {

constexpr int kIntMax = std::numeric_limits<int>::max();

// Replication slot names: lowercase letters, digits and '_', at most NAMEDATALEN-1 = 63 bytes
// (https://www.postgresql.org/docs/current/warm-standby.html#STREAMING-REPLICATION-SLOTS-MANIPULATION).
bool isSlotName(std::string_view name) {
  return !name.empty() && name.size() <= 63 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

void checkSlotName(ConfigTable& table, std::string_view key, const std::string& value, std::string_view what) {
  if (isSlotName(value)) return;
  table.invalid(key, fmt::format("must match [a-z0-9_]{{1,63}}, got {}; a {} name may only hold lowercase letters, "
                                 "digits and '_', at most 63 of them",
                                 tomlQuote(value), what));
}

// The {placeholders} of a topic template, or nullopt with `error` set when the template is malformed.
// Outside placeholders, only characters Kafka allows in topic names may appear.
std::optional<std::vector<std::string>> templatePlaceholders(std::string_view text, std::string& error) {
  std::vector<std::string> names;
  if (text.empty()) {
    error = "must not be empty; give a Kafka topic name";
    return std::nullopt;
  }
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '{') {
      size_t close = text.find_first_of("{}", i + 1);
      if (close == std::string_view::npos || text[close] != '}') {
        error =
            fmt::format("the '{{' at position {} of {} has no matching '}}'; write {{name}}", i + 1, tomlQuote(text));
        return std::nullopt;
      }
      std::string name(text.substr(i + 1, close - i - 1));
      if (name.empty()) {
        error = fmt::format("{} has an empty placeholder {{}}; write {{name}}", tomlQuote(text));
        return std::nullopt;
      }
      names.push_back(std::move(name));
      i = close;
    } else if (c == '}') {
      error = fmt::format("the '}}' at position {} of {} has no matching '{{'", i + 1, tomlQuote(text));
      return std::nullopt;
    } else if (!isKafkaTopicChar(c)) {
      error = fmt::format("{} holds '{}', but Kafka topic names may only contain letters, digits, '.', '_' and '-'",
                          tomlQuote(text), c);
      return std::nullopt;
    }
  }
  return names;
}

void readSource(ConfigTable root, SourceConfig& out) {
  ConfigTable t = root.table("source");
  t.require("conninfo", out.conninfo);
  t.getSecretFile("password_file", out.passwordFile, out.password);
  if (t.get("slot", out.slot)) checkSlotName(t, "slot", out.slot, "replication slot");
  t.get("create_slot", out.createSlot);
  if (t.get("publication", out.publication)) checkSlotName(t, "publication", out.publication, "publication");
  t.get("create_publication", out.createPublication);
  t.get("status_interval_ms", out.statusIntervalMs, 1);
  bool minSet = t.get("reconnect_backoff_min_ms", out.reconnectBackoffMinMs, 1);
  t.get("reconnect_backoff_max_ms", out.reconnectBackoffMaxMs, 1);
  if (out.reconnectBackoffMinMs > out.reconnectBackoffMaxMs) {
    std::string_view key = minSet ? "reconnect_backoff_min_ms" : "reconnect_backoff_max_ms";
    t.invalid(key, fmt::format("reconnect_backoff_min_ms ({}) must not exceed reconnect_backoff_max_ms ({}); "
                               "lower the minimum or raise the maximum",
                               out.reconnectBackoffMinMs, out.reconnectBackoffMaxMs));
  }
  t.get("slot_busy_retry_ms", out.slotBusyRetryMs, 1);
  t.get("lag_poll_interval_ms", out.lagPollIntervalMs, 1);
  t.get("failover", out.failover);
  std::string onSlotLost;
  if (t.get("on_slot_lost", onSlotLost)) {
    if (onSlotLost == "fail") {
      out.onSlotLost = SourceConfig::OnSlotLost::Fail;
    } else if (onSlotLost == "recreate") {
      out.onSlotLost = SourceConfig::OnSlotLost::Recreate;
    } else {
      t.invalid("on_slot_lost", fmt::format("must be \"fail\" or \"recreate\", got {}", tomlQuote(onSlotLost)));
    }
  }
}

const GuardedKafkaProperty* guardedProperty(std::string_view name) {
  for (const GuardedKafkaProperty& guarded : guardedKafkaProperties()) {
    if (std::find(guarded.names.begin(), guarded.names.end(), name) != guarded.names.end()) return &guarded;
  }
  return nullptr;
}

void readKafka(ConfigTable root, KafkaConfig& out) {
  ConfigTable t = root.table("kafka");
  t.require("bootstrap_servers", out.bootstrapServers);
  t.get("unsafe_overrides", out.unsafeOverrides);
  std::string delivery;
  if (t.get("delivery", delivery)) {
    if (delivery == "at_least_once") {
      out.delivery = KafkaConfig::Delivery::AtLeastOnce;
    } else if (delivery == "exactly_once") {
      out.delivery = KafkaConfig::Delivery::ExactlyOnce;
    } else {
      t.invalid("delivery", fmt::format("must be \"at_least_once\" or \"exactly_once\", got {}", tomlQuote(delivery)));
    }
  }
  const bool exactlyOnce = out.exactlyOnce();
  auto onlyExactlyOnce = [&](std::string_view key) {
    if (!exactlyOnce && t.has(key)) {
      t.invalid(key, "applies only with delivery = \"exactly_once\"; set that, or remove this key");
    }
  };
  for (std::string_view key : {"transactional_id", "transaction_max_events",
                               "transaction_max_bytes", "transaction_max_ms"}) {
    onlyExactlyOnce(key);
  }
  if (t.get("transactional_id", out.transactionalId) &&
      (out.transactionalId.empty() || out.transactionalId.size() > 249)) {
    t.invalid("transactional_id", "must be 1 to 249 characters; it names this relay's Kafka transactions");
  }
  if (t.get("progress_topic", out.progressTopic)) {
    if (auto error = kafkaTopicNameError(out.progressTopic)) t.invalid("progress_topic", *error);
  }
  t.get("transaction_max_events", out.transactionMaxEvents, 1, uint64_t{10000000});
  t.get("transaction_max_bytes", out.transactionMaxBytes, 1, uint64_t{1} << 31);
  // Below the broker's transaction.timeout.ms bound (librdkafka's transaction.timeout.ms default is 60 s).
  t.get("transaction_max_ms", out.transactionMaxMs, 1, 30000);

  ConfigTable properties = t.table("properties");
  for (auto& [name, value] : properties.entries(EntryValues::Scalars)) {
    if (name == "bootstrap.servers" || name == "metadata.broker.list") {
      properties.invalid(name, "is set by kafka.bootstrap_servers; set that instead and remove this property");
      continue;
    }
    if (name == "transactional.id") {
      properties.invalid(name, "is set by the relay in exactly-once mode: set delivery = \"exactly_once\" (and "
                               "transactional_id, if the default does not suit) in [kafka] instead");
      continue;
    }
    const GuardedKafkaProperty* guarded = guardedProperty(name);
    if (guarded != nullptr && !out.unsafeOverrides && !guarded->keeps(value)) {
      properties.invalid(
          name, fmt::format("{} would break a delivery guarantee: {}; the relay sets {} = {}. Remove "
                            "the property, or set unsafe_overrides = true in [kafka] to give the "
                            "guarantee up knowingly",
                            tomlQuote(value), guarded->guarantee, guarded->names.front(), guarded->relayValue));
      continue;
    }
    out.properties.emplace_back(name, value);
  }

  readKafkaSecretFiles(t.table("secret_files"), properties, "relay", out.secretFiles, out.secretValues);
}

void checkColumn(ConfigTable& t, std::string_view key, const std::string& value) {
  if (value.empty()) t.invalid(key, "must not be empty; give a column name of the outbox table");
}

void checkTopic(ConfigTable& t, const std::string& topic, const std::vector<std::string>* allowed,
                std::string_view what) {
  std::string error;
  std::optional<std::vector<std::string>> names = templatePlaceholders(topic, error);
  if (!names) {
    t.invalid("topic", error);
    return;
  }
  if (allowed == nullptr) return;
  for (const std::string& name : *names) {
    if (std::find(allowed->begin(), allowed->end(), name) != allowed->end()) continue;
    std::vector<std::string> choices;
    for (const std::string& a : *allowed) choices.push_back("{" + a + "}");
    std::string problem = t.has("topic") ? fmt::format("{{{}}} is not a {}", name, what)
                                         : fmt::format("the default topic {} uses {{{}}}, which is not a {}",
                                                       tomlQuote(topic), name, what);
    t.invalid("topic", fmt::format("{}; use one of {} in topic, or map the column as a header", problem,
                                   fmt::join(choices, ", ")));
  }
}

void checkHeaderNames(ConfigTable& headers, const std::vector<std::pair<std::string, std::string>>& entries,
                      std::string_view valueKind) {
  for (auto& [header, value] : entries) {
    if (header == "id") {
      headers.invalid(header, "the header \"id\" always carries the event id; choose another header name");
    } else if (header.empty()) {
      headers.invalid(header, "a header name must not be empty");
    } else if (value.empty()) {
      headers.invalid(header, fmt::format("must name a {}, got \"\"", valueKind));
    }
  }
}

void readOutboxes(ConfigTable root, std::vector<OutboxTableConfig>& out) {
  std::vector<std::pair<std::string, std::string>> seen;  // "schema.table" -> path of its first definition
  for (ConfigTable t : root.tables("outbox")) {
    OutboxTableConfig o;
    std::string name;
    if (t.require("table", name)) {
      size_t dot = name.find('.');
      std::string schema = dot == std::string::npos ? "public" : name.substr(0, dot);
      std::string table = dot == std::string::npos ? name : name.substr(dot + 1);
      if (schema.empty() || table.empty() || table.find('.') != std::string::npos) {
        t.invalid("table", fmt::format("must be \"schema.name\" or \"name\" (schema public), got {}", tomlQuote(name)));
      } else {
        o.schema = schema;
        o.table = table;
        std::string qualified = schema + "." + table;
        auto previous = std::find_if(seen.begin(), seen.end(), [&](const auto& s) { return s.first == qualified; });
        if (previous != seen.end()) {
          t.invalid("table", fmt::format("{} is already configured in {}; configure each table once",
                                         tomlQuote(qualified), previous->second));
        } else {
          seen.emplace_back(qualified, t.path());
        }
      }
    }
    if (t.get("id_column", o.idColumn)) checkColumn(t, "id_column", o.idColumn);
    if (t.get("aggregatetype_column", o.aggregateTypeColumn)) {
      checkColumn(t, "aggregatetype_column", o.aggregateTypeColumn);
    }
    if (t.get("aggregateid_column", o.aggregateIdColumn)) checkColumn(t, "aggregateid_column", o.aggregateIdColumn);
    if (t.get("type_column", o.typeColumn)) checkColumn(t, "type_column", o.typeColumn);
    if (t.get("payload_column", o.payloadColumn)) checkColumn(t, "payload_column", o.payloadColumn);
    if (t.get("timestamp_column", o.timestampColumn)) checkColumn(t, "timestamp_column", o.timestampColumn);
    if (std::string key; t.get("key_column", key)) o.keyColumn = key;  // "" = records without a key
    if (t.get("partition_column", o.partitionColumn)) checkColumn(t, "partition_column", o.partitionColumn);
    if (t.get("tracing_column", o.tracingColumn)) checkColumn(t, "tracing_column", o.tracingColumn);
    bool topicSet = t.has("topic");
    bool topicOk = t.get("topic", o.topicTemplate) || !topicSet;

    ConfigTable headers = t.table("headers");
    o.headers = headers.entries(EntryValues::Strings);
    checkHeaderNames(headers, o.headers, "column");
    if (std::string mode; t.get("cloudevents", mode)) {
      if (mode == "binary") {
        o.cloudEvents = OutboxTableConfig::CloudEvents::Binary;
      } else if (mode == "structured") {
        o.cloudEvents = OutboxTableConfig::CloudEvents::Structured;
      } else if (mode != "off") {
        t.invalid("cloudevents", fmt::format("must be \"off\", \"binary\" or \"structured\", got {}", tomlQuote(mode)));
      }
    }
    if (t.get("cloudevents_source", o.cloudEventsSource) && o.cloudEventsSource.empty()) {
      t.invalid("cloudevents_source", "must not be empty: CloudEvents requires a source (a URI-reference, e.g. "
                                      "\"/orders-service\")");
    }
    ConfigTable envelope = t.table("envelope");
    o.envelope = envelope.entries(EntryValues::Strings);
    if (!o.envelope.empty() && o.cloudEvents != OutboxTableConfig::CloudEvents::Off) {
      t.invalid("cloudevents", "cannot be combined with [outbox.envelope]: put the extra fields in [outbox.headers], "
                               "which CloudEvents keeps");
    }
    for (auto& [field, column] : o.envelope) {
      if (field == "payload") {
        envelope.invalid(field, "the envelope's \"payload\" field is the payload itself; choose another field name");
      } else if (field.empty()) {
        envelope.invalid(field, "a field name must not be empty");
      } else if (column.empty()) {
        envelope.invalid(field, "must name a column, got \"\"");
      }
    }

    if (topicOk) {
      std::vector<std::string> columns = {o.aggregateTypeColumn, o.aggregateIdColumn, o.typeColumn, o.idColumn,
                                          o.payloadColumn};
      for (auto& [header, column] : o.headers) {
        if (std::find(columns.begin(), columns.end(), column) == columns.end()) columns.push_back(column);
      }
      checkTopic(t, o.topicTemplate, &columns, "column of this outbox");
    }
    out.push_back(std::move(o));
  }
}

void readMessages(ConfigTable root, MessagesConfig& out) {
  ConfigTable t = root.table("messages");
  t.get("enabled", out.enabled);
  if (t.get("prefix", out.prefix) && out.prefix.empty()) {
    t.invalid("prefix", "must not be empty; give the prefix passed to pg_logical_emit_message()");
  }
  bool topicSet = t.has("topic");
  if (t.get("topic", out.topicTemplate) || !topicSet) checkTopic(t, out.topicTemplate, nullptr, "");
  ConfigTable headers = t.table("headers");
  out.headers = headers.entries(EntryValues::Strings);
  checkHeaderNames(headers, out.headers, "JSON field");
  std::string nonTransactional;
  if (t.get("non_transactional", nonTransactional)) {
    if (nonTransactional == "ignore") {
      out.nonTransactional = MessagesConfig::NonTransactional::Ignore;
    } else if (nonTransactional == "publish") {
      out.nonTransactional = MessagesConfig::NonTransactional::Publish;
    } else {
      t.invalid("non_transactional",
                fmt::format("must be \"ignore\" or \"publish\", got {}", tomlQuote(nonTransactional)));
    }
  }
  t.get("max_bytes", out.maxBytes, 1, uint64_t{1} << 30);
}

void readLimits(ConfigTable root, LimitsConfig& out) {
  ConfigTable t = root.table("limits");
  t.get("max_inflight_events", out.maxInflightEvents, 1);
  t.get("max_inflight_bytes", out.maxInflightBytes, 1);
}

void readMetrics(ConfigTable root, MetricsConfig& out) {
  ConfigTable t = root.table("metrics");
  t.get("enabled", out.enabled);
  if (t.get("listen", out.listen)) {
    if (auto error = listenAddressError(out.listen)) {
      t.invalid("listen", fmt::format("{} {}", tomlQuote(out.listen), *error));
    }
  }
}

}  // namespace

const std::vector<GuardedKafkaProperty>& guardedKafkaProperties() {
  // The relay's own settings are in KafkaPublisher's constructor; these are the ones a guarantee rests on.
  static const std::vector<GuardedKafkaProperty> guarded = {
      {{"acks", "request.required.acks"},
       "all",
       "an event counts as delivered only once every in-sync replica has it (with fewer acknowledgements, a leader "
       "that fails after acknowledging loses events whose transactions were already confirmed)",
       [](std::string_view v) { return v == "all" || v == "-1"; }},
      {{"enable.idempotence"},
       "true",
       "librdkafka's retries neither duplicate nor reorder events within a partition",
       [](std::string_view v) { return v == "true"; }},
      {{"message.timeout.ms", "delivery.timeout.ms"},
       "0",
       "an event waits for Kafka however long an outage lasts (0: no local expiry; a finite timeout fails the "
       "events still queued when it passes, which stops the relay with exit status 3)",
       [](std::string_view v) { return v == "0"; }},
      {{"enable.gapless.guarantee"},
       "false",
       "a record Kafka refuses for its content goes to the dead-letter topic and the relay goes on (with true, "
       "librdkafka turns such a refusal into a fatal producer error and the relay stops on that record at every "
       "start)",
       [](std::string_view v) { return v == "false"; }},
      {{"max.in.flight.requests.per.connection", "max.in.flight"},
       "5 (librdkafka's setting with idempotence)",
       "each aggregate's events stay in commit order (the idempotent producer keeps order with at most 5 requests "
       "in flight)",
       [](std::string_view v) { return v == "1" || v == "2" || v == "3" || v == "4" || v == "5"; }},
      {{"retries", "message.send.max.retries"},
       "2147483647",
       "a transient broker error is retried until Kafka takes the event (with fewer retries it fails the event "
       "and stops the relay with exit status 3)",
       [](std::string_view v) { return v == "2147483647"; }},
      {{"partitioner"},
       "murmur2_random",
       "an aggregate's events land on the partition Debezium and the Java client choose for the key (murmur2), "
       "so consumers see them in order next to events other producers wrote",
       [](std::string_view v) { return v == "murmur2_random" || v == "murmur2"; }},
  };
  return guarded;
}

std::vector<std::string> unsafeOverrideWarnings(const KafkaConfig& kafka) {
  std::vector<std::string> warnings;
  for (const auto& [name, value] : kafka.properties) {
    const GuardedKafkaProperty* guarded = guardedProperty(name);
    if (guarded == nullptr || guarded->keeps(value)) continue;
    warnings.push_back(
        fmt::format("kafka.unsafe_overrides: kafka.properties.\"{}\" = {} gives up a delivery "
                    "guarantee: {}",
                    name, tomlQuote(value), guarded->guarantee));
  }
  return warnings;
}

ConfigLoadResult<RelayConfig> parseRelayConfig(std::string_view tomlText, const std::string& sourceName) {
  ConfigReader reader(sourceName);
  if (!reader.parse(tomlText)) return {std::nullopt, reader.finish()};

  RelayConfig config;
  ConfigTable root = reader.root();
  readLogSection(root, config.log.level, config.log.format);
  readSource(root, config.source);
  readKafka(root, config.kafka);
  readOutboxes(root, config.outboxes);
  readMessages(root, config.messages);
  readLimits(root, config.limits);
  readMetrics(root, config.metrics);
  root.get("shutdown_timeout_ms", config.shutdownTimeoutMs, 1, kIntMax);
  if (root.get("dead_letter_topic", config.deadLetterTopic)) {
    std::string error;
    std::optional<std::vector<std::string>> placeholders = templatePlaceholders(config.deadLetterTopic, error);
    if (!placeholders) {
      root.invalid("dead_letter_topic", error);
    } else if (!placeholders->empty()) {
      root.invalid("dead_letter_topic", fmt::format("must be a plain Kafka topic name without {{placeholders}}, got {}",
                                                    tomlQuote(config.deadLetterTopic)));
    } else if (config.deadLetterTopic.size() > 249 || config.deadLetterTopic == "." || config.deadLetterTopic == "..") {
      root.invalid("dead_letter_topic", fmt::format("{} is not a valid Kafka topic name (at most 249 characters, not "
                                                    "\".\" or \"..\")",
                                                    tomlQuote(config.deadLetterTopic)));
    }
  }

  if (config.outboxes.empty() && !config.messages.enabled) {
    reader.addIssue(0, 0,
                    "nothing to relay: add an [[outbox]] table, or set messages.enabled = true to relay "
                    "pg_logical_emit_message() events");
  }

  return finishConfig(reader, std::move(config));
}

ConfigLoadResult<RelayConfig> loadRelayConfig(const std::string& path) {
  return loadConfigFile<RelayConfig>(path, parseRelayConfig);
}

std::string RelayConfig::redactedSummary() const {
  toml::table sourceTable{
      {"conninfo", redactConninfo(source.conninfo)},
      {"slot", source.slot},
      {"create_slot", source.createSlot},
      {"publication", source.publication},
      {"create_publication", source.createPublication},
      {"status_interval_ms", source.statusIntervalMs},
      {"reconnect_backoff_min_ms", source.reconnectBackoffMinMs},
      {"reconnect_backoff_max_ms", source.reconnectBackoffMaxMs},
      {"slot_busy_retry_ms", source.slotBusyRetryMs},
      {"lag_poll_interval_ms", source.lagPollIntervalMs},
      {"failover", source.failover},
      {"on_slot_lost", source.onSlotLost == SourceConfig::OnSlotLost::Recreate ? "recreate" : "fail"},
  };
  addPasswordFileSummary(sourceTable, source.passwordFile);
  toml::table kafkaTable{{"bootstrap_servers", kafka.bootstrapServers}};
  if (kafka.unsafeOverrides) kafkaTable.insert("unsafe_overrides", true);
  kafkaTable.insert("delivery", kafka.exactlyOnce() ? "exactly_once" : "at_least_once");
  kafkaTable.insert("progress_topic", kafka.progressTopic);
  if (kafka.exactlyOnce()) {
    if (!kafka.transactionalId.empty()) kafkaTable.insert("transactional_id", kafka.transactionalId);
    kafkaTable.insert("transaction_max_events", static_cast<int64_t>(kafka.transactionMaxEvents));
    kafkaTable.insert("transaction_max_bytes", static_cast<int64_t>(kafka.transactionMaxBytes));
    kafkaTable.insert("transaction_max_ms", kafka.transactionMaxMs);
  }
  addKafkaSummary(kafkaTable, kafka.properties, kafka.secretFiles);

  toml::array outboxArray;
  for (const OutboxTableConfig& o : outboxes) {
    toml::table t{
        {"table", o.schema + "." + o.table},
        {"id_column", o.idColumn},
        {"aggregatetype_column", o.aggregateTypeColumn},
        {"aggregateid_column", o.aggregateIdColumn},
        {"type_column", o.typeColumn},
        {"payload_column", o.payloadColumn},
        {"topic", o.topicTemplate},
    };
    if (!o.timestampColumn.empty()) t.insert("timestamp_column", o.timestampColumn);
    if (o.keyColumn) t.insert("key_column", *o.keyColumn);
    if (!o.partitionColumn.empty()) t.insert("partition_column", o.partitionColumn);
    if (!o.tracingColumn.empty()) t.insert("tracing_column", o.tracingColumn);
    if (!o.headers.empty()) t.insert("headers", tomlTable(o.headers));
    if (!o.envelope.empty()) t.insert("envelope", tomlTable(o.envelope));
    if (o.cloudEvents != OutboxTableConfig::CloudEvents::Off) {
      t.insert("cloudevents", o.cloudEvents == OutboxTableConfig::CloudEvents::Binary ? "binary" : "structured");
      t.insert("cloudevents_source", o.cloudEventsSource);
    }
    outboxArray.push_back(std::move(t));
  }
  toml::table messagesTable{
      {"enabled", messages.enabled},
      {"prefix", messages.prefix},
      {"topic", messages.topicTemplate},
      {"non_transactional",
       messages.nonTransactional == MessagesConfig::NonTransactional::Publish ? "publish" : "ignore"},
      {"max_bytes", static_cast<int64_t>(messages.maxBytes)}};
  if (!messages.headers.empty()) messagesTable.insert("headers", tomlTable(messages.headers));

  toml::table summary{
      {"shutdown_timeout_ms", shutdownTimeoutMs},
      {"dead_letter_topic", deadLetterTopic},
      {"log", toml::table{{"level", log::levelName(log.level)}, {"format", log::formatName(log.format)}}},
      {"source", std::move(sourceTable)},
      {"kafka", std::move(kafkaTable)},
      {"messages", std::move(messagesTable)},
      {"limits", toml::table{{"max_inflight_events", static_cast<int64_t>(limits.maxInflightEvents)},
                             {"max_inflight_bytes", static_cast<int64_t>(limits.maxInflightBytes)}}},
      {"metrics", toml::table{{"enabled", metrics.enabled}, {"listen", metrics.listen}}},
  };
  if (!outboxArray.empty()) summary.insert("outbox", std::move(outboxArray));
  return formatToml(summary);
}

}  // namespace outbox
