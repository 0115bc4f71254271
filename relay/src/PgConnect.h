#pragma once
// Opens a libpq connection from the relay's [source] settings plus extra parameters. The configured conninfo is
// expanded first and the extras after it, so they win; the password file's secret goes in as the "password"
// parameter and is never part of a string that could be logged.

#include <libpq-fe.h>

#include <string>
#include <utility>
#include <vector>

#include "src/RelayConfig.h"

namespace outbox {

// Returns the connection whatever its status (check PQstatus; the caller PQfinish-es it).
inline PGconn* connectToSource(const SourceConfig& source,
                               const std::vector<std::pair<const char*, const char*>>& extra) {
  std::vector<const char*> keys = {"dbname"};
  std::vector<const char*> values = {source.conninfo.c_str()};
  for (const auto& [key, value] : extra) {
    keys.push_back(key);
    values.push_back(value);
  }
  if (!source.password.empty()) {
    keys.push_back("password");
    values.push_back(source.password.c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  return PQconnectdbParams(keys.data(), values.data(), /*expand_dbname=*/1);
}

}  // namespace outbox
