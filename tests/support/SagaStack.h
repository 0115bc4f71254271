#pragma once
// The saga example of examples/saga/ (order service, customer service, CQRS view) as a stack for integration
// tests: three fresh databases on PGURL's server with the example's SQL applied, the example's relay and sink
// configs rendered for one test by textual substitution (each of which must match: an example that changed shape
// fails the test instead of silently testing something else), the two relays and three sinks as subprocesses, the
// "application" (create_customer, place_order, cancel_order) and the facts the tests assert on, read from the
// service databases and the view. Everything it created is dropped when it goes away: processes killed first, then
// the relays' slots, then the databases.

#include <chrono>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/RelayProcess.h"
#include "support/SinkProcess.h"
#include "support/TestEnv.h"

namespace outbox::test::saga {

// A thread whose failure is rethrown by join().
class Worker {
 public:
  explicit Worker(std::function<void()> body)
      : thread_([this, body = std::move(body)] {
          try {
            body();
          } catch (...) {
            failure_ = std::current_exception();
          }
        }) {}
  ~Worker() {
    if (thread_.joinable()) thread_.join();
  }
  void join() {
    thread_.join();
    if (failure_) std::rethrow_exception(failure_);
  }

 private:
  std::exception_ptr failure_;
  std::thread thread_;
};


// ---------------------------------------------------------------------------------------------------------------
// Rendering configs

// examples/saga/<name>, read whole.
std::string exampleFile(const std::string& name);

// `text` with every occurrence of `from` replaced by `to`; throws (naming `file`) when `from` does not occur.
std::string substitute(std::string text, const std::string& from, const std::string& to, const std::string& file);

// Sets `key` in the TOML table `section` ("kafka", "kafka.properties", ...) to `tomlValue`: replaces the key's line
// if the table has one, else adds the line right after the table's header, else appends the table at the end.
// Knows enough TOML for the example's files: headers, `key = value` lines, multi-line strings (skipped over).
// Returns the new text; `replaced` (if given) says whether an existing line was replaced.
std::string setTomlKey(const std::string& text, const std::string& section, const std::string& key,
                       const std::string& tomlValue, bool* replaced = nullptr);
// The value text of `key` in `section`, nullopt when absent.
std::optional<std::string> tomlKey(const std::string& text, const std::string& section, const std::string& key);
// A TOML basic string's value text without its quotes (what tomlKey gives for "a.b" is "\"a.b\"").
std::string unquote(const std::string& tomlValue);

// ---------------------------------------------------------------------------------------------------------------
// The stack

struct SagaOptions {
  // delivery = "exactly_once" with a progress topic of their own in both relays, [deduplication] off in the sinks.
  bool exactlyOnce = false;
};

// One of the stack's processes, restartable with the same config.
struct Managed {
  std::string name;  // "order-relay", "view-sink", ...
  bool sink = false;
  std::string config;
  std::unique_ptr<ChildProcess> process;
  int generation = 0;  // starts so far
  bool stopped = false;  // by stop(): not running is what it should be
};

// Counters of a sink, from the scrapes of its instances (each instance starts from zero, so the largest value any
// instance reported is a lower bound of what happened; the chaos test scrapes right before each kill).
struct SinkCounters {
  double deadLettered = 0;
  double duplicates = 0;
  int scrapes = 0;
};

class SagaStack {
 public:
  explicit SagaStack(SagaOptions options = {});
  ~SagaStack();
  SagaStack(const SagaStack&) = delete;
  SagaStack& operator=(const SagaStack&) = delete;

  const std::string& unique() const { return unique_; }
  const std::string& orderDb() const { return orderDb_; }
  const std::string& customerDb() const { return customerDb_; }
  const std::string& viewDb() const { return viewDb_; }
  std::string conninfo(const std::string& db) const;  // PGURL's with dbname = db
  // The test's name of an example topic: "order.events" -> "<unique>.order.events".
  std::string topic(const std::string& suffix) const { return unique_ + "." + suffix; }
  std::vector<std::string> sagaTopics() const;  // the four topics of the example, as renamed

  // The schema of the live read model: the example view sink's [database] search_path and schema (view_v1), where
  // the stack applies view.sql.
  const std::string& viewSchema() const { return viewSchema_; }
  // The view sink's config for a read model in `schema` (view.sql applied there by applyViewSchema) with its own
  // group "<unique>-<groupSuffix>" starting from the earliest offsets.
  std::string viewSinkConfigFor(const std::string& schema, const std::string& groupSuffix) const;
  // CREATE SCHEMA + view.sql applied with search_path = schema, in the view database.
  void applyViewSchema(const std::string& schema);
  const std::string& config(const std::string& name) const;  // the rendered config of a process

