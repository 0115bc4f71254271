#include "support/SinkProcess.h"

#include <fmt/format.h>
#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <atomic>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>

namespace outbox::test {

using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------------------------------
// Config

SinkConfigBuilder::SinkConfigBuilder() : group_(uniqueName("it_sink_group")) {
  set("", "dead_letter_flush_timeout_ms", "20000");
  set("log", "level", tomlString("info"));
  set("database", "conninfo", tomlString(pgUrl()));
  set("database", "reconnect_backoff_min_ms", "100");
  set("database", "reconnect_backoff_max_ms", "1000");
  set("kafka", "bootstrap_servers", tomlString(kafkaBootstrap()));
  set("kafka", "group_id", tomlString(group_));
  kafkaProperty("topic.metadata.refresh.interval.ms", "1000");
  kafkaProperty("session.timeout.ms", "6000");
  kafkaProperty("heartbeat.interval.ms", "500");
  set("metrics", "enabled", "false");
}

SinkConfigBuilder& SinkConfigBuilder::set(const std::string& section, const std::string& key,
                                          const std::string& tomlValue) {
  auto it = std::find_if(sections_.begin(), sections_.end(), [&](const auto& s) { return s.first == section; });
  if (it == sections_.end()) {
    sections_.emplace_back(section, std::vector<std::pair<std::string, std::string>>{});
    it = sections_.end() - 1;
  }
  for (auto& [k, v] : it->second) {
    if (k == key) {
      v = tomlValue;
      return *this;
    }
  }
  it->second.emplace_back(key, tomlValue);
  return *this;
}

SinkConfigBuilder& SinkConfigBuilder::kafkaProperty(const std::string& name, const std::string& value) {
  return set("kafka.properties", tomlString(name), tomlString(value));
}

SinkConfigBuilder& SinkConfigBuilder::projection(const std::string& name, const std::string& topic,
                                                 const std::string& eventType, const std::string& sql,
                                                 const std::vector<std::string>& params) {
  std::ostringstream out;
  out << "[[projection]]\nname = " << tomlString(name) << "\ntopic = " << tomlString(topic)
      << "\nevent_type = " << tomlString(eventType) << "\nsql = " << tomlString(sql) << "\nparams = [";
  for (size_t i = 0; i < params.size(); ++i) out << (i ? ", " : "") << tomlString(params[i]);
  out << "]\n";
  projections_.push_back(out.str());
  return *this;
}

SinkConfigBuilder& SinkConfigBuilder::projection(const std::string& name, const std::string& topic,
                                                 const std::string& eventType,
                                                 const std::vector<SinkStatement>& statements) {
  std::ostringstream out;
  out << "[[projection]]\nname = " << tomlString(name) << "\ntopic = " << tomlString(topic)
      << "\nevent_type = " << tomlString(eventType) << "\n";
  for (const SinkStatement& s : statements) {
    out << "  [[projection.statements]]\n  sql = " << tomlString(s.sql) << "\n  params = [";
    for (size_t i = 0; i < s.params.size(); ++i) out << (i ? ", " : "") << tomlString(s.params[i]);
    out << "]\n";
  }
  projections_.push_back(out.str());
  return *this;
}

SinkConfigBuilder& SinkConfigBuilder::metricsListen(const std::string& address) {
  set("metrics", "enabled", "true");
  return set("metrics", "listen", tomlString(address));
}

std::string SinkConfigBuilder::render() const {
  std::ostringstream out;
  out << "# rendered by tests/support/SinkProcess.cpp\n";
  for (const auto& [section, keys] : sections_) {
    if (section.empty()) {
      for (const auto& [k, v] : keys) out << k << " = " << v << "\n";
    }
  }
  for (const auto& [section, keys] : sections_) {
    if (section.empty()) continue;
    out << "\n[" << section << "]\n";
    for (const auto& [k, v] : keys) out << k << " = " << v << "\n";
  }
  for (const std::string& p : projections_) out << "\n" << p;
  return out.str();
}

// ---------------------------------------------------------------------------------------------------------------
// Process

SinkProcess::SinkProcess(const std::string& configToml, const std::string& label)
    : ChildProcess({binPath("outbox-sink"), "--config", writeTempFile("sink.toml", configToml)}, label) {}

std::optional<std::string> SinkProcess::adminAddress() const {
  constexpr std::string_view marker = "serving /metrics, /healthz and /readyz on ";
  std::string text = log();
  size_t at = text.find(marker);
  if (at == std::string::npos) return std::nullopt;
  at += marker.size();
  return text.substr(at, text.find_first_of(" \n", at) - at);
}

// ---------------------------------------------------------------------------------------------------------------
// Events

OrderStream::OrderStream(std::string topic, std::string prefix, unsigned seed, int customers)
    : topic_(std::move(topic)), prefix_(std::move(prefix)), random_(seed), customers_(customers) {}

TestEvent OrderStream::next() {
  TestEvent e;
  e.topic = topic_;
  e.id = fmt::format("{}-e{}", prefix_, events_++);
  bool cancel = !open_.empty() && std::uniform_int_distribution<int>(0, 9)(random_) == 0;
  if (cancel) {
    size_t pick = std::uniform_int_distribution<size_t>(0, open_.size() - 1)(random_);
    auto [orderId, customerId] = open_[pick];
    open_[pick] = open_.back();
    open_.pop_back();
    e.key = orderId;
    e.type = "OrderCancelled";
    e.value = fmt::format(R"({{"orderId":"{}","customerId":"{}"}})", orderId, customerId);
  } else {
    int64_t n = orders_++;
    std::string orderId = fmt::format("{}-o{}", prefix_, n);
    std::string customerId = fmt::format("c{}", std::uniform_int_distribution<int>(0, customers_ - 1)(random_));
    int cents = std::uniform_int_distribution<int>(0, 99999)(random_);
    e.key = orderId;
    e.type = "OrderCreated";
    e.value = fmt::format(R"({{"orderId":"{}","customerId":"{}","total":{}.{:02d},"lines":[{{"sku":"s{}","qty":1}}]}})",
                          orderId, customerId, cents / 100, cents % 100, n % 17);
    open_.emplace_back(orderId, customerId);
  }
  return e;
}

namespace {
std::atomic<int64_t> g_deliveryFailures{0};
void onDelivery(rd_kafka_t*, const rd_kafka_message_t* m, void*) {
  if (m->err) ++g_deliveryFailures;
}
}  // namespace

EventProducer::EventProducer(const std::string& bootstrap) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char err[512];
  for (auto [k, v] : {std::pair<const char*, std::string>{"bootstrap.servers", bootstrap},
                      {"enable.idempotence", "true"},
                      {"acks", "all"},
                      {"linger.ms", "5"}}) {
    if (rd_kafka_conf_set(conf, k, v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      throw std::runtime_error(std::string("producer config: ") + err);
    }
  }
  rd_kafka_conf_set_dr_msg_cb(conf, &onDelivery);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (rk == nullptr) throw std::runtime_error(std::string("producer: ") + err);
  producer_ = rk;
}

EventProducer::~EventProducer() {
  auto* rk = static_cast<rd_kafka_t*>(producer_);
  rd_kafka_flush(rk, 10000);
  rd_kafka_destroy(rk);
}

void EventProducer::send(const TestEvent& e) {
  auto* rk = static_cast<rd_kafka_t*>(producer_);
  while (true) {
    rd_kafka_headers_t* headers = rd_kafka_headers_new(2);
    rd_kafka_header_add(headers, "id", -1, e.id.data(), static_cast<ssize_t>(e.id.size()));
    rd_kafka_header_add(headers, "eventType", -1, e.type.data(), static_cast<ssize_t>(e.type.size()));
    auto rc = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(e.topic.c_str()), RD_KAFKA_V_KEY(e.key.data(), e.key.size()),
                                RD_KAFKA_V_VALUE(const_cast<char*>(e.value.data()), e.value.size()),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_END);
    if (rc == RD_KAFKA_RESP_ERR_NO_ERROR) break;
    rd_kafka_headers_destroy(headers);
    if (rc != RD_KAFKA_RESP_ERR__QUEUE_FULL) throw std::runtime_error(std::string("produce: ") + rd_kafka_err2str(rc));
    rd_kafka_poll(rk, 50);
  }
  rd_kafka_poll(rk, 0);
}

