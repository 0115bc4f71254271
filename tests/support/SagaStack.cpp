#include "support/SagaStack.h"

#include <fmt/format.h>
#include <libpq-fe.h>

#include <cctype>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace outbox::test::saga {

using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------------------------------
// Rendering configs

std::string exampleFile(const std::string& name) { return readSourceFile("examples/saga/" + name); }

std::string substitute(std::string text, const std::string& from, const std::string& to, const std::string& file) {
  size_t count = 0;
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
    ++count;
  }
  if (count == 0) {
    throw std::runtime_error(fmt::format("{}: the test substitutes {:?} but the file does not contain it", file, from));
  }
  return text;
}

namespace {

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

std::vector<std::string> splitLines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

size_t countOf(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

// A line of a TOML text as the example's files use it: a table header, a `key = value` line, or something else
// (comments, blank lines, the inside of a multi-line string, continuation lines of arrays).
struct TomlLine {
  enum Kind { Other, Header, Key } kind = Other;
  std::string name;  // the header's table name, or the key as written
  std::string value;  // a key's value text, comment stripped
};

std::vector<TomlLine> classify(const std::vector<std::string>& lines) {
  std::vector<TomlLine> out;
  bool inBasic = false;    // inside """ ... """
  bool inLiteral = false;  // inside ''' ... '''
  for (const std::string& raw : lines) {
    TomlLine t;
    std::string line = trim(raw);
    bool inside = inBasic || inLiteral;
    if (!inside && !line.empty() && line[0] == '[') {
      t.kind = TomlLine::Header;
      std::string name = line.substr(0, line.find(']') + (line.rfind("[[", 0) == 0 ? 2 : 1));
      while (!name.empty() && (name.front() == '[')) name.erase(0, 1);
      while (!name.empty() && (name.back() == ']')) name.pop_back();
      t.name = trim(name);
    } else if (!inside && !line.empty() && line[0] != '#' && line.find('=') != std::string::npos) {
      t.kind = TomlLine::Key;
      size_t eq = line.find('=');
      t.name = trim(line.substr(0, eq));
      std::string value = trim(line.substr(eq + 1));
      if (!value.empty() && value[0] == '"' && value.rfind("\"\"\"", 0) != 0) {
        size_t end = 1;
        while (end < value.size() && value[end] != '"') end += value[end] == '\\' ? 2 : 1;
        value = value.substr(0, end + 1);
      } else if (value.rfind("\"\"\"", 0) != 0 && value.rfind("'''", 0) != 0) {
        value = trim(value.substr(0, value.find('#')));
      }
      t.value = value;
    }
    if (countOf(raw, "\"\"\"") % 2 == 1 && !inLiteral) inBasic = !inBasic;
    if (countOf(raw, "'''") % 2 == 1 && !inBasic) inLiteral = !inLiteral;
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace

std::string setTomlKey(const std::string& text, const std::string& section, const std::string& key,
                       const std::string& tomlValue, bool* replaced) {
  std::vector<std::string> lines = splitLines(text);
  std::vector<TomlLine> kinds = classify(lines);
  std::string current;  // "" = the top level
  std::optional<size_t> header;
  std::optional<size_t> keyLine;
  std::optional<size_t> firstHeader;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (kinds[i].kind == TomlLine::Header) {
      if (!firstHeader) firstHeader = i;
      current = kinds[i].name;
      if (current == section && !header) header = i;
    } else if (kinds[i].kind == TomlLine::Key && current == section && kinds[i].name == key && !keyLine) {
      keyLine = i;
    }
  }
  std::string line = key + " = " + tomlValue;
  if (replaced) *replaced = keyLine.has_value();
  if (keyLine) {
    lines[*keyLine] = line;
  } else if (header) {
    lines.insert(lines.begin() + static_cast<long>(*header) + 1, line);
  } else if (section.empty()) {
    lines.insert(lines.begin() + static_cast<long>(firstHeader.value_or(lines.size())), line);
  } else {
    lines.push_back("");
    lines.push_back("[" + section + "]");
    lines.push_back(line);
  }
  std::string out;
  for (const std::string& l : lines) out += l + "\n";
  return out;
}

std::optional<std::string> tomlKey(const std::string& text, const std::string& section, const std::string& key) {
  std::vector<std::string> lines = splitLines(text);
  std::vector<TomlLine> kinds = classify(lines);
  std::string current;
  for (const TomlLine& t : kinds) {
    if (t.kind == TomlLine::Header) current = t.name;
    if (t.kind == TomlLine::Key && current == section && t.name == key) return t.value;
  }
  return std::nullopt;
}

namespace {

// The inside of a TOML basic string holding `value`.
std::string tomlInside(const std::string& value) {
  std::string quoted = tomlString(value);
  return quoted.substr(1, quoted.size() - 2);
}

}  // namespace

std::string unquote(const std::string& tomlValue) {
  if (tomlValue.size() >= 2 && tomlValue.front() == '"' && tomlValue.back() == '"') {
    return tomlValue.substr(1, tomlValue.size() - 2);
  }
  return tomlValue;
}

// ---------------------------------------------------------------------------------------------------------------
// The stack

std::vector<std::vector<std::string>> queryRows(const std::string& conninfo, const std::string& sql) {
  PgConnection pg(conninfo);
  PGresult* result = PQexec(pg.raw(), sql.c_str());
  auto status = PQresultStatus(result);
  if (status != PGRES_TUPLES_OK) {
    std::string why = PQerrorMessage(pg.raw());
    PQclear(result);
    throw std::runtime_error("SQL failed: " + sql.substr(0, 200) + ": " + why);
  }
  std::vector<std::vector<std::string>> out;
  for (int r = 0; r < PQntuples(result); ++r) {
    std::vector<std::string> row;
    for (int c = 0; c < PQnfields(result); ++c) {
      row.emplace_back(PQgetisnull(result, r, c) ? "\\N" : PQgetvalue(result, r, c));
    }
    out.push_back(std::move(row));
  }
  PQclear(result);
  return out;
}

SagaStack::SagaStack(SagaOptions options) : options_(std::move(options)), unique_(uniqueName("saga")) {
  orderDb_ = unique_ + "_order";
  customerDb_ = unique_ + "_customer";
  viewDb_ = unique_ + "_view";
  slots_ = {unique_ + "_order_relay", unique_ + "_customer_relay"};
  try {
    {
      PgConnection admin(pgUrl());
      for (const std::string& db : {orderDb_, customerDb_, viewDb_}) {
        admin.exec("CREATE DATABASE " + db);
        createdDbs_.push_back(db);
      }
    }
    PgConnection(conninfo(orderDb_)).exec(exampleFile("order-service.sql"));
    PgConnection(conninfo(customerDb_)).exec(exampleFile("customer-service.sql"));
    // The audit slots, before anything is written (see explainTransactions).
    for (const std::string& db : {orderDb_, customerDb_}) {
      std::string slot = db + "_audit";
      PgConnection(conninfo(db)).exec(
          fmt::format("SELECT pg_create_logical_replication_slot({}, 'test_decoding')", sqlLiteral(slot)));
      auditSlots_[db] = slot;
    }
    // The live read model's schema, as the example's view sink names it (search_path and schema alike).
    std::string viewSink = exampleFile("view-sink.toml");
    std::optional<std::string> searchPath = tomlKey(viewSink, "database", "search_path");
    std::optional<std::string> schema = tomlKey(viewSink, "database", "schema");
    if (!searchPath || searchPath != schema) {
      throw std::runtime_error(fmt::format("view-sink.toml: [database] search_path {} and schema {} should name one "
                                           "schema",
                                           searchPath.value_or("(missing)"), schema.value_or("(missing)")));
    }
    viewSchema_ = unquote(*schema);
    applyViewSchema(viewSchema_);

    configs_["order-relay"] = renderRelay("order-relay.toml", "ORDER_DB_URL", orderDb_, "saga_order_relay");
    configs_["customer-relay"] =
        renderRelay("customer-relay.toml", "CUSTOMER_DB_URL", customerDb_, "saga_customer_relay");
    configs_["order-sink"] =
        renderSink("order-sink.toml", "ORDER_DB_URL", conninfo(orderDb_), "saga-order-service", "order-service");
    configs_["customer-sink"] = renderSink("customer-sink.toml", "CUSTOMER_DB_URL", conninfo(customerDb_),
                                           "saga-customer-service", "customer-service");
    configs_["view-sink"] = renderSink("view-sink.toml", "VIEW_DB_URL", conninfo(viewDb_), "saga-view", "view");

    // The topics exist before anyone subscribes, with several partitions (each saga's messages keyed by its order
    // or customer, so per-key order is what the example may rely on, never a single partition's total order).
    for (const std::string& t : sagaTopics()) createTopic(t, 3);
  } catch (...) {
    dropEverything();
    throw;
  }
}

SagaStack::~SagaStack() { dropEverything(); }

void SagaStack::dropEverything() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    processes_.clear();  // SIGKILLs what still runs
  }
  try {
    PgConnection admin(pgUrl());
    for (const std::string& slot : slots_) {
      // A killed relay's walsender lets go of the slot a moment later.
      waitFor([&] { return !slotActivePid(admin, slot).has_value(); }, 30s, 100ms);
      admin.exec(fmt::format(
          "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = {}",
          sqlLiteral(slot)));
    }
    for (const auto& [db, slot] : auditSlots_) {
      admin.exec(fmt::format(
          "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = {}",
          sqlLiteral(slot)));
    }
    auditSlots_.clear();
    for (const std::string& db : createdDbs_) admin.exec("DROP DATABASE IF EXISTS " + db + " WITH (FORCE)");
    createdDbs_.clear();
    slots_.clear();
  } catch (const std::exception& e) {
    std::cerr << "[ saga ] clean-up of " << unique_ << " failed: " << e.what() << std::endl;
  }
}

std::string SagaStack::conninfo(const std::string& db) const { return pgConninfoWith({{"dbname", db}}); }

std::vector<std::string> SagaStack::sagaTopics() const {
  return {topic("order.events"), topic("customer.events"), topic("customer.commands"), topic("order.replies")};
}

std::string SagaStack::renderRelay(const std::string& file, const std::string& dbVar, const std::string& db,
                                   const std::string& slot) const {
  std::string text = exampleFile(file);
  text = substitute(text, "${" + dbVar + "}", tomlInside(conninfo(db)), file);
  text = substitute(text, "\"saga.", "\"" + unique_ + ".", file);
  text = substitute(text, slot, unique_ + slot.substr(std::string("saga").size()), file);
  // Tests run side by side: no fixed ports.
  text = setTomlKey(text, "metrics", "enabled", "true");
  text = setTomlKey(text, "metrics", "listen", tomlString("127.0.0.1:0"));
  if (options_.exactlyOnce) {
    text = setTomlKey(text, "kafka", "delivery", tomlString("exactly_once"));
    text = setTomlKey(text, "kafka", "progress_topic", tomlString(unique_ + "." + slot + ".progress"));
  }
  return text;
}

std::string SagaStack::renderSink(const std::string& file, const std::string& dbVar, const std::string& dbConninfo,
                                  const std::string& group, const std::string& groupSuffix) const {
  std::string text = exampleFile(file);
  text = substitute(text, "${" + dbVar + "}", tomlInside(dbConninfo), file);
  text = substitute(text, "\"saga.", "\"" + unique_ + ".", file);
  std::string ourGroup = unique_ + "-" + groupSuffix;
  text = substitute(text, "\"" + group + "\"", "\"" + ourGroup + "\"", file);
  text = setTomlKey(text, "metrics", "enabled", "true");
  text = setTomlKey(text, "metrics", "listen", tomlString("127.0.0.1:0"));
  // Static membership: an instance restarted after kill -9 takes its predecessor's place at once instead of the
  // group waiting out the dead member's session (librdkafka's default 45 s, per kill); short timeouts otherwise.
  text = setTomlKey(text, "kafka.properties", tomlString("group.instance.id"), tomlString(ourGroup));
  text = setTomlKey(text, "kafka.properties", tomlString("session.timeout.ms"), tomlString("6000"));
  text = setTomlKey(text, "kafka.properties", tomlString("heartbeat.interval.ms"), tomlString("500"));
  text = setTomlKey(text, "kafka.properties", tomlString("topic.metadata.refresh.interval.ms"), tomlString("1000"));
  std::optional<std::string> dedup = tomlKey(text, "deduplication", "enabled");
  if (dedup != "true") {
    throw std::runtime_error(fmt::format("{}: [deduplication] enabled is {}, the example should have true", file,
                                         dedup.value_or("missing")));
  }
  if (options_.exactlyOnce) text = setTomlKey(text, "deduplication", "enabled", "false");
  return text;
}

std::string SagaStack::viewSinkConfigFor(const std::string& schema, const std::string& groupSuffix) const {
  std::string text = renderSink("view-sink.toml", "VIEW_DB_URL", conninfo(viewDb_), "saga-view", groupSuffix);
  for (const char* key : {"search_path", "schema"}) {
    bool replaced = false;
    text = setTomlKey(text, "database", key, tomlString(schema), &replaced);
    if (!replaced) throw std::runtime_error(fmt::format("view-sink.toml: no [database] {} to set", key));
  }
  bool replaced = false;
  text = setTomlKey(text, "kafka", "initial_offset", tomlString("earliest"), &replaced);
  if (!replaced) throw std::runtime_error("view-sink.toml: no [kafka] initial_offset to set");
  return text;
}

void SagaStack::applyViewSchema(const std::string& schema) {
  PgConnection view(conninfo(viewDb_));
  view.exec("CREATE SCHEMA " + schema);
  view.exec("SET search_path = " + schema);
  view.exec(exampleFile("view.sql"));
}

const std::string& SagaStack::config(const std::string& name) const { return configs_.at(name); }

void SagaStack::startAll() {
  for (const char* name : {"order-relay", "customer-relay", "order-sink", "customer-sink", "view-sink"}) {
    start(name, std::string(name).find("sink") != std::string::npos, configs_.at(name));
  }
  // A relay publishes what is committed after its slot exists: the application starts once both stream.
  PgConnection admin(pgUrl());
  for (const std::string& slot : slots_) {
    if (!waitForSlotStreaming(admin, slot, 120s)) {
      throw std::runtime_error("slot " + slot + " is not streaming after 120 s\n" + logTails());
    }
  }
}

Managed& SagaStack::start(const std::string& name, bool sink, const std::string& config) {
  std::lock_guard<std::mutex> lock(mutex_);
  configs_[name] = config;
  auto m = std::make_unique<Managed>();
  m->name = name;
  m->sink = sink;
  m->config = config;
  std::string label = name + "#0";
  m->process = sink ? std::unique_ptr<ChildProcess>(std::make_unique<SinkProcess>(config, label))
                    : std::unique_ptr<ChildProcess>(std::make_unique<RelayProcess>(config, label));
  processes_.push_back(std::move(m));
  return *processes_.back();
}

Managed& SagaStack::process(const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& m : processes_) {
    if (m->name == name) return *m;
  }
  throw std::runtime_error("no process " + name);
}

