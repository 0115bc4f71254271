// The relay's exactly-once mode ([kafka] delivery = "exactly_once"): a read_committed consumer sees every committed
// outbox event exactly once, in aggregate order, across relay crashes (kill -9 at random moments, mid-way through a
// large transaction), restarts, a Kafka broker restart, PostgreSQL connections terminated under the relay, a stalled
// relay fenced by its successor and a hot standby taking over. The progress record the relay commits with its events
// names the slot and bounds the slot's confirmed position. Every test asserts duplicates == 0 for the read_committed
// reader, where the at-least-once mode (RelayFaultTest) only asserts that nothing is lost.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "support/RelayProcess.h"
#include "support/SinkProcess.h"
#include "support/TestEnv.h"

namespace outbox {
// gtest prints an Lsn in failure messages as PostgreSQL does (found by argument-dependent lookup).
void PrintTo(const Lsn& lsn, std::ostream* os) { *os << lsn.toString(); }
}  // namespace outbox

using namespace outbox;
using namespace outbox::test;
using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

constexpr const char* kProducerReady = "exactly-once: transactional producer ready";
constexpr const char* kReadyGauge = "outbox_relay_transactional_producer_ready";
constexpr const char* kSkippedCounter = "outbox_relay_replayed_events_skipped_total";

std::vector<std::string> topicsOf(const std::string& prefix) { return {prefix + ".order", prefix + ".customer"}; }

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// An exactly-once relay over `table`, events to <prefix>.{aggregatetype} with the type in header "eventType".
RelayConfigBuilder exactlyOnceConfig(const std::string& table, const std::string& topicPrefix) {
  RelayConfigBuilder config;
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {{"eventType", "type"}}}).exactlyOnce();
  return config;
}

// A PostgreSQL transaction larger than the defaults allow in flight: the relay may hold all of it in one Kafka
// transaction, or split it by event count only (neither bytes nor time cut a Kafka transaction short).
void holdLargeTransactions(RelayConfigBuilder& config, int maxEventsPerKafkaTransaction) {
  config.kafkaOption("transaction_max_events", std::to_string(maxEventsPerKafkaTransaction))
      .kafkaOption("transaction_max_bytes", std::to_string(256ull << 20))
      .kafkaOption("transaction_max_ms", "30000")
      .limits(100000, 512ull << 20);
}

// waitForSlotStreaming, but giving up as soon as the relay has exited (a config it refuses, a crash).
bool streaming(PgConnection& pg, const std::string& slot, ChildProcess& relay) {
  bool streams = false;
  waitFor([&] { return (streams = waitForSlotStreaming(pg, slot, 0ms)) || !relay.running(); }, 120s, 100ms);
  return streams;
}

size_t occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

bool waitForLog(ChildProcess& process, const std::string& what, std::chrono::milliseconds timeout, size_t count = 1) {
  return waitFor([&] { return occurrences(process.log(), what) >= count; }, timeout, 50ms);
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

// Terminates the walsender streaming from `slot` (the relay's replication connection); returns its pid.
int terminateWalsender(PgConnection& pg, const std::string& slot) {
  auto pid = slotActivePid(pg, slot);
  if (!pid) throw std::runtime_error("no walsender streams from " + slot);
  pg.exec("SELECT pg_terminate_backend(" + std::to_string(*pid) + ")");
  return *pid;
}

// Reads until every committed row arrived, then for a quiet while (a late duplicate would show), and checks what the
// reader got: on its topic with its key, value and headers, each event once, each aggregate in commit order.
DeliveryCheck readAndCheck(TopicReader& reader, const std::map<std::string, OutboxRow>& rows,
                           const std::string& topicPrefix, bool checkOrder = true) {
  bool all = readUntilDelivered(reader, idsOf(rows), 5min);
  reader.readUntilQuiet(2s, 30s);
  auto check = checkDelivery(
      rows, reader.records(), [&](const OutboxRow& r) { return topicPrefix + "." + r.aggregatetype; }, "eventType",
      checkOrder);
  EXPECT_TRUE(all) << "not every committed event arrived\n" << check.summary();
  return check;
}

void expectExactlyOnce(const DeliveryCheck& check, const std::string& what = "read_committed") {
  EXPECT_EQ(check.duplicates, 0) << what << ": " << check.summary();
  EXPECT_EQ(check.missing, 0) << what << ": " << check.summary();
  EXPECT_EQ(check.unexpected, 0) << what << ": " << check.summary();
  EXPECT_EQ(check.wrong, 0) << what << ": " << check.summary();
  EXPECT_EQ(check.outOfOrder, 0) << what << ": " << check.summary();
  EXPECT_EQ(check.records, check.expected) << what << ": " << check.summary();
}

// COPY text rows for `count` events over `aggregates` (round robin), payloads like EventWriter's ({"agg", "seq",
// "w"}, seq from 1 per aggregate) padded with `padBytes` characters so that the transaction takes a while to publish.
std::string copyRows(const std::vector<Aggregate>& aggregates, int count, size_t padBytes) {
  std::vector<int64_t> seq(aggregates.size(), 0);
  std::string pad(padBytes, 'p');
  std::string data;
  for (int i = 0; i < count; ++i) {
    size_t a = static_cast<size_t>(i) % aggregates.size();
    const Aggregate& agg = aggregates[a];
    data += fmt::format("{}\t{}\t{}.changed\t{{\"agg\": \"{}\", \"seq\": {}, \"w\": 9, \"pad\": \"{}\"}}\n", agg.type,
                        agg.id, agg.type, agg.id, ++seq[a], pad);
  }
  return data;
}

void copyEvents(PgConnection& pg, const std::string& table, const std::string& data) {
  pg.copyIn("COPY " + table + " (aggregatetype, aggregateid, type, payload) FROM STDIN", data);
}

// Records whose key starts with `prefix` (the events of one batch of aggregates).
int64_t recordsKeyed(const std::vector<ConsumedRecord>& records, const std::string& prefix) {
  return std::count_if(records.begin(), records.end(),
                       [&](const ConsumedRecord& r) { return r.key && r.key->rfind(prefix, 0) == 0; });
}

// One row per topic, so that both topics exist and a reader subscribed to them has both assigned once it has read
// these two (a topic appearing later would make its group rebalance in the middle of what a test watches).
void warmUp(PgConnection& pg, const std::string& table, const std::vector<TopicReader*>& readers) {
  pg.exec("INSERT INTO " + table +
          " (aggregatetype, aggregateid, type, payload) VALUES "
          "('order', 'warm-o', 'order.changed', '{\"agg\": \"warm-o\", \"seq\": 1, \"w\": 8}'), "
          "('customer', 'warm-c', 'customer.changed', '{\"agg\": \"warm-c\", \"seq\": 1, \"w\": 8}')");
  for (TopicReader* reader : readers) {
    ASSERT_GE(reader->readUntil(2, 3min).size(), 2u) << "the warm-up events never arrived";
  }
}

// OrderStream events written as outbox rows (aggregatetype "order", the order id as aggregateid), 10 per
// transaction, from a thread until stop().
class OrderWriter {
 public:
  OrderWriter(std::string table, std::string topic, std::string prefix)
      : table_(std::move(table)), stream_(std::move(topic), std::move(prefix), 17) {
    thread_ = std::thread([this] { run(); });
  }
  ~OrderWriter() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  void stop() {  // rethrows a failure of the thread
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (failure_) std::rethrow_exception(failure_);
  }
  int64_t written() const { return written_.load(); }

 private:
  void run() {
    try {
      PgConnection pg(pgUrl());
      while (!stop_.load()) {
        std::string sql = "INSERT INTO " + table_ + " (aggregatetype, aggregateid, type, payload) VALUES ";
        for (int i = 0; i < 10; ++i) {
          TestEvent e = stream_.next();
          sql += fmt::format("{}('order', {}, {}, {}::jsonb)", i ? ", " : "", sqlLiteral(e.key), sqlLiteral(e.type),
                             sqlLiteral(e.value));
        }
        pg.exec(sql);
        written_ += 10;
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
      }
    } catch (...) {
      failure_ = std::current_exception();
    }
  }
  std::string table_;
  OrderStream stream_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> written_{0};
  std::exception_ptr failure_;
  std::thread thread_;
};

std::string lsnText(const std::optional<Lsn>& lsn) { return lsn ? lsn->toString() : std::string("none"); }

}  // namespace