void EventProducer::flush() {
  auto* rk = static_cast<rd_kafka_t*>(producer_);
  if (rd_kafka_flush(rk, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR) throw std::runtime_error("producer flush timed out");
  if (g_deliveryFailures.load() > 0) throw std::runtime_error("some test events were not delivered");
}

BackgroundOrders::BackgroundOrders(OrderStream stream, int perRound, std::chrono::milliseconds pause)
    : stream_(std::move(stream)), perRound_(perRound), pause_(pause) {
  thread_ = std::thread([this] {
    try {
      EventProducer producer(kafkaBootstrap());
      while (!stop_.load()) {
        for (int i = 0; i < perRound_; ++i) {
          events_.push_back(stream_.next());
          producer.send(events_.back());
        }
        produced_ += perRound_;
        std::this_thread::sleep_for(pause_);
      }
      producer.flush();
    } catch (...) {
      failure_ = std::current_exception();
    }
  });
}

BackgroundOrders::~BackgroundOrders() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

std::vector<TestEvent> BackgroundOrders::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (failure_) std::rethrow_exception(failure_);
  return events_;
}

void produceAll(const std::vector<TestEvent>& events) {
  EventProducer producer(kafkaBootstrap());
  for (const TestEvent& e : events) producer.send(e);
  producer.flush();
}

