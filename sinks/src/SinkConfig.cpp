#include "src/SinkConfig.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <limits>

#include "common/AdminServer.h"
#include "common/KafkaTopicName.h"
#include "src/Projection.h"

namespace outbox::sink {

namespace {

constexpr int kIntMax = std::numeric_limits<int>::max();

// A topic name, with a hint for those who meant a regular expression.
std::optional<std::string> topicNameError(std::string_view topic) {
  auto error = kafkaTopicNameError(topic);
  if (error && topic.find_first_of("*+?[]()|\\$") != std::string_view::npos)
    *error += " (a regular expression must start with '^')";
  return error;
}

// A topic entry: a name, or a regular expression starting with "^".
std::optional<std::string> topicEntryError(std::string_view topic) {
  if (!isTopicRegex(topic)) return topicNameError(topic);
  std::string error;
  if (!TopicRegex::compile(std::string(topic), error)) {
    return fmt::format("{} is not a valid regular expression (POSIX extended): {}", tomlQuote(topic), error);
  }
  return std::nullopt;
}

bool isIdentifier(std::string_view name) {
  return !name.empty() && name.size() <= 63 && !(name.front() >= '0' && name.front() <= '9') &&
         std::all_of(name.begin(), name.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; });
}

void readDatabase(ConfigTable root, SinkDatabaseConfig& out) {
  ConfigTable t = root.table("database");
  t.require("conninfo", out.conninfo);
  t.getSecretFile("password_file", out.passwordFile, out.password);
  t.get("create_tables", out.createTables);
  if (t.get("schema", out.schema) && !isIdentifier(out.schema)) {
    t.invalid("schema",
              fmt::format("must be a plain lowercase identifier ([a-z_][a-z0-9_]*), got {}", tomlQuote(out.schema)));
  }
  std::string searchPath;
  if (t.get("search_path", searchPath)) {
    // Plain identifiers only: the value goes into set_config() as a list PostgreSQL parses again.
    size_t start = 0;
    while (start <= searchPath.size()) {
      size_t comma = std::min(searchPath.find(',', start), searchPath.size());
      std::string_view part = std::string_view(searchPath).substr(start, comma - start);
      while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
      while (!part.empty() && part.back() == ' ') part.remove_suffix(1);
      if (!isIdentifier(part)) {
        t.invalid("search_path", fmt::format("must be a comma-separated list of plain lowercase identifiers "
                                             "([a-z_][a-z0-9_]*), got {}",
                                             tomlQuote(searchPath)));
        out.searchPath.clear();
        break;
      }
      out.searchPath.emplace_back(part);
      start = comma + 1;
    }
  }
  bool minSet = t.get("reconnect_backoff_min_ms", out.reconnectBackoffMinMs, 1);
  t.get("reconnect_backoff_max_ms", out.reconnectBackoffMaxMs, 1);
  if (out.reconnectBackoffMinMs > out.reconnectBackoffMaxMs) {
    t.invalid(minSet ? "reconnect_backoff_min_ms" : "reconnect_backoff_max_ms",
              fmt::format("reconnect_backoff_min_ms ({}) must not exceed reconnect_backoff_max_ms ({})",
                          out.reconnectBackoffMinMs, out.reconnectBackoffMaxMs));
  }
}

void readKafka(ConfigTable root, SinkKafkaConfig& out) {
  ConfigTable t = root.table("kafka");
  t.require("bootstrap_servers", out.bootstrapServers);
  if (t.get("group_id", out.groupId) && out.groupId.empty()) {
    t.invalid("group_id", "must not be empty; give the consumer group of this sink");
  }
  if (t.get("topics", out.topics)) {
    for (const std::string& topic : out.topics) {
      if (auto error = topicEntryError(topic)) t.invalid("topics", *error);
    }
  }
  if (t.get("event_type_header", out.eventTypeHeader) && out.eventTypeHeader.empty()) {
    t.invalid("event_type_header", "must not be empty; give the header holding the event type (e.g. \"eventType\")");
  }
  if (t.get("initial_offset", out.initialOffset) && out.initialOffset != "earliest" && out.initialOffset != "latest") {
    t.invalid("initial_offset",
              fmt::format("must be \"earliest\" or \"latest\", got {}", tomlQuote(out.initialOffset)));
  }

  ConfigTable properties = t.table("properties");
  for (auto& [name, value] : properties.entries(EntryValues::Scalars)) {
    if (name == "bootstrap.servers" || name == "metadata.broker.list") {
      properties.invalid(name, "is set by kafka.bootstrap_servers; set that instead and remove this property");
    } else if (name == "group.id") {
      properties.invalid(name, "is set by kafka.group_id; set that instead and remove this property");
    } else if (name == "enable.auto.commit" || name == "enable.auto.offset.store") {
      properties.invalid(name, "is managed by the sink: offsets are stored in the read-model database");
    } else {
      out.properties.emplace_back(name, value);
    }
  }
  readKafkaSecretFiles(t.table("secret_files"), properties, "sink", out.secretFiles, out.secretValues);
}

void readBatch(ConfigTable root, BatchConfig& out) {
  ConfigTable t = root.table("batch");
  t.get("max_events", out.maxEvents, 1, 100000);
  t.get("max_wait_ms", out.maxWaitMs, 0, 600000);
}

void readDeduplication(ConfigTable root, DeduplicationConfig& out) {
  ConfigTable t = root.table("deduplication");
  t.get("enabled", out.enabled);
  if (t.get("id_header", out.idHeader) && out.idHeader.empty()) {
    t.invalid("id_header", "must not be empty; give the header holding the event id (the relay writes \"id\")");
  }
  t.get("retention_hours", out.retentionHours, 1, 24 * 365 * 10);
  t.get("prune_interval_ms", out.pruneIntervalMs, 1000, int64_t{24} * 3600 * 1000);
}

// A statement's sql and params (a projection's own, or one of its [[projection.statements]]): every $1..$n used,
// one param per $n.
void readStatement(ConfigTable& t, std::string& sql, std::vector<std::string>& params) {
  bool sqlOk = t.require("sql", sql);
  bool paramsOk = t.get("params", params) || !t.has("params");
  for (const std::string& param : params) {
    std::string error;
    if (!parseParamSource(param, error)) t.invalid("params", fmt::format("{} {}", tomlQuote(param), error));
  }
  if (sqlOk && paramsOk) {
    SqlParameters used = scanSqlParameters(sql);
    if (static_cast<size_t>(used.highest) != params.size()) {
      t.invalid("params", fmt::format("lists {} parameter(s) but the sql uses {} ($1..${}); give one entry per "
                                      "$n, in order",
                                      params.size(), used.highest, used.highest));
    } else if (!used.unused.empty()) {
      t.invalid("sql", fmt::format("never uses ${} (PostgreSQL cannot infer the type of an unused parameter); "
                                   "use every $1..${}",
                                   used.unused.front(), used.highest));
    }
  }
}

void readProjections(ConfigTable root, std::vector<ProjectionConfig>& out) {
  std::vector<ConfigTable> tables = root.tables("projection");
  for (size_t index = 0; index < tables.size(); ++index) {
    ConfigTable& t = tables[index];
    ProjectionConfig p;
    p.name = fmt::format("projection_{}", index);
    if (t.get("name", p.name)) {
      if (p.name.empty()) t.invalid("name", "must not be empty; it labels outbox_sink_events_applied_total");
      for (const ProjectionConfig& other : out) {
        if (other.name == p.name)
          t.invalid("name", fmt::format("{} is already used; give each projection its own "
                                        "name",
                                        tomlQuote(p.name)));
      }
    }
    if (t.require("topic", p.topic)) {
      if (auto error = topicEntryError(p.topic)) t.invalid("topic", *error);
    }
    if (t.has("event_types")) {
      std::string ignored;
      if (t.has("event_type") && t.get("event_type", ignored)) {
        t.invalid("event_type", "set either event_type or event_types, not both");
      }
      if (t.get("event_types", p.eventTypes) && p.eventTypes.empty()) {
        t.invalid("event_types", "must not be empty; list the event types, or write event_type = \"*\" for all");
      }
      for (const std::string& type : p.eventTypes) {
        if (type.empty()) t.invalid("event_types", "holds an empty event type");
      }
    } else {
      std::string type;
      if (t.require("event_type", type)) p.eventTypes = {type};
    }
    if (t.has("statements")) {
      // Both forms at once would leave it unclear what runs: the issue is at the sql (and params) that is too many.
      std::string ignoredSql;
      std::vector<std::string> ignoredParams;
      if (t.has("sql")) {
        t.get("sql", ignoredSql);  // known, so not an unknown key on top
        t.invalid("sql", "set either sql and params or [[projection.statements]], not both");
      }
      if (t.has("params")) {
        t.get("params", ignoredParams);
        t.invalid("params", "set either sql and params or [[projection.statements]], not both");
      }
      std::vector<ConfigTable> statements = t.tables("statements");
      if (statements.empty()) {
        t.invalid("statements",
                  "must not be empty; give each statement as [[projection.statements]] with sql and params");
      }
      for (ConfigTable& s : statements) {
        StatementConfig statement;
        readStatement(s, statement.sql, statement.params);
        p.statements.push_back(std::move(statement));
      }
    } else {
      readStatement(t, p.sql, p.params);
    }
    out.push_back(std::move(p));
  }
}

void readMetrics(ConfigTable root, SinkMetricsConfig& out) {
  ConfigTable t = root.table("metrics");
  t.get("enabled", out.enabled);
  if (t.get("listen", out.listen)) {
    if (auto error = listenAddressError(out.listen))
      t.invalid("listen", fmt::format("{} {}", tomlQuote(out.listen), *error));
  }
  t.get("lag_interval_ms", out.lagIntervalMs, 100, kIntMax);
}

}  // namespace