std::vector<std::string> SagaStack::processNames() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> names;
  for (auto& m : processes_) names.push_back(m->name);
  return names;
}

void SagaStack::scrapeSink(const std::string& name) {
  Managed& m = process(name);
  if (!m.sink || !m.process) return;
  std::optional<std::string> address = static_cast<SinkProcess&>(*m.process).adminAddress();
  if (!address) return;
  std::optional<double> dead = scrapeValue(*address, "outbox_sink_events_dead_lettered_total");
  std::optional<double> dup = scrapeValue(*address, "outbox_sink_events_skipped_total{reason=\"duplicate\"}");
  if (!dead || !dup) return;  // the admin server did not answer (e.g. the instance is just starting)
  std::lock_guard<std::mutex> lock(mutex_);
  SinkCounters& c = counters_[name];
  c.deadLettered = std::max(c.deadLettered, *dead);
  c.duplicates = std::max(c.duplicates, *dup);
  ++c.scrapes;
}

SinkCounters SagaStack::counters(const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  return counters_[name];
}

namespace {
// The lines of a relay's log that say where it resumed and what it aborted, prefixed by the instance's label.
std::vector<std::string> historyLines(const std::string& label, const std::string& log) {
  std::vector<std::string> out;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.find("exactly-once:") != std::string::npos || line.find("resuming") != std::string::npos ||
        line.find("stopped; confirmed") != std::string::npos) {
      out.push_back(label + " " + line);
    }
  }
  return out;
}
}  // namespace

