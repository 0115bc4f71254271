#include <gtest/gtest.h>

#include "src/Lsn.h"

using outbox::Lsn;

TEST(Lsn, ParsesAndFormatsPostgresNotation) {
  auto lsn = Lsn::parse("16/B374D848");
  ASSERT_TRUE(lsn.has_value());
  EXPECT_EQ(lsn->value(), (uint64_t{0x16} << 32) | 0xB374D848u);
  EXPECT_EQ(lsn->toString(), "16/B374D848");
  EXPECT_EQ(Lsn::parse("0/0")->value(), 0u);
  EXPECT_EQ(Lsn(0).toString(), "0/0");
  EXPECT_EQ(Lsn::parse("ffffffff/FFFFFFFF")->value(), UINT64_MAX);
  EXPECT_EQ(Lsn::parse("0/1A")->toString(), "0/1A");
}

TEST(Lsn, RejectsMalformedText) {
  for (const char* bad :
       {"", "/", "1/", "/1", "1", "1/2/3", "G/0", "0/-1", "123456789/0", "0/123456789", " 0/1", "0/1 ", "0x1/0"}) {
    EXPECT_FALSE(Lsn::parse(bad).has_value()) << "accepted: '" << bad << "'";
  }
}

TEST(Lsn, OrdersByPosition) {
  EXPECT_LT(*Lsn::parse("0/FFFFFFFF"), *Lsn::parse("1/0"));
  EXPECT_GT(*Lsn::parse("2/10"), *Lsn::parse("2/F"));
  EXPECT_EQ(*Lsn::parse("A/1"), *Lsn::parse("a/00000001"));
}

TEST(Lsn, LagArithmetic) {
  Lsn older = *Lsn::parse("0/FFFFFF00");
  Lsn newer = *Lsn::parse("1/100");
  EXPECT_EQ(newer.bytesSince(older), 0x200u);
  EXPECT_EQ(older.bytesSince(newer), 0u) << "lag never goes negative";
  EXPECT_EQ(newer.bytesSince(newer), 0u);
}
