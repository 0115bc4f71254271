// libFuzzer target: bytes from the walsender -> PgOutputDecoder -> OutboxRouter, the relay's path up to Kafka.
// The input is a sequence of CopyData payloads (Frames.h). Each goes through decodeReplication and, for XLogData,
// decode; Relation, Insert and Message messages reach the router as Relay::handleMessage passes them. A
// DecodeError is the expected answer to malformed input (the relay stops with its protocol exit status);
// anything else thrown, any sanitizer report, is a finding.

#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>

#include "Frames.h"
#include "src/OutboxRouter.h"
#include "src/PgOutputDecoder.h"

namespace {

using namespace outbox;

// The tables of the captured seeds (tests/support/CapturedPgOutput.h), as outboxes: `outbox` with its bytea
// column as payload, `outbox_full` lacking the Debezium columns (every row dead-lettered), and [messages] on.
RelayConfig fuzzConfig() {
  RelayConfig config;
  OutboxTableConfig outbox;
  outbox.table = "outbox";
  outbox.aggregateTypeColumn = "topic";
  outbox.aggregateIdColumn = "topic";
  outbox.typeColumn = "note";
  outbox.payloadColumn = "blob";
  outbox.topicTemplate = "outbox.{topic}.{id}";
  outbox.headers = {{"eventType", "note"}, {"json", "payload"}, {"missing", "nosuchcolumn"}};
  // Options that never dead-letter a row, so every routed row goes through them: the trace context parser and the
  // envelope (a text column and the bytea payload as JSON).
  outbox.tracingColumn = "note";
  outbox.envelope = {{"note", "note"}, {"json", "payload"}};
  config.outboxes.push_back(outbox);
  OutboxTableConfig full;
  full.table = "outbox_full";
  config.outboxes.push_back(full);
  config.messages.enabled = true;
  config.messages.prefix = "outbox";
  config.messages.headers = {{"eventType", "type"}};
  return config;
}

// Reads every byte a record views, so ASan sees a view that outlived its buffer.
void touch(const OutboxRecord& record) {
  volatile unsigned sum = 0;
  auto add = [&](std::string_view s) {
    for (char c : s) sum = sum + static_cast<unsigned char>(c);
  };
  add(record.topic);
  if (record.key) add(*record.key);
  if (record.value) add(*record.value);
  for (const auto& [name, value] : record.headers) {
    add(name);
    add(value);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The column parsers, on the raw input too: rows reach the timestamp and partition parsers only when what comes
  // before them in a row is valid.
  {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    (void)OutboxRouter::parseTimestampMs(text);
    std::string parent, state, json;
    OutboxRouter::parseTraceContext(text, parent, state);
    for (uint32_t oid : {16u, 20u, 700u, 1700u, 17u, 25u}) OutboxRouter::appendJsonValue(json, text, oid, oid == 17u);
  }
  static const RelayConfig config = fuzzConfig();
  OutboxRouter router(config);
  pgoutput::PgOutputDecoder decoder;
  OutboxRecord record;
  std::string error;
  try {
    fuzz::forEachFrame(data, size, [&](std::string_view payload) {
      auto copyData = pgoutput::PgOutputDecoder::decodeReplication(payload);
      auto* xlog = std::get_if<pgoutput::XLogData>(&copyData);
      if (xlog == nullptr) return;
      auto message = decoder.decode(xlog->data);
      OutboxRouter::Outcome outcome = OutboxRouter::Outcome::NotOutbox;
      if (auto* relation = std::get_if<pgoutput::Relation>(&message)) {
        router.onRelation(*relation);
      } else if (auto* insert = std::get_if<pgoutput::Insert>(&message)) {
        outcome = router.routeInsert(*insert, record, error);
      } else if (auto* logical = std::get_if<pgoutput::Message>(&message)) {
        outcome = router.routeMessage(*logical, record, error);
      }
      if (outcome == OutboxRouter::Outcome::NotOutbox) return;
      touch(record);
      // What the publisher relies on: a routed record has a topic Kafka accepts.
      if (outcome == OutboxRouter::Outcome::Routed && !OutboxRouter::isValidTopic(record.topic)) __builtin_trap();
    });
  } catch (const pgoutput::DecodeError&) {
  }
  return 0;
}
