// The relay across a PostgreSQL failover, on a primary + physical standby pair of the stack's version
// (scripts/devstack pair-*, support/PgPair.h), apart from the stack's own server.
//   RelayFailoverSlots.* (PostgreSQL 17+, label failover-slots): the slot is a failover slot, synchronized to the
//     standby; the primary is killed (-m immediate) at random moments under load and the standby promoted; the relay,
//     given both hosts, goes on on the new primary. Nothing committed is lost, nothing the final primary lacks was
//     published (synchronized_standby_slots), duplicates are counted.
//   RelayFailoverLegacy.* (PostgreSQL 16, label failover-legacy): no failover slots; a promotion loses the slot, and
//     the relay says so instead of skipping what it never read.
// Neither runs on the default stack (tests/CMakeLists.txt: the failover. prefix); the matrix cells of PostgreSQL 16,
// 17 and 18 run them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "support/PgPair.h"
#include "support/RelayProcess.h"
#include "support/TestEnv.h"

using namespace outbox;
using namespace outbox::test;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

namespace {

std::vector<std::string> topicsOf(const std::string& prefix) { return {prefix + ".order", prefix + ".customer"}; }

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int serverMajor(PgConnection& pg) { return std::stoi(pg.scalar("SHOW server_version_num").value_or("0")) / 10000; }

// One committed transaction of a FailoverWriter: its event ids and the WAL insert positions read right before COMMIT
// (at or before the start of its commit record) and right after it (at or past its end; nullopt when the connection
// died before it could be read).
struct Commit {
  std::vector<std::string> ids;
  Lsn before;
  std::optional<Lsn> after;
};

// A writer of numbered events that lives through a failover: it connects through the pair's multi-host conninfo
// (target_session_attrs=primary) and, when a transaction fails because the primary died under it, connects again
// (to the promoted standby, once there is one) and goes on. It owns its aggregates, so their order is its commit
// order. Each event's payload is {"agg", "seq", "w"}; a sequence number is never reused, also not after a failed
// COMMIT whose outcome is unknown: the final table may have gaps, never two events with one number, and the order
// check (first occurrences increase) holds either way.
class FailoverWriter {
 public:
  FailoverWriter(std::string conninfo, std::string table, std::vector<Aggregate> aggregates, int writerId,
                 unsigned seed, std::chrono::milliseconds pause)
      : conninfo_(std::move(conninfo) + " connect_timeout=3"),
        table_(std::move(table)),
        aggregates_(std::move(aggregates)),
        seq_(aggregates_.size(), 0),
        writerId_(writerId),
        rng_(seed),
        pause_(pause) {
    thread_ = std::thread([this] { run(); });
  }
  ~FailoverWriter() { stop(); }
  FailoverWriter(const FailoverWriter&) = delete;
  FailoverWriter& operator=(const FailoverWriter&) = delete;

  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int64_t committedEvents() const { return committedEvents_.load(); }
  int64_t failedTransactions() const { return failed_.load(); }
  int64_t connections() const { return connections_.load(); }
  std::vector<Commit> commits() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return commits_;
  }

 private:
  void run() {
    std::unique_ptr<PgConnection> pg;
    std::uniform_int_distribution<int> rowsOf(1, 4);
    std::uniform_int_distribution<size_t> aggregateOf(0, aggregates_.size() - 1);
    while (!stop_) {
      if (!pg) {
        try {
          pg = std::make_unique<PgConnection>(conninfo_);
          ++connections_;
        } catch (const std::exception&) {
          std::this_thread::sleep_for(100ms);  // no primary yet: the old one is gone, the standby not yet promoted
          continue;
        }
      }
      int rows = rowsOf(rng_);
      std::string sql = "INSERT INTO " + table_ + " (aggregatetype, aggregateid, type, payload) VALUES ";
      for (int i = 0; i < rows; ++i) {
        size_t a = aggregateOf(rng_);
        const Aggregate& agg = aggregates_[a];
        if (i > 0) sql += ", ";
        sql += "(" + sqlLiteral(agg.type) + ", " + sqlLiteral(agg.id) + ", " + sqlLiteral(agg.type + ".changed") +
               ", " + sqlLiteral(nlohmann::json{{"agg", agg.id}, {"seq", ++seq_[a]}, {"w", writerId_}}.dump()) +
               "::jsonb)";
      }
      sql += " RETURNING id";
      Commit commit;
      bool committed = false;
      try {
        pg->exec("BEGIN");
        for (auto& row : pg->rows(sql)) commit.ids.push_back(row.at(0));
        commit.before = currentWalInsertLsn(*pg);
        pg->exec("COMMIT");
        committed = true;
        commit.after = Lsn::parse(pg->scalar("SELECT pg_current_wal_insert_lsn()").value_or(""));
      } catch (const std::exception&) {
        if (!committed) ++failed_;
        pg.reset();
      }
      if (committed) {
        committedEvents_ += static_cast<int64_t>(commit.ids.size());
        std::lock_guard<std::mutex> lock(mutex_);
        commits_.push_back(std::move(commit));
      }
      std::this_thread::sleep_for(pause_);
    }
  }

