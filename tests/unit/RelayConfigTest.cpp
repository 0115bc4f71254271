#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "src/RelayConfig.h"

using namespace outbox;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

// Sets an environment variable for one test and restores what was there before.
class ScopedEnv {
 public:
  // `value` nullopt: unset for the test.
  ScopedEnv(const char* name, const std::optional<std::string>& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      ::setenv(name, value->c_str(), 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_, old_->c_str(), 1);
    else
      ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

class TempFile {
 public:
  explicit TempFile(const std::string& content) {
    static int counter = 0;
    path_ = testing::TempDir() + "relay_config_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
    std::ofstream(path_, std::ios::binary) << content;
  }
  ~TempFile() { std::filesystem::remove(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The [source] and [kafka] keys every config needs. It relays nothing by itself ([messages] is off by default):
// the tests append kOutbox at the end, after every line their issue positions count.
const std::string kMinimal = R"([source]
conninfo = "host=db"
[kafka]
bootstrap_servers = "kafka:9092"
)";
const std::string kOutbox = "[[outbox]]\ntable = \"outbox\"\n";
const std::string kMessagesOn = "[messages]\nenabled = true\n";

std::vector<std::string> issueLines(const ConfigLoadResult<RelayConfig>& result) {
  std::vector<std::string> lines;
  for (const ConfigIssue& issue : result.issues) lines.push_back(issue.toString());
  return lines;
}

RelayConfig parseOk(const std::string& text) {
  auto result = parseRelayConfig(text, "relay.toml");
  EXPECT_TRUE(result.ok()) << formatIssues(result.issues);
  return result.config.value_or(RelayConfig{});
}

// Parses a config expected to have exactly one issue, and returns it as text.
std::string onlyIssue(const std::string& text) {
  auto result = parseRelayConfig(text, "relay.toml");
  EXPECT_FALSE(result.config.has_value());
  EXPECT_EQ(result.issues.size(), 1u) << formatIssues(result.issues);
  return result.issues.empty() ? "" : result.issues[0].toString();
}

}  // namespace

TEST(RelayConfig, ExampleFileParses) {
  ScopedEnv pg("PGURL", "postgresql://relay:example-pw@localhost:5432/app");
  ScopedEnv kafka("KAFKA_BOOTSTRAP", "localhost:19092");
  auto result = loadRelayConfig(std::string(OUTBOX_SOURCE_DIR) + "/examples/relay.toml");
  ASSERT_TRUE(result.ok()) << formatIssues(result.issues);
  const RelayConfig& c = *result.config;
  EXPECT_EQ(c.source.conninfo, "postgresql://relay:example-pw@localhost:5432/app");
  EXPECT_EQ(c.kafka.bootstrapServers, "localhost:19092");
  EXPECT_EQ(c.source.slot, "outbox_relay");
  EXPECT_EQ(c.source.publication, "outbox_relay");
  EXPECT_TRUE(c.source.createSlot);
  EXPECT_EQ(c.source.statusIntervalMs, 10000);
  ASSERT_EQ(c.outboxes.size(), 1u);
  EXPECT_EQ(c.outboxes[0].schema, "public");
  EXPECT_EQ(c.outboxes[0].table, "outbox");
  EXPECT_EQ(c.outboxes[0].topicTemplate, "outbox.event.{aggregatetype}");
  EXPECT_THAT(c.outboxes[0].headers, ElementsAre(std::pair<std::string, std::string>{"eventType", "type"}));
  EXPECT_TRUE(c.messages.enabled);
  EXPECT_EQ(c.messages.prefix, "outbox");
  EXPECT_EQ(c.limits.maxInflightBytes, 8388608u);
  EXPECT_THAT(c.messages.headers, ElementsAre(std::pair<std::string, std::string>{"eventType", "type"}));
  EXPECT_EQ(c.metrics.listen, "127.0.0.1:9187");
  EXPECT_EQ(c.log.level, log::Level::Info);
  EXPECT_EQ(c.log.format, log::Format::Plain);
}

TEST(RelayConfig, ExampleFileNeedsItsVariables) {
  ScopedEnv kafka("KAFKA_BOOTSTRAP", "localhost:19092");
  ScopedEnv pg("PGURL", std::nullopt);
  auto result = loadRelayConfig(std::string(OUTBOX_SOURCE_DIR) + "/examples/relay.toml");
  ASSERT_FALSE(result.ok());
  ASSERT_EQ(result.issues.size(), 1u) << formatIssues(result.issues);
  EXPECT_EQ(result.issues[0].line, 10);
  EXPECT_EQ(result.issues[0].column, 12);
  EXPECT_THAT(result.issues[0].message, HasSubstr("source.conninfo: environment variable PGURL is not set"));
}

TEST(RelayConfig, Defaults) {
  RelayConfig c = parseOk(kMinimal + kOutbox);
  RelayConfig d;
  EXPECT_EQ(c.source.conninfo, "host=db");
  EXPECT_FALSE(c.source.passwordFile.has_value());
  EXPECT_EQ(c.source.password, "");
  EXPECT_EQ(c.source.slot, d.source.slot);
  EXPECT_EQ(c.source.publication, d.source.publication);
  EXPECT_EQ(c.source.statusIntervalMs, 10000);
  EXPECT_EQ(c.source.reconnectBackoffMinMs, 500);
  EXPECT_EQ(c.source.reconnectBackoffMaxMs, 30000);
  EXPECT_EQ(c.source.slotBusyRetryMs, 5000);
  EXPECT_EQ(c.source.lagPollIntervalMs, 5000);
  EXPECT_TRUE(c.kafka.properties.empty());
  EXPECT_TRUE(c.kafka.secretFiles.empty());
  EXPECT_EQ(c.outboxes.size(), 1u);
  // Off unless enabled: anyone with EXECUTE on pg_logical_emit_message could publish (README "Security").
  EXPECT_FALSE(c.messages.enabled);
  EXPECT_EQ(c.messages.prefix, "outbox");
  EXPECT_EQ(c.messages.topicTemplate, "outbox.event.{aggregatetype}");
  EXPECT_EQ(c.messages.nonTransactional, MessagesConfig::NonTransactional::Ignore);
  EXPECT_EQ(c.messages.maxBytes, 1000000u);
  EXPECT_EQ(c.limits.maxInflightEvents, d.limits.maxInflightEvents);
  EXPECT_EQ(c.limits.maxInflightBytes, d.limits.maxInflightBytes);
  EXPECT_EQ(c.deadLetterTopic, "outbox.deadletter");
  EXPECT_TRUE(c.metrics.enabled);
  EXPECT_EQ(c.metrics.listen, "0.0.0.0:9187");
  EXPECT_EQ(c.shutdownTimeoutMs, 30000);
}

TEST(RelayConfig, ReadsEverySetting) {
  RelayConfig c = parseOk(R"(shutdown_timeout_ms = 1234
dead_letter_topic = "app.dlq"
[log]
level = "debug"
format = "json"
[source]
conninfo = "host=db"
slot = "relay_2"
create_slot = false
publication = "pub_2"
create_publication = false
status_interval_ms = 1000
reconnect_backoff_min_ms = 10
reconnect_backoff_max_ms = 10
slot_busy_retry_ms = 7
lag_poll_interval_ms = 8
[kafka]
bootstrap_servers = "a:1,b:2"
[kafka.properties]
"compression.type" = "lz4"
"linger.ms" = 5
"enable.idempotence" = true
[[outbox]]
table = "sales.outbox_events"
id_column = "event_id"
aggregatetype_column = "agg_type"
aggregateid_column = "agg_id"
type_column = "event_type"
payload_column = "body"
topic = "{agg_type}.{tenant}"
[outbox.headers]
tenant = "tenant"
[[outbox]]
table = "plain"
[messages]
enabled = false
prefix = "evt"
topic = "msg.{kind}"
[messages.headers]
trace = "trace_id"
[limits]
max_inflight_events = 5
max_inflight_bytes = 6
[metrics]
enabled = false
listen = "[::1]:9000"
)");
  EXPECT_EQ(c.shutdownTimeoutMs, 1234);
  EXPECT_EQ(c.deadLetterTopic, "app.dlq");
  EXPECT_EQ(c.log.level, log::Level::Debug);
  EXPECT_EQ(c.log.format, log::Format::Json);
  EXPECT_EQ(c.source.slot, "relay_2");
  EXPECT_FALSE(c.source.createSlot);
  EXPECT_EQ(c.source.publication, "pub_2");
  EXPECT_FALSE(c.source.createPublication);
  EXPECT_EQ(c.source.statusIntervalMs, 1000);
  EXPECT_EQ(c.source.reconnectBackoffMinMs, 10);
  EXPECT_EQ(c.source.reconnectBackoffMaxMs, 10);
  EXPECT_EQ(c.source.slotBusyRetryMs, 7);
  EXPECT_EQ(c.source.lagPollIntervalMs, 8);
  EXPECT_EQ(c.kafka.bootstrapServers, "a:1,b:2");
  EXPECT_THAT(c.kafka.properties, ElementsAre(std::pair<std::string, std::string>{"compression.type", "lz4"},
                                              std::pair<std::string, std::string>{"linger.ms", "5"},
                                              std::pair<std::string, std::string>{"enable.idempotence", "true"}));
  ASSERT_EQ(c.outboxes.size(), 2u);
  const OutboxTableConfig& o = c.outboxes[0];
  EXPECT_EQ(o.schema, "sales");
  EXPECT_EQ(o.table, "outbox_events");
  EXPECT_EQ(o.idColumn, "event_id");
  EXPECT_EQ(o.aggregateTypeColumn, "agg_type");
  EXPECT_EQ(o.aggregateIdColumn, "agg_id");
  EXPECT_EQ(o.typeColumn, "event_type");
  EXPECT_EQ(o.payloadColumn, "body");
  EXPECT_EQ(o.topicTemplate, "{agg_type}.{tenant}");
  EXPECT_THAT(o.headers, ElementsAre(std::pair<std::string, std::string>{"tenant", "tenant"}));
  EXPECT_EQ(c.outboxes[1].schema, "public");
  EXPECT_EQ(c.outboxes[1].table, "plain");
  EXPECT_FALSE(c.messages.enabled);
  EXPECT_EQ(c.messages.prefix, "evt");
  EXPECT_EQ(c.messages.topicTemplate, "msg.{kind}");
  EXPECT_THAT(c.messages.headers, ElementsAre(std::pair<std::string, std::string>{"trace", "trace_id"}));
  EXPECT_EQ(c.limits.maxInflightEvents, 5u);
  EXPECT_EQ(c.limits.maxInflightBytes, 6u);
  EXPECT_FALSE(c.metrics.enabled);
  EXPECT_EQ(c.metrics.listen, "[::1]:9000");
}

// --- Validation: one problem each, at its line and column ------------------------------------------------------

TEST(RelayConfigValidation, SlotNameMustBeAValidIdentifier) {
  std::string text = R"([source]
conninfo = "host=db"
slot = "My-Slot"
[kafka]
bootstrap_servers = "k:1"
)";
  EXPECT_EQ(onlyIssue(text + kOutbox),
            "relay.toml:3:8: source.slot: must match [a-z0-9_]{1,63}, got \"My-Slot\"; a replication slot name may "
            "only hold lowercase letters, digits and '_', at most 63 of them");
  std::string longName(64, 'a');
  EXPECT_THAT(onlyIssue("[source]\nconninfo = \"x\"\nslot = \"" + longName +
                        "\"\n[kafka]\nbootstrap_servers = \"k\"\n" + kOutbox),
              HasSubstr("relay.toml:3:8: source.slot: must match"));
  EXPECT_TRUE(parseRelayConfig("[source]\nconninfo = \"x\"\nslot = \"" + std::string(63, 'a') +
                                   "\"\n[kafka]\nbootstrap_servers = \"k\"\n" + kOutbox,
                               "relay.toml")
                  .ok());
  EXPECT_THAT(onlyIssue("[source]\nconninfo = \"x\"\nslot = \"\"\n[kafka]\nbootstrap_servers = \"k\"\n" + kOutbox),
              HasSubstr("relay.toml:3:8: source.slot: must match [a-z0-9_]{1,63}, got \"\""));
}

TEST(RelayConfigValidation, PublicationNameMustBeAValidIdentifier) {
  EXPECT_THAT(
      onlyIssue("[source]\nconninfo = \"x\"\n  publication = \"pub lic\"\n[kafka]\nbootstrap_servers = \"k\"\n" +
                kOutbox),
      HasSubstr("relay.toml:3:17: source.publication: must match [a-z0-9_]{1,63}, got \"pub lic\"; a "
                "publication name"));
}

TEST(RelayConfigValidation, RequiredKeys) {
  auto result = parseRelayConfig("[source]\nslot = \"s\"\n" + kOutbox, "relay.toml");
  EXPECT_THAT(issueLines(result), ElementsAre("relay.toml:1:1: source.conninfo: is required; set it in [source]",
                                              "relay.toml: kafka.bootstrap_servers: is required; set it in [kafka]"));
  EXPECT_EQ(onlyIssue("[source]\nconninfo = \"\"\n[kafka]\nbootstrap_servers = \"k\"\n" + kOutbox),
            "relay.toml:2:12: source.conninfo: must not be empty");
}

TEST(RelayConfigValidation, IntervalsMustBePositive) {
  for (const char* key : {"status_interval_ms", "reconnect_backoff_min_ms", "reconnect_backoff_max_ms",
                          "slot_busy_retry_ms", "lag_poll_interval_ms"}) {
    std::string text = std::string("[source]\nconninfo = \"x\"\n") + key + " = 0\n[kafka]\nbootstrap_servers = \"k\"\n";
    int column = static_cast<int>(std::string(key).size()) + 4;
    EXPECT_EQ(onlyIssue(text + kOutbox),
              fmt::format("relay.toml:3:{}: source.{}: must be greater than 0, got 0", column, key));
  }
  EXPECT_EQ(onlyIssue("shutdown_timeout_ms = -5\n" + kMinimal + kOutbox),
            "relay.toml:1:23: shutdown_timeout_ms: must be greater than 0, got -5");
}

TEST(RelayConfigValidation, BackoffMinMustNotExceedMax) {
  EXPECT_EQ(onlyIssue("[source]\nconninfo = \"x\"\nreconnect_backoff_max_ms = 100\nreconnect_backoff_min_ms = 200\n"
                      "[kafka]\nbootstrap_servers = \"k\"\n" +
                      kOutbox),
            "relay.toml:4:28: source.reconnect_backoff_min_ms: reconnect_backoff_min_ms (200) must not exceed "
            "reconnect_backoff_max_ms (100); lower the minimum or raise the maximum");
  // Only the maximum set, below the default minimum of 500: reported at the maximum.
  EXPECT_THAT(onlyIssue("[source]\nconninfo = \"x\"\nreconnect_backoff_max_ms = 100\n[kafka]\nbootstrap_servers = "
                        "\"k\"\n" +
                        kOutbox),
              HasSubstr("relay.toml:3:28: source.reconnect_backoff_max_ms: reconnect_backoff_min_ms (500) must not"));
}

TEST(RelayConfigValidation, WrongTypes) {
  EXPECT_EQ(
      onlyIssue("[source]\nconninfo = \"x\"\ncreate_slot = \"yes\"\n[kafka]\nbootstrap_servers = \"k\"\n" + kOutbox),
      "relay.toml:3:15: source.create_slot: must be true or false, got a string (write it without quotes)");
  EXPECT_EQ(
      onlyIssue("[source]\nconninfo = \"x\"\nstatus_interval_ms = 1.5\n[kafka]\nbootstrap_servers = \"k\"\n" + kOutbox),
      "relay.toml:3:22: source.status_interval_ms: must be an integer, got a floating-point");
  EXPECT_EQ(onlyIssue("[source]\nconninfo = 5\n[kafka]\nbootstrap_servers = \"k\"\n" + kOutbox),
            "relay.toml:2:12: source.conninfo: must be a string, got an integer (put it in double quotes)");
  EXPECT_THAT(issueLines(parseRelayConfig("source = 1\n[kafka]\nbootstrap_servers = \"k\"\n" + kOutbox, "relay.toml")),
              ElementsAre("relay.toml:1:10: source: must be a table, got an integer",
                          "relay.toml: source.conninfo: is required; set it in [source]"));
}

TEST(RelayConfigValidation, NothingToRelay) {
  EXPECT_EQ(onlyIssue(kMinimal + "[messages]\nenabled = false\n"),
            "relay.toml: nothing to relay: add an [[outbox]] table, or set messages.enabled = true to relay "
            "pg_logical_emit_message() events");
  parseOk(kMinimal + "[[outbox]]\ntable = \"outbox\"\n[messages]\nenabled = false\n");
  // [messages] is off by default: a config without an [[outbox]] relays nothing unless it enables them.
  EXPECT_THAT(onlyIssue(kMinimal), HasSubstr("nothing to relay"));
  EXPECT_TRUE(parseOk(kMinimal + kMessagesOn).messages.enabled);
}

TEST(RelayConfigValidation, MessagesNonTransactionalAndMaxBytes) {
  RelayConfig c = parseOk(kMinimal + "[messages]\nenabled = true\nnon_transactional = \"publish\"\nmax_bytes = 4096\n");
  EXPECT_EQ(c.messages.nonTransactional, MessagesConfig::NonTransactional::Publish);
  EXPECT_EQ(c.messages.maxBytes, 4096u);
  EXPECT_EQ(
      parseOk(kMinimal + "[messages]\nenabled = true\nnon_transactional = \"ignore\"\n").messages.nonTransactional,
      MessagesConfig::NonTransactional::Ignore);
  EXPECT_EQ(onlyIssue(kMinimal + "[messages]\nenabled = true\nnon_transactional = \"yes\"\n"),
            "relay.toml:7:21: messages.non_transactional: must be \"ignore\" or \"publish\", got \"yes\"");
  EXPECT_THAT(onlyIssue(kMinimal + "[messages]\nenabled = true\nmax_bytes = 0\n"),
              HasSubstr("relay.toml:7:13: messages.max_bytes: must be"));
  EXPECT_THAT(c.redactedSummary(), HasSubstr("non_transactional = \"publish\""));
}

TEST(RelayConfigValidation, OutboxTable) {
  EXPECT_EQ(onlyIssue(kMinimal + "[[outbox]]\ntopic = \"t\"\n"),
            "relay.toml:5:1: outbox[0].table: is required; set it in this table");
  EXPECT_EQ(onlyIssue(kMinimal + "[[outbox]]\ntable = \"a.b.c\"\n"),
            "relay.toml:6:9: outbox[0].table: must be \"schema.name\" or \"name\" (schema public), got \"a.b.c\"");
  EXPECT_THAT(onlyIssue(kMinimal + "[[outbox]]\ntable = \".b\"\n"), HasSubstr("relay.toml:6:9: outbox[0].table"));
  EXPECT_EQ(onlyIssue(kMinimal + "[[outbox]]\ntable = \"t\"\ntype_column = \"\"\n"),
            "relay.toml:7:15: outbox[0].type_column: must not be empty; give a column name of the outbox table");
  EXPECT_EQ(onlyIssue(kMinimal + "outbox = 3\n" + kOutbox),
            "relay.toml:5:1: kafka.outbox: unknown key; remove it, or use one of: bootstrap_servers, "
            "unsafe_overrides, delivery, transactional_id, progress_topic, transaction_max_events, "
            "transaction_max_bytes, transaction_max_ms, properties, secret_files");
  EXPECT_EQ(onlyIssue("outbox = 3\n" + kMinimal + kMessagesOn),
            "relay.toml:1:10: outbox: must be an array of tables, got an integer; write [[outbox]] above each entry");
  EXPECT_EQ(onlyIssue(kMinimal + "[outbox]\ntable = \"t\"\n" + kMessagesOn),
            "relay.toml:5:1: outbox: must be an array of tables, got a table; write [[outbox]] above each entry");
}

TEST(RelayConfigValidation, DuplicateTables) {
  EXPECT_EQ(onlyIssue(kMinimal + "[[outbox]]\ntable = \"outbox\"\n[[outbox]]\ntable = \"public.outbox\"\n"),
            "relay.toml:8:9: outbox[1].table: \"public.outbox\" is already configured in outbox[0]; configure each "
            "table once");
  parseOk(kMinimal + "[[outbox]]\ntable = \"a.outbox\"\n[[outbox]]\ntable = \"b.outbox\"\n");
}

TEST(RelayConfigValidation, TopicPlaceholdersMustNameColumns) {
  EXPECT_EQ(onlyIssue(kMinimal + "[[outbox]]\ntable = \"t\"\ntopic = \"events.{tenant}\"\n"),
            "relay.toml:7:9: outbox[0].topic: {tenant} is not a column of this outbox; use one of {aggregatetype}, "
            "{aggregateid}, {type}, {id}, {payload} in topic, or map the column as a header");
  // Mapped as a header, the column may be used.
  parseOk(kMinimal + "[[outbox]]\ntable = \"t\"\ntopic = \"events.{tenant}\"\n[outbox.headers]\nt = \"tenant\"\n");
  // A renamed column makes the default topic invalid: reported at the [[outbox]] header.
  EXPECT_EQ(onlyIssue(kMinimal + "[[outbox]]\ntable = \"t\"\naggregatetype_column = \"kind\"\n"),
            "relay.toml:5:1: outbox[0].topic: the default topic \"outbox.event.{aggregatetype}\" uses "
            "{aggregatetype}, which is not a column of this outbox; use one of {kind}, {aggregateid}, {type}, {id}, "
            "{payload} in topic, or map the column as a header");
  parseOk(kMinimal + "[[outbox]]\ntable = \"t\"\naggregatetype_column = \"kind\"\ntopic = \"e.{kind}.{type}\"\n");
}

TEST(RelayConfigValidation, TopicTemplateSyntax) {
  EXPECT_THAT(onlyIssue(kMinimal + "[[outbox]]\ntable = \"t\"\ntopic = \"a.{type\"\n"),
              HasSubstr("relay.toml:7:9: outbox[0].topic: the '{' at position 3 of \"a.{type\" has no matching '}'"));
  EXPECT_THAT(onlyIssue(kMinimal + "[[outbox]]\ntable = \"t\"\ntopic = \"a}\"\n"), HasSubstr("no matching '{'"));
  EXPECT_THAT(onlyIssue(kMinimal + "[[outbox]]\ntable = \"t\"\ntopic = \"a.{}\"\n"), HasSubstr("empty placeholder"));
  EXPECT_THAT(onlyIssue(kMinimal + "[[outbox]]\ntable = \"t\"\ntopic = \"a b\"\n"),
              HasSubstr("Kafka topic names may only contain"));
  EXPECT_THAT(onlyIssue(kMinimal + "[[outbox]]\ntable = \"t\"\ntopic = \"\"\n"), HasSubstr("must not be empty"));
  // Messages may use any field of the JSON document, but the syntax is still checked.
  parseOk(kMinimal + "[messages]\ntopic = \"m.{anything}.{at_all}\"\n" + kOutbox);
  EXPECT_EQ(onlyIssue(kMinimal + "[messages]\ntopic = \"m.{x\"\n" + kOutbox),
            "relay.toml:6:9: messages.topic: the '{' at position 3 of \"m.{x\" has no matching '}'; write {name}");
}

TEST(RelayConfigValidation, Headers) {
  EXPECT_EQ(onlyIssue(kMinimal + "[[outbox]]\ntable = \"t\"\n[outbox.headers]\nid = \"other\"\n"),
            "relay.toml:8:6: outbox[0].headers.id: the header \"id\" always carries the event id; choose another "
            "header name");
  EXPECT_EQ(onlyIssue(kMinimal + "[messages.headers]\nx = 1\n" + kOutbox),
            "relay.toml:6:5: messages.headers.x: must be a string, got an integer (put it in double quotes)");
}

TEST(RelayConfigValidation, ParityKeys) {
  RelayConfig config = parseOk(kMinimal +
                               "[[outbox]]\ntable = \"t\"\nkey_column = \"\"\npartition_column = \"p\"\n"
                               "timestamp_column = \"at\"\ntracing_column = \"tracingspancontext\"\n"
                               "[outbox.envelope]\neventType = \"type\"\n");
  ASSERT_EQ(config.outboxes.size(), 1u);
  EXPECT_EQ(config.outboxes[0].keyColumn, "");
  EXPECT_EQ(config.outboxes[0].partitionColumn, "p");
  EXPECT_EQ(config.outboxes[0].timestampColumn, "at");
  EXPECT_EQ(config.outboxes[0].tracingColumn, "tracingspancontext");
  ASSERT_EQ(config.outboxes[0].envelope.size(), 1u);
  EXPECT_EQ(config.outboxes[0].envelope[0], (std::pair<std::string, std::string>{"eventType", "type"}));
  EXPECT_EQ(parseOk(kMinimal + kOutbox).outboxes[0].keyColumn, std::nullopt);
  EXPECT_EQ(onlyIssue(kMinimal + "[[outbox]]\ntable = \"t\"\n[outbox.envelope]\npayload = \"other\"\n"),
            "relay.toml:8:11: outbox[0].envelope.payload: the envelope's \"payload\" field is the payload itself; "
            "choose another field name");
  EXPECT_EQ(onlyIssue(kMinimal + "[[outbox]]\ntable = \"t\"\ntimestamp_column = \"\"\n"),
            "relay.toml:7:20: outbox[0].timestamp_column: must not be empty; give a column name of the outbox table");
}

TEST(RelayConfigValidation, DeadLetterTopic) {
  EXPECT_EQ(onlyIssue("dead_letter_topic = \"dlq.{type}\"\n" + kMinimal + kOutbox),
            "relay.toml:1:21: dead_letter_topic: must be a plain Kafka topic name without {placeholders}, got "
            "\"dlq.{type}\"");
  EXPECT_THAT(onlyIssue("dead_letter_topic = \"dead letters\"\n" + kMinimal + kOutbox),
              HasSubstr("relay.toml:1:21: dead_letter_topic: \"dead letters\" holds ' '"));
  EXPECT_THAT(onlyIssue("dead_letter_topic = \"\"\n" + kMinimal + kOutbox), HasSubstr("must not be empty"));
  EXPECT_THAT(onlyIssue("dead_letter_topic = \"..\"\n" + kMinimal + kOutbox),
              HasSubstr("not a valid Kafka topic name"));
  EXPECT_THAT(onlyIssue("dead_letter_topic = \"" + std::string(250, 'd') + "\"\n" + kMinimal + kOutbox),
              HasSubstr("not a valid Kafka topic name"));
}

TEST(RelayConfigValidation, LogLevelAndFormat) {
  EXPECT_EQ(onlyIssue("[log]\nlevel = \"verbose\"\n" + kMinimal + kOutbox),
            "relay.toml:2:9: log.level: must be one of debug, info, warn, error, got \"verbose\"");
  EXPECT_EQ(onlyIssue("[log]\nformat = \"xml\"\n" + kMinimal + kOutbox),
            "relay.toml:2:10: log.format: must be plain or json, got \"xml\"");
}

TEST(RelayConfigValidation, Limits) {
  EXPECT_EQ(onlyIssue(kMinimal + "[limits]\nmax_inflight_events = 0\n" + kOutbox),
            "relay.toml:6:23: limits.max_inflight_events: must be greater than 0, got 0");
  EXPECT_EQ(onlyIssue(kMinimal + "[limits]\nmax_inflight_bytes = -1\n" + kOutbox),
            "relay.toml:6:22: limits.max_inflight_bytes: must be greater than 0, got -1");
}

TEST(RelayConfigValidation, MetricsListen) {
  for (const char* ok : {"0.0.0.0:9187", "localhost:1", "[::]:65535", "host.example:8080", "127.0.0.1:0"}) {
    parseOk(kMinimal + "[metrics]\nlisten = \"" + ok + "\"\n" + kOutbox);
  }
  EXPECT_EQ(onlyIssue(kMinimal + "[metrics]\nlisten = \"0.0.0.0:70000\"\n" + kOutbox),
            "relay.toml:6:10: metrics.listen: \"0.0.0.0:70000\" has port \"70000\", which is not a port number "
            "(0-65535); write host:port, e.g. \"0.0.0.0:9187\"");
  for (const char* bad : {"9187", "0.0.0.0:65536", "0.0.0.0:", "0.0.0.0:http", ":9187", "::1:9187", "[::1:9187"}) {
    EXPECT_THAT(onlyIssue(kMinimal + "[metrics]\nlisten = \"" + bad + "\"\n" + kOutbox),
                HasSubstr("relay.toml:6:10: metrics.listen: "))
        << bad;
  }
}

TEST(RelayConfigValidation, KafkaProperties) {
  EXPECT_EQ(onlyIssue(kMinimal + "[kafka.properties]\n\"bootstrap.servers\" = \"x:1\"\n" + kOutbox),
            "relay.toml:6:23: kafka.properties.\"bootstrap.servers\": is set by kafka.bootstrap_servers; set that "
            "instead and remove this property");
  EXPECT_EQ(onlyIssue(kMinimal + "[kafka.properties]\ncompression.type = \"lz4\"\n" + kOutbox),
            "relay.toml:6:1: kafka.properties.compression: must be a string, number or boolean, got a table; to set "
            "a name that holds dots, quote it: \"compression.type\" = ...");
  EXPECT_EQ(onlyIssue(kMinimal + "[kafka.properties]\n\"a.b\" = [1]\n" + kOutbox),
            "relay.toml:6:9: kafka.properties.\"a.b\": must be a string, number or boolean, got an array");
}

// Every property a delivery guarantee rests on is refused at its value's line:column, naming the guarantee and how
// to opt in; the relay's own value (or one that keeps the guarantee) is accepted.
TEST(RelayConfigValidation, GuardedKafkaPropertiesAreRefused) {
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"acks", "1"},
      {"request.required.acks", "0"},
      {"enable.idempotence", "false"},
      {"message.timeout.ms", "300000"},
      {"delivery.timeout.ms", "120000"},
      {"enable.gapless.guarantee", "true"},
      {"max.in.flight.requests.per.connection", "6"},
      {"max.in.flight", "100"},
      {"retries", "3"},
      {"message.send.max.retries", "0"},
      {"partitioner", "consistent_random"},
  };
  for (const auto& [name, value] : refused) {
    std::string line = "\"" + name + "\" = \"" + value + "\"\n";
    std::string issue = onlyIssue(kMinimal + "[kafka.properties]\n" + line + kOutbox);
    std::string column = std::to_string(name.size() + 6);  // after the quoted name and " = "
    std::string key = name.find('.') == std::string::npos ? name : "\"" + name + "\"";
    EXPECT_THAT(issue, HasSubstr("relay.toml:6:" + column + ": kafka.properties." + key + ": \"" + value +
                                 "\" would break a delivery guarantee: "))
        << issue;
    EXPECT_THAT(issue, HasSubstr("set unsafe_overrides = true in [kafka]")) << issue;
  }
  // The guarantee is named.
  EXPECT_THAT(onlyIssue(kMinimal + "[kafka.properties]\nacks = 1\n" + kOutbox),
              HasSubstr("every in-sync replica has it"));
  EXPECT_THAT(onlyIssue(kMinimal + "[kafka.properties]\n\"message.timeout.ms\" = 5000\n" + kOutbox),
              HasSubstr("waits for Kafka however long an outage lasts"));
  EXPECT_THAT(onlyIssue(kMinimal + "[kafka.properties]\npartitioner = \"random\"\n" + kOutbox), HasSubstr("murmur2"));
  EXPECT_THAT(onlyIssue(kMinimal + "[kafka.properties]\n\"enable.gapless.guarantee\" = true\n" + kOutbox),
              HasSubstr("dead-letter topic"));
  // Every one of them at once: one issue each.
  std::string all = kMinimal + "[kafka.properties]\n";
  for (const auto& [name, value] : refused) all += "\"" + name + "\" = \"" + value + "\"\n";
  all += kOutbox;
  auto result = parseRelayConfig(all, "relay.toml");
  EXPECT_FALSE(result.ok());
  EXPECT_EQ(result.issues.size(), refused.size()) << formatIssues(result.issues);
}

