#include "support/RelayProcess.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <thread>

namespace outbox::test {

using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------------------------------
// Config

std::string tomlString(const std::string& value) {
  std::string out = "\"";
  for (unsigned char c : value) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

namespace {
// pgoutput sends logical decoding messages from PostgreSQL 14 on. A server that cannot be asked counts as one that
// does (the relay's own error then says what is wrong).
bool serverSendsMessages(const std::string& conninfo) {
  // A conninfo the test process cannot use itself (a role whose password is in a file, a client certificate):
  // the stack's own URL names the same server.
  for (const std::string& candidate : {conninfo, pgUrl()}) {
    try {
      PgConnection pg(candidate);
      return std::stoi(pg.scalar("SHOW server_version_num").value_or("0")) >= 140000;
    } catch (const std::exception&) {
    }
  }
  return true;
}
}  // namespace

RelayConfigBuilder::RelayConfigBuilder()
    : slot_(uniqueName("it_slot")),
      publication_(uniqueName("it_pub")),
      messagePrefix_(uniqueName("it_msg")),
      messagesTopic_(messagePrefix_ + ".{aggregatetype}") {
  sourceExtra_ = {
      {"create_slot", "true"},       {"create_publication", "true"},      {"status_interval_ms", "1000"},
      {"slot_busy_retry_ms", "500"}, {"reconnect_backoff_min_ms", "200"}, {"reconnect_backoff_max_ms", "2000"}};
}

RelayConfigBuilder& RelayConfigBuilder::addOutbox(OutboxTableSpec spec) {
  outboxes_.push_back(std::move(spec));
  return *this;
}

RelayConfigBuilder& RelayConfigBuilder::messages(std::string topicTemplate,
                                                 std::vector<std::pair<std::string, std::string>> headers) {
  messagesEnabled_ = true;
  messagesTopic_ = std::move(topicTemplate);
  messagesHeaders_ = std::move(headers);
  return *this;
}

RelayConfigBuilder& RelayConfigBuilder::disableMessages() {
  messagesEnabled_ = false;
  return *this;
}

RelayConfigBuilder& RelayConfigBuilder::omitMessagesSection() {
  messagesSection_ = false;
  return *this;
}

RelayConfigBuilder& RelayConfigBuilder::messagesOption(const std::string& key, const std::string& tomlValue) {
  messagesExtra_.emplace_back(key, tomlValue);
  return *this;
}

RelayConfigBuilder& RelayConfigBuilder::source(const std::string& key, const std::string& tomlValue) {
  for (auto& [k, v] : sourceExtra_) {
    if (k == key) {
      v = tomlValue;
      return *this;
    }
  }
  sourceExtra_.emplace_back(key, tomlValue);
  return *this;
}

RelayConfigBuilder& RelayConfigBuilder::kafkaProperty(const std::string& key, const std::string& value) {
  kafkaProperties_.emplace_back(key, value);
  return *this;
}

RelayConfigBuilder& RelayConfigBuilder::kafkaOption(const std::string& key, const std::string& tomlValue) {
  for (auto& [k, v] : kafkaOptions_) {
    if (k == key) {
      v = tomlValue;
      return *this;
    }
  }
  kafkaOptions_.emplace_back(key, tomlValue);
  return *this;
}

RelayConfigBuilder& RelayConfigBuilder::exactlyOnce() {
  if (progressTopic_.empty()) progressTopic_ = uniqueName("it_progress");
  kafkaOption("delivery", tomlString("exactly_once"));
  return kafkaOption("progress_topic", tomlString(progressTopic_));
}

RelayConfigBuilder& RelayConfigBuilder::limits(uint64_t maxInflightEvents, uint64_t maxInflightBytes) {
  limits_ = std::make_pair(maxInflightEvents, maxInflightBytes);
  return *this;
}

RelayConfigBuilder& RelayConfigBuilder::metricsListen(const std::string& address) {
  metricsListen_ = address;
  return *this;
}

RelayConfigBuilder& RelayConfigBuilder::logLevel(const std::string& level) {
  logLevel_ = level;
  return *this;
}

RelayConfigBuilder& RelayConfigBuilder::publication(const std::string& name) {
  publication_ = name;
  return *this;
}

RelayConfigBuilder& RelayConfigBuilder::conninfo(const std::string& conninfo) {
  conninfo_ = conninfo;
  return *this;
}

RelayConfigBuilder& RelayConfigBuilder::bootstrapServers(const std::string& servers) {
  bootstrapServers_ = servers;
  return *this;
}

RelayConfigBuilder& RelayConfigBuilder::kafkaSecretFile(const std::string& key, const std::string& path) {
  kafkaSecretFiles_.emplace_back(key, path);
  return *this;
}

std::string RelayConfigBuilder::render() const {
  std::ostringstream out;
  out << "# rendered by tests/support/RelayProcess.cpp\n";
  out << "[log]\nlevel = " << tomlString(logLevel_) << "\nformat = \"plain\"\n\n";
  out << "[source]\n";
  out << "conninfo = " << tomlString(conninfo_ ? *conninfo_ : pgUrl()) << "\n";
  out << "slot = " << tomlString(slot_) << "\n";
  out << "publication = " << tomlString(publication_) << "\n";
  for (auto& [k, v] : sourceExtra_) out << k << " = " << v << "\n";
  out << "\n[kafka]\nbootstrap_servers = " << tomlString(bootstrapServers_ ? *bootstrapServers_ : kafkaBootstrap())
      << "\n";
  for (auto& [k, v] : kafkaOptions_) out << k << " = " << v << "\n";
  if (!kafkaProperties_.empty()) {
    out << "[kafka.properties]\n";
    for (auto& [k, v] : kafkaProperties_) out << tomlString(k) << " = " << tomlString(v) << "\n";
  }
  if (!kafkaSecretFiles_.empty()) {
    out << "[kafka.secret_files]\n";
    for (auto& [k, v] : kafkaSecretFiles_) out << tomlString(k) << " = " << tomlString(v) << "\n";
  }
  for (auto& o : outboxes_) {
    out << "\n[[outbox]]\n";
    out << "table = " << tomlString(o.table) << "\n";
    out << "topic = " << tomlString(o.topic) << "\n";
    for (auto& [k, v] : o.columns) out << k << " = " << tomlString(v) << "\n";
    if (!o.headers.empty()) {
      out << "[outbox.headers]\n";
      for (auto& [k, v] : o.headers) out << tomlString(k) << " = " << tomlString(v) << "\n";
    }
  }
  if (messagesSection_) {
    bool enabled = messagesEnabled_ ? *messagesEnabled_ : serverSendsMessages(conninfo_ ? *conninfo_ : pgUrl());
    out << "\n[messages]\nenabled = " << (enabled ? "true" : "false") << "\n";
    out << "prefix = " << tomlString(messagePrefix_) << "\n";
    out << "topic = " << tomlString(messagesTopic_) << "\n";
    for (auto& [k, v] : messagesExtra_) out << k << " = " << v << "\n";
    if (!messagesHeaders_.empty()) {
      out << "[messages.headers]\n";
      for (auto& [k, v] : messagesHeaders_) out << tomlString(k) << " = " << tomlString(v) << "\n";
    }
  }
  if (limits_) {
    out << "\n[limits]\nmax_inflight_events = " << limits_->first << "\nmax_inflight_bytes = " << limits_->second
        << "\n";
  }
  out << "\n[metrics]\n";
  if (metricsListen_) {
    out << "enabled = true\nlisten = " << tomlString(*metricsListen_) << "\n";
  } else {
    out << "enabled = false\n";
  }
  return out.str();
}

// ---------------------------------------------------------------------------------------------------------------
// Processes

std::string ExitStatus::toString() const {
  if (exited) return "exit code " + std::to_string(code);
  return std::string("killed by signal ") + std::to_string(signal) + " (" + strsignal(signal) + ")";
}

std::string binPath(const std::string& name) { return std::string(OUTBOX_BIN_DIR) + "/" + name; }
std::string sourcePath(const std::string& relative) { return std::string(OUTBOX_SOURCE_DIR) + "/" + relative; }

std::string readSourceFile(const std::string& relative) {
  std::string path = sourcePath(relative);
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

namespace {
std::string makeTempDir() {
  std::string pattern = "/tmp/outbox-it-XXXXXX";
  if (!mkdtemp(pattern.data())) throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
  return pattern;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

bool testFailed() { return ::testing::Test::HasFailure(); }

// OUTBOX_TEST_KEEP_LOGS=1 keeps every child's log and config, also of instances that ended before a failure (a
// chaos test restarts each process ten times; the failure is often explained by an earlier instance's log).
namespace {
bool keepLogs() {
  const char* v = std::getenv("OUTBOX_TEST_KEEP_LOGS");
  return v != nullptr && std::string_view(v) == "1";
}
}  // namespace
}  // namespace

std::string writeTempFile(const std::string& name, const std::string& content) {
  std::string path = makeTempDir() + "/" + name;
  std::ofstream out(path, std::ios::binary);
  out << content;
  if (!out) throw std::runtime_error("cannot write " + path);
  return path;
}

ChildProcess::ChildProcess(std::vector<std::string> argv, std::string label) : label_(std::move(label)), argv_(argv) {
  if (argv.empty()) throw std::invalid_argument("ChildProcess: empty argv");
  dir_ = makeTempDir();
  logPath_ = dir_ + "/" + label_ + ".log";
  int logFd = ::open(logPath_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (logFd < 0) throw std::runtime_error("cannot open " + logPath_ + ": " + std::strerror(errno));
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    ::close(logFd);
    throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec. Die with the test process, so no relay outlives a crash.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(126);
    int devNull = ::open("/dev/null", O_RDONLY);
    if (devNull >= 0) dup2(devNull, 0);
    dup2(logFd, 1);
    dup2(logFd, 2);
    execv(args[0], args.data());
    const char msg[] = "exec failed\n";
    (void)!::write(2, msg, sizeof msg - 1);
    _exit(127);
  }
  ::close(logFd);
  pid_ = pid;
}

ChildProcess::~ChildProcess() {
  if (!exit_) {
    ::kill(pid_, SIGKILL);
    reap(true);
  }
  if (testFailed()) {
    std::cerr << "----- " << label_ << " (pid " << pid_ << ", " << (exit_ ? exit_->toString() : "running")
              << ") log tail, full log in " << logPath_ << " -----\n"
              << logTail(80) << "----- end of " << label_ << " log -----" << std::endl;
  } else if (!keepLogs()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

void ChildProcess::reap(bool block) {
  if (exit_) return;
  int status = 0;
  struct rusage usage {};
  pid_t r;
  do {
    r = wait4(pid_, &status, block ? 0 : WNOHANG, &usage);
  } while (r < 0 && errno == EINTR);
  if (r != pid_) return;
  ExitStatus st;
  if (WIFEXITED(status)) {
    st.exited = true;
    st.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    st.signal = WTERMSIG(status);
  }
  exit_ = st;
  ruMaxRssKb_ = usage.ru_maxrss;
}

bool ChildProcess::running() {
  reap(false);
  return !exit_.has_value();
}

void ChildProcess::sigterm() {
  if (running()) ::kill(pid_, SIGTERM);
}

void ChildProcess::sigkill() {
  if (running()) ::kill(pid_, SIGKILL);
}

void ChildProcess::sigstop() {
  if (running()) ::kill(pid_, SIGSTOP);
}

void ChildProcess::sigcont() {
  if (running()) ::kill(pid_, SIGCONT);
}

std::optional<ExitStatus> ChildProcess::waitExit(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (!running()) return exit_;
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    peakRssKb();  // keep the high-water mark while it runs
    std::this_thread::sleep_for(20ms);
  }
}

long ChildProcess::peakRssKb() {
  if (running()) {
    std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("VmHWM:", 0) == 0) {
        peakRssKb_ = std::max(peakRssKb_, std::strtol(line.c_str() + 6, nullptr, 10));
        break;
      }
    }
  }
  return peakRssKb_;
}

std::string ChildProcess::log() const { return readFile(logPath_); }

std::string ChildProcess::logTail(size_t lines) const {
  std::string text = log();
  size_t pos = text.size();
  if (pos > 0 && text[pos - 1] == '\n') --pos;
  size_t found = 0;
  while (pos > 0) {
    if (text[pos - 1] == '\n' && ++found == lines) break;
    --pos;
  }
  std::string tail = text.substr(pos);
  if (!tail.empty() && tail.back() != '\n') tail += '\n';
  return tail;
}

RelayProcess::RelayProcess(const std::string& configToml, const std::string& label)
    : ChildProcess(argvFor(writeConfig(configToml)), label), configPath_(argv().at(2)) {}

RelayProcess::~RelayProcess() {
  if (testFailed()) {
    std::cerr << "----- " << label() << " ran with config " << configPath_ << " -----\n";
  } else if (!keepLogs()) {
    std::error_code ec;
    std::filesystem::remove_all(std::filesystem::path(configPath_).parent_path(), ec);
  }
}

std::string RelayProcess::writeConfig(const std::string& configToml) { return writeTempFile("relay.toml", configToml); }

std::vector<std::string> RelayProcess::argvFor(const std::string& configPath) {
  return {binPath("outbox-relay"), "--config", configPath};
}

CommandResult runCommand(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  std::string label = std::filesystem::path(argv.at(0)).filename().string();
  ChildProcess child(argv, label.empty() ? "command" : label);
  auto status = child.waitExit(timeout);
  if (!status) {
    child.sigkill();
    status = child.waitExit(30s);
    if (!status) throw std::runtime_error("command did not die: " + argv.at(0));
  }
  return {*status, child.log()};
}

void devstack(const std::string& command) {
  requireEnv("DEVSTACK_STATE");  // the stack the tests run against, not a developer's default one
  auto result = runCommand({"/usr/bin/env", "bash", sourcePath("scripts/devstack"), command}, 300s);
  if (!result.status.success()) {
    throw std::runtime_error("scripts/devstack " + command + " failed (" + result.status.toString() +
                             "): " + result.output);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// PostgreSQL

namespace {
std::string quoteLiteral(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}
}  // namespace

std::string createOutboxTable(PgConnection& pg, const std::string& prefix, const std::string& payloadType) {
  std::string name = uniqueName(prefix);
  pg.exec("CREATE TABLE public." + name +
          " ("
          "id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
          "aggregatetype varchar(255) NOT NULL, "
          "aggregateid varchar(255) NOT NULL, "
          "type varchar(255) NOT NULL, "
          "payload " +
          payloadType +
          ", "
          "created_at timestamptz NOT NULL DEFAULT now())");
  return name;
}

std::optional<Lsn> confirmedFlushLsn(PgConnection& pg, const std::string& slot) {
  auto text = pg.scalar("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = " + quoteLiteral(slot));
  if (!text) return std::nullopt;
  return Lsn::parse(*text);
}

namespace {
Lsn lsnOf(PgConnection& pg, const std::string& sql) {
  auto text = pg.scalar(sql);
  auto lsn = text ? Lsn::parse(*text) : std::nullopt;
  if (!lsn) throw std::runtime_error("not an LSN from " + sql);
  return *lsn;
}
}  // namespace

Lsn currentWalLsn(PgConnection& pg) { return lsnOf(pg, "SELECT pg_current_wal_lsn()"); }
Lsn currentWalInsertLsn(PgConnection& pg) { return lsnOf(pg, "SELECT pg_current_wal_insert_lsn()"); }

bool slotExists(PgConnection& pg, const std::string& slot) {
  return pg.scalar("SELECT 1 FROM pg_replication_slots WHERE slot_name = " + quoteLiteral(slot)).has_value();
}

std::optional<int> slotActivePid(PgConnection& pg, const std::string& slot) {
  auto pid =
      pg.scalar("SELECT active_pid FROM pg_replication_slots WHERE active AND slot_name = " + quoteLiteral(slot));
  if (!pid) return std::nullopt;
  return std::stoi(*pid);
}

bool publicationExists(PgConnection& pg, const std::string& publication) {
  return pg.scalar("SELECT 1 FROM pg_publication WHERE pubname = " + quoteLiteral(publication)).has_value();
}

bool waitForSlotStreaming(PgConnection& pg, const std::string& slot, std::chrono::milliseconds timeout) {
  return waitFor(
      [&] {
        return pg
            .scalar(
                "SELECT 1 FROM pg_replication_slots WHERE active AND confirmed_flush_lsn IS NOT NULL AND "
                "slot_name = " +
                quoteLiteral(slot))
            .has_value();
      },
      timeout, 100ms);
}

int64_t pendingInsertsInSlot(PgConnection& pg, const std::string& slot, const std::string& publication) {
  // pgoutput protocol: an Insert message starts with the byte 'I' (73).
  auto count = pg.scalar("SELECT count(*) FROM pg_logical_slot_peek_binary_changes(" + quoteLiteral(slot) +
                         ", NULL, NULL, 'proto_version', '1', 'publication_names', " + quoteLiteral(publication) +
                         ") WHERE get_byte(data, 0) = 73");
  return count ? std::stoll(*count) : 0;
}

ReplicationCleanup::ReplicationCleanup(std::string slot, std::string publication, std::vector<std::string> tables)
    : slot_(std::move(slot)), publication_(std::move(publication)), tables_(std::move(tables)) {}

ReplicationCleanup::~ReplicationCleanup() {
  try {
    PgConnection pg(pgUrl());
    if (slotExists(pg, slot_)) {
      // A walsender lets go of the slot soon after its relay died; one that lingers is ended.
      if (!waitFor([&] { return !slotActivePid(pg, slot_).has_value(); }, 30s, 200ms)) {
        pg.exec("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE active AND slot_name = " +
                quoteLiteral(slot_));
        waitFor([&] { return !slotActivePid(pg, slot_).has_value(); }, 30s, 200ms);
      }
      pg.exec("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = " +
              quoteLiteral(slot_));
    }
    pg.exec("DROP PUBLICATION IF EXISTS " + publication_);
    for (auto& t : tables_) pg.exec("DROP TABLE IF EXISTS " + t + " CASCADE");
    for (auto& schema : schemas_) pg.exec("DROP SCHEMA IF EXISTS " + schema + " CASCADE");
  } catch (const std::exception& e) {
    ADD_FAILURE() << "cleanup of slot " << slot_ << " failed: " << e.what();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Kafka

namespace {
rd_kafka_conf_t* kafkaConf(const std::string& bootstrap,
                           const std::vector<std::pair<std::string, std::string>>& extra) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char err[512];
  auto set = [&](const std::string& k, const std::string& v) {
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      throw std::runtime_error("kafka config " + k + ": " + err);
    }
  };
  set("bootstrap.servers", bootstrap);
  for (auto& [k, v] : extra) set(k, v);
  return conf;
}

// Partition ids of `topic`, empty when it does not exist (yet).
std::vector<int32_t> partitionsOf(rd_kafka_t* rk, const std::string& topic) {
  const rd_kafka_metadata_t* md = nullptr;
  auto rc = rd_kafka_metadata(rk, 1, nullptr, &md, 10000);
  if (rc) throw std::runtime_error(std::string("kafka metadata: ") + rd_kafka_err2str(rc));
  std::vector<int32_t> out;
  for (int i = 0; i < md->topic_cnt; ++i) {
    if (topic == md->topics[i].topic && md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      for (int p = 0; p < md->topics[i].partition_cnt; ++p) out.push_back(md->topics[i].partitions[p].id);
    }
  }
  rd_kafka_metadata_destroy(md);
  std::sort(out.begin(), out.end());
  return out;
}

// A partition's watermarks. A partition whose leader is moving or not yet elected (right after the topic was
// created, or after a broker restart) answers NOT_LEADER / LEADER_NOT_AVAILABLE for a moment: waited out, up to
// 60 s, like any transient broker error; anything else, or a wait past the bound, throws.
std::pair<int64_t, int64_t> watermarks(rd_kafka_t* rk, const std::string& topic, int32_t partition) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (true) {
    int64_t low = 0, high = 0;
    auto rc = rd_kafka_query_watermark_offsets(rk, topic.c_str(), partition, &low, &high, 10000);
    if (rc == RD_KAFKA_RESP_ERR_NO_ERROR) return {low, high};
    bool transient = rc == RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION || rc == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
                     rc == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || rc == RD_KAFKA_RESP_ERR__TRANSPORT ||
                     rc == RD_KAFKA_RESP_ERR__TIMED_OUT || rc == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN;
    if (!transient || std::chrono::steady_clock::now() >= deadline) {
      throw std::runtime_error("watermarks of " + topic + ": " + rd_kafka_err2str(rc));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

}  // namespace

KafkaOffsets::KafkaOffsets(const std::string& bootstrap) {
  char err[512];
  rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, kafkaConf(bootstrap, {{"allow.auto.create.topics", "false"}}), err, sizeof err);
  if (!rk_) throw std::runtime_error(std::string("kafka client: ") + err);
}

KafkaOffsets::~KafkaOffsets() { rd_kafka_destroy(rk_); }

int KafkaOffsets::partitionCount(const std::string& topic) { return static_cast<int>(partitionsOf(rk_, topic).size()); }

int64_t KafkaOffsets::recordCount(const std::string& topic) {
  int64_t total = 0;
  for (int32_t p : partitionsOf(rk_, topic)) {
    total += watermarks(rk_, topic, p).second;
  }
  return total;
}

void createTopic(const std::string& topic, int partitions,
                 const std::vector<std::pair<std::string, std::string>>& configs) {
  char err[512];
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, kafkaConf(kafkaBootstrap(), {}), err, sizeof err);
  if (rk == nullptr) throw std::runtime_error(err);
  rd_kafka_NewTopic_t* newTopic = rd_kafka_NewTopic_new(topic.c_str(), partitions, 1, err, sizeof err);
  for (auto& [name, value] : configs) rd_kafka_NewTopic_set_config(newTopic, name.c_str(), value.c_str());
  rd_kafka_queue_t* queue = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, &newTopic, 1, nullptr, queue);
  rd_kafka_event_t* event = rd_kafka_queue_poll(queue, 30000);
  std::string problem;
  if (event == nullptr) {
    problem = "no CreateTopics result within 30 s";
  } else {
    const rd_kafka_CreateTopics_result_t* result = rd_kafka_event_CreateTopics_result(event);
    size_t count = 0;
    const rd_kafka_topic_result_t** topics = rd_kafka_CreateTopics_result_topics(result, &count);
    if (rd_kafka_event_error(event)) problem = rd_kafka_event_error_string(event);
    for (size_t i = 0; i < count; ++i) {
      if (rd_kafka_topic_result_error(topics[i])) problem = rd_kafka_topic_result_error_string(topics[i]);
    }
    rd_kafka_event_destroy(event);
  }
  rd_kafka_queue_destroy(queue);
  rd_kafka_NewTopic_destroy(newTopic);
  rd_kafka_destroy(rk);
  if (!problem.empty()) throw std::runtime_error("cannot create topic " + topic + ": " + problem);
}

int64_t scanTopic(const std::string& bootstrap, const std::string& topic,
                  const std::function<void(const ConsumedRecord&)>& onRecord, std::chrono::milliseconds timeout,
                  Isolation isolation) {
  char err[512];
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER,
                                kafkaConf(bootstrap, {{"group.id", uniqueName("test-scan")},
                                                      {"isolation.level", isolation == Isolation::ReadCommitted
                                                                              ? "read_committed"
                                                                              : "read_uncommitted"},
                                                      {"enable.auto.commit", "false"},
                                                      {"enable.partition.eof", "true"},
                                                      {"auto.offset.reset", "earliest"},
                                                      {"allow.auto.create.topics", "false"}}),
                                err, sizeof err);
  if (!rk) throw std::runtime_error(std::string("consumer: ") + err);
  std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)> guard(rk, [](rd_kafka_t* k) {
    rd_kafka_consumer_close(k);
    rd_kafka_destroy(k);
  });
  rd_kafka_poll_set_consumer(rk);

  // Read each partition to the end offset it has now.
  std::map<int32_t, int64_t> ends;
  for (int32_t p : partitionsOf(rk, topic)) {
    auto [low, high] = watermarks(rk, topic, p);
    if (high > low) ends[p] = high;
  }
  if (ends.empty()) return 0;
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(static_cast<int>(ends.size()));
  for (auto& [p, end] : ends)
    rd_kafka_topic_partition_list_add(list, topic.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
  auto rc = rd_kafka_assign(rk, list);
  rd_kafka_topic_partition_list_destroy(list);
  if (rc) throw std::runtime_error(std::string("assign: ") + rd_kafka_err2str(rc));

  int64_t count = 0;
  std::set<int32_t> done;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (done.size() < ends.size()) {
    if (std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error("scanning " + topic + " timed out after " + std::to_string(count) + " records");
    }
    rd_kafka_message_t* msg = rd_kafka_consumer_poll(rk, 500);
    if (!msg) continue;
    std::unique_ptr<rd_kafka_message_t, void (*)(rd_kafka_message_t*)> m(msg, rd_kafka_message_destroy);
    if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      if (msg->offset >= ends[msg->partition]) done.insert(msg->partition);
      continue;
    }
    if (msg->err) throw std::runtime_error(std::string("consume: ") + rd_kafka_message_errstr(msg));
    onRecord(toRecord(msg));
    ++count;
    if (msg->offset + 1 >= ends[msg->partition]) done.insert(msg->partition);
  }
  return count;
}

namespace {
// Whether a read_committed consumer that starts at `offset` of topic[partition] gets the record there: "visible"
// (committed: a scan from the beginning should have had it too), or the first offset it does get instead.
std::string committedAt(const std::string& bootstrap, const std::string& topic, int32_t partition, int64_t offset) {
  char err[512];
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER,
                                kafkaConf(bootstrap, {{"group.id", uniqueName("test-visible")},
                                                      {"isolation.level", "read_committed"},
                                                      {"enable.auto.commit", "false"},
                                                      {"enable.partition.eof", "true"},
                                                      {"allow.auto.create.topics", "false"}}),
                                err, sizeof err);
  if (!rk) return std::string("no consumer: ") + err;
  std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)> guard(rk, [](rd_kafka_t* k) {
    rd_kafka_consumer_close(k);
    rd_kafka_destroy(k);
  });
  rd_kafka_poll_set_consumer(rk);
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(list, topic.c_str(), partition)->offset = offset;
  rd_kafka_assign(rk, list);
  rd_kafka_topic_partition_list_destroy(list);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    rd_kafka_message_t* msg = rd_kafka_consumer_poll(rk, 500);
    if (!msg) continue;
    std::unique_ptr<rd_kafka_message_t, void (*)(rd_kafka_message_t*)> m(msg, rd_kafka_message_destroy);
    if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) return fmt::format("read_committed from there: nothing up to {}", msg->offset);
    if (msg->err) return std::string("read_committed from there: ") + rd_kafka_message_errstr(msg);
    if (msg->offset == offset) return "visible to read_committed from there";
    return fmt::format("read_committed from there skips to {}", msg->offset);
  }
  return "read_committed from there: nothing within 30 s";
}
}  // namespace

