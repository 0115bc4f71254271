#include "src/ServerWalProbe.h"

#include <poll.h>

#include <charconv>
#include <cstdlib>

#include "common/Log.h"
#include "common/PgConnection.h"

namespace outbox {

namespace {
// Whether `fd` is ready for `events` right now.
bool ready(int fd, short events) {
  if (fd < 0) return false;
  pollfd pfd{fd, events, 0};
  return ::poll(&pfd, 1, 0) > 0;
}

// Server versions (PQserverVersion) that added columns to pg_replication_slots.
constexpr int kConflictingSince = 160000;  // conflicting
constexpr int kFailoverSince = 170000;     // invalidation_reason, inactive_since, failover, synced
}  // namespace

std::string SlotHealth::query(int serverVersion) {
  // One row whatever the slot: the WAL position joined with the slot's row, all NULL when it is gone. The
  // inactivity is computed on the server, so the relay's clock does not enter it.
  std::string columns = "s.slot_name IS NOT NULL AS slot_exists, s.active, s.wal_status, s.safe_wal_size";
  if (serverVersion >= kConflictingSince) columns += ", s.conflicting";
  if (serverVersion >= kFailoverSince) {
    columns +=
        ", s.invalidation_reason, CASE WHEN s.active THEN 0 ELSE EXTRACT(EPOCH FROM pg_catalog.now() - "
        "s.inactive_since) END AS inactive_seconds, s.failover, s.synced";
  }
  return "SELECT pg_catalog.pg_current_wal_lsn() AS wal_lsn, " + columns +
         " FROM (VALUES (1)) AS one (x) LEFT JOIN pg_catalog.pg_replication_slots AS s ON s.slot_name = $1";
}

SlotHealth SlotHealth::parse(int serverVersion, const std::map<std::string, std::optional<std::string>>& row) {
  auto value = [&](const char* column) -> std::optional<std::string> {
    auto it = row.find(column);
    return it == row.end() ? std::nullopt : it->second;
  };
  auto flag = [&](const char* column) { return value(column) == "t"; };
  SlotHealth slot;
  slot.exists = flag("slot_exists");
  if (!slot.exists) return slot;
  slot.active = flag("active");
  slot.walStatus = value("wal_status").value_or("");
  if (auto text = value("safe_wal_size")) {
    int64_t bytes = 0;
    auto [end, error] = std::from_chars(text->data(), text->data() + text->size(), bytes);
    if (error == std::errc() && end == text->data() + text->size()) slot.safeWalSize = bytes;
  }
  if (serverVersion >= kConflictingSince) slot.conflicting = flag("conflicting");
  if (serverVersion >= kFailoverSince) {
    slot.invalidationReason = value("invalidation_reason").value_or("");
    if (auto text = value("inactive_seconds")) {
      char* end = nullptr;
      double seconds = std::strtod(text->c_str(), &end);
      if (end != text->c_str() && *end == '\0') slot.inactiveSeconds = seconds < 0 ? 0 : seconds;
    }
    slot.failover = flag("failover");
    slot.synced = flag("synced");
  } else {
    // 16 sets wal_status "lost" for every invalidated slot, conflicting only for the recovery conflicts.
    if (slot.conflicting) {
      slot.invalidationReason = "conflict";
    } else if (slot.walStatus == "lost") {
      slot.invalidationReason = "wal_removed";
    }
    if (slot.active) slot.inactiveSeconds = 0.0;
  }
  return slot;
}

ServerWalProbe::~ServerWalProbe() {
  if (conn_) PQfinish(conn_);
}

void ServerWalProbe::drop(const char* why) {
  log::debug("lag probe: {}: {}", why, pgErrorMessage(conn_));
  // Non-blocking (set once connected), so the Terminate message cannot block on a server that stopped reading.
  if (conn_) PQfinish(conn_);
  conn_ = nullptr;
  state_ = State::Idle;
}

void ServerWalProbe::start() {
  if (state_ != State::Idle) return;
  deadline_ = Clock::now() + kTimeout;
  if (conn_ && PQstatus(conn_) != CONNECTION_OK) drop("connection lost");
  if (!conn_) {
    conn_ = startConnectPostgres(config_.conninfo, config_.password,
                                 {{"fallback_application_name", "outbox-relay-lag"}}, networkTimeoutDefaults());
    if (conn_ == nullptr || PQstatus(conn_) == CONNECTION_BAD) {
      drop("cannot connect");
      return;
    }
    state_ = State::Connecting;
    connectWait_ = PGRES_POLLING_WRITING;  // as if PQconnectPoll had said so: the first call follows writability
    return;
  }
  state_ = State::Querying;
  answer_.reset();
  // The column list depends on the server connected to (a multi-host conninfo may land on another version).
  const char* slot = config_.slot.c_str();
  if (!PQsendQueryParams(conn_, SlotHealth::query(PQserverVersion(conn_)).c_str(), 1, nullptr, &slot, nullptr, nullptr,
                         0)) {
    drop("cannot send the query");
    return;
  }
  flushing_ = true;
}

int ServerWalProbe::socket() const { return state_ != State::Idle && conn_ ? PQsocket(conn_) : -1; }

short ServerWalProbe::events() const {
  if (state_ == State::Connecting) return connectWait_ == PGRES_POLLING_READING ? POLLIN : POLLOUT;
  return flushing_ ? static_cast<short>(POLLIN | POLLOUT) : POLLIN;
}

std::optional<ServerWalProbe::Answer> ServerWalProbe::advance() {
  if (state_ == State::Idle) return std::nullopt;
  if (Clock::now() >= deadline_) {
    drop(state_ == State::Connecting ? "no connection within 5 s" : "no answer within 5 s");
    return std::nullopt;
  }
  if (state_ == State::Connecting) {
    if (!ready(PQsocket(conn_), events())) return std::nullopt;
    connectWait_ = PQconnectPoll(conn_);
    if (connectWait_ == PGRES_POLLING_FAILED) {
      drop("cannot connect");
      return std::nullopt;
    }
    if (connectWait_ != PGRES_POLLING_OK) return std::nullopt;
    PQsetnonblocking(conn_, 1);
    state_ = State::Idle;
    auto deadline = deadline_;
    start();  // now connected: send the query, within the same deadline
    deadline_ = deadline;
    if (state_ == State::Idle) return std::nullopt;
  }
  return advanceQuery();
}

std::optional<ServerWalProbe::Answer> ServerWalProbe::advanceQuery() {
  if (flushing_) {
    int flushed = PQflush(conn_);
    if (flushed < 0) {
      drop("cannot send the query");
      return std::nullopt;
    }
    flushing_ = flushed == 1;
  }
  if (PQisBusy(conn_)) {
    if (!ready(PQsocket(conn_), POLLIN)) return std::nullopt;
    if (!PQconsumeInput(conn_)) {
      drop("connection lost");
      return std::nullopt;
    }
  }
  // PQgetResult blocks while libpq is busy: only call it when PQisBusy says the next result is in.
  while (!PQisBusy(conn_)) {
    PgResult result(PQgetResult(conn_));
    if (!result) {
      state_ = State::Idle;
      auto answer = answer_;
      answer_.reset();
      return answer;
    }
    if (PQresultStatus(result.get()) == PGRES_TUPLES_OK && PQntuples(result.get()) == 1) {
      PGresult* r = result.get();
      std::map<std::string, std::optional<std::string>> row;
      for (int column = 1; column < PQnfields(r); ++column) {
        row[PQfname(r, column)] =
            PQgetisnull(r, 0, column) ? std::nullopt : std::optional<std::string>(PQgetvalue(r, 0, column));
      }
      if (auto lsn = Lsn::parse(PQgetvalue(r, 0, 0))) {
        answer_ = Answer{*lsn, SlotHealth::parse(PQserverVersion(conn_), row)};
      }
    } else {
      log::debug("lag probe: {}", pgMessage(PQresultErrorMessage(result.get())));
    }
  }
  return std::nullopt;
}

}  // namespace outbox
