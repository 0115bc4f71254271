// SlotHealth: the lag probe's query per server version, and the slot row it reads turned into slot health.

#include <gtest/gtest.h>

#include <string>

#include "src/ServerWalProbe.h"

namespace {

using namespace outbox;
using Row = std::map<std::string, std::optional<std::string>>;

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Each version asks only for the columns it has: a column it lacks would fail the whole query (and the lag metric
// with it).
TEST(SlotHealth, QueryNamesTheColumnsEachServerVersionHas) {
  for (int version : {130016, 150010, 160006, 170002, 180000}) {
    SCOPED_TRACE(version);
    std::string q = SlotHealth::query(version);
    EXPECT_TRUE(has(q, "pg_catalog.pg_current_wal_lsn()"));
    EXPECT_TRUE(has(q, "LEFT JOIN pg_catalog.pg_replication_slots")) << "no row when the slot is gone: " << q;
    EXPECT_TRUE(has(q, "s.slot_name = $1")) << "the slot name is a parameter, never spliced in: " << q;
    EXPECT_TRUE(has(q, "s.wal_status") && has(q, "s.safe_wal_size") && has(q, "s.active"));
    EXPECT_EQ(has(q, "s.conflicting"), version >= 160000) << q;
    for (const char* column : {"s.invalidation_reason", "s.inactive_since", "s.failover", "s.synced"}) {
      EXPECT_EQ(has(q, column), version >= 170000) << column << " in " << q;
    }
  }
}

TEST(SlotHealth, MissingRowIsAGoneSlot) {
  // What the LEFT JOIN gives when the slot has no row: every slot column NULL.
  Row row = {{"slot_exists", "f"},
             {"active", std::nullopt},
             {"wal_status", std::nullopt},
             {"safe_wal_size", std::nullopt},
             {"conflicting", std::nullopt},
             {"invalidation_reason", std::nullopt},
             {"inactive_seconds", std::nullopt},
             {"failover", std::nullopt},
             {"synced", std::nullopt}};
  SlotHealth slot = SlotHealth::parse(170002, row);
  EXPECT_FALSE(slot.exists);
  EXPECT_FALSE(slot.active);
  EXPECT_EQ(slot.walStatus, "");
  EXPECT_FALSE(slot.safeWalSize.has_value());
  EXPECT_EQ(slot.invalidationReason, "");
}

TEST(SlotHealth, PostgreSQL15ActiveSlotWithoutAWalLimit) {
  Row row = {{"slot_exists", "t"}, {"active", "t"}, {"wal_status", "reserved"}, {"safe_wal_size", std::nullopt}};
  SlotHealth slot = SlotHealth::parse(150010, row);
  EXPECT_TRUE(slot.exists);
  EXPECT_TRUE(slot.active);
  EXPECT_EQ(slot.walStatus, "reserved");
  EXPECT_FALSE(slot.safeWalSize.has_value()) << "NULL is unlimited, not 0 bytes";
  EXPECT_FALSE(slot.conflicting);
  EXPECT_EQ(slot.invalidationReason, "");
  ASSERT_TRUE(slot.inactiveSeconds.has_value());
  EXPECT_EQ(*slot.inactiveSeconds, 0.0);
  EXPECT_FALSE(slot.failover);
  EXPECT_FALSE(slot.synced);
}

TEST(SlotHealth, BeforeSeventeenTheInvalidationReasonIsDerived) {
  Row lost = {{"slot_exists", "t"}, {"active", "f"}, {"wal_status", "lost"}, {"safe_wal_size", std::nullopt}};
  SlotHealth on13 = SlotHealth::parse(130016, lost);
  EXPECT_EQ(on13.walStatus, "lost");
  EXPECT_EQ(on13.invalidationReason, "wal_removed");
  EXPECT_FALSE(on13.inactiveSeconds.has_value()) << "no inactive_since before 17: unknown, not 0";

  Row conflicting = lost;
  conflicting["conflicting"] = "t";
  SlotHealth on16 = SlotHealth::parse(160006, conflicting);
  EXPECT_TRUE(on16.conflicting);
  EXPECT_EQ(on16.invalidationReason, "conflict");
  conflicting["conflicting"] = "f";
  EXPECT_EQ(SlotHealth::parse(160006, conflicting).invalidationReason, "wal_removed");

  // A column a version does not have is ignored even if a row carried it.
  Row stray = {
      {"slot_exists", "t"}, {"active", "t"}, {"wal_status", "extended"}, {"failover", "t"}, {"conflicting", "t"}};
  SlotHealth on15 = SlotHealth::parse(150010, stray);
  EXPECT_FALSE(on15.failover);
  EXPECT_FALSE(on15.conflicting);
  EXPECT_EQ(on15.invalidationReason, "");
}

TEST(SlotHealth, SeventeenReadsEveryColumn) {
  Row row = {{"slot_exists", "t"},          {"active", "f"},      {"wal_status", "unreserved"},
             {"safe_wal_size", "-4096"},    {"conflicting", "f"}, {"invalidation_reason", std::nullopt},
             {"inactive_seconds", "93.25"}, {"failover", "t"},    {"synced", "f"}};
  SlotHealth slot = SlotHealth::parse(170002, row);
  EXPECT_FALSE(slot.active);
  EXPECT_EQ(slot.walStatus, "unreserved");
  ASSERT_TRUE(slot.safeWalSize.has_value());
  EXPECT_EQ(*slot.safeWalSize, -4096) << "negative once past the limit: the WAL is due for removal";
  EXPECT_EQ(slot.invalidationReason, "");
  ASSERT_TRUE(slot.inactiveSeconds.has_value());
  EXPECT_DOUBLE_EQ(*slot.inactiveSeconds, 93.25);
  EXPECT_TRUE(slot.failover);
  EXPECT_FALSE(slot.synced);

  row["wal_status"] = "lost";
  row["safe_wal_size"] = std::nullopt;
  row["invalidation_reason"] = "idle_timeout";
  row["synced"] = "t";
  row["inactive_seconds"] = "0";
  slot = SlotHealth::parse(180000, row);
  EXPECT_EQ(slot.invalidationReason, "idle_timeout") << "the server's reason as it names it";
  EXPECT_TRUE(slot.synced);
  EXPECT_EQ(slot.inactiveSeconds, 0.0);

  row["inactive_seconds"] = "not a number";
  EXPECT_FALSE(SlotHealth::parse(170002, row).inactiveSeconds.has_value());
  row["safe_wal_size"] = "12x";
  EXPECT_FALSE(SlotHealth::parse(170002, row).safeWalSize.has_value());
}

}  // namespace
