#pragma once
// `outbox-relay replay --config FILE [selection] [--dry-run]`: publishes rows still in the outbox tables again,
// exactly as the live relay routes them (same topic, key, value and headers; the router and producer settings of
// FILE), plus the header `outbox_replay` (the replay's start time, RFC 3339) that tells consumers it is a replay.
// It reads the tables over a normal connection (SELECT only: no slot, no REPLICATION privilege, nothing confirmed),
// and never touches the slot. Rows the router would dead-letter are reported and left out.
//
// Selection (all optional, combined with AND): --table SCHEMA.TABLE (one of the [[outbox]] tables), --aggregate-type
// T, --aggregate-id ID, --id ID (repeatable), --since TS / --until TS (on the table's timestamp_column, or
// --time-column C). Rows are read in the time column's order when there is one, else in the table's physical order.

#include <optional>
#include <string>
#include <vector>

#include "src/RelayConfig.h"

namespace outbox {

struct ReplayOptions {
  std::string configPath;
  bool dryRun = false;
  std::string table;  // "schema.table" or "table"; empty: every [[outbox]] table
  std::optional<std::string> aggregateType, aggregateId, since, until, timeColumn;
  std::vector<std::string> ids;
};

// Parses the arguments after "replay". Returns an error message (usage problem) or nullopt.
std::optional<std::string> parseReplayArguments(int argc, char** argv, int first, ReplayOptions& out);

// Runs it: prints one line per row (dry run: what would be sent) and a summary on stdout. Exit status 0 when every
// selected row was published (or, dry run, listed), 1 when some were left out (dead-lettered rows) or Kafka refused
// some, 2 on a configuration or connection problem.
int runReplay(const RelayConfig& config, const ReplayOptions& options);

}  // namespace outbox