TEST(RelayConfigValidation, GuardedKafkaPropertiesKeepingTheGuaranteeAreAccepted) {
  RelayConfig c = parseOk(kMinimal + R"([kafka.properties]
acks = "all"
"request.required.acks" = -1
"enable.idempotence" = true
"message.timeout.ms" = 0
"enable.gapless.guarantee" = false
"max.in.flight" = 1
retries = 2147483647
partitioner = "murmur2"
)" + kOutbox);
  EXPECT_EQ(c.kafka.properties.size(), 8u);
  EXPECT_FALSE(c.kafka.unsafeOverrides);
  EXPECT_TRUE(unsafeOverrideWarnings(c.kafka).empty());
}

TEST(RelayConfigValidation, UnsafeOverridesAcceptsThemAndWarnsForEach) {
  RelayConfig c = parseOk(R"([source]
conninfo = "host=db"
[kafka]
bootstrap_servers = "kafka:9092"
unsafe_overrides = true
[kafka.properties]
acks = 1
"compression.type" = "lz4"
"message.timeout.ms" = 300000
partitioner = "consistent_random"
"enable.idempotence" = true
)" + kOutbox);
  EXPECT_TRUE(c.kafka.unsafeOverrides);
  EXPECT_THAT(c.kafka.properties, ElementsAre(std::pair<std::string, std::string>{"acks", "1"},
                                              std::pair<std::string, std::string>{"compression.type", "lz4"},
                                              std::pair<std::string, std::string>{"message.timeout.ms", "300000"},
                                              std::pair<std::string, std::string>{"partitioner", "consistent_random"},
                                              std::pair<std::string, std::string>{"enable.idempotence", "true"}));
  // One warning per property that gives a guarantee up (not for lz4, nor for idempotence kept on).
  auto warnings = unsafeOverrideWarnings(c.kafka);
  ASSERT_EQ(warnings.size(), 3u);
  EXPECT_EQ(warnings[0],
            "kafka.unsafe_overrides: kafka.properties.\"acks\" = \"1\" gives up a delivery guarantee: an event counts "
            "as delivered only once every in-sync replica has it (with fewer acknowledgements, a leader that fails "
            "after acknowledging loses events whose transactions were already confirmed)");
  EXPECT_THAT(warnings[1], HasSubstr("kafka.properties.\"message.timeout.ms\" = \"300000\" gives up a delivery "
                                     "guarantee: an event waits for Kafka however long an outage lasts"));
  EXPECT_THAT(warnings[2], HasSubstr("kafka.properties.\"partitioner\" = \"consistent_random\" gives up"));
  EXPECT_THAT(c.redactedSummary(), HasSubstr("unsafe_overrides = true"));
}