std::vector<TestEvent> takeEvents(OrderStream& stream, int count) {
  std::vector<TestEvent> events;
  events.reserve(count);
  for (int i = 0; i < count; ++i) events.push_back(stream.next());
  return events;
}

// ---------------------------------------------------------------------------------------------------------------
// Read model

OrderReadModel::OrderReadModel(PgConnection& pg, const std::string& prefix) : pg_(pg), prefix_(prefix) {
  pg_.exec(
      fmt::format("CREATE TABLE {0}_orders (order_id text PRIMARY KEY, customer_id text NOT NULL, "
                  "  total numeric(12,2) NOT NULL CHECK (total >= 0), status text NOT NULL);"
                  "CREATE TABLE {0}_counts (customer_id text PRIMARY KEY, created integer NOT NULL DEFAULT 0, "
                  "  cancelled integer NOT NULL DEFAULT 0);"
                  "CREATE TABLE {0}_applied (event_id text NOT NULL, topic text NOT NULL, partition integer NOT NULL, "
                  "  \"offset\" bigint NOT NULL)",
                  prefix_));
}

OrderReadModel::~OrderReadModel() {
  try {
    PgConnection pg(pgUrl());
    pg.exec(fmt::format("DROP TABLE IF EXISTS {0}_orders, {0}_counts, {0}_applied", prefix_));
  } catch (...) {
  }
}

void OrderReadModel::addProjections(SinkConfigBuilder& config, const std::string& topic) const {
  config.projection("order_created", topic, "OrderCreated",
                    fmt::format("INSERT INTO {}_orders (order_id, customer_id, total, status) "
                                "VALUES ($1, $2, $3, 'created')",
                                prefix_),
                    {"/orderId", "/customerId", "/total"});
  config.projection("order_created_count", topic, "OrderCreated",
                    fmt::format("INSERT INTO {0}_counts AS c (customer_id, created) VALUES ($1, 1) "
                                "ON CONFLICT (customer_id) DO UPDATE SET created = c.created + 1",
                                prefix_),
                    {"/customerId"});
  config.projection("order_cancelled", topic, "OrderCancelled",
                    fmt::format("UPDATE {}_orders SET status = 'cancelled' WHERE order_id = $1", prefix_),
                    {"/orderId"});
  config.projection("order_cancelled_count", topic, "OrderCancelled",
                    fmt::format("INSERT INTO {0}_counts AS c (customer_id, cancelled) VALUES ($1, 1) "
                                "ON CONFLICT (customer_id) DO UPDATE SET cancelled = c.cancelled + 1",
                                prefix_),
                    {"/customerId"});
  config.projection("applied_log", topic, "*",
                    fmt::format("INSERT INTO {}_applied (event_id, topic, partition, \"offset\") "
                                "VALUES ($1, $2, $3, $4)",
                                prefix_),
                    {"@id", "@topic", "@partition", "@offset"});
}

