// outbox-sink's config: parsing, defaults, validation with positions, secrets, redaction.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "src/BatchApplier.h"
#include "src/SinkConfig.h"

using namespace outbox;
using namespace outbox::sink;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

std::string issuesText(const std::vector<ConfigIssue>& issues) { return formatIssues(issues); }

const std::string kMinimal = R"([database]
conninfo = "host=db dbname=read"
[kafka]
bootstrap_servers = "kafka:9092"
[[projection]]
topic = "outbox.event.order"
event_type = "OrderCreated"
sql = 'INSERT INTO orders (id, customer) VALUES ($1, $2)'
params = ["/orderId", "/customerId"]
)";

ConfigLoadResult<SinkConfig> parse(const std::string& text) { return parseSinkConfig(text, "sink.toml"); }

}  // namespace

TEST(SinkConfigTest, MinimalConfigGetsDefaults) {
  auto r = parse(kMinimal);
  ASSERT_TRUE(r.ok()) << issuesText(r.issues);
  const SinkConfig& c = *r.config;
  EXPECT_EQ(c.database.conninfo, "host=db dbname=read");
  EXPECT_TRUE(c.database.createTables);
  EXPECT_EQ(c.database.schema, "public");
  EXPECT_EQ(c.kafka.groupId, "outbox-sink");
  EXPECT_EQ(c.kafka.eventTypeHeader, "eventType");
  EXPECT_EQ(c.kafka.initialOffset, "earliest");
  EXPECT_EQ(c.batch.maxEvents, 500);
  EXPECT_EQ(c.batch.maxWaitMs, 100);
  EXPECT_FALSE(c.deduplication.enabled);
  EXPECT_EQ(c.deduplication.idHeader, "id");
  EXPECT_EQ(c.onError, OnError::DeadLetter);
  EXPECT_EQ(c.deadLetterTopic, "outbox.sink.deadletter");
  ASSERT_EQ(c.projections.size(), 1u);
  EXPECT_EQ(c.projections[0].name, "projection_0");
  EXPECT_THAT(c.projections[0].params, ElementsAre("/orderId", "/customerId"));
  EXPECT_THAT(c.subscription(), ElementsAre("outbox.event.order"));
  EXPECT_TRUE(c.metrics.enabled);
}

TEST(SinkConfigTest, FullConfigIsRead) {
  ::setenv("SINK_TEST_PG", "postgresql://sink@db/read", 1);
  auto r = parse(R"(on_error = "stop"
dead_letter_topic = "dlq.sink"
shutdown_timeout_ms = 5000
[log]
level = "debug"
format = "json"
[database]
conninfo = "${SINK_TEST_PG}"
create_tables = false
schema = "sink"
[kafka]
bootstrap_servers = "k:9092"
group_id = "read-models"
topics = ["outbox.event.order", "^outbox\\.event\\..*"]
event_type_header = "type"
initial_offset = "latest"
[kafka.properties]
"session.timeout.ms" = 10000
[batch]
max_events = 1
max_wait_ms = 0
[deduplication]
enabled = true
retention_hours = 24
[metrics]
listen = "127.0.0.1:0"
[[projection]]
name = "orders"
topic = "^outbox\\.event\\.order$"
event_type = "*"
sql = "SELECT $1, $2, $3"
params = ["@key", "@header:type", "?/x/y"]
[[projection]]
name = "customers"
topic = "outbox.event.customer"
event_type = "CustomerCreated"
sql = "SELECT 1"
)");
  ASSERT_TRUE(r.ok()) << issuesText(r.issues);
  const SinkConfig& c = *r.config;
  EXPECT_EQ(c.onError, OnError::Stop);
  EXPECT_EQ(c.deadLetterTopic, "dlq.sink");
  EXPECT_EQ(c.logLevel, log::Level::Debug);
  EXPECT_EQ(c.database.conninfo, "postgresql://sink@db/read");
  EXPECT_FALSE(c.database.createTables);
  EXPECT_EQ(c.database.schema, "sink");
  EXPECT_EQ(c.kafka.groupId, "read-models");
  EXPECT_THAT(c.subscription(), ElementsAre("outbox.event.order", "^outbox\\.event\\..*"));
  EXPECT_EQ(c.kafka.eventTypeHeader, "type");
  EXPECT_EQ(c.kafka.initialOffset, "latest");
  EXPECT_THAT(c.kafka.properties, ElementsAre(std::make_pair(std::string("session.timeout.ms"), std::string("10000"))));
  EXPECT_EQ(c.batch.maxEvents, 1);
  EXPECT_TRUE(c.deduplication.enabled);
  EXPECT_EQ(c.deduplication.retentionHours, 24);
  ASSERT_EQ(c.projections.size(), 2u);
  EXPECT_EQ(c.projections[0].name, "orders");
  EXPECT_EQ(c.projections[1].params.size(), 0u);
  ::unsetenv("SINK_TEST_PG");
}

