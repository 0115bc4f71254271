// outbox-sink against the real PostgreSQL and Kafka: projections of many events, de-duplication of re-published
// events, poison events to the dead-letter topic, on_error = "stop", multi-statement projections, the command line,
// metrics, throughput.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <iostream>

#include "support/SinkProcess.h"

using namespace outbox::test;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

namespace {

struct SinkDeliveryTest : ::testing::Test {
  PgConnection pg{pgUrl()};
  std::string prefix = uniqueName("it_sink");
  std::string topic = prefix + ".order";
};

std::string httpGet(const std::string& address, const std::string& path) {
  CommandResult r = runCommand({"/usr/bin/curl", "-s", "-S", "--max-time", "10", "http://" + address + path}, 15s);
  return r.output;
}

// The value of one series in a /metrics text ("name{labels}" as written), or -1 when absent.
double metricValue(const std::string& metrics, const std::string& series) {
  size_t at = metrics.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(metrics.substr(at + series.size() + 2));
}

}  // namespace

TEST_F(SinkDeliveryTest, SinkProjectsTwentyThousandEventsExactly) {
  OrderStream stream(topic, prefix);
  std::vector<TestEvent> events = takeEvents(stream, 20000);
  produceAll(events);
  OrderReadModel model(pg, prefix);
  SinkConfigBuilder config;
  model.addProjections(config, topic);
  config.set("batch", "max_events", "500").metricsListen("127.0.0.1:0");
  auto sink = SinkProcess::start(config.render());

  ASSERT_TRUE(waitForStoredOffsets(config.group(), topic, 20000, 120s))
      << "stored offsets reached " << storedOffsetSum(config.group(), topic);
  EXPECT_EQ(model.differences(events), "");

  // The metrics: names that pass promtool, and the counts of this run.
  std::optional<std::string> address = sink->adminAddress();
  ASSERT_TRUE(address);
  std::string metrics = httpGet(*address, "/metrics");
  EXPECT_THAT(metrics, HasSubstr("outbox_sink_events_consumed_total 20000"));
  EXPECT_THAT(metrics, HasSubstr("outbox_sink_events_applied_total{projection=\"applied_log\"} 20000"));
  EXPECT_THAT(metrics, HasSubstr("outbox_sink_consumer_lag{"));
  EXPECT_THAT(metrics, HasSubstr("outbox_sink_build_info{version="));
  EXPECT_THAT(metrics, HasSubstr("outbox_sink_batch_seconds_bucket"));
  std::string file = writeTempFile("metrics.txt", metrics);
  CommandResult promtool = runCommand({"/bin/sh", "-c", "promtool check metrics < " + file}, 30s);
  EXPECT_TRUE(promtool.status.success()) << promtool.output;
  EXPECT_EQ(httpGet(*address, "/healthz"), "ok\n");
  EXPECT_EQ(httpGet(*address, "/readyz"), "ok\n");

  sink->sigterm();
  auto status = sink->waitExit(30s);
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->success()) << status->toString();
  EXPECT_THAT(sink->log(), HasSubstr("leaving consumer group"));
}

TEST_F(SinkDeliveryTest, SinkSkipsEventsPublishedTwiceWithDeduplication) {
  OrderStream stream(topic, prefix);
  std::vector<TestEvent> events = takeEvents(stream, 3000);
  produceAll(events);
  OrderReadModel model(pg, prefix);
  SinkConfigBuilder config;
  model.addProjections(config, topic);
  config.set("batch", "max_events", "200").set("deduplication", "enabled", "true").metricsListen("127.0.0.1:0");
  config.set("", "on_error", "\"stop\"");  // a duplicate reaching the orders table would stop the sink
  auto sink = SinkProcess::start(config.render());
  ASSERT_TRUE(waitForStoredOffsets(config.group(), topic, 3000, 60s));

  // The relay re-publishes after a crash: the same events (same ids) again, after the originals.
  produceAll(events);
  ASSERT_TRUE(waitForStoredOffsets(config.group(), topic, 6000, 60s))
      << "stored offsets reached " << storedOffsetSum(config.group(), topic) << "\n"
      << sink->logTail();
  EXPECT_EQ(model.differences(events), "");
  EXPECT_EQ(model.appliedRows(), 3000);
  std::string metrics = httpGet(*sink->adminAddress(), "/metrics");
  EXPECT_THAT(metrics, HasSubstr("outbox_sink_events_skipped_total{reason=\"duplicate\"} 3000"));
  EXPECT_EQ(pg.scalar(fmt::format("SELECT count(*) FROM outbox_sink_processed_events WHERE consumer_group = '{}'",
                                  config.group())),
            "3000");
  EXPECT_TRUE(sink->running());
}

