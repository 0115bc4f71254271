// Observability end to end: a real Prometheus (Debian's /usr/bin/prometheus) scrapes the relay and the sink
// (projecting the relay's topics) with the alert rules of helm/outbox-relay/files/alerts loaded, while a load goes
// through both. Every PromQL expression of the Grafana dashboard and of the rules must parse, every dashboard query
// must return data, no alert may fire on the healthy system, and the scrapes must pass `promtool check metrics`.
// /readyz and the OutboxRelayNotReady alert must follow a Kafka outage both ways. No password may show in logs or on
// /metrics, and every line of a json-format log is a JSON object with ts, level and msg. Every series whose labels the
// configuration tells (per outbox table, logical messages, static topics, targets) is on /metrics at 0 before any
// event, so dashboards and rate() see a healthy idle relay, not "no data".
// HTTP goes through the curl command line tool; nothing here speaks HTTP itself.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

#include "src/RelayMetrics.h"
#include "src/ServerWalProbe.h"
#include "support/RelayProcess.h"
#include "support/TestEnv.h"

using namespace outbox;
using namespace outbox::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

const std::string kDashboard = "helm/outbox-relay/files/dashboards/outbox-relay.json";
const std::string kRules = "helm/outbox-relay/files/alerts/outbox-relay-rules.yaml";

// ---------------------------------------------------------------------------------------------------------------
// Commands and HTTP (through curl)

std::string shellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

struct ShellResult {
  int status = -1;
  std::string output;  // stdout and stderr
};

ShellResult shell(const std::string& command) {
  ShellResult result;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) throw std::runtime_error("popen failed: " + command);
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) result.output.append(buf, n);
  int status = pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

struct HttpResponse {
  int status = 0;  // 0: no HTTP answer at all
  std::string body;
};

// GET `url`, with `query` parameters URL-encoded by curl.
HttpResponse httpGet(const std::string& url, const std::vector<std::pair<std::string, std::string>>& query = {}) {
  std::string command = "curl -sS --max-time 20 -G -w '\\n%{http_code}'";
  for (auto& [k, v] : query) command += " --data-urlencode " + shellQuote(k + "=" + v);
  ShellResult r = shell(command + " " + shellQuote(url));
  HttpResponse response;
  size_t nl = r.output.rfind('\n');
  if (nl == std::string::npos) return response;
  response.status = std::atoi(r.output.c_str() + nl + 1);
  response.body = r.output.substr(0, nl);
  return response;
}

std::string readSource(const std::string& relative) {
  std::ifstream in(sourcePath(relative));
  if (!in) throw std::runtime_error("cannot read " + sourcePath(relative));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The relay and the sink log "serving /metrics, /healthz and /readyz on HOST:PORT" at start (port 0 resolved).
std::string waitForMetricsAddress(ChildProcess& process) {
  static const std::regex serving(R"(serving /metrics, /healthz and /readyz on ([0-9.]+:[0-9]+))");
  std::string address;
  waitFor(
      [&] {
        std::smatch m;
        std::string log = process.log();
        if (std::regex_search(log, m, serving)) address = m[1];
        return !address.empty() || !process.running();
      },
      60s);
  if (address.empty()) throw std::runtime_error(process.label() + " never logged its metrics address");
  return address;
}

// ---------------------------------------------------------------------------------------------------------------
// Prometheus

class Prometheus {
 public:
  // Scrapes each job's targets every second and evaluates `ruleFile` every second.
  Prometheus(const std::vector<std::pair<std::string, std::string>>& jobTargets, const std::string& ruleFile) {
    port_ = freeLoopbackPort();
    std::ostringstream config;
    config << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n";
    config << "rule_files:\n  - " << json(ruleFile).dump() << "\n";
    config << "scrape_configs:\n";
    for (auto& [job, target] : jobTargets) {
      config << "  - job_name: " << json(job).dump() << "\n    static_configs:\n      - targets: ["
             << json(target).dump() << "]\n";
    }
    configPath_ = writeTempFile("prometheus.yml", config.str());
    storage_ = std::filesystem::path(configPath_).parent_path() / "data";
    process_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{"/usr/bin/prometheus", "--config.file=" + configPath_,
                                 "--storage.tsdb.path=" + storage_.string(),
                                 "--web.listen-address=127.0.0.1:" + std::to_string(port_), "--log.level=warn"},
        "prometheus");
    bool ready = waitFor([&] { return httpGet(url("/-/ready")).status == 200 || !process_->running(); }, 60s, 200ms);
    if (!ready || !process_->running()) throw std::runtime_error("Prometheus did not become ready");
  }
  ~Prometheus() {
    process_.reset();
    std::error_code ec;
    std::filesystem::remove_all(std::filesystem::path(configPath_).parent_path(), ec);
  }

  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port_) + path; }

  // /api/v1/query; the whole answer ({"status": ..., "data": ...} or {"status": "error", "error": ...}).
  json query(const std::string& expr) const {
    HttpResponse r = httpGet(url("/api/v1/query"), {{"query", expr}});
    try {
      return json::parse(r.body);
    } catch (const std::exception&) {
      return json{{"status", "error"}, {"error", "HTTP " + std::to_string(r.status) + ": " + r.body}};
    }
  }
  static bool ok(const json& answer) { return answer.value("status", "") == "success"; }
  static size_t resultCount(const json& answer) {
    if (!ok(answer)) return 0;
    const json& result = answer["data"]["result"];
    return result.is_array() ? result.size() : 1;  // scalars and strings are one value
  }
  json rules() const { return json::parse(httpGet(url("/api/v1/rules")).body); }

 private:
  int port_ = 0;
  std::string configPath_;
  std::filesystem::path storage_;
  std::unique_ptr<ChildProcess> process_;
};

