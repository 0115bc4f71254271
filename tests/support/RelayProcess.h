#pragma once
// The relay as a black box for integration tests: a TOML config rendered for one test (unique slot, publication,
// topics), the real build/bin/outbox-relay run as a subprocess with its output in a log file, and the PostgreSQL and
// Kafka facts the tests assert on (slot positions, what is left in a slot, how many records a topic holds).

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "src/Lsn.h"
#include "support/TestEnv.h"

namespace outbox::test {

// ---------------------------------------------------------------------------------------------------------------
// Config

// One [[outbox]] entry.
struct OutboxTableSpec {
  std::string table;  // "name" or "schema.name"
  std::string topic;  // topic template, e.g. "t123.{aggregatetype}"
  // Column mapping keys of [[outbox]] (id_column, aggregatetype_column, ...) -> column name; empty = defaults.
  std::vector<std::pair<std::string, std::string>> columns;
  std::vector<std::pair<std::string, std::string>> headers;  // [outbox.headers]: Kafka header -> column
};

// Renders a relay config for one test. Defaults: PGURL and KAFKA_BOOTSTRAP from the environment, a unique slot and
// publication (both created by the relay), status_interval_ms = 1000, metrics off (tests run side by side), and
// [messages] enabled (explicitly: the relay's default is off) under a unique prefix so that no other test's
// pg_logical_emit_message reaches this relay -- unless PGURL's server is PostgreSQL 13, which sends no logical
// decoding messages (the relay refuses [messages] there): then disabled, unless messages() asks for them.
class RelayConfigBuilder {
 public:
  RelayConfigBuilder();

  RelayConfigBuilder& addOutbox(OutboxTableSpec spec);
  // [messages] topic template and headers (header -> JSON field); the prefix stays the unique one.
  RelayConfigBuilder& messages(std::string topicTemplate,
                               std::vector<std::pair<std::string, std::string>> headers = {});
  RelayConfigBuilder& disableMessages();
  // No [messages] section at all: the relay's defaults (disabled, prefix "outbox").
  RelayConfigBuilder& omitMessagesSection();
  // Any other [messages] key with its TOML value text, e.g. messagesOption("non_transactional", "\"publish\"").
  RelayConfigBuilder& messagesOption(const std::string& key, const std::string& tomlValue);
  // Any [source] key with its TOML value text, e.g. source("slot_busy_retry_ms", "500") or
  // source("create_publication", "false").
  RelayConfigBuilder& source(const std::string& key, const std::string& tomlValue);
  RelayConfigBuilder& kafkaProperty(const std::string& key, const std::string& value);
  // Any plain [kafka] key with its TOML value text, e.g. kafkaOption("transaction_max_events", "1000"); replaces an
  // earlier value of the key.
  RelayConfigBuilder& kafkaOption(const std::string& key, const std::string& tomlValue);
  // Exactly-once delivery: delivery = "exactly_once", with a progress topic of this builder's own (so that no other
  // test's progress records are read); the transactional id stays the relay's default unless kafkaOption sets it.
  RelayConfigBuilder& exactlyOnce();
  RelayConfigBuilder& limits(uint64_t maxInflightEvents, uint64_t maxInflightBytes);
  RelayConfigBuilder& metricsListen(const std::string& address);  // enables [metrics]
  RelayConfigBuilder& logLevel(const std::string& level);
  // source.publication in place of the unique one (e.g. "outbox_relay", which schema/outbox.sql creates).
  RelayConfigBuilder& publication(const std::string& name);
  // source.conninfo in place of PGURL (another role, another server).
  RelayConfigBuilder& conninfo(const std::string& conninfo);
  // [kafka] bootstrap_servers in place of KAFKA_BOOTSTRAP (another listener).
  RelayConfigBuilder& bootstrapServers(const std::string& servers);
  // [kafka.secret_files]: a librdkafka property read from `path`.
  RelayConfigBuilder& kafkaSecretFile(const std::string& key, const std::string& path);

  const std::string& slot() const { return slot_; }
  const std::string& publication() const { return publication_; }
  const std::string& messagePrefix() const { return messagePrefix_; }
  const std::string& progressTopic() const { return progressTopic_; }  // the one exactlyOnce() sets
  std::string render() const;

