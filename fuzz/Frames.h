#pragma once
// How fuzz_pgoutput_router reads its input: a sequence of CopyData payloads of START_REPLICATION, each a 2-byte
// big-endian length and that many bytes. A length of 0xffff, or one past the end, takes the rest of the input (so
// a last payload can be larger than 64 KiB, as a real one can). One input is thus
// a whole replication session — Relation messages first, then the rows they describe — which is what the
// router's state needs. fuzz/PgOutputSeeds.cpp writes the seed corpus in the same format.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace outbox::fuzz {

template <typename F>
void forEachFrame(const uint8_t* data, size_t size, F&& each) {
  size_t pos = 0;
  while (pos + 2 <= size) {
    size_t length = size_t{data[pos]} << 8 | data[pos + 1];
    pos += 2;
    if (length == 0xffff || length > size - pos) length = size - pos;
    each(std::string_view(reinterpret_cast<const char*>(data + pos), length));
    pos += length;
  }
}

// `payload` must be shorter than 0xffff bytes, or the last.
inline void appendFrame(std::string& out, std::string_view payload) {
  if (payload.size() >= 0xffff) {
    out += "\xff\xff";
    out += payload;
    return;
  }
  out += static_cast<char>(payload.size() >> 8 & 0xff);
  out += static_cast<char>(payload.size() & 0xff);
  out += payload;
}

}  // namespace outbox::fuzz