TEST_F(SinkDeliveryTest, SinkDeadLettersPoisonEventsAndAppliesTheFollowingOnes) {
  OrderReadModel model(pg, prefix);
  std::string dlq = prefix + ".dlq";
  SinkConfigBuilder config;
  model.addProjections(config, topic);
  config.set("", "dead_letter_topic", tomlString(dlq)).set("batch", "max_events", "100");

  // One key, so one partition and one order: good, three kinds of poison, good, good, and an unknown type.
  auto event = [&](std::string id, std::string type, std::string value) {
    return TestEvent{topic, "same-key", std::move(value), prefix + "-" + id, std::move(type)};
  };
  std::vector<TestEvent> events = {
      event("good1", "OrderCreated", R"({"orderId":"a","customerId":"c1","total":10.00})"),
      event("badjson", "OrderCreated", R"({"orderId":"b","customerId":)"),
      event("nofield", "OrderCreated", R"({"orderId":"c","total":1.00})"),
      event("negative", "OrderCreated", R"({"orderId":"d","customerId":"c1","total":-5.00})"),
      event("good2", "OrderCreated", R"({"orderId":"e","customerId":"c1","total":20.00})"),
      event("good3", "OrderCancelled", R"({"orderId":"a","customerId":"c1"})"),
      event("other", "OrderShipped", R"({"orderId":"a"})"),
  };
  produceAll(events);
  auto sink = SinkProcess::start(config.render());
  ASSERT_TRUE(waitForStoredOffsets(config.group(), topic, 7, 60s)) << sink->logTail();

  auto orders = pg.rows(fmt::format("SELECT order_id, total, status FROM {}_orders ORDER BY order_id", prefix));
  ASSERT_EQ(orders.size(), 2u);
  EXPECT_EQ(orders[0], (std::vector<std::string>{"a", "10.00", "cancelled"}));
  EXPECT_EQ(orders[1], (std::vector<std::string>{"e", "20.00", "created"}));
  EXPECT_EQ(
      pg.scalar(fmt::format("SELECT created || '/' || cancelled FROM {}_counts WHERE customer_id = 'c1'", prefix)),
      "2/1");
  // The applied log ("*") ran for every event, but a poison event's savepoint rolled back its row too.
  EXPECT_EQ(model.appliedRows(), 4);

  TopicReader reader(kafkaBootstrap(), {dlq});
  const auto& records = reader.readUntil(3, 60s);
  ASSERT_EQ(records.size(), 3u);
  std::vector<std::string> expectedIds = {prefix + "-badjson", prefix + "-nofield", prefix + "-negative"};
  for (size_t i = 0; i < records.size(); ++i) {
    const ConsumedRecord& r = records[i];
    SCOPED_TRACE(i);
    EXPECT_EQ(r.key, "same-key");
    EXPECT_EQ(r.value, events[i + 1].value);
    EXPECT_EQ(r.headers.at("id"), expectedIds[i]);
    EXPECT_EQ(r.headers.at("eventType"), "OrderCreated");
    EXPECT_EQ(r.headers.at("dlq.original.topic"), topic);
    EXPECT_EQ(r.headers.at("dlq.original.offset"), std::to_string(i + 1));
    EXPECT_EQ(r.headers.at("dlq.consumer.group"), config.group());
    EXPECT_TRUE(r.headers.count("dlq.original.partition"));
  }
  EXPECT_THAT(records[0].headers.at("dlq.error"), HasSubstr("not valid JSON"));
  EXPECT_THAT(records[1].headers.at("dlq.error"), HasSubstr("no field /customerId"));
  EXPECT_THAT(records[2].headers.at("dlq.error"), HasSubstr("check constraint"));
  EXPECT_THAT(records[2].headers.at("dlq.error"), HasSubstr("23514"));
}

