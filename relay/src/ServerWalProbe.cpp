#include "src/ServerWalProbe.h"

#include <poll.h>

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
}  // namespace

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
  if (!PQsendQuery(conn_, "SELECT pg_catalog.pg_current_wal_lsn()")) {
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

std::optional<Lsn> ServerWalProbe::advance() {
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

std::optional<Lsn> ServerWalProbe::advanceQuery() {
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
      auto lsn = answer_;
      answer_.reset();
      return lsn;
    }
    if (PQresultStatus(result.get()) == PGRES_TUPLES_OK && PQntuples(result.get()) == 1) {
      answer_ = Lsn::parse(PQgetvalue(result.get(), 0, 0));
    } else {
      log::debug("lag probe: {}", pgMessage(PQresultErrorMessage(result.get())));
    }
  }
  return std::nullopt;
}

}  // namespace outbox