// --- Many problems at once -------------------------------------------------------------------------------------

TEST(RelayConfigValidation, ReportsEveryProblemInFileOrder) {
  auto result = parseRelayConfig(R"(shutdown_timeout_ms = 0
[log]
level = "loud"
[source]
slot = "Bad-Slot"
status_interval_ms = -1
[kafka]
bootstrap_servers = ""
[[outbox]]
table = "t"
topic = "x.{nope}"
[limits]
max_inflight_events = 0
)",
                                 "relay.toml");
  EXPECT_FALSE(result.config.has_value());
  EXPECT_THAT(issueLines(result),
              ElementsAre("relay.toml:1:23: shutdown_timeout_ms: must be greater than 0, got 0",
                          "relay.toml:3:9: log.level: must be one of debug, info, warn, error, got \"loud\"",
                          "relay.toml:4:1: source.conninfo: is required; set it in [source]",
                          HasSubstr("relay.toml:5:8: source.slot: must match [a-z0-9_]{1,63}, got \"Bad-Slot\""),
                          "relay.toml:6:22: source.status_interval_ms: must be greater than 0, got -1",
                          "relay.toml:8:21: kafka.bootstrap_servers: must not be empty",
                          HasSubstr("relay.toml:11:9: outbox[0].topic: {nope} is not a column"),
                          "relay.toml:13:23: limits.max_inflight_events: must be greater than 0, got 0"));
}

