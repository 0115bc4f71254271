#include "src/Replay.h"

#include <fmt/format.h>
#include <poll.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>

#include "common/PgConnection.h"
#include "common/UnixTime.h"
#include "src/KafkaPublisher.h"
#include "src/OutboxRouter.h"

namespace outbox {

namespace {

std::string quoteIdent(PGconn* conn, const std::string& name) {
  std::optional<std::string> quoted = escapeIdentifier(conn, name);
  if (!quoted) throw std::runtime_error("cannot quote identifier \"" + name + "\": " + PQerrorMessage(conn));
  return *quoted;
}

bool matchesTable(const OutboxTableConfig& t, const std::string& wanted) {
  if (wanted.empty()) return true;
  return wanted == t.schema + "." + t.table || (wanted.find('.') == std::string::npos && wanted == t.table);
}

}  // namespace

std::optional<std::string> parseReplayArguments(int argc, char** argv, int first, ReplayOptions& out) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--dry-run") {
      out.dryRun = true;
      continue;
    }
    // Every other option takes a value: where it goes.
    std::string* single = arg == "--config" ? &out.configPath : arg == "--table" ? &out.table : nullptr;
    std::optional<std::string>* optional = arg == "--aggregate-type" ? &out.aggregateType
                                           : arg == "--aggregate-id" ? &out.aggregateId
                                           : arg == "--since"        ? &out.since
                                           : arg == "--until"        ? &out.until
                                           : arg == "--time-column"  ? &out.timeColumn
                                                                     : nullptr;
    if (!single && !optional && arg != "--id") return "unknown argument " + arg;
    if (i + 1 >= argc) return arg + " needs a value";
    std::string value = argv[++i];
    if (single) *single = value;
    if (optional) *optional = value;
    if (arg == "--id") out.ids.push_back(value);
  }
  if (out.configPath.empty()) return "replay needs --config FILE";
  return std::nullopt;
}

