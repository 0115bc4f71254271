#pragma once
// A PostgreSQL primary + physical standby pair of the dev stack's version (scripts/devstack pair-*), for the
// failover tests: apart from the stack's own server, which the other tests use. From PostgreSQL 17 on the standby
// synchronizes the primary's failover slots and the primary's logical walsenders wait for the standby
// (synchronized_standby_slots), so a promotion loses no slot and no event a relay already published.

#include <chrono>
#include <string>
#include <vector>

#include "support/TestEnv.h"

namespace outbox::test {

class PgPair {
 public:
  // scripts/devstack pair-up NAME on the stack of DEVSTACK_STATE; throws (failing the test) when it cannot.
  explicit PgPair(std::string name = uniqueName("pair"));
  ~PgPair();  // pair-down
  PgPair(const PgPair&) = delete;
  PgPair& operator=(const PgPair&) = delete;

  int pgMajor() const { return pgMajor_; }
  int primaryPort() const { return primaryPort_; }
  int standbyPort() const { return standbyPort_; }
  // Both nodes, target_session_attrs=primary: libpq connects to whichever is the primary now.
  const std::string& conninfo() const { return conninfo_; }
  std::string conninfoFor(int port, const std::string& dbname = "postgres") const;
  std::string primaryConninfo() const { return conninfoFor(primaryPort_); }
  std::string standbyConninfo() const { return conninfoFor(standbyPort_); }
  // The multi-host conninfo of `conninfo()` for another database.
  std::string conninfoWithDbname(const std::string& dbname) const;

  void killPrimary();  // pg_ctl stop -m immediate on the primary
  void promote();      // the standby becomes the primary (waits until it is out of recovery)
  void rebuild();      // the old primary wiped and made a standby of the new one, on its old port; waits until it streams

  // On the standby: the logical slot `slot` exists, is synced and not temporary (usable after a promotion), and its
  // confirmed_flush_lsn is set; when `atLeast` is given, at or past it. Returns whether that held within `timeout`.
  bool waitSlotSynced(const std::string& slot, std::chrono::milliseconds timeout, const std::string& atLeast = "");
  // The standby's row of pg_replication_slots for `slot` as "synced=.. temporary=.. confirmed_flush_lsn=..", or
  // "absent": for failure messages.
  std::string standbySlotState(const std::string& slot);

  const std::string& name() const { return name_; }
  const std::string& dir() const { return dir_; }

 private:
  void run(const std::string& command);
  void refresh();  // pair-env

  std::string name_;
  bool up_ = false;
  int pgMajor_ = 0;
  int primaryPort_ = 0;
  int standbyPort_ = 0;
  std::vector<int> ports_;
  std::string conninfo_;
  std::string dir_;
};

}  // namespace outbox::test
