// bench/saga's measuring program: the saga example (examples/saga/: two relays, three sinks, three databases)
// without chaos and without pacing. Per delivery mode, on a fresh SagaStack (tests/support/SagaStack): customers with
// seeded random credit limits, then orders from concurrent writers as fast as they go (half choreography, half
// orchestration, no cancellations), then it waits until every saga is decided and the CQRS view has every order in
// its final state. It reports times from the databases' own clocks (order DB created_at/decided_at, the view's
// clock when a poll first saw every order final), per-process CPU and peak RSS from /proc, and checks correctness
// with SagaStack's facts; it never judges a time. The result is JSON (--out); bench/saga renders it.
//
//   saga_bench [--modes at_least_once,exactly_once] [--customers 200] [--orders 2000] [--writers 4] [--seed 1515]
//              [--timeout 600] --out FILE
// Needs PGURL and KAFKA_BOOTSTRAP (scripts/devstack env). Exit 0: every mode ran and every fact held; 1: a fact
// did not hold (the JSON says which); 2: usage or set-up error.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <exception>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "support/SagaStack.h"

using namespace outbox::test;
using namespace outbox::test::saga;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

struct Options {
  std::vector<std::string> modes{"at_least_once", "exactly_once"};
  int customers = 200;
  int orders = 2000;
  int writers = 4;
  unsigned seed = 1515;
  int timeoutSeconds = 600;
  std::string out;
};

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string loadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

int64_t count(const std::string& conninfo, const std::string& sql) {
  return std::stoll(queryRows(conninfo, sql).at(0).at(0));
}

// CPU seconds (utime + stime, /proc/PID/stat) and peak RSS (VmHWM, /proc/PID/status) of a running process: read
// right before the stack goes away, so both cover the process's whole life. Cheap, and nothing is sampled.
json processUsage(pid_t pid) {
  json j = json::object();
  std::ifstream stat(fmt::format("/proc/{}/stat", pid));
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  size_t paren = text.rfind(')');
  if (paren != std::string::npos) {
    std::istringstream fields(text.substr(paren + 2));
    std::vector<std::string> f;
    for (std::string s; fields >> s;) f.push_back(s);
    // After "pid (comm) ": state is field 3, utime 14, stime 15 (1-based) -> indexes 11 and 12 here.
    if (f.size() > 12) {
      double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
      j["cpu_s"] = (std::stod(f[11]) + std::stod(f[12])) / ticks;
    }
  }
  std::ifstream status(fmt::format("/proc/{}/status", pid));
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) j["peak_rss_mib"] = std::stod(line.substr(6)) / 1024.0;  // kB
  }
  return j;
}

// p50 / p99 / max (ms) of `values`, nearest rank.
json summary(std::vector<double> values) {
  if (values.empty()) return json::object();
  std::sort(values.begin(), values.end());
  auto at = [&](double q) {
    size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(values.size())));
    return values[std::min(values.size() - 1, rank == 0 ? 0 : rank - 1)];
  };
  return {{"p50_ms", at(0.5)}, {"p99_ms", at(0.99)}, {"max_ms", values.back()}};
}

