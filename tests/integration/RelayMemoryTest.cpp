// A 1,000,000-row transaction (one INSERT ... SELECT generate_series) goes through with the default [limits] and a
// peak RSS under 100 MB: the relay streams a large transaction instead of holding it. Every row arrives, and none of
// a large subtransaction rolled back before it.
#include <gtest/gtest.h>

#include <iostream>
#include <vector>

#include "support/RelayProcess.h"
#include "support/TestEnv.h"

using namespace outbox;
using namespace outbox::test;
using namespace std::chrono_literals;

TEST(RelayMemory, MillionRowTransactionWithBoundedMemory) {
  constexpr int64_t kRows = 1000000;
  constexpr long kMaxRssKb = 100 * 1024;
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "mem");
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config;  // [limits] left at their defaults
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {{"eventType", "type"}}});
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s));

  auto insertStart = std::chrono::steady_clock::now();
  auto insertSql = [&](int64_t from, int64_t to) {
    return "INSERT INTO " + table +
           " (aggregatetype, aggregateid, type, payload) "
           "SELECT 'item', 'agg-' || (g % 1000), 'ItemAdded', jsonb_build_object('n', g, 'note', 'item number ' || g) "
           "FROM generate_series(" +
           std::to_string(from) + ", " + std::to_string(to) + ") g;";
  };
  // One transaction: 1M rows that commit, after 300k rows in a subtransaction rolled back to its savepoint (more
  // than logical_decoding_work_mem holds, so the server spills them; none may be published: their n > kRows).
  pg.exec("BEGIN; SAVEPOINT doomed;" + insertSql(kRows + 1, kRows + 300000) + "ROLLBACK TO SAVEPOINT doomed;" +
          insertSql(1, kRows) + "COMMIT;");
  auto committed = std::chrono::steady_clock::now();
  std::cout << "[ info ] 1M-row INSERT committed in " << std::chrono::duration<double>(committed - insertStart).count()
            << " s" << std::endl;

  std::string topic = topicPrefix + ".item";
  KafkaOffsets offsets(kafkaBootstrap());
  int64_t count = 0;
  bool arrived = waitFor(
      [&] {
        relay->peakRssKb();  // VmHWM while it works
        if (!relay->running()) return true;
        count = offsets.recordCount(topic);
        return count >= kRows;
      },
      10min, 500ms);
  auto delivered = std::chrono::steady_clock::now();
  double seconds = std::chrono::duration<double>(delivered - committed).count();
  ASSERT_TRUE(relay->running()) << "the relay died: " << relay->waitExit(1s)->toString();
  EXPECT_TRUE(arrived) << "only " << count << " of " << kRows << " records arrived within 10 minutes";

  relay->sigterm();
  auto status = relay->waitExit(120s);  // reads VmHWM until the exit
  ASSERT_TRUE(status) << "no exit within 120 s of SIGTERM";
  EXPECT_TRUE(status->success()) << status->toString();
  long peak = relay->peakRssKb();
  std::cout << "[ metric ] peak_rss_kb=" << peak << " events_per_s=" << static_cast<int64_t>(kRows / seconds)
            << " seconds=" << seconds << " (wait4 ru_maxrss " << relay->maxRssFromWait4Kb()
            << " kB, which also counts the forked test process)" << std::endl;
  EXPECT_LT(peak, kMaxRssKb) << "peak RSS " << peak << " kB";

  // Every row arrived: read the topic once, marking each event number.
  std::vector<bool> seen(kRows + 1, false);
  int64_t distinct = 0, duplicates = 0, bad = 0;
  int64_t read = scanTopic(
      kafkaBootstrap(), topic,
      [&](const ConsumedRecord& r) {
        // The value is the jsonb text: {"n": 123, "note": "item number 123"}
        size_t at = r.value ? r.value->find("\"n\": ") : std::string::npos;
        if (at == std::string::npos) {
          ++bad;
          return;
        }
        int64_t n = std::strtoll(r.value->c_str() + at + 5, nullptr, 10);
        if (n < 1 || n > kRows || r.key != "agg-" + std::to_string(n % 1000)) {
          ++bad;
          return;
        }
        if (seen[n]) {
          ++duplicates;
        } else {
          seen[n] = true;
          ++distinct;
        }
      },
      5min);
  std::cout << "[ info ] read back " << read << " records: distinct=" << distinct << " duplicates=" << duplicates
            << " malformed=" << bad << std::endl;
  EXPECT_EQ(distinct, kRows);
  EXPECT_EQ(bad, 0);
}