// --- Unknown keys ----------------------------------------------------------------------------------------------

TEST(RelayConfigUnknownKeys, TopLevel) {
  EXPECT_EQ(onlyIssue("shutdown_timeout = 5\n" + kMinimal + kOutbox),
            "relay.toml:1:1: shutdown_timeout: unknown key; did you mean shutdown_timeout_ms?");
  EXPECT_EQ(onlyIssue(kMinimal + "[sink]\nx = 1\n" + kOutbox),
            "relay.toml:5:2: sink: unknown key; remove it, or use one of: log, source, kafka, outbox, messages, "
            "limits, metrics, shutdown_timeout_ms, dead_letter_topic");
}

TEST(RelayConfigUnknownKeys, Nested) {
  auto result = parseRelayConfig(R"([source]
conninfo = "x"
slott = "a"
[kafka]
bootstrap_servers = "k"
[kafka.propertis]
a = "b"
[messages]
enabled = true
[messages.headers]
h = "f"
[messages.extra]
y = 1
[metrics]
port = 9
)",
                                 "relay.toml");
  EXPECT_THAT(issueLines(result),
              ElementsAre("relay.toml:3:1: source.slott: unknown key; did you mean slot?",
                          "relay.toml:6:8: kafka.propertis: unknown key; did you mean properties?",
                          HasSubstr("relay.toml:12:11: messages.extra: unknown key; remove it, or use one of: "),
                          "relay.toml:15:1: metrics.port: unknown key; remove it, or use one of: enabled, listen"));
}

