#pragma once
// Decodes the bytes PostgreSQL's walsender sends into the types of PgOutputMessages.h: the CopyData payloads of
// the streaming replication protocol ('w' XLogData, 'k' keepalive), the pgoutput message inside each XLogData,
// and encodes the one message we send back ('r' standby status update).
//
// https://www.postgresql.org/docs/15/protocol-replication.html
// https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html
//
// Decoded strings and bytes are views into the input: copy what must outlive it. Malformed input (truncated,
// unknown type or column kind, negative length, missing NUL, trailing bytes) throws DecodeError; the decoder
// never reads outside the input.

#include <string>
#include <string_view>

#include "src/Lsn.h"
#include "src/PgOutputMessages.h"

namespace outbox::pgoutput {

class PgOutputDecoder {
 public:
  // Decodes one pgoutput message. Tracks Stream Start / Stream Stop: between them, Relation, Type, Insert,
  // Update, Delete, Truncate and Message carry the xid of the (sub)transaction they belong to.
  PgOutputMessage decode(std::string_view bytes);

  // True between a Stream Start and its Stream Stop.
  bool inStreamBlock() const { return inStreamBlock_; }

  // Forget the stream state, for a new replication connection (the server starts outside any stream block).
  void reset() { inStreamBlock_ = false; }

  // Decodes one CopyData payload of START_REPLICATION: XLogData or primary keepalive.
  static ReplicationMessage decodeReplication(std::string_view bytes);

  // The 'r' standby status update: the positions written, flushed and applied, our clock, and whether the
  // server should answer at once with a keepalive. Always 34 bytes.
  static std::string encodeStandbyStatusUpdate(Lsn write, Lsn flush, Lsn apply, PgTimestamp now, bool replyRequested);

 private:
  bool inStreamBlock_ = false;
};

}  // namespace outbox::pgoutput