std::string locateInLog(const std::string& bootstrap, const std::vector<std::string>& topics,
                        const std::set<std::string>& ids) {
  std::string out;
  std::map<std::string, std::string> where;
  for (const std::string& topic : topics) {
    std::map<int32_t, int64_t> found;
    try {
      scanTopic(
          bootstrap, topic,
          [&](const ConsumedRecord& r) {
            ++found[r.partition];
            auto it = r.headers.find("id");
            if (it != r.headers.end() && ids.count(it->second)) {
              where[it->second] += fmt::format(" {}[{}]@{} ({})", r.topic, r.partition, r.offset,
                                               committedAt(bootstrap, r.topic, r.partition, r.offset));
            }
          },
          std::chrono::minutes(2), Isolation::ReadUncommitted);
      char err[512];
      rd_kafka_t* rk =
          rd_kafka_new(RD_KAFKA_PRODUCER, kafkaConf(bootstrap, {{"allow.auto.create.topics", "false"}}), err, sizeof err);
      if (rk == nullptr) throw std::runtime_error(err);
      std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)> guard(rk, rd_kafka_destroy);
      for (int32_t p : partitionsOf(rk, topic)) {
        auto [low, high] = watermarks(rk, topic, p);
        out += fmt::format("  {}[{}]: watermarks {}..{}, {} record(s) read uncommitted\n", topic, p, low, high,
                           found[p]);
      }
    } catch (const std::exception& e) {
      out += fmt::format("  {}: cannot scan it: {}\n", topic, e.what());
    }
  }
  for (const std::string& id : ids) {
    out += fmt::format("  {}: in the log at:{}\n", id, where.count(id) ? where[id] : " nowhere");
  }
  return out;
}

}  // namespace outbox::test

