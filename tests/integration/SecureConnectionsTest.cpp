// Secured connections end to end, against the dev stack's TLS PostgreSQL and its SASL_SSL (SCRAM-SHA-512) and
// mutual-TLS Kafka listeners (scripts/devstack makes the test CA and certificates at `up`):
// - the relay and the sink connect with sslmode=verify-full, by password (scram-sha-256 over hostssl) or by client
//   certificate, publish and consume over SASL_SSL (SCRAM-SHA-512; PLAIN) or mutual TLS, and an event committed to
//   the outbox is projected into the read model (SCRAM on Kafka 4.x: refused, a librdkafka 2.0.2 bug, asserted);
// - a server certificate from another CA, a host name the certificate does not name, a wrong password: the relay and
//   the sink exit at start-up with status 2 and a message naming the fix, instead of retrying forever;
// - a wrong SCRAM password: the authentication failure is in the log, the relay's /readyz answers 503 while it lasts,
//   and the password is in no log line and no /metrics, /healthz or /readyz answer.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>

#include <chrono>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "support/RelayProcess.h"
#include "support/SinkProcess.h"

using namespace outbox::test;
using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

struct HttpAnswer {
  int status = 0;  // 0: no HTTP answer
  std::string body;
};

HttpAnswer httpGet(const std::string& address, const std::string& path) {
  CommandResult r = runCommand(
      {"/usr/bin/curl", "-s", "-S", "--max-time", "10", "-w", "\n%{http_code}", "http://" + address + path}, 15s);
  HttpAnswer answer;
  size_t nl = r.output.rfind('\n');
  if (nl == std::string::npos) return answer;
  answer.status = std::atoi(r.output.c_str() + nl + 1);
  answer.body = r.output.substr(0, nl);
  return answer;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream s;
  s << in.rdbuf();
  std::string text = s.str();
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

// The dev stack's PostgreSQL port, from PGURL (postgresql://postgres@127.0.0.1:PORT/postgres).
std::string pgPort() {
  std::string url = pgUrl();
  size_t colon = url.rfind(':');
  size_t slash = url.find('/', colon);
  return url.substr(colon + 1, slash - colon - 1);
}

// A key=value conninfo for the dev stack's PostgreSQL over TLS, verify-full against `ca`. `host` is the name the
// certificate is checked against; the connection always goes to 127.0.0.1 (hostaddr).
std::string tlsConninfo(const std::string& user, const std::string& ca, const std::string& host = "localhost",
                        const std::string& extra = "") {
  return fmt::format("host={} hostaddr=127.0.0.1 port={} dbname=postgres user={} sslmode=verify-full sslrootcert={}{}",
                     host, pgPort(), user, ca, extra.empty() ? "" : " " + extra);
}
std::string certificateConninfo() {
  return tlsConninfo(requireEnv("PG_CERT_ROLE"), requireEnv("PG_TLS_CA"), "127.0.0.1",
                     fmt::format("sslcert={} sslkey={}", requireEnv("PG_CERT_FILE"), requireEnv("PG_KEY_FILE")));
}

// How one side (relay or sink) reaches PostgreSQL and Kafka.
struct Connections {
  std::string pgConninfo;
  std::string pgPasswordFile;  // "" for none
  std::string kafkaBootstrap;
  std::vector<std::pair<std::string, std::string>> kafkaProperties;
  std::vector<std::pair<std::string, std::string>> kafkaSecretFiles;
};

Connections scramOverTls() {
  return {tlsConninfo(requireEnv("PG_PASSWORD_ROLE"), requireEnv("PG_TLS_CA")),
          requireEnv("PG_PASSWORD_FILE"),
          requireEnv("KAFKA_SASL_SSL_BOOTSTRAP"),
          {{"security.protocol", "SASL_SSL"},
           {"sasl.mechanisms", "SCRAM-SHA-512"},
           {"sasl.username", requireEnv("KAFKA_SCRAM_USER")},
           {"ssl.ca.location", requireEnv("KAFKA_CA")}},
          {{"sasl.password", requireEnv("KAFKA_SCRAM_PASSWORD_FILE")}}};
}

// SASL PLAIN over TLS on the same SASL_SSL listener.
Connections plainOverTls() {
  Connections c = scramOverTls();
  c.kafkaProperties = {{"security.protocol", "SASL_SSL"},
                       {"sasl.mechanisms", "PLAIN"},
                       {"sasl.username", requireEnv("KAFKA_PLAIN_USER")},
                       {"ssl.ca.location", requireEnv("KAFKA_CA")}};
  c.kafkaSecretFiles = {{"sasl.password", requireEnv("KAFKA_PLAIN_PASSWORD_FILE")}};
  return c;
}

// The dev stack's Kafka major version ("4.4.0" -> 4).
int kafkaMajorVersion() { return std::stoi(requireEnv("KAFKA_SERVER_VERSION")); }

Connections mutualTls() {
  return {certificateConninfo(),
          "",
          requireEnv("KAFKA_SSL_BOOTSTRAP"),
          {{"security.protocol", "SSL"},
           {"ssl.certificate.location", requireEnv("KAFKA_CLIENT_CERT")},
           {"ssl.key.location", requireEnv("KAFKA_CLIENT_KEY")},
           {"ssl.ca.location", requireEnv("KAFKA_CA")}},
          {}};
}

RelayConfigBuilder relayConfig(const Connections& c) {
  RelayConfigBuilder config;
  config.conninfo(c.pgConninfo).bootstrapServers(c.kafkaBootstrap).metricsListen("127.0.0.1:0");
  if (!c.pgPasswordFile.empty()) config.source("password_file", tomlString(c.pgPasswordFile));
  for (const auto& [k, v] : c.kafkaProperties) config.kafkaProperty(k, v);
  for (const auto& [k, v] : c.kafkaSecretFiles) config.kafkaSecretFile(k, v);
  return config;
}

SinkConfigBuilder sinkConfig(const Connections& c) {
  SinkConfigBuilder config;
  config.set("database", "conninfo", tomlString(c.pgConninfo))
      .set("kafka", "bootstrap_servers", tomlString(c.kafkaBootstrap))
      .metricsListen("127.0.0.1:0");
  if (!c.pgPasswordFile.empty()) config.set("database", "password_file", tomlString(c.pgPasswordFile));
  for (const auto& [k, v] : c.kafkaProperties) config.kafkaProperty(k, v);
  for (const auto& [k, v] : c.kafkaSecretFiles) config.set("kafka.secret_files", tomlString(k), tomlString(v));
  return config;
}

// The line of `text` around `at`, for a failure message.
std::string lineAt(const std::string& text, size_t at) {
  if (at == std::string::npos) return "";
  size_t begin = text.rfind('\n', at);
  size_t end = text.find('\n', at);
  return text.substr(begin == std::string::npos ? 0 : begin + 1,
                     end == std::string::npos ? std::string::npos : end - begin - 1);
}

void expectNoSecret(const std::string& text, const std::string& secret, const std::string& where) {
  ASSERT_GE(secret.size(), 8u) << "a secret too short to search for";
  EXPECT_EQ(text.find(secret), std::string::npos)
      << "the secret is in " << where << ": " << lineAt(text, text.find(secret));
}

// Relay (outbox → Kafka) and sink (Kafka → read model) over `relay` and `sink`: 20 committed events arrive in the
// read model, each once. Neither binary's log nor its admin endpoints show a secret of `secrets`.
void deliverEndToEnd(const Connections& relaySide, const Connections& sinkSide,
                     const std::vector<std::string>& secrets) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "sec");
  std::string topicPrefix = uniqueName("sec");
  std::string readModel = uniqueName("sec_read_model");
  pg.exec("CREATE TABLE " + readModel + " (event_id text PRIMARY KEY)");

  RelayConfigBuilder relayToml = relayConfig(relaySide);
  relayToml.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {{"eventType", "type"}}});
  ReplicationCleanup cleanup(relayToml.slot(), relayToml.publication(), {table, readModel});
  auto relay = RelayProcess::start(relayToml.render());
  std::string relayAdmin = adminAddressOf(*relay);
  ASSERT_TRUE(waitFor([&] { return httpGet(relayAdmin, "/readyz").status == 200 || !relay->running(); }, 120s));
  ASSERT_EQ(httpGet(relayAdmin, "/readyz").status, 200) << httpGet(relayAdmin, "/readyz").body << relay->logTail();

  SinkConfigBuilder sinkToml = sinkConfig(sinkSide);
  sinkToml.projection("applied", topicPrefix + ".order", "*", "INSERT INTO " + readModel + " (event_id) VALUES ($1)",
                      {"@id"});
  auto sink = SinkProcess::start(sinkToml.render());
  std::string sinkAdmin = adminAddressOf(*sink);

  pg.exec("INSERT INTO " + table +
          " (aggregatetype, aggregateid, type, payload) SELECT 'order', 'o-' || g, 'OrderCreated', "
          "jsonb_build_object('n', g) FROM generate_series(1, 20) g");
  std::string count = "SELECT count(*) FROM " + readModel;
  EXPECT_TRUE(waitFor([&] { return pg.scalar(count) == "20"; }, 120s))
      << "the read model holds " << pg.scalar(count).value_or("?") << " of 20 events";
  EXPECT_EQ(pg.scalar("SELECT count(*) FROM " + table + " o JOIN " + readModel + " r ON r.event_id = o.id::text"),
            "20");
  // Both really used the secured connections: the server says so for the sink's and relay's sessions.
  EXPECT_EQ(pg.scalar("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE NOT s.ssl AND "
                      "a.application_name IN ('outbox-relay', 'outbox-sink')"),
            "0");
  EXPECT_EQ(pg.scalar("SELECT count(DISTINCT a.application_name) FROM pg_stat_ssl s JOIN pg_stat_activity a "
                      "USING (pid) WHERE s.ssl AND a.application_name IN ('outbox-relay', 'outbox-sink')"),
            "2");
  EXPECT_EQ(httpGet(sinkAdmin, "/readyz").status, 200);

  std::string scraped;
  for (const std::string& admin : {relayAdmin, sinkAdmin}) {
    for (const char* path : {"/metrics", "/healthz", "/readyz"}) scraped += httpGet(admin, path).body;
  }
  EXPECT_THAT(scraped, HasSubstr("outbox_relay_events_published_total"));
  relay->sigterm();
  sink->sigterm();
  auto relayExit = relay->waitExit(60s);
  auto sinkExit = sink->waitExit(60s);
  ASSERT_TRUE(relayExit && sinkExit) << "the relay or the sink did not stop on SIGTERM";
  EXPECT_TRUE(relayExit->success()) << relayExit->toString();
  EXPECT_TRUE(sinkExit->success()) << sinkExit->toString();
  for (const std::string& secret : secrets) {
    expectNoSecret(relay->log(), secret, "the relay's log");
    expectNoSecret(sink->log(), secret, "the sink's log");
    expectNoSecret(scraped, secret, "/metrics, /healthz or /readyz");
  }
}