TEST(SinkConfigTest, SubscriptionDefaultsToProjectionTopicsOnce) {
  auto r = parse(kMinimal + R"(
[[projection]]
topic = "outbox.event.order"
event_type = "OrderCancelled"
sql = "SELECT $1"
params = ["@key"]
[[projection]]
topic = "^outbox\\.event\\.c.*"
event_type = "*"
sql = "SELECT 1"
)");
  ASSERT_TRUE(r.ok()) << issuesText(r.issues);
  EXPECT_THAT(r.config->subscription(), ElementsAre("outbox.event.order", "^outbox\\.event\\.c.*"));
  EXPECT_EQ(r.config->projections[2].name, "projection_2");
}

TEST(SinkConfigTest, EveryProblemIsReportedWithItsPosition) {
  auto r = parse(R"(on_error = "ignore"
dead_letter_topic = "bad topic"
[database]
conninfo = ""
schema = "Bad-Schema"
[kafka]
bootstrap_servers = "k:9092"
topics = ["a b"]
initial_offset = "middle"
unknown_thing = 1
[kafka.properties]
"group.id" = "x"
"enable.auto.commit" = true
[batch]
max_events = 0
[metrics]
listen = "nowhere"
[[projection]]
topic = "^(unclosed"
event_type = "X"
sql = "SELECT $1, $3"
params = ["customerId", "@nope", "@header:"]
)");
  ASSERT_FALSE(r.ok());
  std::string text = issuesText(r.issues);
  EXPECT_THAT(text, HasSubstr("sink.toml:1:12: on_error: must be \"dead_letter\" or \"stop\""));
  EXPECT_THAT(text, HasSubstr("sink.toml:2:21: dead_letter_topic:"));
  EXPECT_THAT(text, HasSubstr("database.conninfo"));
  EXPECT_THAT(text, HasSubstr("sink.toml:5:10: database.schema:"));
  EXPECT_THAT(text, HasSubstr("sink.toml:8:10: kafka.topics:"));
  EXPECT_THAT(text, HasSubstr("sink.toml:9:18: kafka.initial_offset:"));
  EXPECT_THAT(text, HasSubstr("sink.toml:10:1: kafka.unknown_thing: unknown key"));
  EXPECT_THAT(text, HasSubstr("kafka.properties.\"group.id\": is set by kafka.group_id"));
  EXPECT_THAT(text, HasSubstr("kafka.properties.\"enable.auto.commit\": is managed by the sink"));
  EXPECT_THAT(text, HasSubstr("sink.toml:15:14: batch.max_events:"));
  EXPECT_THAT(text, HasSubstr("sink.toml:17:10: metrics.listen:"));
  EXPECT_THAT(text, HasSubstr("sink.toml:19:9: projection[0].topic:"));
  EXPECT_THAT(text, HasSubstr("not a valid regular expression"));
  EXPECT_THAT(text, HasSubstr("\"customerId\" must start with '/'"));
  EXPECT_THAT(text, HasSubstr("\"@nope\" is not a record attribute"));
  EXPECT_THAT(text, HasSubstr("\"@header:\" names no header"));
}

TEST(SinkConfigTest, ParamsMustMatchTheStatement) {
  auto r = parse(R"([database]
conninfo = "x"
[kafka]
bootstrap_servers = "k"
[[projection]]
topic = "t"
event_type = "E"
sql = 'INSERT INTO t VALUES ($1, $2)'
params = ["/a"]
[[projection]]
topic = "t"
event_type = "E"
sql = "INSERT INTO t VALUES ($1, $3, '$2 is quoted') -- $4 in a comment"
params = ["/a", "/b", "/c"]
)");
  ASSERT_FALSE(r.ok());
  std::string text = issuesText(r.issues);
  EXPECT_THAT(text, HasSubstr("sink.toml:9:10: projection[0].params: lists 1 parameter(s) but the sql uses 2"));
  EXPECT_THAT(text, HasSubstr("projection[1].sql: never uses $2"));
}

