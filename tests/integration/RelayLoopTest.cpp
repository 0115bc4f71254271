// The relay's event loop never waits on PostgreSQL, and its memory follows the in-flight budget:
// - PostgreSQL frozen (SIGSTOP of the postmaster and every child) for 20 s under load: /healthz answers 200 all
//   along, /metrics answers and the loop keeps stamping its timestamp; after SIGCONT every event arrives.
// - Kafka stopped for 60 s under ~2,000 tps of writes to another table of the same publication: the relay's RSS
//   stays flat and its acknowledger's ring holds no entry per transaction; every event arrives afterwards.
// - A stop with Kafka down exits within one shutdown_timeout_ms, not two.
// - The lag probe works asynchronously: against a frozen server each step returns at once and the probe gives up
//   after its timeout.
#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "src/ServerWalProbe.h"
#include "support/RelayProcess.h"
#include "support/TestEnv.h"

using namespace outbox;
using namespace outbox::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

struct HttpResponse {
  int status = 0;  // 0: no HTTP answer
  std::string body;
};

// GET through curl, bounded at 2 s: a loop that blocks shows as a missing answer, not as a slow test.
HttpResponse httpGet(const std::string& url) {
  FILE* pipe = popen(("curl -sS --max-time 2 -w '\\n%{http_code}' '" + url + "' 2>/dev/null").c_str(), "r");
  if (!pipe) throw std::runtime_error("popen failed");
  std::string out;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  pclose(pipe);
  HttpResponse response;
  size_t nl = out.rfind('\n');
  if (nl == std::string::npos) return response;
  response.status = std::atoi(out.c_str() + nl + 1);
  response.body = out.substr(0, nl);
  return response;
}

// The value of an unlabelled metric in a Prometheus text exposition, nullopt when absent.
std::optional<double> metricValue(const std::string& exposition, const std::string& name) {
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + " ", 0) == 0) return std::strtod(line.c_str() + name.size() + 1, nullptr);
  }
  return std::nullopt;
}

double unixNow() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }

long vmRssKb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

// SIGSTOPs the dev stack's PostgreSQL (the postmaster from PGDATA's postmaster.pid, then every child of it), and
// SIGCONTs them all when it goes away, also when the test fails midway: the other tests need the server.
class PostgresFreeze {
 public:
  PostgresFreeze() {
    std::ifstream pidFile(requireEnv("DEVSTACK_STATE") + "/pg/postmaster.pid");
    pid_t postmaster = 0;
    if (!(pidFile >> postmaster) || postmaster <= 0) throw std::runtime_error("no postmaster.pid in the dev stack");
    stop(postmaster);  // first, so that it forks no new child meanwhile
    for (pid_t child : childrenOf(postmaster)) stop(child);
  }
  ~PostgresFreeze() { thaw(); }
  PostgresFreeze(const PostgresFreeze&) = delete;
  PostgresFreeze& operator=(const PostgresFreeze&) = delete;
  void thaw() {
    for (auto it = stopped_.rbegin(); it != stopped_.rend(); ++it) ::kill(*it, SIGCONT);
    stopped_.clear();
  }
  size_t processes() const { return stopped_.size(); }

