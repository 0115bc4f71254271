#include "support/PgPair.h"

#include <gtest/gtest.h>

#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>

#include "support/RelayProcess.h"

namespace outbox::test {

using namespace std::chrono_literals;

PgPair::PgPair(std::string name) : name_(std::move(name)) {
  // A constructor that throws runs no destructor: what a half-made pair started (a node, its ports) goes here.
  try {
    run("pair-up");
    refresh();
  } catch (...) {
    try {
      run("pair-down");
    } catch (...) {
    }
    throw;
  }
  up_ = true;
}

PgPair::~PgPair() {
  if (!up_) return;
  if (::testing::Test::HasFailure()) {
    std::cerr << "----- pair " << name_ << ": server logs in " << dir_ << "/{a,b}.log (deleted by pair-down now; "
              << "tails follow) -----\n";
    for (const char* node : {"a", "b"}) {
      auto tail = runCommand({"/usr/bin/tail", "-n", "25", dir_ + "/" + node + ".log"}, 10s);
      std::cerr << "--- node " << node << " ---\n" << tail.output;
    }
  }
  try {
    run("pair-down");
  } catch (const std::exception& e) {
    ADD_FAILURE() << e.what();
  }
}

void PgPair::run(const std::string& command) {
  requireEnv("DEVSTACK_STATE");  // the stack the tests run against, not a developer's default one
  auto result = runCommand({"/usr/bin/env", "bash", sourcePath("scripts/devstack"), command, name_}, 300s);
  if (!result.status.success()) {
    throw std::runtime_error("scripts/devstack " + command + " " + name_ + " failed (" + result.status.toString() +
                             "): " + result.output);
  }
}

void PgPair::refresh() {
  auto result = runCommand({"/usr/bin/env", "bash", sourcePath("scripts/devstack"), "pair-env", name_}, 60s);
  if (!result.status.success()) {
    throw std::runtime_error("scripts/devstack pair-env " + name_ + " failed: " + result.output);
  }
  // Lines `export KEY='VALUE'` (no quote inside a value).
  std::map<std::string, std::string> env;
  std::istringstream lines(result.output);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("export ", 0) != 0) continue;
    size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string value = line.substr(eq + 1);
    if (value.size() >= 2 && value.front() == '\'' && value.back() == '\'') value = value.substr(1, value.size() - 2);
    env[line.substr(7, eq - 7)] = value;
  }
  for (const char* key : {"PAIR_PG_VERSION", "PAIR_PRIMARY_PORT", "PAIR_STANDBY_PORT", "PAIR_CONNINFO", "PAIR_DIR"}) {
    if (!env.count(key)) throw std::runtime_error(std::string("pair-env printed no ") + key + ": " + result.output);
  }
  pgMajor_ = std::stoi(env["PAIR_PG_VERSION"]);
  primaryPort_ = std::stoi(env["PAIR_PRIMARY_PORT"]);
  standbyPort_ = std::stoi(env["PAIR_STANDBY_PORT"]);
  conninfo_ = env["PAIR_CONNINFO"];
  dir_ = env["PAIR_DIR"];
}

std::string PgPair::conninfoFor(int port, const std::string& dbname) const {
  return "host=127.0.0.1 port=" + std::to_string(port) + " user=postgres dbname=" + dbname;
}

std::string PgPair::conninfoWithDbname(const std::string& dbname) const {
  std::string out = conninfo_;
  size_t at = out.find("dbname=");
  if (at == std::string::npos) return out + " dbname=" + dbname;
  size_t end = out.find(' ', at);
  return out.substr(0, at) + "dbname=" + dbname + (end == std::string::npos ? "" : out.substr(end));
}

void PgPair::killPrimary() { run("pair-kill-primary"); }

void PgPair::promote() {
  run("pair-promote");
  refresh();
}

void PgPair::rebuild() {
  run("pair-rebuild");
  refresh();
}

std::string PgPair::standbySlotState(const std::string& slot) {
  try {
    PgConnection standby(standbyConninfo());
    auto rows = standby.rows(
        "SELECT synced, temporary, coalesce(confirmed_flush_lsn::text, 'null') FROM pg_replication_slots "
        "WHERE slot_name = " +
        sqlLiteral(slot));
    if (rows.empty()) return "absent";
    return "synced=" + rows[0][0] + " temporary=" + rows[0][1] + " confirmed_flush_lsn=" + rows[0][2];
  } catch (const std::exception& e) {
    return std::string("unknown (") + e.what() + ")";
  }
}

bool PgPair::waitSlotSynced(const std::string& slot, std::chrono::milliseconds timeout, const std::string& atLeast) {
  PgConnection standby(standbyConninfo());
  std::string sql =
      "SELECT 1 FROM pg_replication_slots WHERE synced AND NOT temporary AND confirmed_flush_lsn IS NOT NULL AND "
      "slot_name = " +
      sqlLiteral(slot);
  if (!atLeast.empty()) sql += " AND confirmed_flush_lsn >= " + sqlLiteral(atLeast) + "::pg_lsn";
  // A synced slot stays temporary until the primary's slot has moved past the standby's copy, catalog_xmin
  // included; a logical slot's restart_lsn and catalog_xmin move only at a running-transactions record, which the
  // primary logs every 15 s on its own (LOG_SNAPSHOT_INTERVAL_MS): pg_log_standby_snapshot() logs one now, as
  // PostgreSQL's own slot-synchronization tests do. And the synchronization worker naps twice as long after each
  // cycle that changed no slot, up to 30 s (slotsync.c); a configuration reload (settings unchanged) sets its latch
  // for a cycle at once. Both once a second while waiting.
  PgConnection primary(primaryConninfo());
  int polls = 0;
  return waitFor(
      [&] {
        if (standby.scalar(sql).has_value()) return true;
        if (++polls % 5 == 0) {
          primary.exec("SELECT pg_log_standby_snapshot()");
          standby.exec("SELECT pg_reload_conf()");
        }
        return false;
      },
      timeout, 200ms);
}

}  // namespace outbox::test
