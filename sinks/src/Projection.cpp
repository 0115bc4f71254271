#include "src/Projection.h"

#include <fmt/format.h>
#include <regex.h>
#include <simdjson.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>
#include <stdexcept>

namespace outbox::sink {

namespace {

namespace od = simdjson::ondemand;
using simdjson::error_code;

// JSON's insignificant whitespace (RFC 8259 section 2). On-Demand's raw tokens run up to the next token, so they
// carry the whitespace after a value.
std::string_view trimJson(std::string_view s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

std::string_view rawToken(od::value& v) { return v.raw_json_token(); }
std::string_view rawToken(od::document& d) {
  std::string_view raw;
  return d.raw_json_token().get(raw) == simdjson::SUCCESS ? raw : std::string_view();
}

// RFC 8259's number grammar. On-Demand reads a number only when asked for its value (and cannot hold one beyond 64
// bits), so a number the sink forwards as written is checked here.
bool isJsonNumber(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  auto digits = [&] {
    size_t start = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') ++i;
    return i > start;
  };
  if (i < n && s[i] == '-') ++i;
  if (i < n && s[i] == '0') {
    ++i;
  } else if (!digits()) {
    return false;
  }
  if (i < n && s[i] == '.') {
    ++i;
    if (!digits()) return false;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
    if (!digits()) return false;
  }
  return i == n;
}

// A value that is not a container: a string with valid escapes, a number, or exactly true/false/null (On-Demand
// alone would take "trueX" for true).
template <class Value>
error_code checkScalar(Value& v, od::json_type type) {
  switch (type) {
    case od::json_type::string: {
      std::string_view text;
      return v.get_string().get(text);
    }
    case od::json_type::number:
      return isJsonNumber(trimJson(rawToken(v))) ? simdjson::SUCCESS : simdjson::NUMBER_ERROR;
    case od::json_type::boolean:
    case od::json_type::null: {
      std::string_view atom = trimJson(rawToken(v));
      return atom == "true" || atom == "false" || atom == "null" ? simdjson::SUCCESS : simdjson::T_ATOM_ERROR;
    }
    default:
      return simdjson::INCORRECT_TYPE;
  }
}

// Every value of `doc` once, in document order, with an explicit stack of open containers instead of recursion:
// the input decides the nesting, so the walk must not use the call stack for it (STYLE.md, "Untrusted input").
// `end`: just past the JSON text. DEPTH_ERROR past `maxDepth` open containers.
error_code validateDocument(od::document& doc, const char* end, size_t maxDepth) {
  struct Open {
    bool object = false;
    bool started = false;  // the first member was read: the next step advances past it
    od::object_iterator field, fieldsEnd;
    od::array_iterator element, elementsEnd;
  };
  std::vector<Open> stack;
  auto open = [&](auto& v, od::json_type type) -> error_code {
    if (stack.size() >= maxDepth) return simdjson::DEPTH_ERROR;
    Open o;
    if (type == od::json_type::object) {
      od::object object;
      if (error_code e = v.get_object().get(object)) return e;
      o.object = true;
      if (error_code e = object.begin().get(o.field)) return e;
      if (error_code e = object.end().get(o.fieldsEnd)) return e;
    } else {
      od::array array;
      if (error_code e = v.get_array().get(array)) return e;
      if (error_code e = array.begin().get(o.element)) return e;
      if (error_code e = array.end().get(o.elementsEnd)) return e;
    }
    stack.push_back(o);
    return simdjson::SUCCESS;
  };
  auto isContainer = [](od::json_type t) { return t == od::json_type::object || t == od::json_type::array; };

  od::json_type rootType;
  if (error_code e = doc.type().get(rootType)) return e;
  if (isContainer(rootType)) {
    if (error_code e = open(doc, rootType)) return e;
  } else {
    // A scalar document is one token: anything after it is trailing content.
    std::string_view raw = rawToken(doc);
    if (raw.data() + raw.size() != end) return simdjson::TRAILING_CONTENT;
    if (error_code e = checkScalar(doc, rootType)) return e;
  }
  while (!stack.empty()) {
    Open& o = stack.back();
    od::value v;
    if (o.object) {
      if (o.started) ++o.field;
      o.started = true;
      if (!(o.field != o.fieldsEnd)) {
        stack.pop_back();
        continue;
      }
      od::field field;
      if (error_code e = (*o.field).get(field)) return e;
      std::string_view key;
      if (error_code e = field.unescaped_key().get(key)) return e;
      v = field.value();
    } else {
      if (o.started) ++o.element;
      o.started = true;
      if (!(o.element != o.elementsEnd)) {
        stack.pop_back();
        continue;
      }
      if (error_code e = (*o.element).get(v)) return e;
    }
    od::json_type type;
    if (error_code e = v.type().get(type)) return e;
    if (error_code e = isContainer(type) ? open(v, type) : checkScalar(v, type)) return e;
  }
  if (isContainer(rootType)) {
    const char* at = nullptr;
    if (doc.current_location().get(at) != simdjson::OUT_OF_BOUNDS) return simdjson::TRAILING_CONTENT;
  }
  return simdjson::SUCCESS;
}

// One On-Demand parser per thread, reused (its buffers grow to the largest payload), with the document of the
// EventView that iterated it last: a document is valid only until its parser iterates another one.
struct ThreadParser {
  // The depth bound is counted by validateDocument; simdjson's development checks (debug builds) assert
  // depth < max_depth on their own, so the parser gets 2 levels of room above it (its default is exactly 1024).
  // iterate() grows the capacity as needed and keeps max_depth.
  ThreadParser() {
    if (parser.allocate(4096, kMaxPayloadDepth + 2) != simdjson::SUCCESS) throw std::bad_alloc();
  }
  od::parser parser;
  od::document document;
  uint64_t owner = 0;  // EventView::serial_; 0: none
};

ThreadParser& threadParser() {
  thread_local ThreadParser parser;
  return parser;
}

std::atomic<uint64_t> nextSerial{1};

}  // namespace

struct TopicRegex::Compiled {
  regex_t regex;
};

std::shared_ptr<const TopicRegex> TopicRegex::compile(const std::string& pattern, std::string& error) {
  auto compiled = std::make_unique<Compiled>();
  int rc = regcomp(&compiled->regex, pattern.c_str(), REG_EXTENDED | REG_NOSUB);
  if (rc != 0) {
    char message[256];
    regerror(rc, &compiled->regex, message, sizeof message);
    error = message;
    return nullptr;
  }
  std::shared_ptr<TopicRegex> out(new TopicRegex());
  out->compiled_ = std::move(compiled);
  return out;
}

TopicRegex::~TopicRegex() {
  if (compiled_) regfree(&compiled_->regex);
}

bool TopicRegex::search(std::string_view text) const {
  std::string copy(text);  // regexec needs a terminated string
  return regexec(&compiled_->regex, copy.c_str(), 0, nullptr, 0) == 0;
}

std::optional<std::string_view> SinkEvent::header(std::string_view name) const {
  for (auto it = headers.rbegin(); it != headers.rend(); ++it) {
    if (it->first == name) return it->second;
  }
  return std::nullopt;
}

std::optional<ParamSource> parseParamSource(std::string_view text, std::string& error) {
  ParamSource source;
  source.text = std::string(text);
  std::string_view rest = text;
  if (!rest.empty() && rest.front() == '?') {
    source.optional = true;
    rest.remove_prefix(1);
  }
  if (rest.empty()) {
    error = "is empty; give a JSON pointer into the payload (\"/customerId\") or an attribute (\"@key\")";
    return std::nullopt;
  }
  if (rest.front() == '/') {
    // RFC 6901: "~" only as "~0" (a "~") or "~1" (a "/").
    for (size_t i = 0; i < rest.size(); ++i) {
      if (rest[i] == '~' && (i + 1 == rest.size() || (rest[i + 1] != '0' && rest[i + 1] != '1'))) {
        error = "is not a valid JSON pointer: '~' must be followed by '0' or '1' (RFC 6901)";
        return std::nullopt;
      }
    }
    source.pointer = std::string(rest);
    source.kind = ParamSource::Kind::Pointer;
    return source;
  }
  if (rest.front() != '@') {
    error =
        "must start with '/' (a JSON pointer into the payload, e.g. \"/customerId\") or '@' (a record "
        "attribute: @id, @key, @topic, @partition, @offset, @timestamp, @payload, @type, @header:NAME)";
    return std::nullopt;
  }
  static const std::pair<std::string_view, ParamSource::Kind> kAttributes[] = {
      {"@id", ParamSource::Kind::Id},           {"@key", ParamSource::Kind::Key},
      {"@topic", ParamSource::Kind::Topic},     {"@partition", ParamSource::Kind::Partition},
      {"@offset", ParamSource::Kind::Offset},   {"@timestamp", ParamSource::Kind::Timestamp},
      {"@payload", ParamSource::Kind::Payload}, {"@type", ParamSource::Kind::Type},
  };
  for (auto& [name, kind] : kAttributes) {
    if (rest == name) {
      source.kind = kind;
      return source;
    }
  }
  constexpr std::string_view kHeader = "@header:";
  if (rest.substr(0, kHeader.size()) == kHeader) {
    source.kind = ParamSource::Kind::Header;
    source.header = std::string(rest.substr(kHeader.size()));
    if (source.header.empty()) {
      error = "names no header; write \"@header:NAME\"";
      return std::nullopt;
    }
    return source;
  }
  error = fmt::format(
      "is not a record attribute; use one of @id, @key, @topic, @partition, @offset, @timestamp, "
      "@payload, @type, @header:NAME");
  return std::nullopt;
}

EventView::EventView(const SinkEvent& event, std::string_view typeHeader)
    : event_(event), typeHeader_(typeHeader), serial_(nextSerial.fetch_add(1, std::memory_order_relaxed)) {}

EventView::~EventView() {
  ThreadParser& p = threadParser();
  if (p.owner == serial_) p.owner = 0;
}

bool EventView::usable(std::string& error) {
  if (!validated_) {
    validated_ = true;
    if (!event_.payload) {
      payloadError_ = "the record has no value (a tombstone)";
    } else {
      // simdjson reads up to SIMDJSON_PADDING bytes past the end: a copy with room for them (a Kafka message's
      // buffer has none to spare).
      padded_.reserve(event_.payload->size() + simdjson::SIMDJSON_PADDING);
      padded_.assign(*event_.payload);
      padded_.append(simdjson::SIMDJSON_PADDING, ' ');
      ThreadParser& p = threadParser();
      p.owner = 0;
      const size_t size = event_.payload->size();
      error_code e = p.parser.iterate(std::string_view(padded_.data(), size), padded_.size()).get(p.document);
      if (e == simdjson::SUCCESS) e = validateDocument(p.document, padded_.data() + size, kMaxPayloadDepth);
      if (e == simdjson::DEPTH_ERROR) {
        payloadError_ = fmt::format("the value is nested deeper than {} levels", kMaxPayloadDepth);
      } else if (e != simdjson::SUCCESS) {
        payloadError_ = fmt::format("the value is not valid JSON ({})", simdjson::error_message(e));
      } else {
        p.owner = serial_;
      }
    }
  }
  if (!payloadError_.empty()) {
    error = payloadError_;
    return false;
  }
  return true;
}

EventView::Selected EventView::select(std::string_view pointer, std::optional<std::string>& value, std::string& error) {
  value.reset();
  if (!usable(error)) return Selected::Unusable;
  ThreadParser& p = threadParser();
  if (p.owner != serial_) {  // another view used the parser since: iterate again (validated already)
    const size_t size = event_.payload->size();
    if (error_code e = p.parser.iterate(std::string_view(padded_.data(), size), padded_.size()).get(p.document)) {
      error = fmt::format("the value is not valid JSON ({})", simdjson::error_message(e));
      return Selected::Unusable;
    }
    p.owner = serial_;
  }
  auto failed = [&](error_code e) {
    error = fmt::format("reading {}: {}", pointer, simdjson::error_message(e));
    return Selected::Unusable;
  };
  od::value v;
  error_code e = p.document.at_pointer(pointer).get(v);  // at_pointer rewinds the document first
  switch (e) {
    case simdjson::SUCCESS:
      break;
    case simdjson::NO_SUCH_FIELD:         // no such key
    case simdjson::INDEX_OUT_OF_BOUNDS:   // no such element
    case simdjson::INCORRECT_TYPE:        // a step into a string, number, ...
    case simdjson::INVALID_JSON_POINTER:  // a step into an array that is not an index, or into a scalar document
      error = fmt::format("the payload has no field {}", pointer);
      return Selected::Missing;
    default:
      return failed(e);
  }
  od::json_type type;
  if ((e = v.type().get(type))) return failed(e);
  std::string_view text;
  switch (type) {
    case od::json_type::null:
      return Selected::Value;
    case od::json_type::string:
      if ((e = v.get_string().get(text))) return failed(e);
      value = std::string(text);
      return Selected::Value;
    case od::json_type::object: {
      od::object object;
      if ((e = v.get_object().get(object)) || (e = object.raw_json().get(text))) return failed(e);
      break;
    }
    case od::json_type::array: {
      od::array array;
      if ((e = v.get_array().get(array)) || (e = array.raw_json().get(text))) return failed(e);
      break;
    }
    default:  // number, boolean: the token as written
      text = v.raw_json_token();
      break;
  }
  value = std::string(trimJson(text));
  return Selected::Value;
}

Projection::Projection(const ProjectionConfig& config)
    : name_(config.name),
      topic_(config.topic),
      eventTypes_(config.eventTypes),
      multiStatement_(!config.statements.empty()) {
  anyType_ = std::find(eventTypes_.begin(), eventTypes_.end(), "*") != eventTypes_.end();
  if (isTopicRegex(topic_)) {
    std::string error;
    topicRegex_ = TopicRegex::compile(topic_, error);
    if (!topicRegex_) throw std::invalid_argument("projection " + name_ + ": topic " + topic_ + ": " + error);
  }
  std::vector<StatementConfig> configs = config.statements;
  if (configs.empty()) configs.push_back(StatementConfig{config.sql, config.params});
  for (size_t i = 0; i < configs.size(); ++i) {
    Statement statement{configs[i].sql, {}};
    for (const std::string& text : configs[i].params) {
      std::string error;
      std::optional<ParamSource> source = parseParamSource(text, error);
      if (!source) throw std::invalid_argument(label(i) + ": parameter \"" + text + "\" " + error);
      statement.params.push_back(std::move(*source));
    }
    statements_.push_back(std::move(statement));
  }
}

std::string Projection::label(size_t statement) const {
  if (!multiStatement_) return "projection " + name_;
  return fmt::format("projection {} statement {}", name_, statement + 1);
}

bool Projection::matchesTopic(std::string_view topic) const {
  if (topicRegex_) return topicRegex_->search(topic);
  return topic == topic_;
}

bool Projection::matchesType(std::optional<std::string_view> type) const {
  if (anyType_) return true;
  return type && std::find(eventTypes_.begin(), eventTypes_.end(), *type) != eventTypes_.end();
}

bool Projection::extract(EventView& view, size_t statement, ParamValues& values, std::string& error) const {
  const SinkEvent& event = view.event();
  const std::vector<ParamSource>& params = statements_.at(statement).params;
  values.clear();
  values.reserve(params.size());
  for (const ParamSource& p : params) {
    std::optional<std::string> value;
    bool missing = false;
    std::string why;
    switch (p.kind) {
      case ParamSource::Kind::Pointer:
        switch (view.select(p.pointer, value, why)) {
          case EventView::Selected::Value:
            break;
          case EventView::Selected::Missing:
            missing = true;
            break;
          case EventView::Selected::Unusable:
            // An unusable payload is an error even for optional parameters: the event itself is broken.
            error = fmt::format("{}: parameter {}: {}", label(statement), p.text, why);
            return false;
        }
        break;
      case ParamSource::Kind::Id:
      case ParamSource::Kind::Header:
      case ParamSource::Kind::Type: {
        std::string_view name = p.kind == ParamSource::Kind::Id     ? std::string_view("id")
                                : p.kind == ParamSource::Kind::Type ? std::string_view()
                                                                    : std::string_view(p.header);
        std::optional<std::string_view> header = p.kind == ParamSource::Kind::Type ? view.type() : event.header(name);
        if (!header) {
          missing = true;
          why = p.kind == ParamSource::Kind::Type ? "the record has no event type header"
                                                  : fmt::format("the record has no header \"{}\"", name);
        } else {
          value = std::string(*header);
        }
        break;
      }
      case ParamSource::Kind::Key:
        if (event.key) value = std::string(*event.key);
        break;
      case ParamSource::Kind::Topic:
        value = std::string(event.topic);
        break;
      case ParamSource::Kind::Partition:
        value = std::to_string(event.partition);
        break;
      case ParamSource::Kind::Offset:
        value = std::to_string(event.offset);
        break;
      case ParamSource::Kind::Timestamp:
        if (event.timestampMs >= 0) value = std::to_string(event.timestampMs);
        break;
      case ParamSource::Kind::Payload:
        if (event.payload) value = std::string(*event.payload);
        break;
    }
    if (missing && !p.optional) {
      error = fmt::format("{}: parameter {}: {}", label(statement), p.text, why);
      return false;
    }
    values.push_back(std::move(value));
  }
  return true;
}

ProjectionSet::ProjectionSet(const std::vector<ProjectionConfig>& configs) {
  projections_.reserve(configs.size());
  for (const ProjectionConfig& c : configs) projections_.emplace_back(c);
}

void ProjectionSet::matching(const EventView& view, std::vector<size_t>& out) {
  out.clear();
  std::string_view topic = view.event().topic;
  auto it = byTopic_.find(topic);
  if (it == byTopic_.end()) {
    std::vector<size_t> indexes;
    for (size_t i = 0; i < projections_.size(); ++i) {
      if (projections_[i].matchesTopic(topic)) indexes.push_back(i);
    }
    it = byTopic_.emplace(std::string(topic), std::move(indexes)).first;
  }
  std::optional<std::string_view> type = view.type();
  for (size_t i : it->second) {
    if (projections_[i].matchesType(type)) out.push_back(i);
  }
}

}  // namespace outbox::sink