void SagaStack::killAndRestart(const std::string& name) {
  scrapeSink(name);
  Managed& m = process(name);
  std::lock_guard<std::mutex> lock(mutex_);
  bool wasRunning = m.process->running();
  m.process->sigkill();
  std::optional<ExitStatus> status = m.process->waitExit(30s);
  if (!status) throw std::runtime_error(m.process->label() + " did not die after SIGKILL");
  if (!m.sink) {
    for (std::string& line : historyLines(m.process->label(), m.process->log())) history_[name].push_back(std::move(line));
  }
  if (!wasRunning || status->exited) {
    died_.push_back(fmt::format("{}: {}\n{}", m.process->label(), status->toString(), m.process->logTail(30)));
  }
  ++m.generation;
  std::string label = fmt::format("{}#{}", name, m.generation);
  m.process = m.sink ? std::unique_ptr<ChildProcess>(std::make_unique<SinkProcess>(m.config, label))
                     : std::unique_ptr<ChildProcess>(std::make_unique<RelayProcess>(m.config, label));
}

std::optional<ExitStatus> SagaStack::stop(const std::string& name) {
  Managed& m = process(name);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    m.stopped = true;
  }
  m.process->sigterm();
  return m.process->waitExit(90s);
}

std::string SagaStack::currentLog(const std::string& name) {
  Managed& m = process(name);
  std::lock_guard<std::mutex> lock(mutex_);
  return m.process->log();
}