 private:
  std::string slot_;
  std::string publication_;
  std::string messagePrefix_;
  std::string progressTopic_;
  // Unset: on where the server sends logical messages (PostgreSQL 14 on; the relay refuses them before).
  std::optional<bool> messagesEnabled_;
  bool messagesSection_ = true;
  std::vector<std::pair<std::string, std::string>> messagesExtra_;
  std::string messagesTopic_;
  std::vector<std::pair<std::string, std::string>> messagesHeaders_;
  std::vector<std::pair<std::string, std::string>> sourceExtra_;
  std::vector<std::pair<std::string, std::string>> kafkaOptions_;
  std::vector<std::pair<std::string, std::string>> kafkaProperties_;
  std::optional<std::pair<uint64_t, uint64_t>> limits_;
  std::optional<std::string> metricsListen_;
  std::string logLevel_ = "info";
  std::optional<std::string> conninfo_;
  std::optional<std::string> bootstrapServers_;
  std::vector<std::pair<std::string, std::string>> kafkaSecretFiles_;
  std::vector<OutboxTableSpec> outboxes_;
};

// A TOML basic string literal, quoted and escaped.
std::string tomlString(const std::string& value);

// ---------------------------------------------------------------------------------------------------------------
// Processes

struct ExitStatus {
  bool exited = false;  // exited normally (then `code`), else killed by `signal`
  int code = -1;
  int signal = 0;
  bool success() const { return exited && code == 0; }
  std::string toString() const;
};

// The path of a binary of this build (OUTBOX_BIN_DIR), e.g. binPath("outbox-relay").
std::string binPath(const std::string& name);
// A path in the source tree (OUTBOX_SOURCE_DIR).
std::string sourcePath(const std::string& relative);
// The whole of a file of the source tree (sourcePath(relative)); throws naming it when it cannot be read.
std::string readSourceFile(const std::string& relative);

// A subprocess with stdout+stderr in a log file. The destructor SIGKILLs it if it still runs and, when the current
// test has failed, prints the tail of its log. The child also dies with the test process (PR_SET_PDEATHSIG).
class ChildProcess {
 public:
  ChildProcess(std::vector<std::string> argv, std::string label);
  virtual ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& label() const { return label_; }
  bool running();  // reaps the child if it has exited
  void sigterm();
  void sigkill();
  // Freezes the process (SIGSTOP) and lets it go on (SIGCONT): a process that is alive but does nothing, as one
  // stalled by a long GC pause, swapping or a suspended VM.
  void sigstop();
  void sigcont();
  // The exit status once the process has ended, nullopt if it still runs after `timeout`.
  std::optional<ExitStatus> waitExit(std::chrono::milliseconds timeout);
  // Peak resident set size in kB: the largest VmHWM read from /proc while it ran (waitExit keeps reading it until
  // the exit). VmHWM starts afresh at execve, so it is the relay's own peak.
  long peakRssKb();
  // wait4's ru_maxrss after the exit, in kB. Linux keeps it across execve, so it also counts the image of the test
  // process that forked the child: an upper bound, not the relay's own peak.
  long maxRssFromWait4Kb() const { return ruMaxRssKb_; }
  const std::string& logPath() const { return logPath_; }
  std::string log() const;
  std::string logTail(size_t lines = 60) const;

 protected:
  const std::vector<std::string>& argv() const { return argv_; }

 private:
  void reap(bool block);
  std::string label_;
  std::vector<std::string> argv_;
  std::string dir_;
  std::string logPath_;
  pid_t pid_ = -1;
  std::optional<ExitStatus> exit_;
  long peakRssKb_ = 0;
  long ruMaxRssKb_ = 0;
};

// build/bin/outbox-relay --config FILE, with `configToml` written to FILE.
class RelayProcess : public ChildProcess {
 public:
  explicit RelayProcess(const std::string& configToml, const std::string& label = "relay");
  ~RelayProcess() override;
  static std::unique_ptr<RelayProcess> start(const std::string& configToml, const std::string& label = "relay") {
    return std::make_unique<RelayProcess>(configToml, label);
  }
  const std::string& configPath() const { return configPath_; }

 private:
  static std::vector<std::string> argvFor(const std::string& configPath);
  static std::string writeConfig(const std::string& configToml);
  std::string configPath_;
};

// Runs a command to completion (killed after `timeout`), capturing stdout and stderr together.
struct CommandResult {
  ExitStatus status;
  std::string output;
};
CommandResult runCommand(const std::vector<std::string>& argv, std::chrono::milliseconds timeout);

// The relay or the sink logs "serving /metrics, /healthz and /readyz on HOST:PORT" once its admin server runs
// (port 0 resolved): that HOST:PORT. Throws when the process exits or 60 s pass first.
std::string adminAddressOf(ChildProcess& process);
// The value of a series in a scrape of http://ADDRESS/metrics, named as exposed: a bare name, or one with its labels
// (`outbox_sink_events_skipped_total{reason="duplicate"}`); nullopt when it is absent.
std::optional<double> scrapeValue(const std::string& address, const std::string& name);

// scripts/devstack CMD (stop-kafka, start-kafka, ...) on the stack named by DEVSTACK_STATE; throws when it fails.
void devstack(const std::string& command);

// Stops the dev stack's Kafka, and starts it again at the latest when the guard goes away (also when a test fails
// midway): the following tests need it.
class KafkaOutage {
 public:
  KafkaOutage() { devstack("stop-kafka"); }
  ~KafkaOutage();
  KafkaOutage(const KafkaOutage&) = delete;
  KafkaOutage& operator=(const KafkaOutage&) = delete;
  void end();  // starts Kafka again now

