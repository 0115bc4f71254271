#pragma once
// What the decoder's row messages need to be understood: the relations pgoutput described, by relation id.
//
// pgoutput sends a Relation message before the first row of a relation on a connection, and again whenever the
// relation's definition changed (ALTER TABLE adding or dropping a column, a rename, a new replica identity)
// before the next row. So the latest Relation message for an id is the schema of the rows that follow it, and a
// new one replaces the entry. The names are copied: the decoded message only views the replication buffer.
// https://www.postgresql.org/docs/15/protocol-logical-replication.html

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "src/Lsn.h"
#include "src/PgOutputMessages.h"

namespace outbox {

struct RelationColumnInfo {
  std::string name;
  uint32_t typeOid = 0;
  int32_t typeModifier = -1;
  uint8_t flags = 0;  // 1 = part of the replica identity key
  bool isKey() const { return (flags & 1) != 0; }
};

struct RelationInfo {
  RelationId relationId;
  std::string nspname;
  std::string relname;
  char replicaIdentity = 'd';               // pg_class.relreplident: d(efault), n(othing), f(ull), i(ndex)
  std::vector<RelationColumnInfo> columns;  // in the order of the TupleData columns

  // The position of the column named `name` in TupleData, or -1 when the relation has no such column.
  int columnIndex(std::string_view name) const;
};

class RelationCache {
 public:
  // Adds the relation, or replaces what was known about it. Returns the entry.
  const RelationInfo& apply(const pgoutput::Relation& relation);

  // nullptr when no Relation message described `id` yet. The pointer stays valid until clear() or the cache is
  // destroyed; a later apply() for the same id updates the entry it points to.
  const RelationInfo* find(RelationId id) const;

  size_t size() const { return relations_.size(); }

  // A new replication connection starts without any Relation message sent: forget everything.
  void clear() { relations_.clear(); }

 private:
  std::unordered_map<uint32_t, RelationInfo> relations_;  // node-based: entries never move
};

}  // namespace outbox
