#include "src/OutboxRouter.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "common/ConfigSupport.h"
#include "common/KafkaTopicName.h"
#include "common/Log.h"
#include "common/UnixTime.h"

namespace outbox {

namespace {
constexpr uint32_t kByteaOid = 17;

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

OutboxRouter::TopicTemplate OutboxRouter::TopicTemplate::parse(std::string_view text) {
  TopicTemplate result;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t open = text.find('{', pos);
    size_t close = open == std::string_view::npos ? open : text.find('}', open);
    if (open == std::string_view::npos || close == std::string_view::npos) {
      result.segments.push_back({std::string(text.substr(pos)), false, -1});
      break;
    }
    if (open > pos) result.segments.push_back({std::string(text.substr(pos, open - pos)), false, -1});
    result.segments.push_back({std::string(text.substr(open + 1, close - open - 1)), true, -1});
    pos = close + 1;
  }
  return result;
}

namespace {
// The top-level fields of a logical message the router reads, each once: the outbox fields (in the order of
// OutboxRouter's k*Field constants), then those the topic template and the headers name.
std::vector<std::string> messageFieldNames(const MessagesConfig& messages) {
  std::vector<std::string> names = {"id", "aggregateid", "payload"};
  auto add = [&](const std::string& name) {
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  };
  for (const auto& segment : OutboxRouter::topicPlaceholders(messages.topicTemplate)) add(segment);
  for (const auto& [header, name] : messages.headers) add(name);
  return names;
}
}  // namespace

std::vector<std::string> OutboxRouter::topicPlaceholders(std::string_view topicTemplate) {
  std::vector<std::string> names;
  for (const auto& segment : TopicTemplate::parse(topicTemplate).segments) {
    if (segment.placeholder) names.push_back(segment.text);
  }
  return names;
}

OutboxRouter::OutboxRouter(const RelayConfig& config)
    : config_(config),
      messageTopic_(TopicTemplate::parse(config.messages.topicTemplate)),
      messageDocument_(messageFieldNames(config.messages)) {
  for (auto& segment : messageTopic_.segments) {
    if (segment.placeholder) segment.columnIndex = static_cast<int>(messageDocument_.indexOf(segment.text));
  }
  for (const auto& [header, name] : config.messages.headers) {
    messageHeaders_.emplace_back(header, messageDocument_.indexOf(name));
  }
}

void OutboxRouter::reset() {
  relations_.clear();
  routes_.clear();
}

void OutboxRouter::setOutboxOids(std::vector<uint32_t> oids) {
  outboxByOid_.clear();
  for (size_t i = 0; i < oids.size() && i < config_.outboxes.size(); ++i) {
    if (oids[i] != 0) outboxByOid_.emplace(oids[i], &config_.outboxes[i]);
  }
}

const OutboxTableConfig* OutboxRouter::onRelation(const pgoutput::Relation& relation) {
  const RelationInfo& info = relations_.apply(relation);
  routes_.erase(info.relationId.value);
  const OutboxTableConfig* table = nullptr;
  const OutboxTableConfig* renamed = nullptr;
  if (auto it = outboxByOid_.find(info.relationId.value); it != outboxByOid_.end()) {
    table = it->second;
    if (table->schema != info.nspname || table->table != info.relname) renamed = table;
  }
  for (const auto& candidate : config_.outboxes) {
    if (table == nullptr && candidate.schema == info.nspname && candidate.table == info.relname) table = &candidate;
  }
  if (table == nullptr) return nullptr;

  Route route;
  route.table = table;
  route.name = table->schema + "." + table->table;
  route.id = info.columnIndex(table->idColumn);
  route.aggregateType = info.columnIndex(table->aggregateTypeColumn);
  route.aggregateId = info.columnIndex(table->aggregateIdColumn);
  route.type = info.columnIndex(table->typeColumn);
  route.payload = info.columnIndex(table->payloadColumn);
  if (route.payload >= 0) route.payloadTypeOid = info.columns[route.payload].typeOid;
  route.topic = TopicTemplate::parse(table->topicTemplate);
  for (auto& segment : route.topic.segments) {
    if (!segment.placeholder) continue;
    segment.columnIndex = info.columnIndex(segment.text);
    if (segment.columnIndex < 0) route.problem += "topic placeholder {" + segment.text + "} names no column; ";
  }
  for (const auto& [header, column] : table->headers) route.headers.emplace_back(header, info.columnIndex(column));
  for (const auto& [field, column] : table->envelope) {
    Route::EnvelopeField f{",", info.columnIndex(column), 0};
    appendJsonValue(f.jsonName, field, 25);
    f.jsonName += ':';
    if (f.column < 0) {
      route.problem += "no envelope column \"" + column + "\"; ";
    } else {
      f.typeOid = info.columns[static_cast<size_t>(f.column)].typeOid;
    }
    route.envelope.push_back(std::move(f));
  }
  auto require = [&](int index, const std::string& column, const char* role) {
    if (index < 0) route.problem += "no " + std::string(role) + " column \"" + column + "\"; ";
  };
  require(route.id, table->idColumn, "id");
  require(route.aggregateId, table->aggregateIdColumn, "aggregate id");
  require(route.payload, table->payloadColumn, "payload");
  route.key = route.aggregateId;
  if (!table->tracingColumn.empty()) {
    route.tracing = info.columnIndex(table->tracingColumn);
    require(route.tracing, table->tracingColumn, "tracing");
  }
  if (!table->partitionColumn.empty()) {
    route.partition = info.columnIndex(table->partitionColumn);
    require(route.partition, table->partitionColumn, "partition");
  }
  if (table->keyColumn) {
    route.key = table->keyColumn->empty() ? -1 : info.columnIndex(*table->keyColumn);
    if (!table->keyColumn->empty()) require(route.key, *table->keyColumn, "key");
  }
  if (table->cloudEvents != OutboxTableConfig::CloudEvents::Off) {
    require(route.type, table->typeColumn, "type");
    appendJsonValue(route.ceSourceJson, table->cloudEventsSource, 25);
  }
  if (!table->timestampColumn.empty()) {
    route.timestamp = info.columnIndex(table->timestampColumn);
    require(route.timestamp, table->timestampColumn, "timestamp");
  }
  if (!route.problem.empty()) {
    log::error(
        "outbox table {} lacks columns the router needs ({}): its rows go to dead-letter topic \"{}\" until "
        "the table or the [[outbox]] config is fixed",
        route.name, route.problem, config_.deadLetterTopic);
  }
  routes_.emplace(info.relationId.value, std::move(route));
  return renamed;
}

std::string_view OutboxRouter::outboxName(RelationId id) const {
  auto it = routes_.find(id.value);
  return it == routes_.end() ? std::string_view() : std::string_view(it->second.name);
}

bool OutboxRouter::isValidTopic(std::string_view topic) { return isValidKafkaTopic(topic); }

namespace {
// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's days_from_civil).
int64_t daysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

bool isLeap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

// Reads exactly `n` digits at `pos` into `out`.
bool digits(std::string_view t, size_t& pos, size_t n, int64_t& out) {
  if (pos + n > t.size()) return false;
  out = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = t[pos + i];
    if (c < '0' || c > '9') return false;
    out = out * 10 + (c - '0');
  }
  pos += n;
  return true;
}
}  // namespace

