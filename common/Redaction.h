#pragma once
// What is secret, and how it is shown: "<redacted>". One rule for libpq conninfos (libpq's own: every option it
// marks dispchar "*") and one for librdkafka properties, used by the start-up summaries and the Kafka client set-up.

#include <string>
#include <string_view>

namespace outbox {

inline constexpr std::string_view kRedacted = "<redacted>";

// A libpq conninfo (URI or key=value), parsed by libpq, as key=value pairs with every secret option (password,
// sslpassword: libpq's dispchar "*") as "<redacted>". One that libpq cannot parse is not shown, only why.
std::string redactConninfo(std::string_view conninfo);

// Whether a librdkafka property holds a secret: its name contains "password" or "secret", or it is
// "sasl.oauthbearer.config" or "ssl.key.pem".
bool isSecretKafkaProperty(std::string_view name);

}  // namespace outbox
