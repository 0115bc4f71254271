#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <variant>

#include "src/PgOutputDecoder.h"
#include "src/RelationCache.h"

namespace {

using namespace outbox;
using namespace outbox::pgoutput;

// Relation messages for `outbox` captured from PostgreSQL 15 (see PgOutputDecoderTest.cpp for how): as created,
// after ALTER TABLE outbox ADD COLUMN headers text, and after ALTER TABLE outbox DROP COLUMN note.
constexpr const char* kRelationOutbox =
    "52000040067075626c6963006f7574626f78006400050169640000000014ffffffff00746f7069630000000019ffffffff00"
    "7061796c6f61640000000edaffffffff00626c6f620000000011ffffffff006e6f74650000000019ffffffff";
constexpr const char* kRelationAfterAddColumn =
    "52000040067075626c6963006f7574626f78006400060169640000000014ffffffff00746f7069630000000019ffffffff00"
    "7061796c6f61640000000edaffffffff00626c6f620000000011ffffffff006e6f74650000000019ffffffff006865616465"
    "72730000000019ffffffff";
constexpr const char* kRelationAfterDropColumn =
    "52000040067075626c6963006f7574626f78006400050169640000000014ffffffff00746f7069630000000019ffffffff00"
    "7061796c6f61640000000edaffffffff00626c6f620000000011ffffffff00686561646572730000000019ffffffff";
constexpr RelationId kOutbox{16390};

std::string fromHex(std::string_view hex) {
  std::string bytes(hex.size() / 2, '\0');
  for (size_t i = 0; i < bytes.size(); ++i)
    bytes[i] = static_cast<char>(std::stoi(std::string(hex.substr(2 * i, 2)), nullptr, 16));
  return bytes;
}

// Decodes a captured Relation message from a buffer that dies right after, as a replication buffer does, and
// applies it: whatever the cache keeps must be its own copy.
const RelationInfo& applyCaptured(RelationCache& cache, const char* hex) {
  auto buffer = std::make_unique<std::string>(fromHex(hex));
  PgOutputDecoder decoder;
  PgOutputMessage message = decoder.decode(*buffer);
  const RelationInfo& info = cache.apply(std::get<Relation>(message));
  buffer->assign(buffer->size(), '#');
  buffer.reset();
  return info;
}

std::vector<std::string> columnNames(const RelationInfo& info) {
  std::vector<std::string> names;
  for (const auto& column : info.columns) names.push_back(column.name);
  return names;
}

TEST(RelationCache, FindsWhatARelationMessageDescribed) {
  RelationCache cache;
  EXPECT_EQ(cache.find(kOutbox), nullptr);
  EXPECT_EQ(cache.size(), 0u);

  const RelationInfo& applied = applyCaptured(cache, kRelationOutbox);
  const RelationInfo* info = cache.find(kOutbox);
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info, &applied);
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(info->relationId, kOutbox);
  EXPECT_EQ(info->nspname, "public");
  EXPECT_EQ(info->relname, "outbox");
  EXPECT_EQ(info->replicaIdentity, 'd');
  ASSERT_EQ(info->columns.size(), 5u);
  EXPECT_EQ(columnNames(*info), (std::vector<std::string>{"id", "topic", "payload", "blob", "note"}));
  EXPECT_TRUE(info->columns[0].isKey());
  EXPECT_EQ(info->columns[0].flags, 1);
  EXPECT_EQ(info->columns[0].typeOid, 20u);    // int8
  EXPECT_EQ(info->columns[2].typeOid, 3802u);  // jsonb
  EXPECT_EQ(info->columns[2].typeModifier, -1);
  EXPECT_FALSE(info->columns[1].isKey());

  EXPECT_EQ(cache.find(RelationId{16391}), nullptr);
}

TEST(RelationCache, ColumnIndex) {
  RelationCache cache;
  const RelationInfo& info = applyCaptured(cache, kRelationOutbox);
  EXPECT_EQ(info.columnIndex("id"), 0);
  EXPECT_EQ(info.columnIndex("topic"), 1);
  EXPECT_EQ(info.columnIndex("payload"), 2);
  EXPECT_EQ(info.columnIndex("note"), 4);
  EXPECT_EQ(info.columnIndex("headers"), -1);
  EXPECT_EQ(info.columnIndex(""), -1);
  EXPECT_EQ(info.columnIndex("Topic"), -1) << "names are compared exactly, as PostgreSQL sends them";
  EXPECT_EQ(info.columnIndex("topi"), -1);
}