// 1. kill -9 at 25 random moments (starting up, taking the slot, initialising the transactional producer, mid
//    Kafka transaction, mid commit) under four concurrent writers: each event exactly once, each aggregate in order.
TEST(RelayExactlyOnce, KillNineTwentyFiveTimesDeliversEveryEventOnceInOrder) {
  auto started = std::chrono::steady_clock::now();
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "eoskill");
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config = exactlyOnceConfig(table, topicPrefix);
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  std::vector<std::unique_ptr<RelayProcess>> relays;
  relays.push_back(RelayProcess::start(config.render(), "relay-0"));
  ASSERT_TRUE(streaming(pg, config.slot(), *relays.back())) << relays.back()->logTail();
  ASSERT_TRUE(waitForLog(*relays.back(), kProducerReady, 60s)) << relays.back()->logTail();

  unsigned seed = static_cast<unsigned>(std::chrono::system_clock::now().time_since_epoch().count());
  std::cout << "[ info ] kill schedule seed=" << seed << std::endl;
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> delayMs(200, 2500);

  std::vector<std::unique_ptr<BackgroundLoad>> loads;
  for (int w = 0; w < 4; ++w) {
    loads.push_back(std::make_unique<BackgroundLoad>(table, makeAggregates(uniqueName("agg"), 15), 5, 20ms, seed + w));
  }
  constexpr int kKills = 25;
  int cyclesWithProgress = 0;
  Lsn confirmed = confirmedFlushLsn(pg, config.slot()).value_or(Lsn());
  for (int kill = 1; kill <= kKills; ++kill) {
    std::this_thread::sleep_for(std::chrono::milliseconds(delayMs(rng)));  // the random moment
    relays.back()->sigkill();
    auto status = relays.back()->waitExit(30s);
    ASSERT_TRUE(status) << "relay did not die after SIGKILL";
    if (status->exited) {
      ADD_FAILURE() << relays.back()->label() << " had already exited on its own: " << status->toString() << "\n"
                    << relays.back()->logTail();
    }
    Lsn now = confirmedFlushLsn(pg, config.slot()).value_or(Lsn());
    if (now > confirmed) ++cyclesWithProgress;
    confirmed = now;
    relays.push_back(RelayProcess::start(config.render(), "relay-" + std::to_string(kill)));
  }
  std::this_thread::sleep_for(1s);  // a little more load for the last relay
  for (auto& load : loads) load->stop();

  auto rows = outboxRows(pg, table);
  TopicReader reader(kafkaBootstrap(), topicsOf(topicPrefix), Isolation::ReadCommitted);
  auto check = readAndCheck(reader, rows, topicPrefix);
  std::cout << "[ metric ] eos_kill9_seconds=" << secondsSince(started) << " events=" << rows.size()
            << " kills=" << kKills << " cycles_with_progress=" << cyclesWithProgress
            << " duplicates=" << check.duplicates << " missing=" << check.missing << std::endl;
  expectExactlyOnce(check);
  // The killed relays got somewhere: the test is about crashes mid-stream, not 25 crashes before the first event.
  EXPECT_GT(cyclesWithProgress, 0);
  EXPECT_THAT(relays.back()->log(), HasSubstr(kProducerReady));

  relays.back()->sigterm();
  auto status = relays.back()->waitExit(90s);
  ASSERT_TRUE(status) << "the relay did not exit within 90 s of SIGTERM";
  EXPECT_TRUE(status->success()) << status->toString() << "\n" << relays.back()->logTail();
}