// ---------------------------------------------------------------------------------------------------------------
// Events

#include <nlohmann/json.hpp>

namespace outbox::test {

EventWriter::EventWriter(std::string table, std::vector<Aggregate> aggregates, int writerId, unsigned seed)
    : pg_(pgUrl()),
      table_(std::move(table)),
      aggregates_(std::move(aggregates)),
      seq_(aggregates_.size(), 0),
      writerId_(writerId),
      state_(seed * 2654435761u + 1) {
  if (aggregates_.empty()) throw std::invalid_argument("EventWriter needs aggregates");
}

std::pair<Lsn, Lsn> EventWriter::writeTransaction(int rows, bool multiRowInsert) {
  std::vector<size_t> picked;
  std::vector<int64_t> seqs;
  std::vector<int64_t> saved = seq_;
  for (int i = 0; i < rows; ++i) {
    state_ = state_ * 1103515245u + 12345u;
    size_t a = (state_ >> 8) % aggregates_.size();
    picked.push_back(a);
    seqs.push_back(++seq_[a]);
  }
  auto valuesOf = [&](int i) {
    const Aggregate& agg = aggregates_[picked[i]];
    // Appended piece by piece: g++ 12 at -O3 reports a false -Wrestrict for `"literal" + std::string&&`.
    std::string values = "(";
    values += quoteLiteral(agg.type);
    values += ", ";
    values += quoteLiteral(agg.id);
    values += ", ";
    values += quoteLiteral(agg.type + ".changed");
    values += ", ";
    values += quoteLiteral(nlohmann::json{{"agg", agg.id}, {"seq", seqs[i]}, {"w", writerId_}}.dump());
    values += "::jsonb)";
    return values;
  };
  std::string insert = "INSERT INTO " + table_ + " (aggregatetype, aggregateid, type, payload) VALUES ";
  std::string sql = "BEGIN;";
  if (multiRowInsert) {
    sql += insert;
    for (int i = 0; i < rows; ++i) {
      if (i > 0) sql += ", ";
      sql += valuesOf(i);
    }
    sql += ";";
  } else {
    for (int i = 0; i < rows; ++i) {
      sql += insert;
      sql += valuesOf(i);
      sql += ";";
    }
  }
  try {
    pg_.exec(sql);
    Lsn before = currentWalInsertLsn(pg_);
    pg_.exec("COMMIT");
    Lsn after = currentWalInsertLsn(pg_);
    written_ += rows;
    return {before, after};
  } catch (...) {
    seq_ = saved;  // nothing of it committed
    try {
      pg_.exec("ROLLBACK");
    } catch (...) {
    }
    throw;
  }
}

BackgroundLoad::BackgroundLoad(std::string table, std::vector<Aggregate> aggregates, int rowsPerTxn,
                               std::chrono::milliseconds pause, unsigned seed)
    : writer_(std::move(table), std::move(aggregates), 0, seed), rowsPerTxn_(rowsPerTxn), pause_(pause) {
  thread_ = std::thread([this] {
    try {
      for (int64_t txn = 0; !stop_.load(); ++txn) {
        auto commit = writer_.writeTransaction(rowsPerTxn_, txn % 2 == 0);
        {
          std::lock_guard<std::mutex> lock(mutex_);
          commits_.push_back(commit);
        }
        written_ += rowsPerTxn_;
        std::this_thread::sleep_for(pause_);
      }
    } catch (...) {
      failure_ = std::current_exception();
    }
  });
}

BackgroundLoad::~BackgroundLoad() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void BackgroundLoad::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (failure_) std::rethrow_exception(failure_);
}