TEST_F(SinkDeliveryTest, SinkStopsOnAPoisonEventWithoutCommittingIt) {
  OrderReadModel model(pg, prefix);
  SinkConfigBuilder config;
  model.addProjections(config, topic);
  config.set("", "on_error", "\"stop\"").set("batch", "max_events", "1");
  auto event = [&](std::string id, std::string value) {
    return TestEvent{topic, "k", std::move(value), prefix + "-" + id, "OrderCreated"};
  };
  produceAll({event("1", R"({"orderId":"a","customerId":"c1","total":1.00})"),
              event("2", R"({"orderId":"b","customerId":"c1","total":-1.00})"),
              event("3", R"({"orderId":"c","customerId":"c1","total":3.00})")});
  auto sink = SinkProcess::start(config.render());
  auto status = sink->waitExit(60s);
  ASSERT_TRUE(status) << sink->logTail();
  EXPECT_TRUE(status->exited && status->code == 3) << status->toString();
  EXPECT_THAT(sink->log(), HasSubstr("on_error = \"stop\""));
  EXPECT_EQ(storedOffsetSum(config.group(), topic), 1);  // past event 1 only
  EXPECT_EQ(pg.scalar(fmt::format("SELECT string_agg(order_id, ',') FROM {}_orders", prefix)), "a");

  // Started again, it stops at the same event.
  auto again = SinkProcess::start(config.render(), "sink-again");
  status = again->waitExit(60s);
  ASSERT_TRUE(status);
  EXPECT_EQ(status->code, 3);
  EXPECT_EQ(model.appliedRows(), 1);
}

TEST(SinkCliTest, SinkVersionHelpAndConfigCheck) {
  CommandResult version = runCommand({binPath("outbox-sink"), "--version"}, 10s);
  EXPECT_TRUE(version.status.success());
  EXPECT_THAT(version.output, HasSubstr("outbox-sink "));
  CommandResult help = runCommand({binPath("outbox-sink"), "--help"}, 10s);
  EXPECT_TRUE(help.status.success());
  EXPECT_THAT(help.output, HasSubstr("--check-config FILE"));
  CommandResult none = runCommand({binPath("outbox-sink")}, 10s);
  EXPECT_EQ(none.status.code, 2);
  CommandResult unknown = runCommand({binPath("outbox-sink"), "--frobnicate"}, 10s);
  EXPECT_EQ(unknown.status.code, 2);

  std::string bad = writeTempFile("bad.toml",
                                  "[database]\nconninfo = \"x\"\nport = 5\n[kafka]\nbootstrap_servers = "
                                  "\"k\"\n[[projection]]\ntopic = \"t\"\nevent_type = \"*\"\nsql = "
                                  "\"SELECT $1\"\nparams = [\"nope\"]\n");
  CommandResult check = runCommand({binPath("outbox-sink"), "--check-config", bad}, 10s);
  EXPECT_EQ(check.status.code, 2);
  EXPECT_THAT(check.output, HasSubstr(bad + ":3:1: database.port: unknown key"));
  EXPECT_THAT(check.output, HasSubstr(bad + ":10:10: projection[0].params: \"nope\" must start with '/'"));

  std::string good = writeTempFile("good.toml",
                                   "[database]\nconninfo = \"x\"\n[kafka]\nbootstrap_servers = \"k\"\n"
                                   "[[projection]]\ntopic = \"t\"\nevent_type = \"*\"\nsql = \"SELECT 1\"\n");
  CommandResult ok = runCommand({binPath("outbox-sink"), "--check-config", good}, 10s);
  EXPECT_TRUE(ok.status.success()) << ok.output;
  EXPECT_THAT(ok.output, HasSubstr("valid"));
}

TEST_F(SinkDeliveryTest, SinkRefusesToStartWhenAProjectionDoesNotPrepare) {
  SinkConfigBuilder config;
  config.projection("broken", topic, "*", "INSERT INTO no_such_table_" + prefix + " VALUES ($1)", {"@key"});
  auto sink = SinkProcess::start(config.render());
  auto status = sink->waitExit(60s);
  ASSERT_TRUE(status);
  EXPECT_EQ(status->code, 2) << status->toString();
  EXPECT_THAT(sink->log(), HasSubstr("the sql of projection broken does not prepare"));
}

TEST_F(SinkDeliveryTest, SinkRefusesToStartWhenAStatementOfAProjectionDoesNotPrepare) {
  SinkConfigBuilder config;
  config.projection("broken", topic, "*",
                    {{"SELECT $1", {"@key"}}, {"INSERT INTO no_such_table_" + prefix + " VALUES ($1)", {"@key"}}});
  auto sink = SinkProcess::start(config.render());
  auto status = sink->waitExit(60s);
  ASSERT_TRUE(status);
  EXPECT_EQ(status->code, 2) << status->toString();
  EXPECT_THAT(sink->log(), HasSubstr("the sql of projection broken statement 2 does not prepare"));
  EXPECT_THAT(sink->log(), HasSubstr("no_such_table_" + prefix));
}

