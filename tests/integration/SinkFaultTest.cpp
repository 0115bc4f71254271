// outbox-sink under faults, against the real PostgreSQL and Kafka: kill -9 during a load and restart, a second
// instance taking over the partitions of a killed one, the read-model database restarted during a load. After each,
// the read model must be exactly the one computed from the events: nothing lost, nothing applied twice.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <random>
#include <thread>

#include "support/SinkProcess.h"

using namespace outbox::test;
using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

struct SinkFaultTest : ::testing::Test {
  std::string prefix = uniqueName("it_sinkf");
  std::string topic = prefix + ".order";
};

size_t occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

bool waitForLog(ChildProcess& process, const std::string& what, size_t count, std::chrono::milliseconds timeout) {
  return waitFor([&] { return occurrences(process.log(), what) >= count; }, timeout, 50ms);
}

}  // namespace

TEST_F(SinkFaultTest, SinkKilledTwentyTimesDuringALoadAppliesEveryEventOnce) {
  PgConnection pg(pgUrl());
  OrderReadModel model(pg, prefix);
  OrderStream stream(topic, prefix, 11);
  std::vector<TestEvent> first = takeEvents(stream, 2000);
  produceAll(first);  // creates the topic (3 partitions)

  SinkConfigBuilder config;
  model.addProjections(config, topic);
  config.set("batch", "max_events", "200").set("batch", "max_wait_ms", "50");
  // Static membership: a restarted instance takes its predecessor's place at once, without waiting for the
  // session of the killed one to time out.
  config.kafkaProperty("group.instance.id", prefix + "-sink");

  BackgroundOrders load(std::move(stream), 20, 20ms);
  std::mt19937 random(42);
  int64_t before = 0;
  for (int round = 0; round < 20; ++round) {
    auto sink = SinkProcess::start(config.render(), fmt::format("sink-{}", round));
    ASSERT_TRUE(waitForLog(*sink, "assigned ", 1, 60s)) << sink->logTail();
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(100, 1200)(random)));
    sink->sigkill();
    ASSERT_TRUE(sink->waitExit(10s));
    int64_t now = storedOffsetSum(config.group(), topic);
    EXPECT_GE(now, before);  // stored offsets never go back
    before = now;
  }
  std::vector<TestEvent> rest = load.stop();
  first.insert(first.end(), rest.begin(), rest.end());
  int64_t total = static_cast<int64_t>(first.size());
  std::cout << "[ info ] " << total << " events, " << before << " applied before the last restart" << std::endl;
  EXPECT_GT(before, 2000);  // the killed instances made progress

  auto sink = SinkProcess::start(config.render(), "sink-final");
  ASSERT_TRUE(waitForStoredOffsets(config.group(), topic, total, 120s))
      << storedOffsetSum(config.group(), topic) << " of " << total;
  EXPECT_EQ(model.differences(first), "");
  EXPECT_EQ(model.appliedRows(), total);
}

namespace {

// Two instances in one group, one killed: the other takes over its partitions. With the eager protocol
// (librdkafka's default) every rebalance revokes everything; with cooperative-sticky only what moves.
void secondInstanceTakesOver(const std::string& prefix, const std::string& topic, bool cooperative) {
  PgConnection pg(pgUrl());
  OrderReadModel model(pg, prefix);
  OrderStream stream(topic, prefix, 12);
  std::vector<TestEvent> first = takeEvents(stream, 600);
  produceAll(first);

  SinkConfigBuilder config;
  model.addProjections(config, topic);
  config.set("batch", "max_events", "100").set("batch", "max_wait_ms", "50");
  if (cooperative) config.kafkaProperty("partition.assignment.strategy", "cooperative-sticky");
  BackgroundOrders load(std::move(stream), 20, 20ms);

  auto a = SinkProcess::start(config.render(), "sink-a");
  ASSERT_TRUE(waitForLog(*a, "assigned ", 1, 60s)) << a->logTail();
  auto b = SinkProcess::start(config.render(), "sink-b");
  ASSERT_TRUE(waitForLog(*b, "assigned ", 1, 60s)) << b->logTail();
  // Both work: wait for progress with the partitions split between them.
  ASSERT_TRUE(waitForLog(*a, "assigned ", 2, 60s)) << a->logTail();
  int64_t split = storedOffsetSum(config.group(), topic);
  ASSERT_TRUE(waitForStoredOffsets(config.group(), topic, split + 500, 60s));

  a->sigkill();
  ASSERT_TRUE(a->waitExit(10s));
  // b gets every partition once a's session times out.
  ASSERT_TRUE(waitForLog(*b, "assigned ", 2, 60s)) << b->logTail();
  int64_t afterTakeover = storedOffsetSum(config.group(), topic);
  ASSERT_TRUE(waitForStoredOffsets(config.group(), topic, afterTakeover + 300, 60s));

  std::vector<TestEvent> rest = load.stop();
  first.insert(first.end(), rest.begin(), rest.end());
  int64_t total = static_cast<int64_t>(first.size());
  ASSERT_TRUE(waitForStoredOffsets(config.group(), topic, total, 120s))
      << storedOffsetSum(config.group(), topic) << " of " << total << "\n"
      << b->logTail();
  EXPECT_EQ(model.differences(first), "");
  EXPECT_TRUE(b->running());
  // b ends with all three partitions: its assignments minus its revocations.
  std::string log = b->log();
  size_t assigned = 0;
  size_t revoked = 0;
  for (size_t at = 0; (at = log.find('\n', at)) != std::string::npos; ++at) {
    size_t lineEnd = log.find('\n', at + 1);
    std::string line = log.substr(at + 1, lineEnd == std::string::npos ? std::string::npos : lineEnd - at - 1);
    if (line.find(" info  assigned ") != std::string::npos) assigned += occurrences(line, topic + " [");
    if (line.find(" info  revoked ") != std::string::npos) revoked += occurrences(line, topic + " [");
  }
  EXPECT_EQ(assigned - revoked, 3u) << b->logTail();
}

}  // namespace

