// The plan of a batch: de-duplication, the projections of each event with their parameters, poison events and
// the conditional offset updates, worked out before anything is sent to the database.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "src/BatchPlan.h"

using namespace outbox::sink;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Optional;
using Kind = PlannedStatement::Kind;

namespace {

ProjectionConfig projection(std::string name, std::string type, std::vector<std::string> params) {
  ProjectionConfig c;
  c.name = std::move(name);
  c.topic = "orders";
  c.eventTypes = {std::move(type)};
  c.sql = "SELECT 1";
  c.params = std::move(params);
  return c;
}

SinkConfig config(bool dedup) {
  SinkConfig c;
  c.kafka.groupId = "g";
  c.deduplication.enabled = dedup;
  c.projections = {projection("created", "OrderCreated", {"/orderId", "/total"}),
                   projection("log", "*", {"@offset", "?@id"})};
  return c;
}

struct Events {
  std::vector<std::string> payloads;  // kept alive: SinkEvent holds views
  std::vector<std::string> ids;
  std::vector<std::string> types;
  std::vector<SinkEvent> events;

  // Events of partition 0 from offset 10 on; an empty id means no id header.
  Events(std::vector<std::tuple<std::string, std::string, std::string>> specs) {
    for (auto& [id, type, payload] : specs) {
      ids.push_back(id);
      types.push_back(type);
      payloads.push_back(payload);
    }
    for (size_t i = 0; i < specs.size(); ++i) {
      SinkEvent e;
      e.topic = "orders";
      e.offset = 10 + static_cast<int64_t>(i);
      e.payload = payloads[i];
      if (!ids[i].empty()) e.headers.emplace_back("id", ids[i]);
      e.headers.emplace_back("eventType", types[i]);
      events.push_back(e);
    }
  }
};

BatchPlan plan(const SinkConfig& c, const Events& e, std::set<std::string> processed = {},
               const StoredOffsets& expected = {}, const std::map<TopicPartition, int64_t>& next = {}) {
  ProjectionSet projections(c.projections);
  return planBatch(e.events, c, projections, std::move(processed), expected, next);
}

const char* kOrder = R"({"orderId":"o-1","total":5})";

}  // namespace

TEST(SinkBatchPlanTest, EachEventGetsItsMatchingProjectionsWithTheirParameters) {
  Events e({{"a", "OrderCreated", kOrder}, {"b", "OrderShipped", "{}"}, {"c", "OrderCreated", kOrder}});
  SinkConfig c = config(false);
  c.projections.pop_back();  // only "created": the shipped event matches nothing
  BatchPlan p = plan(c, e);
  EXPECT_EQ(p.duplicates, 0);
  ASSERT_EQ(p.events.size(), 3u);
  EXPECT_EQ(p.events[0].index, 0u);
  EXPECT_FALSE(p.events[0].dedup);  // de-duplication is off
  ASSERT_EQ(p.events[0].statements.size(), 1u);
  EXPECT_EQ(p.events[0].statements[0].kind, Kind::Projection);
  EXPECT_EQ(p.events[0].statements[0].projection, 0u);
  EXPECT_THAT(p.events[0].statements[0].params, ElementsAre(Optional(std::string("o-1")), Optional(std::string("5"))));
  EXPECT_TRUE(p.events[1].statements.empty());
  EXPECT_FALSE(p.events[1].poison);
  EXPECT_EQ(p.events[2].index, 2u);
  EXPECT_EQ(p.events[2].statements.size(), 1u);
}

TEST(SinkBatchPlanTest, SeveralProjectionsInConfigOrder) {
  Events e({{"a", "OrderCreated", kOrder}, {"b", "OrderShipped", "{}"}});
  BatchPlan p = plan(config(false), e);
  ASSERT_EQ(p.events.size(), 2u);
  ASSERT_EQ(p.events[0].statements.size(), 2u);
  EXPECT_EQ(p.events[0].statements[0].projection, 0u);
  EXPECT_EQ(p.events[0].statements[1].projection, 1u);
  EXPECT_THAT(p.events[0].statements[1].params, ElementsAre(Optional(std::string("10")), Optional(std::string("a"))));
  ASSERT_EQ(p.events[1].statements.size(), 1u);
  EXPECT_EQ(p.events[1].statements[0].projection, 1u);
}