// 2a. The relay's replication connection terminated five times under load (pg_terminate_backend of the slot's
//     walsender): the relay aborts its open Kafka transaction, reconnects, replays from its committed progress,
//     and never exits.
TEST(RelayExactlyOnce, PostgresConnectionTerminatedFiveTimesDeliversEveryEventOnce) {
  auto started = std::chrono::steady_clock::now();
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "eospgterm");
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config = exactlyOnceConfig(table, topicPrefix);
  config.metricsListen("127.0.0.1:0");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  TopicReader reader(kafkaBootstrap(), topicsOf(topicPrefix), Isolation::ReadCommitted);
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(streaming(pg, config.slot(), *relay)) << relay->logTail();
  std::string address = adminAddressOf(*relay);

  BackgroundLoad first(table, makeAggregates(uniqueName("agg"), 20), 10, 10ms, 21);
  BackgroundLoad second(table, makeAggregates(uniqueName("agg"), 20), 3, 5ms, 22);
  for (int round = 1; round <= 5; ++round) {
    // Progress since the last termination: the relay streams and commits again.
    Lsn confirmed = confirmedFlushLsn(pg, config.slot()).value_or(Lsn());
    Lsn written = currentWalInsertLsn(pg);
    ASSERT_TRUE(
        waitFor([&] { return confirmedFlushLsn(pg, config.slot()).value_or(Lsn()) > std::max(confirmed, written); },
                2min, 100ms))
        << "round " << round << ": the slot did not advance past " << written.toString() << "\n"
        << relay->logTail();
    int pid = terminateWalsender(pg, config.slot());
    ASSERT_TRUE(waitFor(
        [&] {
          auto now = slotActivePid(pg, config.slot());
          return now && *now != pid;
        },
        2min, 100ms))
        << "round " << round << ": the relay did not reconnect\n"
        << relay->logTail();
    ASSERT_TRUE(relay->running()) << "round " << round << ": the relay exited\n" << relay->logTail();
  }
  std::this_thread::sleep_for(1s);
  first.stop();
  second.stop();

  auto rows = outboxRows(pg, table);
  auto check = readAndCheck(reader, rows, topicPrefix);
  auto aborted = scrapeValue(address, "outbox_relay_kafka_transactions_total{outcome=\"aborted\"}");
  auto committed = scrapeValue(address, "outbox_relay_kafka_transactions_total{outcome=\"committed\"}");
  std::cout << "[ metric ] eos_pg_terminate_seconds=" << secondsSince(started) << " events=" << rows.size()
            << " terminations=5 kafka_txn_committed=" << committed.value_or(-1)
            << " kafka_txn_aborted=" << aborted.value_or(-1) << " duplicates=" << check.duplicates << std::endl;
  expectExactlyOnce(check);
  EXPECT_TRUE(committed && *committed > 0) << "no committed Kafka transaction counted";
  EXPECT_TRUE(relay->running()) << relay->logTail();
}

// 2b. The Kafka broker stopped and started again under load: the relay waits the coordinator out (never exits), and
//     what it had open is aborted or committed, never both.
TEST(RelayExactlyOnce, KafkaBrokerRestartDeliversEveryEventOnce) {
  auto started = std::chrono::steady_clock::now();
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "eoskrestart");
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config = exactlyOnceConfig(table, topicPrefix);
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(streaming(pg, config.slot(), *relay)) << relay->logTail();

  BackgroundLoad first(table, makeAggregates(uniqueName("agg"), 20), 10, 10ms, 31);
  BackgroundLoad second(table, makeAggregates(uniqueName("agg"), 20), 3, 5ms, 32);
  Lsn written = currentWalInsertLsn(pg);
  ASSERT_TRUE(waitFor([&] { return confirmedFlushLsn(pg, config.slot()).value_or(Lsn()) > written; }, 2min, 100ms))
      << "nothing was confirmed before the broker restart\n"
      << relay->logTail();

  auto restartStarted = std::chrono::steady_clock::now();
  {
    KafkaOutage outage;
    EXPECT_TRUE(relay->running()) << relay->logTail();
    outage.end();
  }
  double restartSeconds = secondsSince(restartStarted);
  // The relay commits again after the restart: the slot advances past what was written once the broker was back.
  Lsn afterRestart = currentWalInsertLsn(pg);
  waitFor([&] { return !relay->running() || confirmedFlushLsn(pg, config.slot()).value_or(Lsn()) > afterRestart; },
          3min, 200ms);
  ASSERT_TRUE(relay->running()) << "the relay exited over the broker restart (" << restartSeconds << " s)\n"
                                << relay->logTail();
  ASSERT_GT(confirmedFlushLsn(pg, config.slot()).value_or(Lsn()), afterRestart)
      << "the relay did not resume after the broker restart\n"
      << relay->logTail();
  std::this_thread::sleep_for(1s);
  first.stop();
  second.stop();

  auto rows = outboxRows(pg, table);
  TopicReader reader(kafkaBootstrap(), topicsOf(topicPrefix), Isolation::ReadCommitted);
  auto check = readAndCheck(reader, rows, topicPrefix);
  std::cout << "[ metric ] eos_broker_restart_seconds=" << secondsSince(started)
            << " broker_restart_seconds=" << restartSeconds << " events=" << rows.size()
            << " duplicates=" << check.duplicates << std::endl;
  expectExactlyOnce(check);
  EXPECT_TRUE(relay->running()) << "the relay exited over the broker restart\n" << relay->logTail();
}