  std::string conninfo_;
  std::string table_;
  std::vector<Aggregate> aggregates_;
  std::vector<int64_t> seq_;
  int writerId_;
  std::mt19937 rng_;
  std::chrono::milliseconds pause_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> committedEvents_{0};
  std::atomic<int64_t> failed_{0};
  std::atomic<int64_t> connections_{0};
  mutable std::mutex mutex_;
  std::vector<Commit> commits_;
  std::thread thread_;
};

// Four FailoverWriters on aggregates of their own.
class Load {
 public:
  // About 250 events a second on the pair: enough that every kill lands amid transactions, few enough that the
  // relay catches up within a round on 2 shared cores.
  Load(const std::string& conninfo, const std::string& table, unsigned seed,
       std::chrono::milliseconds pause = std::chrono::milliseconds(30)) {
    for (int w = 0; w < 4; ++w) {
      writers_.push_back(std::make_unique<FailoverWriter>(
          conninfo, table, makeAggregates(uniqueName("agg" + std::to_string(w)), 12), w, seed + w, pause));
    }
  }
  void stop() {
    for (auto& w : writers_) w->stop();
  }
  int64_t committedEvents() const {
    int64_t n = 0;
    for (auto& w : writers_) n += w->committedEvents();
    return n;
  }
  int64_t failedTransactions() const {
    int64_t n = 0;
    for (auto& w : writers_) n += w->failedTransactions();
    return n;
  }
  int64_t connections() const {
    int64_t n = 0;
    for (auto& w : writers_) n += w->connections();
    return n;
  }
  std::vector<Commit> commits() const {
    std::vector<Commit> all;
    for (auto& w : writers_) {
      auto c = w->commits();
      all.insert(all.end(), c.begin(), c.end());
    }
    return all;
  }
  // Waits until the writers committed `more` events beyond what they had when called: they write on the primary.
  bool waitForMore(int64_t more, std::chrono::milliseconds timeout) const {
    int64_t target = committedEvents() + more;
    return waitFor([&] { return committedEvents() >= target; }, timeout, 50ms);
  }

 private:
  std::vector<std::unique_ptr<FailoverWriter>> writers_;
};

// The relay's config for the pair: both hosts, a topic per aggregate type with the event type in header "eventType".
RelayConfigBuilder pairConfig(const PgPair& pair, const std::string& table, const std::string& topicPrefix) {
  RelayConfigBuilder config;
  config.conninfo(pair.conninfo()).addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {{"eventType", "type"}}});
  return config;
}

// Waits until the slot on the server of `pg` is confirmed past its position now: a relay streams there and Kafka
// acknowledges what it publishes. Returns the new position (nullopt when it did not move within `timeout`).
std::optional<Lsn> waitForConfirmedAdvance(PgConnection& pg, const std::string& slot, std::chrono::milliseconds timeout) {
  Lsn from = confirmedFlushLsn(pg, slot).value_or(Lsn());
  std::optional<Lsn> now;
  bool moved = waitFor(
      [&] {
        now = confirmedFlushLsn(pg, slot);
        return now && *now > from;
      },
      timeout, 200ms);
  if (!moved) return std::nullopt;
  return now;
}

