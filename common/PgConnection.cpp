#include "common/PgConnection.h"

#include <cstdlib>
#include <cstring>

namespace outbox {

namespace {
// The keyword/value arrays for PQconnectdbParams / PQconnectStartParams (pointers into the arguments).
struct ParameterArrays {
  std::vector<const char*> keys;
  std::vector<const char*> values;
};

ParameterArrays parameterArrays(const std::string& conninfo, const std::string& password, const PgParameters& extra,
                                const PgParameters& defaults) {
  ParameterArrays out;
  out.keys = {"dbname"};
  out.values = {conninfo.c_str()};
  for (const auto& [key, value] : extra) {
    out.keys.push_back(key);
    out.values.push_back(value);
  }
  for (const auto& [key, value] : defaultsNotSetBy(conninfo, defaults)) {
    out.keys.push_back(key);
    out.values.push_back(value);
  }
  if (!password.empty()) {
    out.keys.push_back("password");
    out.values.push_back(password.c_str());
  }
  out.keys.push_back(nullptr);
  out.values.push_back(nullptr);
  return out;
}

// The environment variable libpq reads for `key` (PGCONNECT_TIMEOUT for connect_timeout), null when none.
const char* environmentVariableOf(const char* key) {
  static PQconninfoOption* const options = PQconndefaults();  // libpq's table of keywords, kept for the process
  for (PQconninfoOption* o = options; o != nullptr && o->keyword != nullptr; ++o) {
    if (std::strcmp(o->keyword, key) == 0) return o->envvar;
  }
  return nullptr;
}
}  // namespace

const PgParameters& networkTimeoutDefaults() {
  static const PgParameters defaults = {
      {"connect_timeout", "10"},    {"keepalives", "1"},       {"keepalives_idle", "10"},
      {"keepalives_interval", "5"}, {"keepalives_count", "3"}, {"tcp_user_timeout", "30000"},
  };
  return defaults;
}

PgParameters defaultsNotSetBy(const std::string& conninfo, const PgParameters& defaults) {
  if (defaults.empty()) return {};
  char* error = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(conninfo.c_str(), &error);
  if (error != nullptr) PQfreemem(error);
  PgParameters out;
  for (const auto& [key, value] : defaults) {
    bool set = false;
    for (PQconninfoOption* o = parsed; o != nullptr && o->keyword != nullptr; ++o) {
      if (std::strcmp(o->keyword, key) == 0 && o->val != nullptr && o->val[0] != '\0') set = true;
    }
    const char* envvar = environmentVariableOf(key);
    if (envvar != nullptr && std::getenv(envvar) != nullptr) set = true;
    if (!set) out.emplace_back(key, value);
  }
  if (parsed != nullptr) PQconninfoFree(parsed);
  return out;
}

std::optional<std::string> escapeIdentifier(PGconn* conn, std::string_view name) {
  char* quoted = PQescapeIdentifier(conn, name.data(), name.size());
  if (quoted == nullptr) return std::nullopt;
  std::string out(quoted);
  PQfreemem(quoted);
  return out;
}

PGconn* connectPostgres(const std::string& conninfo, const std::string& password, const PgParameters& extra,
                        const PgParameters& defaults) {
  ParameterArrays params = parameterArrays(conninfo, password, extra, defaults);
  return PQconnectdbParams(params.keys.data(), params.values.data(), /*expand_dbname=*/1);
}

PGconn* startConnectPostgres(const std::string& conninfo, const std::string& password, const PgParameters& extra,
                             const PgParameters& defaults) {
  ParameterArrays params = parameterArrays(conninfo, password, extra, defaults);
  return PQconnectStartParams(params.keys.data(), params.values.data(), /*expand_dbname=*/1);
}

std::optional<std::string> permanentConnectFailureHint(const std::string& message) {
  // libpq's and the server's wording (PostgreSQL 15): fe-secure-openssl.c, fe-auth.c, auth.c.
  // https://www.postgresql.org/docs/15/libpq-ssl.html
  struct Rule {
    const char* contains;
    const char* hint;
  };
  static const Rule rules[] = {
      {"certificate verify failed",
       "the server's certificate is not signed by the CA in sslrootcert: set sslrootcert in the conninfo to the file "
       "of the CA that issued the server's certificate"},
      {"does not match host name",
       "the host name in the conninfo is not one the server's certificate names: connect with a name the certificate "
       "lists (its subjectAltName; with hostaddr=, host= is the name checked), or reissue the certificate for this "
       "name"},
      {"root certificate file",
       "sslmode=verify-ca/verify-full needs the CA's certificate: set sslrootcert in the conninfo to a readable CA "
       "file"},
      {"server does not support SSL",
       "the server does not offer TLS: turn ssl = on in its postgresql.conf, or (only on a trusted network) lower "
       "sslmode"},
      {"certificate file", "set sslcert / sslkey in the conninfo to readable files (the key mode 0600)"},
      {"private key file", "set sslcert / sslkey in the conninfo to readable files (the key mode 0600)"},
      {"alert unknown ca",
       "the server does not trust the client certificate: issue sslcert from the CA in the server's ssl_ca_file"},
      {"requires a valid client certificate",
       "the server authenticates this role by certificate: set sslcert and sslkey in the conninfo"},
      {"certificate authentication failed",
       "the client certificate's CN is not this role (or no pg_ident.conf map allows it): use a certificate issued "
       "for the role, or connect as the role it names"},
      {"password authentication failed",
       "the password is wrong: put the role's password in the password file (source.password_file / "
       "database.password_file) or correct the role's password in PostgreSQL"},
      {"no password supplied", "the server asks for a password: set password_file to a file that holds it"},
      {"no pg_hba.conf entry", "add a pg_hba.conf line for this host, role, database and TLS mode, then reload"},
      {"pg_hba.conf rejects connection",
       "pg_hba.conf rejects this host, role, database or TLS mode: connect with TLS (sslmode=verify-full) or change "
       "pg_hba.conf"},
  };
  for (const Rule& rule : rules) {
    if (message.find(rule.contains) != std::string::npos) return std::string(rule.hint);
  }
  return std::nullopt;
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