// Starts the relay and the sink with `pgConninfo` (PLAINTEXT Kafka) and expects each to exit at start-up with status
// 2, the log naming `problem` and `fix`, and no retry.
void expectRefusedAtStartup(const std::string& pgConninfo, const std::string& passwordFile, const std::string& problem,
                            const std::string& fix) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "secno");
  RelayConfigBuilder relayToml;
  relayToml.conninfo(pgConninfo).addOutbox({table, uniqueName("secno") + ".{aggregatetype}", {}, {}});
  if (!passwordFile.empty()) relayToml.source("password_file", tomlString(passwordFile));
  ReplicationCleanup cleanup(relayToml.slot(), relayToml.publication(), {table});
  SinkConfigBuilder sinkToml;
  sinkToml.set("database", "conninfo", tomlString(pgConninfo));
  if (!passwordFile.empty()) sinkToml.set("database", "password_file", tomlString(passwordFile));
  sinkToml.projection("noop", uniqueName("secno-topic"), "*", "SELECT $1", {"@id"});

  std::vector<std::unique_ptr<ChildProcess>> processes;
  processes.push_back(RelayProcess::start(relayToml.render()));
  processes.push_back(SinkProcess::start(sinkToml.render()));
  for (auto& process : processes) {
    SCOPED_TRACE(process->label());
    // Generous: a retrying binary would run on for ever; one that gives up exits within a connection attempt.
    auto exit = process->waitExit(60s);
    ASSERT_TRUE(exit.has_value()) << process->label() << " still runs: it retries what no retry cures\n"
                                  << process->logTail();
    EXPECT_TRUE(exit->exited && exit->code == 2) << exit->toString() << "\n" << process->logTail();
    std::string log = process->log();
    EXPECT_THAT(log, HasSubstr(problem));
    EXPECT_THAT(log, HasSubstr(fix));
    EXPECT_THAT(log, HasSubstr("not retried at start-up"));
    EXPECT_THAT(log, Not(HasSubstr("retrying in"))) << "it retried before giving up";
    EXPECT_THAT(log, Not(HasSubstr("reconnecting in"))) << "it retried before giving up";
    if (!passwordFile.empty()) expectNoSecret(log, readFile(passwordFile), process->label() + "'s log");
  }
}