// Every record of `topics` until `ids` all arrived (or 3 min passed), then until 2 s pass without one.
DeliveryCheck readAndCheck(const std::map<std::string, OutboxRow>& rows, const std::string& topicPrefix,
                           bool* allArrived) {
  TopicReader reader(kafkaBootstrap(), topicsOf(topicPrefix));
  *allArrived = readUntilDelivered(reader, idsOf(rows), 3min);
  reader.readUntilQuiet(2s, 60s);
  DeliveryCheck check = checkDelivery(
      rows, reader.records(), [&](const OutboxRow& r) { return topicPrefix + "." + r.aggregatetype; }, "eventType",
      true);
  if (check.missing > 0) {
    // Whether Kafka has what the reader did not hand out: a reader's fault, or records never stored.
    std::set<std::string> missing = idsOf(rows);
    for (const ConsumedRecord& r : reader.records()) {
      auto h = r.headers.find("id");
      if (h != r.headers.end()) missing.erase(h->second);
    }
    check.problems.push_back("the missing ids in Kafka's log:\n" +
                             locateInLog(kafkaBootstrap(), topicsOf(topicPrefix), missing));
  }
  return check;
}

// The event ids of every record in `topics`, read until 2 s pass without one.
std::set<std::string> idsInKafka(const std::string& topicPrefix) {
  TopicReader reader(kafkaBootstrap(), topicsOf(topicPrefix));
  reader.readUntilQuiet(3s, 2min);
  std::set<std::string> ids;
  for (auto& rec : reader.records()) {
    auto h = rec.headers.find("id");
    if (h != rec.headers.end()) ids.insert(h->second);
  }
  return ids;
}

unsigned seedNow() { return static_cast<unsigned>(std::chrono::system_clock::now().time_since_epoch().count()); }

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// PostgreSQL 17 and later: failover slots

TEST(RelayFailoverSlots, FivePromotionsAtRandomMomentsLoseNothingAndPublishNothingTheNewPrimaryLacks) {
  auto started = std::chrono::steady_clock::now();
  PgPair pair;
  ASSERT_GE(pair.pgMajor(), 17) << "failover slots are new in PostgreSQL 17: this test runs on the 17 and 18 cells";
  std::string table, topicPrefix = uniqueName("t");
  {
    PgConnection primary(pair.primaryConninfo());
    table = createOutboxTable(primary, "failover");
  }
  RelayConfigBuilder config = pairConfig(pair, table, topicPrefix);
  config.source("failover", "true");
  auto relay = RelayProcess::start(config.render());
  {
    PgConnection primary(pair.primaryConninfo());
    ASSERT_TRUE(waitForSlotStreaming(primary, config.slot(), 120s));
    EXPECT_EQ(primary.scalar("SELECT failover FROM pg_replication_slots WHERE slot_name = " +
                             sqlLiteral(config.slot())),
              "t")
        << "the relay created its slot without FAILOVER";
  }

  unsigned seed = seedNow();
  std::cout << "[ info ] failover schedule seed=" << seed << std::endl;
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> delayMs(200, 3000);
  Load load(pair.conninfo(), table, seed);

  for (int round = 1; round <= 5; ++round) {
    auto roundStarted = std::chrono::steady_clock::now();
    // The relay confirms on this primary, and the standby's copy of the slot is usable (synced, not temporary) and
    // at least that far: a promotion now keeps the slot.
    std::optional<Lsn> confirmed;
    {
      PgConnection primary(pair.primaryConninfo());
      confirmed = waitForConfirmedAdvance(primary, config.slot(), 2min);
    }
    ASSERT_TRUE(confirmed) << "round " << round << ": the relay confirmed nothing on the primary (port "
                           << pair.primaryPort() << ") within 2 min";
    double confirmedAfter = secondsSince(roundStarted);
    ASSERT_TRUE(pair.waitSlotSynced(config.slot(), 2min, confirmed->toString()))
        << "round " << round << ": the standby's slot never became usable at " << confirmed->toString() << ": "
        << pair.standbySlotState(config.slot());
    double synced = secondsSince(roundStarted);
    auto delay = std::chrono::milliseconds(delayMs(rng));
    std::this_thread::sleep_for(delay);  // a random moment under load, not a condition

    int oldPort = pair.primaryPort();
    pair.killPrimary();
    pair.promote();
    auto promoted = std::chrono::steady_clock::now();
    ASSERT_NE(pair.primaryPort(), oldPort);
    // The new primary needs its standby before it sends logical changes (synchronized_standby_slots): the old
    // primary comes back as that standby.
    pair.rebuild();
    double rebuilt = secondsSince(promoted);
    {
      PgConnection primary(pair.primaryConninfo());
      ASSERT_TRUE(waitForSlotStreaming(primary, config.slot(), 2min))
          << "round " << round << ": the relay does not stream from the new primary (port " << pair.primaryPort()
          << ")";
    }
    ASSERT_TRUE(load.waitForMore(200, 2min)) << "round " << round << ": the writers do not write on the new primary";
    ASSERT_TRUE(relay->running()) << "round " << round << ": the relay exited: " << relay->logTail(30);
    std::cout << "[ info ] round " << round << ": confirmed on the primary after " << confirmedAfter
              << " s, slot synced after " << synced << " s, killed " << delay.count()
              << " ms later; standby rebuilt " << rebuilt << " s after the promotion, relay streaming on port "
              << pair.primaryPort() << " and writers on it " << secondsSince(promoted) << " s after it (round took "
              << secondsSince(roundStarted) << " s, " << load.committedEvents() << " events committed so far)"
              << std::endl;
  }
  ASSERT_TRUE(load.waitForMore(500, 2min));
  load.stop();

  PgConnection finalPrimary(pair.primaryConninfo());
  auto rows = outboxRows(finalPrimary, table);
  bool all = false;
  auto check = readAndCheck(rows, topicPrefix, &all);
  std::cout << "[ metric ] failover_duplicates=" << check.duplicates << " events=" << rows.size()
            << " acknowledged_by_writers=" << load.committedEvents()
            << " failed_transactions=" << load.failedTransactions() << " writer_connections=" << load.connections()
            << " promotions=5 wall=" << secondsSince(started) << "s" << std::endl;
  EXPECT_TRUE(all) << check.summary();
  EXPECT_EQ(check.missing, 0) << check.summary();
  // synchronized_standby_slots: the relay never received WAL the standby lacked, so nothing in Kafka is missing
  // from the final primary's table.
  EXPECT_EQ(check.unexpected, 0) << check.summary();
  EXPECT_EQ(check.wrong, 0) << check.summary();
  EXPECT_EQ(check.outOfOrder, 0) << check.summary();

  relay->sigterm();
  auto status = relay->waitExit(90s);
  ASSERT_TRUE(status) << "the relay did not exit within 90 s of SIGTERM";
  EXPECT_TRUE(status->success()) << status->toString();
}

