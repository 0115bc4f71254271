#include "src/Projection.h"

#include <fmt/format.h>
#include <regex.h>

#include <algorithm>
#include <stdexcept>

#include "common/JsonText.h"

namespace outbox::sink {

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
    try {
      source.pointer = nlohmann::json::json_pointer(std::string(rest));
    } catch (const nlohmann::json::exception& e) {
      error = fmt::format("is not a valid JSON pointer: {}", e.what());
      return std::nullopt;
    }
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

const nlohmann::json* EventView::json(std::string& error) {
  if (!parsed_) {
    parsed_ = true;
    if (!event_.payload) {
      jsonError_ = "the record has no value (a tombstone)";
    } else {
      json_ = nlohmann::json::parse(event_.payload->begin(), event_.payload->end(), nullptr, false);
      if (json_->is_discarded()) {
        json_.reset();
        jsonError_ = "the value is not valid JSON";
      }
    }
  }
  if (!json_) {
    error = jsonError_;
    return nullptr;
  }
  return &*json_;
}

Projection::Projection(const ProjectionConfig& config)
    : name_(config.name), topic_(config.topic), eventTypes_(config.eventTypes), sql_(config.sql) {
  anyType_ = std::find(eventTypes_.begin(), eventTypes_.end(), "*") != eventTypes_.end();
  if (isTopicRegex(topic_)) {
    std::string error;
    topicRegex_ = TopicRegex::compile(topic_, error);
    if (!topicRegex_) throw std::invalid_argument("projection " + name_ + ": topic " + topic_ + ": " + error);
  }
  for (const std::string& text : config.params) {
    std::string error;
    std::optional<ParamSource> source = parseParamSource(text, error);
    if (!source) throw std::invalid_argument("projection " + name_ + ": parameter \"" + text + "\" " + error);
    params_.push_back(std::move(*source));
  }
}

bool Projection::matchesTopic(std::string_view topic) const {
  if (topicRegex_) return topicRegex_->search(topic);
  return topic == topic_;
}

bool Projection::matchesType(std::optional<std::string_view> type) const {
  if (anyType_) return true;
  return type && std::find(eventTypes_.begin(), eventTypes_.end(), *type) != eventTypes_.end();
}

bool Projection::extract(EventView& view, ParamValues& values, std::string& error) const {
  const SinkEvent& event = view.event();
  values.clear();
  values.reserve(params_.size());
  for (const ParamSource& p : params_) {
    std::optional<std::string> value;
    bool missing = false;
    std::string why;
    switch (p.kind) {
      case ParamSource::Kind::Pointer: {
        const nlohmann::json* json = view.json(why);
        if (json == nullptr) {
          // An unusable payload is an error even for optional parameters: the event itself is broken.
          error = fmt::format("projection {}: parameter {}: {}", name_, p.text, why);
          return false;
        }
        if (!json->contains(p.pointer)) {
          missing = true;
          why = "the payload has no field " + p.pointer.to_string();
        } else {
          const nlohmann::json& v = (*json)[p.pointer];
          if (!v.is_null()) value = jsonText(v);
        }
        break;
      }
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
      error = fmt::format("projection {}: parameter {}: {}", name_, p.text, why);
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