 private:
  bool down_ = true;
};

// A file under a fresh temporary directory with the given content; returns its path.
std::string writeTempFile(const std::string& name, const std::string& content);

// ---------------------------------------------------------------------------------------------------------------
// PostgreSQL

// Creates public.<unique name> with Debezium's outbox columns (id uuid default gen_random_uuid(), aggregatetype,
// aggregateid, type, payload <payloadType>) plus an optional column `note text`; returns the table name.
std::string createOutboxTable(PgConnection& pg, const std::string& prefix = "outbox",
                              const std::string& payloadType = "jsonb");

std::optional<Lsn> confirmedFlushLsn(PgConnection& pg, const std::string& slot);
Lsn currentWalLsn(PgConnection& pg);        // pg_current_wal_lsn()
Lsn currentWalInsertLsn(PgConnection& pg);  // pg_current_wal_insert_lsn(): at or past the end of the last commit
bool slotExists(PgConnection& pg, const std::string& slot);
std::optional<int> slotActivePid(PgConnection& pg, const std::string& slot);  // nullopt when not active
bool publicationExists(PgConnection& pg, const std::string& publication);

// Waits until the slot exists, has a consistent point (confirmed_flush_lsn set) and a walsender streams from it:
// from then on every commit reaches the relay.
bool waitForSlotStreaming(PgConnection& pg, const std::string& slot, std::chrono::milliseconds timeout);

// How many inserts of published tables are still in the slot after its confirmed_flush_lsn (decoded with
// pg_logical_slot_peek_binary_changes; the slot must not be in use).
int64_t pendingInsertsInSlot(PgConnection& pg, const std::string& slot, const std::string& publication);

// Drops, at the end of a test, what the relay and the test created: the slot (once no walsender holds it: a leftover
// logical slot holds WAL), the publication and tables. Declare it before the relays so it runs after they are killed.
class ReplicationCleanup {
 public:
  ReplicationCleanup(std::string slot, std::string publication, std::vector<std::string> tables = {});
  ~ReplicationCleanup();
  void addTable(const std::string& table) { tables_.push_back(table); }
  void addSchema(const std::string& schema) { schemas_.push_back(schema); }  // dropped with CASCADE

 private:
  std::string slot_;
  std::string publication_;
  std::vector<std::string> tables_;
  std::vector<std::string> schemas_;
};

// ---------------------------------------------------------------------------------------------------------------
// Events: writers of numbered events and the check of what arrived

// An aggregate a writer owns: only that writer inserts its events, so the writer's order is their commit order.
struct Aggregate {
  std::string type;  // aggregatetype, e.g. "order"
  std::string id;    // aggregateid, the Kafka key
};

// Inserts events into an outbox table (default column names) from a connection of its own. Each event's payload is
// {"agg": <aggregateid>, "seq": <1, 2, ... per aggregate>, "w": <writer>}.
class EventWriter {
 public:
  EventWriter(std::string table, std::vector<Aggregate> aggregates, int writerId, unsigned seed);
  // One transaction of `rows` events for randomly chosen aggregates: a multi-row INSERT, or one INSERT per row.
  // Returns the WAL insert positions right before COMMIT and right after it (at or past the end of its commit
  // record).
  std::pair<Lsn, Lsn> writeTransaction(int rows, bool multiRowInsert = true);
  int64_t written() const { return written_; }
  PgConnection& connection() { return pg_; }

 private:
  PgConnection pg_;
  std::string table_;
  std::vector<Aggregate> aggregates_;
  std::vector<int64_t> seq_;
  int writerId_;
  unsigned state_;
  int64_t written_ = 0;
};

// An EventWriter in a thread: one transaction of `rowsPerTxn` rows every `pause` until stop().
class BackgroundLoad {
 public:
  BackgroundLoad(std::string table, std::vector<Aggregate> aggregates, int rowsPerTxn, std::chrono::milliseconds pause,
                 unsigned seed = 1);
  ~BackgroundLoad();
  void stop();  // rethrows a failure of the writer thread
  int64_t written() const { return written_.load(); }
  // WAL insert positions right before and right after each commit, in commit order.
  std::vector<std::pair<Lsn, Lsn>> commits() const;