TEST(RelayFailoverSlots, TwoHotStandbyRelaysAcrossAFailoverExactlyOneStreamsAfterwards) {
  auto started = std::chrono::steady_clock::now();
  PgPair pair;
  ASSERT_GE(pair.pgMajor(), 17) << "failover slots are new in PostgreSQL 17: this test runs on the 17 and 18 cells";
  std::string table, topicPrefix = uniqueName("t");
  {
    PgConnection primary(pair.primaryConninfo());
    table = createOutboxTable(primary, "twofail");
  }
  RelayConfigBuilder config = pairConfig(pair, table, topicPrefix);
  config.source("failover", "true").metricsListen("127.0.0.1:0");
  auto first = RelayProcess::start(config.render(), "relay-1");
  {
    PgConnection primary(pair.primaryConninfo());
    ASSERT_TRUE(waitForSlotStreaming(primary, config.slot(), 120s));
  }
  auto second = RelayProcess::start(config.render(), "relay-2");
  std::string firstAdmin = adminAddressOf(*first), secondAdmin = adminAddressOf(*second);
  auto gauge = [](const std::string& address, const char* name) { return scrapeValue(address, name).value_or(-1); };
  // One streams, the other stands by: the gauges of the two relays, and the slot held by one walsender.
  auto exactlyOneStreams = [&] {
    double s1 = gauge(firstAdmin, "outbox_relay_streaming"), s2 = gauge(secondAdmin, "outbox_relay_streaming");
    double b1 = gauge(firstAdmin, "outbox_relay_standby"), b2 = gauge(secondAdmin, "outbox_relay_standby");
    return (s1 == 1 && b1 == 0 && s2 == 0 && b2 == 1) || (s1 == 0 && b1 == 1 && s2 == 1 && b2 == 0);
  };
  auto gauges = [&] {
    return "relay-1 streaming=" + std::to_string(gauge(firstAdmin, "outbox_relay_streaming")) +
           " standby=" + std::to_string(gauge(firstAdmin, "outbox_relay_standby")) +
           ", relay-2 streaming=" + std::to_string(gauge(secondAdmin, "outbox_relay_streaming")) +
           " standby=" + std::to_string(gauge(secondAdmin, "outbox_relay_standby"));
  };
  ASSERT_TRUE(waitFor(exactlyOneStreams, 60s, 250ms)) << "before the failover: " << gauges();

  Load load(pair.conninfo(), table, seedNow());
  std::optional<Lsn> confirmed;
  {
    PgConnection primary(pair.primaryConninfo());
    confirmed = waitForConfirmedAdvance(primary, config.slot(), 2min);
  }
  ASSERT_TRUE(confirmed);
  ASSERT_TRUE(pair.waitSlotSynced(config.slot(), 2min, confirmed->toString())) << pair.standbySlotState(config.slot());
  ASSERT_TRUE(load.waitForMore(300, 1min));

  pair.killPrimary();
  pair.promote();
  pair.rebuild();
  PgConnection primary(pair.primaryConninfo());
  ASSERT_TRUE(waitForSlotStreaming(primary, config.slot(), 2min)) << "no relay streams from the new primary";
  ASSERT_TRUE(waitFor(exactlyOneStreams, 2min, 250ms)) << "after the failover: " << gauges();
  ASSERT_TRUE(load.waitForMore(300, 2min));
  load.stop();

  auto rows = outboxRows(primary, table);
  bool all = false;
  auto check = readAndCheck(rows, topicPrefix, &all);
  std::cout << "[ metric ] two_relays_failover_duplicates=" << check.duplicates << " events=" << rows.size()
            << " wall=" << secondsSince(started) << "s" << std::endl;
  EXPECT_TRUE(all) << check.summary();
  EXPECT_EQ(check.missing + check.unexpected + check.wrong + check.outOfOrder, 0) << check.summary();
  // Still exactly one, held by one walsender, and both relays alive (the standby waits, it does not exit).
  EXPECT_TRUE(exactlyOneStreams()) << gauges();
  EXPECT_TRUE(slotActivePid(primary, config.slot()).has_value());
  EXPECT_TRUE(first->running()) << first->logTail(20);
  EXPECT_TRUE(second->running()) << second->logTail(20);
}