// A credit reservation as a saga's participant writes it: one projection of three statements, all run for each event
// in its unit, the outcome decided in SQL (a CTE whose UPDATE reserves only within the limit; a rejection only where
// no reservation was made). Beside it a single-statement projection, unchanged. Applied events count once per
// projection, not per statement.
TEST_F(SinkDeliveryTest, SinkAppliesEveryStatementOfAMultiStatementProjection) {
  pg.exec(fmt::format(
      "CREATE TABLE {0}_customers (id text PRIMARY KEY, credit_limit numeric NOT NULL, reserved numeric NOT NULL "
      "DEFAULT 0, orders integer NOT NULL DEFAULT 0, CHECK (reserved <= credit_limit));"
      "CREATE TABLE {0}_reservations (order_id text PRIMARY KEY, customer_id text NOT NULL, amount numeric NOT NULL, "
      "state text NOT NULL);"
      "CREATE TABLE {0}_log (order_id text NOT NULL);"
      "INSERT INTO {0}_customers (id, credit_limit) VALUES ('c1', 100), ('c2', 10)",
      prefix));
  auto order = [&](std::string id, std::string customer, int total) {
    return TestEvent{topic, "same-key",
                     fmt::format(R"({{"orderId":"{}","customerId":"{}","total":{}}})", id, customer, total),
                     prefix + "-" + id, "OrderCreated"};
  };
  std::vector<TestEvent> events = {order("o1", "c1", 60), order("o2", "c1", 50), order("o3", "c1", 40),
                                   order("o4", "c2", 5), order("o5", "c2", 10)};
  produceAll(events);
  SinkConfigBuilder config;
  config.projection(
      "reserve", topic, "OrderCreated",
      {{fmt::format("WITH reserved AS (UPDATE {0}_customers SET reserved = reserved + $2::numeric WHERE id = $1 AND "
                    "reserved + $2::numeric <= credit_limit RETURNING id) "
                    "INSERT INTO {0}_reservations (order_id, customer_id, amount, state) "
                    "SELECT $3::text, id, $2::numeric, 'RESERVED' FROM reserved",
                    prefix),
        {"/customerId", "/total", "/orderId"}},
       {fmt::format("INSERT INTO {0}_reservations (order_id, customer_id, amount, state) "
                    "SELECT $1::text, $2::text, $3::numeric, 'REJECTED' "
                    "WHERE NOT EXISTS (SELECT 1 FROM {0}_reservations WHERE order_id = $1::text)",
                    prefix),
        {"/orderId", "/customerId", "/total"}},
       {fmt::format("UPDATE {}_customers SET orders = orders + 1 WHERE id = $1", prefix), {"/customerId"}}});
  config.projection("log", topic, "OrderCreated", fmt::format("INSERT INTO {}_log (order_id) VALUES ($1)", prefix),
                    {"/orderId"});
  config.set("", "dead_letter_topic", tomlString(prefix + ".dlq"))
      .set("deduplication", "enabled", "true")
      .set("batch", "max_events", "100")
      .metricsListen("127.0.0.1:0");
  auto sink = SinkProcess::start(config.render());
  ASSERT_TRUE(waitForStoredOffsets(config.group(), topic, 5, 60s)) << sink->logTail();

  EXPECT_EQ(pg.scalar(fmt::format("SELECT string_agg(order_id || ':' || customer_id || ':' || amount || ':' || state, "
                                  "',' ORDER BY order_id) FROM {}_reservations",
                                  prefix)),
            "o1:c1:60:RESERVED,o2:c1:50:REJECTED,o3:c1:40:RESERVED,o4:c2:5:RESERVED,o5:c2:10:REJECTED");
  EXPECT_EQ(pg.scalar(fmt::format(
                "SELECT string_agg(id || ':' || reserved || ':' || orders, ',' ORDER BY id) FROM {}_customers", prefix)),
            "c1:100:3,c2:5:2");
  EXPECT_EQ(pg.scalar(fmt::format("SELECT count(*) FROM {}_log", prefix)), "5");
  // The log shows that the config's line reached the sink in the multi-statement form.
  EXPECT_THAT(sink->log(), HasSubstr("[[projection.statements]]"));
  std::optional<std::string> address;
  ASSERT_TRUE(waitFor([&] { return (address = sink->adminAddress()).has_value(); }, 30s)) << sink->logTail();
  std::string metrics = httpGet(*address, "/metrics");
  EXPECT_EQ(metricValue(metrics, "outbox_sink_events_applied_total{projection=\"reserve\"}"), 5) << metrics;
  EXPECT_EQ(metricValue(metrics, "outbox_sink_events_applied_total{projection=\"log\"}"), 5) << metrics;
  EXPECT_EQ(metricValue(metrics, "outbox_sink_events_dead_lettered_total"), 0) << metrics;
  sink->sigterm();
  EXPECT_TRUE(sink->waitExit(30s));
  pg.exec(fmt::format("DROP TABLE {0}_customers, {0}_reservations, {0}_log", prefix));
}

