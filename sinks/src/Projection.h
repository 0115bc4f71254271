#pragma once
// Projections: which events a [[projection]] applies to, and the statement parameters it takes from each event.
// Pure logic (no database, no Kafka), so it is unit-tested on hand-made events.
//
// A parameter is either a JSON pointer into the payload ("/customer/id", RFC 6901) or a record attribute:
//   @id @key @topic @partition @offset @timestamp @payload @type @header:NAME
// A leading "?" makes it optional: missing becomes SQL NULL instead of an error ("?/discount", "?@header:trace").
// A JSON null is SQL NULL; a string is its unescaped text; anything else its JSON text exactly as the payload has
// it (numbers as written: big integers and 1.10 keep every digit; objects and arrays with their key order and
// spacing, for json/jsonb columns). The payload is read with simdjson's On-Demand parser, without recursion,
// and a payload nested deeper than kMaxPayloadDepth is an error, not a crash.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "src/SinkConfig.h"

namespace outbox::sink {

// Whether a topic entry is a regular expression ("^..."), as librdkafka treats subscriptions.
inline bool isTopicRegex(std::string_view topic) { return !topic.empty() && topic.front() == '^'; }

// A POSIX extended regular expression (regcomp), the dialect closest to librdkafka's topic patterns.
class TopicRegex {
 public:
  // nullptr with `error` set when `pattern` does not compile.
  static std::shared_ptr<const TopicRegex> compile(const std::string& pattern, std::string& error);
  ~TopicRegex();
  TopicRegex(const TopicRegex&) = delete;
  TopicRegex& operator=(const TopicRegex&) = delete;
  bool search(std::string_view text) const;

 private:
  TopicRegex() = default;
  struct Compiled;
  std::unique_ptr<Compiled> compiled_;
};

// One consumed Kafka record, as views into librdkafka's message (or a test's strings).
struct SinkEvent {
  std::string_view topic;
  int32_t partition = 0;
  int64_t offset = 0;
  int64_t timestampMs = -1;
  std::optional<std::string_view> key;
  std::optional<std::string_view> payload;
  std::vector<std::pair<std::string_view, std::string_view>> headers;  // a null header value reads as ""

  // The value of the last header called `name` (Kafka allows repeats; the last one wins, as in Kafka Connect).
  std::optional<std::string_view> header(std::string_view name) const;
};

// Where a parameter's value comes from.
struct ParamSource {
  enum class Kind { Pointer, Id, Key, Topic, Partition, Offset, Timestamp, Payload, Type, Header };
  Kind kind = Kind::Pointer;
  bool optional = false;
  std::string pointer;  // Kind::Pointer: an RFC 6901 JSON pointer ("/a~1b/0")
  std::string header;   // Kind::Header
  std::string text;     // as written in the config
};

// Parses "/a/b", "@key", "@header:eventType", "?/x"; nullopt with `error` set when malformed.
std::optional<ParamSource> parseParamSource(std::string_view text, std::string& error);

// Containers nested deeper than this in a payload make it unusable (PostgreSQL's JSON parser has a limit too).
constexpr size_t kMaxPayloadDepth = 1024;

// An event whose payload is validated at most once (only when a pointer parameter needs it), then read by JSON
// pointer. The whole payload is validated, not only the values selected: On-Demand alone checks only what it reads.
class EventView {
 public:
  EventView(const SinkEvent& event, std::string_view typeHeader);
  ~EventView();
  EventView(const EventView&) = delete;
  EventView& operator=(const EventView&) = delete;
  const SinkEvent& event() const { return event_; }
  std::optional<std::string_view> type() const { return event_.header(typeHeader_); }

  enum class Selected { Value, Missing, Unusable };
  // The value at `pointer` as a parameter (nullopt for JSON null): Value; Missing when the payload has no such
  // value; Unusable with `error` set when the payload itself is (absent, not valid JSON, nested too deep).
  Selected select(std::string_view pointer, std::optional<std::string>& value, std::string& error);

 private:
  bool usable(std::string& error);

  const SinkEvent& event_;
  std::string_view typeHeader_;
  uint64_t serial_;  // which EventView the thread's parser holds a document of
  bool validated_ = false;
  std::string padded_;        // the payload with simdjson's padding after it
  std::string payloadError_;  // why the payload is unusable; empty when it is usable
};

using ParamValues = std::vector<std::optional<std::string>>;  // nullopt = SQL NULL

class Projection {
 public:
  // `config` must have passed parseSinkConfig's validation (throws std::invalid_argument otherwise).
  explicit Projection(const ProjectionConfig& config);

  // One statement: its SQL and where each $n comes from. A projection written with sql + params has one.
  struct Statement {
    std::string sql;
    std::vector<ParamSource> params;
  };

  const std::string& name() const { return name_; }
  // In the order they run, all in the event's unit.
  const std::vector<Statement>& statements() const { return statements_; }
  // What error texts about `statement` start with: "projection NAME", and " statement N" (1-based) after it when the
  // projection has several ([[projection.statements]]).
  std::string label(size_t statement) const;
  bool matchesTopic(std::string_view topic) const;
  bool matchesType(std::optional<std::string_view> type) const;
  // The parameters of statement `statement` for `event`; false with `error` set when one cannot be had (the event
  // is poison).
  bool extract(EventView& event, size_t statement, ParamValues& values, std::string& error) const;

 private:
  std::string name_;
  std::string topic_;
  std::shared_ptr<const TopicRegex> topicRegex_;
  std::vector<std::string> eventTypes_;
  bool anyType_ = false;
  bool multiStatement_ = false;  // written as [[projection.statements]]: error texts number the statements
  std::vector<Statement> statements_;
};

// Every projection, in config order, with the per-topic match cached (a regex runs once per topic name).
class ProjectionSet {
 public:
  explicit ProjectionSet(const std::vector<ProjectionConfig>& configs);
  const std::vector<Projection>& all() const { return projections_; }
  const Projection& at(size_t index) const { return projections_[index]; }
  // Indexes of the projections that apply to `event`, in config order.
  void matching(const EventView& event, std::vector<size_t>& out);

 private:
  std::vector<Projection> projections_;
  std::map<std::string, std::vector<size_t>, std::less<>> byTopic_;
};

}  // namespace outbox::sink
