// An operator changes the database under a running relay (README "Guarantees", "When the database changes under
// the relay"): a renamed outbox table, a dropped slot, a dropped publication, a role without REPLICATION. Whatever
// happens, no event is skipped silently: the relay either keeps relaying or stops with exit status 2 and a log
// line that names the problem and the fix, without confirming what it did not publish.
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <regex>

#include "support/RelayProcess.h"
#include "support/TestEnv.h"

using namespace outbox;
using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

// Inserts `n` events for aggregate type "order" into `table` in one transaction.
void insertEvents(PgConnection& pg, const std::string& table, int n, const std::string& tag) {
  pg.exec("INSERT INTO " + table + " (aggregatetype, aggregateid, type, payload) SELECT 'order', '" + tag +
          "-' || g, 'T', jsonb_build_object('n', g) FROM generate_series(1, " + std::to_string(n) + ") g");
}

// Ends the walsender streaming `slot` and drops the slot before the relay's reconnect takes it again.
void terminateAndDropSlot(PgConnection& pg, const std::string& slot) {
  bool dropped = waitFor(
      [&] {
        if (auto pid = slotActivePid(pg, slot)) {
          pg.exec("SELECT pg_terminate_backend(" + std::to_string(*pid) + ")");
          return false;
        }
        try {
          pg.exec("SELECT pg_drop_replication_slot('" + slot + "')");
          return true;
        } catch (const std::exception&) {
          return false;  // the relay took it again between the two statements
        }
      },
      60s, 20ms);
  ASSERT_TRUE(dropped) << "could not drop slot " << slot;
}

