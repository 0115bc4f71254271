#pragma once
// What one batch sends to the read-model database, worked out once before anything is sent: for each event the
// insert that records its de-duplication id (sent before its projections, in the same savepoint), the statements of the
// projections that match it with their parameters (or why a parameter cannot be had), and at the end each partition's
// conditional offset update. Pure logic (no database), so it is unit-tested on hand-made events; BatchApplier sends a
// plan either pipelined or one statement at a time with a savepoint per event.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "src/Projection.h"
#include "src/SinkConfig.h"

namespace outbox::sink {

using TopicPartition = std::pair<std::string, int32_t>;
// The next offset stored in the database per partition; nullopt = no row yet.
using StoredOffsets = std::map<TopicPartition, std::optional<int64_t>>;

// One execution of a statement BatchApplier prepared at connect().
struct PlannedStatement {
  enum class Kind {
    Dedup,       // "dedup": $1 group, $2 event id; inserts nothing when the id is recorded already
    Projection,  // a projection's statement (prepared per statement, see BatchApplier): its own parameters
    Offset,      // "offsets": $1 group, $2 topic, $3 partition, $4 next offset, $5 expected offset (NULL: none)
  };
  Kind kind = Kind::Projection;
  size_t projection = 0;  // Kind::Projection: index into the ProjectionSet
  size_t statement = 0;   // Kind::Projection: index into that projection's statements()
  ParamValues params;
};

struct PlannedEvent {
  size_t index = 0;  // into the batch
  // Absent without de-duplication, without an id header, or for a poison event: a dead-lettered event is not
  // processed, so that replaying it from the dead-letter topic applies it.
  std::optional<PlannedStatement> dedup;
  // Every statement of every matching projection: the projections in config order, each one's statements in order.
  std::vector<PlannedStatement> statements;
  std::optional<std::string> poison;  // a parameter cannot be had: no projection statement at all
};

struct PlannedOffset {
  TopicPartition partition;
  std::optional<int64_t> expected;  // what this instance last read or wrote; nullopt = no row
  PlannedStatement statement;
};

struct BatchPlan {
  std::vector<PlannedEvent> events;  // in consumption order, without the duplicates known when planning
  int64_t duplicates = 0;            // events left out: their id was applied before, or earlier in the batch
  std::vector<PlannedOffset> offsets;
};

// The de-duplication ids of `events` in order (none without de-duplication), to look up those applied before.
std::vector<std::string> eventIds(const std::vector<SinkEvent>& events, const SinkConfig& config);

// A PostgreSQL text[] literal of `items`, each quoted: {"a","b\"c"}.
std::string textArrayLiteral(const std::vector<std::string>& items);

// Plans `events` (in consumption order). `processed`: the ids among eventIds() applied before. `expected` and
// `nextOffsets`: per partition, the stored offset the update expects and the one it writes.
BatchPlan planBatch(const std::vector<SinkEvent>& events, const SinkConfig& config, ProjectionSet& projections,
                    std::set<std::string> processed, const StoredOffsets& expected,
                    const std::map<TopicPartition, int64_t>& nextOffsets);

}  // namespace outbox::sink