namespace {
bool isLowerHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool validTraceparent(std::string_view v) {
  if (v.size() != 55 || v[2] != '-' || v[35] != '-' || v[52] != '-') return false;
  std::string_view version = v.substr(0, 2), traceId = v.substr(3, 32), parentId = v.substr(36, 16),
                   flags = v.substr(53, 2);
  if (!isLowerHex(version) || !isLowerHex(traceId) || !isLowerHex(parentId) || !isLowerHex(flags)) return false;
  if (version == "ff") return false;
  return traceId.find_first_not_of('0') != std::string_view::npos &&
         parentId.find_first_not_of('0') != std::string_view::npos;
}

bool validTracestate(std::string_view v) {
  return !v.empty() && v.size() <= 512 &&
         std::all_of(v.begin(), v.end(), [](char c) { return c >= 0x20 && c <= 0x7e; });
}

// `s` without leading and trailing characters of `chars` (by default Properties whitespace, and a CR of a CRLF).
std::string_view trimSpaces(std::string_view s, std::string_view chars = " \t\f\r") {
  size_t first = s.find_first_not_of(chars);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(chars) - first + 1);
}

// One logical line of Java Properties text with its escapes undone; false on a \u escape that is not ASCII.
bool unescapeProperties(std::string_view in, std::string& out) {
  out.clear();
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c != '\\' || i + 1 >= in.size()) {
      out += c;
      continue;
    }
    char e = in[++i];
    switch (e) {
      case 't': out += '\t'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 'f': out += '\f'; break;
      case 'u': {
        if (i + 4 >= in.size()) return false;
        unsigned value = 0;
        for (size_t k = 1; k <= 4; ++k) {
          int d = hexValue(in[i + k]);
          if (d < 0) return false;
          value = value * 16 + static_cast<unsigned>(d);
        }
        if (value > 0x7e) return false;
        out += static_cast<char>(value);
        i += 4;
        break;
      }
      default: out += e;  // \= \: \# \! \\ and a backslash before any other character
    }
  }
  return true;
}
}  // namespace