TEST(RelayFailoverSlots, AnExistingSlotWithoutFailoverIsSwitchedAndReachesTheStandby) {
  PgPair pair;
  ASSERT_GE(pair.pgMajor(), 17) << "failover slots are new in PostgreSQL 17: this test runs on the 17 and 18 cells";
  PgConnection primary(pair.primaryConninfo());
  std::string table = createOutboxTable(primary, "switch");
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config = pairConfig(pair, table, topicPrefix);
  // A slot as an earlier relay (or version) made it: without FAILOVER.
  primary.exec("SELECT pg_create_logical_replication_slot(" + sqlLiteral(config.slot()) + ", 'pgoutput')");
  std::string failoverOf = "SELECT failover FROM pg_replication_slots WHERE slot_name = " + sqlLiteral(config.slot());
  ASSERT_EQ(primary.scalar(failoverOf), "f");

  config.source("failover", "true");
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(waitForSlotStreaming(primary, config.slot(), 120s)) << relay->logTail(20);
  EXPECT_EQ(primary.scalar(failoverOf), "t") << "the relay did not switch the slot to FAILOVER";

  // And it is a failover slot in effect: the standby synchronizes it once the relay confirms.
  Load load(pair.conninfo(), table, seedNow());
  ASSERT_TRUE(load.waitForMore(200, 1min));
  auto confirmed = waitForConfirmedAdvance(primary, config.slot(), 2min);
  ASSERT_TRUE(confirmed);
  EXPECT_TRUE(pair.waitSlotSynced(config.slot(), 2min, confirmed->toString())) << pair.standbySlotState(config.slot());
  load.stop();
  auto rows = outboxRows(primary, table);
  bool all = false;
  auto check = readAndCheck(rows, topicPrefix, &all);
  EXPECT_TRUE(all) << check.summary();
  EXPECT_EQ(check.missing + check.unexpected + check.wrong + check.outOfOrder, 0) << check.summary();
  EXPECT_TRUE(relay->running()) << relay->logTail(20);
}

