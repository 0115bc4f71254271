// The foundation every integration test stands on: the dev stack's PostgreSQL is set up for logical
// decoding and its Kafka broker takes and returns records.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "support/TestEnv.h"

using namespace outbox::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// The inode of the socket LISTENing (state 0A) on 127.0.0.1:port: in /proc/net/tcp as "0100007F:PORT" (hex), or
// in /proc/net/tcp6 as the IPv4-mapped "0000000000000000FFFF00000100007F:PORT" (a JVM's sockets are IPv6 ones).
std::string listeningSocketInode(int port) {
  char suffix[32];
  std::snprintf(suffix, sizeof suffix, "0100007F:%04X", port);
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream tcp(table);
    std::string line;
    std::getline(tcp, line);  // header
    while (std::getline(tcp, line)) {
      std::istringstream fields(line);
      std::string slot, localAddr, remote, state, queues, timer, retransmits, uid, timeout, inode;
      fields >> slot >> localAddr >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode;
      if (localAddr.ends_with(suffix) && state == "0A") return inode;
    }
  }
  return "";
}

// What the process `pid` has open: the targets of /proc/<pid>/fd/*.
std::vector<std::string> openFiles(const std::string& pid) {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& fd : fs::directory_iterator("/proc/" + pid + "/fd", ec)) {
    auto target = fs::read_symlink(fd.path(), ec);
    if (!ec) files.push_back(target.string());
  }
  return files;
}

}  // namespace

TEST(DevStack, PostgresIsReadyForLogicalReplication) {
  PgConnection pg(pgUrl());
  EXPECT_EQ(pg.scalar("SHOW wal_level"), "logical");
  EXPECT_GE(std::stoi(*pg.scalar("SHOW max_replication_slots")), 10);
  EXPECT_GE(std::stoi(*pg.scalar("SHOW max_wal_senders")), 10);
  EXPECT_GT(std::stoi(*pg.scalar("SHOW max_prepared_transactions")), 0);
}

// scripts/devstack runs the servers PG_VERSION and KAFKA_VERSION name (scripts/test's version matrix sets them per
// cell): a cell must not pass on the wrong server. PostgreSQL says its version; for Kafka, the process that
// listens on KAFKA_BOOTSTRAP's port must have that version's broker jar open.
TEST(DevStack, ServersAreTheVersionsTheStackNames) {
  const std::string pgVersion = requireEnv("PG_VERSION");
  const std::string kafkaVersion = requireEnv("KAFKA_VERSION");
  PgConnection pg(pgUrl());
  EXPECT_EQ(pg.scalar("SELECT current_setting('server_version_num')::int / 10000"), pgVersion);

  const std::string bootstrap = kafkaBootstrap();
  const int port = std::stoi(bootstrap.substr(bootstrap.rfind(':') + 1));
  const std::string inode = listeningSocketInode(port);
  ASSERT_FALSE(inode.empty()) << "nothing listens on " << bootstrap;
  std::string pid;
  {
    std::ifstream pidFile(requireEnv("DEVSTACK_STATE") + "/kafka/pid");
    pidFile >> pid;
  }
  ASSERT_FALSE(pid.empty()) << "no Kafka pid file in DEVSTACK_STATE";
  const auto files = openFiles(pid);
  EXPECT_NE(std::find(files.begin(), files.end(), "socket:[" + inode + "]"), files.end())
      << "the Kafka broker of the stack (pid " << pid << ") is not the process listening on " << bootstrap;
  const std::string brokerJar = "/kafka_2.13-" + kafkaVersion + ".jar";
  std::vector<std::string> kafkaJars;
  for (const auto& file : files)
    if (file.find("/kafka_2.13-") != std::string::npos) kafkaJars.push_back(file);
  ASSERT_EQ(kafkaJars.size(), 1u) << "the broker should have exactly one kafka_2.13 jar open";
  EXPECT_TRUE(kafkaJars[0].ends_with(brokerJar))
      << "the broker runs " << kafkaJars[0] << ", not Kafka " << kafkaVersion;
}

TEST(DevStack, KafkaRoundTripsARecord) {
  std::string topic = uniqueName("devstack_roundtrip");
  produce(kafkaBootstrap(), topic, "order-1", R"({"total":42})", {{"id", "e-1"}});
  TopicReader reader(kafkaBootstrap(), {topic});
  auto& records = reader.readUntil(1, 60s);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].topic, topic);
  EXPECT_EQ(records[0].key, "order-1");
  EXPECT_EQ(records[0].value, R"({"total":42})");
  EXPECT_EQ(records[0].headers.at("id"), "e-1");
}