// 3a. COPY of 10,000 rows in one PostgreSQL transaction, held in one Kafka transaction. The relay is frozen and
//     killed while part of it is in the log: a read_uncommitted reader sees some of those records, a read_committed
//     reader none. After the restart the aborted records stay invisible to read_committed, which gets the 10,000
//     exactly once; read_uncommitted sees the aborted ones as well.
TEST(RelayExactlyOnce, CopyInOneKafkaTransactionKilledMidwayIsPublishedOnce) {
  auto started = std::chrono::steady_clock::now();
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "eoscopy");
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config = exactlyOnceConfig(table, topicPrefix);
  holdLargeTransactions(config, 20000);
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  TopicReader committed(kafkaBootstrap(), topicsOf(topicPrefix), Isolation::ReadCommitted);
  TopicReader uncommitted(kafkaBootstrap(), topicsOf(topicPrefix), Isolation::ReadUncommitted);
  auto relay = RelayProcess::start(config.render(), "relay-1");
  ASSERT_TRUE(streaming(pg, config.slot(), *relay)) << relay->logTail();
  warmUp(pg, table, {&committed, &uncommitted});
  if (HasFatalFailure()) return;

  std::string aggPrefix = uniqueName("copy");
  copyEvents(pg, table, copyRows(makeAggregates(aggPrefix, 40), 10000, 400));
  // Frozen at the first sign of the transaction in the log, so that the moment is looked at, then killed.
  ASSERT_GE(uncommitted.readUntil(3, 3min).size(), 3u) << relay->logTail();
  relay->sigstop();
  uncommitted.readUntilQuiet(1s, 30s);
  committed.readUntilQuiet(2s, 30s);
  int64_t seenUncommitted = recordsKeyed(uncommitted.records(), aggPrefix);
  int64_t seenCommitted = recordsKeyed(committed.records(), aggPrefix);
  std::cout << "[ info ] at the kill: read_uncommitted saw " << seenUncommitted << " of the COPY, read_committed "
            << seenCommitted << std::endl;
  ASSERT_EQ(seenCommitted, 0) << "the relay committed the COPY's Kafka transaction before it could be frozen: the "
                                 "moment this test is about was missed";
  ASSERT_GT(seenUncommitted, 0);
  relay->sigkill();
  ASSERT_TRUE(relay->waitExit(30s));

  auto restarted = RelayProcess::start(config.render(), "relay-2");
  auto rows = outboxRows(pg, table);
  ASSERT_EQ(rows.size(), 10002u);
  auto check = readAndCheck(committed, rows, topicPrefix);
  expectExactlyOnce(check);
  EXPECT_EQ(recordsKeyed(committed.records(), aggPrefix), 10000);

  // read_uncommitted: the aborted records of the killed relay, then all of them again.
  uncommitted.readUntil(rows.size() + static_cast<size_t>(seenUncommitted), 3min);
  uncommitted.readUntilQuiet(2s, 30s);
  auto dirty = checkDelivery(rows, uncommitted.records(),
                             [&](const OutboxRow& r) { return topicPrefix + "." + r.aggregatetype; });
  std::cout << "[ metric ] eos_copy_one_txn_seconds=" << secondsSince(started) << " copy_rows=10000"
            << " read_uncommitted_records=" << dirty.records << " read_uncommitted_duplicates=" << dirty.duplicates
            << " read_committed_records=" << check.records << std::endl;
  EXPECT_GE(dirty.duplicates, seenUncommitted) << "read_uncommitted did not see the aborted records\n"
                                               << dirty.summary();
  EXPECT_GT(dirty.records, check.records);
  EXPECT_EQ(dirty.missing, 0) << dirty.summary();
  EXPECT_TRUE(restarted->running()) << restarted->logTail();
}

// 3b. The same COPY split over Kafka transactions of 1,000 events: the relay is killed when read_committed shows
//     part of it. The restarted relay skips what its progress says is in Kafka and publishes the rest: exactly
//     10,000, in order.
TEST(RelayExactlyOnce, CopySplitOverKafkaTransactionsKilledMidwayIsPublishedOnce) {
  auto started = std::chrono::steady_clock::now();
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "eossplit");
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config = exactlyOnceConfig(table, topicPrefix);
  holdLargeTransactions(config, 1000);
  config.metricsListen("127.0.0.1:0");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  TopicReader committed(kafkaBootstrap(), topicsOf(topicPrefix), Isolation::ReadCommitted);
  auto relay = RelayProcess::start(config.render(), "relay-1");
  ASSERT_TRUE(streaming(pg, config.slot(), *relay)) << relay->logTail();
  warmUp(pg, table, {&committed});
  if (HasFatalFailure()) return;

  std::string aggPrefix = uniqueName("copy");
  copyEvents(pg, table, copyRows(makeAggregates(aggPrefix, 40), 10000, 400));
  ASSERT_GE(committed.readUntil(3, 3min).size(), 3u) << relay->logTail();
  relay->sigstop();
  committed.readUntilQuiet(2s, 30s);
  int64_t seenCommitted = recordsKeyed(committed.records(), aggPrefix);
  std::cout << "[ info ] at the kill: read_committed saw " << seenCommitted << " of the COPY" << std::endl;
  ASSERT_GE(seenCommitted, 1);
  ASSERT_LT(seenCommitted, 10000) << "the relay published the whole COPY before it could be frozen: the moment this "
                                     "test is about was missed";
  EXPECT_EQ(seenCommitted % 1000, 0) << "Kafka transactions of transaction_max_events = 1000 each";
  relay->sigkill();
  ASSERT_TRUE(relay->waitExit(30s));

  // The last committed progress names the split transaction and how many of its events are in Kafka.
  {
    TopicReader progress(kafkaBootstrap(), {config.progressTopic()}, Isolation::ReadCommitted);
    progress.readUntilQuiet(3s, 60s);
    ASSERT_FALSE(progress.records().empty()) << "no progress record in " << config.progressTopic();
    const ConsumedRecord& last = progress.records().back();
    auto value = nlohmann::json::parse(last.value.value_or("null"), nullptr, false);
    ASSERT_TRUE(value.is_object()) << last.value.value_or("<null>");
    ASSERT_TRUE(value.contains("partial")) << value.dump();
    EXPECT_EQ(value["partial"].value("events", int64_t{-1}), seenCommitted) << value.dump();
  }

  auto restarted = RelayProcess::start(config.render(), "relay-2");
  std::string address = adminAddressOf(*restarted);
  auto rows = outboxRows(pg, table);
  ASSERT_EQ(rows.size(), 10002u);
  auto check = readAndCheck(committed, rows, topicPrefix);
  expectExactlyOnce(check);
  EXPECT_EQ(recordsKeyed(committed.records(), aggPrefix), 10000);
  auto skipped = scrapeValue(address, kSkippedCounter);
  std::cout << "[ metric ] eos_copy_split_seconds=" << secondsSince(started) << " copy_rows=10000"
            << " committed_before_kill=" << seenCommitted << " replayed_events_skipped=" << skipped.value_or(-1)
            << " duplicates=" << check.duplicates << std::endl;
  ASSERT_TRUE(skipped) << kSkippedCounter << " is not exported";
  EXPECT_GE(*skipped, static_cast<double>(seenCommitted));
  EXPECT_TRUE(restarted->running()) << restarted->logTail();
}

