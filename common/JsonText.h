#pragma once
// A JSON value as the text of a Kafka key, header or SQL parameter: a string as it is (unquoted), anything else
// serialized as JSON.

#include <nlohmann/json.hpp>
#include <string>

namespace outbox {

inline std::string jsonText(const nlohmann::json& value) {
  return value.is_string() ? value.get<std::string>() : value.dump();
}

}  // namespace outbox