// ---------------------------------------------------------------------------------------------------------------
// The dashboard's queries

struct PanelQuery {
  std::string panel;
  std::string expr;  // Grafana variables substituted
};

// Replaces $name, ${name} and [[name]] by `value`.
void substitute(std::string& expr, const std::string& name, const std::string& value) {
  for (const std::string& form : {"${" + name + "}", "[[" + name + "]]", "$" + name}) {
    for (size_t at = expr.find(form); at != std::string::npos; at = expr.find(form, at + value.size())) {
      expr.replace(at, form.size(), value);
    }
  }
}

// Grafana's built-in intervals become fixed ranges; the dashboard's variables take "All" (their allValue) or their
// current value.
std::string grafanaToPromQL(std::string expr, const json& dashboard) {
  substitute(expr, "__rate_interval", "1m");
  substitute(expr, "__interval", "15s");
  for (const json& variable : dashboard["templating"]["list"]) {
    std::string name = variable.at("name");
    if (variable.value("type", "") == "datasource") continue;
    std::string value = ".*";
    if (variable.value("includeAll", false)) {
      value = variable.value("allValue", ".*");
    } else if (variable.contains("current") && variable["current"].contains("value")) {
      const json& current = variable["current"]["value"];
      value = current.is_array() ? current.at(0).get<std::string>() : current.get<std::string>();
    }
    substitute(expr, name, value);
  }
  return expr;
}

std::vector<PanelQuery> dashboardQueries(const json& dashboard, std::vector<std::string>& problems) {
  std::vector<PanelQuery> out;
  std::function<void(const json&)> walk = [&](const json& panels) {
    for (const json& panel : panels) {
      std::string title = panel.value("title", "(untitled)");
      if (panel.contains("panels")) walk(panel["panels"]);
      if (panel.value("type", "") == "row") continue;
      if (!panel.contains("targets") || panel["targets"].empty()) {
        problems.push_back("panel \"" + title + "\" has no queries");
        continue;
      }
      for (const json& target : panel["targets"]) {
        std::string expr = target.value("expr", "");
        if (expr.empty()) {
          problems.push_back("panel \"" + title + "\" has a target without expr");
          continue;
        }
        std::string promql = grafanaToPromQL(expr, dashboard);
        if (promql.find('$') != std::string::npos || promql.find("[[") != std::string::npos) {
          problems.push_back("panel \"" + title + "\": a Grafana variable or function is left in " + promql);
        }
        out.push_back({title, promql});
      }
    }
  };
  walk(dashboard.at("panels"));
  return out;
}