// Statement 2 of a three-statement projection violates a CHECK constraint for one event: that event is
// dead-lettered with statement 1's row rolled back by its savepoint (and statement 3 never run), its id not recorded
// as processed, while the other events, before and after it, get all three statements.
TEST_F(SinkDeliveryTest, SinkDeadLettersAnEventWhoseSecondStatementFailsWithTheFirstRolledBack) {
  pg.exec(fmt::format("CREATE TABLE {0}_steps (order_id text NOT NULL, step integer NOT NULL);"
                      "CREATE TABLE {0}_amounts (order_id text PRIMARY KEY, amount numeric NOT NULL CHECK (amount > 0))",
                      prefix));
  std::string dlq = prefix + ".dlq";
  auto event = [&](std::string id, int amount) {
    return TestEvent{topic, "same-key", fmt::format(R"({{"orderId":"{}","amount":{}}})", id, amount),
                     prefix + "-" + id, "OrderPaid"};
  };
  std::vector<TestEvent> events = {event("a", 10), event("b", 20), event("c", -5), event("d", 30), event("e", 40)};
  produceAll(events);
  SinkConfigBuilder config;
  config.projection("pay", topic, "OrderPaid",
                    {{fmt::format("INSERT INTO {}_steps (order_id, step) VALUES ($1, 1)", prefix), {"/orderId"}},
                     {fmt::format("INSERT INTO {}_amounts (order_id, amount) VALUES ($1, $2::numeric)", prefix),
                      {"/orderId", "/amount"}},
                     {fmt::format("INSERT INTO {}_steps (order_id, step) VALUES ($1, 3)", prefix), {"/orderId"}}});
  config.set("", "dead_letter_topic", tomlString(dlq))
      .set("deduplication", "enabled", "true")
      .set("batch", "max_events", "100")
      .set("batch", "max_wait_ms", "1000")
      .metricsListen("127.0.0.1:0");
  auto sink = SinkProcess::start(config.render());
  ASSERT_TRUE(waitForStoredOffsets(config.group(), topic, 5, 60s)) << sink->logTail();

  EXPECT_EQ(pg.scalar(fmt::format("SELECT string_agg(order_id || step, ',' ORDER BY order_id, step) FROM {}_steps",
                                  prefix)),
            "a1,a3,b1,b3,d1,d3,e1,e3");
  EXPECT_EQ(pg.scalar(fmt::format("SELECT string_agg(order_id || '=' || amount, ',' ORDER BY order_id) FROM {}_amounts",
                                  prefix)),
            "a=10,b=20,d=30,e=40");
  TopicReader reader(kafkaBootstrap(), {dlq});
  const auto& records = reader.readUntil(1, 60s);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].headers.at("id"), prefix + "-c");
  EXPECT_EQ(records[0].value, events[2].value);
  EXPECT_THAT(records[0].headers.at("dlq.error"), HasSubstr("projection pay statement 2: "));
  EXPECT_THAT(records[0].headers.at("dlq.error"), HasSubstr("23514"));
  EXPECT_EQ(pg.scalar(fmt::format("SELECT string_agg(event_id, ',' ORDER BY event_id) FROM "
                                  "outbox_sink_processed_events WHERE consumer_group = '{}'",
                                  config.group())),
            fmt::format("{0}-a,{0}-b,{0}-d,{0}-e", prefix));
  std::optional<std::string> address;
  ASSERT_TRUE(waitFor([&] { return (address = sink->adminAddress()).has_value(); }, 30s)) << sink->logTail();
  std::string metrics = httpGet(*address, "/metrics");
  EXPECT_EQ(metricValue(metrics, "outbox_sink_events_applied_total{projection=\"pay\"}"), 4) << metrics;
  EXPECT_EQ(metricValue(metrics, "outbox_sink_events_dead_lettered_total"), 1) << metrics;
  sink->sigterm();
  EXPECT_TRUE(sink->waitExit(30s));
  pg.exec(fmt::format("DROP TABLE {0}_steps, {0}_amounts", prefix));
}