TEST(RelationCache, AlterTableAddColumnReplacesTheEntry) {
  RelationCache cache;
  const RelationInfo* before = &applyCaptured(cache, kRelationOutbox);
  applyCaptured(cache, kRelationAfterAddColumn);
  const RelationInfo* after = cache.find(kOutbox);
  ASSERT_NE(after, nullptr);
  EXPECT_EQ(after, before) << "replaced in place: pointers to the entry stay valid";
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(columnNames(*after), (std::vector<std::string>{"id", "topic", "payload", "blob", "note", "headers"}));
  EXPECT_EQ(after->columnIndex("headers"), 5);
  EXPECT_EQ(after->columns[5].typeOid, 25u);  // text
}

TEST(RelationCache, AlterTableDropColumnReplacesTheEntry) {
  RelationCache cache;
  applyCaptured(cache, kRelationOutbox);
  applyCaptured(cache, kRelationAfterAddColumn);
  applyCaptured(cache, kRelationAfterDropColumn);
  const RelationInfo* info = cache.find(kOutbox);
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(columnNames(*info), (std::vector<std::string>{"id", "topic", "payload", "blob", "headers"}));
  EXPECT_EQ(info->columnIndex("note"), -1);
  EXPECT_EQ(info->columnIndex("headers"), 4) << "columns after the dropped one move up";
}

TEST(RelationCache, ReplacementTakesEveryField) {
  RelationCache cache;
  std::string names("app\0orders", 10);  // the views die with this buffer, not with the cache entry
  Relation relation;
  relation.relationId = RelationId{1};
  relation.nspname = std::string_view(names).substr(0, 3);
  relation.relname = std::string_view(names).substr(4, 6);
  relation.replicaIdentity = 'f';
  relation.columns = {{1, "id", 23, -1}, {1, "total", 1700, 655366}};
  cache.apply(relation);
  names.assign(names.size(), '#');
  EXPECT_EQ(cache.find(RelationId{1})->nspname, "app");
  EXPECT_EQ(cache.find(RelationId{1})->relname, "orders");
  EXPECT_EQ(cache.find(RelationId{1})->columns[1].typeModifier, 655366);  // numeric(10,2)

  Relation renamed;
  renamed.relationId = RelationId{1};
  renamed.nspname = "archive";
  renamed.relname = "old_orders";
  renamed.replicaIdentity = 'i';
  renamed.columns = {{0, "id", 20, -1}};
  cache.apply(renamed);

  const RelationInfo* info = cache.find(RelationId{1});
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->nspname, "archive");
  EXPECT_EQ(info->relname, "old_orders");
  EXPECT_EQ(info->replicaIdentity, 'i');
  ASSERT_EQ(info->columns.size(), 1u);
  EXPECT_EQ(info->columns[0].name, "id");
  EXPECT_EQ(info->columns[0].typeOid, 20u);
  EXPECT_EQ(info->columns[0].typeModifier, -1);
  EXPECT_FALSE(info->columns[0].isKey());
  EXPECT_EQ(info->columnIndex("total"), -1);
}

TEST(RelationCache, KeepsRelationsApartAndClears) {
  RelationCache cache;
  Relation a;
  a.relationId = RelationId{10};
  a.relname = "a";
  a.columns = {{1, "id", 23, -1}};
  Relation b;
  b.relationId = RelationId{11};
  b.relname = "b";
  b.columns = {{0, "x", 25, -1}, {0, "y", 25, -1}};
  cache.apply(a);
  cache.apply(b);
  EXPECT_EQ(cache.size(), 2u);
  ASSERT_NE(cache.find(RelationId{10}), nullptr);
  ASSERT_NE(cache.find(RelationId{11}), nullptr);
  EXPECT_EQ(cache.find(RelationId{10})->relname, "a");
  EXPECT_EQ(cache.find(RelationId{11})->columnIndex("y"), 1);
  EXPECT_EQ(cache.find(RelationId{10})->columnIndex("y"), -1);

  Relation empty;
  empty.relationId = RelationId{12};
  EXPECT_TRUE(cache.apply(empty).columns.empty());
  EXPECT_EQ(cache.find(RelationId{12})->columnIndex("id"), -1);

  cache.clear();
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.find(RelationId{10}), nullptr);
}

}  // namespace