// 4. A zombie: relay A is frozen (SIGSTOP) with a Kafka transaction open, its walsender is terminated, and relay B
//    (same config, same transactional id) takes the slot, fences A and publishes. Let go again, A must not commit
//    what it had: it exits with status 6 without confirming anything, and read_committed sees each event once.
TEST(RelayExactlyOnce, StalledRelayIsFencedByItsSuccessor) {
  auto started = std::chrono::steady_clock::now();
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "eosfence");
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config = exactlyOnceConfig(table, topicPrefix);
  holdLargeTransactions(config, 20000);
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  TopicReader committed(kafkaBootstrap(), topicsOf(topicPrefix), Isolation::ReadCommitted);
  TopicReader uncommitted(kafkaBootstrap(), topicsOf(topicPrefix), Isolation::ReadUncommitted);
  auto a = RelayProcess::start(config.render(), "relay-a");
  ASSERT_TRUE(streaming(pg, config.slot(), *a)) << a->logTail();
  ASSERT_TRUE(waitForLog(*a, kProducerReady, 60s)) << a->logTail();
  warmUp(pg, table, {&committed, &uncommitted});
  if (HasFatalFailure()) return;

  BackgroundLoad load(table, makeAggregates(uniqueName("agg"), 20), 5, 20ms, 41);
  // A large transaction, so that A is certainly inside an open Kafka transaction when it is frozen.
  std::string aggPrefix = uniqueName("copy");
  copyEvents(pg, table, copyRows(makeAggregates(aggPrefix, 20), 5000, 400));
  ASSERT_TRUE(waitFor(
      [&] { return recordsKeyed(uncommitted.readUntil(uncommitted.records().size() + 1, 200ms), aggPrefix) > 0; }, 3min,
      1ms))
      << a->logTail();
  a->sigstop();
  committed.readUntilQuiet(2s, 30s);
  ASSERT_EQ(recordsKeyed(committed.records(), aggPrefix), 0)
      << "A committed the large transaction before it was frozen: the moment this test is about was missed";

  Lsn confirmedAtFreeze = confirmedFlushLsn(pg, config.slot()).value_or(Lsn());
  int pidA = terminateWalsender(pg, config.slot());
  auto b = RelayProcess::start(config.render(), "relay-b");
  std::optional<int> pidB;
  ASSERT_TRUE(waitFor(
      [&] {
        pidB = slotActivePid(pg, config.slot());
        return pidB && *pidB != pidA;
      },
      2min, 100ms))
      << "B never took the slot\n"
      << b->logTail();
  ASSERT_TRUE(waitForLog(*b, kProducerReady, 2min)) << b->logTail();
  // B publishes the large transaction (A's open one was aborted by B's initialisation).
  ASSERT_TRUE(waitFor(
      [&] { return recordsKeyed(committed.readUntil(committed.records().size() + 1, 200ms), aggPrefix) >= 5000; }, 3min,
      1ms))
      << b->logTail();

  Lsn confirmedBeforeThaw = confirmedFlushLsn(pg, config.slot()).value_or(Lsn());
  EXPECT_GE(confirmedBeforeThaw, confirmedAtFreeze);
  a->sigcont();
  auto status = a->waitExit(2min);
  ASSERT_TRUE(status) << "A was let go and did not stop: " << a->logTail();
  EXPECT_TRUE(status->exited && status->code == 6) << "A: " << status->toString() << "\n" << a->logTail();
  EXPECT_THAT(lower(a->log()), HasSubstr("fenced")) << a->logTail();
  // A never took the slot back: the walsender streaming to B is the one that has it, and it never went backwards.
  EXPECT_EQ(slotActivePid(pg, config.slot()), pidB) << "the slot changed hands after A was let go\n" << b->logTail();
  EXPECT_GE(confirmedFlushLsn(pg, config.slot()).value_or(Lsn()), confirmedBeforeThaw);

  std::this_thread::sleep_for(1s);
  load.stop();
  auto rows = outboxRows(pg, table);
  auto check = readAndCheck(committed, rows, topicPrefix);
  std::cout << "[ metric ] eos_fencing_seconds=" << secondsSince(started) << " events=" << rows.size()
            << " a_exit=" << status->toString() << " duplicates=" << check.duplicates << std::endl;
  expectExactlyOnce(check);
  EXPECT_TRUE(b->running()) << b->logTail();
  b->sigterm();
  auto bStatus = b->waitExit(90s);
  ASSERT_TRUE(bStatus);
  EXPECT_TRUE(bStatus->success()) << bStatus->toString() << "\n" << b->logTail();
}

// 5. A hot standby in exactly-once mode: B, started with A's config while A streams, waits for the slot without
//    initialising its transactional producer (that would fence A), A keeps publishing; A killed, B takes over.
TEST(RelayExactlyOnce, HotStandbyWaitsWithoutFencingThenTakesOver) {
  auto started = std::chrono::steady_clock::now();
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "eosstandby");
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config = exactlyOnceConfig(table, topicPrefix);  // slot_busy_retry_ms = 500
  config.metricsListen("127.0.0.1:0");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  TopicReader reader(kafkaBootstrap(), topicsOf(topicPrefix), Isolation::ReadCommitted);
  auto a = RelayProcess::start(config.render(), "relay-a");
  ASSERT_TRUE(streaming(pg, config.slot(), *a)) << a->logTail();
  std::string addressA = adminAddressOf(*a);
  ASSERT_TRUE(waitFor([&] { return scrapeValue(addressA, kReadyGauge) == 1.0; }, 60s))
      << kReadyGauge << " on A: " << scrapeValue(addressA, kReadyGauge).value_or(-1) << "\n"
      << a->logTail();

  BackgroundLoad load(table, makeAggregates(uniqueName("agg"), 20), 5, 20ms, 51);
  // A's walsender once A publishes (A may reconnect while it starts: a progress topic it just created can answer
  // "not leader" for a moment).
  ASSERT_GT(reader.readUntil(50, 2min).size(), 49u) << a->logTail();
  auto pidA = slotActivePid(pg, config.slot());
  ASSERT_TRUE(pidA);
  auto b = RelayProcess::start(config.render(), "relay-b");
  std::string addressB = adminAddressOf(*b);
  ASSERT_TRUE(waitFor([&] { return scrapeValue(addressB, kReadyGauge).has_value(); }, 60s))
      << kReadyGauge << " is not exported by the standby\n"
      << b->logTail();
  EXPECT_EQ(scrapeValue(addressB, kReadyGauge), 0.0) << b->logTail();
  // A keeps publishing with B standing by: new events keep arriving for a while, A keeps the slot, B stays at 0.
  for (int i = 0; i < 3; ++i) {
    size_t before = reader.records().size();
    ASSERT_GT(reader.readUntil(before + 100, 60s).size(), before + 99) << "A stopped publishing\n" << a->logTail();
    EXPECT_EQ(scrapeValue(addressB, kReadyGauge), 0.0) << b->logTail();
    EXPECT_EQ(slotActivePid(pg, config.slot()), pidA);
    EXPECT_TRUE(b->running()) << b->logTail();
  }
  EXPECT_EQ(scrapeValue(addressA, kReadyGauge), 1.0);
  EXPECT_THAT(b->log(), Not(HasSubstr(kProducerReady))) << "the standby initialised its transactional producer";
  EXPECT_EQ(lower(a->log()).find("fenced"), std::string::npos) << a->logTail();

  a->sigkill();
  ASSERT_TRUE(a->waitExit(30s));
  ASSERT_TRUE(waitFor(
      [&] {
        auto pid = slotActivePid(pg, config.slot());
        return pid && pid != pidA;
      },
      2min, 200ms))
      << "the standby never took the slot over\n"
      << b->logTail();
  ASSERT_TRUE(waitFor([&] { return scrapeValue(addressB, kReadyGauge) == 1.0; }, 2min)) << b->logTail();
  Lsn afterTakeover = currentWalInsertLsn(pg);
  ASSERT_TRUE(
      waitFor([&] { return confirmedFlushLsn(pg, config.slot()).value_or(Lsn()) > afterTakeover; }, 2min, 100ms))
      << b->logTail();
  load.stop();

  auto rows = outboxRows(pg, table);
  auto check = readAndCheck(reader, rows, topicPrefix);
  std::cout << "[ metric ] eos_standby_seconds=" << secondsSince(started) << " events=" << rows.size()
            << " duplicates=" << check.duplicates << std::endl;
  expectExactlyOnce(check);
  EXPECT_TRUE(b->running()) << b->logTail();
}

