// outbox-sink against the real PostgreSQL and Kafka: projections of many events, de-duplication of re-published
// events, poison events to the dead-letter topic, on_error = "stop", the command line, metrics, throughput.
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
