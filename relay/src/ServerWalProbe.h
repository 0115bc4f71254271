#pragma once
// Reads the server's current WAL position on a normal (non-replication) connection, for the replication-lag
// metric (lag = pg_current_wal_lsn() - confirmed flush), and in the same query the replication slot's row of
// pg_replication_slots, for the slot-health metrics: whether WAL the slot needs is still guaranteed (wal_status,
// safe_wal_size), whether it was invalidated, failover and sync state. A failure is logged and retried on the next
// probe; it never disturbs streaming.
//
// Asynchronous, so a server that stops answering cannot stall the event loop: the connection is made with
// PQconnectStart/PQconnectPoll and the query sent with PQsendQuery; advance() moves both on without blocking (it
// checks the socket with a zero-timeout poll(2) first), and the loop adds socket()/events() to its own poll(2) so
// an answer wakes it. A probe not answered within its timeout drops the connection; the next one starts afresh.
// The user's conninfo is used as written (its `options` included); only network-timeout defaults are added where
// it sets none.

#include <libpq-fe.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "src/Lsn.h"
#include "src/RelayConfig.h"

namespace outbox {

// The slot's row of pg_replication_slots as one probe read it. Columns a server version does not have take the
// value that version implies (see parse()).
// https://www.postgresql.org/docs/17/view-pg-replication-slots.html
struct SlotHealth {
  bool exists = false;    // false: no row, the slot is gone (dropped, or a promoted server never had it)
  bool active = false;    // a walsender streams from it (this relay, or the one holding it)
  std::string walStatus;  // reserved, extended, unreserved or lost (13+); "" for NULL
  // Bytes of WAL that can still be written before the slot is in danger of being lost. nullopt for NULL: no limit
  // (max_slot_wal_keep_size = -1, the default), or the slot is lost already.
  std::optional<int64_t> safeWalSize;
  bool conflicting = false;  // 16+: invalidated by a recovery conflict; false before (no logical slots on standbys)
  // Why the slot was invalidated, "" while it is valid. 17+: invalidation_reason (wal_removed, rows_removed,
  // wal_level_insufficient, idle_timeout on 18). Before 17, derived: wal_status lost is "wal_removed", and on 16 a
  // conflicting slot is "conflict" (rows_removed or wal_level_insufficient, which 16 does not tell apart).
  std::string invalidationReason;
  // Seconds since the slot became inactive (now() - inactive_since on the server's clock), 0 while active.
  // Before 17 (no inactive_since): 0 while active, nullopt while inactive (unknown).
  std::optional<double> inactiveSeconds;
  bool failover = false;  // 17+: synchronised to standbys; false before (no failover slots)
  bool synced = false;    // 17+: a standby's copy synchronised from the primary; false before

  // The probe's query for a server of `serverVersion` (PQserverVersion: 170002 for 17.2): the WAL position and
  // the columns of the slot named by parameter $1 that version has, one row whether or not the slot exists.
  static std::string query(int serverVersion);
  // The slot columns of query()'s row, by column name; a NULL is nullopt, a column the server lacks is not there.
  static SlotHealth parse(int serverVersion, const std::map<std::string, std::optional<std::string>>& row);
};

class ServerWalProbe {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kTimeout{5000};  // connecting plus the query

  explicit ServerWalProbe(const SourceConfig& config) : config_(config) {}
  ~ServerWalProbe();
  ServerWalProbe(const ServerWalProbe&) = delete;
  ServerWalProbe& operator=(const ServerWalProbe&) = delete;

  struct Answer {
    Lsn serverWal;    // pg_current_wal_lsn()
    SlotHealth slot;  // the row of SourceConfig::slot
  };

  // Starts a probe unless one is under way (connecting first when there is no connection). Never blocks.
  void start();
  // Moves the probe on as far as it can without blocking; returns the answer once it is in.
  std::optional<Answer> advance();
  // While a probe is under way: the socket and the poll(2) events it waits for; -1 otherwise.
  int socket() const;
  short events() const;
  bool busy() const { return state_ != State::Idle; }

 private:
  enum class State { Idle, Connecting, Querying };
  void drop(const char* why);
  std::optional<Answer> advanceQuery();

  const SourceConfig& config_;
  PGconn* conn_ = nullptr;
  State state_ = State::Idle;
  PostgresPollingStatusType connectWait_ = PGRES_POLLING_WRITING;
  bool flushing_ = false;         // the query is not all sent yet
  std::optional<Answer> answer_;  // read, waiting for the end of the query's results
  Clock::time_point deadline_{};
};

}  // namespace outbox