// 6. An event over its topic's max.message.bytes among normal ones, in one PostgreSQL transaction: the dead letter
//    is committed in the Kafka transaction in its place, exactly once (also across a kill -9 right after it), and
//    the other events exactly once.
TEST(RelayExactlyOnce, OversizedEventIsDeadLetteredExactlyOnce) {
  auto started = std::chrono::steady_clock::now();
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "eosdlq");
  std::string topicPrefix = uniqueName("t");
  std::string deadLetters = uniqueName("dlq");
  // Small enough for a 200 kB event to be refused, large enough for batches of the normal events.
  createTopic(topicPrefix + ".order", 3, {{"max.message.bytes", "65536"}});
  createTopic(topicPrefix + ".customer", 3);
  createTopic(deadLetters, 1);
  RelayConfigBuilder config = exactlyOnceConfig(table, topicPrefix);
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  std::string toml = "dead_letter_topic = " + tomlString(deadLetters) + "\n" + config.render();
  auto relay = RelayProcess::start(toml, "relay-1");
  ASSERT_TRUE(streaming(pg, config.slot(), *relay)) << relay->logTail();

  // Written in one go, so that the oversized event shares ProduceRequest batches with normal ones: the broker refuses
  // the whole batch (max.message.bytes is checked per batch), and only the oversized event may end as a dead letter.
  EventWriter writer(table, makeAggregates(uniqueName("agg"), 10), 0, 61);
  for (int i = 0; i < 10; ++i) writer.writeTransaction(10, i % 2 == 0);
  std::string agg = uniqueName("dl");
  auto row = [&](int seq, const std::string& extra) {
    return fmt::format("('order', '{0}', 'order.changed', '{{\"agg\": \"{0}\", \"seq\": {1}, \"w\": 7{2}}}')", agg, seq,
                       extra);
  };
  pg.exec("INSERT INTO " + table + " (aggregatetype, aggregateid, type, payload) VALUES " + row(1, "") + ", " +
          row(2, ", \"big\": \"" + std::string(200000, 'x') + "\"") + ", " + row(3, ""));
  std::string bigId = pg.scalar("SELECT id FROM " + table + " WHERE payload ? 'big'").value_or("");
  ASSERT_FALSE(bigId.empty());
  for (int i = 0; i < 10; ++i) writer.writeTransaction(10, i % 2 == 0);

  TopicReader dead(kafkaBootstrap(), {deadLetters}, Isolation::ReadCommitted);
  ASSERT_GE(dead.readUntil(1, 3min).size(), 1u) << relay->logTail();
  // Killed right after: whether or not the slot was confirmed past it, the restarted relay must not send it again.
  relay->sigkill();
  ASSERT_TRUE(relay->waitExit(30s));
  auto restarted = RelayProcess::start(toml, "relay-2");
  for (int i = 0; i < 10; ++i) writer.writeTransaction(10, i % 2 == 0);

  auto rows = outboxRows(pg, table);
  rows.erase(bigId);
  TopicReader reader(kafkaBootstrap(), topicsOf(topicPrefix), Isolation::ReadCommitted);
  auto check = readAndCheck(reader, rows, topicPrefix);
  expectExactlyOnce(check);
  dead.readUntilQuiet(3s, 30s);
  std::cout << "[ metric ] eos_dead_letter_seconds=" << secondsSince(started) << " events=" << rows.size()
            << " dead_letters=" << dead.records().size() << " duplicates=" << check.duplicates << std::endl;
  ASSERT_EQ(dead.records().size(), 1u) << "the dead letter is not there exactly once";
  const ConsumedRecord& letter = dead.records()[0];
  EXPECT_EQ(letter.headers.count("id") ? letter.headers.at("id") : "", bigId);
  EXPECT_EQ(letter.headers.count("original_topic") ? letter.headers.at("original_topic") : "", topicPrefix + ".order");
  EXPECT_EQ(letter.key, agg);
  EXPECT_TRUE(restarted->running()) << restarted->logTail();
}

