// outbox-sink's database errors against the real PostgreSQL and Kafka: each SQLSTATE class gets its documented
// outcome, triggered for real. Only data errors (class 22 and 23) make an event poison and go to the dead-letter
// topic; a read-only database (25006), a statement timeout (57014) and a table renamed by a migration (42P01) are
// waited out: nothing dead-lettered, every event applied once the database is back. A dead-lettered event is not
// recorded as processed, so replaying it after the projection is fixed applies it. Payload values are bound as
// written.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <iostream>
#include <thread>

#include "support/SinkProcess.h"

using namespace outbox::test;
using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

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

// A login role of its own for the sink (a superuser: it may create the sink's tables and use every read model), so
// that settings made with ALTER ROLE reach the sink's sessions and no one else's. The devstack trusts loopback.
struct SinkRole {
  std::string name;
  explicit SinkRole(const std::string& prefix) : name(prefix + "_role") {
    PgConnection(pgUrl()).exec(fmt::format("CREATE ROLE {} LOGIN SUPERUSER", name));
  }
  ~SinkRole() {
    try {
      PgConnection pg(pgUrl());
      pg.exec(fmt::format("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{}'", name));
      pg.exec(fmt::format("REASSIGN OWNED BY {} TO CURRENT_USER; DROP OWNED BY {}; DROP ROLE {}", name, name, name));
    } catch (const std::exception& e) {
      std::cerr << "dropping role " << name << ": " << e.what() << std::endl;
    }
  }
  // PGURL with this role as its user: postgresql://ROLE@host:port/db.
  std::string url() const {
    std::string url = pgUrl();
    size_t scheme = url.find("://");
    size_t at = url.find('@', scheme);
    if (scheme == std::string::npos || at == std::string::npos) throw std::runtime_error("PGURL without user: " + url);
    return url.substr(0, scheme + 3) + name + url.substr(at);
  }
  // ALTER ROLE ... SET, then ends the role's sessions: the sink's next connection has the setting.
  void set(const std::string& setting) {
    PgConnection pg(pgUrl());
    pg.exec(fmt::format("ALTER ROLE {} {}", name, setting));
    pg.exec(fmt::format("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{}'", name));
  }
};

struct SinkErrorTest : ::testing::Test {
  PgConnection pg{pgUrl()};
  std::string prefix = uniqueName("it_sinke");
  std::string topic = prefix + ".order";
  std::string dlq = prefix + ".dlq";

  // Nothing reached the dead-letter topic (it may not even exist: nothing was ever produced to it).
  void expectNoDeadLetters() {
    TopicReader reader(kafkaBootstrap(), {dlq});
    EXPECT_EQ(reader.readUntilQuiet(5s, 30s).size(), 0u);
  }
};

// Waits until `condition` holds on the sink's /metrics text.
bool waitForMetrics(SinkProcess& sink, const std::function<bool(const std::string&)>& condition,
                    std::chrono::milliseconds timeout) {
  return waitFor([&] { return condition(httpGet(*sink.adminAddress(), "/metrics")); }, timeout, 200ms);
}