  // Processes: the example's five (order-relay, customer-relay, order-sink, customer-sink, view-sink) or more.
  // startAll returns once both relays stream from their slots. Call start, startAll and killAndRestart from one
  // thread that outlives the processes (the test's own): a child dies with the thread that forked it
  // (PR_SET_PDEATHSIG).
  void startAll();
  Managed& start(const std::string& name, bool sink, const std::string& config);
  Managed& process(const std::string& name);
  std::vector<std::string> processNames();
  // kill -9, then the same config started again. Scrapes a sink's counters first; an instance that had exited on
  // its own before the kill is recorded for `exitedOnItsOwn`.
  void killAndRestart(const std::string& name);
  // SIGTERM and wait for the exit; returns the exit status (nullopt: still running after 90 s). A stopped process
  // is not reported by `exitedOnItsOwn`.
  std::optional<ExitStatus> stop(const std::string& name);
  // Scrapes the current instance of a sink into its counters (nothing if its admin server is not up yet).
  void scrapeSink(const std::string& name);
  SinkCounters counters(const std::string& name);
  std::string currentLog(const std::string& name);  // the log of a process's current instance
  std::vector<std::string> exitedOnItsOwn();  // "name#generation: status", for processes that died unkilled
  std::string logTails(size_t lines = 40);    // every current process's log tail

  // What the dead-letter topics of the relays and the sinks hold (topic -> records), from the rendered configs.
  std::map<std::string, int64_t> deadLetterCounts();

  // The application.
  void createCustomer(PgConnection& customer, const std::string& id, const std::string& name, int limitCents);
  void placeOrder(PgConnection& order, const std::string& id, const std::string& customerId, int totalCents,
                  const std::string& saga);
  bool cancelOrder(PgConnection& order, const std::string& id);

  // The facts. Each returns "" when it holds, else the first few problems.
  std::string pendingWork();                     // PENDING orders, saga instances not in a final state
  std::string reservationsMatchOrders();         // APPROVED<->RESERVED, CANCELLED<->RELEASED, REJECTED<->REJECTED
  std::string creditMatchesApprovedOrders();     // credit_reserved == sum(total) of APPROVED orders, per customer
  // orders_view and customers_view in `schema` ("" = the live one) against the service tables.
  std::string viewMatchesServices(const std::string& schema = "");
  // Every fact together (the view: the live one): what the tests wait for.
  std::string unsettled();

  // The oracle for outbox rows missing from Kafka. Each service database has an audit slot (test_decoding, created
  // before anything is written), so the transactions the relays were sent are known exactly: each missing row is
  // named by its transaction (xid, commit LSN as the relay names it, end LSN), its index among that transaction's
  // outbox rows and how many of the transaction's rows are missing, followed by what the relays logged about the
  // positions around it (where each instance resumed, which Kafka transactions it aborted). The first line is a
  // one-line summary.
  std::string explainTransactions(const std::set<std::string>& missing);
  // What every instance of a relay logged about where it resumed and what it aborted ("exactly-once:" and
  // "resuming" lines), oldest first, each prefixed by the instance's label.
  std::vector<std::string> relayHistory(const std::string& name);

 private:
  std::string renderRelay(const std::string& file, const std::string& dbVar, const std::string& db,
                          const std::string& slot) const;
  std::string renderSink(const std::string& file, const std::string& dbVar, const std::string& dbConninfo,
                         const std::string& group, const std::string& groupSuffix) const;
  void dropEverything();

  SagaOptions options_;
  std::string unique_;
  std::string orderDb_, customerDb_, viewDb_;
  std::vector<std::string> slots_;
  std::map<std::string, std::string> auditSlots_;  // database -> its audit slot (test_decoding)
  std::vector<std::string> createdDbs_;
  std::string viewSchema_;
  std::map<std::string, std::string> configs_;
  std::mutex mutex_;  // guards processes_, counters_, died_
  std::vector<std::unique_ptr<Managed>> processes_;
  std::map<std::string, SinkCounters> counters_;
  std::vector<std::string> died_;
  std::map<std::string, std::vector<std::string>> history_;  // relay -> relayHistory lines of killed instances
};

// Rows of `sql` on a fresh connection to `conninfo`, as text ("\\N" for NULL).
std::vector<std::vector<std::string>> queryRows(const std::string& conninfo, const std::string& sql);

}  // namespace outbox::test::saga