TEST(RelayConfigUnknownKeys, InsideOutboxTables) {
  auto result = parseRelayConfig(kMinimal + R"([[outbox]]
table = "a"
[[outbox]]
table = "b"
id_colum = "x"
topics = "y"
)",
                                 "relay.toml");
  EXPECT_THAT(issueLines(result),
              ElementsAre("relay.toml:9:1: outbox[1].id_colum: unknown key; did you mean id_column?",
                          "relay.toml:10:1: outbox[1].topics: unknown key; did you mean topic?"));
}

// --- Variables -------------------------------------------------------------------------------------------------

TEST(RelayConfigVariables, ExpandedInEveryString) {
  ScopedEnv slot("OUTBOX_TEST_SLOT", "from_env");
  ScopedEnv prop("OUTBOX_TEST_PROP", "zstd");
  ScopedEnv table("OUTBOX_TEST_TABLE", "app.events");
  RelayConfig c = parseOk(R"([source]
conninfo = "host=db application_name=$${literal}"
slot = "${OUTBOX_TEST_SLOT}"
[kafka]
bootstrap_servers = "k"
[kafka.properties]
"compression.type" = "${OUTBOX_TEST_PROP}"
[[outbox]]
table = "${OUTBOX_TEST_TABLE}"
[outbox.headers]
h = "${OUTBOX_TEST_SLOT}"
)");
  EXPECT_EQ(c.source.conninfo, "host=db application_name=${literal}");
  EXPECT_EQ(c.source.slot, "from_env");
  EXPECT_THAT(c.kafka.properties, ElementsAre(std::pair<std::string, std::string>{"compression.type", "zstd"}));
  ASSERT_EQ(c.outboxes.size(), 1u);
  EXPECT_EQ(c.outboxes[0].schema, "app");
  EXPECT_EQ(c.outboxes[0].table, "events");
  EXPECT_THAT(c.outboxes[0].headers, ElementsAre(std::pair<std::string, std::string>{"h", "from_env"}));
}