// The selectors inside label_values(SELECTOR, label) of the dashboard's query variables (the part Prometheus runs).
std::vector<std::string> variableSelectors(const json& dashboard) {
  std::vector<std::string> out;
  static const std::regex labelValues(R"(label_values\((.*),\s*\w+\)\s*$)");
  for (const json& variable : dashboard["templating"]["list"]) {
    if (variable.value("type", "") != "query") continue;
    std::string text =
        variable["query"].is_object() ? variable["query"].value("query", "") : variable["query"].get<std::string>();
    std::smatch m;
    out.push_back(std::regex_search(text, m, labelValues) ? m[1].str() : text);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// The sink

std::string sinkConfig(const std::string& topicRegex, const std::string& readModel, const std::string& groupId) {
  std::ostringstream out;
  out << "dead_letter_topic = " << tomlString(groupId + ".deadletter") << "\n\n";
  out << "[log]\nlevel = \"info\"\n\n";
  out << "[database]\nconninfo = " << tomlString(pgUrl()) << "\n\n";
  out << "[kafka]\nbootstrap_servers = " << tomlString(kafkaBootstrap()) << "\ngroup_id = " << tomlString(groupId)
      << "\n[kafka.properties]\n\"topic.metadata.refresh.interval.ms\" = \"1000\"\n\n";
  out << "[batch]\nmax_events = 100\nmax_wait_ms = 50\n\n";
  out << "[[projection]]\nname = \"observability\"\ntopic = " << tomlString(topicRegex)
      << "\nevent_type = \"*\"\nsql = "
      << tomlString("INSERT INTO " + readModel +
                    " (id, payload) VALUES ($1::uuid, $2::jsonb) ON CONFLICT (id) DO NOTHING")
      << "\nparams = [\"@id\", \"@payload\"]\n\n";
  out << "[metrics]\nlisten = \"127.0.0.1:0\"\nlag_interval_ms = 1000\n";
  return out.str();
}

std::string describe(const json& answer) {
  std::string text = answer.dump();
  return text.size() > 400 ? text.substr(0, 400) + "..." : text;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------

TEST(Observability, DashboardAndAlertRulesWorkAgainstARealPrometheus) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "obs");
  std::string topicPrefix = uniqueName("obs");
  RelayConfigBuilder config;
  config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {{"eventType", "type"}}});
  config.metricsListen("127.0.0.1:0");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  // A publication of every operation, as users often create it: the relay counts the UPDATEs and DELETEs it ignores.
  pg.exec("CREATE PUBLICATION " + config.publication() + " FOR TABLE public." + table);
  auto relay = RelayProcess::start(config.render());
  std::string relayAddress = waitForMetricsAddress(*relay);
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s));

  std::vector<std::pair<std::string, std::string>> jobs = {{"outbox-relay", relayAddress}};
  // The sink projects the relay's topics into a read model; its example config must be valid (it is the schema the
  // test's config follows).
  auto example = runCommand({binPath("outbox-sink"), "--check-config", sourcePath("examples/sink.toml")}, 60s);
  ASSERT_TRUE(example.status.success()) << "outbox-sink --check-config examples/sink.toml:\n" << example.output;
  std::string readModel = uniqueName("obs_read_model");
  pg.exec("CREATE TABLE public." + readModel + " (id uuid PRIMARY KEY, payload jsonb)");
  cleanup.addTable(readModel);
  std::string sinkConfigPath =
      writeTempFile("sink.toml", sinkConfig("^" + topicPrefix + "\\..*", readModel, uniqueName("obs-sink")));
  auto check = runCommand({binPath("outbox-sink"), "--check-config", sinkConfigPath}, 60s);
  ASSERT_TRUE(check.status.success()) << "the sink rejects the test's config:\n" << check.output;
  ChildProcess sink({binPath("outbox-sink"), "--config", sinkConfigPath}, "sink");
  jobs.emplace_back("outbox-sink", waitForMetricsAddress(sink));

  Prometheus prometheus(jobs, sourcePath(kRules));
  BackgroundLoad load(table, makeAggregates(topicPrefix, 20), 5, 20ms, 7);
  // Outbox housekeeping as applications do it: published rows are deleted (and, here, one is updated).
  ASSERT_TRUE(waitFor([&] { return load.written() >= 50; }, 60s));
  pg.exec("UPDATE " + table + " SET type = type WHERE id = (SELECT id FROM " + table + " LIMIT 1)");
  pg.exec("DELETE FROM " + table + " WHERE id IN (SELECT id FROM " + table + " LIMIT 10)");

  json dashboard = json::parse(readSource(kDashboard));
  std::vector<std::string> problems;
  std::vector<PanelQuery> queries = dashboardQueries(dashboard, problems);
  for (const std::string& p : problems) ADD_FAILURE() << kDashboard << ": " << p;
  ASSERT_GT(queries.size(), 20u);

  // Not only series but the load in them: events flow, and the latency histograms have observations (a
  // histogram_quantile over empty buckets is NaN, which no comparison keeps).
  const std::vector<std::string> flowing = {
      "sum(rate(outbox_relay_events_published_total{job=\"outbox-relay\"}[1m])) > 0",
      "histogram_quantile(0.99, sum by (le) "
      "(rate(outbox_relay_commit_to_ack_seconds_bucket{job=\"outbox-relay\"}[1m]))) >= 0",
      "sum(rate(outbox_sink_events_applied_total{job=\"outbox-sink\"}[1m])) > 0",
      "histogram_quantile(0.99, sum by (le) (rate(outbox_sink_batch_seconds_bucket{job=\"outbox-sink\"}[1m]))) >= 0",
  };

  // Every panel query shows data once Prometheus has a few scrapes of a loaded relay (and sink).
  bool allData = waitFor(
      [&] {
        for (const std::string& expr : flowing) {
          if (Prometheus::resultCount(prometheus.query(expr)) == 0) return false;
        }
        for (const PanelQuery& q : queries) {
          if (Prometheus::resultCount(prometheus.query(q.expr)) == 0) return false;
        }
        return true;
      },
      90s, 2s);
  for (const std::string& expr : flowing) {
    json answer = prometheus.query(expr);
    EXPECT_GT(Prometheus::resultCount(answer), 0u) << "no load seen: " << expr << "\n" << describe(answer);
  }
  for (const PanelQuery& q : queries) {
    json answer = prometheus.query(q.expr);
    EXPECT_TRUE(Prometheus::ok(answer)) << "panel \"" << q.panel << "\": " << q.expr << "\n" << describe(answer);
    EXPECT_GT(Prometheus::resultCount(answer), 0u) << "panel \"" << q.panel << "\" shows no data: " << q.expr << "\n"
                                                   << describe(answer);
  }
  EXPECT_TRUE(allData || HasFailure());
  for (const std::string& selector : variableSelectors(dashboard)) {
    json answer = prometheus.query(selector);
    EXPECT_TRUE(Prometheus::ok(answer)) << "dashboard variable query " << selector << "\n" << describe(answer);
  }

  // The rule file, as Prometheus loaded it: every alert of the file is there, evaluates without error, its
  // expression parses, and none fires while everything is healthy.
  std::string rulesText = readSource(kRules);
  size_t alertsInFile = 0;
  for (size_t at = rulesText.find("- alert:"); at != std::string::npos; at = rulesText.find("- alert:", at + 1)) {
    ++alertsInFile;
  }
  json loaded;
  bool evaluated = waitFor(
      [&] {
        loaded = prometheus.rules();
        size_t evaluatedRules = 0;
        for (const json& group : loaded["data"]["groups"]) {
          for (const json& rule : group["rules"]) evaluatedRules += rule.value("health", "") != "unknown";
        }
        return evaluatedRules >= alertsInFile;
      },
      60s, 1s);
  EXPECT_TRUE(evaluated) << "Prometheus did not evaluate every rule: " << describe(loaded);
  // An alert over a misspelt metric would evaluate fine and never fire: every metric a rule names must be one
  // Prometheus has scraped.
  json names = json::parse(httpGet(prometheus.url("/api/v1/label/__name__/values")).body);
  std::set<std::string> scraped(names["data"].begin(), names["data"].end());
  static const std::regex metricName(R"(\b(outbox_[a-z0-9_]+|up)\b)");
  size_t alertsLoaded = 0;
  for (const json& group : loaded["data"]["groups"]) {
    for (const json& rule : group["rules"]) {
      ++alertsLoaded;
      std::string name = rule.value("name", "");
      std::string expr = rule.value("query", "");
      for (std::sregex_iterator it(expr.begin(), expr.end(), metricName), end; it != end; ++it) {
        EXPECT_TRUE(scraped.count((*it)[1].str()))
            << name << " names " << (*it)[1].str() << ", which neither the relay nor the sink exports: " << expr;
      }
      EXPECT_EQ(rule.value("health", ""), "ok") << name << ": " << rule.value("lastError", "") << "\n" << expr;
      json answer = prometheus.query(expr);
      EXPECT_TRUE(Prometheus::ok(answer)) << name << ": " << expr << "\n" << describe(answer);
      EXPECT_EQ(Prometheus::resultCount(answer), 0u) << "alert " << name << " fires on a healthy relay"
                                                     << " and sink"
                                                     << ": " << expr << "\n"
                                                     << describe(answer);
    }
  }
  EXPECT_EQ(alertsLoaded, alertsInFile) << "Prometheus loaded a different number of alerts than " << kRules << " has";

  auto promtoolRules = runCommand({"/usr/bin/promtool", "check", "rules", sourcePath(kRules)}, 60s);
  EXPECT_TRUE(promtoolRules.status.success()) << promtoolRules.output;
  for (auto& [job, address] : jobs) {
    ShellResult lint = shell("curl -sS --max-time 20 " + shellQuote("http://" + address + "/metrics") +
                             " | /usr/bin/promtool check metrics");
    EXPECT_EQ(lint.status, 0) << job << ": promtool check metrics failed:\n" << lint.output;
    EXPECT_EQ(lint.output, "") << job << ": promtool check metrics reports:\n" << lint.output;
  }

  load.stop();
  EXPECT_TRUE(relay->running()) << "the relay died";
  EXPECT_TRUE(sink.running()) << "the sink died";
}

