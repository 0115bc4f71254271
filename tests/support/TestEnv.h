#pragma once
// Helpers for integration tests against the real PostgreSQL and Kafka of scripts/devstack.
// A missing PGURL / KAFKA_BOOTSTRAP is a test failure, never a skip.

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

namespace outbox::test {

// The value of an environment variable the integration tests need; throws (failing the test) when unset.
std::string requireEnv(const char* name);
std::string pgUrl();
std::string kafkaBootstrap();
// PGURL as a key=value conninfo in which `overrides` replace (or add) keywords, e.g. {{"dbname", "x"}, {"user", "u"}}.
std::string pgConninfoWith(const std::vector<std::pair<std::string, std::string>>& overrides);
// `text` as an SQL string literal ('...', quotes doubled).
std::string sqlLiteral(const std::string& text);
// A name unique to this process and call, for topics, slots, tables.
std::string uniqueName(const std::string& prefix);
// A TCP port on 127.0.0.1 that was free a moment ago (for a server a test starts).
int freeLoopbackPort();

// Polls `condition` until it holds or `timeout` passes; returns whether it held.
bool waitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
             std::chrono::milliseconds interval = std::chrono::milliseconds(100));

// A plain (non-replication) libpq connection; every failure throws with the server's message.
class PgConnection {
 public:
  explicit PgConnection(const std::string& conninfo);
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  void exec(const std::string& sql);
  // First column of the first row, or nullopt when there is no row or it is NULL.
  std::optional<std::string> scalar(const std::string& sql);
  std::vector<std::vector<std::string>> rows(const std::string& sql);
  // COPY ... FROM STDIN with the given text-format data.
  void copyIn(const std::string& copySql, const std::string& data);
  PGconn* raw() { return conn_; }

 private:
  PGconn* conn_ = nullptr;
};

struct ConsumedRecord {
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;
  std::optional<std::string> key;
  std::optional<std::string> value;
  std::map<std::string, std::string> headers;
  int64_t timestampMs = -1;  // the record's timestamp (-1: none)
  bool createTime = false;   // it is a CreateTime (set by the producer), not a LogAppendTime
};

// A consumed Kafka message as a ConsumedRecord (copies key, value and headers).
ConsumedRecord toRecord(const rd_kafka_message_t* msg);

// Produces plain records (no idempotence), for tests that need something in a topic.
void produce(const std::string& bootstrap, const std::string& topic, const std::string& key, const std::string& value,
             const std::map<std::string, std::string>& headers = {});

// A consumer's isolation.level. librdkafka's default is read_committed: records of open or aborted Kafka
// transactions are never handed out. read_uncommitted hands out everything written to the log, aborted records too.
enum class Isolation { ReadCommitted, ReadUncommitted };

// Reads topics from the beginning with a fresh consumer group.
class TopicReader {
 public:
  TopicReader(const std::string& bootstrap, const std::vector<std::string>& topicsOrRegex,
              Isolation isolation = Isolation::ReadCommitted);
  ~TopicReader();
  TopicReader(const TopicReader&) = delete;
  TopicReader& operator=(const TopicReader&) = delete;

  // Reads until `count` records arrived in total (since construction) or `timeout` passed.
  const std::vector<ConsumedRecord>& readUntil(size_t count, std::chrono::milliseconds timeout);
  // Reads for `quiet` after the last record; for asserting that nothing more arrives.
  const std::vector<ConsumedRecord>& readUntilQuiet(std::chrono::milliseconds quiet, std::chrono::milliseconds timeout);
  const std::vector<ConsumedRecord>& records() const { return records_; }

 private:
  bool pollOnce(std::chrono::milliseconds timeout);
  rd_kafka_t* consumer_ = nullptr;
  std::vector<ConsumedRecord> records_;
  // Positions already read. A topic created after subscribing makes the group rebalance, and without committed
  // offsets the reader starts its partitions again from the beginning: the same record (same position) comes
  // twice. Those are dropped here; a duplicate the relay published sits at another offset and is kept.
  std::set<std::tuple<std::string, int32_t, int64_t>> seen_;
};

}  // namespace outbox::test