// The environment's faults all go the same way: the sink waits (not ready, the waiting gauge at 1, the error counted
// by class), dead-letters nothing and applies every event once the fault is lifted.
void waitsOutAFault(SinkErrorTest& t, const std::string& sqlStateClass, const std::function<void(SinkRole&)>& inject,
                    const std::function<void(SinkRole&)>& lift, bool slowProjection = false) {
  SinkRole role(t.prefix);
  OrderReadModel model(t.pg, t.prefix);
  t.pg.exec(fmt::format("CREATE TABLE {}_slow (order_id text NOT NULL)", t.prefix));
  OrderStream stream(t.topic, t.prefix, 21);
  std::vector<TestEvent> first = takeEvents(stream, 100);
  produceAll(first);

  SinkConfigBuilder config;
  model.addProjections(config, t.topic);
  if (slowProjection) {
    config.projection("order_slow", t.topic, "OrderCreated",
                      fmt::format("INSERT INTO {}_slow (order_id) SELECT $1 FROM pg_sleep(0.02)", t.prefix),
                      {"/orderId"});
  }
  config.set("database", "conninfo", tomlString(role.url()))
      .set("", "dead_letter_topic", tomlString(t.dlq))
      .set("deduplication", "enabled", "true")
      .set("batch", "max_events", "50")
      .set("batch", "max_wait_ms", "50")
      .metricsListen("127.0.0.1:0");
  auto sink = SinkProcess::start(config.render());
  ASSERT_TRUE(waitForStoredOffsets(config.group(), t.topic, 100, 60s)) << sink->logTail();
  ASSERT_TRUE(waitFor([&] { return sink->adminAddress().has_value(); }, 30s));

  inject(role);
  std::vector<TestEvent> during = takeEvents(stream, 50);
  produceAll(during);
  std::string series = fmt::format("outbox_sink_db_errors_total{{sqlstate_class=\"{}\"}}", sqlStateClass);
  ASSERT_TRUE(waitForMetrics(
      *sink, [&](const std::string& m) { return metricValue(m, series) >= 3; }, 60s))
      << httpGet(*sink->adminAddress(), "/metrics") << sink->logTail();
  // Waiting, not diverting: not ready, nothing committed past, still running.
  std::string metrics = httpGet(*sink->adminAddress(), "/metrics");
  EXPECT_EQ(metricValue(metrics, "outbox_sink_database_waiting"), 1) << metrics;
  EXPECT_NE(httpGet(*sink->adminAddress(), "/readyz"), "ok\n");
  EXPECT_EQ(storedOffsetSum(config.group(), t.topic), 100);
  EXPECT_TRUE(sink->running()) << sink->logTail();

  lift(role);
  std::vector<TestEvent> after = takeEvents(stream, 50);
  produceAll(after);
  ASSERT_TRUE(waitForStoredOffsets(config.group(), t.topic, 200, 120s))
      << storedOffsetSum(config.group(), t.topic) << " of 200\n"
      << sink->logTail();
  first.insert(first.end(), during.begin(), during.end());
  first.insert(first.end(), after.begin(), after.end());
  EXPECT_EQ(model.differences(first), "");
  EXPECT_EQ(model.appliedRows(), 200);
  metrics = httpGet(*sink->adminAddress(), "/metrics");
  EXPECT_EQ(metricValue(metrics, "outbox_sink_events_dead_lettered_total"), 0);
  EXPECT_EQ(metricValue(metrics, "outbox_sink_database_waiting"), 0);
  EXPECT_EQ(httpGet(*sink->adminAddress(), "/readyz"), "ok\n");
  EXPECT_TRUE(sink->running());
  t.expectNoDeadLetters();
  if (slowProjection) {
    EXPECT_EQ(t.pg.scalar(fmt::format("SELECT count(*) FROM {}_slow", t.prefix)),
              t.pg.scalar(fmt::format("SELECT count(*) FROM {}_orders", t.prefix)));
  }
  t.pg.exec(fmt::format("DROP TABLE {}_slow", t.prefix));
  sink->sigterm();
  EXPECT_TRUE(sink->waitExit(30s));
}

}  // namespace

// As after a failover onto a standby: the sink's sessions are read-only (25006 on its first write, the
// de-duplication insert) for a while.
TEST_F(SinkErrorTest, SinkWaitsOutAReadOnlyDatabase) {
  waitsOutAFault(
      *this, "25", [](SinkRole& r) { r.set("SET default_transaction_read_only = on"); },
      [](SinkRole& r) { r.set("RESET default_transaction_read_only"); });
}

// A projection slower than the statement timeout (57014, query canceled) until the timeout is raised.
TEST_F(SinkErrorTest, SinkRetriesAStatementTimeout) {
  waitsOutAFault(
      *this, "57", [](SinkRole& r) { r.set("SET statement_timeout = '5ms'"); },
      [](SinkRole& r) { r.set("RESET statement_timeout"); }, true);
}

