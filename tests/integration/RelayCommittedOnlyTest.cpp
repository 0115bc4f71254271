// Only committed work reaches Kafka: rolled-back transactions and subtransactions, prepared transactions until
// COMMIT PREPARED, and never UPDATE / DELETE / TRUNCATE; every row of a multi-row INSERT or COPY does; and the relay
// keeps going when the outbox table is altered mid-stream.
//
// Nothing here is faulty, so each test expects exactly its events. To show that something is NOT published, a test
// commits a sentinel event after it and reads until the sentinel has arrived and the topic has stayed quiet.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "support/RelayProcess.h"
#include "support/TestEnv.h"

using namespace outbox;
using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

class RelayCommittedOnly : public ::testing::Test {
 protected:
  void SetUp() override {
    pg_ = std::make_unique<PgConnection>(pgUrl());
    table_ = createOutboxTable(*pg_, "co");
    topic_ = uniqueName("t");
    config_.addOutbox({table_, topic_ + ".{aggregatetype}", {}, {{"eventType", "type"}}});
    // Before PostgreSQL 14 pgoutput sends no logical messages, and the relay refuses [messages] enabled there
    // (RelayDelivery.LogicalMessagesNeedPostgres14): the messages the tests emit then stay unpublished.
    serverSendsMessages_ = std::stoi(*pg_->scalar("SHOW server_version_num")) >= 140000;
    if (serverSendsMessages_) config_.messages(topic_ + ".{aggregatetype}", {{"eventType", "type"}});
    cleanup_ =
        std::make_unique<ReplicationCleanup>(config_.slot(), config_.publication(), std::vector<std::string>{table_});
    relay_ = RelayProcess::start(config_.render());
    ASSERT_TRUE(waitForSlotStreaming(*pg_, config_.slot(), 120s)) << "the relay never streamed from its slot";
  }

  void TearDown() override {
    if (relay_) {
      EXPECT_TRUE(relay_->running()) << "the relay died during the test";
    }
    relay_.reset();
    cleanup_.reset();
  }

  // INSERT of one event of aggregate `key` whose payload names it `label`.
  std::string insert(const std::string& key, const std::string& label) {
    return "INSERT INTO " + table_ + " (aggregatetype, aggregateid, type, payload) VALUES ('order', '" + key +
           "', 'T', '{\"label\": \"" + label + "\"}');";
  }
  std::string emit(const std::string& key, const std::string& label) {
    return "SELECT pg_logical_emit_message(true, '" + config_.messagePrefix() + "', '{\"id\": \"" +
           *pg_->scalar("SELECT gen_random_uuid()") + "\", \"aggregatetype\": \"order\", \"aggregateid\": \"" + key +
           "\", \"type\": \"M\", \"payload\": {\"label\": \"" + label + "\"}}');";
  }

  // Commits a sentinel event of aggregate "k" (so it lands in the partition of the tests' other "k" events, after
  // them), reads until it has arrived and nothing more came for a while, and returns the labels of every record so
  // far in arrival order (the sentinel's included, as "sentinel-N").
  std::vector<std::string> labelsThroughSentinel() {
    std::string sentinel = "sentinel-" + std::to_string(sentinels_++);
    pg_->exec(insert("k", sentinel));
    if (!reader_)
      reader_ = std::make_unique<TopicReader>(kafkaBootstrap(), std::vector<std::string>{topic_ + ".order"});
    bool arrived = waitFor(
        [&] {
          reader_->readUntil(reader_->records().size() + 1, 500ms);
          for (auto& l : labels()) {
            if (l == sentinel) return true;
          }
          return false;
        },
        3min, 1ms);
    EXPECT_TRUE(arrived) << "the sentinel event " << sentinel << " never arrived";
    reader_->readUntilQuiet(3s, 30s);
    return labels();
  }

  // `labels` without the labels of logical messages (`messageLabels`) on a server before PostgreSQL 14, where
  // no message is published.
  std::vector<std::string> expected(std::vector<std::string> labels, const std::set<std::string>& messageLabels) {
    if (serverSendsMessages_) return labels;
    std::erase_if(labels, [&](const std::string& l) { return messageLabels.count(l) > 0; });
    return labels;
  }