 private:
  void stop(pid_t pid) {
    if (::kill(pid, SIGSTOP) == 0) stopped_.push_back(pid);
  }
  static std::vector<pid_t> childrenOf(pid_t parent) {
    std::vector<pid_t> out;
    DIR* proc = ::opendir("/proc");
    if (!proc) return out;
    while (dirent* entry = ::readdir(proc)) {
      pid_t pid = std::atoi(entry->d_name);
      if (pid <= 0) continue;
      std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
      std::string content((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
      size_t close = content.rfind(')');  // the command name may hold spaces and parentheses
      if (close == std::string::npos) continue;
      std::istringstream fields(content.substr(close + 2));
      std::string state;
      pid_t ppid = 0;
      fields >> state >> ppid;
      if (ppid == parent) out.push_back(pid);
    }
    ::closedir(proc);
    return out;
  }
  std::vector<pid_t> stopped_;
};

std::vector<std::string> topicsOf(const std::string& prefix) { return {prefix + ".order", prefix + ".customer"}; }

void expectAllDelivered(PgConnection& pg, const std::string& table, const std::string& topicPrefix) {
  auto rows = outboxRows(pg, table);
  TopicReader reader(kafkaBootstrap(), topicsOf(topicPrefix));
  bool all = readUntilDelivered(reader, idsOf(rows), 5min);
  reader.readUntilQuiet(2s, 30s);
  auto check = checkDelivery(
      rows, reader.records(), [&](const OutboxRow& r) { return topicPrefix + "." + r.aggregatetype; }, "", true);
  std::cout << "[ info ] events=" << rows.size() << " delivered=" << check.delivered
            << " duplicates=" << check.duplicates << std::endl;
  EXPECT_GT(rows.size(), 0u);
  EXPECT_TRUE(all) << check.summary();
  EXPECT_EQ(check.missing, 0) << check.summary();
  EXPECT_EQ(check.unexpected, 0) << check.summary();
  EXPECT_EQ(check.wrong, 0) << check.summary();
  EXPECT_EQ(check.outOfOrder, 0) << check.summary();
}

}  // namespace

TEST(RelayLoop, FrozenPostgresStallsNeitherHealthzNorMetricsNorTheLoop) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "freeze");
  std::string topicPrefix = uniqueName("t");
  int port = freeLoopbackPort();
  RelayConfigBuilder config;
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {}});
  config.metricsListen("127.0.0.1:" + std::to_string(port));
  config.source("lag_poll_interval_ms", "1000");  // probe often, so a blocking probe would surely be caught
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s));
  std::string base = "http://127.0.0.1:" + std::to_string(port);

  BackgroundLoad load(table, makeAggregates(uniqueName("agg"), 20), 5, 20ms);
  // Events flow, and the lag probe has its connection (it is what a frozen server would catch first).
  ASSERT_TRUE(waitFor(
      [&] {
        auto metrics = httpGet(base + "/metrics");
        return metricValue(metrics.body, "outbox_relay_server_wal_lsn").value_or(0) > 0 &&
               KafkaOffsets(kafkaBootstrap()).recordCount(topicPrefix + ".order") > 0;
      },
      2min, 500ms))
      << "nothing delivered, or no lag probe answer, before the freeze";

  int polls = 0, healthy = 0;
  double worstStaleness = 0;
  {
    PostgresFreeze freeze;
    std::cout << "[ info ] froze " << freeze.processes() << " PostgreSQL processes for 20 s" << std::endl;
    ASSERT_GT(freeze.processes(), 3u);
    auto end = Clock::now() + 20s;
    while (Clock::now() < end) {
      auto tick = Clock::now();
      ++polls;
      HttpResponse healthz = httpGet(base + "/healthz");
      if (healthz.status == 200) ++healthy;
      EXPECT_EQ(healthz.status, 200) << "at poll " << polls << ": " << healthz.body;
      HttpResponse metrics = httpGet(base + "/metrics");
      EXPECT_EQ(metrics.status, 200) << "/metrics did not answer at poll " << polls;
      if (auto stamp = metricValue(metrics.body, "outbox_relay_last_loop_timestamp_seconds")) {
        double staleness = unixNow() - *stamp;
        worstStaleness = std::max(worstStaleness, staleness);
        // The loop wakes at least once a second; a probe blocked on the frozen server would stop it for good.
        EXPECT_LT(staleness, 4.0) << "the event loop stood still at poll " << polls;
      } else {
        ADD_FAILURE() << "no outbox_relay_last_loop_timestamp_seconds at poll " << polls;
      }
      std::this_thread::sleep_until(tick + 500ms);
    }
    EXPECT_TRUE(relay->running()) << "the relay died while PostgreSQL was frozen";
  }  // SIGCONT
  std::cout << "[ metric ] freeze_polls=" << polls << " healthz_200=" << healthy
            << " worst_loop_staleness_s=" << worstStaleness << std::endl;
  EXPECT_GE(polls, 20);

  std::this_thread::sleep_for(3s);  // a little more load with the server back
  load.stop();
  expectAllDelivered(pg, table, topicPrefix);
  EXPECT_TRUE(relay->running());
  relay->sigterm();
  auto status = relay->waitExit(60s);
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->success()) << status->toString();
}

