#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "common/KafkaHealth.h"

using ::testing::HasSubstr;

namespace outbox {
namespace {

std::optional<bool> brokerUp(const std::string& json) { return kafkaStatsShowBrokerUp(json.data(), json.size()); }

TEST(KafkaHealth, StatisticsShowABrokerUpOnlyForARealBrokerInStateUp) {
  EXPECT_EQ(brokerUp(R"({"brokers":{"b:9092/1":{"nodeid":1,"state":"UP"}}})"), true);
  // The bootstrap placeholder says nothing about the cluster.
  EXPECT_EQ(brokerUp(R"({"brokers":{"sasl_ssl://b:9093/bootstrap":{"nodeid":-1,"state":"UP"}}})"), false);
  EXPECT_EQ(brokerUp(R"({"brokers":{"b:9092/1":{"nodeid":1,"state":"AUTH_REQ"},"c/2":{"nodeid":2,"state":"UP"}}})"),
            true);
  EXPECT_EQ(brokerUp(R"({"brokers":{}})"), false);
  EXPECT_EQ(brokerUp(R"({"brokers":{"b":{"nodeid":"1","state":"UP"},"c":[],"d":{"nodeid":3,"state":7}}})"), false);
  EXPECT_EQ(brokerUp("not json"), std::nullopt);
  EXPECT_EQ(brokerUp(R"({"name":"rdkafka#consumer-1"})"), std::nullopt);
  EXPECT_EQ(brokerUp(R"([1,2])"), std::nullopt);
}

TEST(KafkaHealth, ConnectivityErrorsAreAuthenticationTlsAndAllBrokersDown) {
  EXPECT_TRUE(isKafkaConnectivityError(RD_KAFKA_RESP_ERR__AUTHENTICATION));
  EXPECT_TRUE(isKafkaConnectivityError(RD_KAFKA_RESP_ERR__SSL));
  EXPECT_TRUE(isKafkaConnectivityError(RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN));
  // One broker connection: an idle one closed, one broker of several away.
  EXPECT_FALSE(isKafkaConnectivityError(RD_KAFKA_RESP_ERR__TRANSPORT));
  EXPECT_FALSE(isKafkaConnectivityError(RD_KAFKA_RESP_ERR__FATAL));
  EXPECT_FALSE(isKafkaConnectivityError(RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED));
}

TEST(KafkaHealth, TheScramHintIsForAnAuthenticationFailureWithScramBeforeLibrdkafka261) {
  // 0xMMmmrrpp: 2.0.2 released is 0x020002ff.
  std::optional<std::string> hint =
      scramDefectHint(RD_KAFKA_RESP_ERR__AUTHENTICATION, "SCRAM-SHA-512", 0x020002ff, "2.0.2");
  ASSERT_TRUE(hint);
  EXPECT_THAT(*hint, HasSubstr("the password may be right: librdkafka 2.0.2 cannot authenticate with SCRAM to Kafka "
                               "4.x brokers"));
  EXPECT_THAT(*hint, HasSubstr("fixed in 2.6.1"));
  EXPECT_THAT(*hint, HasSubstr("PLAIN over SASL_SSL, mutual TLS, or a build with a librdkafka >= 2.6.1"));
  EXPECT_TRUE(scramDefectHint(RD_KAFKA_RESP_ERR__AUTHENTICATION, "scram-sha-256", 0x020600ff, "2.6.0"));
  // Fixed from 2.6.1 on, its pre-releases included.
  EXPECT_FALSE(scramDefectHint(RD_KAFKA_RESP_ERR__AUTHENTICATION, "SCRAM-SHA-512", 0x020601ff, "2.6.1"));
  EXPECT_FALSE(scramDefectHint(RD_KAFKA_RESP_ERR__AUTHENTICATION, "SCRAM-SHA-512", 0x02060101, "2.6.1-RC1"));
  EXPECT_FALSE(scramDefectHint(RD_KAFKA_RESP_ERR__AUTHENTICATION, "SCRAM-SHA-512", 0x030000ff, "3.0.0"));
  // Other mechanisms and other errors have no such defect.
  EXPECT_FALSE(scramDefectHint(RD_KAFKA_RESP_ERR__AUTHENTICATION, "PLAIN", 0x020002ff, "2.0.2"));
  EXPECT_FALSE(scramDefectHint(RD_KAFKA_RESP_ERR__AUTHENTICATION, "GSSAPI", 0x020002ff, "2.0.2"));
  EXPECT_FALSE(scramDefectHint(RD_KAFKA_RESP_ERR__AUTHENTICATION, "", 0x020002ff, "2.0.2"));
  EXPECT_FALSE(scramDefectHint(RD_KAFKA_RESP_ERR__TRANSPORT, "SCRAM-SHA-512", 0x020002ff, "2.0.2"));
}

}  // namespace
}  // namespace outbox
