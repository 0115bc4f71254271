#include "common/PgConnection.h"

namespace outbox {

PGconn* connectPostgres(const std::string& conninfo, const std::string& password, const PgParameters& extra) {
  std::vector<const char*> keys = {"dbname"};
  std::vector<const char*> values = {conninfo.c_str()};
  for (const auto& [key, value] : extra) {
    keys.push_back(key);
    values.push_back(value);
  }
  if (!password.empty()) {
    keys.push_back("password");
    values.push_back(password.c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  return PQconnectdbParams(keys.data(), values.data(), /*expand_dbname=*/1);
}

std::string pgMessage(const char* text) {
  std::string s = text != nullptr ? text : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string pgErrorMessage(const PGconn* conn) {
  return conn == nullptr ? "not connected" : pgMessage(PQerrorMessage(conn));
}

std::string pgSqlState(const PGresult* result) {
  const char* state = result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  return state != nullptr ? state : "";
}

}  // namespace outbox