TEST(Observability, ReadyzAndNotReadyAlertFollowAKafkaOutage) {
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "obsk");
  RelayConfigBuilder config;
  config.addOutbox({table, uniqueName("obsk") + ".{aggregatetype}", {}, {}});
  config.metricsListen("127.0.0.1:0");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start(config.render());
  std::string base = "http://" + waitForMetricsAddress(*relay);
  Prometheus prometheus({{"outbox-relay", base.substr(7)}}, sourcePath(kRules));

  // The alert's expression, without its `for`: what Prometheus would hold pending.
  std::string notReady;
  ASSERT_TRUE(waitFor(
      [&] {
        json rules = prometheus.rules();  // a named value: a temporary would die before the loop runs
        for (const json& group : rules["data"]["groups"]) {
          for (const json& rule : group["rules"]) {
            if (rule.value("name", "") == "OutboxRelayNotReady") notReady = rule.value("query", "");
          }
        }
        return !notReady.empty();
      },
      30s));
  auto status = [&](const std::string& path) { return httpGet(base + path).status; };
  auto notReadyFires = [&] { return Prometheus::resultCount(prometheus.query(notReady)) > 0; };

  ASSERT_TRUE(waitFor([&] { return status("/readyz") == 200; }, 120s)) << httpGet(base + "/readyz").body;
  ASSERT_TRUE(
      waitFor([&] { return Prometheus::resultCount(prometheus.query("up{job=\"outbox-relay\"} == 1")) > 0; }, 60s));
  EXPECT_FALSE(notReadyFires());
  EXPECT_EQ(status("/healthz"), 200);

  {
    KafkaOutage outage;
    EXPECT_TRUE(waitFor([&] { return status("/readyz") == 503; }, 120s, 250ms))
        << "/readyz still answers " << status("/readyz") << " with Kafka down";
    HttpResponse readyz = httpGet(base + "/readyz");
    EXPECT_EQ(readyz.status, 503);
    EXPECT_NE(readyz.body.find("Kafka"), std::string::npos) << readyz.body;
    EXPECT_EQ(status("/healthz"), 200) << "liveness must not follow Kafka";
    EXPECT_TRUE(waitFor(notReadyFires, 60s, 1s)) << "OutboxRelayNotReady does not see the outage: " << notReady;
    EXPECT_EQ(status("/healthz"), 200);
    outage.end();
  }
  EXPECT_TRUE(waitFor([&] { return status("/readyz") == 200; }, 180s, 250ms))
      << "/readyz answers " << status("/readyz") << " after Kafka returned: " << httpGet(base + "/readyz").body;
  EXPECT_EQ(status("/healthz"), 200);
  EXPECT_TRUE(waitFor([&] { return !notReadyFires(); }, 60s, 1s)) << "OutboxRelayNotReady still fires";
  EXPECT_TRUE(relay->running());
}