std::vector<std::pair<Lsn, Lsn>> BackgroundLoad::commits() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return commits_;
}

std::vector<Aggregate> makeAggregates(const std::string& prefix, int n, const std::string& type) {
  std::vector<Aggregate> out;
  for (int i = 0; i < n; ++i) {
    out.push_back({type.empty() ? (i % 2 == 0 ? "order" : "customer") : type, prefix + "-" + std::to_string(i)});
  }
  return out;
}

std::map<std::string, OutboxRow> outboxRows(PgConnection& pg, const std::string& table) {
  std::map<std::string, OutboxRow> out;
  for (auto& r : pg.rows("SELECT id, aggregatetype, aggregateid, type, payload IS NULL, payload::text FROM " + table)) {
    OutboxRow row{r[0], r[1], r[2], r[3], std::nullopt};
    if (r[4] != "t") row.payload = r[5];
    out.emplace(row.id, row);
  }
  return out;
}

std::string DeliveryCheck::summary() const {
  std::ostringstream s;
  s << "expected=" << expected << " records=" << records << " delivered=" << delivered << " missing=" << missing
    << " duplicates=" << duplicates << " unexpected=" << unexpected << " wrong=" << wrong
    << " out_of_order_aggregates=" << outOfOrder;
  for (auto& p : problems) s << "\n  " << p;
  return s.str();
}

