// The exactly-once bookkeeping: the progress record's format (it is read back from Kafka, where anything with write
// access can put bytes), which events a resuming relay skips, and what record describes a Kafka transaction.
#include "src/TransactionProgress.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

using namespace outbox;
using ::testing::HasSubstr;

namespace {

ProgressRecord identity() {
  ProgressRecord r;
  r.slot = "s";
  r.database = "app";
  r.systemId = "7714324448365392400";
  r.timeline = 1;
  return r;
}

std::string parseError(const std::string& json) {
  try {
    ProgressRecord::parse(json);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(parsed)";
}

}  // namespace

TEST(ProgressRecord, RoundTripsWithAndWithoutPartial) {
  ProgressRecord r = identity();
  r.commitLsn = Lsn(0x16B3748);
  r.endLsn = Lsn(0x16B3790);
  EXPECT_EQ(ProgressRecord::parse(r.toJson()), r);
  EXPECT_THAT(r.toJson(), HasSubstr("\"commit_lsn\":\"0/16B3748\""));
  r.partial = ProgressRecord::Partial{Lsn(0x2000000), 1234};
  EXPECT_EQ(ProgressRecord::parse(r.toJson()), r);
  EXPECT_THAT(r.toJson(), HasSubstr("\"partial\":{\"commit_lsn\":\"0/2000000\",\"events\":1234}"));
  // The at-least-once checkpoint: no unit, a position, and when it was written.
  ProgressRecord checkpoint = identity();
  checkpoint.endLsn = Lsn(0x3000000);
  checkpoint.time = "2026-12-01T16:32:03Z";
  EXPECT_EQ(ProgressRecord::parse(checkpoint.toJson()), checkpoint);
  EXPECT_THAT(checkpoint.toJson(), HasSubstr("\"time\":\"2026-12-01T16:32:03Z\""));
}

TEST(ProgressRecord, RefusesWhatThisRelayWouldNotWrite) {
  EXPECT_EQ(parseError("not json"), "not a JSON object");
  EXPECT_EQ(parseError("[1]"), "not a JSON object");
  EXPECT_THAT(parseError(R"({"format":2})"), HasSubstr("\"format\" is not 1"));
  const std::string base =
      R"("format":1,"slot":"s","database":"app","system_id":"1","timeline":1,"commit_lsn":"0/10","end_lsn":"0/20")";
  EXPECT_EQ(parseError("{" + base + "}"), "(parsed)");
  EXPECT_THAT(parseError("{" + base + R"(,"time":3})"), HasSubstr("\"time\" is not a string"));
  EXPECT_THAT(parseError("{" + base + R"(,"time":")" + std::string(65, 'x') + "\"}"), HasSubstr("\"time\""));
  EXPECT_THAT(parseError(R"({"format":1,"slot":"s","database":"app","system_id":"1","timeline":1,"commit_lsn":"x",)"
                         R"("end_lsn":"0/20"})"),
              HasSubstr("\"commit_lsn\" is not a WAL position"));
  EXPECT_THAT(parseError(R"({"format":1,"slot":"s","database":"app","system_id":"1","timeline":-1,)"
                         R"("commit_lsn":"0/10","end_lsn":"0/20"})"),
              HasSubstr("\"timeline\""));
  EXPECT_THAT(parseError(R"({"format":1,"slot":"s","database":"app","system_id":"1","timeline":1,)"
                         R"("commit_lsn":"0/30","end_lsn":"0/20"})"),
              HasSubstr("\"end_lsn\" is before \"commit_lsn\""));
  EXPECT_THAT(parseError("{" + base + R"(,"partial":{"commit_lsn":"0/10","events":3}})"),
              HasSubstr("\"partial.commit_lsn\" is not after"));
  EXPECT_THAT(parseError("{" + base + R"(,"partial":{"commit_lsn":"0/30","events":"3"}})"), HasSubstr("\"events\""));
  EXPECT_THAT(parseError("{" + base + R"(,"partial":7})"), HasSubstr("\"partial\" is not an object"));
  EXPECT_EQ(parseError("{" + base + R"(,"partial":null})"), "(parsed)");
  EXPECT_EQ(parseError(std::string(70000, ' ')), "larger than 64 KiB");
  // Invalid UTF-8 in a name from the server never makes the record unwritable.
  ProgressRecord odd = identity();
  odd.database = "caf\xe9";
  EXPECT_NO_THROW(ProgressRecord::parse(odd.toJson()));
}