// What the relay and the sink log when Kafka refuses a SCRAM authentication under a librdkafka older than 2.6.1.
const std::string kScramHint =
    "the password may be right: librdkafka " + std::string(rd_kafka_version_str()) +
    " cannot authenticate with SCRAM to Kafka 4.x brokers (confluentinc/librdkafka#4895, fixed in 2.6.1)";

size_t occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

// The relay and the sink with Kafka over `kafka` (PostgreSQL as the other tests reach it), which the broker refuses
// to authenticate: `failure` is in both logs (and logged again as it is retried), the relay's and the sink's /readyz
// answer 503 naming Kafka (the sink's also the authentication failure) while it lasts, both keep running, and `secret`
// is in no log line and no admin answer. The hint on librdkafka's SCRAM defect (librdkafka#4895) is in each log
// exactly once when the mechanism is SCRAM and librdkafka is older than 2.6.1, else in neither.
void expectKafkaAuthenticationRefused(Connections kafka, const std::string& failure, const std::string& secret) {
  kafka.pgConninfo = pgUrl();
  kafka.pgPasswordFile.clear();
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "secpw");
  RelayConfigBuilder relayToml = relayConfig(kafka);
  relayToml.addOutbox({table, uniqueName("secpw") + ".{aggregatetype}", {}, {}});
  ReplicationCleanup cleanup(relayToml.slot(), relayToml.publication(), {table});
  auto relay = RelayProcess::start(relayToml.render());
  std::string relayAdmin = adminAddressOf(*relay);
  SinkConfigBuilder sinkToml = sinkConfig(kafka);
  sinkToml.projection("noop", uniqueName("secpw-topic"), "*", "SELECT $1", {"@id"});
  auto sink = SinkProcess::start(sinkToml.render());
  std::string sinkAdmin = adminAddressOf(*sink);

  EXPECT_TRUE(waitFor([&] { return relay->log().find(failure) != std::string::npos; }, 90s)) << relay->logTail();
  EXPECT_TRUE(waitFor([&] { return sink->log().find(failure) != std::string::npos; }, 90s)) << sink->logTail();
  // While it lasts the relay is not ready: it cannot publish.
  EXPECT_TRUE(waitFor([&] { return httpGet(relayAdmin, "/readyz").status == 503; }, 60s));
  HttpAnswer readyz = httpGet(relayAdmin, "/readyz");
  EXPECT_EQ(readyz.status, 503);
  EXPECT_THAT(readyz.body, HasSubstr("Kafka"));
  // It stays so (the failure is retried, and fails again).
  pg.exec("INSERT INTO " + table + " (aggregatetype, aggregateid, type, payload) VALUES ('order', 'o-1', 'c', '{}')");
  EXPECT_TRUE(waitFor([&] { return relay->log().rfind(failure) > relay->log().find(failure); }, 90s))
      << "the authentication failure was logged once only";
  EXPECT_EQ(httpGet(relayAdmin, "/readyz").status, 503);
  // The sink is not ready either: it cannot consume.
  EXPECT_TRUE(waitFor([&] { return httpGet(sinkAdmin, "/readyz").status == 503; }, 60s)) << sink->logTail();
  HttpAnswer sinkReadyz = httpGet(sinkAdmin, "/readyz");
  EXPECT_EQ(sinkReadyz.status, 503);
  EXPECT_THAT(sinkReadyz.body, HasSubstr("Kafka"));
  EXPECT_THAT(sinkReadyz.body, HasSubstr("_AUTHENTICATION"));
  EXPECT_THAT(sink->log(), HasSubstr("(_AUTHENTICATION); retrying"));
  EXPECT_TRUE(relay->running());
  EXPECT_TRUE(sink->running());

  std::string scraped;
  for (const std::string& admin : {relayAdmin, sinkAdmin}) {
    for (const char* path : {"/metrics", "/healthz", "/readyz"}) scraped += httpGet(admin, path).body;
  }
  relay->sigkill();
  sink->sigkill();
  relay->waitExit(30s);
  sink->waitExit(30s);
  expectNoSecret(relay->log(), secret, "the relay's log");
  expectNoSecret(sink->log(), secret, "the sink's log");
  expectNoSecret(scraped, secret, "/metrics, /healthz or /readyz");
  EXPECT_THAT(relay->log(), HasSubstr("<redacted>")) << "the start-up summary shows no redacted secret";
  bool scram = false;
  for (const auto& [key, value] : kafka.kafkaProperties) {
    if (key == "sasl.mechanisms") scram = value.rfind("SCRAM-", 0) == 0;
  }
  size_t expectedHints = scram && rd_kafka_version() < 0x02060100 ? 1 : 0;
  EXPECT_EQ(occurrences(relay->log(), kScramHint), expectedHints) << relay->logTail();
  EXPECT_EQ(occurrences(sink->log(), kScramHint), expectedHints) << sink->logTail();
}