// ---------------------------------------------------------------------------------------------------------------
// PostgreSQL 16: no failover slots

TEST(RelayFailoverLegacy, FailoverOnAServerWithoutFailoverSlotsIsASetupError) {
  PgConnection pg(pgUrl());
  ASSERT_LT(serverMajor(pg), 17) << "this test is for servers without failover slots: it runs on the 16 cell";
  std::string table = createOutboxTable(pg, "nofail");
  RelayConfigBuilder config;
  config.addOutbox({table, uniqueName("t") + ".{aggregatetype}", {}, {}}).source("failover", "true");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start(config.render());
  auto status = relay->waitExit(60s);
  ASSERT_TRUE(status) << "the relay still runs 60 s after start with source.failover = true on PostgreSQL "
                      << serverMajor(pg);
  EXPECT_TRUE(status->exited && status->code == 2) << status->toString() << "\n" << relay->logTail(20);
  EXPECT_THAT(relay->log(), HasSubstr("source.failover"));
  EXPECT_THAT(relay->log(), HasSubstr("PostgreSQL 17"));
  EXPECT_FALSE(slotExists(pg, config.slot())) << "a slot was created although the config was refused";
}

// A promotion of a standby that has no copy of the slot: the running relay stops and names the gap; a restart on
// the new primary refuses (its checkpoint in Kafka says a slot existed); with on_slot_lost = "recreate" it goes on,
// counts the loss and publishes a gap record. What it had confirmed before the promotion is in Kafka.
TEST(RelayFailoverLegacy, PromotionWithoutFailoverSlotsStopsTheRelayAndRecreateReportsTheGap) {
  auto started = std::chrono::steady_clock::now();
  PgPair pair;
  ASSERT_LT(pair.pgMajor(), 17) << "this test is for servers without failover slots: it runs on the 16 cell";
  std::string table, topicPrefix = uniqueName("t");
  {
    PgConnection primary(pair.primaryConninfo());
    table = createOutboxTable(primary, "legacy");
  }
  std::string progressTopic = uniqueName("it_progress"), deadLetterTopic = uniqueName("it_dlq");
  RelayConfigBuilder config = pairConfig(pair, table, topicPrefix);
  config.kafkaOption("progress_topic", tomlString(progressTopic)).metricsListen("127.0.0.1:0");
  // dead_letter_topic is a top-level key: ahead of every table.
  std::string failConfig = "dead_letter_topic = " + tomlString(deadLetterTopic) + "\n" + config.render();
  std::string checkpointKey = "outbox-relay.postgres." + config.slot();

  // 1. Streaming on the primary, its checkpoint in Kafka; then the primary dies and the standby is promoted.
  auto relay = RelayProcess::start(failConfig, "relay-before");
  {
    PgConnection primary(pair.primaryConninfo());
    ASSERT_TRUE(waitForSlotStreaming(primary, config.slot(), 120s));
  }
  Load load(pair.conninfo(), table, seedNow());
  {
    PgConnection primary(pair.primaryConninfo());
    ASSERT_TRUE(waitForConfirmedAdvance(primary, config.slot(), 2min)) << "the relay confirmed nothing";
    ASSERT_TRUE(load.waitForMore(300, 1min));
    ASSERT_TRUE(waitForConfirmedAdvance(primary, config.slot(), 2min)) << "the relay confirmed nothing more";
  }
  // The latest checkpoint (a record of progressTopic with the relay's key) and the position it holds.
  auto latestCheckpoint = [&] {
    std::optional<Lsn> lsn;
    scanTopic(
        kafkaBootstrap(), progressTopic,
        [&](const ConsumedRecord& r) {
          if (r.key != checkpointKey || !r.value) return;
          auto json = nlohmann::json::parse(*r.value, nullptr, false);
          if (json.is_object() && json.contains("end_lsn")) lsn = Lsn::parse(json["end_lsn"].get<std::string>());
        },
        1min);
    return lsn;
  };
  // A checkpoint past some of the load: the first one is written at the first confirmation, before any event.
  Lsn loaded;
  for (auto& commit : load.commits()) loaded = std::max(loaded, commit.after.value_or(Lsn()));
  ASSERT_TRUE(waitFor([&] { return latestCheckpoint().value_or(Lsn()) >= loaded; }, 1min, 250ms))
      << "the relay wrote no checkpoint at or past " << loaded.toString() << " to " << progressTopic;
  pair.killPrimary();
  pair.promote();
  PgConnection primary(pair.primaryConninfo());  // the promoted standby, without the slot
  ASSERT_FALSE(slotExists(primary, config.slot())) << "PostgreSQL " << pair.pgMajor() << " kept a logical slot";

  auto status = relay->waitExit(2min);
  ASSERT_TRUE(status) << "the relay still runs 2 min after a promotion to a server without its slot";
  EXPECT_TRUE(status->exited && status->code == 2) << status->toString() << "\n" << relay->logTail(20);
  // The error names the slot, the gap's start (the timeline it was confirmed on: the pair starts on 1) and the fix.
  EXPECT_THAT(relay->log(), HasSubstr("on_slot_lost"));
  EXPECT_THAT(relay->log(), HasSubstr(config.slot()));
  EXPECT_THAT(relay->log(), HasSubstr("timeline 1"));
  EXPECT_FALSE(slotExists(primary, config.slot())) << "the relay created a slot, skipping the events in between";

  // What the relay had confirmed when it stopped: its last checkpoint. Every commit that ended at or before it and
  // survived the promotion is in Kafka.
  std::optional<Lsn> checkpointLsn = latestCheckpoint();
  ASSERT_TRUE(checkpointLsn) << "no checkpoint with key " << checkpointKey << " and an end_lsn in " << progressTopic;
  std::set<std::string> inKafkaBefore = idsInKafka(topicPrefix);

  // 2. A restart on the new primary refuses: its checkpoint says a slot existed.
  {
    auto restarted = RelayProcess::start(failConfig, "relay-restart");
    auto restartStatus = restarted->waitExit(2min);
    ASSERT_TRUE(restartStatus) << "the restarted relay still runs 2 min after start without its slot";
    EXPECT_TRUE(restartStatus->exited && restartStatus->code == 2)
        << restartStatus->toString() << "\n"
        << restarted->logTail(20);
    // It found the checkpoint: the error names it and the position it holds.
    EXPECT_THAT(restarted->log(), HasSubstr("on_slot_lost"));
    EXPECT_THAT(restarted->log(), HasSubstr(config.slot()));
    EXPECT_THAT(restarted->log(), HasSubstr(progressTopic));
    EXPECT_THAT(restarted->log(), HasSubstr(checkpointLsn->toString()));
    EXPECT_FALSE(slotExists(primary, config.slot())) << "the restarted relay created a slot";
  }

  // 3. on_slot_lost = "recreate": it re-creates the slot, counts the loss, publishes a gap record, and goes on.
  config.source("on_slot_lost", tomlString("recreate"));
  auto recreating = RelayProcess::start("dead_letter_topic = " + tomlString(deadLetterTopic) + "\n" + config.render(),
                                        "relay-recreate");
  ASSERT_TRUE(waitForSlotStreaming(primary, config.slot(), 2min)) << recreating->logTail(20);
  // Commits that start after this position come after the new slot's consistent point: every one must arrive.
  Lsn recreatedAt = confirmedFlushLsn(primary, config.slot()).value_or(Lsn());
  std::string admin = adminAddressOf(*recreating);
  EXPECT_TRUE(waitFor([&] { return scrapeValue(admin, "outbox_relay_slot_lost_total") == 1.0; }, 1min, 250ms))
      << "outbox_relay_slot_lost_total = " << scrapeValue(admin, "outbox_relay_slot_lost_total").value_or(-1);
  ASSERT_TRUE(load.waitForMore(300, 1min));
  load.stop();

  TopicReader gapReader(kafkaBootstrap(), {deadLetterTopic});
  gapReader.readUntil(1, 1min);
  gapReader.readUntilQuiet(2s, 30s);
  ASSERT_EQ(gapReader.records().size(), 1u) << "want one gap record on " << deadLetterTopic;
  const ConsumedRecord& gap = gapReader.records()[0];
  EXPECT_EQ(gap.key, checkpointKey);
  EXPECT_EQ(gap.headers.count("outbox_gap") ? gap.headers.at("outbox_gap") : "", "slot_lost");
  EXPECT_TRUE(gap.headers.count("error")) << "the gap record has no error header";
  auto gapJson = nlohmann::json::parse(gap.value.value_or(""), nullptr, false);
  ASSERT_TRUE(gapJson.is_object()) << gap.value.value_or("(null)");
  EXPECT_EQ(gapJson.value("kind", ""), "slot_lost") << gapJson.dump();
  EXPECT_EQ(gapJson.value("slot", ""), config.slot()) << gapJson.dump();
  EXPECT_EQ(gapJson.value("last_confirmed_lsn", ""), checkpointLsn->toString()) << gapJson.dump();
  EXPECT_EQ(gapJson.value("last_confirmed_timeline", 0), 1) << gapJson.dump();
  EXPECT_EQ(gapJson.value("timeline", 0), 2) << gapJson.dump();
  EXPECT_TRUE(gapJson.contains("new_slot_at_or_after_lsn")) << gapJson.dump();
  std::cout << "[ info ] gap record: " << gapJson.dump() << std::endl;

  // Due in Kafka: what survived the promotion and was confirmed before it (the checkpoint), and what was committed
  // after the slot was re-created. What lies between is the gap.
  auto rows = outboxRows(primary, table);
  std::set<std::string> confirmedIds, afterRecreateIds;
  std::map<std::string, std::string> commitOf;  // event id -> its commit's WAL positions, for failure messages
  for (auto& commit : load.commits()) {
    for (auto& id : commit.ids) {
      if (!rows.count(id)) continue;  // acknowledged by the old primary, never reached the standby
      if (commit.after && *commit.after <= *checkpointLsn) confirmedIds.insert(id);
      if (commit.before >= recreatedAt) afterRecreateIds.insert(id);
      commitOf[id] = "committed between " + commit.before.toString() + " and " +
                     (commit.after ? commit.after->toString() : "?") + ", " + std::to_string(commit.ids.size()) +
                     " events, payload " + rows.at(id).payload.value_or("null");
    }
  }
  std::set<std::string> due = confirmedIds;
  due.insert(afterRecreateIds.begin(), afterRecreateIds.end());
  TopicReader reader(kafkaBootstrap(), topicsOf(topicPrefix));
  readUntilDelivered(reader, due, 3min);
  reader.readUntilQuiet(2s, 60s);
  std::set<std::string> inKafka;
  for (auto& rec : reader.records()) {
    if (rec.headers.count("id")) inKafka.insert(rec.headers.at("id"));
  }
  int64_t missing = 0, lostInGap = 0;
  std::vector<std::string> problems;
  auto problem = [&](const std::string& p) {
    ++missing;
    if (problems.size() < 10) problems.push_back(p);
  };
  for (auto& id : confirmedIds) {
    if (!inKafka.count(id)) {
      problem("confirmed before the promotion (checkpoint " + checkpointLsn->toString() + "), not in Kafka: " + id +
              " (" + commitOf[id] + ")");
    }
  }
  for (auto& id : afterRecreateIds) {
    if (!inKafka.count(id)) {
      problem("committed after the slot was re-created (at " + recreatedAt.toString() + "), not in Kafka: " + id +
              " (" + commitOf[id] + ")");
    }
  }
  for (auto& id : inKafkaBefore) {
    if (!inKafka.count(id)) problem("in Kafka before the promotion, gone now: " + id);
  }
  for (auto& [id, row] : rows) {
    if (!inKafka.count(id)) ++lostInGap;
  }
  std::cout << "[ metric ] legacy_confirmed_before_promotion=" << confirmedIds.size()
            << " written_after_recreate=" << afterRecreateIds.size() << " lost_in_gap=" << lostInGap << " events=" << rows.size()
            << " wall=" << secondsSince(started) << "s" << std::endl;
  EXPECT_GT(confirmedIds.size(), 0u);
  EXPECT_GT(afterRecreateIds.size(), 0u);
  EXPECT_EQ(missing, 0) << ::testing::PrintToString(problems);
  EXPECT_TRUE(recreating->running()) << recreating->logTail(20);
}