int runReplay(const RelayConfig& config, const ReplayOptions& options) {
  bool anyTable = false;
  for (const auto& t : config.outboxes) anyTable = anyTable || matchesTable(t, options.table);
  if (!anyTable) {
    std::fprintf(stderr, "replay: --table %s is not one of the [[outbox]] tables of the config\n",
                 options.table.c_str());
    return 2;
  }
  PGconn* raw = connectPostgres(config.source.conninfo, config.source.password, {},
                                defaultsNotSetBy(config.source.conninfo, networkTimeoutDefaults()));
  std::unique_ptr<PGconn, void (*)(PGconn*)> conn(raw, PQfinish);
  if (raw == nullptr || PQstatus(raw) != CONNECTION_OK) {
    std::fprintf(stderr, "replay: cannot connect to PostgreSQL: %s", raw ? PQerrorMessage(raw) : "out of memory\n");
    return 2;
  }
  PgResult iso(PQexec(raw, "SET DateStyle = 'ISO, YMD'"));  // as the live relay reads timestamps

  const std::string replayTime = utcIsoTimeMillis(unixMicrosNow() / 1000);
  uint64_t delivered = 0, failed = 0;
  std::unique_ptr<KafkaPublisher> publisher;
  if (!options.dryRun) {
    try {
      publisher = std::make_unique<KafkaPublisher>(config.kafka, config.limits, [&](const KafkaPublisher::Delivery& d) {
        if (d.error == RD_KAFKA_RESP_ERR_NO_ERROR) {
          ++delivered;
        } else {
          ++failed;
          std::fprintf(stderr, "replay: Kafka refused a record for \"%.*s\": %s\n", static_cast<int>(d.topic.size()),
                       d.topic.data(), rd_kafka_err2str(d.error));
        }
      });
    } catch (const std::exception& e) {
      std::fprintf(stderr, "replay: %s\n", e.what());
      return 2;
    }
  }

  OutboxRouter router(config);
  uint64_t selected = 0, leftOut = 0;
  uint32_t relationId = 0;
  for (const OutboxTableConfig& table : config.outboxes) {
    if (!matchesTable(table, options.table)) continue;
    std::string timeColumn = options.timeColumn.value_or(table.timestampColumn);
    std::vector<std::string> values;
    std::string where;
    auto condition = [&](const std::string& sql, const std::string& value) {
      values.push_back(value);
      where += (where.empty() ? " WHERE " : " AND ") + fmt::format(fmt::runtime(sql), values.size());
    };
    if (options.aggregateType) {
      condition(quoteIdent(raw, table.aggregateTypeColumn) + "::text = ${}", *options.aggregateType);
    }
    if (options.aggregateId) condition(quoteIdent(raw, table.aggregateIdColumn) + "::text = ${}", *options.aggregateId);
    if (!options.ids.empty()) {
      // One parameter per id: id::text IN ($n, $n+1, ...).
      std::string list;
      for (const std::string& id : options.ids) {
        values.push_back(id);
        list += (list.empty() ? "$" : ", $") + std::to_string(values.size());
      }
      where += (where.empty() ? " WHERE " : " AND ") + quoteIdent(raw, table.idColumn) + "::text IN (" + list + ")";
    }
    if ((options.since || options.until) && timeColumn.empty()) {
      std::fprintf(stderr,
                   "replay: --since/--until need a time column for %s.%s: set its timestamp_column or give "
                   "--time-column COLUMN\n",
                   table.schema.c_str(), table.table.c_str());
      return 2;
    }
    if (options.since) condition(quoteIdent(raw, timeColumn) + " >= ${}::timestamptz", *options.since);
    if (options.until) condition(quoteIdent(raw, timeColumn) + " < ${}::timestamptz", *options.until);
    std::string sql = "SELECT * FROM " + quoteIdent(raw, table.schema) + "." + quoteIdent(raw, table.table) + where +
                      (timeColumn.empty() ? "" : " ORDER BY " + quoteIdent(raw, timeColumn));
    std::vector<const char*> params;
    for (const std::string& v : values) params.push_back(v.c_str());
    PgResult rows(PQexecParams(raw, sql.c_str(), static_cast<int>(params.size()), nullptr, params.data(), nullptr,
                               nullptr, 0));
    if (PQresultStatus(rows.get()) != PGRES_TUPLES_OK) {
      std::fprintf(stderr, "replay: reading %s.%s failed: %s", table.schema.c_str(), table.table.c_str(),
                   PQresultErrorMessage(rows.get()));
      return 2;
    }
    // The rows as the router sees them from the WAL: a Relation describing the columns, then one Insert per row.
    pgoutput::Relation relation;
    relation.relationId = RelationId{++relationId};
    relation.nspname = table.schema;
    relation.relname = table.table;
    for (int c = 0; c < PQnfields(rows.get()); ++c) {
      relation.columns.push_back(pgoutput::RelationColumn{0, PQfname(rows.get(), c), PQftype(rows.get(), c), -1});
    }
    router.onRelation(relation);
    for (int r = 0; r < PQntuples(rows.get()); ++r) {
      ++selected;
      pgoutput::Insert insert;
      insert.relationId = relation.relationId;
      for (int c = 0; c < PQnfields(rows.get()); ++c) {
        insert.newTuple.push_back(
            PQgetisnull(rows.get(), r, c)
                ? pgoutput::ColumnValue{pgoutput::ColumnValue::Kind::Null, {}}
                : pgoutput::ColumnValue{pgoutput::ColumnValue::Kind::Text,
                                        std::string_view(PQgetvalue(rows.get(), r, c),
                                                         static_cast<size_t>(PQgetlength(rows.get(), r, c)))});
      }
      OutboxRecord record;
      std::string error;
      router.beginTransaction(0);  // the commit time is not known here: the timestamp column's, else now
      if (router.routeInsert(insert, record, error) != OutboxRouter::Outcome::Routed) {
        ++leftOut;
        std::printf("left out (the live relay dead-letters it): %s\n", error.c_str());
        continue;
      }
      record.headers.emplace_back("outbox_replay", replayTime);
      std::string id;
      for (const auto& [name, text] : record.headers) {
        if (name == "id") id = std::string(text);
      }
      std::printf("%s %.*s key=%s id=%s\n", options.dryRun ? "would publish" : "publishing",
                  static_cast<int>(record.topic.size()), record.topic.data(),
                  record.key ? std::string(*record.key).c_str() : "(none)", id.c_str());
      if (!publisher) continue;
      while (true) {
        rd_kafka_resp_err_t code = RD_KAFKA_RESP_ERR_NO_ERROR;
        auto status = publisher->produce(record, 0, error, code);
        if (status == KafkaPublisher::ProduceStatus::Queued) break;
        if (status == KafkaPublisher::ProduceStatus::Failed) {
          ++failed;
          std::fprintf(stderr, "replay: %s\n", error.c_str());
          break;
        }
        publisher->poll();
        ::poll(nullptr, 0, 10);
      }
      publisher->poll();
    }
  }
  if (publisher) {
    // Every record acknowledged or refused (message.timeout.ms = 0: librdkafka retries until then).
    while (publisher->queueLength() > 0 && !publisher->fatalError()) {
      pollfd fd{publisher->wakeupFd(), POLLIN, 0};
      ::poll(&fd, 1, 100);
      publisher->poll();
    }
    if (publisher->fatalError()) {
      std::fprintf(stderr, "replay: %s\n", publisher->fatalError()->c_str());
      return 2;
    }
  }
  std::printf("%s: %llu row(s) selected, %llu %s, %llu left out, %llu refused by Kafka\n",
              options.dryRun ? "dry run" : "replay", static_cast<unsigned long long>(selected),
              static_cast<unsigned long long>(options.dryRun ? selected - leftOut : delivered),
              options.dryRun ? "would be published" : "published", static_cast<unsigned long long>(leftOut),
              static_cast<unsigned long long>(failed));
  return leftOut > 0 || failed > 0 ? 1 : 0;
}

}  // namespace outbox
