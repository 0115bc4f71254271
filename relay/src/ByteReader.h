#pragma once
// A bounds-checked big-endian reader over one protocol message (a pgoutput message or a replication CopyData).
//
// Every read checks what remains, in release builds too: the input comes from the network, and a reader that
// trusts it reads out of bounds the first time a server, a proxy or a bug hands it something short. A failed read
// throws DecodeError naming the message, the field and the offset; building that text is the only allocation,
// and it happens only on the error path.
//
// Integers are in network byte order (https://www.postgresql.org/docs/15/protocol-message-types.html); strings
// are NUL-terminated and returned as views into the input, without the NUL.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "src/Lsn.h"
#include "src/PgOutputMessages.h"

namespace outbox::pgoutput {

// What is being read, for the error message: "relation id", or with an index "column 3 length".
struct Field {
  constexpr Field(const char* name) : name(name) {}  // NOLINT: implicit from a literal on purpose
  constexpr Field(const char* name, int index, const char* detail) : name(name), index(index), detail(detail) {}

  const char* name;
  int index = -1;  // 1-based, like PostgreSQL's attribute numbers; -1 when the field is not one of many
  const char* detail = nullptr;
};

class ByteReader {
 public:
  // `context` prefixes every error message ("pgoutput Insert"); it must outlive the reader (use literals).
  ByteReader(std::string_view bytes, const char* context) noexcept : bytes_(bytes), context_(context) {}

  // Once the message type is known, errors name it.
  void setContext(const char* context) noexcept { context_ = context; }

  size_t offset() const noexcept { return pos_; }
  size_t remaining() const noexcept { return bytes_.size() - pos_; }

  uint8_t readUint8(Field field) {
    need(1, field);
    return static_cast<uint8_t>(bytes_[pos_++]);
  }
  char readChar(Field field) { return static_cast<char>(readUint8(field)); }
  int16_t readInt16(Field field) { return static_cast<int16_t>(readBigEndian<uint16_t>(field)); }
  uint32_t readUint32(Field field) { return readBigEndian<uint32_t>(field); }
  int32_t readInt32(Field field) { return static_cast<int32_t>(readBigEndian<uint32_t>(field)); }
  uint64_t readUint64(Field field) { return readBigEndian<uint64_t>(field); }
  int64_t readInt64(Field field) { return static_cast<int64_t>(readBigEndian<uint64_t>(field)); }

  Lsn readLsn(Field field) { return Lsn(readUint64(field)); }
  Xid readXid(Field field) { return Xid{readUint32(field)}; }
  RelationId readRelationId(Field field) { return RelationId{readUint32(field)}; }
  PgTimestamp readTimestamp(Field field) { return PgTimestamp{readInt64(field)}; }

  // A NUL-terminated string; the view excludes the NUL, which is consumed.
  std::string_view readCString(Field field) {
    if (remaining() == 0) fail("truncated", field);  // also keeps a null data() away from memchr
    const char* begin = bytes_.data() + pos_;
    const void* nul = std::memchr(begin, '\0', remaining());
    if (nul == nullptr) fail("missing NUL terminator", field);
    size_t length = static_cast<size_t>(static_cast<const char*>(nul) - begin);
    pos_ += length + 1;
    return {begin, length};
  }

  std::string_view readBytes(size_t count, Field field) {
    need(count, field);
    std::string_view view = bytes_.substr(pos_, count);
    pos_ += count;
    return view;
  }

  // An Int32 length followed by that many bytes (TupleData column values, logical message content).
  std::string_view readLengthPrefixed(Field lengthField, Field dataField) {
    size_t lengthOffset = pos_;
    int32_t length = readInt32(lengthField);
    if (length < 0) failAt(lengthOffset, "negative length " + std::to_string(length), lengthField);
    return readBytes(static_cast<size_t>(length), dataField);
  }

  // A count read at `countOffset` announced `count` items of at least `minItemSize` bytes each; refuse it before
  // reserving memory for them when what remains cannot hold that many.
  void checkCount(int64_t count, size_t minItemSize, size_t countOffset, Field countField) const {
    if (count < 0) failAt(countOffset, "negative count " + std::to_string(count), countField);
    if (static_cast<uint64_t>(count) * minItemSize > remaining()) {
      failAt(
          countOffset,
          "count " + std::to_string(count) + " cannot fit in the " + std::to_string(remaining()) + " bytes that remain",
          countField);
    }
  }

  // A complete message must end exactly here.
  void expectEnd() const {
    if (pos_ != bytes_.size()) {
      throw DecodeError(std::string(context_) + ": " + std::to_string(remaining()) +
                        " trailing bytes after a complete message at offset " + std::to_string(pos_) + " (message is " +
                        std::to_string(bytes_.size()) + " bytes)");
    }
  }

  // "<context>: <problem> reading <field> at offset <offset> (message is <size> bytes)", at the current offset.
  [[noreturn]] void fail(const std::string& problem, Field field) const { failAt(pos_, problem, field); }

  [[noreturn, gnu::cold, gnu::noinline]] void failAt(size_t offset, const std::string& problem, Field field) const {
    std::string text(context_);
    text += ": ";
    text += problem;
    text += " reading ";
    text += field.name;
    if (field.index >= 0) {
      text += ' ';
      text += std::to_string(field.index);
    }
    if (field.detail != nullptr) {
      text += ' ';
      text += field.detail;
    }
    text += " at offset ";
    text += std::to_string(offset);
    text += " (message is ";
    text += std::to_string(bytes_.size());
    text += " bytes)";
    throw DecodeError(text);
  }

 private:
  void need(size_t count, Field field) const {
    if (count > remaining()) fail("truncated", field);
  }

  template <typename T>
  T readBigEndian(Field field) {
    need(sizeof(T), field);
    const auto* p = reinterpret_cast<const unsigned char*>(bytes_.data() + pos_);
    T value = 0;
    for (size_t i = 0; i < sizeof(T); ++i) value = static_cast<T>((value << 8) | p[i]);  // compiles to a bswap
    pos_ += sizeof(T);
    return value;
  }

  std::string_view bytes_;
  size_t pos_ = 0;
  const char* context_;
};

}  // namespace outbox::pgoutput