bool OutboxRouter::parseTraceContext(std::string_view text, std::string& traceparent, std::string& tracestate) {
  traceparent.clear();
  tracestate.clear();
  if (text.size() > 8192) return false;
  std::string_view bare = trimSpaces(text, " \t\f\r\n");
  if (bare.empty()) return true;
  std::string parent, state;
  bool sawParent = false, sawState = false;
  if (bare.find('=') == std::string_view::npos && bare.find(':') == std::string_view::npos &&
      bare.find('\n') == std::string_view::npos && bare.front() != '#' && bare.front() != '!') {
    parent = std::string(bare);
    sawParent = true;
  } else {
    std::string key, value;
    size_t start = 0;
    while (start <= text.size()) {
      size_t end = text.find('\n', start);
      std::string_view raw = trimSpaces(text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
      start = end == std::string_view::npos ? text.size() + 1 : end + 1;
      if (raw.empty() || raw.front() == '#' || raw.front() == '!') continue;
      // The separator: the first '=' or ':' not escaped by a backslash.
      size_t sep = std::string_view::npos;
      for (size_t i = 0; i < raw.size(); ++i) {
        if (raw[i] == '\\') {
          ++i;
        } else if (raw[i] == '=' || raw[i] == ':') {
          sep = i;
          break;
        }
      }
      if (sep == std::string_view::npos) continue;
      if (!unescapeProperties(trimSpaces(raw.substr(0, sep)), key) ||
          !unescapeProperties(trimSpaces(raw.substr(sep + 1)), value)) {
        return false;
      }
      if (key == "traceparent") {
        parent = value;
        sawParent = true;
      } else if (key == "tracestate") {
        state = value;
        sawState = true;
      }
    }
  }
  if (!sawParent) return !sawState;  // a tracestate without a traceparent means nothing
  if (!validTraceparent(parent)) return false;
  traceparent = std::move(parent);
  if (sawState && !state.empty()) {
    if (!validTracestate(state)) return false;
    tracestate = std::move(state);
  }
  return true;
}

namespace {
// Whether `t` is a JSON number (RFC 8259), as PostgreSQL prints finite numerics and floats.
bool isJsonNumber(std::string_view t) {
  size_t i = 0;
  auto digitsFrom = [&](size_t& p) {
    size_t start = p;
    while (p < t.size() && t[p] >= '0' && t[p] <= '9') ++p;
    return p > start;
  };
  if (i < t.size() && t[i] == '-') ++i;
  if (i >= t.size()) return false;
  if (t[i] == '0') {
    ++i;
  } else if (!digitsFrom(i)) {
    return false;
  }
  if (i < t.size() && t[i] == '.') {
    ++i;
    if (!digitsFrom(i)) return false;
  }
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
    if (!digitsFrom(i)) return false;
  }
  return i == t.size();
}

void appendBase64(std::string& out, std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t n = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8) |
                 static_cast<uint8_t>(bytes[i + 2]);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += kAlphabet[n & 63];
  }
  if (i + 1 == bytes.size()) {
    uint32_t n = static_cast<uint8_t>(bytes[i]) << 16;
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += "==";
  } else if (i + 2 == bytes.size()) {
    uint32_t n = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += '=';
  }
}
}  // namespace