// A scratch PostgreSQL 15 cluster with wal_level = replica on a free port (run as the postgres user when root, as
// scripts/devstack does); stopped and deleted when the guard goes away.
class ReplicaWalCluster {
 public:
  ReplicaWalCluster() : port_(freeLoopbackPort()) {
    char dir[] = "/tmp/outbox-it-walreplica-XXXXXX";
    if (::mkdtemp(dir) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = dir;
    CommandResult r = runCommand({"/bin/sh", "-c", script("start")}, 120s);
    if (!r.status.success()) throw std::runtime_error("cannot start the scratch cluster: " + r.output);
  }
  ~ReplicaWalCluster() { runCommand({"/bin/sh", "-c", script("stop")}, 60s); }
  std::string url() const { return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/postgres"; }

 private:
  std::string script(const std::string& what) const {
    std::string asPg = "if [ \"$(id -u)\" -eq 0 ]; then runuser -u postgres -- \"$@\"; else \"$@\"; fi";
    std::string bin = "/usr/lib/postgresql/15/bin";
    std::string s = "set -e\nas_pg() { " + asPg + "; }\nD='" + dir_ + "'\n";
    if (what == "start") {
      return s + "[ \"$(id -u)\" -eq 0 ] && chown postgres:postgres \"$D\"\n" + "as_pg " + bin +
             "/initdb -D \"$D/pg\" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null\n" + "as_pg " + bin +
             "/pg_ctl -D \"$D/pg\" -l \"$D/pg.log\" -w -t 60 -o \"-c wal_level=replica -c port=" +
             std::to_string(port_) +
             " -c listen_addresses=127.0.0.1 -c unix_socket_directories=$D\" start >/dev/null\n";
    }
    return s + "as_pg " + bin + "/pg_ctl -D \"$D/pg\" -m immediate -w stop >/dev/null 2>&1 || true\nrm -rf \"$D\"\n";
  }
  int port_;
  std::string dir_;
};

}  // namespace

// The publication follows a table by OID: rows of an outbox renamed while the relay streams keep coming under the
// new name, and are relayed with the [[outbox]] mapping (before: treated as no outbox, skipped and confirmed). A
// reconnect keeps following it; a fresh start with the old name configured stops with exit status 2.
TEST(RelayLifecycle, RenamedOutboxTableKeepsBeingRelayedAndARestartWithTheOldNameIsASetupError) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "lcren");
  std::string renamed = table + "_v2";
  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config;
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {}});
  config.source("reconnect_backoff_min_ms", "100");
  config.metricsListen("127.0.0.1:0");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table, renamed});
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();
  std::string address = adminAddressOf(*relay);
  EXPECT_EQ(scrapeValue(address, "outbox_relay_outbox_renamed_total"), 0.0) << "exported at 0 from the start";

  insertEvents(pg, "public." + table, 10, "before");
  pg.exec("ALTER TABLE public." + table + " RENAME TO " + renamed);
  insertEvents(pg, "public." + renamed, 10, "after");
  auto rows = outboxRows(pg, renamed);
  ASSERT_EQ(rows.size(), 20u);
  TopicReader reader(kafkaBootstrap(), {topicPrefix + ".order"});
  EXPECT_TRUE(readUntilDelivered(reader, idsOf(rows), 2min)) << relay->logTail();
  EXPECT_TRUE(waitFor([&] { return scrapeValue(address, "outbox_relay_outbox_renamed_total").value_or(0) >= 1; }, 30s))
      << "the rename was not counted";
  EXPECT_NE(relay->log().find("arrives as public." + renamed + " (renamed)"), std::string::npos) << relay->logTail();

  // A lost connection: the relay finds the table again by the OID it streamed it under.
  auto pid = slotActivePid(pg, config.slot());
  ASSERT_TRUE(pid);
  pg.exec("SELECT pg_terminate_backend(" + std::to_string(*pid) + ")");
  ASSERT_TRUE(waitFor(
      [&] {
        auto now = slotActivePid(pg, config.slot());
        return now && *now != *pid;
      },
      2min, 50ms))
      << relay->logTail();
  insertEvents(pg, "public." + renamed, 5, "reconnected");
  rows = outboxRows(pg, renamed);
  EXPECT_TRUE(readUntilDelivered(reader, idsOf(rows), 2min)) << relay->logTail();
  reader.readUntilQuiet(2s, 30s);
  auto check = checkDelivery(rows, reader.records(), [&](const OutboxRow&) { return topicPrefix + ".order"; });
  EXPECT_EQ(check.missing, 0) << check.summary();
  EXPECT_EQ(check.wrong, 0) << check.summary();
  EXPECT_NE(relay->log().find("renamed while this relay streamed it"), std::string::npos) << relay->logTail();

  relay->sigterm();
  auto stopped = relay->waitExit(60s);
  ASSERT_TRUE(stopped && stopped->success()) << relay->logTail();
  auto confirmed = confirmedFlushLsn(pg, config.slot());

  // A fresh start knows only the configured name, which no table has any more.
  insertEvents(pg, "public." + renamed, 3, "unconfirmed");
  auto again = RelayProcess::start(config.render(), "relay-restarted");
  auto status = again->waitExit(60s);
  ASSERT_TRUE(status) << "the relay runs on with its outbox table missing" << again->logTail();
  EXPECT_EQ(status->code, 2) << status->toString();
  std::string log = again->log();
  EXPECT_NE(log.find("outbox table public." + table + " does not exist"), std::string::npos) << again->logTail();
  EXPECT_NE(log.find("rename it back, or change [[outbox]] table to the new name"), std::string::npos) << log;
  EXPECT_NE(log.find("also holds public." + renamed), std::string::npos) << "the message names the likely new name";
  EXPECT_EQ(confirmedFlushLsn(pg, config.slot()), confirmed) << "the failed start confirmed something";
}