DeliveryCheck checkDelivery(const std::map<std::string, OutboxRow>& rows, const std::vector<ConsumedRecord>& records,
                            const std::function<std::string(const OutboxRow&)>& topicOf, const std::string& typeHeader,
                            bool checkOrder) {
  DeliveryCheck check;
  check.expected = static_cast<int64_t>(rows.size());
  check.records = static_cast<int64_t>(records.size());
  auto problem = [&](const std::string& p) {
    if (check.problems.size() < 15) check.problems.push_back(p);
  };
  auto show = [](const std::optional<std::string>& v) { return v ? "'" + *v + "'" : std::string("null"); };
  std::set<std::string> seen;
  struct Placed {
    std::string topic;
    int32_t partition;
    int64_t offset;
    int64_t seq;
  };
  std::map<std::string, std::vector<Placed>> byAggregate;
  for (auto& rec : records) {
    auto idHeader = rec.headers.find("id");
    if (idHeader == rec.headers.end()) {
      ++check.unexpected;
      problem("record without an id header at " + rec.topic + "/" + std::to_string(rec.partition) + "@" +
              std::to_string(rec.offset));
      continue;
    }
    auto row = rows.find(idHeader->second);
    if (row == rows.end()) {
      ++check.unexpected;
      problem("record with id " + idHeader->second + " that was never committed, key " + show(rec.key) + " value " +
              show(rec.value));
      continue;
    }
    if (!seen.insert(row->first).second) ++check.duplicates;
    const OutboxRow& r = row->second;
    std::string expectedTopic = topicOf(r);
    bool ok = rec.topic == expectedTopic && rec.key == r.aggregateid && rec.value == r.payload;
    if (!typeHeader.empty()) {
      auto h = rec.headers.find(typeHeader);
      ok = ok && h != rec.headers.end() && h->second == r.type;
    }
    if (!ok) {
      ++check.wrong;
      std::string headers;
      for (auto& [k, v] : rec.headers) headers += k + "=" + v + " ";
      problem("event " + r.id + ": got topic " + rec.topic + " key " + show(rec.key) + " value " + show(rec.value) +
              " headers {" + headers + "}; want topic " + expectedTopic + " key '" + r.aggregateid + "' value " +
              show(r.payload) + (typeHeader.empty() ? "" : " header " + typeHeader + "=" + r.type));
    }
    if (checkOrder && r.payload) {
      int64_t seq = nlohmann::json::parse(*r.payload).at("seq").get<int64_t>();
      byAggregate[r.aggregateid].push_back({rec.topic, rec.partition, rec.offset, seq});
    }
  }
  check.delivered = static_cast<int64_t>(seen.size());
  for (auto& [id, row] : rows) {
    if (!seen.count(id)) {
      ++check.missing;
      problem("event " + id + " (" + row.aggregateid + " " + show(row.payload) + ") never arrived");
    }
  }
  for (auto& [agg, placed] : byAggregate) {
    bool onePlace = std::all_of(placed.begin(), placed.end(), [&](const Placed& p) {
      return p.topic == placed[0].topic && p.partition == placed[0].partition;
    });
    if (!onePlace) {
      ++check.outOfOrder;
      problem("aggregate " + agg + " is spread over several partitions");
      continue;
    }
    std::sort(placed.begin(), placed.end(), [](const Placed& a, const Placed& b) { return a.offset < b.offset; });
    int64_t highest = 0;
    std::set<int64_t> firsts;
    for (auto& p : placed) {
      if (firsts.count(p.seq)) continue;  // a replayed duplicate
      firsts.insert(p.seq);
      if (p.seq < highest) {
        ++check.outOfOrder;
        problem("aggregate " + agg + ": seq " + std::to_string(p.seq) + " at offset " + std::to_string(p.offset) +
                " arrived after seq " + std::to_string(highest));
        break;
      }
      highest = p.seq;
    }
  }
  return check;
}

