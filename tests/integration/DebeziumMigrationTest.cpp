// README "Migrating from Debezium's Outbox Event Router": examples/debezium-migration/ holds a Debezium outbox
// connector config and the relay config said to be its equivalent. The first test reads both and checks, option by
// option, that the relay's (as the relay itself parses it) says what the connector's does; the second runs the
// relay with it on the real stack and checks each record is what the connector would have published: topic, key,
// headers, the envelope, the timestamp and the trace context.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "src/RelayConfig.h"
#include "support/RelayProcess.h"
#include "support/SagaStack.h"
#include "support/TestEnv.h"

using namespace outbox;
using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

std::string readExample(const std::string& name) { return readSourceFile("examples/debezium-migration/" + name); }

const std::string kRouter = "transforms.outbox.";

}  // namespace

TEST(DebeziumMigration, TheRelayConfigSaysWhatTheConnectorConfigDoes) {
  nlohmann::json connector = nlohmann::json::parse(readExample("debezium-connector.json")).at("config");
  auto result = parseRelayConfig(readExample("relay.toml"), "relay.toml");
  ASSERT_TRUE(result.ok()) << formatIssues(result.issues);
  const RelayConfig& relay = *result.config;
  ASSERT_EQ(relay.outboxes.size(), 1u);
  const OutboxTableConfig& outbox = relay.outboxes[0];
  auto option = [&](const std::string& name) { return connector.at(name).get<std::string>(); };

  EXPECT_EQ(option("transforms.outbox.type"), "io.debezium.transforms.outbox.EventRouter");
  EXPECT_EQ(option("plugin.name"), "pgoutput");
  EXPECT_EQ(option("table.include.list"), outbox.schema + "." + outbox.table);
  EXPECT_EQ(option(kRouter + "table.field.event.id"), outbox.idColumn);
  EXPECT_EQ(option(kRouter + "table.field.event.key"), outbox.aggregateIdColumn);
  EXPECT_EQ(outbox.keyColumn, std::nullopt);  // the key is the aggregate id column, as table.field.event.key says
  EXPECT_EQ(option(kRouter + "table.field.event.payload"), outbox.payloadColumn);
  EXPECT_EQ(option(kRouter + "table.field.event.timestamp"), outbox.timestampColumn);
  EXPECT_EQ(option(kRouter + "tracing.span.context.field"), outbox.tracingColumn);
  // route.topic.replacement with ${routedByValue} = the route.by.field column: the relay's {column} placeholder.
  std::string topic = option(kRouter + "route.topic.replacement");
  topic.replace(topic.find("${routedByValue}"), 16, "{" + option(kRouter + "route.by.field") + "}");
  EXPECT_EQ(topic, outbox.topicTemplate);
  EXPECT_EQ(option(kRouter + "table.expand.json.payload"), "true");  // jsonb payloads stay JSON, as the relay's do
  // column:placement:name, comma-separated: header -> [outbox.headers], envelope -> [outbox.envelope].
  std::vector<std::pair<std::string, std::string>> headers, envelope;
  std::istringstream placements(option(kRouter + "table.fields.additional.placement"));
  for (std::string entry; std::getline(placements, entry, ',');) {
    size_t first = entry.find(':'), second = entry.find(':', first + 1);
    ASSERT_NE(second, std::string::npos) << entry;
    std::string column = entry.substr(0, first), where = entry.substr(first + 1, second - first - 1),
                name = entry.substr(second + 1);
    ASSERT_TRUE(where == "header" || where == "envelope") << entry;
    (where == "header" ? headers : envelope).emplace_back(name, column);
  }
  EXPECT_EQ(headers, outbox.headers);
  EXPECT_EQ(envelope, outbox.envelope);
  EXPECT_EQ(option("tombstones.on.delete"), "false");  // the relay publishes inserts only
  EXPECT_EQ(option("key.converter"), "org.apache.kafka.connect.storage.StringConverter");
  EXPECT_EQ(option("value.converter.schemas.enable"), "false");
}