// 7. outbox-sink with isolation.level = read_committed on the exactly-once relay's topic, the relay killed -9 in
//    the middle of a load: the read model is exact and the sink's de-duplication never had anything to skip.
TEST(RelayExactlyOnce, SinkReadsCommittedEventsWithoutNeedingDeduplication) {
  auto started = std::chrono::steady_clock::now();
  PgConnection pg(pgUrl());
  std::string prefix = uniqueName("it_eos");
  std::string topic = prefix + ".order";
  createTopic(topic, 3);
  std::string table = createOutboxTable(pg, "eossink");
  RelayConfigBuilder config = exactlyOnceConfig(table, prefix);
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  OrderReadModel model(pg, prefix);
  SinkConfigBuilder sinkConfig;
  model.addProjections(sinkConfig, topic);
  sinkConfig.kafkaProperty("isolation.level", "read_committed")
      .set("deduplication", "enabled", "true")
      .set("batch", "max_events", "200")
      .set("batch", "max_wait_ms", "50")
      .metricsListen("127.0.0.1:0");

  auto relay = RelayProcess::start(config.render(), "relay-1");
  ASSERT_TRUE(streaming(pg, config.slot(), *relay)) << relay->logTail();
  auto sink = SinkProcess::start(sinkConfig.render());
  std::string sinkAddress = adminAddressOf(*sink);

  OrderWriter writer(table, topic, prefix);
  ASSERT_TRUE(waitFor([&] { return model.appliedRows() >= 300; }, 3min, 100ms))
      << "the sink applied " << model.appliedRows() << "\n"
      << relay->logTail() << sink->logTail();
  int64_t appliedAtKill = model.appliedRows();
  int64_t writtenAtKill = writer.written();
  relay->sigkill();
  ASSERT_TRUE(relay->waitExit(30s));
  auto restarted = RelayProcess::start(config.render(), "relay-2");
  bool resumed = waitFor([&] { return model.appliedRows() >= writtenAtKill + 300; }, 3min, 100ms);
  writer.stop();
  ASSERT_TRUE(resumed) << restarted->logTail() << sink->logTail();

  auto rows = outboxRows(pg, table);
  std::vector<TestEvent> events;
  for (auto& [id, r] : rows) events.push_back({topic, r.aggregateid, r.payload.value_or(""), id, r.type});
  // The model applies events in the order given: an order's creation before its cancellation.
  std::stable_partition(events.begin(), events.end(), [](const TestEvent& e) { return e.type == "OrderCreated"; });
  TopicReader reader(kafkaBootstrap(), {topic}, Isolation::ReadCommitted);
  auto check = readAndCheck(reader, rows, prefix, false);  // order: OrderCancelled after OrderCreated, in the model
  expectExactlyOnce(check);
  auto total = static_cast<double>(rows.size());
  ASSERT_TRUE(waitFor([&] { return scrapeValue(sinkAddress, "outbox_sink_events_consumed_total") >= total; }, 3min))
      << "the sink consumed " << scrapeValue(sinkAddress, "outbox_sink_events_consumed_total").value_or(-1) << " of "
      << total << "\n"
      << sink->logTail();
  auto duplicates = scrapeValue(sinkAddress, "outbox_sink_events_skipped_total{reason=\"duplicate\"}");
  auto consumed = scrapeValue(sinkAddress, "outbox_sink_events_consumed_total");
  std::cout << "[ metric ] eos_sink_seconds=" << secondsSince(started) << " events=" << rows.size()
            << " applied_at_kill=" << appliedAtKill << " written_at_kill=" << writtenAtKill
            << " sink_consumed=" << consumed.value_or(-1) << " sink_duplicates=" << duplicates.value_or(-1)
            << std::endl;
  EXPECT_EQ(model.differences(events), "");
  EXPECT_EQ(consumed, total) << "the sink consumed more records than there are events";
  EXPECT_EQ(duplicates, 0.0) << "the sink had duplicates to skip";
  EXPECT_TRUE(sink->running()) << sink->logTail();
  EXPECT_TRUE(restarted->running()) << restarted->logTail();
}