bool readUntilDelivered(TopicReader& reader, const std::set<std::string>& ids, std::chrono::milliseconds timeout) {
  std::set<std::string> missing = ids;
  size_t processed = 0;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto& records = reader.records();
    for (; processed < records.size(); ++processed) {
      auto h = records[processed].headers.find("id");
      if (h != records[processed].headers.end()) missing.erase(h->second);
    }
    if (missing.empty()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    reader.readUntil(records.size() + 1000000, std::chrono::milliseconds(500));
  }
}

KafkaOutage::~KafkaOutage() {
  try {
    end();
  } catch (const std::exception& e) {
    ADD_FAILURE() << e.what();
  }
}

void KafkaOutage::end() {
  if (!down_) return;
  down_ = false;
  devstack("start-kafka");
}

std::set<std::string> idsOf(const std::map<std::string, OutboxRow>& rows) {
  std::set<std::string> ids;
  for (const auto& [id, row] : rows) ids.insert(id);
  return ids;
}

std::string adminAddressOf(ChildProcess& process) {
  constexpr std::string_view marker = "serving /metrics, /healthz and /readyz on ";
  std::string address;
  waitFor(
      [&] {
        std::string text = process.log();
        size_t at = text.find(marker);
        if (at != std::string::npos) {
          at += marker.size();
          address = text.substr(at, text.find_first_of(" \n", at) - at);
        }
        return !address.empty() || !process.running();
      },
      std::chrono::seconds(60));
  if (address.empty()) throw std::runtime_error(process.label() + " never logged its admin address");
  return address;
}

std::optional<double> scrapeValue(const std::string& address, const std::string& name) {
  CommandResult r = runCommand({"/usr/bin/curl", "-sS", "--max-time", "10", "http://" + address + "/metrics"},
                               std::chrono::seconds(20));
  // Matched as text, not as a pattern: a labelled name is full of regex syntax ({, }, ").
  std::string text = "\n" + r.output;
  size_t at = text.find("\n" + name + " ");
  if (at == std::string::npos) return std::nullopt;
  return std::stod(text.substr(at + name.size() + 2));
}

}  // namespace outbox::test
