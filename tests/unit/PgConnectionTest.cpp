// Network-timeout defaults are added to a connection only where the user's conninfo (or libpq's environment
// variable for that key) does not set them: the user's own values win.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <string>

#include "common/PgConnection.h"

using outbox::defaultsNotSetBy;
using outbox::networkTimeoutDefaults;
using outbox::PgParameters;

namespace {
std::map<std::string, std::string> asMap(const PgParameters& parameters) {
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : parameters) out[key] = value;
  return out;
}

// Unsets an environment variable for the test's duration (restoring it after).
class UnsetEnv {
 public:
  explicit UnsetEnv(const char* name) : name_(name) {
    if (const char* value = std::getenv(name)) saved_ = value;
    ::unsetenv(name);
  }
  ~UnsetEnv() {
    if (!saved_.empty()) ::setenv(name_, saved_.c_str(), 1);
  }

 private:
  const char* name_;
  std::string saved_;
};
}  // namespace

TEST(PgConnection, EveryNetworkTimeoutDefaultIsAddedWhenTheConninfoSetsNone) {
  UnsetEnv env("PGCONNECT_TIMEOUT");
  auto added = asMap(defaultsNotSetBy("host=db.example dbname=app user=relay", networkTimeoutDefaults()));
  EXPECT_EQ(added, asMap(networkTimeoutDefaults()));
  EXPECT_EQ(added["connect_timeout"], "10");
  EXPECT_EQ(added["keepalives"], "1");
  EXPECT_EQ(added["tcp_user_timeout"], "30000");
  EXPECT_EQ(added.count("options"), 0u) << "the user's options are never touched";
}

TEST(PgConnection, TheUsersOwnTimeoutsWinInKeyValueForm) {
  UnsetEnv env("PGCONNECT_TIMEOUT");
  auto added =
      asMap(defaultsNotSetBy("host=db dbname=app connect_timeout=3 keepalives_idle=60 "
                             "options='-c statement_timeout=100'",
                             networkTimeoutDefaults()));
  EXPECT_EQ(added.count("connect_timeout"), 0u);
  EXPECT_EQ(added.count("keepalives_idle"), 0u);
  EXPECT_EQ(added["keepalives_interval"], "5");
  EXPECT_EQ(added["tcp_user_timeout"], "30000");
  EXPECT_EQ(added.size(), networkTimeoutDefaults().size() - 2);
}

TEST(PgConnection, TheUsersOwnTimeoutsWinInUriForm) {
  UnsetEnv env("PGCONNECT_TIMEOUT");
  auto added = asMap(
      defaultsNotSetBy("postgresql://relay@db:5432/app?tcp_user_timeout=5000&keepalives=0", networkTimeoutDefaults()));
  EXPECT_EQ(added.count("tcp_user_timeout"), 0u);
  EXPECT_EQ(added.count("keepalives"), 0u) << "keepalives=0 is the user's choice, not a missing value";
  EXPECT_EQ(added["connect_timeout"], "10");
}

TEST(PgConnection, PgConnectTimeoutInTheEnvironmentWinsOverTheDefault) {
  UnsetEnv env("PGCONNECT_TIMEOUT");
  ::setenv("PGCONNECT_TIMEOUT", "2", 1);
  auto added = asMap(defaultsNotSetBy("host=db", networkTimeoutDefaults()));
  ::unsetenv("PGCONNECT_TIMEOUT");
  EXPECT_EQ(added.count("connect_timeout"), 0u);
  EXPECT_EQ(added["keepalives_count"], "3");
}

TEST(PgConnection, AnUnparsableConninfoGetsTheDefaultsAndLibpqReportsTheError) {
  auto added = defaultsNotSetBy("host='unterminated", networkTimeoutDefaults());
  EXPECT_EQ(added.size(), networkTimeoutDefaults().size() - (std::getenv("PGCONNECT_TIMEOUT") ? 1 : 0));
}

TEST(PgConnection, TheParametersLibpqUsesKeepTheUsersOptionsAndTimeouts) {
  // What a real libpq connection object ends up with (PQconninfo), started without blocking towards a port that
  // nobody listens on: the user's options and connect_timeout as written, the other defaults added, the program's
  // extra parameter on top.
  UnsetEnv env("PGCONNECT_TIMEOUT");
  PGconn* conn = outbox::startConnectPostgres(
      "hostaddr=127.0.0.1 port=1 dbname=app connect_timeout=4 options='-c statement_timeout=1234'", "",
      {{"fallback_application_name", "unit-test"}}, networkTimeoutDefaults());
  ASSERT_NE(conn, nullptr);
  std::map<std::string, std::string> effective;
  PQconninfoOption* options = PQconninfo(conn);
  for (PQconninfoOption* o = options; o != nullptr && o->keyword != nullptr; ++o) {
    if (o->val != nullptr) effective[o->keyword] = o->val;
  }
  PQconninfoFree(options);
  PQfinish(conn);
  EXPECT_EQ(effective["options"], "-c statement_timeout=1234");
  EXPECT_EQ(effective["connect_timeout"], "4");
  EXPECT_EQ(effective["keepalives_idle"], "10");
  EXPECT_EQ(effective["tcp_user_timeout"], "30000");
  EXPECT_EQ(effective["fallback_application_name"], "unit-test");
}

// libpq's and the server's messages (PostgreSQL 15, as the dev stack's secured roles produce them) for failures no
// retry cures get a hint naming the fix; a server that is down or starting gets none (retried).
TEST(PgConnection, ConnectFailuresNoRetryCuresGetAHintAndOutagesDoNot) {
  using outbox::permanentConnectFailureHint;
  auto hint = [](const std::string& message) { return permanentConnectFailureHint(message).value_or(""); };
  const std::string at = "connection to server at \"127.0.0.1\", port 5432 failed: ";
  EXPECT_NE(hint(at + "SSL error: certificate verify failed").find("sslrootcert"), std::string::npos);
  EXPECT_NE(hint(at + "server certificate for \"localhost\" (and 1 other name) does not match host name \"db.x\"")
                .find("certificate names"),
            std::string::npos);
  EXPECT_NE(hint(at + "root certificate file \"/nope/ca.crt\" does not exist").find("sslrootcert"), std::string::npos);
  EXPECT_NE(hint(at + "FATAL:  password authentication failed for user \"outbox_tls\"").find("password_file"),
            std::string::npos);
  EXPECT_NE(hint(at + "FATAL:  connection requires a valid client certificate").find("sslcert"), std::string::npos);
  EXPECT_NE(hint(at + "FATAL:  pg_hba.conf rejects connection for host \"127.0.0.1\", user \"u\", database \"d\", "
                      "no encryption")
                .find("pg_hba.conf"),
            std::string::npos);
  EXPECT_FALSE(permanentConnectFailureHint(at + "Connection refused\n\tIs the server running on that host and "
                                                "accepting TCP/IP connections?"));
  EXPECT_FALSE(permanentConnectFailureHint(at + "FATAL:  the database system is starting up"));
  EXPECT_FALSE(permanentConnectFailureHint(at + "timeout expired"));
}