// A slot dropped while the relay used it (the walsender terminated first, as an operator must): re-creating it
// would start at the current WAL position and lose what was committed in between, silently. The relay stops.
TEST(RelayLifecycle, SlotDroppedWhileStreamingStopsTheRelayInsteadOfCreatingANewOne) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "lcslot");
  std::string topic = uniqueName("t") + ".slot";
  RelayConfigBuilder config;
  config.addOutbox({table, topic, {}, {}});
  config.source("reconnect_backoff_min_ms", "100");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();
  insertEvents(pg, "public." + table, 5, "before");
  KafkaOffsets offsets(kafkaBootstrap());
  ASSERT_TRUE(waitFor([&] { return offsets.recordCount(topic) == 5; }, 2min, 100ms)) << relay->logTail();

  terminateAndDropSlot(pg, config.slot());
  if (HasFatalFailure()) return;
  insertEvents(pg, "public." + table, 5, "lost");

  auto status = relay->waitExit(60s);
  ASSERT_TRUE(status) << "the relay runs on after its slot disappeared" << relay->logTail();
  EXPECT_EQ(status->code, 2) << status->toString();
  std::string log = relay->log();
  EXPECT_NE(log.find("disappeared while this relay was streaming from it"), std::string::npos) << relay->logTail();
  EXPECT_NE(log.find("may be missing from Kafka"), std::string::npos) << log;
  EXPECT_FALSE(slotExists(pg, config.slot())) << "the relay created a new slot at the current position";
  EXPECT_EQ(offsets.recordCount(topic), 5);

  // A restart knows nothing of this process, but its checkpoint in Kafka says the slot existed: no new slot.
  auto restarted = RelayProcess::start(config.render(), "relay-restarted");
  auto again = restarted->waitExit(90s);
  ASSERT_TRUE(again) << "the restarted relay runs on without its slot" << restarted->logTail();
  EXPECT_EQ(again->code, 2) << again->toString();
  std::string refused = restarted->log();
  EXPECT_NE(refused.find("disappeared while no relay was streaming from it"), std::string::npos) << refused;
  EXPECT_NE(refused.find("on_slot_lost = \"recreate\""), std::string::npos) << "the message names the setting";
  EXPECT_FALSE(slotExists(pg, config.slot())) << "the restart created a new slot at the current position";

  // The operator chooses to go on: a new slot, the gap counted and on the dead-letter topic, new events relayed.
  std::string deadLetters = uniqueName("t") + ".gaps";
  config.source("on_slot_lost", "\"recreate\"");
  config.metricsListen("127.0.0.1:0");
  auto recreating = RelayProcess::start("dead_letter_topic = " + tomlString(deadLetters) + "\n" + config.render(),
                                        "relay-recreate");
  std::string admin = adminAddressOf(*recreating);
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << recreating->logTail();
  EXPECT_EQ(scrapeValue(admin, "outbox_relay_slot_lost_total"), 1.0);
  TopicReader gaps(kafkaBootstrap(), {deadLetters});
  const auto& gapRecords = gaps.readUntil(1, 60s);
  ASSERT_EQ(gapRecords.size(), 1u) << recreating->logTail();
  EXPECT_EQ(gapRecords[0].headers.at("outbox_gap"), "slot_lost");
  EXPECT_NE(gapRecords[0].headers.at("error").find("was lost"), std::string::npos);
  ASSERT_TRUE(gapRecords[0].value);
  auto gap = nlohmann::json::parse(*gapRecords[0].value);
  EXPECT_EQ(gap.at("kind"), "slot_lost");
  EXPECT_EQ(gap.at("slot"), config.slot());
  EXPECT_FALSE(gap.at("last_confirmed_lsn").get<std::string>().empty());
  EXPECT_TRUE(gap.at("checkpoint_time").is_string()) << "the checkpoint says when it was written";
  insertEvents(pg, "public." + table, 4, "after");
  EXPECT_TRUE(waitFor([&] { return offsets.recordCount(topic) == 9; }, 2min, 100ms))
      << "the events written after the re-creation; the 5 written into the gap are lost, as recorded"
      << recreating->logTail();
  recreating->sigterm();
  auto stopped = recreating->waitExit(60s);
  ASSERT_TRUE(stopped);
  EXPECT_EQ(stopped->code, 0) << stopped->toString();
}

