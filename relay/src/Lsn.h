#pragma once
// Value types for PostgreSQL protocol facts, so a WAL position is never confused with a byte count or an xid.

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace outbox {

// A WAL position (XLogRecPtr). PostgreSQL prints it as two 32-bit hex halves, "16/B374D848".
class Lsn {
 public:
  constexpr Lsn() = default;
  constexpr explicit Lsn(uint64_t value) : value_(value) {}

  // Parses "X/X" (hex, each half at most 8 digits). nullopt for anything else.
  static std::optional<Lsn> parse(std::string_view text);
  std::string toString() const;

  constexpr uint64_t value() const { return value_; }

  constexpr auto operator<=>(const Lsn&) const = default;

  // Bytes of WAL from `older` to this position; 0 when `older` is ahead (lag never goes negative).
  constexpr uint64_t bytesSince(Lsn older) const { return value_ > older.value_ ? value_ - older.value_ : 0; }

 private:
  uint64_t value_ = 0;
};

// A transaction id as pgoutput sends it (32 bits).
struct Xid {
  uint32_t value = 0;
  constexpr auto operator<=>(const Xid&) const = default;
};

// A relation's OID, the key of pgoutput Relation messages.
struct RelationId {
  uint32_t value = 0;
  constexpr auto operator<=>(const RelationId&) const = default;
};

}  // namespace outbox
