#include "src/RelationCache.h"

namespace outbox {

int RelationInfo::columnIndex(std::string_view name) const {
  // A linear scan: outbox tables have a handful of columns, and comparing a few short strings beats hashing.
  for (size_t i = 0; i < columns.size(); ++i) {
    if (columns[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

const RelationInfo& RelationCache::apply(const pgoutput::Relation& relation) {
  RelationInfo& info = relations_[relation.relationId.value];
  info.relationId = relation.relationId;
  info.nspname.assign(relation.nspname);
  info.relname.assign(relation.relname);
  info.replicaIdentity = relation.replicaIdentity;
  info.columns.resize(relation.columns.size());
  for (size_t i = 0; i < relation.columns.size(); ++i) {
    const pgoutput::RelationColumn& from = relation.columns[i];
    RelationColumnInfo& to = info.columns[i];
    to.name.assign(from.name);
    to.typeOid = from.typeOid;
    to.typeModifier = from.typeModifier;
    to.flags = from.flags;
  }
  return info;
}

const RelationInfo* RelationCache::find(RelationId id) const {
  auto it = relations_.find(id.value);
  return it == relations_.end() ? nullptr : &it->second;
}

}  // namespace outbox