// 8. The progress record: keyed by the transactional id, it names the slot, the database, the cluster (system_id)
//    and timeline, and the last whole PostgreSQL transaction in Kafka; the slot is never confirmed past its end_lsn
//    into an outbox transaction (past it only over WAL without events). With Kafka down nothing can commit, so
//    nothing written meanwhile is confirmed until Kafka is back.
TEST(RelayExactlyOnce, ProgressRecordNamesTheSlotAndBoundsItsConfirmedPosition) {
  auto started = std::chrono::steady_clock::now();
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "eosprogress");
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config = exactlyOnceConfig(table, topicPrefix);
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  std::string database = pg.scalar("SELECT current_database()").value_or("");
  std::string systemId = pg.scalar("SELECT system_identifier FROM pg_control_system()").value_or("");
  int64_t timeline = std::stoll(pg.scalar("SELECT timeline_id FROM pg_control_checkpoint()").value_or("0"));
  std::string transactionalId = "outbox-relay." + database + "." + config.slot();  // the default
  TopicReader reader(kafkaBootstrap(), topicsOf(topicPrefix), Isolation::ReadCommitted);
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(streaming(pg, config.slot(), *relay)) << relay->logTail();

  std::vector<std::pair<Lsn, Lsn>> commits;
  {
    BackgroundLoad first(table, makeAggregates(uniqueName("agg"), 20), 10, 10ms, 81);
    BackgroundLoad second(table, makeAggregates(uniqueName("agg"), 20), 3, 5ms, 82);
    Lsn written = currentWalInsertLsn(pg);
    ASSERT_TRUE(waitFor([&] { return confirmedFlushLsn(pg, config.slot()).value_or(Lsn()) > written; }, 2min, 100ms))
        << relay->logTail();
    std::this_thread::sleep_for(2s);
    first.stop();
    second.stop();
    commits = first.commits();
    auto more = second.commits();
    commits.insert(commits.end(), more.begin(), more.end());
    std::sort(commits.begin(), commits.end());
  }
  auto rows = outboxRows(pg, table);
  expectExactlyOnce(readAndCheck(reader, rows, topicPrefix));

  // The latest progress record: read until one covers the last commit of the load.
  TopicReader progress(kafkaBootstrap(), {config.progressTopic()}, Isolation::ReadCommitted);
  auto endOf = [](const ConsumedRecord& r) {
    auto value = nlohmann::json::parse(r.value.value_or("null"), nullptr, false);
    return value.is_object() && value.contains("end_lsn") && value["end_lsn"].is_string()
               ? Lsn::parse(value["end_lsn"].get<std::string>())
               : std::nullopt;
  };
  auto latestCovering = [&](TopicReader& progress, Lsn position) -> std::optional<ConsumedRecord> {
    std::optional<ConsumedRecord> found;
    waitFor(
        [&] {
          progress.readUntil(progress.records().size() + 1, 200ms);
          for (auto it = progress.records().rbegin(); it != progress.records().rend(); ++it) {
            if (it->key == transactionalId && endOf(*it) && *endOf(*it) > position) {
              found = *it;
              return true;
            }
          }
          return false;
        },
        2min, 1ms);
    progress.readUntilQuiet(1s, 30s);  // and anything after it
    for (auto it = progress.records().rbegin(); it != progress.records().rend(); ++it) {
      if (it->key == transactionalId && endOf(*it)) return *it;
    }
    return found;
  };
  Lsn lastBefore = commits.back().first;  // the last COMMIT to start
  Lsn lastAfter;                          // at or past the end of every commit record
  for (auto& c : commits) lastAfter = std::max(lastAfter, c.second);
  auto record = latestCovering(progress, lastBefore);
  ASSERT_TRUE(record) << "no progress record keyed " << transactionalId << " covers the last commit (before "
                      << lastBefore.toString() << "); records: " << progress.records().size()
                      << (progress.records().empty() ? std::string()
                                                     : " last key " + progress.records().back().key.value_or("<none>") +
                                                           " value " + progress.records().back().value.value_or(""));
  auto value = nlohmann::json::parse(record->value.value_or("null"), nullptr, false);
  ASSERT_TRUE(value.is_object()) << record->value.value_or("<null>");
  EXPECT_EQ(value.value("format", -1), 1) << value.dump();
  EXPECT_EQ(value.value("slot", ""), config.slot()) << value.dump();
  EXPECT_EQ(value.value("database", ""), database) << value.dump();
  std::string recordSystemId = value.contains("system_id") && value["system_id"].is_string()
                                   ? value["system_id"].get<std::string>()
                                   : (value.contains("system_id") ? value["system_id"].dump() : "");
  EXPECT_EQ(recordSystemId, systemId) << value.dump();
  EXPECT_EQ(value.value("timeline", int64_t{-1}), timeline) << value.dump();
  EXPECT_FALSE(value.contains("partial")) << "the load's transactions are small: " << value.dump();
  Lsn endLsn = *endOf(*record);
  auto commitLsn = Lsn::parse(value.value("commit_lsn", ""));
  ASSERT_TRUE(commitLsn) << value.dump();
  EXPECT_LE(*commitLsn, endLsn) << value.dump();
  // The last commit of the load is the last whole transaction in Kafka: its commit record ends at end_lsn.
  EXPECT_GT(endLsn, lastBefore) << value.dump();
  EXPECT_LE(endLsn, lastAfter) << value.dump();
  // The slot catches up with end_lsn. It may go past it only over WAL without outbox events (the relay confirms a
  // keepalive's WAL position when no Kafka transaction is open): never into a transaction the progress does not
  // cover. `commits` are all the outbox transactions; the first one not covered by `end` must lie at or after
  // `confirmed`.
  auto uncoveredBelow = [](const std::vector<std::pair<Lsn, Lsn>>& all, Lsn confirmed, Lsn end) {
    std::optional<Lsn> found;
    for (auto& [before, after] : all) {
      if (before >= end && before < confirmed && (!found || before < *found)) found = before;
    }
    return found;
  };
  ASSERT_TRUE(waitFor([&] { return confirmedFlushLsn(pg, config.slot()).value_or(Lsn()) >= endLsn; }, 2min, 100ms))
      << "confirmed_flush_lsn " << lsnText(confirmedFlushLsn(pg, config.slot())) << " never reached end_lsn "
      << endLsn.toString();

  // Kafka down: what is written meanwhile is not confirmed.
  Lsn confirmedAtStop = confirmedFlushLsn(pg, config.slot()).value_or(Lsn());
  EventWriter writer(table, makeAggregates(uniqueName("agg"), 10), 0, 83);
  std::vector<std::pair<Lsn, Lsn>> outageCommits;
  auto outageStarted = std::chrono::steady_clock::now();
  {
    KafkaOutage outage;
    auto outageEnd = std::chrono::steady_clock::now() + 6s;
    int samples = 0;
    while (std::chrono::steady_clock::now() < outageEnd) {
      outageCommits.push_back(writer.writeTransaction(10, samples % 2 == 0));
      std::this_thread::sleep_for(500ms);
      Lsn confirmed = confirmedFlushLsn(pg, config.slot()).value_or(Lsn());
      ++samples;
      ASSERT_LE(confirmed, outageCommits.front().first)
          << "with Kafka down, the slot was confirmed to " << confirmed.toString() << ", into or past a transaction "
          << "(commit after " << outageCommits.front().first.toString() << ") no Kafka transaction can hold";
    }
    EXPECT_GE(samples, 5);
    EXPECT_TRUE(relay->running()) << "the relay gave up while Kafka was down\n" << relay->logTail();
    outage.end();
  }
  Lsn lastOutageCommit = outageCommits.back().first;
  ASSERT_TRUE(
      waitFor([&] { return confirmedFlushLsn(pg, config.slot()).value_or(Lsn()) > lastOutageCommit; }, 3min, 200ms))
      << "the events written while Kafka was down were never confirmed\n"
      << relay->logTail();
  double catchUpSeconds = secondsSince(outageStarted);
  // Fresh readers: the earlier ones' consumer groups would wait out a session timeout after the broker restart.
  rows = outboxRows(pg, table);
  TopicReader readerAfter(kafkaBootstrap(), topicsOf(topicPrefix), Isolation::ReadCommitted);
  auto check = readAndCheck(readerAfter, rows, topicPrefix);
  expectExactlyOnce(check);
  TopicReader progressAfter(kafkaBootstrap(), {config.progressTopic()}, Isolation::ReadCommitted);
  auto after = latestCovering(progressAfter, lastOutageCommit);
  ASSERT_TRUE(after) << "no progress record covers the events written while Kafka was down";
  Lsn afterEnd = *endOf(*after);
  EXPECT_GT(afterEnd, lastOutageCommit);
  EXPECT_LE(afterEnd, outageCommits.back().second);
  commits.insert(commits.end(), outageCommits.begin(), outageCommits.end());
  Lsn confirmedAtEnd = confirmedFlushLsn(pg, config.slot()).value_or(Lsn());
  EXPECT_EQ(uncoveredBelow(commits, confirmedAtEnd, afterEnd), std::nullopt)
      << "confirmed_flush_lsn " << confirmedAtEnd.toString() << " is past an outbox transaction the progress (end_lsn "
      << afterEnd.toString() << ") does not cover";
  std::cout << "[ metric ] eos_progress_seconds=" << secondsSince(started) << " events=" << rows.size()
            << " progress_records=" << progressAfter.records().size() << " outage_transactions=" << outageCommits.size()
            << " outage_to_confirmed_seconds=" << catchUpSeconds
            << " confirmed_at_outage=" << confirmedAtStop.toString()
            << " confirmed_past_end_lsn_bytes=" << confirmedAtEnd.bytesSince(afterEnd)
            << " duplicates=" << check.duplicates << std::endl;
  EXPECT_TRUE(relay->running()) << relay->logTail();
}