TEST(SinkConfigTest, EventTypesList) {
  auto r = parse(R"([database]
conninfo = "x"
[kafka]
bootstrap_servers = "k"
[[projection]]
topic = "t"
event_types = ["OrderCreated", "OrderPlaced"]
sql = "SELECT 1"
[[projection]]
topic = "t"
event_type = "A"
event_types = ["B"]
sql = "SELECT 1"
[[projection]]
topic = "t"
event_types = []
sql = "SELECT 1"
[[projection]]
topic = "t"
sql = "SELECT 1"
)");
  ASSERT_FALSE(r.ok());
  std::string text = issuesText(r.issues);
  EXPECT_THAT(text, HasSubstr("sink.toml:11:14: projection[1].event_type: set either event_type or event_types"));
  EXPECT_THAT(text, HasSubstr("sink.toml:16:15: projection[2].event_types: must not be empty"));
  EXPECT_THAT(text, HasSubstr("projection[3].event_type: is required"));
  EXPECT_THAT(text, Not(HasSubstr("projection[0]")));
}

TEST(SinkConfigTest, NothingToDoIsAnIssue) {
  auto r = parse("[database]\nconninfo = \"x\"\n[kafka]\nbootstrap_servers = \"k\"\n");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(issuesText(r.issues), HasSubstr("add a [[projection]]"));
}

TEST(SinkConfigTest, DuplicateProjectionNamesAreRejected) {
  auto r = parse(kMinimal +
                 "name = \"a\"\n[[projection]]\nname = \"a\"\ntopic = \"t\"\nevent_type = \"*\"\nsql = \"SELECT 1\"\n");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(issuesText(r.issues), HasSubstr("projection[1].name: \"a\" is already used"));
}

TEST(SinkConfigTest, UnsetVariableIsAnIssue) {
  ::unsetenv("SINK_TEST_UNSET");
  auto r = parse("[database]\nconninfo = \"${SINK_TEST_UNSET}\"\n" + kMinimal.substr(kMinimal.find("[kafka]")));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(issuesText(r.issues), HasSubstr("SINK_TEST_UNSET"));
}

TEST(SinkConfigTest, SecretsAreReadFromFilesAndRedacted) {
  std::string dir = testing::TempDir() + "sink_config_test_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/pg") << "pg-secret\n";
  std::ofstream(dir + "/kafka") << "kafka-secret";
  auto r = parse(R"([database]
conninfo = "postgresql://sink:inline-pass@db/read?sslpassword=inline-sslpass"
password_file = ")" +
                 dir + R"(/pg"
[kafka]
bootstrap_servers = "k"
[kafka.properties]
"sasl.username" = "user"
"ssl.key.password" = "inline-kafka"
[kafka.secret_files]
"sasl.password" = ")" +
                 dir + R"(/kafka"
[[projection]]
topic = "t"
event_type = "*"
sql = "SELECT 1"
)");
  ASSERT_TRUE(r.ok()) << issuesText(r.issues);
  EXPECT_EQ(r.config->database.password, "pg-secret");
  ASSERT_EQ(r.config->kafka.secretValues.size(), 1u);
  EXPECT_EQ(r.config->kafka.secretValues[0].second, "kafka-secret");
  std::string summary = r.config->redactedSummary();
  EXPECT_THAT(summary, Not(HasSubstr("pg-secret")));
  EXPECT_THAT(summary, Not(HasSubstr("kafka-secret")));
  EXPECT_THAT(summary, Not(HasSubstr("inline-pass")));
  EXPECT_THAT(summary, Not(HasSubstr("inline-sslpass")));
  EXPECT_THAT(summary,
              HasSubstr("conninfo = \"user=sink password=<redacted> dbname=read host=db sslpassword=<redacted>\""));
  EXPECT_THAT(summary, Not(HasSubstr("inline-kafka")));
  EXPECT_THAT(summary, HasSubstr("\"sasl.username\" = \"user\""));
  EXPECT_THAT(summary, HasSubstr("[kafka.secret_files]"));
  std::filesystem::remove_all(dir);
}

TEST(SinkConfigTest, MissingSecretFileIsAnIssue) {
  auto r = parse(kMinimal + "[kafka.secret_files]\n\"sasl.password\" = \"/nonexistent/secret\"\n");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(issuesText(r.issues), HasSubstr("/nonexistent/secret"));
}