// A migration renames a read-model table for a few seconds, during a load: 42P01 (undefined table) on the
// projection, and on preparing it again after the reconnect. Nothing is dead-lettered, every event is applied.
TEST_F(SinkErrorTest, SinkWaitsOutATableRenamedMidLoad) {
  OrderReadModel model(pg, prefix);
  OrderStream stream(topic, prefix, 22);
  std::vector<TestEvent> first = takeEvents(stream, 300);
  produceAll(first);
  SinkConfigBuilder config;
  model.addProjections(config, topic);
  config.set("", "dead_letter_topic", tomlString(dlq))
      .set("batch", "max_events", "50")
      .set("batch", "max_wait_ms", "50")
      .metricsListen("127.0.0.1:0");
  BackgroundOrders load(std::move(stream), 10, 20ms);
  auto sink = SinkProcess::start(config.render());
  ASSERT_TRUE(waitForStoredOffsets(config.group(), topic, 400, 60s)) << sink->logTail();
  ASSERT_TRUE(waitFor([&] { return sink->adminAddress().has_value(); }, 30s));

  pg.exec(fmt::format("ALTER TABLE {0}_orders RENAME TO {0}_orders_renamed", prefix));
  ASSERT_TRUE(waitForMetrics(
      *sink,
      [](const std::string& m) { return metricValue(m, "outbox_sink_db_errors_total{sqlstate_class=\"42\"}") >= 2; },
      60s))
      << sink->logTail();
  std::this_thread::sleep_for(2s);  // the migration's window: events keep arriving, the sink must not skip them
  EXPECT_NE(httpGet(*sink->adminAddress(), "/readyz"), "ok\n");
  pg.exec(fmt::format("ALTER TABLE {0}_orders_renamed RENAME TO {0}_orders", prefix));

  std::vector<TestEvent> rest = load.stop();
  first.insert(first.end(), rest.begin(), rest.end());
  int64_t total = static_cast<int64_t>(first.size());
  ASSERT_TRUE(waitForStoredOffsets(config.group(), topic, total, 120s))
      << storedOffsetSum(config.group(), topic) << " of " << total << "\n"
      << sink->logTail();
  EXPECT_EQ(model.differences(first), "");
  EXPECT_EQ(model.appliedRows(), total);
  std::string metrics = httpGet(*sink->adminAddress(), "/metrics");
  EXPECT_EQ(metricValue(metrics, "outbox_sink_events_dead_lettered_total"), 0);
  EXPECT_TRUE(sink->running());
  expectNoDeadLetters();
}