TEST(SinkBatchPlanTest, DuplicatesAppliedBeforeOrEarlierInTheBatchAreLeftOut) {
  Events e({{"a", "OrderCreated", kOrder},
            {"b", "OrderCreated", kOrder},
            {"a", "OrderCreated", kOrder},
            {"", "OrderCreated", kOrder},
            {"c", "OrderShipped", "{}"}});
  BatchPlan p = plan(config(true), e, {"b"});
  EXPECT_EQ(p.duplicates, 2);  // "b" applied before, the second "a"
  ASSERT_EQ(p.events.size(), 3u);
  EXPECT_EQ(p.events[0].index, 0u);
  ASSERT_TRUE(p.events[0].dedup);
  EXPECT_EQ(p.events[0].dedup->kind, Kind::Dedup);
  EXPECT_THAT(p.events[0].dedup->params, ElementsAre(Optional(std::string("g")), Optional(std::string("a"))));
  EXPECT_EQ(p.events[1].index, 3u);
  EXPECT_FALSE(p.events[1].dedup);  // no id header: nothing to record, always applied
  EXPECT_EQ(p.events[2].index, 4u);
  EXPECT_TRUE(p.events[2].dedup);
  EXPECT_EQ(p.events[1].statements.size(), 2u);
}

TEST(SinkBatchPlanTest, AnEventLackingAParameterRunsNoProjectionAndIsNotRecordedAsProcessed) {
  Events e(
      {{"a", "OrderCreated", R"({"total":5})"}, {"b", "OrderCreated", "{not json"}, {"c", "OrderCreated", kOrder}});
  BatchPlan p = plan(config(true), e);
  ASSERT_EQ(p.events.size(), 3u);
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(p.events[i].poison);
    EXPECT_TRUE(p.events[i].statements.empty());  // not even "log", whose parameters are there
    // Not processed: once the projection is fixed, the event replayed from the dead-letter topic is applied.
    EXPECT_FALSE(p.events[i].dedup);
  }
  EXPECT_THAT(*p.events[0].poison, HasSubstr("projection created: parameter /orderId: the payload has no field"));
  EXPECT_THAT(*p.events[1].poison, HasSubstr("not valid JSON"));
  EXPECT_FALSE(p.events[2].poison);
  EXPECT_EQ(p.events[2].statements.size(), 2u);
  EXPECT_TRUE(p.events[2].dedup);
}

TEST(SinkBatchPlanTest, AnEventRepeatedAfterItsPoisonCopyInOneBatchIsNotADuplicate) {
  // The same id twice: first without a field (poison), then complete (the producer fixed it and re-sent).
  Events e({{"a", "OrderCreated", R"({"total":5})"}, {"a", "OrderCreated", kOrder}});
  BatchPlan p = plan(config(true), e);
  EXPECT_EQ(p.duplicates, 0);
  ASSERT_EQ(p.events.size(), 2u);
  EXPECT_TRUE(p.events[0].poison);
  EXPECT_FALSE(p.events[0].dedup);
  EXPECT_FALSE(p.events[1].poison);
  EXPECT_TRUE(p.events[1].dedup);
}

TEST(SinkBatchPlanTest, OffsetUpdatesExpectWhatWasStored) {
  Events e({{"a", "OrderCreated", kOrder}});
  StoredOffsets expected = {{{"orders", 0}, 10}, {{"orders", 1}, std::nullopt}};
  std::map<TopicPartition, int64_t> next = {{{"orders", 0}, 11}, {{"orders", 1}, 3}, {{"other", 0}, 1}};
  BatchPlan p = plan(config(false), e, {}, expected, next);
  ASSERT_EQ(p.offsets.size(), 3u);
  EXPECT_EQ(p.offsets[0].partition, TopicPartition("orders", 0));
  EXPECT_THAT(p.offsets[0].expected, Optional(10));
  EXPECT_EQ(p.offsets[0].statement.kind, Kind::Offset);
  EXPECT_THAT(p.offsets[0].statement.params,
              ElementsAre(Optional(std::string("g")), Optional(std::string("orders")), Optional(std::string("0")),
                          Optional(std::string("11")), Optional(std::string("10"))));
  EXPECT_EQ(p.offsets[1].expected, std::nullopt);             // no row yet
  EXPECT_EQ(p.offsets[1].statement.params[4], std::nullopt);  // $5 is NULL
  EXPECT_EQ(p.offsets[2].partition, TopicPartition("other", 0));
  EXPECT_EQ(p.offsets[2].expected, std::nullopt);  // not among the expected ones: none stored
}