SqlParameters scanSqlParameters(std::string_view sql) {
  std::vector<bool> seen;
  size_t i = 0;
  auto skipUntil = [&](std::string_view end) {
    size_t at = sql.find(end, i);
    i = at == std::string_view::npos ? sql.size() : at + end.size();
  };
  while (i < sql.size()) {
    char c = sql[i];
    if (c == '\'' || c == '"') {
      ++i;
      skipUntil(std::string_view(&c, 1));  // '' and "" escapes just re-enter the literal
    } else if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      skipUntil("\n");
    } else if (c == '/' && i + 1 < sql.size() && sql[i + 1] == '*') {
      i += 2;
      skipUntil("*/");
    } else if (c == '$') {
      size_t j = i + 1;
      while (j < sql.size() && sql[j] >= '0' && sql[j] <= '9') ++j;
      if (j > i + 1 && j - i <= 6) {
        int n = std::stoi(std::string(sql.substr(i + 1, j - i - 1)));
        if (n > 0) {
          if (seen.size() < static_cast<size_t>(n) + 1) seen.resize(n + 1, false);
          seen[n] = true;
        }
        i = j;
      } else {
        // A dollar-quoted string: $tag$ ... $tag$ (tag may be empty).
        size_t close = sql.find('$', i + 1);
        std::string_view tag = close == std::string_view::npos ? std::string_view() : sql.substr(i, close - i + 1);
        bool isTag = !tag.empty() && std::all_of(tag.begin() + 1, tag.end() - 1, [](char t) {
          return (t >= 'a' && t <= 'z') || (t >= 'A' && t <= 'Z') || (t >= '0' && t <= '9') || t == '_';
        });
        if (isTag) {
          i = close + 1;
          skipUntil(tag);
        } else {
          ++i;
        }
      }
    } else {
      ++i;
    }
  }
  SqlParameters result;
  result.highest = seen.empty() ? 0 : static_cast<int>(seen.size()) - 1;
  for (int n = 1; n < result.highest; ++n) {
    if (!seen[n]) result.unused.push_back(n);
  }
  return result;
}

