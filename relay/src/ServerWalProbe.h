#pragma once
// Reads the server's current WAL position on a normal (non-replication) connection, for the replication-lag
// metric: lag = pg_current_wal_lsn() - confirmed flush. A failure is logged and retried on the next probe; it
// never disturbs streaming.
//
// Asynchronous, so a server that stops answering cannot stall the event loop: the connection is made with
// PQconnectStart/PQconnectPoll and the query sent with PQsendQuery; advance() moves both on without blocking (it
// checks the socket with a zero-timeout poll(2) first), and the loop adds socket()/events() to its own poll(2) so
// an answer wakes it. A probe not answered within its timeout drops the connection; the next one starts afresh.
// The user's conninfo is used as written (its `options` included); only network-timeout defaults are added where
// it sets none.

#include <libpq-fe.h>

#include <chrono>
#include <optional>

#include "src/Lsn.h"
#include "src/RelayConfig.h"

namespace outbox {

class ServerWalProbe {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kTimeout{5000};  // connecting plus the query

  explicit ServerWalProbe(const SourceConfig& config) : config_(config) {}
  ~ServerWalProbe();
  ServerWalProbe(const ServerWalProbe&) = delete;
  ServerWalProbe& operator=(const ServerWalProbe&) = delete;

  // Starts a probe unless one is under way (connecting first when there is no connection). Never blocks.
  void start();
  // Moves the probe on as far as it can without blocking; returns the position once the answer is in.
  std::optional<Lsn> advance();
  // While a probe is under way: the socket and the poll(2) events it waits for; -1 otherwise.
  int socket() const;
  short events() const;
  bool busy() const { return state_ != State::Idle; }

 private:
  enum class State { Idle, Connecting, Querying };
  void drop(const char* why);
  std::optional<Lsn> advanceQuery();

  const SourceConfig& config_;
  PGconn* conn_ = nullptr;
  State state_ = State::Idle;
  PostgresPollingStatusType connectWait_ = PGRES_POLLING_WRITING;
  bool flushing_ = false;      // the query is not all sent yet
  std::optional<Lsn> answer_;  // read, waiting for the end of the query's results
  Clock::time_point deadline_{};
};

}  // namespace outbox
