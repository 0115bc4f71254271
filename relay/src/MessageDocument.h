#pragma once
// The JSON document of an outbox logical message (pg_logical_emit_message): any role allowed to call that function
// writes these bytes, so they are untrusted. The whole document is validated (JSON grammar, UTF-8, a nesting
// bound, a size bound the caller checks first), then the top-level fields the router reads are taken, each as
// the exact bytes written: a payload is forwarded as it was written, never re-rendered (key order, number
// spelling, escapes and whitespace inside it are kept).
//
// simdjson's On-Demand API (https://simdjson.github.io/simdjson/md_doc_ondemand.html): stage 1 indexes and
// validates UTF-8 iteratively; the walk below is recursive but bounded by `maxDepth`, so a document nested
// 100,000 levels deep is an error, not a stack overflow. (On-Demand itself enforces the parser's max_depth only
// when built with SIMDJSON_DEVELOPMENT_CHECKS, so the bound is counted here; it is set on the parser as well.)

#include <simdjson.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace outbox {

class MessageDocument {
 public:
  // Nesting levels a document may have, the top-level object being level 1. PostgreSQL's own json type has no
  // fixed limit (only check_stack_depth()); 512 is far beyond any event payload and keeps the walk's stack small.
  static constexpr size_t kMaxDepth = 512;

  // `fieldNames`: the top-level fields the caller reads; field(i) answers for fieldNames[i].
  explicit MessageDocument(std::vector<std::string> fieldNames, size_t maxDepth = kMaxDepth);

  // One top-level field of the last document parsed. Views valid until the next parse().
  struct Field {
    bool present = false;   // there and not null
    bool isString = false;  // a JSON string
    // A string's unescaped value; anything else as its JSON text as written (jsonText semantics for keys,
    // headers and topic parts).
    std::string_view text;
    std::string_view raw;  // the value's JSON text exactly as written (a string with its quotes and escapes)
  };

  // Validates `content` and takes the fields. Returns nullopt when it is a valid JSON object within the bounds,
  // else what is wrong with it (for the dead-letter "error" header).
  std::optional<std::string> parse(std::string_view content);
  const Field& field(size_t index) const { return fields_[index]; }
  // The index of one of `fieldNames` (its first occurrence); fieldNames.size() when it is not one.
  size_t indexOf(std::string_view name) const;

 private:
  simdjson::error_code validate(simdjson::ondemand::value value, size_t depth);
  std::optional<std::string> extract();

  std::vector<std::string> names_;
  std::vector<Field> fields_;
  size_t maxDepth_;
  bool tooDeep_ = false;
  bool badNumber_ = false;
  simdjson::ondemand::parser parser_;
  std::string buffer_;  // the content plus SIMDJSON_PADDING bytes; fields' views point into it or into parser_
};

}  // namespace outbox
