#include "support/TestEnv.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <thread>

namespace outbox::test {

std::string requireEnv(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    throw std::runtime_error(std::string(name) +
                             " is not set: integration tests need the dev stack. Run them through scripts/test, or "
                             "`scripts/devstack up && eval \"$(scripts/devstack env)\"` first.");
  }
  return value;
}

std::string pgUrl() { return requireEnv("PGURL"); }
std::string kafkaBootstrap() { return requireEnv("KAFKA_BOOTSTRAP"); }

std::string pgConninfoWith(const std::vector<std::pair<std::string, std::string>>& overrides) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(pgUrl().c_str(), &error);
  if (options == nullptr) {
    std::string why = error ? error : "cannot parse PGURL";
    PQfreemem(error);
    throw std::runtime_error(why);
  }
  // conninfo values: single-quoted, backslash before ' and \ (libpq's rules, not SQL's).
  auto quoted = [](const std::string& value) {
    std::string out = "'";
    for (char c : value) {
      if (c == '\'' || c == '\\') out += '\\';
      out += c;
    }
    return out + "'";
  };
  std::string conninfo;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    bool overridden = false;
    for (const auto& [keyword, value] : overrides) overridden = overridden || keyword == o->keyword;
    if (o->val != nullptr && !overridden) conninfo += std::string(o->keyword) + "=" + quoted(o->val) + " ";
  }
  PQconninfoFree(options);
  for (const auto& [keyword, value] : overrides) conninfo += keyword + "=" + quoted(value) + " ";
  return conninfo;
}

std::string sqlLiteral(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    out += c;
    if (c == '\'') out += '\'';
  }
  return out + "'";
}

std::string uniqueName(const std::string& prefix) {
  static std::atomic<int> counter{0};
  return prefix + "_" + std::to_string(getpid()) + "_" + std::to_string(counter++) + "_" +
         std::to_string(std::chrono::steady_clock::now().time_since_epoch().count() % 1000000);
}

bool waitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
             std::chrono::milliseconds interval) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(interval);
  }
}

PgConnection::PgConnection(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str())) {
  if (PQstatus(conn_) != CONNECTION_OK) {
    std::string message = PQerrorMessage(conn_);
    PQfinish(conn_);
    throw std::runtime_error("cannot connect to PostgreSQL: " + message);
  }
  PQsetNoticeProcessor(
      conn_, [](void*, const char*) {}, nullptr);
}

PgConnection::~PgConnection() { PQfinish(conn_); }

namespace {
struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

Result run(PGconn* conn, const std::string& sql) {
  Result result(PQexec(conn, sql.c_str()));
  auto status = PQresultStatus(result.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    throw std::runtime_error("SQL failed: " + sql.substr(0, 200) + ": " + PQerrorMessage(conn));
  }
  return result;
}
}  // namespace

void PgConnection::exec(const std::string& sql) { run(conn_, sql); }

std::optional<std::string> PgConnection::scalar(const std::string& sql) {
  auto result = run(conn_, sql);
  if (PQntuples(result.get()) == 0 || PQgetisnull(result.get(), 0, 0)) return std::nullopt;
  return std::string(PQgetvalue(result.get(), 0, 0));
}

std::vector<std::vector<std::string>> PgConnection::rows(const std::string& sql) {
  auto result = run(conn_, sql);
  std::vector<std::vector<std::string>> out;
  for (int r = 0; r < PQntuples(result.get()); ++r) {
    std::vector<std::string> row;
    for (int c = 0; c < PQnfields(result.get()); ++c) row.emplace_back(PQgetvalue(result.get(), r, c));
    out.push_back(std::move(row));
  }
  return out;
}

void PgConnection::copyIn(const std::string& copySql, const std::string& data) {
  Result start(PQexec(conn_, copySql.c_str()));
  if (PQresultStatus(start.get()) != PGRES_COPY_IN)
    throw std::runtime_error("COPY failed: " + std::string(PQerrorMessage(conn_)));
  if (PQputCopyData(conn_, data.data(), static_cast<int>(data.size())) != 1 || PQputCopyEnd(conn_, nullptr) != 1) {
    throw std::runtime_error("COPY data failed: " + std::string(PQerrorMessage(conn_)));
  }
  Result end(PQgetResult(conn_));
  if (PQresultStatus(end.get()) != PGRES_COMMAND_OK)
    throw std::runtime_error("COPY failed: " + std::string(PQerrorMessage(conn_)));
  while (PGresult* extra = PQgetResult(conn_)) PQclear(extra);
}

namespace {
rd_kafka_conf_t* makeConf(const std::string& bootstrap,
                          std::initializer_list<std::pair<const char*, std::string>> extra) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char err[512];
  auto set = [&](const char* k, const std::string& v) {
    if (rd_kafka_conf_set(conf, k, v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      throw std::runtime_error(std::string("kafka config ") + k + ": " + err);
    }
  };
  set("bootstrap.servers", bootstrap);
  for (auto& [k, v] : extra) set(k, v);
  return conf;
}
}  // namespace