std::string_view OutboxRouter::contentType(uint32_t payloadTypeOid) {
  if (payloadTypeOid == 114 || payloadTypeOid == 3802) return "application/json";
  if (payloadTypeOid == kByteaOid) return "application/octet-stream";
  return "text/plain; charset=utf-8";
}

void OutboxRouter::appendJsonValue(std::string& out, std::optional<std::string_view> text, uint32_t typeOid,
                                   bool bytes) {
  constexpr uint32_t kBool = 16, kInt8 = 20, kInt2 = 21, kInt4 = 23, kJson = 114, kFloat4 = 700, kFloat8 = 701,
                     kNumeric = 1700, kJsonb = 3802;
  if (!text) {
    out += "null";
    return;
  }
  switch (typeOid) {
    case kBool:
      if (*text == "t" || *text == "f") {
        out += *text == "t" ? "true" : "false";
        return;
      }
      break;
    case kInt2:
    case kInt4:
    case kInt8:
    case kFloat4:
    case kFloat8:
    case kNumeric:
      if (isJsonNumber(*text)) {
        out += *text;
        return;
      }
      break;
    case kJson:
    case kJsonb:
      out += *text;  // validated by PostgreSQL on input
      return;
    case kByteaOid:
      if (bytes) {
        out += '"';
        appendBase64(out, *text);
        out += '"';
        return;
      }
      break;
    default:
      break;
  }
  // Replace, not throw, on invalid UTF-8: a text column of a SQL_ASCII database may hold any bytes.
  out += nlohmann::json(std::string(*text)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::optional<int64_t> OutboxRouter::parseTimestampMs(std::string_view t) {
  constexpr int64_t kMaxMs = 253402300799999;  // 9999-12-31 23:59:59.999 UTC
  if (t.empty() || t.size() > 64) return std::nullopt;
  if (std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    if (t.size() > 15) return std::nullopt;
    int64_t ms = 0;
    for (char c : t) ms = ms * 10 + (c - '0');
    return ms <= kMaxMs ? std::optional<int64_t>(ms) : std::nullopt;
  }
  size_t pos = 0;
  int64_t year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  auto expect = [&](char c) {
    if (pos >= t.size() || t[pos] != c) return false;
    ++pos;
    return true;
  };
  if (!digits(t, pos, 4, year) || !expect('-') || !digits(t, pos, 2, month) || !expect('-') ||
      !digits(t, pos, 2, day)) {
    return std::nullopt;
  }
  if (pos >= t.size() || (t[pos] != ' ' && t[pos] != 'T')) return std::nullopt;
  ++pos;
  if (!digits(t, pos, 2, hour) || !expect(':') || !digits(t, pos, 2, minute) || !expect(':') ||
      !digits(t, pos, 2, second)) {
    return std::nullopt;
  }
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (year < 1970 || month < 1 || month > 12 || day < 1 ||
      day > kDays[month - 1] + (month == 2 && isLeap(year) ? 1 : 0) || hour > 23 || minute > 59 || second > 59) {
    return std::nullopt;
  }
  int64_t millis = 0;
  if (pos < t.size() && t[pos] == '.') {
    ++pos;
    size_t start = pos;
    while (pos < t.size() && t[pos] >= '0' && t[pos] <= '9') {
      if (pos - start < 3) millis = millis * 10 + (t[pos] - '0');
      ++pos;
    }
    size_t n = pos - start;
    if (n == 0 || n > 9) return std::nullopt;
    for (size_t i = n; i < 3; ++i) millis *= 10;
  }
  int64_t offsetSeconds = 0;
  if (pos < t.size()) {
    char sign = t[pos];
    if (sign != '+' && sign != '-') return std::nullopt;
    ++pos;
    int64_t oh = 0, om = 0, os = 0;
    // [+-]HH, [+-]HH:MM or [+-]HH:MM:SS, as PostgreSQL prints an offset.
    if (!digits(t, pos, 2, oh)) return std::nullopt;
    if (pos < t.size() && (!expect(':') || !digits(t, pos, 2, om))) return std::nullopt;
    if (pos < t.size() && (!expect(':') || !digits(t, pos, 2, os))) return std::nullopt;
    if (pos != t.size() || oh > 15 || om > 59 || os > 59) return std::nullopt;
    offsetSeconds = (oh * 3600 + om * 60 + os) * (sign == '-' ? -1 : 1);
  }
  int64_t seconds = daysFromCivil(year, static_cast<unsigned>(month), static_cast<unsigned>(day)) * 86400 +
                    hour * 3600 + minute * 60 + second - offsetSeconds;
  int64_t ms = seconds * 1000 + millis;
  if (ms < 0 || ms > kMaxMs) return std::nullopt;
  return ms;
}

std::optional<std::string_view> OutboxRouter::columnText(const pgoutput::TupleData& tuple, int index) const {
  if (index < 0 || static_cast<size_t>(index) >= tuple.size()) return std::nullopt;
  const auto& column = tuple[static_cast<size_t>(index)];
  if (column.kind != pgoutput::ColumnValue::Kind::Text && column.kind != pgoutput::ColumnValue::Kind::Binary) {
    return std::nullopt;
  }
  return column.data;
}

std::optional<std::string_view> OutboxRouter::payloadBytes(const Route& route, const pgoutput::TupleData& tuple) {
  auto text = columnText(tuple, route.payload);
  if (!text || route.payloadTypeOid != kByteaOid) return text;
  // bytea's text output is "\x" followed by two hex digits per byte (bytea_output = hex, the default since 9.0).
  if (text->size() < 2 || (*text)[0] != '\\' || (*text)[1] != 'x' || text->size() % 2 != 0) return text;
  payload_.clear();
  payload_.reserve((text->size() - 2) / 2);
  for (size_t i = 2; i + 1 < text->size(); i += 2) {
    int hi = hexValue((*text)[i]);
    int lo = hexValue((*text)[i + 1]);
    if (hi < 0 || lo < 0) return text;
    payload_.push_back(static_cast<char>(hi * 16 + lo));
  }
  return std::string_view(payload_);
}

OutboxRouter::Outcome OutboxRouter::deadLetter(OutboxRecord& record, std::string& error, std::string reason,
                                               std::optional<std::string_view> key,
                                               std::optional<std::string_view> value) {
  error = std::move(reason);
  errorText_ = error;
  record.topic = config_.deadLetterTopic;
  record.key = key;
  record.value = value;
  record.headers.emplace_back("error", errorText_);
  return Outcome::DeadLettered;
}

OutboxRouter::Outcome OutboxRouter::routeInsert(const pgoutput::Insert& insert, OutboxRecord& record,
                                                std::string& error) {
  auto it = routes_.find(insert.relationId.value);
  if (it == routes_.end()) {
    if (relations_.find(insert.relationId) == nullptr) {
      // pgoutput always describes a relation before its first row; anything else is a protocol violation.
      throw pgoutput::DecodeError("pgoutput Insert for relation " + std::to_string(insert.relationId.value) +
                                  " that no Relation message described");
    }
    return Outcome::NotOutbox;
  }
  const Route& route = it->second;
  const auto& tuple = insert.newTuple;
  record.headers.clear();
  record.timestampMs = commitTimeMs_;
  record.partition = -1;
  traceDropped_ = false;
  auto id = columnText(tuple, route.id);
  auto key = columnText(tuple, route.aggregateId);
  auto value = payloadBytes(route, tuple);
  if (id) record.headers.emplace_back("id", *id);
  if (!route.problem.empty()) return deadLetter(record, error, route.name + ": " + route.problem, key, value);
  if (!id)
    return deadLetter(record, error, route.name + ": column \"" + route.table->idColumn + "\" is NULL", key, value);
  if (!key) {
    return deadLetter(record, error, route.name + ": column \"" + route.table->aggregateIdColumn + "\" is NULL", key,
                      value);
  }

  topic_.clear();
  for (const auto& segment : route.topic.segments) {
    if (!segment.placeholder) {
      topic_ += segment.text;
      continue;
    }
    auto part = columnText(tuple, segment.columnIndex);
    if (!part) {
      return deadLetter(record, error, route.name + ": column \"" + segment.text + "\" of the topic template is NULL",
                        key, value);
    }
    topic_ += *part;
  }
  if (!isValidTopic(topic_)) {
    return deadLetter(record, error,
                      route.name + ": \"" + topic_ + "\" is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-])",
                      key, value);
  }
  if (auto text = columnText(tuple, route.timestamp)) {
    std::optional<int64_t> ms = parseTimestampMs(*text);
    if (!ms) {
      return deadLetter(record, error,
                        route.name + ": column \"" + route.table->timestampColumn + "\" (timestamp_column) is \"" +
                            std::string(text->substr(0, 64)) +
                            "\", not a time from 1970 on (a timestamptz, a timestamp or an integer of epoch "
                            "milliseconds)",
                        key, value);
    }
    record.timestampMs = *ms;
  }
  if (auto text = columnText(tuple, route.partition)) {
    int64_t partition = -1;
    if (!text->empty() && text->size() <= 10 &&
        std::all_of(text->begin(), text->end(), [](char c) { return c >= '0' && c <= '9'; })) {
      partition = 0;
      for (char c : *text) partition = partition * 10 + (c - '0');
    }
    if (partition < 0 || partition > INT32_MAX) {
      return deadLetter(record, error,
                        route.name + ": column \"" + route.table->partitionColumn + "\" (partition_column) is \"" +
                            std::string(text->substr(0, 64)) + "\", not a partition number (0 or more)",
                        key, value);
    }
    record.partition = static_cast<int32_t>(partition);
  }
  for (const auto& [header, index] : route.headers) {
    if (auto text = columnText(tuple, index)) record.headers.emplace_back(header, *text);
  }
  if (auto text = columnText(tuple, route.tracing)) {
    traceDropped_ = !parseTraceContext(*text, traceParent_, traceState_);
    if (!traceParent_.empty()) record.headers.emplace_back("traceparent", traceParent_);
    if (!traceState_.empty()) record.headers.emplace_back("tracestate", traceState_);
  }
  record.topic = topic_;
  record.key = route.key == route.aggregateId ? key : columnText(tuple, route.key);
  record.value = value;
  if (!route.envelope.empty()) {
    envelope_.clear();
    envelope_ += "{\"payload\":";
    appendJsonValue(envelope_, value, route.payloadTypeOid, route.payloadTypeOid == kByteaOid);
    for (const auto& field : route.envelope) {
      envelope_ += field.jsonName;  // ,"name":
      appendJsonValue(envelope_, columnText(tuple, field.column), field.typeOid);
    }
    envelope_ += '}';
    record.value = envelope_;
  }
  if (route.table->cloudEvents != OutboxTableConfig::CloudEvents::Off) {
    auto type = columnText(tuple, route.type);
    if (!type || type->empty()) {
      return deadLetter(record, error,
                        route.name + ": column \"" + route.table->typeColumn +
                            "\" is NULL or empty, and a CloudEvent needs a type",
                        key, value);
    }
    if (record.timestampMs != ceTimeMs_) {  // the same for every row of a transaction without a timestamp column
      ceTimeMs_ = record.timestampMs;
      ceTime_ = utcIsoTimeMillis(record.timestampMs);
    }
    const std::string& source = route.table->cloudEventsSource;
    if (route.table->cloudEvents == OutboxTableConfig::CloudEvents::Binary) {
      record.headers.emplace_back("ce_specversion", "1.0");
      record.headers.emplace_back("ce_id", *id);
      record.headers.emplace_back("ce_source", source);
      record.headers.emplace_back("ce_type", *type);
      if (!ceTime_.empty()) record.headers.emplace_back("ce_time", ceTime_);
      record.headers.emplace_back("content-type", contentType(route.payloadTypeOid));
    } else {
      ceBody_.clear();
      ceBody_ += "{\"specversion\":\"1.0\",\"id\":";
      appendJsonValue(ceBody_, *id, 25);
      ceBody_ += ",\"source\":";
      ceBody_ += route.ceSourceJson;
      ceBody_ += ",\"type\":";
      appendJsonValue(ceBody_, *type, 25);
      if (!ceTime_.empty()) ceBody_ += ",\"time\":\"" + ceTime_ + "\"";
      ceBody_ += ",\"datacontenttype\":\"";
      ceBody_ += contentType(route.payloadTypeOid);
      ceBody_ += route.payloadTypeOid == kByteaOid ? "\",\"data_base64\":" : "\",\"data\":";
      appendJsonValue(ceBody_, value, route.payloadTypeOid, route.payloadTypeOid == kByteaOid);
      ceBody_ += '}';
      record.value = ceBody_;
      record.headers.emplace_back("content-type", "application/cloudevents+json");
    }
  }
  return Outcome::Routed;
}

OutboxRouter::Outcome OutboxRouter::routeMessage(const pgoutput::Message& message, OutboxRecord& record,
                                                 std::string& error) {
  if (!config_.messages.enabled || message.prefix != config_.messages.prefix) return Outcome::NotOutbox;
  record.headers.clear();
  // A transactional message has its transaction's commit time; a non-transactional one none (it is decoded when
  // written, outside any transaction).
  record.timestampMs = message.transactional ? commitTimeMs_ : 0;
  record.partition = -1;
  std::string where = "logical message (prefix \"" + config_.messages.prefix + "\") at " + message.lsn.toString();
  if (message.content.size() > config_.messages.maxBytes) {
    // Without its content: a dead letter that large would be refused by Kafka as well.
    return deadLetter(record, error,
                      where + ": content is " + std::to_string(message.content.size()) +
                          " bytes, more than messages.max_bytes = " + std::to_string(config_.messages.maxBytes) +
                          " (the dead letter carries no value)",
                      std::nullopt, std::nullopt);
  }
  if (auto problem = messageDocument_.parse(message.content)) {
    return deadLetter(record, error, where + ": " + *problem, std::nullopt, message.content);
  }
  const MessageDocument::Field& id = messageDocument_.field(kIdField);
  const MessageDocument::Field& aggregateId = messageDocument_.field(kAggregateIdField);
  if (id.present) record.headers.emplace_back("id", id.text);
  if (!id.present) return deadLetter(record, error, where + ": field \"id\" is missing", std::nullopt, message.content);
  if (!aggregateId.present) {
    return deadLetter(record, error, where + ": field \"aggregateid\" is missing", std::nullopt, message.content);
  }
  topic_.clear();
  for (const auto& segment : messageTopic_.segments) {
    if (!segment.placeholder) {
      topic_ += segment.text;
      continue;
    }
    const MessageDocument::Field& part = messageDocument_.field(static_cast<size_t>(segment.columnIndex));
    if (!part.present) {
      return deadLetter(record, error, where + ": field \"" + segment.text + "\" of the topic template is missing",
                        std::nullopt, message.content);
    }
    topic_ += part.text;
  }
  if (!isValidTopic(topic_)) {
    return deadLetter(record, error,
                      where + ": \"" + topic_ + "\" is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-])",
                      std::nullopt, message.content);
  }
  for (const auto& [header, index] : messageHeaders_) {
    const MessageDocument::Field& value = messageDocument_.field(index);
    if (value.present) record.headers.emplace_back(header, value.text);
  }
  const MessageDocument::Field& payload = messageDocument_.field(kPayloadField);
  record.topic = topic_;
  record.key = aggregateId.text;
  // As written, a string payload with its quotes: the bytes of the document, like a json column's text.
  record.value = payload.present ? std::optional<std::string_view>(payload.raw) : std::nullopt;
  return Outcome::Routed;
}

}  // namespace outbox