TEST(RelayLoop, KafkaDownUnderUnrelatedWritesOfASharedPublicationKeepsMemoryFlat) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "shared");
  std::string busy = uniqueName("busy");
  pg.exec("CREATE TABLE " + busy + " (id bigserial PRIMARY KEY, v int NOT NULL)");
  std::string topicPrefix = uniqueName("t");
  int port = freeLoopbackPort();
  RelayConfigBuilder config;
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {}});
  config.metricsListen("127.0.0.1:" + std::to_string(port));
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table, busy});
  // One publication for the outbox and a table that takes the application's writes: pgoutput sends every one of
  // those transactions (Begin, Insert of a table that is not an outbox, Commit).
  pg.exec("CREATE PUBLICATION " + config.publication() + " FOR TABLE " + table + ", " + busy +
          " WITH (publish = 'insert')");
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s));
  std::string base = "http://127.0.0.1:" + std::to_string(port);
  auto metric = [&](const std::string& name) { return metricValue(httpGet(base + "/metrics").body, name); };

  BackgroundLoad events(table, makeAggregates(uniqueName("agg"), 20), 1, 100ms);
  ASSERT_TRUE(
      waitFor([&] { return KafkaOffsets(kafkaBootstrap()).recordCount(topicPrefix + ".order") > 0; }, 2min, 200ms));

  // ~2,000 single-row transactions a second on the other table, from two connections.
  std::atomic<bool> stopWriters{false};
  std::atomic<int64_t> busyTxns{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < 2; ++w) {
    writers.emplace_back([&] {
      PgConnection conn(pgUrl());
      auto next = Clock::now();
      while (!stopWriters.load()) {
        conn.exec("INSERT INTO " + busy + " (v) VALUES (1)");
        ++busyTxns;
        next += 1ms;  // at most 1,000 a second per writer
        std::this_thread::sleep_until(next);
      }
    });
  }
  auto joinWriters = [&] {
    stopWriters = true;
    for (auto& t : writers) {
      if (t.joinable()) t.join();
    }
  };
  struct Join {
    std::function<void()> f;
    ~Join() { f(); }
  } joinGuard{joinWriters};
  std::this_thread::sleep_for(5s);  // the relay keeps up with the load before the outage

  double txnsBefore = 0, maxRing = 0;
  long rssStart = 0, rssMax = 0, rssEnd = 0;
  int64_t busyBefore = 0, busyAfter = 0;
  std::vector<long> samples;
  {
    KafkaOutage outage;
    txnsBefore = metric("outbox_relay_transactions_total").value_or(0);
    busyBefore = busyTxns.load();
    std::this_thread::sleep_for(3s);  // librdkafka notices; events written from now on wait in the ring
    rssStart = vmRssKb(relay->pid());
    auto end = Clock::now() + 57s;
    while (Clock::now() < end) {
      std::this_thread::sleep_for(1s);
      long rss = vmRssKb(relay->pid());
      samples.push_back(rss);
      rssMax = std::max(rssMax, rss);
      auto exposition = httpGet(base + "/metrics").body;
      double ring = metricValue(exposition, "outbox_relay_inflight_transactions").value_or(-1);
      double inflight = metricValue(exposition, "outbox_relay_inflight_events").value_or(-1);
      maxRing = std::max(maxRing, ring);
      EXPECT_GE(ring, 0) << "no outbox_relay_inflight_transactions gauge";
      EXPECT_LE(ring, inflight + 2) << "the ring holds entries without events";
    }
    rssEnd = vmRssKb(relay->pid());
    busyAfter = busyTxns.load();
    double txnsDuring = metric("outbox_relay_transactions_total").value_or(0) - txnsBefore;
    double seconds = 60;
    std::cout << "[ metric ] outage_s=60 busy_tps=" << static_cast<int64_t>((busyAfter - busyBefore) / seconds)
              << " relay_transactions_during_outage=" << static_cast<int64_t>(txnsDuring)
              << " rss_start_kb=" << rssStart << " rss_max_kb=" << rssMax << " rss_end_kb=" << rssEnd
              << " rss_growth_kb=" << (rssMax - rssStart) << " max_ring_entries=" << maxRing << std::endl;
    std::cout << "[ info ] rss samples (kB):";
    for (long s : samples) std::cout << ' ' << s;
    std::cout << std::endl;
    EXPECT_GT(txnsDuring, 30000) << "the relay did not decode the other table's transactions during the outage";
    EXPECT_GT(metric("outbox_relay_inflight_events").value_or(0), 0) << "no outbox event waited for Kafka";
    EXPECT_LT(rssMax - rssStart, 10 * 1024) << "RSS grew by " << (rssMax - rssStart) << " kB during the outage";
    EXPECT_TRUE(relay->running()) << "the relay gave up while Kafka was down";
  }  // Kafka back
  joinWriters();
  std::this_thread::sleep_for(3s);
  events.stop();
  expectAllDelivered(pg, table, topicPrefix);
  relay->sigterm();
  auto status = relay->waitExit(60s);
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->success()) << status->toString();
}

