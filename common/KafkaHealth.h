#pragma once
// What librdkafka tells both binaries about their connection to Kafka, read the same way:
//   - kafkaStatsShowBrokerUp(): whether a broker connection is up, from the statistics JSON (stats_cb);
//   - isKafkaConnectivityError(): an error_cb error meaning Kafka refuses the client or none of its brokers is up;
//   - logScramDefectHintOnce(): librdkafka before 2.6.1 cannot authenticate with SCRAM to Kafka 4.x brokers
//     (confluentinc/librdkafka#4895: its client-final message repeats the client nonce, which Kafka 4 checks
//     strictly), so "invalid credentials" there does not prove a wrong password.

#include <librdkafka/rdkafka.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace outbox {

// https://github.com/confluentinc/librdkafka/blob/master/STATISTICS.md: brokers.<name>.state is "UP" while
// connected; nodeid -1 marks the bootstrap placeholders, which say nothing about the cluster. nullopt when `json` is
// not statistics.
std::optional<bool> kafkaStatsShowBrokerUp(const char* json, size_t length);

// Kafka refuses the client or none of its brokers is up: authentication failed (_AUTHENTICATION), the TLS handshake
// failed (_SSL), or _ALL_BROKERS_DOWN. Not _TRANSPORT: that is one broker connection (an idle one the broker closed,
// one broker of several restarting), and when the last one goes, _ALL_BROKERS_DOWN follows. librdkafka retries all of
// them by itself.
bool isKafkaConnectivityError(rd_kafka_resp_err_t err);

// The hint for `err` when it is an authentication failure, `mechanisms` (sasl.mechanisms) is SCRAM-* and `version`
// (as rd_kafka_version(): 0xMMmmrrpp, pp the pre-release, 0xff for a release) is before 2.6.1; else nullopt.
std::optional<std::string> scramDefectHint(rd_kafka_resp_err_t err, std::string_view mechanisms, int version,
                                           std::string_view versionText);

// Logs scramDefectHint() for `rk` (its sasl.mechanisms, the librdkafka this process runs with) at most once per
// process: a refused client retries for ever, and the hint says nothing new the second time.
void logScramDefectHintOnce(rd_kafka_t* rk, rd_kafka_resp_err_t err);

}  // namespace outbox