// Data errors are the event's fault: a cast that fails (22P02) and a NOT NULL violation (23502) go to the
// dead-letter topic. The dead-lettered events are not recorded as processed: once the projection is fixed, the
// dead-letter records produced again into the topic are applied, not skipped as duplicates.
TEST_F(SinkErrorTest, SinkDeadLettersDataErrorsAndAppliesTheirReplayAfterTheFix) {
  pg.exec(fmt::format("CREATE TABLE {}_amounts (order_id text PRIMARY KEY, amount numeric NOT NULL)", prefix));
  auto event = [&](std::string id, std::string value) {
    return TestEvent{topic, "same-key", std::move(value), prefix + "-" + id, "OrderPaid"};
  };
  std::vector<TestEvent> events = {
      event("whole", R"({"orderId":"a","amount":12})"),
      event("fraction", R"({"orderId":"b","amount":12.5})"),  // 22P02 with the ::integer cast
      event("null", R"({"orderId":"c","amount":null})"),      // 23502
      event("after", R"({"orderId":"d","amount":7})"),
  };
  produceAll(events);
  auto configWith = [&](const std::string& cast) {
    SinkConfigBuilder config;
    config.projection("amounts", topic, "OrderPaid",
                      fmt::format("INSERT INTO {}_amounts (order_id, amount) VALUES ($1, $2::{})", prefix, cast),
                      {"/orderId", "?/amount"});
    config.set("", "dead_letter_topic", tomlString(dlq))
        .set("deduplication", "enabled", "true")
        .set("batch", "max_events", "10")
        .metricsListen("127.0.0.1:0");
    return config;
  };
  SinkConfigBuilder broken = configWith("integer");
  {
    auto sink = SinkProcess::start(broken.render(), "sink-broken");
    ASSERT_TRUE(waitForStoredOffsets(broken.group(), topic, 4, 60s)) << sink->logTail();
    sink->sigterm();
    ASSERT_TRUE(sink->waitExit(30s));
  }
  EXPECT_EQ(pg.scalar(fmt::format("SELECT string_agg(order_id || '=' || amount, ',' ORDER BY order_id) FROM {}_amounts",
                                  prefix)),
            "a=12,d=7");
  TopicReader reader(kafkaBootstrap(), {dlq});
  const std::vector<ConsumedRecord>& dead = reader.readUntil(2, 60s);
  ASSERT_EQ(dead.size(), 2u);
  EXPECT_EQ(dead[0].headers.at("id"), prefix + "-fraction");
  EXPECT_THAT(dead[0].headers.at("dlq.error"), HasSubstr("22P02"));
  EXPECT_EQ(dead[1].headers.at("id"), prefix + "-null");
  EXPECT_THAT(dead[1].headers.at("dlq.error"), HasSubstr("23502"));
  // Neither is recorded as processed.
  EXPECT_EQ(pg.scalar(fmt::format("SELECT count(*) FROM outbox_sink_processed_events WHERE consumer_group = '{}' AND "
                                  "event_id IN ('{}-fraction', '{}-null')",
                                  broken.group(), prefix, prefix)),
            "0");

  // The fix: the projection casts to numeric. The same consumer group goes on, and the dead-letter records are
  // produced to the topic again, headers and all.
  SinkConfigBuilder fixed = configWith("numeric");
  fixed.set("kafka", "group_id", tomlString(broken.group()));
  auto sink = SinkProcess::start(fixed.render(), "sink-fixed");
  for (const ConsumedRecord& r : dead) produce(kafkaBootstrap(), topic, *r.key, *r.value, r.headers);
  ASSERT_TRUE(waitForStoredOffsets(broken.group(), topic, 6, 60s)) << sink->logTail();
  // "fraction" is applied now; "null" still violates NOT NULL: dead-lettered again, as its data still says.
  EXPECT_EQ(pg.scalar(fmt::format("SELECT string_agg(order_id || '=' || amount, ',' ORDER BY order_id) FROM {}_amounts",
                                  prefix)),
            "a=12,b=12.5,d=7");
  std::string metrics = httpGet(*sink->adminAddress(), "/metrics");
  EXPECT_EQ(metricValue(metrics, "outbox_sink_events_skipped_total{reason=\"duplicate\"}"), 0) << metrics;
  EXPECT_EQ(metricValue(metrics, "outbox_sink_events_dead_lettered_total"), 1) << metrics;
  EXPECT_EQ(pg.scalar(fmt::format("SELECT count(*) FROM outbox_sink_processed_events WHERE consumer_group = '{}' AND "
                                  "event_id = '{}-fraction'",
                                  broken.group(), prefix)),
            "1");
  pg.exec(fmt::format("DROP TABLE {}_amounts", prefix));
}

// "the original JSON text of a selected value": a big integer, 1.10 and an object's key order reach the read model
// exactly as the payload has them.
TEST_F(SinkErrorTest, SinkBindsSelectedValuesAsWritten) {
  pg.exec(
      fmt::format("CREATE TABLE {}_raw (id text PRIMARY KEY, big text, big_numeric numeric, price text, "
                  "doc_text text, doc json, name text)",
                  prefix));
  std::string payload = R"({"id":"v1","big":123456789012345678901234567890,"price":1.10,)"
                        R"("doc":{"z":1, "a":[1.50,{"y":true,"b":null}]},"name":"Z\u00fcrich \"quoted\""})";
  produceAll({TestEvent{topic, "k", payload, prefix + "-v1", "Raw"}});
  SinkConfigBuilder config;
  config.projection("raw", topic, "Raw", fmt::format("INSERT INTO {}_raw VALUES ($1, $2, $3, $4, $5, $6, $7)", prefix),
                    {"/id", "/big", "/big", "/price", "/doc", "/doc", "/name"});
  config.set("batch", "max_events", "10");
  auto sink = SinkProcess::start(config.render());
  ASSERT_TRUE(waitForStoredOffsets(config.group(), topic, 1, 60s)) << sink->logTail();
  auto rows =
      pg.rows(fmt::format("SELECT id, big, big_numeric::text, price, doc_text, doc::text, name FROM {}_raw", prefix));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"v1", "123456789012345678901234567890", "123456789012345678901234567890",
                                               "1.10", R"({"z":1, "a":[1.50,{"y":true,"b":null}]})",
                                               R"({"z":1, "a":[1.50,{"y":true,"b":null}]})", "Zürich \"quoted\""}));
  pg.exec(fmt::format("DROP TABLE {}_raw", prefix));
}