// on_slot_lost = "recreate" while streaming: the slot dropped under the running relay is re-created at once, the
// gap recorded and counted, and the relay streams on without a restart.
TEST(RelayLifecycle, SlotDroppedWhileStreamingIsRecreatedWithTheGapRecordedWhenAsked) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "lcgap");
  std::string topic = uniqueName("t") + ".gap";
  std::string deadLetters = uniqueName("t") + ".gaps";
  RelayConfigBuilder config;
  config.addOutbox({table, topic, {}, {}});
  config.source("reconnect_backoff_min_ms", "100");
  config.source("on_slot_lost", "\"recreate\"");
  config.metricsListen("127.0.0.1:0");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start("dead_letter_topic = " + tomlString(deadLetters) + "\n" + config.render());
  std::string admin = adminAddressOf(*relay);
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();
  insertEvents(pg, "public." + table, 5, "before");
  KafkaOffsets offsets(kafkaBootstrap());
  ASSERT_TRUE(waitFor([&] { return offsets.recordCount(topic) == 5; }, 2min, 100ms)) << relay->logTail();
  ASSERT_TRUE(waitFor([&] { return confirmedFlushLsn(pg, config.slot()).value_or(Lsn()) >= currentWalLsn(pg); },
                      60s, 100ms));
  Lsn confirmedBefore = *confirmedFlushLsn(pg, config.slot());

  terminateAndDropSlot(pg, config.slot());
  if (HasFatalFailure()) return;
  ASSERT_TRUE(waitFor([&] { return scrapeValue(admin, "outbox_relay_slot_lost_total") == 1.0; }, 60s, 100ms))
      << relay->logTail();
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();
  EXPECT_TRUE(relay->running());
  TopicReader gaps(kafkaBootstrap(), {deadLetters});
  const auto& gapRecords = gaps.readUntil(1, 60s);
  ASSERT_EQ(gapRecords.size(), 1u) << relay->logTail();
  auto gap = nlohmann::json::parse(gapRecords[0].value.value_or("{}"));
  EXPECT_EQ(gap.at("kind"), "slot_lost");
  // Where the gap starts: what this process had confirmed, at or after what the old slot had.
  auto from = Lsn::parse(gap.at("last_confirmed_lsn").get<std::string>());
  ASSERT_TRUE(from);
  EXPECT_GE(*from, confirmedBefore);
  EXPECT_NE(relay->log().find("Re-created it"), std::string::npos) << relay->logTail();

  insertEvents(pg, "public." + table, 3, "after");
  EXPECT_TRUE(waitFor([&] { return offsets.recordCount(topic) == 8; }, 2min, 100ms)) << relay->logTail();
  relay->sigterm();
  auto stopped = relay->waitExit(60s);
  ASSERT_TRUE(stopped);
  EXPECT_EQ(stopped->code, 0) << stopped->toString();
}

// A publication dropped while the relay streams: pgoutput fails on the next change ("publication ... does not
// exist"). PostgreSQL 15 decodes each change with the catalog as of that change, so the changes written while the
// publication was missing fail also after it is re-created: instead of a reconnect loop that never gets past
// them, the relay stops with exit status 2, confirming nothing past the gap. Moving the slot past the gap, as the
// message says, lets a restart go on.
TEST(RelayLifecycle, PublicationDroppedWhileStreamingStopsTheRelayAndTheAdvisedFixWorks) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "lcpub");
  std::string topic = uniqueName("t") + ".pub";
  RelayConfigBuilder config;
  config.addOutbox({table, topic, {}, {}});
  config.source("reconnect_backoff_min_ms", "100");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();
  insertEvents(pg, "public." + table, 5, "before");
  KafkaOffsets offsets(kafkaBootstrap());
  ASSERT_TRUE(waitFor([&] { return offsets.recordCount(topic) == 5; }, 2min, 100ms)) << relay->logTail();

  pg.exec("DROP PUBLICATION " + config.publication());
  // The gap transaction, and where its commit record starts: the relay may confirm up to there (a keepalive reports
  // the WAL read so far, which can end inside a transaction whose commit is not decoded yet; PostgreSQL decodes a
  // transaction again whenever its commit lies past the confirmed position), never past it.
  pg.exec("BEGIN");
  insertEvents(pg, "public." + table, 5, "gap");
  Lsn gapCommit = currentWalInsertLsn(pg);
  pg.exec("COMMIT");
  auto status = relay->waitExit(60s);
  ASSERT_TRUE(status) << "the relay runs on without its publication" << relay->logTail();
  EXPECT_EQ(status->code, 2) << status->toString();
  EXPECT_NE(relay->log().find("was dropped while changes were being written"), std::string::npos) << relay->logTail();
  EXPECT_NE(relay->log().find("pg_replication_slot_advance"), std::string::npos) << relay->logTail();
  auto confirmed = confirmedFlushLsn(pg, config.slot());
  ASSERT_TRUE(confirmed);
  EXPECT_LE(*confirmed, gapCommit) << "confirmed past a transaction it never published";

  // A restart re-creates the publication (create_publication = true) and fails on the gap again: PostgreSQL 15.
  auto again = RelayProcess::start(config.render(), "relay-restarted");
  status = again->waitExit(60s);
  ASSERT_TRUE(status) << again->logTail();
  EXPECT_EQ(status->code, 2) << again->logTail();
  EXPECT_TRUE(publicationExists(pg, config.publication()));
  EXPECT_NE(again->log().find("was dropped while changes were being written"), std::string::npos) << again->logTail();
  EXPECT_EQ(confirmedFlushLsn(pg, config.slot()), confirmed);

  // The advised way on: the slot moved past the gap (deliberately losing its events), then what follows is relayed.
  Lsn afterRecreation = currentWalInsertLsn(pg);
  pg.exec("SELECT pg_replication_slot_advance('" + config.slot() + "', '" + afterRecreation.toString() + "')");
  auto third = RelayProcess::start(config.render(), "relay-after-advance");
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << third->logTail();
  insertEvents(pg, "public." + table, 5, "after");
  EXPECT_TRUE(waitFor([&] { return offsets.recordCount(topic) == 10; }, 2min, 100ms)) << third->logTail();
  EXPECT_TRUE(third->running()) << third->logTail();
}