void produce(const std::string& bootstrap, const std::string& topic, const std::string& key, const std::string& value,
             const std::map<std::string, std::string>& headers) {
  char err[512];
  rd_kafka_t* producer = rd_kafka_new(RD_KAFKA_PRODUCER, makeConf(bootstrap, {{"acks", "all"}}), err, sizeof err);
  if (!producer) throw std::runtime_error(std::string("producer: ") + err);
  rd_kafka_headers_t* hdrs = rd_kafka_headers_new(headers.size());
  for (auto& [k, v] : headers) rd_kafka_header_add(hdrs, k.c_str(), -1, v.data(), v.size());
  auto rc = rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_KEY(key.data(), key.size()),
                              RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
  if (rc) {
    rd_kafka_headers_destroy(hdrs);
    rd_kafka_destroy(producer);
    throw std::runtime_error(std::string("produce: ") + rd_kafka_err2str(rc));
  }
  auto flushed = rd_kafka_flush(producer, 30000);
  rd_kafka_destroy(producer);
  if (flushed) throw std::runtime_error(std::string("flush: ") + rd_kafka_err2str(flushed));
}

ConsumedRecord toRecord(const rd_kafka_message_t* msg) {
  ConsumedRecord rec;
  rec.topic = rd_kafka_topic_name(msg->rkt);
  rec.partition = msg->partition;
  rec.offset = msg->offset;
  rd_kafka_timestamp_type_t type = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
  rec.timestampMs = rd_kafka_message_timestamp(msg, &type);
  rec.createTime = type == RD_KAFKA_TIMESTAMP_CREATE_TIME;
  if (msg->key) rec.key = std::string(static_cast<const char*>(msg->key), msg->key_len);
  if (msg->payload) rec.value = std::string(static_cast<const char*>(msg->payload), msg->len);
  rd_kafka_headers_t* hdrs = nullptr;
  if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    const char* name;
    const void* val;
    size_t size;
    for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i) {
      rec.headers[name] = val ? std::string(static_cast<const char*>(val), size) : std::string();
    }
  }
  return rec;
}

TopicReader::TopicReader(const std::string& bootstrap, const std::vector<std::string>& topicsOrRegex,
                         Isolation isolation) {
  char err[512];
  rd_kafka_conf_t* conf = makeConf(
      bootstrap, {{"group.id", uniqueName("test-reader")},
                  {"auto.offset.reset", "earliest"},
                  {"enable.auto.commit", "false"},
                  {"topic.metadata.refresh.interval.ms", "1000"},
                  {"allow.auto.create.topics", "true"},
                  {"isolation.level", isolation == Isolation::ReadCommitted ? "read_committed" : "read_uncommitted"}});
  consumer_ = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  if (!consumer_) throw std::runtime_error(std::string("consumer: ") + err);
  rd_kafka_poll_set_consumer(consumer_);
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(static_cast<int>(topicsOrRegex.size()));
  for (auto& t : topicsOrRegex) rd_kafka_topic_partition_list_add(list, t.c_str(), RD_KAFKA_PARTITION_UA);
  auto rc = rd_kafka_subscribe(consumer_, list);
  rd_kafka_topic_partition_list_destroy(list);
  if (rc) throw std::runtime_error(std::string("subscribe: ") + rd_kafka_err2str(rc));
}

TopicReader::~TopicReader() {
  rd_kafka_consumer_close(consumer_);
  rd_kafka_destroy(consumer_);
}

bool TopicReader::pollOnce(std::chrono::milliseconds timeout) {
  rd_kafka_message_t* msg = rd_kafka_consumer_poll(consumer_, static_cast<int>(timeout.count()));
  if (!msg) return false;
  bool got = false;
  if (!msg->err && !seen_.emplace(rd_kafka_topic_name(msg->rkt), msg->partition, msg->offset).second) {
    rd_kafka_message_destroy(msg);
    return false;
  }
  if (!msg->err) {
    ConsumedRecord rec = toRecord(msg);
    records_.push_back(std::move(rec));
    got = true;
  }
  rd_kafka_message_destroy(msg);
  return got;
}

const std::vector<ConsumedRecord>& TopicReader::readUntil(size_t count, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (records_.size() < count && std::chrono::steady_clock::now() < deadline)
    pollOnce(std::chrono::milliseconds(200));
  return records_;
}

const std::vector<ConsumedRecord>& TopicReader::readUntilQuiet(std::chrono::milliseconds quiet,
                                                               std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto lastRecord = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() < deadline && std::chrono::steady_clock::now() - lastRecord < quiet) {
    if (pollOnce(std::chrono::milliseconds(200))) lastRecord = std::chrono::steady_clock::now();
  }
  return records_;
}

int freeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("cannot find a free port");
  }
  int port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

}  // namespace outbox::test