TEST_F(SinkFaultTest, SinkSecondInstanceTakesOverTheKilledOnesPartitions) {
  secondInstanceTakesOver(prefix, topic, false);
}

TEST_F(SinkFaultTest, SinkSecondInstanceTakesOverWithCooperativeRebalancing) {
  secondInstanceTakesOver(prefix, topic, true);
}

// Another transaction records an event's id between the sink's look-up of processed ids and its own insert of
// that id (two instances, or a republished event racing its original): the pipelined batch notices (its insert
// inserts nothing), and the batch is redone one statement at a time, where the event counts as a duplicate.
TEST_F(SinkFaultTest, SinkSkipsAnEventWhoseIdAnotherTransactionRecordsMidBatch) {
  PgConnection pg(pgUrl());
  OrderReadModel model(pg, prefix);
  OrderStream stream(topic, prefix, 14);
  std::vector<TestEvent> events = takeEvents(stream, 60);
  SinkConfigBuilder config;
  model.addProjections(config, topic);
  config.set("deduplication", "enabled", "true").metricsListen("127.0.0.1:0");
  auto sink = SinkProcess::start(config.render());
  ASSERT_TRUE(waitForLog(*sink, "connected to the read-model database", 1, 60s)) << sink->logTail();

  // The last event's id, recorded by a transaction that stays open: the sink's look-up cannot see it, and its
  // insert of the same id waits for this transaction to end.
  const TestEvent& raced = events.back();
  PgConnection other(pgUrl());
  other.exec("BEGIN");
  other.exec(fmt::format("INSERT INTO outbox_sink_processed_events (consumer_group, event_id) VALUES ('{}', '{}')",
                         config.group(), raced.id));
  produceAll(events);
  ASSERT_TRUE(waitFor(
      [&] {
        return pg.scalar(
                   "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'outbox-sink' AND "
                   "wait_event_type = 'Lock'") == "1";
      },
      60s, 20ms))
      << sink->logTail();
  other.exec("COMMIT");

  ASSERT_TRUE(waitForStoredOffsets(config.group(), topic, 60, 60s)) << sink->logTail();
  std::vector<TestEvent> applied(events.begin(), events.end() - 1);
  EXPECT_EQ(model.differences(applied), "");
  EXPECT_EQ(model.appliedRows(), 59);
  EXPECT_EQ(pg.scalar(fmt::format("SELECT count(*) FROM {}_applied WHERE event_id = '{}'", prefix, raced.id)), "0");
  CommandResult metrics = runCommand({"/usr/bin/curl", "-s", "http://" + *sink->adminAddress() + "/metrics"}, 15s);
  EXPECT_THAT(metrics.output, HasSubstr("outbox_sink_events_skipped_total{reason=\"duplicate\"} 1\n"));
  EXPECT_THAT(metrics.output, HasSubstr("outbox_sink_db_retries_total 0\n"));
  EXPECT_TRUE(sink->running());
}