// A login without the REPLICATION attribute cannot start a walsender: a setup error naming the fix, not an endless
// reconnect loop.
TEST(RelayLifecycle, RoleWithoutReplicationIsASetupErrorNamingTheFix) {
  PgConnection pg(pgUrl());
  std::string role = uniqueName("lc_norepl");
  pg.exec("CREATE ROLE " + role + " LOGIN");
  struct DropRole {
    PgConnection& pg;
    std::string role;
    ~DropRole() {
      try {
        pg.exec("DROP ROLE IF EXISTS " + role);
      } catch (...) {
      }
    }
  } dropRole{pg, role};
  std::string table = createOutboxTable(pg, "lcrole");
  RelayConfigBuilder config;
  config.addOutbox({table, uniqueName("t") + ".role", {}, {}});
  std::string url = pgUrl();
  size_t at = url.find('@'), scheme = url.find("://");
  ASSERT_TRUE(at != std::string::npos && scheme != std::string::npos) << url;
  config.conninfo(url.substr(0, scheme + 3) + role + url.substr(at));
  config.source("reconnect_backoff_min_ms", "100");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start(config.render());
  auto status = relay->waitExit(60s);
  ASSERT_TRUE(status) << "the relay retries a role that can never replicate" << relay->logTail();
  EXPECT_EQ(status->code, 2) << status->toString();
  EXPECT_NE(relay->log().find("ALTER ROLE " + role + " REPLICATION;"), std::string::npos) << relay->logTail();
  EXPECT_FALSE(slotExists(pg, config.slot()));
}

// A server without logical decoding: a setup error that says what to change, before any slot is attempted.
TEST(RelayLifecycle, WalLevelNotLogicalIsASetupErrorNamingTheFix) {
  ReplicaWalCluster cluster;
  PgConnection pg(cluster.url());
  ASSERT_EQ(pg.scalar("SHOW wal_level"), "replica");
  std::string table = createOutboxTable(pg, "lcwal");
  RelayConfigBuilder config;
  config.addOutbox({table, uniqueName("t") + ".wal", {}, {}});
  config.conninfo(cluster.url());
  auto relay = RelayProcess::start(config.render());
  auto status = relay->waitExit(60s);
  ASSERT_TRUE(status) << relay->logTail();
  EXPECT_EQ(status->code, 2) << status->toString();
  EXPECT_NE(relay->log().find("wal_level = replica"), std::string::npos) << relay->logTail();
  EXPECT_NE(relay->log().find("ALTER SYSTEM SET wal_level = logical;"), std::string::npos) << relay->logTail();
}

