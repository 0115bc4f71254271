#include "common/KafkaHealth.h"

#include <fmt/format.h>

#include <atomic>
#include <cctype>
#include <nlohmann/json.hpp>

#include "common/Log.h"

namespace outbox {

std::optional<bool> kafkaStatsShowBrokerUp(const char* json, size_t length) {
  auto stats = nlohmann::json::parse(json, json + length, nullptr, false);
  if (stats.is_discarded() || !stats.is_object() || !stats.contains("brokers") || !stats["brokers"].is_object()) {
    return std::nullopt;
  }
  for (const auto& [name, broker] : stats["brokers"].items()) {
    if (!broker.is_object()) continue;
    const auto nodeid = broker.find("nodeid");
    const auto state = broker.find("state");
    if (nodeid != broker.end() && nodeid->is_number_integer() && nodeid->get<int64_t>() >= 0 && state != broker.end() &&
        state->is_string() && state->get<std::string>() == "UP") {
      return true;
    }
  }
  return false;
}

bool isKafkaConnectivityError(rd_kafka_resp_err_t err) {
  return err == RD_KAFKA_RESP_ERR__AUTHENTICATION || err == RD_KAFKA_RESP_ERR__SSL ||
         err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN;
}

std::optional<std::string> scramDefectHint(rd_kafka_resp_err_t err, std::string_view mechanisms, int version,
                                           std::string_view versionText) {
  if (err != RD_KAFKA_RESP_ERR__AUTHENTICATION) return std::nullopt;
  constexpr std::string_view kScram = "SCRAM-";
  if (mechanisms.size() < kScram.size()) return std::nullopt;
  for (size_t i = 0; i < kScram.size(); ++i) {
    if (std::toupper(static_cast<unsigned char>(mechanisms[i])) != kScram[i]) return std::nullopt;
  }
  // Compare major.minor.revision only: every pre-release of 2.6.1 counts as 2.6.1.
  constexpr unsigned kFixed = 0x02060100;
  if ((static_cast<unsigned>(version) & 0xffffff00U) >= kFixed) return std::nullopt;
  return fmt::format(
      "kafka: the password may be right: librdkafka {} cannot authenticate with SCRAM to Kafka 4.x brokers "
      "(confluentinc/librdkafka#4895, fixed in 2.6.1); against Kafka 4.x use PLAIN over SASL_SSL, mutual TLS, or a "
      "build with a librdkafka >= 2.6.1 (README \"Secured connections\")",
      versionText);
}

void logScramDefectHintOnce(rd_kafka_t* rk, rd_kafka_resp_err_t err) {
  static std::atomic<bool> logged{false};
  if (err != RD_KAFKA_RESP_ERR__AUTHENTICATION || logged.load()) return;
  char mechanisms[128];
  size_t size = sizeof mechanisms;
  if (rd_kafka_conf_get(rd_kafka_conf(rk), "sasl.mechanisms", mechanisms, &size) != RD_KAFKA_CONF_OK) return;
  std::optional<std::string> hint = scramDefectHint(err, mechanisms, rd_kafka_version(), rd_kafka_version_str());
  if (hint && !logged.exchange(true)) log::warn("{}", *hint);
}

}  // namespace outbox