// A series that only appears at its first increment reads "no data" on a dashboard until then, and rate() or
// increase() miss that first increment (there is no earlier sample). Every series whose labels are known at start
// is there from the first scrape.
TEST_F(SinkDeliveryTest, SinkExportsItsSeriesAtZeroBeforeTheFirstEvent) {
  OrderReadModel model(pg, prefix);
  SinkConfigBuilder config;
  model.addProjections(config, topic);  // no event is ever produced to `topic`
  config.metricsListen("127.0.0.1:0");
  auto sink = SinkProcess::start(config.render());
  std::optional<std::string> address;
  ASSERT_TRUE(waitFor([&] { return (address = sink->adminAddress()).has_value(); }, 60s)) << sink->logTail();

  std::string metrics = httpGet(*address, "/metrics");
  for (const char* series :
       {"outbox_sink_events_consumed_total", "outbox_sink_events_applied_total{projection=\"order_created\"}",
        "outbox_sink_events_applied_total{projection=\"order_created_count\"}",
        "outbox_sink_events_applied_total{projection=\"order_cancelled\"}",
        "outbox_sink_events_applied_total{projection=\"order_cancelled_count\"}",
        "outbox_sink_events_applied_total{projection=\"applied_log\"}",
        "outbox_sink_events_skipped_total{reason=\"no_projection\"}",
        "outbox_sink_events_skipped_total{reason=\"duplicate\"}", "outbox_sink_events_dead_lettered_total",
        "outbox_sink_batches_total", "outbox_sink_batch_seconds_count", "outbox_sink_db_retries_total",
        "outbox_sink_offset_conflicts_total", "outbox_sink_dedup_pruned_total", "outbox_sink_assigned_partitions"}) {
    EXPECT_THAT(metrics, HasSubstr(std::string("\n") + series + " 0\n"));
  }
  // Gauges whose value depends on how far start-up got, but which are there from the start.
  EXPECT_THAT(metrics, HasSubstr("\noutbox_sink_database_connected "));
  EXPECT_THAT(metrics, HasSubstr("\noutbox_sink_last_loop_timestamp_seconds "));
  EXPECT_THAT(metrics, HasSubstr("\noutbox_sink_build_info{version="));
}

TEST_F(SinkDeliveryTest, SinkThroughputBatchedAndUnbatched) {
  auto measure = [&](int maxEvents, int count, const std::string& tag) {
    std::string t = topic + "." + tag;
    OrderStream stream(t, prefix + tag);
    std::vector<TestEvent> events = takeEvents(stream, count);
    produceAll(events);
    OrderReadModel model(pg, prefix + "_" + tag);
    SinkConfigBuilder config;
    model.addProjections(config, t);
    config.set("batch", "max_events", std::to_string(maxEvents)).set("log", "level", "\"warn\"");
    auto sink = SinkProcess::start(config.render(), "sink-" + tag);
    // From the first committed batch to the last, so that start-up and the group join are not counted.
    std::optional<std::chrono::steady_clock::time_point> first;
    int64_t atFirst = 0;
    bool done = waitFor(
        [&] {
          int64_t n = storedOffsetSum(config.group(), t);
          if (!first && n > 0) {
            first = std::chrono::steady_clock::now();
            atFirst = n;
          }
          return n >= count;
        },
        180s, 20ms);
    EXPECT_TRUE(done) << tag;
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - *first).count();
    EXPECT_EQ(model.differences(events), "") << tag;
    return (count - atFirst) / std::max(seconds, 1e-3);
  };
  double batched = measure(500, 20000, "batched");
  double unbatched = measure(1, 3000, "unbatched");
  std::cout << fmt::format("[ metric ] sink_events_per_s_batched={:.0f} unbatched={:.0f}", batched, unbatched)
            << std::endl;
  EXPECT_GT(batched, unbatched);
}