std::vector<std::string> SagaStack::exitedOnItsOwn() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> out = died_;
  for (auto& m : processes_) {
    if (m->process && !m->stopped && !m->process->running()) {
      out.push_back(fmt::format("{} is not running\n{}", m->process->label(), m->process->logTail(30)));
    }
  }
  return out;
}

std::string SagaStack::logTails(size_t lines) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  for (auto& m : processes_) {
    if (m->process) out += "---- " + m->process->label() + "\n" + m->process->logTail(lines);
  }
  return out;
}

std::vector<std::string> SagaStack::relayHistory(const std::string& name) {
  Managed& m = process(name);
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> out = history_[name];
  for (std::string& line : historyLines(m.process->label(), m.process->log())) out.push_back(std::move(line));
  return out;
}

namespace {

// "16/B374D848" -> its 64-bit value; 0 when it is not one.
uint64_t lsnValue(const std::string& text) {
  size_t slash = text.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 >= text.size()) return 0;
  try {
    return (std::stoull(text.substr(0, slash), nullptr, 16) << 32) | std::stoull(text.substr(slash + 1), nullptr, 16);
  } catch (const std::exception&) {
    return 0;
  }
}

// A committed transaction as the audit slot decoded it.
struct AuditTransaction {
  std::string xid;
  std::string firstLsn, endLsn;  // its first change, the end of its commit record
  std::string commitLsn = "?";   // the start of its commit record (Begin.final_lsn): how the relay names it
  std::vector<std::string> ids;  // its outbox rows (outbox and saga_messages), in decoding order
};