std::vector<std::string> SinkConfig::subscription() const {
  if (!kafka.topics.empty()) return kafka.topics;
  std::vector<std::string> topics;
  for (const ProjectionConfig& p : projections) {
    if (std::find(topics.begin(), topics.end(), p.topic) == topics.end()) topics.push_back(p.topic);
  }
  return topics;
}

ConfigLoadResult<SinkConfig> parseSinkConfig(std::string_view tomlText, const std::string& sourceName) {
  ConfigReader reader(sourceName);
  if (!reader.parse(tomlText)) return {std::nullopt, reader.finish()};

  SinkConfig config;
  ConfigTable root = reader.root();
  readLogSection(root, config.logLevel, config.logFormat);
  readDatabase(root, config.database);
  readKafka(root, config.kafka);
  readBatch(root, config.batch);
  readDeduplication(root, config.deduplication);
  readProjections(root, config.projections);
  readMetrics(root, config.metrics);
  root.get("shutdown_timeout_ms", config.shutdownTimeoutMs, 1, kIntMax);
  root.get("dead_letter_flush_timeout_ms", config.deadLetterFlushTimeoutMs, 1, kIntMax);
  std::string onError;
  if (root.get("on_error", onError)) {
    if (onError == "dead_letter") {
      config.onError = OnError::DeadLetter;
    } else if (onError == "stop") {
      config.onError = OnError::Stop;
    } else {
      root.invalid("on_error", fmt::format("must be \"dead_letter\" or \"stop\", got {}", tomlQuote(onError)));
    }
  }
  if (root.get("dead_letter_topic", config.deadLetterTopic)) {
    if (auto error = topicNameError(config.deadLetterTopic)) root.invalid("dead_letter_topic", *error);
  }
  if (config.projections.empty()) {
    reader.addIssue(0, 0, "nothing to do: add a [[projection]] with topic, event_type, sql and params");
  }

  return finishConfig(reader, std::move(config));
}