 private:
  EventWriter writer_;
  int rowsPerTxn_;
  std::chrono::milliseconds pause_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> written_{0};
  mutable std::mutex mutex_;
  std::vector<std::pair<Lsn, Lsn>> commits_;
  std::exception_ptr failure_;
  std::thread thread_;
};

// The aggregates "<prefix>-0" .. "<prefix>-(n-1)"; type alternates "order" / "customer" unless `type` is given.
std::vector<Aggregate> makeAggregates(const std::string& prefix, int n, const std::string& type = "");

// A committed outbox row (default column names), payload as PostgreSQL prints it.
struct OutboxRow {
  std::string id;
  std::string aggregatetype;
  std::string aggregateid;
  std::string type;
  std::optional<std::string> payload;
};
std::map<std::string, OutboxRow> outboxRows(PgConnection& pg, const std::string& table);
// The event ids of `rows`.
std::set<std::string> idsOf(const std::map<std::string, OutboxRow>& rows);

// What arrived compared with what was committed.
struct DeliveryCheck {
  int64_t expected = 0;               // committed rows
  int64_t records = 0;                // records read
  int64_t delivered = 0;              // distinct expected ids among them
  int64_t missing = 0;                // expected ids never seen
  int64_t duplicates = 0;             // records repeating an id already seen
  int64_t unexpected = 0;             // records whose id was never committed
  int64_t wrong = 0;                  // records with a wrong topic, key, value or header
  int64_t outOfOrder = 0;             // aggregates whose events are split over partitions or out of commit order
  std::vector<std::string> problems;  // the first few, for the failure message
  std::string summary() const;
};

// Checks records against rows: every id arrives (at least once), on topicOf(row), key = aggregateid, value = payload
// as stored, header "id"; header `typeHeader` (if not empty) = type. With `checkOrder`, the events of each aggregate
// sit in one partition and their payload "seq" values, first occurrences in offset order, increase (duplicates from
// a replay may repeat earlier ones).
DeliveryCheck checkDelivery(const std::map<std::string, OutboxRow>& rows, const std::vector<ConsumedRecord>& records,
                            const std::function<std::string(const OutboxRow&)>& topicOf,
                            const std::string& typeHeader = "", bool checkOrder = false);

// Reads until every id in `ids` has arrived (header "id") or `timeout` passes; returns whether all arrived.
bool readUntilDelivered(TopicReader& reader, const std::set<std::string>& ids, std::chrono::milliseconds timeout);

// ---------------------------------------------------------------------------------------------------------------
// Kafka

// End offsets of topics, from one client kept for the test.
class KafkaOffsets {
 public:
  explicit KafkaOffsets(const std::string& bootstrap);
  ~KafkaOffsets();
  KafkaOffsets(const KafkaOffsets&) = delete;
  KafkaOffsets& operator=(const KafkaOffsets&) = delete;

  // Sum of the partitions' high watermarks: the records ever written to the topic (every test's topics are new);
  // 0 while the topic does not exist.
  int64_t recordCount(const std::string& topic);
  int partitionCount(const std::string& topic);

 private:
  rd_kafka_t* rk_ = nullptr;
};

// Creates `topic` with the admin API and per-topic configs (e.g. {"max.message.bytes", "4096"}); throws when Kafka
// refuses or does not answer within 30 s.
void createTopic(const std::string& topic, int partitions,
                 const std::vector<std::pair<std::string, std::string>>& configs = {});

// Reads every record of `topic` from the beginning up to its end at call time, handing each to `onRecord` without
// keeping them (for topics too large for TopicReader). Returns the number of records read. ReadUncommitted hands
// out the records of aborted and open Kafka transactions too: what the log holds, for explaining a missing record.
int64_t scanTopic(const std::string& bootstrap, const std::string& topic,
                  const std::function<void(const ConsumedRecord&)>& onRecord, std::chrono::milliseconds timeout,
                  Isolation isolation = Isolation::ReadCommitted);

// For a failure message about records that a reader did not find: each partition of `topics` with its low and high
// watermark and how many records a read_uncommitted scan (no group) finds in it, then for each id of `ids` where the
// log holds a record with that "id" header (records of aborted or open Kafka transactions included), or "nowhere".
// Tells a reader that missed records Kafka has from records Kafka never stored.
std::string locateInLog(const std::string& bootstrap, const std::vector<std::string>& topics,
                        const std::set<std::string>& ids);

}  // namespace outbox::test
