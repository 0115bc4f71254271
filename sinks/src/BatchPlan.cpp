#include "src/BatchPlan.h"

namespace outbox::sink {

std::vector<std::string> eventIds(const std::vector<SinkEvent>& events, const SinkConfig& config) {
  std::vector<std::string> ids;
  if (!config.deduplication.enabled) return ids;
  for (const SinkEvent& e : events) {
    if (auto id = e.header(config.deduplication.idHeader)) ids.emplace_back(*id);
  }
  return ids;
}

std::string textArrayLiteral(const std::vector<std::string>& items) {
  // Inside double quotes only " and \ need a backslash: https://www.postgresql.org/docs/current/arrays.html
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

BatchPlan planBatch(const std::vector<SinkEvent>& events, const SinkConfig& config, ProjectionSet& projections,
                    std::set<std::string> processed, const StoredOffsets& expected,
                    const std::map<TopicPartition, int64_t>& nextOffsets) {
  using Kind = PlannedStatement::Kind;
  const std::string& group = config.kafka.groupId;
  BatchPlan plan;
  std::vector<size_t> matches;
  for (size_t i = 0; i < events.size(); ++i) {
    const SinkEvent& event = events[i];
    PlannedEvent planned;
    planned.index = i;
    std::optional<std::string_view> id;
    if (config.deduplication.enabled) {
      id = event.header(config.deduplication.idHeader);
      // `processed` also collects the ids of this batch, so a repeat within it is a duplicate too.
      if (id && processed.count(std::string(*id)) > 0) {
        ++plan.duplicates;
        continue;
      }
    }
    EventView view(event, config.kafka.eventTypeHeader);
    projections.matching(view, matches);
    // Every parameter of every statement first: an event that lacks one runs no projection statement at all.
    for (size_t m : matches) {
      const Projection& projection = projections.at(m);
      for (size_t k = 0; !planned.poison && k < projection.statements().size(); ++k) {
        PlannedStatement statement{Kind::Projection, m, k, {}};
        std::string error;
        if (!projection.extract(view, k, statement.params, error)) {
          planned.poison = std::move(error);
          planned.statements.clear();
          break;
        }
        planned.statements.push_back(std::move(statement));
      }
      if (planned.poison) break;
    }
    // A poison event's id is not recorded: it is not processed, and once its projection is fixed, the event
    // replayed from the dead-letter topic must be applied, not skipped as a duplicate.
    if (id && !planned.poison) {
      processed.insert(std::string(*id));
      planned.dedup = PlannedStatement{Kind::Dedup, 0, 0, {group, std::string(*id)}};
    }
    plan.events.push_back(std::move(planned));
  }
  for (const auto& [tp, next] : nextOffsets) {
    auto it = expected.find(tp);
    std::optional<int64_t> before = it != expected.end() ? it->second : std::nullopt;
    PlannedStatement statement{Kind::Offset,
                               0,
                               0,
                               {group, tp.first, std::to_string(tp.second), std::to_string(next),
                                before ? std::optional<std::string>(std::to_string(*before)) : std::nullopt}};
    plan.offsets.push_back(PlannedOffset{tp, before, std::move(statement)});
  }
  return plan;
}

}  // namespace outbox::sink