  std::vector<std::string> labels() {
    std::vector<std::string> out;
    for (auto& r : reader_->records()) {
      if (!r.value) {
        out.push_back("<null>");
        continue;
      }
      auto j = nlohmann::json::parse(*r.value, nullptr, false);
      out.push_back(j.is_object() && j.contains("label") ? j["label"].get<std::string>() : "<" + *r.value + ">");
    }
    return out;
  }

  std::unique_ptr<PgConnection> pg_;
  std::string table_;
  std::string topic_;
  RelayConfigBuilder config_;
  std::unique_ptr<ReplicationCleanup> cleanup_;
  std::unique_ptr<RelayProcess> relay_;
  std::unique_ptr<TopicReader> reader_;
  int sentinels_ = 0;
  bool serverSendsMessages_ = true;
};

using Labels = std::vector<std::string>;

TEST_F(RelayCommittedOnly, RolledBackTransactionPublishesNothing) {
  pg_->exec("BEGIN;" + insert("k", "rolled-back-row") + insert("k", "rolled-back-row-2") + "ROLLBACK;");
  pg_->exec("BEGIN;" + emit("k", "rolled-back-message") + "ROLLBACK;");
  pg_->exec("BEGIN;" + insert("k", "committed") + emit("k", "committed-message") + "COMMIT;");
  // A transaction ended by an error is rolled back too.
  pg_->exec("BEGIN;" + insert("k", "failed-row"));
  EXPECT_THROW(pg_->exec("SELECT 1/0"), std::runtime_error);
  pg_->exec("ROLLBACK");
  EXPECT_EQ(labelsThroughSentinel(), expected({"committed", "committed-message", "sentinel-0"}, {"committed-message"}));
}

TEST_F(RelayCommittedOnly, SubtransactionRolledBackToASavepointPublishesNothing) {
  pg_->exec("BEGIN;" + insert("k", "a1") + "SAVEPOINT s1;" + insert("k", "gone-1") + emit("k", "gone-message") +
            "SAVEPOINT s1b;" + insert("k", "gone-nested") + "ROLLBACK TO SAVEPOINT s1;" + insert("k", "a2") +
            "SAVEPOINT s2;" + insert("k", "a3") + emit("k", "a4") + "RELEASE SAVEPOINT s2;");
  // A subtransaction ended by an error, rolled back to its savepoint.
  pg_->exec("SAVEPOINT s3;" + insert("k", "gone-failed"));
  EXPECT_THROW(pg_->exec("SELECT 1/0"), std::runtime_error);
  pg_->exec("ROLLBACK TO SAVEPOINT s3;" + insert("k", "a5") + "COMMIT;");
  EXPECT_EQ(labelsThroughSentinel(), expected({"a1", "a2", "a3", "a4", "a5", "sentinel-0"}, {"a4"}));
}

TEST_F(RelayCommittedOnly, PreparedTransactionPublishesOnlyAtCommitPrepared) {
  std::string gid = uniqueName("gid"), gidAborted = uniqueName("gid");
  pg_->exec("BEGIN;" + insert("k", "prepared") + "PREPARE TRANSACTION '" + gid + "';");
  pg_->exec("BEGIN;" + insert("k", "prepared-then-rolled-back") + emit("k", "prepared-message-rolled-back") +
            "PREPARE TRANSACTION '" + gidAborted + "';");
  EXPECT_EQ(labelsThroughSentinel(), (Labels{"sentinel-0"}))
      << "a prepared transaction was published before COMMIT PREPARED";

  pg_->exec("COMMIT PREPARED '" + gid + "'");
  pg_->exec("ROLLBACK PREPARED '" + gidAborted + "'");
  EXPECT_EQ(labelsThroughSentinel(), (Labels{"sentinel-0", "prepared", "sentinel-1"}));
}