TEST(SinkConfigTest, SummaryParsesBack) {
  auto r = parse(kMinimal);
  ASSERT_TRUE(r.ok());
  auto again = parse(r.config->redactedSummary());
  EXPECT_TRUE(again.ok()) << issuesText(again.issues);
}

TEST(SinkConfigTest, SearchPathIsAListOfIdentifiers) {
  const std::string withPath = "[database]\nconninfo = \"x\"\nsearch_path = \"view_v2, public\"\n" +
                               kMinimal.substr(kMinimal.find("[kafka]"));
  auto r = parse(withPath);
  ASSERT_TRUE(r.ok()) << issuesText(r.issues);
  EXPECT_THAT(r.config->database.searchPath, ElementsAre("view_v2", "public"));
  auto again = parse(r.config->redactedSummary());
  ASSERT_TRUE(again.ok()) << issuesText(again.issues);
  EXPECT_THAT(again.config->database.searchPath, ElementsAre("view_v2", "public"));
  EXPECT_TRUE(parse(kMinimal).config->database.searchPath.empty());
  for (const char* bad : {"view_v2; DROP TABLE x", "", "a,,b", "Quoted"}) {
    std::string text = withPath;
    text.replace(text.find("view_v2, public"), 15, bad);
    auto b = parse(text);
    ASSERT_FALSE(b.ok()) << bad;
    EXPECT_THAT(issuesText(b.issues), HasSubstr("sink.toml:3:15: database.search_path: must be a comma-separated list"))
        << bad;
  }
}

TEST(SinkConfigTest, ExampleConfigIsValid) {
  ::setenv("PGURL", ::getenv("PGURL") ? ::getenv("PGURL") : "postgresql://localhost/x", 0);
  ::setenv("KAFKA_BOOTSTRAP", ::getenv("KAFKA_BOOTSTRAP") ? ::getenv("KAFKA_BOOTSTRAP") : "localhost:9092", 0);
  auto r = loadSinkConfig(std::string(OUTBOX_SOURCE_DIR) + "/examples/sink.toml");
  EXPECT_TRUE(r.ok()) << issuesText(r.issues);
}

TEST(SinkSqlParametersTest, ScansPlaceholdersOutsideLiteralsAndComments) {
  EXPECT_EQ(scanSqlParameters("SELECT 1").highest, 0);
  EXPECT_EQ(scanSqlParameters("SELECT $1, $2").highest, 2);
  auto r = scanSqlParameters("SELECT $1, '$2', \"$5\", $3 /* $9 */ -- $8\n, $$ $7 $$, $tag$ $6 $tag$");
  EXPECT_EQ(r.highest, 3);
  EXPECT_THAT(r.unused, ElementsAre(2));
  EXPECT_EQ(scanSqlParameters("SELECT $10").highest, 10);
  EXPECT_EQ(scanSqlParameters("SELECT $10").unused.size(), 9u);
}

const std::string kHead = "[database]\nconninfo = \"x\"\n[kafka]\nbootstrap_servers = \"k\"\n";

TEST(SinkConfigTest, MultiStatementProjectionIsRead) {
  auto r = parse(kHead + R"([[projection]]
name = "reserve_credit"
topic = "saga.order.events"
event_type = "OrderCreated"
  [[projection.statements]]
  sql = "INSERT INTO credit_reservations (order_id, customer_id) SELECT $1, $2"
  params = ["/orderId", "/customerId"]
  [[projection.statements]]
  sql = "UPDATE customers SET reserved = reserved + 1 WHERE id = $1"
  params = ["/customerId"]
  [[projection.statements]]
  sql = "SELECT 1"
[[projection]]
name = "single"
topic = "t"
event_type = "*"
sql = "SELECT $1"
params = ["@key"]
)");
  ASSERT_TRUE(r.ok()) << issuesText(r.issues);
  const ProjectionConfig& multi = r.config->projections[0];
  EXPECT_EQ(multi.sql, "");
  EXPECT_TRUE(multi.params.empty());
  ASSERT_EQ(multi.statements.size(), 3u);
  EXPECT_EQ(multi.statements[0].sql, "INSERT INTO credit_reservations (order_id, customer_id) SELECT $1, $2");
  EXPECT_THAT(multi.statements[0].params, ElementsAre("/orderId", "/customerId"));
  EXPECT_EQ(multi.statements[1].sql, "UPDATE customers SET reserved = reserved + 1 WHERE id = $1");
  EXPECT_THAT(multi.statements[1].params, ElementsAre("/customerId"));
  EXPECT_TRUE(multi.statements[2].params.empty());
  // The single-statement form is unchanged.
  const ProjectionConfig& single = r.config->projections[1];
  EXPECT_EQ(single.sql, "SELECT $1");
  EXPECT_THAT(single.params, ElementsAre("@key"));
  EXPECT_TRUE(single.statements.empty());
}

