#include "src/BatchApplier.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstring>
#include <memory>
#include <set>

#include "common/Log.h"
#include "common/PgConnection.h"

namespace outbox::sink {

namespace {

using ResultPtr = PgResult;

bool ok(const PGresult* r) {
  ExecStatusType s = PQresultStatus(r);
  return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

std::string errorText(PGconn* conn, const PGresult* r) {
  const char* message = r != nullptr ? PQresultErrorMessage(r) : nullptr;
  std::string text = message != nullptr && *message != '\0' ? message : PQerrorMessage(conn);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  const char* state = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  if (state != nullptr) text += fmt::format(" (SQLSTATE {})", state);
  return text;
}

// `values` as libpq takes them: a null pointer for SQL NULL.
const char* const* pointersTo(const ParamValues& values, std::vector<const char*>& pointers) {
  pointers.clear();
  for (const auto& v : values) pointers.push_back(v ? v->c_str() : nullptr);
  return pointers.data();
}

// A batch with the counts known from the plan alone: the duplicates found when planning, nothing else yet.
StagedBatch countsOf(const BatchPlan& plan, size_t projections) {
  StagedBatch batch;
  batch.duplicates = plan.duplicates;
  batch.appliedByProjection.assign(projections, 0);
  return batch;
}

// Counts an event whose statements all ran (or that needed none).
void count(const PlannedEvent& event, StagedBatch& batch) {
  if (event.poison) {
    batch.poison.push_back(PoisonEvent{event.index, *event.poison});
  } else if (event.statements.empty()) {
    ++batch.noProjection;
  } else {
    // Once per projection, not per statement: a projection's first statement stands for it.
    for (const PlannedStatement& s : event.statements) {
      if (s.statement == 0) ++batch.appliedByProjection[s.projection];
    }
  }
}

std::string conflictText(const PlannedOffset& offset, const std::string& group) {
  return fmt::format("the stored offset of {} [{}] is no longer {}: another instance of group {} moved it",
                     offset.partition.first, offset.partition.second,
                     offset.expected ? std::to_string(*offset.expected) : std::string("absent"), group);
}

}  // namespace

SqlFault classifySqlState(const char* sqlState) {
  if (sqlState == nullptr || std::strlen(sqlState) != 5) return SqlFault::Environment;  // the connection failed
  std::string_view c = std::string_view(sqlState).substr(0, 2);
  return c == "22" || c == "23" ? SqlFault::Data : SqlFault::Environment;
}

std::string sqlStateClass(std::string_view sqlState) {
  return sqlState.size() == 5 ? std::string(sqlState.substr(0, 2)) : std::string("none");
}

std::string BatchApplier::describe(const PGresult* r) {
  const char* state = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  lastSqlState_ = state != nullptr ? state : "";
  return errorText(conn_, r);
}

bool BatchApplier::environmentFailure(const PGresult* r) const {
  if (PQstatus(conn_) != CONNECTION_OK) return true;
  return classifySqlState(r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr) == SqlFault::Environment;
}

BatchApplier::BatchApplier(const SinkConfig& config, ProjectionSet& projections)
    : config_(config), projections_(projections) {
  for (size_t i = 0; i < projections_.all().size(); ++i) {
    const size_t n = projections_.at(i).statements().size();
    std::vector<std::string> names;
    for (size_t k = 0; k < n; ++k) names.push_back(n == 1 ? fmt::format("p{}", i) : fmt::format("p{}_{}", i, k));
    projectionStatements_.push_back(std::move(names));
  }
}

BatchApplier::~BatchApplier() { disconnect(); }

bool BatchApplier::connected() const { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }

void BatchApplier::disconnect() {
  if (conn_ != nullptr) PQfinish(conn_);
  conn_ = nullptr;
  inTransaction_ = false;
}

std::string BatchApplier::table(const char* name) const { return config_.database.schema + "." + name; }

bool BatchApplier::exec(const char* sql, std::string& error) {
  ResultPtr r(PQexec(conn_, sql));
  if (ok(r.get())) return true;
  error = describe(r.get());
  return false;
}

BatchApplier::ConnectResult BatchApplier::connect(std::string& error) {
  disconnect();
  lastSqlState_.clear();
  conn_ = connectPostgres(config_.database.conninfo, config_.database.password,
                          {{"application_name", "outbox-sink"}, {"connect_timeout", "10"}});
  if (PQstatus(conn_) != CONNECTION_OK) {
    error = pgErrorMessage(conn_);
    disconnect();
    // A certificate that does not verify, a failed authentication: fatal at start-up; once the sink has worked,
    // retried like an outage (a certificate or password being rotated).
    std::optional<std::string> hint = permanentConnectFailureHint(error);
    if (!hint) return ConnectResult::Transient;
    error += ": " + *hint;
    if (preparedBefore_) return ConnectResult::Transient;
    error += " (not retried at start-up: fix it, then start the sink again)";
    return ConnectResult::Fatal;
  }
  PQsetNoticeProcessor(
      conn_, [](void*, const char*) {}, nullptr);

  auto failedSetup = [&](const std::string& what, const std::string& why, bool transient) {
    error = what + ": " + why;
    bool broken = PQstatus(conn_) != CONNECTION_OK;
    disconnect();
    return transient || broken ? ConnectResult::Transient : ConnectResult::Fatal;
  };

  if (!config_.database.searchPath.empty()) {
    // Before anything is prepared: unqualified names in the projections resolve through it, at PREPARE time.
    std::string path = fmt::format("{}", fmt::join(config_.database.searchPath, ", "));
    const char* values[] = {path.c_str()};
    ResultPtr r(PQexecParams(conn_, "SELECT pg_catalog.set_config('search_path', $1, false)", 1, nullptr, values,
                             nullptr, nullptr, 0));
    if (!ok(r.get())) return failedSetup("cannot set database.search_path", describe(r.get()), true);
  }

  if (config_.database.createTables) {
    // Two instances starting together would race on CREATE TABLE IF NOT EXISTS (a unique violation in the
    // catalog), so the creation runs under a transaction-scoped advisory lock.
    std::string ddl = fmt::format(
        "BEGIN;"
        "SELECT pg_advisory_xact_lock(hashtext('outbox_sink_schema'));"
        "CREATE TABLE IF NOT EXISTS {0} ("
        "  consumer_group text NOT NULL, topic text NOT NULL, partition integer NOT NULL,"
        "  next_offset bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),"
        "  PRIMARY KEY (consumer_group, topic, partition));"
        "CREATE TABLE IF NOT EXISTS {1} ("
        "  consumer_group text NOT NULL, event_id text NOT NULL,"
        "  processed_at timestamptz NOT NULL DEFAULT now(),"
        "  PRIMARY KEY (consumer_group, event_id));"
        "CREATE INDEX IF NOT EXISTS outbox_sink_processed_events_age ON {1} (consumer_group, processed_at);"
        "COMMIT;",
        table("outbox_sink_offsets"), table("outbox_sink_processed_events"));
    ResultPtr r(PQexec(conn_, ddl.c_str()));
    if (!ok(r.get())) {
      return failedSetup(
          "cannot create the sink's tables (or set database.create_tables = false and apply "
          "schema/sink.sql)",
          describe(r.get()), environmentFailure(r.get()));
    }
  }

  auto prepare = [&](const std::string& name, const std::string& sql, int params) -> std::optional<std::string> {
    ResultPtr r(PQprepare(conn_, name.c_str(), sql.c_str(), params, nullptr));
    if (ok(r.get())) return std::nullopt;
    return describe(r.get());
  };
  for (size_t i = 0; i < projections_.all().size(); ++i) {
    const Projection& p = projections_.at(i);
    for (size_t k = 0; k < p.statements().size(); ++k) {
      const Projection::Statement& statement = p.statements()[k];
      if (auto why = prepare(projectionStatements_[i][k], statement.sql, static_cast<int>(statement.params.size()))) {
        // It prepared at start-up: what changed since (a table renamed, a grant revoked) is the environment's.
        return failedSetup(fmt::format("the sql of {} does not prepare", p.label(k)), *why, preparedBefore_);
      }
    }
  }
  std::string offsets = fmt::format(
      "INSERT INTO {0} AS o (consumer_group, topic, partition, next_offset) VALUES ($1, $2, $3, $4) "
      "ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, "
      "updated_at = now() WHERE o.next_offset = $5::bigint RETURNING 1",
      table("outbox_sink_offsets"));
  std::string stored = fmt::format("SELECT topic, partition, next_offset FROM {} WHERE consumer_group = $1",
                                   table("outbox_sink_offsets"));
  std::string dedup = fmt::format(
      "INSERT INTO {} (consumer_group, event_id, processed_at) VALUES ($1, $2, now()) ON CONFLICT DO NOTHING",
      table("outbox_sink_processed_events"));
  std::string prune =
      fmt::format("DELETE FROM {} WHERE consumer_group = $1 AND processed_at < now() - make_interval(hours => $2)",
                  table("outbox_sink_processed_events"));
  for (auto& [name, sql, n] : {std::tuple<const char*, std::string&, int>{"offsets", offsets, 5},
                               {"stored", stored, 1},
                               {"dedup", dedup, 2},
                               {"prune", prune, 2}}) {
    if (auto why = prepare(name, sql, n)) {
      return failedSetup("cannot prepare the sink's own statements (are its tables there? see schema/sink.sql)", *why,
                         preparedBefore_);
    }
  }
  preparedBefore_ = true;
  return ConnectResult::Ok;
}

std::optional<StoredOffsets> BatchApplier::storedOffsets(const std::vector<TopicPartition>& partitions,
                                                         std::string& error) {
  if (!connected()) {
    error = "not connected";
    return std::nullopt;
  }
  const char* params[] = {config_.kafka.groupId.c_str()};
  ResultPtr r(PQexecPrepared(conn_, "stored", 1, params, nullptr, nullptr, 0));
  if (!ok(r.get())) {
    error = describe(r.get());
    return std::nullopt;
  }
  std::map<TopicPartition, int64_t> all;
  for (int row = 0; row < PQntuples(r.get()); ++row) {
    all.emplace(TopicPartition(PQgetvalue(r.get(), row, 0), std::stoi(PQgetvalue(r.get(), row, 1))),
                std::stoll(PQgetvalue(r.get(), row, 2)));
  }
  StoredOffsets out;
  for (const TopicPartition& tp : partitions) {
    auto it = all.find(tp);
    out[tp] = it == all.end() ? std::nullopt : std::optional<int64_t>(it->second);
  }
  return out;
}

StagedBatch BatchApplier::failed(StagedBatch::Status status, std::string error) {
  rollback();
  StagedBatch b;
  b.status = status;
  b.error = std::move(error);
  b.sqlState = lastSqlState_;
  return b;
}

const char* BatchApplier::statementName(const PlannedStatement& statement) const {
  switch (statement.kind) {
    case PlannedStatement::Kind::Dedup:
      return "dedup";
    case PlannedStatement::Kind::Offset:
      return "offsets";
    case PlannedStatement::Kind::Projection:
      break;
  }
  return projectionStatements_[statement.projection][statement.statement].c_str();
}

StagedBatch BatchApplier::stopped(size_t index, const std::string& error) {
  rollback();
  StagedBatch b;
  b.status = StagedBatch::Status::Poison;
  b.error = error;
  b.poison.push_back(PoisonEvent{index, error});
  return b;
}

StagedBatch BatchApplier::stage(const std::vector<SinkEvent>& events, const StoredOffsets& expected,
                                const std::map<TopicPartition, int64_t>& nextOffsets) {
  using Status = StagedBatch::Status;
  lastSqlState_.clear();
  if (!connected()) return failed(Status::Transient, "not connected to the database");
  std::string error;
  if (!exec("BEGIN", error)) return failed(Status::Transient, "BEGIN: " + error);
  inTransaction_ = true;

  // The ids applied before, in one query (the plan catches the ones repeated inside the batch).
  std::set<std::string> processed;
  std::vector<std::string> ids = eventIds(events, config_);
  if (!ids.empty()) {
    std::string array = textArrayLiteral(ids);
    std::string sql = fmt::format("SELECT event_id FROM {} WHERE consumer_group = $1 AND event_id = ANY($2::text[])",
                                  table("outbox_sink_processed_events"));
    const char* params[] = {config_.kafka.groupId.c_str(), array.c_str()};
    ResultPtr r(PQexecParams(conn_, sql.c_str(), 2, nullptr, params, nullptr, nullptr, 0));
    if (!ok(r.get())) {
      Status s = environmentFailure(r.get()) ? Status::Transient : Status::Fatal;
      return failed(s, "reading processed event ids: " + describe(r.get()));
    }
    for (int row = 0; row < PQntuples(r.get()); ++row) processed.insert(PQgetvalue(r.get(), row, 0));
  }
  BatchPlan plan = planBatch(events, config_, projections_, std::move(processed), expected, nextOffsets);

  if (config_.onError == OnError::Stop) {
    for (const PlannedEvent& e : plan.events) {
      if (e.poison) return stopped(e.index, *e.poison);
    }
  }
  bool redo = false;
  StagedBatch batch = sendPipelined(plan, redo);
  if (!redo) return batch;
  if (!exec("BEGIN", error)) return failed(Status::Transient, "BEGIN: " + error);
  inTransaction_ = true;
  return sendOneByOne(plan);
}

StagedBatch BatchApplier::sendPipelined(const BatchPlan& plan, bool& redo) {
  using Status = StagedBatch::Status;
  using Kind = PlannedStatement::Kind;
  redo = false;
  std::vector<const PlannedStatement*> statements;
  for (const PlannedEvent& e : plan.events) {
    if (e.dedup) statements.push_back(&*e.dedup);
    for (const PlannedStatement& s : e.statements) statements.push_back(&s);
  }
  const size_t firstOffset = statements.size();
  for (const PlannedOffset& o : plan.offsets) statements.push_back(&o.statement);

  // A connection in the middle of a pipeline can neither be used nor rolled back: start afresh.
  auto lost = [&](const std::string& what) {
    std::string why = what + ": " + describe(nullptr);
    disconnect();
    StagedBatch b;
    b.status = Status::Transient;
    b.error = std::move(why);
    return b;
  };
  if (PQenterPipelineMode(conn_) != 1) return failed(Status::Transient, "cannot enter pipeline mode");
  // Every statement, then one Sync: one round trip. In blocking mode libpq reads what the server sends while it
  // waits to send more (pqSendSome in fe-misc.c), so a long pipeline cannot deadlock on two full sockets.
  std::vector<const char*> pointers;
  for (const PlannedStatement* s : statements) {
    if (PQsendQueryPrepared(conn_, statementName(*s), static_cast<int>(s->params.size()),
                            pointersTo(s->params, pointers), nullptr, nullptr, 0) != 1) {
      return lost("sending a statement");
    }
  }
  if (PQpipelineSync(conn_) != 1) return lost("pipeline sync");

  // Each statement's result followed by a null, then the Sync's. After a failed statement the server skips the
  // rest (PGRES_PIPELINE_ABORTED) up to the Sync.
  std::optional<std::string> failure;  // the first statement that failed
  bool transient = false;
  bool dedupRace = false;
  std::optional<std::string> conflict;
  for (size_t k = 0; k < statements.size(); ++k) {
    ResultPtr r(PQgetResult(conn_));
    if (!r) return lost("connection lost");
    const PlannedStatement& s = *statements[k];
    if (PQresultStatus(r.get()) == PGRES_PIPELINE_ABORTED) {
      // skipped after `failure`
    } else if (!ok(r.get())) {
      if (PQstatus(conn_) != CONNECTION_OK) return lost("connection lost");
      if (!failure) {
        transient = environmentFailure(r.get());
        failure = (s.kind == Kind::Projection ? projections_.at(s.projection).label(s.statement) + ": " : std::string()) +
                  describe(r.get());
      }
    } else if (s.kind == Kind::Dedup && std::strcmp(PQcmdTuples(r.get()), "0") == 0) {
      dedupRace = true;  // another transaction recorded this id since the look-up: the exact way decides
    } else if (s.kind == Kind::Offset && PQntuples(r.get()) != 1 && !conflict) {
      conflict = conflictText(plan.offsets[k - firstOffset], config_.kafka.groupId);
    }
    if (ResultPtr(PQgetResult(conn_))) return lost("pipeline out of step");
  }
  ResultPtr sync(PQgetResult(conn_));
  if (!sync || PQresultStatus(sync.get()) != PGRES_PIPELINE_SYNC) return lost("pipeline sync");
  if (PQexitPipelineMode(conn_) != 1) return lost("leaving pipeline mode");

  if (conflict) return failed(Status::Conflict, *conflict);
  if (failure && transient) return failed(Status::Transient, *failure);
  if (failure || dedupRace) {
    rollback();
    redo = true;
    return StagedBatch{};
  }
  StagedBatch batch = countsOf(plan, projections_.all().size());
  for (const PlannedEvent& e : plan.events) count(e, batch);
  return batch;
}

StagedBatch BatchApplier::sendOneByOne(const BatchPlan& plan) {
  using Status = StagedBatch::Status;
  StagedBatch batch = countsOf(plan, projections_.all().size());
  const bool savepoints = config_.onError == OnError::DeadLetter;
  std::string error;
  std::vector<const char*> pointers;
  auto execute = [&](const PlannedStatement& s) {
    return ResultPtr(PQexecPrepared(conn_, statementName(s), static_cast<int>(s.params.size()),
                                    pointersTo(s.params, pointers), nullptr, nullptr, 0));
  };
  for (const PlannedEvent& e : plan.events) {
    if (e.poison) {  // a parameter could not be had: nothing to send (not even its id, see PlannedEvent::dedup)
      if (!savepoints) return stopped(e.index, *e.poison);
      count(e, batch);
      continue;
    }
    if (!e.dedup && e.statements.empty()) {
      count(e, batch);
      continue;
    }
    // The id first, inside the event's savepoint: a duplicate runs nothing, and a poison event's ROLLBACK TO takes
    // its id back out, so it is not recorded as processed.
    if (savepoints && !exec("SAVEPOINT event", error)) return failed(Status::Transient, "SAVEPOINT: " + error);
    std::optional<std::string> poison;
    bool duplicate = false;
    if (e.dedup) {
      ResultPtr r = execute(*e.dedup);
      if (!ok(r.get())) {
        std::string why = "recording the event id: " + describe(r.get());
        if (environmentFailure(r.get())) return failed(Status::Transient, why);
        poison = std::move(why);  // e.g. an id that is not valid in the database's encoding
      } else if (std::strcmp(PQcmdTuples(r.get()), "0") == 0) {  // recorded since the look-up
        duplicate = true;
      }
    }
    for (size_t k = 0; !poison && !duplicate && k < e.statements.size(); ++k) {
      const PlannedStatement& s = e.statements[k];
      ResultPtr r = execute(s);
      if (ok(r.get())) continue;
      std::string why = fmt::format("{}: {}", projections_.at(s.projection).label(s.statement), describe(r.get()));
      if (environmentFailure(r.get())) return failed(Status::Transient, why);
      poison = std::move(why);
    }
    if (poison) {
      if (!savepoints) return stopped(e.index, *poison);
      if (!exec("ROLLBACK TO SAVEPOINT event", error)) {
        return failed(Status::Transient, "ROLLBACK TO SAVEPOINT: " + error);
      }
      batch.poison.push_back(PoisonEvent{e.index, std::move(*poison)});
      continue;
    }
    if (savepoints && !exec("RELEASE SAVEPOINT event", error)) return failed(Status::Transient, "RELEASE: " + error);
    if (duplicate) {
      ++batch.duplicates;
    } else {
      count(e, batch);
    }
  }
  for (const PlannedOffset& o : plan.offsets) {
    ResultPtr r = execute(o.statement);
    if (!ok(r.get())) {
      Status s = environmentFailure(r.get()) ? Status::Transient : Status::Fatal;
      return failed(s, "storing offsets: " + describe(r.get()));
    }
    if (PQntuples(r.get()) != 1) return failed(Status::Conflict, conflictText(o, config_.kafka.groupId));
  }
  return batch;
}

bool BatchApplier::commit(std::string& error) {
  inTransaction_ = false;
  ResultPtr r(PQexec(conn_, "COMMIT"));
  if (!ok(r.get())) {
    error = "COMMIT: " + describe(r.get());
    return false;
  }
  // COMMIT of a transaction that failed reports ROLLBACK without an error.
  if (std::strcmp(PQcmdStatus(r.get()), "COMMIT") != 0) {
    error = std::string("COMMIT answered ") + PQcmdStatus(r.get());
    return false;
  }
  return true;
}

void BatchApplier::rollback() {
  if (!inTransaction_) return;
  inTransaction_ = false;
  if (!connected()) return;
  ResultPtr r(PQexec(conn_, "ROLLBACK"));
  if (!ok(r.get())) log::warn("ROLLBACK failed: {}", describe(r.get()));
}

int64_t BatchApplier::pruneProcessedEvents(std::string& error) {
  if (!connected()) {
    error = "not connected";
    return -1;
  }
  std::string hours = std::to_string(config_.deduplication.retentionHours);
  const char* params[] = {config_.kafka.groupId.c_str(), hours.c_str()};
  ResultPtr r(PQexecPrepared(conn_, "prune", 2, params, nullptr, nullptr, 0));
  if (!ok(r.get())) {
    error = errorText(conn_, r.get());
    return -1;
  }
  return std::stoll(PQcmdTuples(r.get()));
}

}  // namespace outbox::sink