const std::string kScramRefused =
    "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512";

}  // namespace

TEST(SecureConnections, VerifyFullWithScramPasswordAndKafkaSaslSslScramSha512) {
  Connections c = scramOverTls();
  std::string scramPassword = readFile(requireEnv("KAFKA_SCRAM_PASSWORD_FILE"));
  if (kafkaMajorVersion() < 4) {
    deliverEndToEnd(c, c, {readFile(c.pgPasswordFile), scramPassword});
    return;
  }
  // Kafka 4.x: librdkafka before 2.6.1 (Debian 12 ships 2.0.2) repeats the client nonce in SCRAM's client-final
  // message, which Kafka 4 checks strictly (RFC 5802): the right password is refused (confluentinc/librdkafka#4895).
  // Asserted, not skipped: once librdkafka is fixed this fails, and README "Secured connections" is to be updated.
  expectKafkaAuthenticationRefused(c, kScramRefused, scramPassword);
}

TEST(SecureConnections, VerifyFullWithScramPasswordAndKafkaSaslSslPlain) {
  Connections c = plainOverTls();
  deliverEndToEnd(c, c, {readFile(c.pgPasswordFile), readFile(requireEnv("KAFKA_PLAIN_PASSWORD_FILE"))});
}

TEST(SecureConnections, ClientCertificatesForPostgresAndKafkaMutualTls) {
  Connections c = mutualTls();
  deliverEndToEnd(c, c, {});
}