TEST(RelayLoop, AStopWithKafkaDownExitsWithinOneShutdownTimeout) {
  constexpr int kShutdownMs = 4000;
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "stop");
  std::string topicPrefix = uniqueName("t");
  int port = freeLoopbackPort();
  RelayConfigBuilder config;
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {}});
  config.metricsListen("127.0.0.1:" + std::to_string(port));
  config.limits(100, 8 * 1024 * 1024);
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  // shutdown_timeout_ms is a top-level key: it goes before the first table.
  std::string toml = "shutdown_timeout_ms = " + std::to_string(kShutdownMs) + "\n" + config.render();
  auto relay = RelayProcess::start(toml);
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s));
  std::string base = "http://127.0.0.1:" + std::to_string(port);

  std::chrono::duration<double> took{};
  {
    KafkaOutage outage;
    // One transaction of 1,000 events with room for 100 in flight: the relay stops reading in its middle and the
    // events it handed over wait for Kafka. A stop now has both a commit to read to and events to drain.
    EventWriter writer(table, makeAggregates(uniqueName("agg"), 10), 1, 7);
    writer.writeTransaction(1000);
    ASSERT_TRUE(waitFor(
        [&] { return metricValue(httpGet(base + "/metrics").body, "outbox_relay_inflight_events").value_or(0) >= 100; },
        60s, 200ms))
        << "the in-flight budget never filled";
    auto stopAt = Clock::now();
    relay->sigterm();
    auto status = relay->waitExit(std::chrono::milliseconds(3 * kShutdownMs + 10000));
    took = Clock::now() - stopAt;
    ASSERT_TRUE(status) << "no exit after SIGTERM";
    EXPECT_TRUE(status->exited && status->code == 1) << "expected exit 1 (unconfirmed events): " << status->toString();
  }
  std::cout << "[ metric ] shutdown_timeout_ms=" << kShutdownMs
            << " exit_after_ms=" << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << std::endl;
  // The margin: the last status update, closing the connections, and stopping the metrics server (civetweb's
  // master thread notices the stop within its 2 s poll quantum). Two bounds in a row would take 8 s and more.
  EXPECT_LT(took, std::chrono::milliseconds(kShutdownMs + 3000)) << "the stop took more than one shutdown_timeout_ms";
  EXPECT_GE(took, std::chrono::milliseconds(kShutdownMs - 500)) << "it did not wait for Kafka at all";

  // Nothing was confirmed that Kafka did not have: a new relay delivers all 1,000.
  auto again = RelayProcess::start(config.render(), "relay-again");
  expectAllDelivered(pg, table, topicPrefix);
  again->sigterm();
  auto status = again->waitExit(60s);
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->success()) << status->toString();
}

TEST(RelayLoop, TheLagProbeNeverBlocksOnAFrozenServerAndGivesUpAfterItsTimeout) {
  SourceConfig source;
  source.conninfo = pgUrl();
  ServerWalProbe probe(source);
  auto probeOnce = [&](std::chrono::milliseconds bound, std::chrono::milliseconds& slowestStep) {
    probe.start();
    auto end = Clock::now() + bound;
    while (Clock::now() < end) {
      auto before = Clock::now();
      auto answer = probe.advance();
      slowestStep = std::max(slowestStep, std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - before));
      if (answer) return std::optional<Lsn>(answer->serverWal);
      if (!probe.busy()) return std::optional<Lsn>();
      pollfd pfd{probe.socket(), probe.events(), 0};
      ::poll(&pfd, 1, 100);
    }
    return std::optional<Lsn>();
  };
  std::chrono::milliseconds slowest{0};
  auto first = probeOnce(10s, slowest);
  ASSERT_TRUE(first.has_value()) << "no answer from a running server";
  EXPECT_GT(first->value(), 0u);
  auto second = probeOnce(10s, slowest);  // on the same connection
  ASSERT_TRUE(second.has_value());
  EXPECT_GE(*second, *first);

  std::chrono::milliseconds frozenSlowest{0};
  {
    PostgresFreeze freeze;
    auto started = Clock::now();
    auto lsn = probeOnce(15s, frozenSlowest);
    auto gaveUpAfter = Clock::now() - started;
    EXPECT_FALSE(lsn.has_value());
    EXPECT_FALSE(probe.busy()) << "still waiting after 15 s";
    EXPECT_LT(gaveUpAfter, ServerWalProbe::kTimeout + 1s);
    EXPECT_GE(gaveUpAfter, ServerWalProbe::kTimeout - 100ms);
    // A new probe against the frozen server: the connection attempt does not block either.
    started = Clock::now();
    lsn = probeOnce(15s, frozenSlowest);
    EXPECT_FALSE(lsn.has_value());
    EXPECT_LT(Clock::now() - started, ServerWalProbe::kTimeout + 1s);
  }
  std::cout << "[ metric ] probe_slowest_step_ms running=" << slowest.count() << " frozen=" << frozenSlowest.count()
            << std::endl;
  EXPECT_LT(frozenSlowest, 200ms) << "a probe step waited on the frozen server";
  // Thawed: it reconnects and answers again.
  auto after = probeOnce(15s, slowest);
  EXPECT_TRUE(after.has_value()) << "no answer once the server runs again";
}
