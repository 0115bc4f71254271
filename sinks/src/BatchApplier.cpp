#include "src/BatchApplier.h"

#include <fmt/format.h>

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

// Whether a failed statement calls for a retry of the whole batch rather than dead-lettering the event.
bool transientFailure(PGconn* conn, const PGresult* r) {
  if (PQstatus(conn) != CONNECTION_OK) return true;
  return isTransientSqlState(r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr);
}

}  // namespace

bool isTransientSqlState(const char* sqlState) {
  if (sqlState == nullptr || std::strlen(sqlState) != 5) return true;  // no server error: the connection failed
  std::string_view s(sqlState);
  return s.substr(0, 2) == "08" || s == "40001" || s == "40P01" || s == "57P01" || s == "57P02" || s == "57P03" ||
         s.substr(0, 2) == "53" || s == "55P03";
}

BatchApplier::BatchApplier(const SinkConfig& config, ProjectionSet& projections)
    : config_(config), projections_(projections) {}

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
  error = errorText(conn_, r.get());
  return false;
}

BatchApplier::ConnectResult BatchApplier::connect(std::string& error) {
  disconnect();
  conn_ = connectPostgres(config_.database.conninfo, config_.database.password,
                          {{"application_name", "outbox-sink"}, {"connect_timeout", "10"}});
  if (PQstatus(conn_) != CONNECTION_OK) {
    error = pgErrorMessage(conn_);
    disconnect();
    return ConnectResult::Transient;
  }
  PQsetNoticeProcessor(
      conn_, [](void*, const char*) {}, nullptr);

  auto failedSetup = [&](const std::string& what, const std::string& why, bool transient) {
    error = what + ": " + why;
    bool broken = PQstatus(conn_) != CONNECTION_OK;
    disconnect();
    return transient || broken ? ConnectResult::Transient : ConnectResult::Fatal;
  };

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
          errorText(conn_, r.get()), transientFailure(conn_, r.get()));
    }
  }

  auto prepare = [&](const std::string& name, const std::string& sql, int params) -> std::optional<std::string> {
    ResultPtr r(PQprepare(conn_, name.c_str(), sql.c_str(), params, nullptr));
    if (ok(r.get())) return std::nullopt;
    return errorText(conn_, r.get());
  };
  for (size_t i = 0; i < projections_.all().size(); ++i) {
    const Projection& p = projections_.at(i);
    if (auto why = prepare(fmt::format("p{}", i), p.sql(), static_cast<int>(p.paramCount()))) {
      return failedSetup(fmt::format("the sql of projection {} does not prepare", p.name()), *why, false);
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
                         false);
    }
  }
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
    error = errorText(conn_, r.get());
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
  return b;
}

StagedBatch BatchApplier::stage(const std::vector<SinkEvent>& events, const StoredOffsets& expected,
                                const std::map<TopicPartition, int64_t>& nextOffsets) {
  using Status = StagedBatch::Status;
  if (!connected()) return failed(Status::Transient, "not connected to the database");
  std::string error;
  if (!exec("BEGIN", error)) return failed(Status::Transient, "BEGIN: " + error);
  inTransaction_ = true;
  bool fallback = false;
  StagedBatch batch = stagePipelined(events, expected, nextOffsets, fallback);
  if (!fallback) return batch;
  if (!exec("BEGIN", error)) return failed(Status::Transient, "BEGIN: " + error);
  inTransaction_ = true;
  return stageOneByOne(events, expected, nextOffsets);
}