ConfigLoadResult<SinkConfig> loadSinkConfig(const std::string& path) {
  return loadConfigFile<SinkConfig>(path, parseSinkConfig);
}

std::string SinkConfig::redactedSummary() const {
  toml::table databaseTable{
      {"conninfo", redactConninfo(database.conninfo)},
      {"create_tables", database.createTables},
      {"schema", database.schema},
      {"reconnect_backoff_min_ms", database.reconnectBackoffMinMs},
      {"reconnect_backoff_max_ms", database.reconnectBackoffMaxMs},
  };
  if (!database.searchPath.empty()) {
    databaseTable.insert("search_path", fmt::format("{}", fmt::join(database.searchPath, ", ")));
  }
  addPasswordFileSummary(databaseTable, database.passwordFile);
  toml::table kafkaTable{
      {"bootstrap_servers", kafka.bootstrapServers}, {"group_id", kafka.groupId},
      {"topics", tomlArray(subscription())},         {"event_type_header", kafka.eventTypeHeader},
      {"initial_offset", kafka.initialOffset},
  };
  addKafkaSummary(kafkaTable, kafka.properties, kafka.secretFiles);

  toml::array projectionArray;
  for (const ProjectionConfig& p : projections) {
    toml::table projection{
        {"name", p.name},
        {"topic", p.topic},
        {"event_types", tomlArray(p.eventTypes)},
    };
    if (p.statements.empty()) {
      projection.insert("sql", p.sql);
      projection.insert("params", tomlArray(p.params));
    } else {
      toml::array statements;
      for (const StatementConfig& s : p.statements) {
        statements.push_back(toml::table{{"sql", s.sql}, {"params", tomlArray(s.params)}});
      }
      projection.insert("statements", std::move(statements));
    }
    projectionArray.push_back(std::move(projection));
  }

  toml::table summary{
      {"on_error", onError == OnError::Stop ? "stop" : "dead_letter"},
      {"dead_letter_topic", deadLetterTopic},
      {"dead_letter_flush_timeout_ms", deadLetterFlushTimeoutMs},
      {"shutdown_timeout_ms", shutdownTimeoutMs},
      {"log", toml::table{{"level", log::levelName(logLevel)}, {"format", log::formatName(logFormat)}}},
      {"database", std::move(databaseTable)},
      {"kafka", std::move(kafkaTable)},
      {"batch", toml::table{{"max_events", batch.maxEvents}, {"max_wait_ms", batch.maxWaitMs}}},
      {"deduplication", toml::table{{"enabled", deduplication.enabled},
                                    {"id_header", deduplication.idHeader},
                                    {"retention_hours", deduplication.retentionHours},
                                    {"prune_interval_ms", deduplication.pruneIntervalMs}}},
      {"metrics",
       toml::table{
           {"enabled", metrics.enabled}, {"listen", metrics.listen}, {"lag_interval_ms", metrics.lagIntervalMs}}},
  };
  if (!projectionArray.empty()) summary.insert("projection", std::move(projectionArray));
  return formatToml(summary);
}

}  // namespace outbox::sink