TEST(DebeziumMigration, TheRelayPublishesWhatTheConnectorWould) {
  PgConnection pg(pgUrl());
  std::string table = uniqueName("dbz_outbox");
  pg.exec("CREATE TABLE " + table +
          " (id uuid PRIMARY KEY, aggregatetype varchar(255) NOT NULL, aggregateid varchar(255) NOT NULL, "
          "type varchar(255) NOT NULL, payload jsonb, occurred_at timestamptz NOT NULL, version int, "
          "tracingspancontext text)");
  std::string prefix = uniqueName("dbz");
  std::string slot = uniqueName("dbz_slot"), publication = uniqueName("dbz_pub");
  std::string deadLetters = uniqueName("dlq");
  const std::string file = "examples/debezium-migration/relay.toml";
  std::string config = readExample("relay.toml");
  config = saga::substitute(config, "\"host=orders-db port=5432 dbname=orders user=outbox_relay sslmode=verify-full\"",
                            tomlString(pgUrl()), file);
  config = saga::substitute(config, "\"kafka:9092\"", tomlString(kafkaBootstrap()), file);
  config = saga::substitute(config, "\"outbox_relay_orders\"", tomlString(slot), file);
  config = saga::substitute(config, "publication = \"outbox_relay\"", "publication = " + tomlString(publication), file);
  config = saga::substitute(config, "\"public.outbox\"", tomlString("public." + table), file);
  config = saga::substitute(config, "\"outbox.event.{aggregatetype}\"", tomlString(prefix + ".{aggregatetype}"), file);
  config = saga::substitute(config, "\"outbox.deadletter\"", tomlString(deadLetters), file);
  ReplicationCleanup cleanup(slot, publication, {table});
  auto relay = RelayProcess::start(config);
  ASSERT_TRUE(waitForSlotStreaming(pg, slot, 120s)) << relay->logTail();

  const std::string parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  pg.exec("INSERT INTO " + table +
          " VALUES ('4d47e190-0402-4048-bc2c-89dd54343cdc', 'order', '1', 'OrderCreated', "
          "'{\"id\": 1, \"customerId\": 123}', '2019-05-03 13:38:14.484+00', 2, "
          "E'#Fri May 03 13:38:14 UTC 2019\\ntraceparent=" + parent + "\\n'), "
          "('6b1c2a9e-7c1e-4b8e-9a7a-2a4d1c0e9f11', 'customer', 'c-7', 'CustomerRenamed', '{\"name\": \"Ada\"}', "
          "'2019-05-03 13:38:15+00', 1, NULL)");
  TopicReader reader(kafkaBootstrap(), {prefix + ".order", prefix + ".customer"});
  auto& records = reader.readUntil(2, 3min);
  ASSERT_EQ(records.size(), 2u) << relay->logTail();
  std::map<std::string, ConsumedRecord> byTopic;
  for (auto& r : records) byTopic[r.topic] = r;

  ConsumedRecord& order = byTopic[prefix + ".order"];
  EXPECT_EQ(order.key, "1");
  EXPECT_EQ(order.headers["id"], "4d47e190-0402-4048-bc2c-89dd54343cdc");
  EXPECT_EQ(order.headers["eventType"], "OrderCreated");
  EXPECT_EQ(order.headers["traceparent"], parent);
  EXPECT_EQ(order.timestampMs, 1556890694484);  // 2019-05-03 13:38:14.484 UTC, from occurred_at
  EXPECT_EQ(nlohmann::json::parse(order.value.value_or("null")),
            nlohmann::json::parse(R"({"payload": {"id": 1, "customerId": 123}, "eventVersion": 2})"));

  ConsumedRecord& customer = byTopic[prefix + ".customer"];
  EXPECT_EQ(customer.key, "c-7");
  EXPECT_EQ(customer.headers["eventType"], "CustomerRenamed");
  EXPECT_EQ(customer.headers.count("traceparent"), 0u);
  EXPECT_EQ(customer.timestampMs, 1556890695000);
  EXPECT_EQ(nlohmann::json::parse(customer.value.value_or("null")),
            nlohmann::json::parse(R"({"payload": {"name": "Ada"}, "eventVersion": 1})"));
}
