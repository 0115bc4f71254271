#include "common/KafkaClientConfig.h"

#include <stdexcept>

#include "common/ConfigSupport.h"
#include "common/Log.h"

namespace outbox {

namespace {
// librdkafka's syslog levels, into our log (and its format). Called from librdkafka's threads, which is safe: a
// log record is a single write.
void logCallback(const rd_kafka_t*, int level, const char* facility, const char* message) {
  log::Level mapped = level <= 3   ? log::Level::Error
                      : level == 4 ? log::Level::Warn
                      : level <= 6 ? log::Level::Info
                                   : log::Level::Debug;
  if (!log::enabled(mapped)) return;
  log::write(mapped, std::string("kafka: ") + message, {{"facility", facility}});
}
}  // namespace

KafkaClientConfig::KafkaClientConfig() : conf_(rd_kafka_conf_new()) { rd_kafka_conf_set_log_cb(conf_, &logCallback); }

KafkaClientConfig::~KafkaClientConfig() {
  if (conf_ != nullptr) rd_kafka_conf_destroy(conf_);
}

void KafkaClientConfig::set(const std::string& key, const std::string& value) { add(key, value, false); }

void KafkaClientConfig::add(const std::string& key, const std::string& value, bool secret) {
  char err[512];
  if (rd_kafka_conf_set(conf_, key.c_str(), value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
    throw std::runtime_error("kafka property \"" + key + "\": " + err);
  }
  if (!described_.empty()) described_ += ' ';
  described_ += key + "=" + (secret || isSecretKafkaProperty(key) ? "<redacted>" : value);
}

void KafkaClientConfig::setUser(const std::string& bootstrapServers, const KafkaProperties& properties,
                                const KafkaProperties& secretValues) {
  set("bootstrap.servers", bootstrapServers);
  for (const auto& [key, value] : properties) set(key, value);
  // A secret file may hold a property whose name does not look secret: redacted for where it came from.
  for (const auto& [key, value] : secretValues) add(key, value, true);
}

rd_kafka_t* KafkaClientConfig::create(rd_kafka_type_t type, std::string_view what) {
  if (conf_ == nullptr) throw std::logic_error("KafkaClientConfig::create called twice");
  char err[512];
  rd_kafka_t* client = rd_kafka_new(type, conf_, err, sizeof err);
  if (client == nullptr) throw std::runtime_error("cannot create " + std::string(what) + ": " + err);
  conf_ = nullptr;  // rd_kafka_new took it over
  return client;
}

}  // namespace outbox