json runMode(const Options& o, const std::string& mode) {
  const bool exactlyOnce = mode == "exactly_once";
  const auto started = std::chrono::steady_clock::now();
  json r;
  r["mode"] = mode;
  r["load_average_start"] = loadAverage();
  std::vector<std::string> problems;
  auto check = [&](const std::string& what) {
    if (!what.empty()) problems.push_back(what);
  };

  SagaStack stack(SagaOptions{exactlyOnce});
  for (const char* relay : {"order-relay", "customer-relay"}) {
    if (tomlKey(stack.config(relay), "kafka", "delivery") != fmt::format("\"{}\"", mode)) {
      throw std::runtime_error(fmt::format("{}'s rendered config is not in mode {}", relay, mode));
    }
  }
  for (const char* sink : {"order-sink", "customer-sink", "view-sink"}) {
    if (tomlKey(stack.config(sink), "deduplication", "enabled") != (exactlyOnce ? "false" : "true")) {
      throw std::runtime_error(fmt::format("{}'s rendered [deduplication] does not fit mode {}", sink, mode));
    }
  }
  stack.startAll();
  const std::string orderInfo = stack.conninfo(stack.orderDb());
  const std::string customerInfo = stack.conninfo(stack.customerDb());
  const std::string viewInfo = stack.conninfo(stack.viewDb());
  const std::string ordersView = stack.viewSchema() + ".orders_view";

  // Customers c000.. with the chaos test's random limits (2.00 .. 3,000.00), seeded.
  std::mt19937 rng(o.seed);
  {
    PgConnection customer(customerInfo);
    std::uniform_int_distribution<int> limit(200, 300000);
    for (int i = 0; i < o.customers; ++i) {
      stack.createCustomer(customer, fmt::format("c{:03d}", i), fmt::format("Customer {}", i), limit(rng));
    }
  }
  if (!waitFor([&] { return count(viewInfo, "SELECT count(*) FROM " + stack.viewSchema() + ".customers_view") ==
                            o.customers; },
               180s, 200ms)) {
    throw std::runtime_error("the customers never all reached the view\n" + stack.logTails());
  }

  // The view watcher: a light query every 100 ms on the view database; the view's own clock when it first saw every
  // order final (a decided status and the credit state of its reservation).
  std::atomic<bool> stopWatching{false};
  std::atomic<bool> viewFinalSeen{false};
  std::string viewFinalAt;  // timestamptz text, from the view database's clock_timestamp(); set before viewFinalSeen
  Worker watcher([&] {
    PgConnection view(viewInfo);
    while (!stopWatching) {
      auto row = view.rows(fmt::format(
          "SELECT count(*) FILTER (WHERE status IN ('APPROVED', 'REJECTED') AND credit_state IS NOT NULL), "
          "clock_timestamp() FROM {}",
          ordersView));
      if (std::stoll(row.at(0).at(0)) == o.orders) {
        viewFinalAt = row.at(0).at(1);
        viewFinalSeen = true;
        return;
      }
      std::this_thread::sleep_for(100ms);
    }
  });

  // The writers: a connection each, as fast as place_order returns. Styles alternate, so exactly half each.
  const int perWriter = o.orders / o.writers;
  const auto writingStarted = std::chrono::steady_clock::now();
  {
    std::vector<std::unique_ptr<Worker>> writers;
    for (int w = 0; w < o.writers; ++w) {
      writers.push_back(std::make_unique<Worker>([&, w] {
        PgConnection order(orderInfo);
        std::mt19937 local(o.seed * 5 + static_cast<unsigned>(w));
        std::uniform_int_distribution<int> customer(0, o.customers - 1);
        std::uniform_int_distribution<int> total(1000, 60000);
        for (int n = 0; n < perWriter; ++n) {
          stack.placeOrder(order, fmt::format("o{}-{:04d}", w, n), fmt::format("c{:03d}", customer(local)),
                           total(local), n % 2 ? "orchestration" : "choreography");
        }
      }));
    }
    for (auto& t : writers) t->join();
  }
  r["writing_s"] = secondsSince(writingStarted);

  // Settled: no PENDING order (a cheap count, so the waiting adds little load) and the view final; then every fact
  // (the full comparisons read several databases one after the other, so they get a minute to agree).
  const auto deadline = std::chrono::seconds(o.timeoutSeconds);
  bool decided = waitFor(
      [&] { return count(orderInfo, "SELECT count(*) FROM orders WHERE status = 'PENDING'") == 0 ||
                   !stack.exitedOnItsOwn().empty(); },
      deadline, 200ms);
  bool viewFinal = waitFor([&] { return viewFinalSeen || !stack.exitedOnItsOwn().empty(); }, deadline, 200ms);
  stopWatching = true;
  watcher.join();
  r["settle_wait_s"] = secondsSince(writingStarted);
  if (!decided) problems.push_back("orders still PENDING after the timeout");
  viewFinal = viewFinal && viewFinalSeen;
  if (!viewFinal) problems.push_back("the view never had every order final");
  std::string facts;
  waitFor([&] { return (facts = stack.unsettled()).empty(); }, 60s, 1000ms);
  check(facts);
  for (const std::string& died : stack.exitedOnItsOwn()) problems.push_back("process exited on its own: " + died);

  // Every order decided, exactly the ones placed; credit within limits; nothing dead-lettered.
  int64_t placed = count(orderInfo, "SELECT count(*) FROM orders");
  if (placed != o.orders) problems.push_back(fmt::format("{} orders in the order DB, {} placed", placed, o.orders));
  if (count(orderInfo, "SELECT count(*) FROM orders WHERE status NOT IN ('APPROVED', 'REJECTED') OR decided_at IS "
                       "NULL") != 0) {
    problems.push_back("orders not APPROVED/REJECTED with a decided_at");
  }
  if (count(customerInfo, "SELECT count(*) FROM customers WHERE credit_reserved > credit_limit") != 0) {
    problems.push_back("credit_reserved above credit_limit");
  }
  for (auto& [topic, records] : stack.deadLetterCounts()) {
    if (records != 0) problems.push_back(fmt::format("{} records on {}", records, topic));
  }
  double duplicates = 0;
  for (const char* name : {"order-sink", "customer-sink", "view-sink"}) {
    stack.scrapeSink(name);
    SinkCounters c = stack.counters(name);
    if (c.deadLettered != 0) problems.push_back(fmt::format("{} dead-lettered {} events", name, c.deadLettered));
    duplicates += c.duplicates;
  }
  r["duplicates_skipped"] = duplicates;

  // The numbers, from the order database's clock (created_at and decided_at are clock_timestamp()s).
  auto span = queryRows(orderInfo,
                        "SELECT extract(epoch FROM max(decided_at) - min(created_at)), "
                        "extract(epoch FROM max(created_at) - min(created_at)), min(created_at) FROM orders");
  double e2e = std::stod(span.at(0).at(0));
  r["end_to_end_s"] = e2e;
  r["placing_s"] = std::stod(span.at(0).at(1));  // first to last place_order, by created_at
  r["sagas_per_s"] = o.orders / e2e;
  auto viewSpan = queryRows(viewInfo, fmt::format("SELECT extract(epoch FROM {}::timestamptz - {}::timestamptz), "
                                                  "extract(epoch FROM max(updated_at) - {}::timestamptz) FROM {}",
                                                  sqlLiteral(viewFinal ? viewFinalAt : span.at(0).at(2)),
                                                  sqlLiteral(span.at(0).at(2)), sqlLiteral(span.at(0).at(2)),
                                                  ordersView));
  r["view_final_s"] = std::stod(viewSpan.at(0).at(0));      // first place_order -> a poll saw every order final
  r["view_last_write_s"] = std::stod(viewSpan.at(0).at(1));  // ... -> max(updated_at), the sink's now()
  json styles = json::object();
  for (auto& row : queryRows(
           orderInfo,
           "SELECT saga, count(*), count(*) FILTER (WHERE status = 'APPROVED'), "
           "1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM decided_at - created_at)), "
           "1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM decided_at - created_at)), "
           "1000 * max(extract(epoch FROM decided_at - created_at)) FROM orders GROUP BY saga ORDER BY saga")) {
    styles[row[0]] = {{"orders", std::stoll(row[1])},
                      {"approved", std::stoll(row[2])},
                      {"p50_ms", std::stod(row[3])},
                      {"p99_ms", std::stod(row[4])},
                      {"max_ms", std::stod(row[5])}};
  }
  // The two legs of each saga, by the customer DB's credit_reservations.decided_at (clock_timestamp(), the same
  // server's clock): OrderCreated/ReserveCredit to the reservation (order relay, Kafka, customer sink), then the
  // reservation to the order's decision (customer relay, Kafka, order sink).
  std::map<std::string, double> reservedAt;
  for (auto& row : queryRows(customerInfo, "SELECT order_id, extract(epoch FROM decided_at) FROM credit_reservations")) {
    reservedAt[row[0]] = std::stod(row[1]);
  }
  std::map<std::string, std::pair<std::vector<double>, std::vector<double>>> legs;
  for (auto& row : queryRows(orderInfo, "SELECT id, saga, extract(epoch FROM created_at), "
                                        "extract(epoch FROM decided_at) FROM orders")) {
    auto it = reservedAt.find(row[0]);
    if (it == reservedAt.end()) continue;  // a problem the facts above already name
    legs[row[1]].first.push_back(1000 * (it->second - std::stod(row[2])));
    legs[row[1]].second.push_back(1000 * (std::stod(row[3]) - it->second));
  }
  for (auto& [style, both] : legs) {
    if (!styles.contains(style)) continue;
    styles[style]["reserve_leg"] = summary(both.first);
    styles[style]["decide_leg"] = summary(both.second);
  }
  r["styles"] = styles;
  json processes = json::object();
  for (const std::string& name : stack.processNames()) processes[name] = processUsage(stack.process(name).process->pid());
  r["processes"] = processes;
  r["load_average_end"] = loadAverage();
  r["run_s"] = secondsSince(started);
  r["problems"] = problems;
  return r;
}

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "saga_bench: " << why
            << "\nusage: saga_bench [--modes at_least_once,exactly_once] [--customers N] [--orders N] [--writers N] "
               "[--seed N] [--timeout S] --out FILE\n";
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--modes") {
        o.modes.clear();
        std::istringstream in(value());
        for (std::string m; std::getline(in, m, ',');) {
          if (m != "at_least_once" && m != "exactly_once") usage("unknown mode " + m);
          o.modes.push_back(m);
        }
      } else if (a == "--customers") {
        o.customers = std::stoi(value());
      } else if (a == "--orders") {
        o.orders = std::stoi(value());
      } else if (a == "--writers") {
        o.writers = std::stoi(value());
      } else if (a == "--seed") {
        o.seed = static_cast<unsigned>(std::stoul(value()));
      } else if (a == "--timeout") {
        o.timeoutSeconds = std::stoi(value());
      } else if (a == "--out") {
        o.out = value();
      } else {
        usage("unknown option " + a);
      }
    } catch (const std::invalid_argument&) {
      usage(a + ": not a number");
    }
  }
  if (o.out.empty()) usage("--out is required");
  if (o.writers < 1 || o.orders % (2 * o.writers) != 0) usage("--orders must be a multiple of 2 x --writers");
  if (o.customers < 1 || o.customers > 1000) usage("--customers: 1..1000 (ids c000..c999)");

  json out;
  out["customers"] = o.customers;
  out["orders"] = o.orders;
  out["writers"] = o.writers;
  out["seed"] = o.seed;
  out["cancellations"] = 0;
  out["runs"] = json::array();
  int rc = 0;
  for (const std::string& mode : o.modes) {
    std::cerr << "[saga_bench] " << mode << ": " << o.customers << " customers, " << o.orders << " orders, "
              << o.writers << " writers" << std::endl;
    try {
      json r = runMode(o, mode);
      if (!r["problems"].empty()) rc = 1;
      std::cerr << "[saga_bench] " << mode << ": " << r.dump() << std::endl;
      out["runs"].push_back(std::move(r));
    } catch (const std::exception& e) {
      std::cerr << "[saga_bench] " << mode << " failed: " << e.what() << std::endl;
      out["runs"].push_back({{"mode", mode}, {"problems", {std::string("set-up failed: ") + e.what()}}});
      rc = 1;
    }
  }
  std::ofstream file(o.out);
  file << out.dump(2) << "\n";
  if (!file) {
    std::cerr << "saga_bench: cannot write " << o.out << std::endl;
    return 2;
  }
  return rc;
}