TEST(SinkBatchPlanTest, EventIdsOnlyWithDeduplication) {
  Events e({{"a", "OrderCreated", kOrder}, {"", "OrderCreated", kOrder}, {"a", "OrderCreated", kOrder}});
  EXPECT_TRUE(eventIds(e.events, config(false)).empty());
  EXPECT_THAT(eventIds(e.events, config(true)), ElementsAre("a", "a"));
  SinkConfig custom = config(true);
  custom.deduplication.idHeader = "eventType";
  EXPECT_THAT(eventIds(e.events, custom), ElementsAre("OrderCreated", "OrderCreated", "OrderCreated"));
}

TEST(SinkBatchPlanTest, TextArrayLiteralQuotesEveryItem) {
  EXPECT_EQ(textArrayLiteral({}), "{}");
  EXPECT_EQ(textArrayLiteral({"a", "NULL", "", "x,y", "{z}"}), R"({"a","NULL","","x,y","{z}"})");
  EXPECT_EQ(textArrayLiteral({"b\"c", "d\\e"}), R"({"b\"c","d\\e"})");
}

// A multi-statement projection plans each of its statements, in order, each with its own parameters, between the
// projections before and after it; a parameter missing in a later statement makes the event poison as a whole.
TEST(SinkBatchPlanTest, AMultiStatementProjectionPlansItsStatementsInOrder) {
  SinkConfig c = config(true);
  ProjectionConfig multi;
  multi.name = "reserve";
  multi.topic = "orders";
  multi.eventTypes = {"OrderCreated"};
  multi.statements = {{"SELECT $1", {"/orderId"}}, {"SELECT $1, $2", {"/total", "@offset"}}, {"SELECT 1", {}},
                      {"SELECT $1", {"?/coupon"}}};
  c.projections.insert(c.projections.begin() + 1, multi);  // created, reserve, log
  Events e({{"a", "OrderCreated", kOrder}, {"b", "OrderShipped", "{}"}});
  BatchPlan p = plan(c, e);
  ASSERT_EQ(p.events.size(), 2u);
  const std::vector<PlannedStatement>& s = p.events[0].statements;
  ASSERT_EQ(s.size(), 6u);
  std::vector<std::pair<size_t, size_t>> order;
  for (const PlannedStatement& one : s) {
    EXPECT_EQ(one.kind, Kind::Projection);
    order.emplace_back(one.projection, one.statement);
  }
  EXPECT_THAT(order, ElementsAre(std::pair<size_t, size_t>{0, 0}, std::pair<size_t, size_t>{1, 0},
                                 std::pair<size_t, size_t>{1, 1}, std::pair<size_t, size_t>{1, 2},
                                 std::pair<size_t, size_t>{1, 3}, std::pair<size_t, size_t>{2, 0}));
  EXPECT_THAT(s[1].params, ElementsAre(Optional(std::string("o-1"))));
  EXPECT_THAT(s[2].params, ElementsAre(Optional(std::string("5")), Optional(std::string("10"))));
  EXPECT_TRUE(s[3].params.empty());
  EXPECT_THAT(s[4].params, ElementsAre(std::nullopt));
  ASSERT_EQ(p.events[1].statements.size(), 1u);  // only "log"
  EXPECT_EQ(p.events[1].statements[0].projection, 2u);

  // Statement 2 lacks its parameter: no statement at all runs for the event, and the text names the statement.
  Events lacking({{"x", "OrderCreated", R"({"orderId":"o-2"})"}});
  BatchPlan q = plan(c, lacking);
  ASSERT_EQ(q.events.size(), 1u);
  ASSERT_TRUE(q.events[0].poison);
  EXPECT_TRUE(q.events[0].statements.empty());
  EXPECT_FALSE(q.events[0].dedup);
  EXPECT_THAT(*q.events[0].poison, HasSubstr("projection created: parameter /total"));
  c.projections.erase(c.projections.begin());  // without "created", "reserve" is the one that lacks it
  BatchPlan r = plan(c, lacking);
  ASSERT_TRUE(r.events[0].poison);
  EXPECT_THAT(*r.events[0].poison, HasSubstr("projection reserve statement 2: parameter /total: the payload has no "
                                             "field /total"));
}
