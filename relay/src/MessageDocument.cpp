#include "src/MessageDocument.h"

#include <algorithm>
#include <stdexcept>

namespace outbox {

namespace {
namespace od = simdjson::ondemand;
using simdjson::error_code;

bool isJsonSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// simdjson hands back a value's text up to the next token, so whitespace after the value is included.
std::string_view trimTrailingSpace(std::string_view text) {
  while (!text.empty() && isJsonSpace(text.back())) text.remove_suffix(1);
  return text;
}

bool isDigit(char c) { return c >= '0' && c <= '9'; }

// RFC 8259 section 6: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?. Checked on the text instead of converting
// it, so numbers beyond double or 64-bit range (valid JSON) pass and are forwarded as written.
bool isJsonNumber(std::string_view s) {
  size_t i = 0, n = s.size();
  if (i < n && s[i] == '-') ++i;
  if (i >= n) return false;
  if (s[i] == '0') {
    ++i;
  } else if (s[i] >= '1' && s[i] <= '9') {
    while (i < n && isDigit(s[i])) ++i;
  } else {
    return false;
  }
  auto digits = [&] {
    size_t start = i;
    while (i < n && isDigit(s[i])) ++i;
    return i > start;
  };
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
}  // namespace

MessageDocument::MessageDocument(std::vector<std::string> fieldNames, size_t maxDepth)
    : names_(std::move(fieldNames)), fields_(names_.size()), maxDepth_(maxDepth) {
  // The capacity grows with the largest document seen (iterate() reallocates, keeping max_depth). simdjson counts
  // the document itself as a level and is inside a container one level deeper than we count: with its development
  // checks (debug builds) it asserts depth < max_depth, so it gets 2 levels of room above the bound counted here.
  if (auto error = parser_.allocate(4096, maxDepth_ + 2)) {
    throw std::runtime_error(std::string("simdjson: ") + simdjson::error_message(error));
  }
}

size_t MessageDocument::indexOf(std::string_view name) const {
  return static_cast<size_t>(std::find(names_.begin(), names_.end(), name) - names_.begin());
}

error_code MessageDocument::validate(od::value value, size_t depth) {
  od::json_type type;
  if (auto error = value.type().get(type)) return error;
  switch (type) {
    case od::json_type::array: {
      if (depth >= maxDepth_) {
        tooDeep_ = true;
        return simdjson::DEPTH_ERROR;
      }
      od::array array;
      if (auto error = value.get_array().get(array)) return error;
      for (auto element : array) {
        od::value child;
        if (auto error = element.get(child)) return error;
        if (auto error = validate(child, depth + 1)) return error;
      }
      return simdjson::SUCCESS;
    }
    case od::json_type::object: {
      if (depth >= maxDepth_) {
        tooDeep_ = true;
        return simdjson::DEPTH_ERROR;
      }
      od::object object;
      if (auto error = value.get_object().get(object)) return error;
      for (auto member : object) {
        od::field field;
        if (auto error = std::move(member).get(field)) return error;
        std::string_view key;
        if (auto error = field.unescaped_key().get(key)) return error;
        if (auto error = validate(field.value(), depth + 1)) return error;
      }
      return simdjson::SUCCESS;
    }
    case od::json_type::number:
      if (!isJsonNumber(trimTrailingSpace(value.raw_json_token()))) {
        badNumber_ = true;
        return simdjson::NUMBER_ERROR;
      }
      return simdjson::SUCCESS;
    case od::json_type::string: {
      std::string_view text;
      return value.get_string().get(text);  // checks every escape
    }
    case od::json_type::boolean: {
      bool flag;
      return value.get_bool().get(flag);
    }
    case od::json_type::null: {
      bool isNull = false;
      if (auto error = value.is_null().get(isNull)) return error;
      return isNull ? simdjson::SUCCESS : simdjson::N_ATOM_ERROR;
    }
  }
  return simdjson::INCORRECT_TYPE;
}

std::optional<std::string> MessageDocument::extract() {
  od::document doc;
  od::object object;
  simdjson::padded_string_view padded(buffer_.data(), buffer_.size() - simdjson::SIMDJSON_PADDING, buffer_.size());
  if (parser_.iterate(padded).get(doc) || doc.get_object().get(object)) {
    return "content could not be read again";  // it was validated just before: not expected
  }
  std::vector<bool> seen(names_.size(), false);
  for (auto member : object) {
    od::field field;
    std::string_view key;
    if (std::move(member).get(field) || field.unescaped_key().get(key)) return "content could not be read again";
    auto it = std::find(names_.begin(), names_.end(), key);
    if (it == names_.end()) continue;  // not read: skipped by the iteration
    auto index = static_cast<size_t>(it - names_.begin());
    if (seen[index]) return "field \"" + names_[index] + "\" appears more than once";
    seen[index] = true;
    Field& out = fields_[index];
    od::value value = field.value();
    od::json_type type;
    if (value.type().get(type)) return "content could not be read again";
    error_code error = simdjson::SUCCESS;
    switch (type) {
      case od::json_type::null:
        continue;  // as if absent
      case od::json_type::string:
        out.isString = true;
        out.raw = trimTrailingSpace(value.raw_json_token());
        error = value.get_string().get(out.text);
        break;
      case od::json_type::array: {
        od::array array;
        error = value.get_array().get(array);
        if (!error) error = array.raw_json().get(out.raw);
        break;
      }
      case od::json_type::object: {
        od::object inner;
        error = value.get_object().get(inner);
        if (!error) error = inner.raw_json().get(out.raw);
        break;
      }
      case od::json_type::number:
      case od::json_type::boolean:
        out.raw = value.raw_json_token();
        break;
    }
    if (error) return "content could not be read again";
    out.raw = trimTrailingSpace(out.raw);
    if (!out.isString) out.text = out.raw;
    out.present = true;
  }
  return std::nullopt;
}

std::optional<std::string> MessageDocument::parse(std::string_view content) {
  std::fill(fields_.begin(), fields_.end(), Field{});
  tooDeep_ = badNumber_ = false;
  // simdjson reads up to SIMDJSON_PADDING bytes past the end; the WAL buffer gives no such promise, so copy.
  buffer_.assign(content);
  buffer_.append(simdjson::SIMDJSON_PADDING, ' ');
  simdjson::padded_string_view padded(buffer_.data(), content.size(), buffer_.size());

  error_code error;
  {
    od::document doc;
    error = parser_.iterate(padded).get(doc);
    od::json_type type{};
    if (!error) error = doc.type().get(type);
    if (!error && type != od::json_type::object) return std::string("content is not a JSON object");
    if (!error) {
      // The document as a value: validate() walks it like any nested object (level 1).
      od::object object;
      error = doc.get_object().get(object);
      if (!error) {
        for (auto member : object) {
          od::field field;
          std::string_view key;
          if ((error = std::move(member).get(field)) || (error = field.unescaped_key().get(key))) break;
          if ((error = validate(field.value(), 1))) break;
        }
      }
      // Anything after the object (`{} {}`): the iterator is not at the end of the document.
      const char* rest = nullptr;
      if (!error && doc.current_location().get(rest) == simdjson::SUCCESS) error = simdjson::TRAILING_CONTENT;
    }
  }
  if (tooDeep_) return "content is nested more than " + std::to_string(maxDepth_) + " levels deep";
  if (badNumber_) return std::string("content is not valid JSON: a number is malformed");
  if (error == simdjson::UTF8_ERROR) return std::string("content is not valid UTF-8");
  if (error == simdjson::EMPTY) return std::string("content is empty");
  if (error) return std::string("content is not valid JSON: ") + simdjson::error_message(error);
  return extract();
}

}  // namespace outbox