int64_t OrderReadModel::appliedRows() {
  PgConnection pg(pgUrl());
  return std::stoll(pg.scalar(fmt::format("SELECT count(*) FROM {}_applied", prefix_)).value_or("0"));
}

std::string OrderReadModel::differences(const std::vector<TestEvent>& events) {
  struct Order {
    std::string customer, total, status;
    bool operator==(const Order&) const = default;
  };
  std::map<std::string, Order> orders;
  std::map<std::string, std::pair<int64_t, int64_t>> counts;
  std::set<std::string> ids;
  for (const TestEvent& e : events) {
    if (!ids.insert(e.id).second) continue;  // each event once
    nlohmann::json payload = nlohmann::json::parse(e.value);
    std::string orderId = payload.at("orderId");
    std::string customerId = payload.at("customerId");
    if (e.type == "OrderCreated") {
      orders[orderId] = Order{customerId, fmt::format("{:.2f}", payload.at("total").get<double>()), "created"};
      ++counts[customerId].first;
    } else if (e.type == "OrderCancelled") {
      orders[orderId].status = "cancelled";
      ++counts[customerId].second;
    }
  }

  PgConnection pg(pgUrl());  // a fresh connection: a test may have restarted the database
  std::vector<std::string> problems;
  auto problem = [&](std::string p) {
    if (problems.size() < 10) problems.push_back(std::move(p));
  };
  std::map<std::string, Order> actualOrders;
  for (auto& row : pg.rows(fmt::format("SELECT order_id, customer_id, total, status FROM {}_orders", prefix_))) {
    actualOrders[row[0]] = Order{row[1], row[2], row[3]};
  }
  if (actualOrders.size() != orders.size()) {
    problem(fmt::format("{} orders, expected {}", actualOrders.size(), orders.size()));
  }
  for (auto& [id, order] : orders) {
    auto it = actualOrders.find(id);
    if (it == actualOrders.end()) {
      problem("order " + id + " missing");
    } else if (!(it->second == order)) {
      problem(fmt::format("order {}: ({}, {}, {}), expected ({}, {}, {})", id, it->second.customer, it->second.total,
                          it->second.status, order.customer, order.total, order.status));
    }
  }
  std::map<std::string, std::pair<int64_t, int64_t>> actualCounts;
  for (auto& row : pg.rows(fmt::format("SELECT customer_id, created, cancelled FROM {}_counts", prefix_))) {
    actualCounts[row[0]] = {std::stoll(row[1]), std::stoll(row[2])};
  }
  if (actualCounts != counts) {
    for (auto& [customer, c] : counts) {
      auto a = actualCounts[customer];
      if (a != c) {
        problem(fmt::format("customer {}: created {} cancelled {}, expected {} and {}", customer, a.first, a.second,
                            c.first, c.second));
      }
    }
  }
  auto applied = pg.rows(fmt::format("SELECT count(*), count(DISTINCT event_id) FROM {}_applied", prefix_));
  int64_t rows = std::stoll(applied[0][0]);
  int64_t distinct = std::stoll(applied[0][1]);
  if (rows != static_cast<int64_t>(ids.size()) || distinct != rows) {
    problem(fmt::format("applied log: {} rows, {} distinct events, expected {} each", rows, distinct, ids.size()));
  }
  std::string out;
  for (auto& p : problems) out += p + "\n";
  return out;
}

int64_t storedOffsetSum(const std::string& group, const std::string& topic) {
  PgConnection pg(pgUrl());
  return std::stoll(pg.scalar(fmt::format("SELECT coalesce(sum(next_offset), 0) FROM outbox_sink_offsets "
                                          "WHERE consumer_group = '{}' AND topic = '{}'",
                                          group, topic))
                        .value_or("0"));
}

bool waitForStoredOffsets(const std::string& group, const std::string& topic, int64_t expected,
                          std::chrono::milliseconds timeout) {
  return waitFor(
      [&] {
        try {
          return storedOffsetSum(group, topic) >= expected;
        } catch (const std::exception&) {
          return false;  // the database may be restarting
        }
      },
      timeout, 100ms);
}

}  // namespace outbox::test