namespace {
// ALTER SYSTEM SET max_slot_wal_keep_size for the test, reset when the guard goes away (the stack is shared).
class SlotWalLimit {
 public:
  explicit SlotWalLimit(PgConnection& pg, const std::string& size) : pg_(pg) {
    pg_.exec("ALTER SYSTEM SET max_slot_wal_keep_size = " + sqlLiteral(size));
    pg_.exec("SELECT pg_reload_conf()");
  }
  ~SlotWalLimit() {
    try {
      pg_.exec("ALTER SYSTEM RESET max_slot_wal_keep_size");
      pg_.exec("SELECT pg_reload_conf()");
    } catch (const std::exception& e) {
      ADD_FAILURE() << "could not reset max_slot_wal_keep_size: " << e.what();
    }
  }
  SlotWalLimit(const SlotWalLimit&) = delete;
  SlotWalLimit& operator=(const SlotWalLimit&) = delete;

 private:
  PgConnection& pg_;
};
}  // namespace

// The server invalidates a slot whose WAL it removed (max_slot_wal_keep_size): the slot is still listed, but can
// never stream again. A relay that retried START_REPLICATION would loop forever; it treats the slot as lost.
TEST(RelayLifecycle, SlotInvalidatedByTheServerIsALostSlot) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "lcinv");
  std::string topic = uniqueName("t") + ".inv";
  RelayConfigBuilder config;
  config.addOutbox({table, topic, {}, {}});
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  {
    auto relay = RelayProcess::start(config.render());
    ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s)) << relay->logTail();
    insertEvents(pg, "public." + table, 3, "before");
    KafkaOffsets offsets(kafkaBootstrap());
    ASSERT_TRUE(waitFor([&] { return offsets.recordCount(topic) == 3; }, 2min, 100ms)) << relay->logTail();
    relay->sigterm();
    ASSERT_TRUE(relay->waitExit(60s));
  }
  {
    SlotWalLimit limit(pg, "1MB");
    std::string scratch = uniqueName("walfill");
    pg.exec("CREATE TABLE " + scratch + " (n int, pad text)");
    bool lost = waitFor(
        [&] {
          pg.exec("INSERT INTO " + scratch + " SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g");
          pg.exec("SELECT pg_switch_wal()");
          pg.exec("CHECKPOINT");
          return pg.scalar("SELECT wal_status FROM pg_replication_slots WHERE slot_name = " +
                           sqlLiteral(config.slot())) == "lost";
        },
        2min, 200ms);
    pg.exec("DROP TABLE " + scratch);
    ASSERT_TRUE(lost) << "the server did not invalidate the slot";
  }

  auto refused = RelayProcess::start(config.render(), "relay-invalidated");
  auto status = refused->waitExit(90s);
  ASSERT_TRUE(status) << "the relay runs on with an invalidated slot" << refused->logTail();
  EXPECT_EQ(status->code, 2) << status->toString();
  EXPECT_NE(refused->log().find("as the server invalidated it (wal_removed"), std::string::npos) << refused->logTail();
  EXPECT_NE(refused->log().find("on_slot_lost = \"recreate\""), std::string::npos) << refused->logTail();

  config.source("on_slot_lost", "\"recreate\"");
  config.metricsListen("127.0.0.1:0");
  auto recreating = RelayProcess::start(config.render(), "relay-recreate");
  std::string admin = adminAddressOf(*recreating);
  ASSERT_TRUE(waitFor(
      [&] {
        return pg.scalar("SELECT wal_status FROM pg_replication_slots WHERE active AND slot_name = " +
                         sqlLiteral(config.slot())) == "reserved";
      },
      120s, 100ms))
      << "no new, streaming slot" << recreating->logTail();
  EXPECT_EQ(scrapeValue(admin, "outbox_relay_slot_lost_total"), 1.0);
  insertEvents(pg, "public." + table, 2, "after");
  KafkaOffsets offsets(kafkaBootstrap());
  EXPECT_TRUE(waitFor([&] { return offsets.recordCount(topic) == 5; }, 2min, 100ms)) << recreating->logTail();
}