TEST(ReplayFilter, SkipsExactlyWhatKafkaHas) {
  ReplayFilter filter;
  filter.reset(std::nullopt);
  EXPECT_EQ(filter.beginUnit(Lsn(0x100)), 0u);  // no record: nothing is in Kafka

  ProgressRecord committed = identity();
  committed.commitLsn = Lsn(0x200);
  committed.endLsn = Lsn(0x230);
  filter.reset(committed);
  EXPECT_EQ(filter.beginUnit(Lsn(0x100)), ReplayFilter::kAll);  // before it
  EXPECT_EQ(filter.beginUnit(Lsn(0x200)), ReplayFilter::kAll);  // the last one included whole
  EXPECT_EQ(filter.beginUnit(Lsn(0x300)), 0u);                  // after it

  // A split transaction: its first 7 events are in Kafka; units between the whole one and it cannot exist, but
  // anything before the split one is in Kafka.
  committed.partial = ProgressRecord::Partial{Lsn(0x400), 7};
  filter.reset(committed);
  EXPECT_EQ(filter.beginUnit(Lsn(0x200)), ReplayFilter::kAll);
  EXPECT_EQ(filter.beginUnit(Lsn(0x300)), ReplayFilter::kAll);
  EXPECT_EQ(filter.beginUnit(Lsn(0x400)), 7u);
  EXPECT_EQ(filter.beginUnit(Lsn(0x500)), 0u);

  // The very first unit split, before any whole one (commit_lsn 0/0).
  ProgressRecord first = identity();
  first.partial = ProgressRecord::Partial{Lsn(0x400), 3};
  filter.reset(first);
  EXPECT_EQ(filter.beginUnit(Lsn(0x400)), 3u);
  EXPECT_EQ(filter.beginUnit(Lsn(0x500)), 0u);
}

TEST(ProgressTracker, DescribesWholeAndSplitTransactions) {
  ProgressTracker tracker;
  tracker.reset(identity());
  EXPECT_EQ(tracker.current().commitLsn, Lsn());
  EXPECT_FALSE(tracker.current().partial);

  // A unit whose events are all included: the record names it whole.
  tracker.beginUnit(Lsn(0x100), 0);
  EXPECT_EQ(tracker.nextIndex(), 0u);
  tracker.eventIncluded();
  EXPECT_EQ(tracker.nextIndex(), 1u);
  // Not yet included: a record written now does not claim it.
  EXPECT_EQ(tracker.current().partial->events, 1u);
  tracker.eventIncluded();
  // Committed mid-unit: the split one with its 2 events so far.
  ProgressRecord mid = tracker.current();
  EXPECT_EQ(mid.commitLsn, Lsn());
  ASSERT_TRUE(mid.partial);
  EXPECT_EQ(mid.partial->commitLsn, Lsn(0x100));
  EXPECT_EQ(mid.partial->events, 2u);
  tracker.endUnit(Lsn(0x130));
  ProgressRecord whole = tracker.current();
  EXPECT_EQ(whole.commitLsn, Lsn(0x100));
  EXPECT_EQ(whole.endLsn, Lsn(0x130));
  EXPECT_FALSE(whole.partial);
  EXPECT_EQ(whole.slot, "s");
  EXPECT_EQ(whole.systemId, "7714324448365392400");

  // A unit opened but with no event yet: nothing partial to name.
  tracker.beginUnit(Lsn(0x200), 0);
  EXPECT_FALSE(tracker.current().partial);
  EXPECT_EQ(tracker.current().commitLsn, Lsn(0x100));

  // Resumed from a split unit with 5 events in Kafka: the next event is index 5, and the record keeps counting.
  ProgressRecord resumed = identity();
  resumed.commitLsn = Lsn(0x100);
  resumed.endLsn = Lsn(0x130);
  resumed.partial = ProgressRecord::Partial{Lsn(0x300), 5};
  tracker.reset(resumed);
  tracker.beginUnit(Lsn(0x300), 5);
  EXPECT_EQ(tracker.current().partial->events, 5u);
  EXPECT_EQ(tracker.nextIndex(), 5u);
  tracker.eventIncluded();
  EXPECT_EQ(tracker.current().partial->events, 6u);
  tracker.endUnit(Lsn(0x330));
  EXPECT_EQ(tracker.current().commitLsn, Lsn(0x300));
  EXPECT_FALSE(tracker.current().partial);

  // A unit replayed whole (older than what Kafka has) leaves the record as it is.
  tracker.beginUnit(Lsn(0x250), 0);
  tracker.endUnit(Lsn(0x260));
  EXPECT_EQ(tracker.current().commitLsn, Lsn(0x300));
  EXPECT_EQ(tracker.current().endLsn, Lsn(0x330));
}