TEST_F(SinkFaultTest, SinkReadModelDatabaseRestartedDuringALoad) {
  std::unique_ptr<OrderReadModel> model;
  {
    PgConnection pg(pgUrl());
    model = std::make_unique<OrderReadModel>(pg, prefix);
  }
  OrderStream stream(topic, prefix, 13);
  std::vector<TestEvent> first = takeEvents(stream, 1000);
  produceAll(first);

  SinkConfigBuilder config;
  model->addProjections(config, topic);
  config.set("batch", "max_events", "100").set("batch", "max_wait_ms", "50").metricsListen("127.0.0.1:0");
  BackgroundOrders load(std::move(stream), 20, 20ms);
  auto sink = SinkProcess::start(config.render());
  ASSERT_TRUE(waitForStoredOffsets(config.group(), topic, 1500, 60s)) << sink->logTail();

  devstack("stop-pg");
  std::this_thread::sleep_for(3s);  // the outage: the sink must retry, not skip, while events keep arriving
  devstack("start-pg");
  int64_t afterRestart = 0;
  ASSERT_TRUE(waitFor(
      [&] {
        try {
          afterRestart = storedOffsetSum(config.group(), topic);
          return true;
        } catch (const std::exception&) {
          return false;
        }
      },
      60s));
  ASSERT_TRUE(waitForStoredOffsets(config.group(), topic, afterRestart + 500, 60s)) << sink->logTail();

  std::vector<TestEvent> rest = load.stop();
  first.insert(first.end(), rest.begin(), rest.end());
  int64_t total = static_cast<int64_t>(first.size());
  ASSERT_TRUE(waitForStoredOffsets(config.group(), topic, total, 120s))
      << storedOffsetSum(config.group(), topic) << " of " << total << "\n"
      << sink->logTail();
  EXPECT_EQ(model->differences(first), "");
  EXPECT_TRUE(sink->running());
  EXPECT_THAT(sink->log(), HasSubstr("rewound"));
  CommandResult metrics = runCommand({"/usr/bin/curl", "-s", "http://" + *sink->adminAddress() + "/metrics"}, 15s);
  EXPECT_THAT(metrics.output, Not(HasSubstr("outbox_sink_db_retries_total 0\n")));
}

// Kafka stopped under a running sink: /readyz answers 503 naming Kafka while no broker is up, 200 again once the
// consumer works, and the events produced after Kafka's return are applied.
TEST_F(SinkFaultTest, SinkIsNotReadyWhileKafkaIsDownAndReadyAgainAfter) {
  std::unique_ptr<OrderReadModel> model;
  {
    PgConnection pg(pgUrl());
    model = std::make_unique<OrderReadModel>(pg, prefix);
  }
  OrderStream stream(topic, prefix, 17);
  std::vector<TestEvent> events = takeEvents(stream, 100);
  produceAll(events);

  SinkConfigBuilder config;
  model->addProjections(config, topic);
  config.metricsListen("127.0.0.1:0");
  auto sink = SinkProcess::start(config.render());
  ASSERT_TRUE(waitForStoredOffsets(config.group(), topic, 100, 60s)) << sink->logTail();
  ASSERT_TRUE(waitFor([&] { return sink->adminAddress().has_value(); }, 30s)) << sink->logTail();
  const std::string readyzUrl = "http://" + *sink->adminAddress() + "/readyz";
  // The body, then the status on the last line.
  auto readyz = [&] {
    return runCommand({"/usr/bin/curl", "-s", "-S", "--max-time", "10", "-w", "\n%{http_code}", readyzUrl}, 15s).output;
  };
  auto answers = [&](const std::string& status) {
    std::string answer = readyz();
    return answer.size() >= status.size() + 1 &&
           answer.compare(answer.size() - status.size() - 1, std::string::npos, "\n" + status) == 0;
  };
  ASSERT_TRUE(waitFor([&] { return answers("200"); }, 60s)) << readyz() << sink->logTail();

  {
    KafkaOutage outage;
    EXPECT_TRUE(waitFor([&] { return answers("503"); }, 120s, 250ms)) << readyz() << sink->logTail();
    EXPECT_THAT(readyz(), HasSubstr("Kafka"));
    EXPECT_TRUE(sink->running());
    outage.end();
  }
  EXPECT_TRUE(waitFor([&] { return answers("200"); }, 180s, 250ms)) << readyz() << sink->logTail();
  EXPECT_THAT(sink->log(), HasSubstr("kafka: the consumer works again"));

  std::vector<TestEvent> more = takeEvents(stream, 100);
  produceAll(more);
  events.insert(events.end(), more.begin(), more.end());
  ASSERT_TRUE(waitForStoredOffsets(config.group(), topic, 200, 120s))
      << storedOffsetSum(config.group(), topic) << " of 200\n"
      << sink->logTail();
  EXPECT_EQ(model->differences(events), "");
}
