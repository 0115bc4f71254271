#pragma once
// One librdkafka configuration, built the same way for every client of both binaries (the relay's producer, the
// sink's consumer and its dead-letter producer):
//   - each property is set or the build throws, naming the property and librdkafka's reason;
//   - librdkafka's log lines go into our log, in its format;
//   - describe() lists what was set, with every secret property redacted by one rule (isSecretKafkaProperty).
//
//   KafkaClientConfig conf;
//   conf.set("enable.idempotence", "true");               // the program's defaults first,
//   conf.setUser(kafka.bootstrapServers, kafka.properties, kafka.secretValues);  // then the user's, which win
//   rd_kafka_conf_set_dr_msg_cb(conf.native(), ...);
//   rd_kafka_t* producer = conf.create(RD_KAFKA_PRODUCER, "the Kafka producer");

#include <librdkafka/rdkafka.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace outbox {

using KafkaProperties = std::vector<std::pair<std::string, std::string>>;

class KafkaClientConfig {
 public:
  KafkaClientConfig();
  ~KafkaClientConfig();
  KafkaClientConfig(const KafkaClientConfig&) = delete;
  KafkaClientConfig& operator=(const KafkaClientConfig&) = delete;

  // Throws std::runtime_error("kafka property \"key\": <librdkafka's reason>") when librdkafka refuses it.
  void set(const std::string& key, const std::string& value);
  // The user's [kafka] settings, in order: bootstrap.servers, [kafka.properties], then the values read from
  // [kafka.secret_files]. Set after the program's defaults, so the user's win.
  void setUser(const std::string& bootstrapServers, const KafkaProperties& properties,
               const KafkaProperties& secretValues);

  // For the callbacks and the opaque of the client being configured.
  rd_kafka_conf_t* native() { return conf_; }
  // "key=value key=value ..." of everything set, secrets replaced by "<redacted>" (for the start-up log).
  const std::string& describe() const { return described_; }

  // Creates the client; the configuration passes to it and this object is spent. Throws naming `what`.
  rd_kafka_t* create(rd_kafka_type_t type, std::string_view what);

 private:
  void add(const std::string& key, const std::string& value, bool secret);

  rd_kafka_conf_t* conf_;
  std::string described_;
};

}  // namespace outbox