TEST(RelayConfigVariables, UnsetVariableIsAnIssue) {
  ScopedEnv unset("OUTBOX_TEST_UNSET_VAR", std::nullopt);
  EXPECT_EQ(onlyIssue("[source]\nconninfo = \"host=${OUTBOX_TEST_UNSET_VAR}\"\n[kafka]\nbootstrap_servers = \"k\"\n" +
                      kOutbox),
            "relay.toml:2:12: source.conninfo: environment variable OUTBOX_TEST_UNSET_VAR is not set; export it "
            "before starting, or write $${ for a literal \"${\"");
}

// --- Secrets ---------------------------------------------------------------------------------------------------

TEST(RelayConfigSecrets, PasswordFileIsRead) {
  TempFile pw("correct-horse\n");
  RelayConfig c = parseOk("[source]\nconninfo = \"host=db\"\npassword_file = \"" + pw.path() +
                          "\"\n[kafka]\nbootstrap_servers = \"k\"\n" + kOutbox);
  EXPECT_EQ(c.source.passwordFile, pw.path());
  EXPECT_EQ(c.source.password, "correct-horse");
}

TEST(RelayConfigSecrets, MissingPasswordFileIsAnIssueNamingThePath) {
  EXPECT_EQ(onlyIssue("[source]\nconninfo = \"host=db\"\npassword_file = \"/nonexistent/pg-password\"\n[kafka]\n"
                      "bootstrap_servers = \"k\"\n" +
                      kOutbox),
            "relay.toml:3:17: source.password_file: cannot open \"/nonexistent/pg-password\": No such file or "
            "directory; create the file (readable by this process) or remove password_file");
  TempFile empty("");
  EXPECT_THAT(onlyIssue("[source]\nconninfo = \"host=db\"\npassword_file = \"" + empty.path() +
                        "\"\n[kafka]\nbootstrap_servers = \"k\"\n" + kOutbox),
              HasSubstr("is empty; put the secret in it or remove password_file"));
}