std::vector<AuditTransaction> auditTransactions(const std::string& conninfo, const std::string& slot) {
  std::vector<AuditTransaction> out;
  std::optional<AuditTransaction> open;
  auto rows = queryRows(conninfo, fmt::format("SELECT lsn::text, data FROM pg_logical_slot_peek_changes({}, NULL, "
                                              "NULL, 'include-xids', '1', 'skip-empty-xacts', '1')",
                                              sqlLiteral(slot)));
  for (auto& r : rows) {
    const std::string& data = r[1];
    if (data.rfind("BEGIN ", 0) == 0) {
      open = AuditTransaction{};
      open->xid = data.substr(6);
      open->firstLsn = r[0];
    } else if (data.rfind("COMMIT ", 0) == 0 && open) {
      open->endLsn = r[0];
      if (!open->ids.empty()) out.push_back(std::move(*open));
      open.reset();
    } else if (open && (data.rfind("table public.outbox: INSERT: id[uuid]:'", 0) == 0 ||
                        data.rfind("table public.saga_messages: INSERT: id[uuid]:'", 0) == 0)) {
      size_t start = data.find(":'") + 2;
      open->ids.push_back(data.substr(start, data.find('\'', start) - start));
    }
  }
  return out;
}

}  // namespace

std::string SagaStack::explainTransactions(const std::set<std::string>& missing) {
  if (missing.empty()) return "";
  std::string summary, details;
  std::set<std::string> seen;
  size_t units = 0, decoded = 0;
  for (const auto& [db, relay] : std::vector<std::pair<std::string, std::string>>{{orderDb_, "order-relay"},
                                                                                  {customerDb_, "customer-relay"}}) {
    std::vector<AuditTransaction> txns;
    try {
      txns = auditTransactions(conninfo(db), auditSlots_.at(db));
    } catch (const std::exception& e) {
      details += fmt::format("  {}: cannot read its audit slot: {}\n", db, e.what());
      continue;
    }
    decoded += txns.size();
    std::vector<std::string> history = relayHistory(relay);
    bool walinspect = true;
    try {
      PgConnection(conninfo(db)).exec("CREATE EXTENSION IF NOT EXISTS pg_walinspect");
    } catch (const std::exception&) {
      walinspect = false;
    }
    for (size_t k = 0; k < txns.size(); ++k) {
      AuditTransaction& t = txns[k];
      std::vector<size_t> at;
      for (size_t i = 0; i < t.ids.size(); ++i) {
        if (missing.count(t.ids[i])) at.push_back(i);
      }
      if (at.empty()) continue;
      ++units;
      for (size_t i : at) seen.insert(t.ids[i]);
      if (walinspect) {
        try {
          auto commit = queryRows(conninfo(db),
                                  fmt::format("SELECT start_lsn::text FROM pg_get_wal_records_info({}, {}::pg_lsn + 1) "
                                              "WHERE xid = {} AND resource_manager = 'Transaction' ORDER BY start_lsn "
                                              "DESC LIMIT 1",
                                              sqlLiteral(t.firstLsn), sqlLiteral(t.endLsn), t.xid));
          if (!commit.empty()) t.commitLsn = commit[0][0];
        } catch (const std::exception& e) {
          details += fmt::format("  pg_walinspect: {}\n", e.what());
          walinspect = false;
        }
      }
      std::string indexes;
      for (size_t i : at) indexes += (indexes.empty() ? "" : ",") + std::to_string(i);
      summary += fmt::format(" [{} xid {} commit {} end {}: row(s) {} of {} missing]", relay, t.xid, t.commitLsn,
                             t.endLsn, indexes, t.ids.size());
      details += fmt::format("  {} transaction xid {} (first change {}, commit {}, end {}), {} outbox row(s), "
                             "missing at index {}; the one before ends at {}, the one after at {}\n",
                             db, t.xid, t.firstLsn, t.commitLsn, t.endLsn, t.ids.size(), indexes,
                             k > 0 ? txns[k - 1].endLsn : "-", k + 1 < txns.size() ? txns[k + 1].endLsn : "-");
      // What the relay said about positions from two transactions before to two after.
      uint64_t from = lsnValue(txns[k >= 2 ? k - 2 : 0].firstLsn);
      uint64_t to = lsnValue(txns[std::min(k + 2, txns.size() - 1)].endLsn);
      for (const std::string& line : history) {
        for (size_t pos = 0; (pos = line.find('/', pos)) != std::string::npos; ++pos) {
          size_t b = pos, e = pos + 1;
          while (b > 0 && std::isxdigit(static_cast<unsigned char>(line[b - 1]))) --b;
          while (e < line.size() && std::isxdigit(static_cast<unsigned char>(line[e]))) ++e;
          uint64_t v = lsnValue(line.substr(b, e - b));
          if (v != 0 && v >= from && v <= to) {
            details += "    " + line + "\n";
            break;
          }
        }
      }
    }
    size_t resumes = 0, aborts = 0, splits = 0;
    for (const std::string& line : history) {
      resumes += line.find("resuming after") != std::string::npos ? 1 : 0;
      aborts += line.find("aborted the Kafka transaction") != std::string::npos ? 1 : 0;
      splits += line.find("events of the one committing") != std::string::npos ? 1 : 0;
    }
    details += fmt::format("  {}: {} resume(s) from a progress record, {} of them inside a split transaction; {} "
                           "abort(s)\n",
                           relay, resumes, splits, aborts);
  }
  size_t notDecoded = 0;
  for (const std::string& id : missing) notDecoded += seen.count(id) ? 0 : 1;
  return fmt::format("{} missing row(s): in {} of the {} transactions with outbox rows that logical decoding "
                     "sent{}; {} not among them\n",
                     missing.size(), units, decoded, summary, notDecoded) +
         details;
}