TEST(SinkConfigTest, SqlAndStatementsAreMutuallyExclusive) {
  auto r = parse(kHead + R"([[projection]]
name = "both"
topic = "t"
event_type = "*"
sql = "SELECT $1"
params = ["@key"]
  [[projection.statements]]
  sql = "SELECT 1"
)");
  ASSERT_FALSE(r.ok());
  std::string text = issuesText(r.issues);
  EXPECT_THAT(text, HasSubstr("sink.toml:9:7: projection[0].sql: set either sql and params or "
                              "[[projection.statements]], not both"));
  EXPECT_THAT(text, HasSubstr("sink.toml:10:10: projection[0].params: set either sql and params or "
                              "[[projection.statements]], not both"));
  EXPECT_THAT(text, Not(HasSubstr("unknown key")));
}

TEST(SinkConfigTest, StatementsMustNotBeEmpty) {
  auto r = parse(kHead + R"([[projection]]
topic = "t"
event_type = "*"
statements = []
)");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(issuesText(r.issues), HasSubstr("sink.toml:8:14: projection[0].statements: must not be empty"));
}

TEST(SinkConfigTest, EachStatementIsValidatedOnItsOwn) {
  auto r = parse(kHead + R"([[projection]]
topic = "t"
event_type = "*"
  [[projection.statements]]
  sql = "SELECT $1"
  params = ["/a"]
  [[projection.statements]]
  sql = "SELECT $1, $2"
  params = ["/a"]
  [[projection.statements]]
  sql = "SELECT $1, $3"
  params = ["/a", "/b", "nope"]
  [[projection.statements]]
  params = []
  frobnicate = 1
)");
  ASSERT_FALSE(r.ok());
  std::string text = issuesText(r.issues);
  EXPECT_THAT(text, Not(HasSubstr("statements[0]")));
  EXPECT_THAT(text, HasSubstr("sink.toml:13:12: projection[0].statements[1].params: lists 1 parameter(s) but the sql "
                              "uses 2"));
  EXPECT_THAT(text, HasSubstr("projection[0].statements[2].params: \"nope\" must start with '/'"));
  EXPECT_THAT(text, HasSubstr("projection[0].statements[3].sql: is required"));
  EXPECT_THAT(text, HasSubstr("projection[0].statements[3].frobnicate: unknown key"));
  auto unused = parse(kHead + R"([[projection]]
topic = "t"
event_type = "*"
  [[projection.statements]]
  sql = "SELECT $1, $3"
  params = ["/a", "/b", "/c"]
)");
  ASSERT_FALSE(unused.ok());
  EXPECT_THAT(issuesText(unused.issues), HasSubstr("sink.toml:9:9: projection[0].statements[0].sql: never uses $2"));
}

TEST(SinkConfigTest, SummaryShowsTheStatementsAndParsesBack) {
  auto r = parse(kHead + R"toml([[projection]]
name = "two"
topic = "t"
event_type = "*"
  [[projection.statements]]
  sql = "INSERT INTO a VALUES ($1)"
  params = ["/a"]
  [[projection.statements]]
  sql = "UPDATE b SET n = n + 1 WHERE id = $1"
  params = ["@key"]
)toml");
  ASSERT_TRUE(r.ok()) << issuesText(r.issues);
  std::string summary = r.config->redactedSummary();
  EXPECT_THAT(summary, HasSubstr("[[projection.statements]]"));
  EXPECT_THAT(summary, HasSubstr("INSERT INTO a VALUES ($1)"));
  EXPECT_THAT(summary, HasSubstr("UPDATE b SET n = n + 1 WHERE id = $1"));
  auto again = parse(summary);
  ASSERT_TRUE(again.ok()) << issuesText(again.issues) << summary;
  ASSERT_EQ(again.config->projections[0].statements.size(), 2u);
  EXPECT_THAT(again.config->projections[0].statements[1].params, ElementsAre("@key"));
}