TEST(RelayConfigSecrets, SecretFilesAreRead) {
  TempFile sasl("kafka-pw\n");
  RelayConfig c = parseOk(kMinimal + "[kafka.secret_files]\n\"sasl.password\" = \"" + sasl.path() + "\"\n" + kOutbox);
  EXPECT_THAT(c.kafka.secretFiles, ElementsAre(std::pair<std::string, std::string>{"sasl.password", sasl.path()}));
  EXPECT_THAT(c.kafka.secretValues, ElementsAre(std::pair<std::string, std::string>{"sasl.password", "kafka-pw"}));

  EXPECT_EQ(onlyIssue(kMinimal + "[kafka.secret_files]\n\"sasl.password\" = \"/nonexistent/sasl\"\n" + kOutbox),
            "relay.toml:6:19: kafka.secret_files.\"sasl.password\": cannot open \"/nonexistent/sasl\": No such file "
            "or directory; create the file (readable by the relay) or remove this entry");
  EXPECT_THAT(onlyIssue(kMinimal +
                        "[kafka.properties]\n\"sasl.password\" = \"x\"\n[kafka.secret_files]\n"
                        "\"sasl.password\" = \"" +
                        sasl.path() + "\"\n" + kOutbox),
              HasSubstr("relay.toml:8:19: kafka.secret_files.\"sasl.password\": is also set in [kafka.properties]"));
}

TEST(RelayConfigSecrets, RedactedSummaryHidesEverySecret) {
  TempFile pw("file-password-1\n");
  TempFile sasl("sasl-password-2");
  auto check = [&](const std::string& conninfo, const std::string& expectedConninfoLine) {
    RelayConfig c = parseOk("[source]\nconninfo = \"" + conninfo + "\"\npassword_file = \"" + pw.path() +
                            "\"\n[kafka]\nbootstrap_servers = \"k:1\"\n[kafka.properties]\n"
                            "\"ssl.key.password\" = \"ssl-password-3\"\n\"sasl.oauthbearer.config\" = \"oauth-4\"\n"
                            "\"ssl.key.pem\" = \"pem-5\"\n\"client.secret.thing\" = \"secret-6\"\n"
                            "\"compression.type\" = \"lz4\"\n"
                            "[kafka.secret_files]\n\"sasl.password\" = \"" +
                            sasl.path() + "\"\n" + kOutbox);
    std::string summary = c.redactedSummary();
    for (const char* secret :
         {"file-password-1", "sasl-password-2", "ssl-password-3", "oauth-4", "pem-5", "secret-6", "conn-password-7"}) {
      EXPECT_THAT(summary, Not(HasSubstr(secret))) << summary;
    }
    EXPECT_THAT(summary, HasSubstr(expectedConninfoLine));
    EXPECT_THAT(summary, HasSubstr("password = \"<redacted>\""));
    EXPECT_THAT(summary, HasSubstr("\"ssl.key.password\" = \"<redacted>\""));
    EXPECT_THAT(summary, HasSubstr("\"ssl.key.pem\" = \"<redacted>\""));
    EXPECT_THAT(summary, HasSubstr("\"compression.type\" = \"lz4\""));
    EXPECT_THAT(summary, HasSubstr("\"sasl.password\" = \"" + sasl.path() + "\""));  // the path, not the value
    // Redaction must not hide what is not secret.
    EXPECT_THAT(summary, HasSubstr("bootstrap_servers = \"k:1\""));
    EXPECT_THAT(summary, HasSubstr("slot = \"outbox_relay\""));
  };
  check("postgresql://relay:conn-password-7@db:5432/app",
        "conninfo = \"user=relay password=<redacted> dbname=app host=db port=5432\"");
  check("host=db user=relay password=conn-password-7 dbname=app",
        "conninfo = \"user=relay password=<redacted> dbname=app host=db\"");
  check("host=db password = 'conn-password-7' dbname=app", "conninfo = \"password=<redacted> dbname=app host=db\"");
  check("postgresql://db/app?password=conn-password-7", "conninfo = \"password=<redacted> dbname=app host=db\"");
  // The password of the client's TLS key is a secret too, in both forms.
  check("host=db dbname=app sslmode=require sslpassword=conn-password-7",
        "conninfo = \"dbname=app host=db sslmode=require sslpassword=<redacted>\"");
  check("postgresql://relay@db/app?sslpassword=conn-password-7&sslmode=require",
        "conninfo = \"user=relay dbname=app host=db sslmode=require sslpassword=<redacted>\"");
}

TEST(RelayConfigSecrets, SummaryIsReadableToml) {
  RelayConfig c = parseOk(kMinimal + "[[outbox]]\ntable = \"s.t\"\n[outbox.headers]\n\"x-type\" = \"type\"\n");
  auto reparsed = toml::parse(c.redactedSummary());
  EXPECT_EQ(reparsed["source"]["conninfo"].value<std::string>(), "host=db");
  EXPECT_EQ(reparsed["outbox"][0]["table"].value<std::string>(), "s.t");
  EXPECT_EQ(reparsed["outbox"][0]["headers"]["x-type"].value<std::string>(), "type");
  EXPECT_EQ(reparsed["limits"]["max_inflight_events"].value<uint64_t>(), RelayConfig{}.limits.maxInflightEvents);
  EXPECT_EQ(reparsed["dead_letter_topic"].value<std::string>(), "outbox.deadletter");
}

// --- Files and syntax ------------------------------------------------------------------------------------------

TEST(RelayConfigFile, MissingFileIsAnIssueNamingThePath) {
  auto result = loadRelayConfig("/nonexistent/dir/relay.toml");
  EXPECT_FALSE(result.ok());
  EXPECT_THAT(issueLines(result),
              ElementsAre("/nonexistent/dir/relay.toml: cannot open \"/nonexistent/dir/relay.toml\": No such file or "
                          "directory; check the path given for the config file"));
}

TEST(RelayConfigFile, LoadsFromDiskWithTheFileNameInIssues) {
  TempFile file("[source]\nconninfo = \"x\"\nslot = \"BAD\"\n[kafka]\nbootstrap_servers = \"k\"\n" + kOutbox);
  auto result = loadRelayConfig(file.path());
  ASSERT_EQ(result.issues.size(), 1u);
  EXPECT_EQ(result.issues[0].source, file.path());
  EXPECT_THAT(result.issues[0].toString(), HasSubstr(file.path() + ":3:8: source.slot"));
}

