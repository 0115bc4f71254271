// Writes the seed corpus of fuzz_pgoutput_router into the directory given as argument: the messages captured
// from a real PostgreSQL server for the decoder's unit tests (tests/support/CapturedPgOutput.h), each wrapped in
// XLogData as the walsender sends it and framed as Frames.h says. fuzz/run runs it before each fuzzing run, so the
// seeds cannot drift from the tests' bytes.
//
// Seeds: each captured slot's whole session; each transaction of the protocol-1 session on its own, after the
// Relation messages sent before it (the router needs them); the captured replication payloads (XLogData,
// keepalives); and a transactional Message whose content is an outbox event in JSON (the captured messages
// carry plain text, which the router dead-letters). Also the whole capture of each PostgreSQL version 13-18 in
// tests/data/pgoutput/ (the protocol version the relay picks for it; PgOutputVersionsTest decodes the same files).

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "Frames.h"
#include "support/CapturedPgOutput.h"

namespace {

using namespace outbox::captured;
using outbox::fuzz::appendFrame;

void putUint64(std::string& out, uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) out += static_cast<char>(value >> shift & 0xff);
}

uint64_t parseLsn(std::string_view text) {
  size_t slash = text.find('/');
  return std::stoull(std::string(text.substr(0, slash)), nullptr, 16) << 32 |
         std::stoull(std::string(text.substr(slash + 1)), nullptr, 16);
}

// 'w', WAL start, WAL end, send time, then the pgoutput message.
std::string xlogData(const Captured& captured) {
  std::string out = "w";
  putUint64(out, parseLsn(captured.lsn));
  putUint64(out, parseLsn(captured.lsn));
  putUint64(out, 0x0003042dab84a906);  // a send time from the captured kXLogDataBegin
  return out + fromHex(captured.hex);
}

template <size_t N>
const Captured& labelled(const Captured (&set)[N], std::string_view label) {
  for (const Captured& captured : set) {
    if (captured.label == label) return captured;
  }
  std::fprintf(stderr, "no captured message labelled %.*s\n", static_cast<int>(label.size()), label.data());
  std::exit(1);
}

bool startsWith(const Captured& captured, std::string_view hex) {
  return std::string_view(captured.hex).starts_with(hex);
}

// The captured "message transactional", its content replaced by `content`: 'M', flags, LSN, prefix, length.
std::string messageWithContent(std::string_view content) {
  std::string message = fromHex(labelled(kProto1, "message transactional").hex);
  size_t lengthAt = message.find('\0', 10) + 1;  // after the NUL of the prefix "outbox"
  message.resize(lengthAt);
  for (int shift = 24; shift >= 0; shift -= 8) message += static_cast<char>(content.size() >> shift & 0xff);
  message += content;
  return message;
}

bool write(const std::string& dir, const std::string& name, const std::string& bytes) {
  std::string path = dir + "/" + name;
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr || std::fwrite(bytes.data(), 1, bytes.size(), file) != bytes.size() || std::fclose(file) != 0) {
    std::perror(path.c_str());
    return false;
  }
  return true;
}

// tests/data/pgoutput/pg<major>.txt as a session: its "lsn hex" lines, each wrapped in XLogData. Empty if unreadable.
std::string versionSession(int major) {
  std::ifstream in(std::string(OUTBOX_SOURCE_DIR) + "/tests/data/pgoutput/pg" + std::to_string(major) + ".txt");
  std::string out, line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string lsn, hex;
    fields >> lsn >> hex;
    if (lsn.find('/') == std::string::npos) continue;  // comments and header lines
    Captured captured{"", lsn.c_str(), hex.c_str()};
    appendFrame(out, xlogData(captured));
  }
  return out;
}

template <size_t N>
std::string session(const Captured (&set)[N]) {
  std::string out;
  for (const Captured& captured : set) appendFrame(out, xlogData(captured));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIRECTORY\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  bool ok = write(dir, "session-proto1", session(kProto1)) &&
            write(dir, "session-proto2-streaming", session(kProto2Streaming)) &&
            write(dir, "session-proto3-two-phase", session(kProto3TwoPhase));

  for (int major = 13; major <= 18; ++major) {
    std::string captured = versionSession(major);
    if (captured.empty()) {
      std::fprintf(stderr, "no messages read from tests/data/pgoutput/pg%d.txt\n", major);
      return 1;
    }
    ok = ok && write(dir, "session-pg" + std::to_string(major), captured);
  }

  // Each protocol-1 transaction, after every Relation sent before it.
  std::string relations, transaction;
  int count = 0;
  for (const Captured& captured : kProto1) {
    std::string frame = xlogData(captured);
    if (startsWith(captured, "52")) {  // 'R'
      appendFrame(relations, frame);
      continue;
    }
    appendFrame(transaction, frame);
    // A transaction ends with Commit ('C'); a non-transactional Message ('M', flags 0) stands alone.
    if (!startsWith(captured, "43") && !startsWith(captured, "4d00")) continue;
    ok = ok && write(dir, "transaction-proto1-" + std::to_string(++count), relations + transaction);
    transaction.clear();
  }
  std::string binary = relations;
  appendFrame(binary, xlogData(kProto1BinaryInsert));
  ok = ok && write(dir, "insert-binary", binary);

  std::string replication;
  for (const char* hex : {kXLogDataBegin, kXLogDataRelation, kKeepalive, kKeepaliveReplyRequested}) {
    appendFrame(replication, fromHex(hex));
  }
  ok = ok && write(dir, "replication-payloads", replication);

  std::string event;
  appendFrame(event, xlogData(labelled(kProto1, "begin message")));
  std::string frame = xlogData(labelled(kProto1, "message transactional"));
  frame.resize(25);  // the XLogData header
  appendFrame(event,
              frame + messageWithContent(R"({"id": "6f1c5a3e", "aggregatetype": "order", "aggregateid": "o-1", )"
                                         R"("type": "OrderCreated", "payload": {"total": 42, "items": [{"sku": "a"}], )"
                                         R"("note": null}})"));
  appendFrame(event, xlogData(labelled(kProto1, "commit message")));
  ok = ok && write(dir, "message-json", event);
  return ok ? 0 : 1;
}