TEST(SecureConnections, AServerCertificateFromAnotherCaEndsTheStartAtOnce) {
  expectRefusedAtStartup(tlsConninfo("postgres", requireEnv("TLS_OTHER_CA")), "", "certificate verify failed",
                         "set sslrootcert");
}

TEST(SecureConnections, AHostNameTheCertificateDoesNotNameEndsTheStartAtOnce) {
  // The same server at 127.0.0.1; its certificate names localhost and 127.0.0.1 only.
  expectRefusedAtStartup(tlsConninfo("postgres", requireEnv("PG_TLS_CA"), "db.not-in-the-certificate.test"), "",
                         "does not match host name \"db.not-in-the-certificate.test\"",
                         "connect with a name the certificate lists");
}

TEST(SecureConnections, AWrongPostgresPasswordEndsTheStartAtOnceAndIsNotLogged) {
  std::string wrong = uniqueName("WrongPgPassword") + "x";
  expectRefusedAtStartup(tlsConninfo(requireEnv("PG_PASSWORD_ROLE"), requireEnv("PG_TLS_CA")),
                         writeTempFile("pg-wrong-password", wrong + "\n"), "password authentication failed",
                         "password_file");
}

TEST(SecureConnections, AClientCertificateIsRequiredForTheCertificateRole) {
  // The certificate role without sslcert/sslkey: the server asks for a certificate; the fix is named.
  expectRefusedAtStartup(tlsConninfo(requireEnv("PG_CERT_ROLE"), requireEnv("PG_TLS_CA")), "",
                         "requires a valid client certificate", "set sslcert and sslkey");
}

TEST(SecureConnections, AWrongScramPasswordIsLoggedAsAnAuthenticationFailureNeverAsThePassword) {
  std::string wrong = uniqueName("WrongScramPassword") + "x";
  Connections c = scramOverTls();
  c.kafkaSecretFiles = {{"sasl.password", writeTempFile("kafka-wrong-password", wrong + "\n")}};
  expectKafkaAuthenticationRefused(c, kScramRefused, wrong);
}

TEST(SecureConnections, AWrongPlainPasswordIsLoggedAsAnAuthenticationFailureNeverAsThePassword) {
  std::string wrong = uniqueName("WrongPlainPassword") + "x";
  Connections c = plainOverTls();
  c.kafkaSecretFiles = {{"sasl.password", writeTempFile("kafka-wrong-password", wrong + "\n")}};
  expectKafkaAuthenticationRefused(c, "Authentication failed: Invalid username or password", wrong);
}
