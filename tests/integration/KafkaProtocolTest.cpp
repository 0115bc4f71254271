// What the broker of this stack does with the librdkafka the project builds against (Debian 12's 2.0.2), for the
// parts of the protocol the relay and the sink rely on beyond plain produce/fetch: transactions (commit, abort,
// fencing of a zombie producer by a new one with the same transactional.id) and read_committed fetches.
// Run on every Kafka version of the matrix: Kafka 4.0 removed old protocol versions (KIP-896) and changed the
// transaction protocol (KIP-890, transaction.version 2), so "it worked on 3.9" proves nothing about 4.x.
#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>

#include <set>
#include <string>

#include "support/TestEnv.h"

using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

struct Producer {
  rd_kafka_t* rk = nullptr;
  explicit Producer(const std::string& transactionalId) {
    char err[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    auto set = [&](const char* key, const std::string& value) {
      if (rd_kafka_conf_set(conf, key, value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
        throw std::runtime_error(std::string(key) + ": " + err);
    };
    set("bootstrap.servers", kafkaBootstrap());
    set("transactional.id", transactionalId);
    set("transaction.timeout.ms", "60000");
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) throw std::runtime_error(std::string("producer: ") + err);
  }
  ~Producer() { rd_kafka_destroy(rk); }
  Producer(const Producer&) = delete;
  Producer& operator=(const Producer&) = delete;

  // The error of a transactional call as text ("" on success); the error object is destroyed.
  static std::string check(rd_kafka_error_t* error) {
    if (!error) return "";
    std::string text = std::string(rd_kafka_error_name(error)) + ": " + rd_kafka_error_string(error) +
                       (rd_kafka_error_is_fatal(error) ? " (fatal)" : "");
    rd_kafka_error_destroy(error);
    return text;
  }
  std::string produce(const std::string& topic, const std::string& value) {
    rd_kafka_resp_err_t err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_KEY("k", 1),
                                                RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    return err ? rd_kafka_err2name(err) : "";
  }
};

std::set<std::string> values(const std::vector<ConsumedRecord>& records) {
  std::set<std::string> out;
  for (const auto& r : records) out.insert(r.value.value_or("<null>"));
  return out;
}

}  // namespace

TEST(KafkaProtocol, TransactionsCommitAbortAndFenceAZombieProducer) {
  std::string topic = uniqueName("kafka_txn");
  std::string transactionalId = uniqueName("txn-probe");
  Producer producer(transactionalId);
  ASSERT_EQ(Producer::check(rd_kafka_init_transactions(producer.rk, 60000)), "");

  ASSERT_EQ(Producer::check(rd_kafka_begin_transaction(producer.rk)), "");
  for (int i = 0; i < 3; ++i) ASSERT_EQ(producer.produce(topic, "committed-" + std::to_string(i)), "");
  ASSERT_EQ(Producer::check(rd_kafka_commit_transaction(producer.rk, 60000)), "");

  ASSERT_EQ(Producer::check(rd_kafka_begin_transaction(producer.rk)), "");
  for (int i = 0; i < 3; ++i) ASSERT_EQ(producer.produce(topic, "aborted-" + std::to_string(i)), "");
  ASSERT_EQ(Producer::check(rd_kafka_flush(producer.rk, 60000)
                                ? rd_kafka_error_new(RD_KAFKA_RESP_ERR__TIMED_OUT, "flush timed out")
                                : nullptr),
            "");
  ASSERT_EQ(Producer::check(rd_kafka_abort_transaction(producer.rk, 60000)), "");

  // A second producer with the same transactional.id fences the first: its next transactional call fails fatally
  // (this is what keeps a paused "zombie" relay from committing after its replacement started).
  Producer successor(transactionalId);
  ASSERT_EQ(Producer::check(rd_kafka_init_transactions(successor.rk, 60000)), "");
  std::string fenced;
  if (std::string begun = Producer::check(rd_kafka_begin_transaction(producer.rk)); !begun.empty()) {
    fenced = begun;
  } else {
    producer.produce(topic, "zombie");
    fenced = Producer::check(rd_kafka_commit_transaction(producer.rk, 60000));
  }
  EXPECT_NE(fenced, "") << "the zombie producer committed after being fenced";

  ASSERT_EQ(Producer::check(rd_kafka_begin_transaction(successor.rk)), "");
  ASSERT_EQ(successor.produce(topic, "after"), "");
  ASSERT_EQ(Producer::check(rd_kafka_commit_transaction(successor.rk, 60000)), "");

  // read_committed (TopicReader's isolation, librdkafka's default): the committed records only.
  TopicReader committed(kafkaBootstrap(), {topic});
  committed.readUntil(4, 60s);
  committed.readUntilQuiet(3s, 30s);
  EXPECT_EQ(values(committed.records()), (std::set<std::string>{"committed-0", "committed-1", "committed-2", "after"}));
  EXPECT_EQ(committed.records().size(), 4u);
}