std::map<std::string, int64_t> SagaStack::deadLetterCounts() {
  std::map<std::string, int64_t> out;
  KafkaOffsets offsets(kafkaBootstrap());
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& m : processes_) {
    std::optional<std::string> topic = tomlKey(m->config, "", "dead_letter_topic");
    if (!topic && m->sink) throw std::runtime_error(m->name + ": no dead_letter_topic in its config");
    if (!topic) continue;
    out[unquote(*topic)] = offsets.recordCount(unquote(*topic));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// The application

namespace {
std::string money(int cents) { return fmt::format("{}.{:02d}", cents / 100, cents % 100); }
}  // namespace

void SagaStack::createCustomer(PgConnection& customer, const std::string& id, const std::string& name,
                               int limitCents) {
  customer.exec(fmt::format("SELECT create_customer({}, {}, {})", sqlLiteral(id), sqlLiteral(name), money(limitCents)));
}

void SagaStack::placeOrder(PgConnection& order, const std::string& id, const std::string& customerId, int totalCents,
                           const std::string& saga) {
  order.exec(fmt::format("SELECT place_order({}, {}, {}, {})", sqlLiteral(id), sqlLiteral(customerId),
                         money(totalCents), sqlLiteral(saga)));
}

bool SagaStack::cancelOrder(PgConnection& order, const std::string& id) {
  return order.scalar(fmt::format("SELECT cancel_order({})", sqlLiteral(id))) == "t";
}

// ---------------------------------------------------------------------------------------------------------------
// The facts

namespace {

// Collects the first few problems and counts the rest.
struct Problems {
  std::vector<std::string> first;
  size_t count = 0;
  void add(std::string what) {
    if (first.size() < 8) first.push_back(std::move(what));
    ++count;
  }
  std::string text(const std::string& what) const {
    if (count == 0) return "";
    std::string out = fmt::format("{}: {} problem(s):", what, count);
    for (const std::string& p : first) out += "\n  " + p;
    return out + "\n";
  }
};

struct OrderRow {
  std::string customerId, total, saga, status;
};

std::map<std::string, OrderRow> orders(const std::string& conninfo) {
  std::map<std::string, OrderRow> out;
  for (auto& r : queryRows(conninfo, "SELECT id, customer_id, total::numeric(12,2)::text, saga, status FROM orders")) {
    out[r[0]] = {r[1], r[2], r[3], r[4]};
  }
  return out;
}

}  // namespace

std::string SagaStack::pendingWork() {
  Problems p;
  std::string orderInfo = conninfo(orderDb_);
  for (auto& r : queryRows(orderInfo, "SELECT id, saga FROM orders WHERE status = 'PENDING' ORDER BY created_at")) {
    p.add(fmt::format("order {} ({}) is PENDING", r[0], r[1]));
  }
  // Each order's saga instances as its outcome says they must be: orchestration only, CreateOrder decided like the
  // order, CancelOrder COMPLETED exactly for the cancelled ones.
  auto rows = queryRows(orderInfo,
                        "SELECT o.id, o.saga, o.status, c.saga_type, c.state, x.saga_type, x.state FROM orders o "
                        "LEFT JOIN saga_instances c ON c.id = o.id || ':create' "
                        "LEFT JOIN saga_instances x ON x.id = o.id || ':cancel' ORDER BY o.id");
  for (auto& r : rows) {
    const std::string &id = r[0], &saga = r[1], &status = r[2];
    std::string create = r[3] + "/" + r[4];
    std::string cancel = r[5] + "/" + r[6];
    std::string wantCreate = "\\N/\\N";
    std::string wantCancel = "\\N/\\N";
    if (saga == "orchestration") {
      wantCreate = status == "REJECTED"    ? "CreateOrder/REJECTED"
                   : status == "PENDING"   ? "CreateOrder/RESERVING_CREDIT"
                                           : "CreateOrder/APPROVED";
      if (status == "CANCELLED") wantCancel = "CancelOrder/COMPLETED";
    }
    if (create != wantCreate || cancel != wantCancel) {
      p.add(fmt::format("order {} ({}, {}): saga instances {} and {}, expected {} and {}", id, saga, status, create,
                        cancel, wantCreate, wantCancel));
    }
  }
  auto orphans = queryRows(orderInfo,
                           "SELECT s.id, s.saga_type, s.state FROM saga_instances s LEFT JOIN orders o ON "
                           "o.id = s.order_id WHERE o.id IS NULL OR s.id NOT IN (o.id || ':create', o.id || ':cancel')");
  for (auto& r : orphans) p.add(fmt::format("saga instance {} ({} {}) belongs to no order", r[0], r[1], r[2]));
  return p.text("saga work not finished");
}

std::string SagaStack::reservationsMatchOrders() {
  Problems p;
  std::map<std::string, OrderRow> all = orders(conninfo(orderDb_));
  std::map<std::string, std::vector<std::string>> reservations;
  for (auto& r : queryRows(conninfo(customerDb_),
                           "SELECT order_id, customer_id, amount::numeric(12,2)::text, state FROM credit_reservations")) {
    reservations[r[0]] = {r[1], r[2], r[3]};
  }
  for (auto& [id, o] : all) {
    auto it = reservations.find(id);
    std::string want = o.status == "APPROVED"    ? "RESERVED"
                       : o.status == "CANCELLED" ? "RELEASED"
                       : o.status == "REJECTED"  ? "REJECTED"
                                                 : "";
    if (o.status == "PENDING") {
      p.add(fmt::format("order {} is PENDING", id));
      continue;
    }
    if (it == reservations.end()) {
      p.add(fmt::format("order {} ({}): no credit reservation, expected {}", id, o.status, want));
      continue;
    }
    const auto& r = it->second;
    if (r[2] != want || r[0] != o.customerId || r[1] != o.total) {
      p.add(fmt::format("order {} ({}, customer {}, total {}): reservation {} of customer {} for {}, expected {}", id,
                        o.status, o.customerId, o.total, r[2], r[0], r[1], want));
    }
  }
  for (auto& [id, r] : reservations) {
    if (!all.count(id)) p.add(fmt::format("reservation {} ({}) of no order", id, r[2]));
  }
  return p.text("credit reservations vs orders");
}

std::string SagaStack::creditMatchesApprovedOrders() {
  Problems p;
  std::map<std::string, std::string> approved;
  for (auto& r : queryRows(conninfo(orderDb_),
                           "SELECT customer_id, sum(total)::numeric(12,2)::text FROM orders WHERE status = 'APPROVED' "
                           "GROUP BY customer_id")) {
    approved[r[0]] = r[1];
  }
  for (auto& r : queryRows(conninfo(customerDb_),
                           "SELECT id, credit_reserved::numeric(12,2)::text, credit_limit::numeric(12,2)::text "
                           "FROM customers ORDER BY id")) {
    std::string want = approved.count(r[0]) ? approved[r[0]] : "0.00";
    if (r[1] != want) {
      p.add(fmt::format("customer {}: credit_reserved {} (limit {}), its APPROVED orders total {}", r[0], r[1], r[2],
                        want));
    }
    approved.erase(r[0]);
  }
  for (auto& [customer, total] : approved) p.add(fmt::format("APPROVED orders of unknown customer {}", customer));
  return p.text("credit reserved vs approved orders");
}

std::string SagaStack::viewMatchesServices(const std::string& schema) {
  Problems p;
  std::string q = (schema.empty() ? viewSchema_ : schema) + ".";
  std::map<std::string, OrderRow> all = orders(conninfo(orderDb_));
  std::map<std::string, std::vector<std::string>> customers;  // id -> name, limit
  std::string customerInfo = conninfo(customerDb_);
  for (auto& r : queryRows(customerInfo, "SELECT id, name, credit_limit::numeric(12,2)::text FROM customers")) {
    customers[r[0]] = {r[1], r[2]};
  }
  std::map<std::string, std::string> credit;
  for (auto& r : queryRows(customerInfo, "SELECT order_id, state FROM credit_reservations")) credit[r[0]] = r[1];

  std::string viewInfo = conninfo(viewDb_);
  std::map<std::string, std::vector<std::string>> viewCustomers;
  for (auto& r : queryRows(viewInfo, "SELECT customer_id, name, credit_limit::numeric(12,2)::text FROM " + q +
                                         "customers_view")) {
    viewCustomers[r[0]] = {r[1], r[2]};
  }
  for (auto& [id, c] : customers) {
    auto it = viewCustomers.find(id);
    if (it == viewCustomers.end()) {
      p.add("customers_view lacks customer " + id);
    } else if (it->second != c) {
      p.add(fmt::format("customers_view {}: {} / {}, expected {} / {}", id, it->second[0], it->second[1], c[0], c[1]));
    }
  }
  for (auto& [id, c] : viewCustomers) {
    if (!customers.count(id)) p.add("customers_view has unknown customer " + id);
  }

  std::map<std::string, std::vector<std::string>> view;
  for (auto& r : queryRows(viewInfo, "SELECT order_id, customer_id, customer_name, total::numeric(12,2)::text, saga, "
                                     "status, credit_state FROM " +
                                         q + "orders_view")) {
    view[r[0]] = {r[1], r[2], r[3], r[4], r[5], r[6]};
  }
  for (auto& [id, o] : all) {
    std::string name = customers.count(o.customerId) ? customers[o.customerId][0] : "\\N";
    std::string state = credit.count(id) ? credit[id] : "\\N";
    std::vector<std::string> want{o.customerId, name, o.total, o.saga, o.status, state};
    auto it = view.find(id);
    if (it == view.end()) {
      p.add("orders_view lacks order " + id);
    } else if (it->second != want) {
      p.add(fmt::format("orders_view {}: [{}], expected [{}]", id, fmt::join(it->second, ", "), fmt::join(want, ", ")));
    }
  }
  for (auto& [id, v] : view) {
    if (!all.count(id)) p.add("orders_view has unknown order " + id);
  }
  return p.text(fmt::format("the view in {} vs the service tables", schema.empty() ? viewSchema_ : schema));
}

std::string SagaStack::unsettled() {
  return pendingWork() + reservationsMatchOrders() + creditMatchesApprovedOrders() + viewMatchesServices();
}

}  // namespace outbox::test::saga