namespace {

// One statement of a pipelined batch.
struct Queued {
  enum class Kind { Dedup, Projection, Offset };
  Kind kind;
  std::string statement;  // prepared statement name
  size_t ref = 0;         // projection index (Projection)
  ParamValues values;
};

// A PostgreSQL text array literal of `items`: {"a","b\"c"}.
std::string textArray(const std::vector<std::string>& items) {
  std::string out = "{";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += '"';
    for (char c : items[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

constexpr size_t kPipelineChunk = 256;  // statements per Sync: bounds what either side buffers

}  // namespace

StagedBatch BatchApplier::stagePipelined(const std::vector<SinkEvent>& events, const StoredOffsets& expected,
                                         const std::map<TopicPartition, int64_t>& nextOffsets, bool& fallback) {
  using Status = StagedBatch::Status;
  fallback = false;
  StagedBatch batch;
  batch.appliedByProjection.assign(projections_.all().size(), 0);
  const bool dedup = config_.deduplication.enabled;

  // Ids applied before, in one query; ids repeated inside the batch are caught in memory.
  std::set<std::string> processed;
  if (dedup) {
    std::vector<std::string> ids;
    for (const SinkEvent& e : events) {
      if (auto id = e.header(config_.deduplication.idHeader)) ids.emplace_back(*id);
    }
    if (!ids.empty()) {
      std::string array = textArray(ids);
      std::string sql = fmt::format("SELECT event_id FROM {} WHERE consumer_group = $1 AND event_id = ANY($2::text[])",
                                    table("outbox_sink_processed_events"));
      const char* params[] = {config_.kafka.groupId.c_str(), array.c_str()};
      ResultPtr r(PQexecParams(conn_, sql.c_str(), 2, nullptr, params, nullptr, nullptr, 0));
      if (!ok(r.get())) {
        Status s = transientFailure(conn_, r.get()) ? Status::Transient : Status::Fatal;
        return failed(s, "reading processed event ids: " + errorText(conn_, r.get()));
      }
      for (int row = 0; row < PQntuples(r.get()); ++row) processed.insert(PQgetvalue(r.get(), row, 0));
    }
  }

  std::vector<Queued> queue;
  std::vector<size_t> matches;
  std::vector<ParamValues> perProjection;
  for (size_t i = 0; i < events.size(); ++i) {
    const SinkEvent& event = events[i];
    EventView view(event, config_.kafka.eventTypeHeader);
    if (dedup) {
      if (std::optional<std::string_view> id = event.header(config_.deduplication.idHeader)) {
        if (!processed.insert(std::string(*id)).second) {
          ++batch.duplicates;
          continue;
        }
        queue.push_back(Queued{Queued::Kind::Dedup, "dedup", 0, {config_.kafka.groupId, std::string(*id)}});
      }
    }
    projections_.matching(view, matches);
    if (matches.empty()) {
      ++batch.noProjection;
      continue;
    }
    // Every parameter first: an event that lacks one runs no statement at all.
    perProjection.resize(matches.size());
    std::optional<std::string> poison;
    for (size_t m = 0; m < matches.size() && !poison; ++m) {
      std::string error;
      if (!projections_.at(matches[m]).extract(view, perProjection[m], error)) poison = error;
    }
    if (poison) {
      if (config_.onError == OnError::Stop) {
        rollback();
        StagedBatch stopped;
        stopped.status = Status::Poison;
        stopped.error = *poison;
        stopped.poison.push_back(PoisonEvent{i, *poison});
        return stopped;
      }
      batch.poison.push_back(PoisonEvent{i, std::move(*poison)});
      continue;
    }
    for (size_t m = 0; m < matches.size(); ++m) {
      queue.push_back(
          Queued{Queued::Kind::Projection, fmt::format("p{}", matches[m]), matches[m], std::move(perProjection[m])});
    }
  }
  std::vector<const TopicPartition*> offsetPartitions;
  for (const auto& [tp, next] : nextOffsets) {
    auto it = expected.find(tp);
    bool known = it != expected.end() && it->second.has_value();
    queue.push_back(Queued{Queued::Kind::Offset,
                           "offsets",
                           offsetPartitions.size(),
                           {config_.kafka.groupId, tp.first, std::to_string(tp.second), std::to_string(next),
                            known ? std::optional<std::string>(std::to_string(it->second.value())) : std::nullopt}});
    offsetPartitions.push_back(&tp);
  }

  if (PQenterPipelineMode(conn_) != 1) return failed(Status::Transient, "cannot enter pipeline mode");
  std::optional<std::string> sqlError;  // the first statement that failed
  bool transient = false;
  std::optional<std::string> conflict;
  bool dedupRace = false;
  std::vector<const char*> pointers;
  for (size_t sent = 0; sent < queue.size() && !sqlError && !conflict && !dedupRace;) {
    size_t end = std::min(queue.size(), sent + kPipelineChunk);
    for (size_t q = sent; q < end; ++q) {
      pointers.clear();
      for (const auto& v : queue[q].values) pointers.push_back(v ? v->c_str() : nullptr);
      if (PQsendQueryPrepared(conn_, queue[q].statement.c_str(), static_cast<int>(pointers.size()), pointers.data(),
                              nullptr, nullptr, 0) != 1) {
        sqlError = std::string("sending a statement: ") + PQerrorMessage(conn_);
        transient = true;
        break;
      }
    }
    if (transient || PQpipelineSync(conn_) != 1) {
      transient = true;
      if (!sqlError) sqlError = std::string("pipeline sync: ") + PQerrorMessage(conn_);
      break;
    }
    size_t next = sent;
    int idle = 0;
    while (true) {
      ResultPtr r(PQgetResult(conn_));
      if (!r) {
        // NULL ends one statement's results; on a broken connection nothing more comes.
        if (PQstatus(conn_) != CONNECTION_OK || ++idle > static_cast<int>(2 * kPipelineChunk + 8)) {
          transient = true;
          if (!sqlError) sqlError = std::string("connection lost: ") + PQerrorMessage(conn_);
          break;
        }
        continue;
      }
      idle = 0;
      ExecStatusType status = PQresultStatus(r.get());
      if (status == PGRES_PIPELINE_SYNC) break;
      if (next >= end) continue;  // nothing else is expected before the Sync
      const Queued& q = queue[next++];
      if (status == PGRES_PIPELINE_ABORTED) continue;
      if (!ok(r.get())) {
        if (!sqlError) {
          transient = transientFailure(conn_, r.get());
          sqlError = (q.kind == Queued::Kind::Projection ? "projection " + projections_.at(q.ref).name() + ": "
                                                         : std::string()) +
                     errorText(conn_, r.get());
        }
        if (PQstatus(conn_) != CONNECTION_OK) {
          transient = true;
          break;
        }
        continue;
      }
      if (q.kind == Queued::Kind::Dedup && std::strcmp(PQcmdTuples(r.get()), "0") == 0) {
        dedupRace = true;  // another transaction recorded this id since our read: let the exact path decide
      } else if (q.kind == Queued::Kind::Offset && PQntuples(r.get()) != 1) {
        const TopicPartition& tp = *offsetPartitions[q.ref];
        conflict =
            fmt::format("the stored offset of {} [{}] is no longer {}: another instance of group {} moved it", tp.first,
                        tp.second, q.values[4] ? *q.values[4] : std::string("absent"), config_.kafka.groupId);
      } else if (q.kind == Queued::Kind::Projection) {
        ++batch.appliedByProjection[q.ref];
      }
    }
    if (transient) break;
    sent = end;
  }
  if (transient) {
    disconnect();  // the connection is unusable or mid-pipeline: start afresh
    StagedBatch b;
    b.status = Status::Transient;
    b.error = *sqlError;
    return b;
  }
  if (PQexitPipelineMode(conn_) != 1) {
    std::string why = PQerrorMessage(conn_);
    disconnect();
    StagedBatch b;
    b.status = Status::Transient;
    b.error = "leaving pipeline mode: " + why;
    return b;
  }
  if (conflict) return failed(Status::Conflict, *conflict);
  if (sqlError || dedupRace) {
    rollback();
    fallback = true;
    return batch;
  }
  return batch;
}

StagedBatch BatchApplier::stageOneByOne(const std::vector<SinkEvent>& events, const StoredOffsets& expected,
                                        const std::map<TopicPartition, int64_t>& nextOffsets) {
  using Status = StagedBatch::Status;
  StagedBatch batch;
  batch.appliedByProjection.assign(projections_.all().size(), 0);
  std::string error;

  const bool dedup = config_.deduplication.enabled;
  const bool savepoints = config_.onError == OnError::DeadLetter;
  std::vector<size_t> matches;
  ParamValues values;
  std::vector<const char*> pointers;
  for (size_t i = 0; i < events.size(); ++i) {
    const SinkEvent& event = events[i];
    EventView view(event, config_.kafka.eventTypeHeader);
    if (dedup) {
      if (std::optional<std::string_view> id = event.header(config_.deduplication.idHeader)) {
        std::string idText(*id);
        const char* params[] = {config_.kafka.groupId.c_str(), idText.c_str()};
        ResultPtr r(PQexecPrepared(conn_, "dedup", 2, params, nullptr, nullptr, 0));
        if (!ok(r.get())) {
          Status s = transientFailure(conn_, r.get()) ? Status::Transient : Status::Fatal;
          return failed(s, "recording the event id: " + errorText(conn_, r.get()));
        }
        if (std::strcmp(PQcmdTuples(r.get()), "0") == 0) {
          ++batch.duplicates;
          continue;
        }
      }
    }
    projections_.matching(view, matches);
    if (matches.empty()) {
      ++batch.noProjection;
      continue;
    }
    if (savepoints && !exec("SAVEPOINT event", error)) return failed(Status::Transient, "SAVEPOINT: " + error);
    std::optional<std::string> poison;
    for (size_t index : matches) {
      const Projection& projection = projections_.at(index);
      if (!projection.extract(view, values, error)) {
        poison = error;
        break;
      }
      pointers.clear();
      for (const auto& v : values) pointers.push_back(v ? v->c_str() : nullptr);
      std::string name = fmt::format("p{}", index);
      ResultPtr r(
          PQexecPrepared(conn_, name.c_str(), static_cast<int>(pointers.size()), pointers.data(), nullptr, nullptr, 0));
      if (!ok(r.get())) {
        if (transientFailure(conn_, r.get())) {
          return failed(Status::Transient,
                        fmt::format("projection {}: {}", projection.name(), errorText(conn_, r.get())));
        }
        poison = fmt::format("projection {}: {}", projection.name(), errorText(conn_, r.get()));
        break;
      }
    }
    if (poison) {
      if (!savepoints) {
        rollback();
        StagedBatch stopped;
        stopped.status = Status::Poison;
        stopped.error = *poison;
        stopped.poison.push_back(PoisonEvent{i, *poison});
        return stopped;
      }
      if (!exec("ROLLBACK TO SAVEPOINT event", error))
        return failed(Status::Transient, "ROLLBACK TO SAVEPOINT: " + error);
      batch.poison.push_back(PoisonEvent{i, std::move(*poison)});
      continue;
    }
    if (savepoints && !exec("RELEASE SAVEPOINT event", error)) return failed(Status::Transient, "RELEASE: " + error);
    for (size_t index : matches) ++batch.appliedByProjection[index];
  }

  for (const auto& [tp, next] : nextOffsets) {
    auto it = expected.find(tp);
    bool known = it != expected.end() && it->second.has_value();
    std::string beforeText = known ? std::to_string(it->second.value()) : std::string("absent");
    std::string partition = std::to_string(tp.second);
    std::string nextText = std::to_string(next);
    const char* params[] = {config_.kafka.groupId.c_str(), tp.first.c_str(), partition.c_str(), nextText.c_str(),
                            known ? beforeText.c_str() : nullptr};
    ResultPtr r(PQexecPrepared(conn_, "offsets", 5, params, nullptr, nullptr, 0));
    if (!ok(r.get())) {
      Status s = transientFailure(conn_, r.get()) ? Status::Transient : Status::Fatal;
      return failed(s, "storing offsets: " + errorText(conn_, r.get()));
    }
    if (PQntuples(r.get()) != 1) {
      return failed(Status::Conflict,
                    fmt::format("the stored offset of {} [{}] is no longer {}: another instance of group {} moved it",
                                tp.first, tp.second, beforeText, config_.kafka.groupId));
    }
  }
  return batch;
}

bool BatchApplier::commit(std::string& error) {
  inTransaction_ = false;
  ResultPtr r(PQexec(conn_, "COMMIT"));
  if (!ok(r.get())) {
    error = "COMMIT: " + errorText(conn_, r.get());
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
  if (!ok(r.get())) log::warn("ROLLBACK failed: {}", errorText(conn_, r.get()));
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