TEST_F(RelayCommittedOnly, MultiRowInsertAndCopyPublishEveryRow) {
  std::string values;
  for (int i = 1; i <= 100; ++i) {
    values += std::string(i > 1 ? ", " : "") + "('order', 'multi', 'T', '{\"label\": \"m" + std::to_string(i) + "\"}')";
  }
  pg_->exec("INSERT INTO " + table_ + " (aggregatetype, aggregateid, type, payload) VALUES " + values);
  std::string data;
  for (int i = 1; i <= 300; ++i) data += "order\tcopy\tT\t{\"label\": \"c" + std::to_string(i) + "\"}\n";
  pg_->exec("BEGIN");
  pg_->copyIn("COPY " + table_ + " (aggregatetype, aggregateid, type, payload) FROM STDIN", data);
  pg_->exec("COMMIT");

  Labels expected;
  for (int i = 1; i <= 100; ++i) expected.push_back("m" + std::to_string(i));
  for (int i = 1; i <= 300; ++i) expected.push_back("c" + std::to_string(i));
  expected.push_back("sentinel-0");
  Labels got = labelsThroughSentinel();
  // Three keys may sit in different partitions: compare each key's events in order.
  auto only = [](const Labels& all, char first) {
    Labels out;
    for (auto& l : all) {
      if (l[0] == first) out.push_back(l);
    }
    return out;
  };
  EXPECT_EQ(got.size(), expected.size());
  EXPECT_EQ(only(got, 'm'), only(expected, 'm'));
  EXPECT_EQ(only(got, 'c'), only(expected, 'c'));
  auto check = checkDelivery(
      outboxRows(*pg_, table_), reader_->records(), [&](const OutboxRow& r) { return topic_ + "." + r.aggregatetype; },
      "eventType");
  EXPECT_EQ(check.missing + check.unexpected + check.wrong + check.duplicates, 0) << check.summary();
}

TEST_F(RelayCommittedOnly, UpdateDeleteAndTruncatePublishNothing) {
  pg_->exec("BEGIN;" + insert("k", "e1") + insert("k", "e2") + insert("k", "e3") + "COMMIT;");
  pg_->exec("UPDATE " + table_ + " SET payload = '{\"label\": \"updated\"}', type = 'U'");
  pg_->exec("DELETE FROM " + table_ + " WHERE id = (SELECT id FROM " + table_ + " LIMIT 1)");
  pg_->exec("DELETE FROM " + table_);
  // The usual outbox clean-up: insert and delete in one transaction; the insert is still published.
  pg_->exec("BEGIN;" + insert("k", "inserted-then-deleted") + "DELETE FROM " + table_ + ";COMMIT;");
  pg_->exec("BEGIN;" + insert("k", "before-truncate") + "COMMIT;");
  pg_->exec("TRUNCATE " + table_);
  pg_->exec("BEGIN;" + insert("k", "truncated-in-txn") + "TRUNCATE " + table_ + ";COMMIT;");
  EXPECT_EQ(labelsThroughSentinel(),
            (Labels{"e1", "e2", "e3", "inserted-then-deleted", "before-truncate", "truncated-in-txn", "sentinel-0"}));
}

TEST_F(RelayCommittedOnly, AlterTableMidStreamKeepsWorking) {
  pg_->exec(insert("k", "before"));
  pg_->exec("ALTER TABLE " + table_ + " ADD COLUMN note text");
  pg_->exec(
      "INSERT INTO " + table_ +
      " (aggregatetype, aggregateid, type, payload, note) VALUES ('order', 'k', 'T', '{\"label\": \"with-note\"}', "
      "'n')");
  // Schema change and inserts in one transaction: the relation changes under the decoder mid-transaction.
  pg_->exec("BEGIN;" + insert("k", "in-txn-1") + "ALTER TABLE " + table_ + " ADD COLUMN extra int NOT NULL DEFAULT 7;" +
            insert("k", "in-txn-2") + "COMMIT;");
  pg_->exec("ALTER TABLE " + table_ + " DROP COLUMN created_at");
  pg_->exec(insert("k", "after-drop-created-at"));
  pg_->exec("BEGIN;ALTER TABLE " + table_ + " DROP COLUMN note;" + insert("k", "after-drop-note") + "COMMIT;");
  pg_->exec("ALTER TABLE " + table_ + " ADD COLUMN extra_doc jsonb DEFAULT '{}'");
  pg_->exec(insert("k", "after-add-extra-doc"));
  EXPECT_EQ(labelsThroughSentinel(), (Labels{"before", "with-note", "in-txn-1", "in-txn-2", "after-drop-created-at",
                                             "after-drop-note", "after-add-extra-doc", "sentinel-0"}));
  auto check = checkDelivery(
      outboxRows(*pg_, table_), reader_->records(), [&](const OutboxRow& r) { return topic_ + "." + r.aggregatetype; },
      "eventType");
  EXPECT_EQ(check.missing + check.unexpected + check.wrong + check.duplicates, 0) << check.summary();
}

}  // namespace
