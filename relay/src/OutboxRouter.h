#pragma once
// The router: turns an outbox row (or an outbox logical message) into the Kafka record it stands for, with
// Debezium's outbox event router conventions: topic from a template over the row (default
// "outbox.event.{aggregatetype}"), key = aggregateid, value = payload as stored, header "id" = the event id,
// more headers from configured columns.
//
// A row that cannot become a valid record (a NULL aggregate type, an id missing, a topic name Kafka refuses)
// is routed to the dead-letter topic with an "error" header instead: counted and logged, never dropped. So is a
// logical message that is not a valid JSON object within MessageDocument's bounds (depth, UTF-8) or larger than
// messages.max_bytes. A message's payload is forwarded as written (MessageDocument), never re-serialized.

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "src/MessageDocument.h"
#include "src/OutboxRecord.h"
#include "src/PgOutputMessages.h"
#include "src/RelationCache.h"
#include "src/RelayConfig.h"

namespace outbox {

class OutboxRouter {
 public:
  explicit OutboxRouter(const RelayConfig& config);

  // The OIDs of the configured outbox tables on this connection's server, by the index of their [[outbox]] entry
  // (0: unknown). A Relation with one of these OIDs is that outbox whatever its name: the publication follows a
  // table by OID, so a table renamed while the relay streams arrives under its new name.
  void setOutboxOids(std::vector<uint32_t> oids);

  // Follows a Relation message: remembers the relation and, for an outbox table, where its columns are. Returns
  // the [[outbox]] entry when the relation is a configured outbox under another name (renamed), else nullptr.
  const OutboxTableConfig* onRelation(const pgoutput::Relation& relation);
  // A new connection: relations will be described again.
  void reset();
  // A transaction begins: the records of its rows (and transactional messages) get its commit time, Unix epoch
  // milliseconds (0: none known, librdkafka's time of production), unless a timestamp column gives one.
  void beginTransaction(int64_t commitTimeMs) { commitTimeMs_ = commitTimeMs; }
  // A timestamp column's text as Unix epoch milliseconds: an integer (milliseconds), or a timestamptz / timestamp
  // in DateStyle ISO ("2026-12-02 03:12:11.123456+00", 'T' also accepted; without an offset: UTC). nullopt for
  // anything else, and for times before 1970 or after 9999 (Kafka takes no negative timestamps).
  static std::optional<int64_t> parseTimestampMs(std::string_view text);
  // A tracing_column's text as W3C trace context: a bare traceparent, or Java Properties text (comment lines,
  // key=value / key:value, backslash escapes) with traceparent and tracestate. `traceparent` is empty when there is
  // none or it is not a valid one (version 00 form: 2-32-16-2 lowercase hex digits, ids not all zero, version not
  // ff); `tracestate` is kept only with a valid traceparent, and only when it is at most 512 printable ASCII
  // characters. Returns false when something was there but was dropped as invalid.
  static bool parseTraceContext(std::string_view text, std::string& traceparent, std::string& tracestate);
  // A column value as JSON for the envelope, by its type: NULL -> null, bool -> true/false, integers and finite
  // numerics/floats -> numbers, json/jsonb -> as they are, bytea (its bytes, `bytes` = true) -> a base64 string,
  // anything else (NaN and Infinity too) -> a string.
  static void appendJsonValue(std::string& out, std::optional<std::string_view> text, uint32_t typeOid,
                              bool bytes = false);
  // The CloudEvents datacontenttype of a payload column's type.
  static std::string_view contentType(uint32_t payloadTypeOid);
  // Whether the last routed row's trace context was dropped as invalid (then counted by the relay).
  bool traceContextDropped() const { return traceDropped_; }

  enum class Outcome { Routed, DeadLettered, NotOutbox };
  // For Insert: fills `record` (views valid until the next call). DeadLettered: `record` goes to the dead-letter
  // topic and `error` says what was wrong. NotOutbox: not a configured outbox table (or message prefix).
  Outcome routeInsert(const pgoutput::Insert& insert, OutboxRecord& record, std::string& error);
  Outcome routeMessage(const pgoutput::Message& message, OutboxRecord& record, std::string& error);

  // "schema.table" of an outbox relation (for logs and metric labels); empty when not an outbox.
  std::string_view outboxName(RelationId id) const;

  // Kafka's rule for topic names: 1..249 of [a-zA-Z0-9._-], not "." or "..".
  static bool isValidTopic(std::string_view topic);
  // The {placeholder} names of a topic template, in order.
  static std::vector<std::string> topicPlaceholders(std::string_view topicTemplate);

 private:
  // A topic template split into literal text and placeholders.
  struct TopicTemplate {
    struct Segment {
      std::string text;  // literal text, or the placeholder's column / field name
      bool placeholder = false;
      int columnIndex = -1;  // for tables: resolved per relation
    };
    std::vector<Segment> segments;
    static TopicTemplate parse(std::string_view text);
  };
  struct Route {
    const OutboxTableConfig* table = nullptr;
    std::string name;  // schema.table as configured (also when the table was renamed: stable metric labels)
    int id = -1, aggregateType = -1, aggregateId = -1, type = -1, payload = -1;
    int timestamp = -1;  // the timestamp column, when configured
    int partition = -1;  // the partition column, when configured
    int tracing = -1;    // the tracing column, when configured
    int key = -1;        // the key column: the aggregate id's unless key_column names another (or none)
    uint32_t payloadTypeOid = 0;
    TopicTemplate topic;
    std::vector<std::pair<std::string, int>> headers;  // header name -> column index (-1: column missing)
    struct EnvelopeField {
      std::string jsonName;  // ,"name": as JSON, encoded once per relation
      int column = -1;
      uint32_t typeOid = 0;
    };
    std::vector<EnvelopeField> envelope;  // [outbox.envelope]: the value's fields beside "payload"
    std::string ceSourceJson;  // cloudevents_source as a JSON string, for structured CloudEvents
    std::string problem;  // non-empty: a required column is missing; every row is dead-lettered
  };

  Outcome deadLetter(OutboxRecord& record, std::string& error, std::string reason, std::optional<std::string_view> key,
                     std::optional<std::string_view> value);
  std::optional<std::string_view> columnText(const pgoutput::TupleData& tuple, int index) const;
  // The payload's bytes: bytea arrives in text format as "\x<hex>" and is decoded to the raw bytes.
  std::optional<std::string_view> payloadBytes(const Route& route, const pgoutput::TupleData& tuple);

  const RelayConfig& config_;
  RelationCache relations_;
  std::unordered_map<uint32_t, Route> routes_;
  std::unordered_map<uint32_t, const OutboxTableConfig*> outboxByOid_;
  // Logical messages: the topic template (placeholders resolved to field indices of messageDocument_), the
  // parsed document the records' views point into, and header name -> field index.
  static constexpr size_t kIdField = 0, kAggregateIdField = 1, kPayloadField = 2;
  TopicTemplate messageTopic_;
  MessageDocument messageDocument_;
  std::vector<std::pair<std::string, size_t>> messageHeaders_;
  int64_t commitTimeMs_ = 0;
  bool traceDropped_ = false;
  std::string traceParent_, traceState_;
  std::string envelope_;
  std::string ceTime_, ceBody_;
  int64_t ceTimeMs_ = -1;  // what ceTime_ renders
  // Scratch buffers the records' views point into; reused for every event.
  std::string topic_;
  std::string payload_;
  std::string errorText_;
};

}  // namespace outbox