// ---------------------------------------------------------------------------------------------------------------

namespace {
// PGURL with `password` in the URI's user info: postgresql://user:PASSWORD@host:port/db.
std::string withPassword(const std::string& url, const std::string& password) {
  size_t scheme = url.find("://");
  size_t at = url.find('@', scheme == std::string::npos ? 0 : scheme + 3);
  if (scheme == std::string::npos || at == std::string::npos) throw std::runtime_error("PGURL without user: " + url);
  std::string user = url.substr(scheme + 3, at - scheme - 3);
  user = user.substr(0, user.find(':'));
  return url.substr(0, scheme + 3) + user + ":" + password + url.substr(at);
}
// The line of `text` holding position `at`.
std::string lineAround(const std::string& text, size_t at) {
  if (at == std::string::npos) return "";
  size_t start = text.rfind('\n', at);
  size_t end = text.find('\n', at);
  start = start == std::string::npos ? 0 : start + 1;
  return text.substr(start, end == std::string::npos ? std::string::npos : end - start);
}
}  // namespace

TEST(Observability, NoPasswordInLogsOrMetricsAndJsonLogsAreJsonLines) {
  // trust authentication in the dev stack: any password is accepted, so all three places can carry it.
  std::string password = "obsPw" + std::to_string(getpid()) + "x" +
                         std::to_string(std::chrono::steady_clock::now().time_since_epoch().count() % 1000000007);
  std::string passwordFile = writeTempFile("pg-password", password + "\n");
  std::string kafkaSecretFile = writeTempFile("kafka-password", password + "\n");
  PgConnection pg(pgUrl());
  std::string table = createOutboxTable(pg, "obss");
  ReplicationCleanup dropTable(uniqueName("obss_noslot"), uniqueName("obss_nopub"), {table});
  KafkaOffsets offsets(kafkaBootstrap());

  for (std::string format : {"plain", "json"}) {
    SCOPED_TRACE("log format " + format);
    std::string topicPrefix = uniqueName("obss");  // a topic per run: each run's relay starts a fresh slot
    RelayConfigBuilder config;
    config.addOutbox({table, topicPrefix + ".{aggregatetype}", {}, {}});
    config.metricsListen("127.0.0.1:0");
    config.logLevel("debug");
    config.source("password_file", tomlString(passwordFile));
    std::string toml = config.render();
    std::string plainConninfo = "conninfo = " + tomlString(pgUrl()) + "\n";
    size_t at = toml.find(plainConninfo);
    ASSERT_NE(at, std::string::npos);
    toml.replace(at, plainConninfo.size(), "conninfo = " + tomlString(withPassword(pgUrl(), password)) + "\n");
    size_t formatAt = toml.find("format = \"plain\"");
    ASSERT_NE(formatAt, std::string::npos);
    toml.replace(formatAt, 16, "format = " + tomlString(format));
    toml += "\n[kafka.secret_files]\n\"sasl.password\" = " + tomlString(kafkaSecretFile) + "\n";
    ASSERT_NE(toml.find(password), std::string::npos);  // the relay gets it in its config file

    ReplicationCleanup cleanup(config.slot(), config.publication());
    auto relay = RelayProcess::start(toml, "relay-" + format);
    std::string base = "http://" + waitForMetricsAddress(*relay);
    ASSERT_TRUE(waitFor([&] { return httpGet(base + "/readyz").status == 200; }, 120s))
        << httpGet(base + "/readyz").body;
    pg.exec("INSERT INTO " + table +
            " (aggregatetype, aggregateid, type, payload) SELECT 'order', 'o-' || g, 'Created', "
            "jsonb_build_object('n', g) FROM generate_series(1, 50) g");
    EXPECT_TRUE(waitFor(
        [&] {
          try {
            return offsets.recordCount(topicPrefix + ".order") >= 50;
          } catch (const std::exception&) {
            return false;  // the topic is being created (no leader yet)
          }
        },
        60s));
    std::string scraped =
        httpGet(base + "/metrics").body + httpGet(base + "/healthz").body + httpGet(base + "/readyz").body;
    EXPECT_NE(scraped.find("outbox_relay_events_published_total"), std::string::npos);
    relay->sigterm();
    auto exit = relay->waitExit(60s);
    ASSERT_TRUE(exit.has_value()) << "the relay did not stop on SIGTERM";
    EXPECT_TRUE(exit->success()) << exit->toString();

    std::string log = relay->log();
    EXPECT_EQ(log.find(password), std::string::npos)
        << "the password is in the " << format << " log: " << lineAround(log, log.find(password));
    EXPECT_EQ(scraped.find(password), std::string::npos)
        << "the password is on /metrics, /healthz or /readyz: " << lineAround(scraped, scraped.find(password));
    EXPECT_NE(log.find("<redacted>"), std::string::npos) << "the start-up summary shows no redacted secret";

    if (format == "json") {
      std::istringstream lines(log);
      std::string line;
      int count = 0;
      while (std::getline(lines, line)) {
        ++count;
        json record;
        try {
          record = json::parse(line);
        } catch (const std::exception& e) {
          ADD_FAILURE() << "line " << count << " of the json log is not JSON (" << e.what() << "): " << line;
          continue;
        }
        EXPECT_TRUE(record.is_object() && record.contains("ts") && record["ts"].is_string() &&
                    record.contains("level") && record["level"].is_string() && record.contains("msg") &&
                    record["msg"].is_string())
            << "line " << count << " lacks ts/level/msg: " << line;
      }
      EXPECT_GT(count, 3);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------

namespace {
// One sample of the Prometheus text format: name{label="value",...} value.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  std::string value;
};

std::vector<Sample> parseSamples(const std::string& exposition) {
  static const std::regex line(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$)");
  static const std::regex label(R"re(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)")re");
  std::vector<Sample> samples;
  std::istringstream in(exposition);
  std::string text;
  while (std::getline(in, text)) {
    std::smatch m;
    if (text.empty() || text[0] == '#' || !std::regex_match(text, m, line)) continue;
    Sample sample{m[1], {}, m[3]};
    std::string labels = m[2];
    for (std::sregex_iterator it(labels.begin(), labels.end(), label), end; it != end; ++it) {
      sample.labels[(*it)[1]] = (*it)[2];
    }
    samples.push_back(std::move(sample));
  }
  return samples;
}

// The value of the series `name` with exactly `labels`, nullopt when the scrape does not have it.
std::optional<std::string> seriesValue(const std::vector<Sample>& samples, const std::string& name,
                                       const std::map<std::string, std::string>& labels) {
  for (const Sample& s : samples) {
    if (s.name == name && s.labels == labels) return s.value;
  }
  return std::nullopt;
}
}  // namespace

TEST(Observability, SeriesWhoseLabelsAreKnownAtStartAreExportedAtZeroBeforeAnyEvent) {
  PgConnection pg(pgUrl());
  std::string fixedTable = createOutboxTable(pg, "obsz");    // a static topic: its published series are known
  std::string routedTable = createOutboxTable(pg, "obszr");  // a topic per aggregate type: known only per event
  std::string fixedTopic = uniqueName("obsz");
  std::string messageTopic = uniqueName("obszm");
  RelayConfigBuilder config;
  config.addOutbox({fixedTable, fixedTopic, {}, {}});
  config.addOutbox({routedTable, uniqueName("obszr") + ".{aggregatetype}", {}, {}});
  config.messages(messageTopic);
  config.metricsListen("127.0.0.1:0");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {fixedTable, routedTable});
  auto relay = RelayProcess::start(config.render());
  std::string base = "http://" + waitForMetricsAddress(*relay);

  using Labels = std::map<std::string, std::string>;
  std::vector<std::pair<std::string, Labels>> expected = {
      {"outbox_relay_reconnects_total", {{"target", "postgres"}}},
      {"outbox_relay_reconnects_total", {{"target", "kafka"}}},
      {"outbox_relay_publish_errors_total", {{"reason", "queue_full"}}},
      {"outbox_relay_publish_errors_total", {{"reason", "produce_failed"}}},
      {"outbox_relay_rejected_total", {{"reason", "too_large"}}},
      {"outbox_relay_rejected_total", {{"reason", "unknown_topic"}}},
      {"outbox_relay_rejected_total", {{"reason", "invalid_topic"}}},
      {"outbox_relay_rejected_total", {{"reason", "invalid_record"}}},
      {"outbox_relay_events_dead_lettered_total", {{"table", "message"}}},
      {"outbox_relay_messages_ignored_total", {{"reason", "non_transactional"}}},
      {"outbox_relay_messages_ignored_total", {{"reason", "disabled"}}},
      {"outbox_relay_events_published_total", {{"table", "message"}, {"topic", messageTopic}}},
      {"outbox_relay_published_bytes_total", {{"table", "message"}, {"topic", messageTopic}}},
      {"outbox_relay_events_published_total", {{"table", "public." + fixedTable}, {"topic", fixedTopic}}},
      {"outbox_relay_published_bytes_total", {{"table", "public." + fixedTable}, {"topic", fixedTopic}}},
  };
  for (const std::string& table : {fixedTable, routedTable}) {
    for (const char* operation : {"update", "delete", "truncate"}) {
      expected.push_back(
          {"outbox_relay_events_ignored_total", {{"table", "public." + table}, {"operation", operation}}});
    }
    expected.push_back({"outbox_relay_events_dead_lettered_total", {{"table", "public." + table}}});
  }
  auto check = [&](const std::string& when) {
    HttpResponse scrape = httpGet(base + "/metrics");
    ASSERT_EQ(scrape.status, 200) << when;
    std::vector<Sample> samples = parseSamples(scrape.body);
    for (const auto& [name, labels] : expected) {
      std::string series = name + json(labels).dump();
      std::optional<std::string> value = seriesValue(samples, name, labels);
      EXPECT_TRUE(value.has_value()) << when << ": no series " << series;
      if (value) {
        EXPECT_EQ(std::stod(*value), 0.0) << when << ": " << series << " = " << *value;
      }
    }
    for (const Sample& s : samples) {
      if (s.name != "outbox_relay_events_published_total" && s.name != "outbox_relay_published_bytes_total") continue;
      auto table = s.labels.find("table");
      EXPECT_TRUE(table == s.labels.end() || table->second != "public." + routedTable)
          << when << ": a series for a topic not known yet: " << s.name << json(s.labels).dump();
    }
  };
  check("first scrape");
  // Still 0 once the relay is healthy (streaming, Kafka reachable) and nothing was written.
  ASSERT_TRUE(waitFor([&] { return httpGet(base + "/readyz").status == 200; }, 120s)) << httpGet(base + "/readyz").body;
  check("ready, no event yet");
  EXPECT_TRUE(relay->running());
}

// ---------------------------------------------------------------------------------------------------------------
// Slot health (in the version matrix: the probe's query differs by server version, 13 to 18)

namespace {
// The value of one series of a scrape as a number ("Nan" and "NaN" alike); nullopt when the series is absent.
std::optional<double> seriesNumber(const std::vector<Sample>& samples, const std::string& name,
                                   const std::map<std::string, std::string>& labels = {}) {
  auto text = seriesValue(samples, name, labels);
  if (!text) return std::nullopt;
  return std::strtod(text->c_str(), nullptr);
}

int serverVersionNum(PgConnection& pg) { return std::stoi(pg.scalar("SHOW server_version_num").value()); }

// One probe, driven as the relay's loop drives it, until its answer (nullopt when it gives up).
std::optional<ServerWalProbe::Answer> probeOnce(ServerWalProbe& probe) {
  probe.start();
  auto end = std::chrono::steady_clock::now() + 15s;
  while (std::chrono::steady_clock::now() < end) {
    if (auto answer = probe.advance()) return answer;
    if (!probe.busy()) return std::nullopt;
    pollfd pfd{probe.socket(), probe.events(), 0};
    ::poll(&pfd, 1, 100);
  }
  return std::nullopt;
}
}  // namespace

// The relay's /metrics against the real server: the slot it streams from is there, active, its WAL reserved, and
// safe_wal_size follows max_slot_wal_keep_size (NaN while unlimited, the dev stack's default; a byte count once set).
TEST(Observability, SlotHealthSeriesShowTheSlotAsTheServerReportsIt) {
  PgConnection pg(pgUrl());
  int version = serverVersionNum(pg);
  std::string table = createOutboxTable(pg, "obsh");
  RelayConfigBuilder config;
  config.addOutbox({table, uniqueName("obsh"), {}, {}});
  config.metricsListen("127.0.0.1:0");
  config.source("lag_poll_interval_ms", "200");
  ReplicationCleanup cleanup(config.slot(), config.publication(), {table});
  auto relay = RelayProcess::start(config.render());
  std::string base = "http://" + waitForMetricsAddress(*relay);
  ASSERT_TRUE(waitForSlotStreaming(pg, config.slot(), 120s));

  auto scrape = [&] { return parseSamples(httpGet(base + "/metrics").body); };
  std::vector<Sample> samples;
  bool seen = waitFor(
      [&] {
        samples = scrape();
        return seriesNumber(samples, "outbox_relay_slot_exists") == 1.0 &&
               seriesNumber(samples, "outbox_relay_slot_active") == 1.0;
      },
      60s, 200ms);
  ASSERT_TRUE(seen) << "the slot's row never showed on /metrics: exists "
                    << seriesNumber(samples, "outbox_relay_slot_exists").value_or(-1) << ", active "
                    << seriesNumber(samples, "outbox_relay_slot_active").value_or(-1);

  // The server's own view of the slot, which the series must match.
  auto row = pg.rows("SELECT wal_status, safe_wal_size IS NULL FROM pg_replication_slots WHERE slot_name = " +
                     sqlLiteral(config.slot()));
  ASSERT_EQ(row.size(), 1u);
  EXPECT_EQ(row[0][0], "reserved") << "a fresh slot on the dev stack";
  EXPECT_EQ(row[0][1], "t") << "the dev stack runs with max_slot_wal_keep_size = -1";
  for (std::string_view status : RelayMetrics::kSlotWalStatuses) {
    EXPECT_EQ(seriesNumber(samples, "outbox_relay_slot_wal_status", {{"status", std::string(status)}}),
              status == "reserved" ? 1.0 : 0.0)
        << status;
  }
  auto safe = seriesNumber(samples, "outbox_relay_slot_safe_wal_size_bytes");
  ASSERT_TRUE(safe.has_value());
  EXPECT_TRUE(std::isnan(*safe)) << "unlimited is NaN, got " << *safe;
  for (std::string_view reason : RelayMetrics::kSlotInvalidationReasons) {
    EXPECT_EQ(seriesNumber(samples, "outbox_relay_slot_invalidated", {{"reason", std::string(reason)}}), 0.0) << reason;
  }
  EXPECT_EQ(seriesNumber(samples, "outbox_relay_slot_conflicting"), 0.0);
  EXPECT_EQ(seriesNumber(samples, "outbox_relay_slot_inactive_seconds"), 0.0);
  EXPECT_EQ(seriesNumber(samples, "outbox_relay_slot_failover"), 0.0) << "source.failover is off";
  EXPECT_EQ(seriesNumber(samples, "outbox_relay_slot_synced"), 0.0);

  // A WAL limit: safe_wal_size becomes a byte count below it, and NaN again once the limit is gone.
  struct ResetKeepSize {
    PgConnection& pg;
    ~ResetKeepSize() {
      pg.exec("ALTER SYSTEM RESET max_slot_wal_keep_size");
      pg.exec("SELECT pg_reload_conf()");
    }
  } reset{pg};
  pg.exec("ALTER SYSTEM SET max_slot_wal_keep_size = '1GB'");
  pg.exec("SELECT pg_reload_conf()");
  double limited = 0;
  EXPECT_TRUE(waitFor(
      [&] {
        auto value = seriesNumber(scrape(), "outbox_relay_slot_safe_wal_size_bytes");
        limited = value.value_or(std::nan(""));
        return value && !std::isnan(*value);
      },
      60s, 200ms))
      << "safe_wal_size stayed NaN with max_slot_wal_keep_size = 1GB";
  auto server =
      pg.scalar("SELECT safe_wal_size FROM pg_replication_slots WHERE slot_name = " + sqlLiteral(config.slot()));
  ASSERT_TRUE(server.has_value());
  EXPECT_GT(limited, 0.0);
  EXPECT_LE(limited, 1073741824.0 + 64.0 * 1048576) << "more than max_slot_wal_keep_size plus a WAL segment";
  EXPECT_LT(std::abs(limited - std::stod(*server)), 64.0 * 1048576)
      << "the metric " << limited << " is far from the server's safe_wal_size " << *server;
  pg.exec("ALTER SYSTEM RESET max_slot_wal_keep_size");
  pg.exec("SELECT pg_reload_conf()");
  EXPECT_TRUE(waitFor(
      [&] {
        auto value = seriesNumber(scrape(), "outbox_relay_slot_safe_wal_size_bytes");
        return value && std::isnan(*value);
      },
      60s, 200ms))
      << "safe_wal_size still a number after max_slot_wal_keep_size was reset";

  ShellResult lint =
      shell("curl -sS --max-time 20 " + shellQuote(base + "/metrics") + " | /usr/bin/promtool check metrics");
  EXPECT_EQ(lint.status, 0) << "promtool check metrics failed:\n" << lint.output;
  EXPECT_TRUE(relay->running());
  std::cout << "[ metric ] slot_health_server_version=" << version << std::endl;
}

// The probe's query on the real server, whatever its version: a slot that does not exist is a row that says so; an
// inactive slot (failover on 17+) has the columns its version has; and a multi-host conninfo whose first host
// refuses, with target_session_attrs=primary, still reaches the server.
TEST(Observability, TheLagProbeReadsTheSlotRowOnEveryServerVersion) {
  PgConnection pg(pgUrl());
  int version = serverVersionNum(pg);
  SCOPED_TRACE("server_version_num " + std::to_string(version));
  SourceConfig source;
  source.conninfo = pgUrl();
  source.slot = uniqueName("obs_probe");
  ServerWalProbe probe(source);

  auto gone = probeOnce(probe);
  ASSERT_TRUE(gone.has_value()) << "no answer from a running server";
  EXPECT_GT(gone->serverWal.value(), 0u);
  EXPECT_FALSE(gone->slot.exists);

  ReplicationCleanup cleanup(source.slot, uniqueName("obs_probe_nopub"));
  pg.exec("SELECT pg_create_logical_replication_slot(" + sqlLiteral(source.slot) + ", 'pgoutput'" +
          (version >= 170000 ? ", false, false, true)" : ")"));
  auto there = probeOnce(probe);  // on the same connection
  ASSERT_TRUE(there.has_value());
  const SlotHealth& slot = there->slot;
  EXPECT_TRUE(slot.exists);
  EXPECT_FALSE(slot.active) << "nobody streams from it";
  EXPECT_EQ(slot.walStatus, "reserved");
  EXPECT_FALSE(slot.safeWalSize.has_value()) << "the dev stack runs with max_slot_wal_keep_size = -1";
  EXPECT_FALSE(slot.conflicting);
  EXPECT_EQ(slot.invalidationReason, "");
  EXPECT_FALSE(slot.synced) << "a primary's own slot";
  if (version >= 170000) {
    ASSERT_TRUE(slot.inactiveSeconds.has_value()) << "inactive_since is set for a slot nobody streams from";
    EXPECT_GE(*slot.inactiveSeconds, 0.0);
    EXPECT_LT(*slot.inactiveSeconds, 600.0);
    EXPECT_TRUE(slot.failover) << "created with failover = true";
  } else {
    EXPECT_FALSE(slot.inactiveSeconds.has_value()) << "no inactive_since before 17: unknown";
    EXPECT_FALSE(slot.failover);
  }

  // Multi-host: the first host has nothing listening, libpq's asynchronous connect moves on to the second.
  std::string port = PQport(pg.raw());
  SourceConfig multi = source;
  multi.conninfo = pgConninfoWith({{"host", "127.0.0.1,127.0.0.1"},
                                   {"port", std::to_string(freeLoopbackPort()) + "," + port},
                                   {"target_session_attrs", "primary"}});
  ServerWalProbe multiProbe(multi);
  auto viaMulti = probeOnce(multiProbe);
  ASSERT_TRUE(viaMulti.has_value()) << "no answer through " << multi.conninfo;
  EXPECT_TRUE(viaMulti->slot.exists);
  EXPECT_EQ(viaMulti->slot.walStatus, "reserved");
}