TEST(RelayConfigFile, SyntaxErrorHasLineAndColumn) {
  auto result = parseRelayConfig("[source]\nconninfo = \"x\"\nslot = \"unterminated\n[kafka]\n", "relay.toml");
  EXPECT_FALSE(result.config.has_value());
  ASSERT_EQ(result.issues.size(), 1u) << formatIssues(result.issues);
  EXPECT_EQ(result.issues[0].line, 3);
  EXPECT_GT(result.issues[0].column, 8);
  EXPECT_THAT(result.issues[0].toString(), HasSubstr("relay.toml:3:"));
  EXPECT_THAT(result.issues[0].message, HasSubstr("TOML syntax error"));

  auto duplicate = parseRelayConfig(kMinimal + "[source]\n", "relay.toml");
  ASSERT_EQ(duplicate.issues.size(), 1u);
  EXPECT_EQ(duplicate.issues[0].line, 5);
  EXPECT_THAT(duplicate.issues[0].message, HasSubstr("TOML syntax error"));
}

TEST(RelayConfigValidation, FailoverAndSlotLoss) {
  RelayConfig defaults = parseOk(kMinimal + kOutbox);
  EXPECT_FALSE(defaults.source.failover);
  EXPECT_EQ(defaults.source.onSlotLost, SourceConfig::OnSlotLost::Fail);
  EXPECT_THAT(defaults.redactedSummary(), HasSubstr("on_slot_lost = \"fail\""));
  // The checkpoint lives in the progress topic in both delivery modes.
  EXPECT_EQ(defaults.kafka.progressTopic, "outbox-relay.progress");
  EXPECT_EQ(parseOk(kMinimal + "progress_topic = \"relay.checkpoints\"\n" + kOutbox).kafka.progressTopic,
            "relay.checkpoints");

  std::string source = "[source]\nconninfo = \"dbname=x\"\n";
  std::string rest = "[kafka]\nbootstrap_servers = \"k:9092\"\n" + kOutbox;
  RelayConfig c = parseOk(source + "failover = true\non_slot_lost = \"recreate\"\n" + rest);
  EXPECT_TRUE(c.source.failover);
  EXPECT_EQ(c.source.onSlotLost, SourceConfig::OnSlotLost::Recreate);
  EXPECT_THAT(c.redactedSummary(), HasSubstr("failover = true"));
  EXPECT_THAT(onlyIssue(source + "on_slot_lost = \"ignore\"\n" + rest),
              HasSubstr("source.on_slot_lost: must be \"fail\" or \"recreate\", got \"ignore\""));
  EXPECT_THAT(onlyIssue(source + "failover = \"yes\"\n" + rest), HasSubstr("source.failover"));
}

TEST(RelayConfigValidation, DeliveryModeAndTransactionBounds) {
  RelayConfig defaults = parseOk(kMinimal + kOutbox);
  EXPECT_EQ(defaults.kafka.delivery, KafkaConfig::Delivery::AtLeastOnce);
  EXPECT_FALSE(defaults.kafka.exactlyOnce());
  EXPECT_THAT(defaults.redactedSummary(), HasSubstr("delivery = \"at_least_once\""));

  RelayConfig c = parseOk(kMinimal +
                          "delivery = \"exactly_once\"\ntransactional_id = \"orders-relay\"\n"
                          "progress_topic = \"relay.progress\"\ntransaction_max_events = 500\n"
                          "transaction_max_bytes = 65536\ntransaction_max_ms = 20\n" +
                          kOutbox);
  EXPECT_TRUE(c.kafka.exactlyOnce());
  EXPECT_EQ(c.kafka.transactionalId, "orders-relay");
  EXPECT_EQ(c.kafka.progressTopic, "relay.progress");
  EXPECT_EQ(c.kafka.transactionMaxEvents, 500u);
  EXPECT_EQ(c.kafka.transactionMaxBytes, 65536u);
  EXPECT_EQ(c.kafka.transactionMaxMs, 20);
  EXPECT_THAT(c.redactedSummary(), HasSubstr("transactional_id = \"orders-relay\""));

  RelayConfig eosDefaults = parseOk(kMinimal + "delivery = \"exactly_once\"\n" + kOutbox);
  EXPECT_EQ(eosDefaults.kafka.transactionalId, "");  // derived from the database and slot at connect
  EXPECT_EQ(eosDefaults.kafka.progressTopic, "outbox-relay.progress");
  EXPECT_EQ(eosDefaults.kafka.transactionMaxEvents, 10000u);
  EXPECT_EQ(eosDefaults.kafka.transactionMaxMs, 100);

  EXPECT_EQ(onlyIssue(kMinimal + "delivery = \"exactly-once\"\n" + kOutbox),
            "relay.toml:5:12: kafka.delivery: must be \"at_least_once\" or \"exactly_once\", got \"exactly-once\"");
  // Transaction settings without exactly-once would be silently meaningless: refused.
  EXPECT_THAT(onlyIssue(kMinimal + "transaction_max_ms = 20\n" + kOutbox),
              HasSubstr("kafka.transaction_max_ms: applies only with delivery = \"exactly_once\""));
  EXPECT_THAT(onlyIssue(kMinimal + "delivery = \"exactly_once\"\nprogress_topic = \"bad topic\"\n" + kOutbox),
              HasSubstr("kafka.progress_topic:"));
  EXPECT_THAT(onlyIssue(kMinimal + "delivery = \"exactly_once\"\ntransaction_max_ms = 0\n" + kOutbox),
              HasSubstr("kafka.transaction_max_ms: must be"));
  EXPECT_THAT(onlyIssue(kMinimal + "delivery = \"exactly_once\"\ntransactional_id = \"\"\n" + kOutbox),
              HasSubstr("kafka.transactional_id: must be 1 to 249 characters"));
  // The relay owns transactional.id: set through [kafka.properties] it would bypass the progress record.
  EXPECT_THAT(onlyIssue(kMinimal + "[kafka.properties]\n\"transactional.id\" = \"x\"\n" + kOutbox),
              HasSubstr("is set by the relay in exactly-once mode"));
}

// examples/saga's two relays: valid; the commands/replies table routed by its destination column, with the
// correlation headers README's Sagas and CQRS section names.
TEST(RelayConfig, SagaExampleFilesParse) {
  ScopedEnv order("ORDER_DB_URL", "postgresql://localhost/saga_order");
  ScopedEnv customer("CUSTOMER_DB_URL", "postgresql://localhost/saga_customer");
  ScopedEnv kafka("KAFKA_BOOTSTRAP", "localhost:19092");
  for (const char* name : {"order-relay.toml", "customer-relay.toml"}) {
    auto result = loadRelayConfig(std::string(OUTBOX_SOURCE_DIR) + "/examples/saga/" + name);
    ASSERT_TRUE(result.ok()) << name << ": " << formatIssues(result.issues);
    const RelayConfig& c = *result.config;
    ASSERT_EQ(c.outboxes.size(), 2u) << name;
    EXPECT_EQ(c.outboxes[0].topicTemplate, "saga.{aggregatetype}.events");
    EXPECT_EQ(c.outboxes[1].table, "saga_messages");
    EXPECT_EQ(c.outboxes[1].topicTemplate, "saga.{destination}");
    std::set<std::string> headers;
    for (const auto& [header, column] : c.outboxes[1].headers) headers.insert(header);
    EXPECT_TRUE(headers.count("saga_id") && headers.count("causation_id")) << name;
  }
}
