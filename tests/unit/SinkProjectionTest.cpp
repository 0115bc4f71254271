// Projections: topic and event-type matching, and the parameters taken from an event.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "src/Projection.h"

using namespace outbox::sink;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Optional;

namespace {

ProjectionConfig projection(std::string topic, std::string type, std::vector<std::string> params,
                            std::string name = "p") {
  ProjectionConfig c;
  c.name = std::move(name);
  c.topic = std::move(topic);
  c.eventTypes = {std::move(type)};
  std::string sql = "SELECT";
  for (size_t i = 1; i <= params.size(); ++i) sql += (i > 1 ? ", $" : " $") + std::to_string(i);
  c.sql = sql;
  c.params = std::move(params);
  return c;
}

struct Event {
  std::string topic = "outbox.event.order";
  std::string key = "o-1";
  std::string payload = R"({"orderId":"o-1","customerId":"c-7","total":42.5,"paid":true,"note":null,
                            "lines":[{"sku":"a/b","qty":2}],"address":{"city":"Zürich"}})";
  SinkEvent view() const {
    SinkEvent e;
    e.topic = topic;
    e.partition = 2;
    e.offset = 1234;
    e.timestampMs = 1700000000123;
    e.key = key;
    e.payload = payload;
    e.headers = {{"id", "6f1c5a3e-0c1e-4f8e-9b7a-2a4d1c0e9f11"},
                 {"eventType", "OrderCreated"},
                 {"trace", "t1"},
                 {"trace", "t2"}};
    return e;
  }
};

ParamValues extract(const ProjectionConfig& config, const SinkEvent& event, std::string* errorOut = nullptr) {
  Projection p(config);
  EventView view(event, "eventType");
  ParamValues values;
  std::string error;
  bool ok = p.extract(view, 0, values, error);
  if (errorOut) *errorOut = error;
  if (!ok) return {};
  return values;
}

}  // namespace

TEST(SinkProjectionTest, JsonPointersGiveTextOfTheValue) {
  Event e;
  auto values = extract(projection("t", "*",
                                   {"/orderId", "/total", "/paid", "/note", "/lines/0/sku", "/lines/0/qty", "/address",
                                    "/address/city", "/lines"}),
                        e.view());
  ASSERT_EQ(values.size(), 9u);
  EXPECT_THAT(values[0], Optional(std::string("o-1")));
  EXPECT_THAT(values[1], Optional(std::string("42.5")));
  EXPECT_THAT(values[2], Optional(std::string("true")));
  EXPECT_EQ(values[3], std::nullopt);  // JSON null is SQL NULL
  EXPECT_THAT(values[4], Optional(std::string("a/b")));
  EXPECT_THAT(values[5], Optional(std::string("2")));
  EXPECT_THAT(values[6], Optional(std::string(R"({"city":"Zürich"})")));
  EXPECT_THAT(values[7], Optional(std::string("Zürich")));
  EXPECT_THAT(values[8], Optional(std::string(R"([{"sku":"a/b","qty":2}])")));  // as written: key order kept
}

// "the original JSON text of a selected value, not a re-rendering of it": numbers keep every digit (beyond 64 bits
// and beyond a double's precision) and their trailing zeros, objects their key order, spacing and escapes;
// strings are unescaped.
TEST(SinkProjectionTest, SelectedValuesAreBoundAsWritten) {
  Event e;
  e.payload = R"({ "big": 123456789012345678901234567890 , "neg": -9223372036854775809, "price": 1.10, "exp": 1E+2,)"
              R"( "tiny": 0.1000000000000000055511151231257827, "obj": {"z": 1, "a": [1.50, "x\u00e9"] },)"
              R"( "s": "tab\there \u00e9 \"q\" \ud83d\ude00", "arr" :[ ] , "t":true, "f": false, "a~b": {"c/d": 7} })";
  auto values = extract(projection("t", "*",
                                   {"/big", "/neg", "/price", "/exp", "/tiny", "/obj", "/obj/a", "/obj/a/0", "/s",
                                    "/arr", "/t", "/f", "/a~0b/c~1d"}),
                        e.view());
  ASSERT_EQ(values.size(), 13u);
  EXPECT_THAT(values[0], Optional(std::string("123456789012345678901234567890")));
  EXPECT_THAT(values[1], Optional(std::string("-9223372036854775809")));
  EXPECT_THAT(values[2], Optional(std::string("1.10")));
  EXPECT_THAT(values[3], Optional(std::string("1E+2")));
  EXPECT_THAT(values[4], Optional(std::string("0.1000000000000000055511151231257827")));
  EXPECT_THAT(values[5], Optional(std::string(R"({"z": 1, "a": [1.50, "x\u00e9"] })")));
  EXPECT_THAT(values[6], Optional(std::string(R"([1.50, "x\u00e9"])")));
  EXPECT_THAT(values[7], Optional(std::string("1.50")));
  EXPECT_THAT(values[8], Optional(std::string("tab\there \u00e9 \"q\" \U0001F600")));
  EXPECT_THAT(values[9], Optional(std::string("[ ]")));
  EXPECT_THAT(values[10], Optional(std::string("true")));
  EXPECT_THAT(values[11], Optional(std::string("false")));
  EXPECT_THAT(values[12], Optional(std::string("7")));
}

TEST(SinkProjectionTest, PointersIntoArraysAndScalars) {
  Event e;
  e.payload = R"({"lines":[{"sku":"a"},{"sku":"b"}],"n":5,"":{"":"empty keys"}})";
  auto values = extract(projection("t", "*", {"/lines/1/sku", "?/lines/2/sku", "?/lines/x", "?/n/0", "//"}), e.view());
  ASSERT_EQ(values.size(), 5u);
  EXPECT_THAT(values[0], Optional(std::string("b")));
  EXPECT_EQ(values[1], std::nullopt);  // no such element
  EXPECT_EQ(values[2], std::nullopt);  // not an index
  EXPECT_EQ(values[3], std::nullopt);  // into a number
  EXPECT_THAT(values[4], Optional(std::string("empty keys")));
  std::string error;
  e.payload = "42";  // a payload that is no object has no fields
  EXPECT_TRUE(extract(projection("t", "*", {"/a"}), e.view(), &error).empty());
  EXPECT_THAT(error, HasSubstr("the payload has no field /a"));
}

// The whole payload is validated, not only the values a pointer reads: On-Demand alone would hand out /a of
// {"a":1,"b":[1,}}.
TEST(SinkProjectionTest, AnInvalidPayloadIsUnusableWhereverTheErrorIs) {
  for (const char* payload :
       {R"({"a":1,"b":[1,}})", R"({"a":1,"b":[1,2,]})", R"({"a":1} {"b":2})", R"({"a":1,})", R"({"a":1,"b":tru})",
        R"({"a":1,"b":trueX})", R"({"a":1,"b":01})", R"({"a":1,"b":1.})", R"({"a":1,"b":"\x"})",
        R"({"a":1,"b":"\ud83d"})", R"({"a":1,"b":-})", "{\"a\":1,\"b\":\"\x01\"}", "{\"a\":1,\"b\":\"\xff\"}",
        R"({"a":1 "b":2})", R"({"a":1,"b"})", R"({"a":1,"b":[1]]})", "", "   "}) {
    SCOPED_TRACE(payload);
    Event e;
    e.payload = payload;
    std::string error;
    EXPECT_TRUE(extract(projection("t", "*", {"?/a"}), e.view(), &error).empty());
    EXPECT_THAT(error, HasSubstr("not valid JSON"));
  }
}

// Nesting is bounded (an error, not a stack overflow): kMaxPayloadDepth levels are fine, one more is not, and a
// payload nested a million levels deep is refused without recursion.
TEST(SinkProjectionTest, PayloadNestingIsBounded) {
  auto nested = [](size_t depth) { return std::string(depth - 1, '[') + "{\"a\":1}" + std::string(depth - 1, ']'); };
  Event e;
  e.payload = "{\"id\":\"x\",\"deep\":" + nested(kMaxPayloadDepth - 1) + "}";  // kMaxPayloadDepth levels in all
  auto values = extract(projection("t", "*", {"/id"}), e.view());
  ASSERT_EQ(values.size(), 1u);
  EXPECT_THAT(values[0], Optional(std::string("x")));

  std::string error;
  e.payload = "{\"id\":\"x\",\"deep\":" + nested(kMaxPayloadDepth) + "}";
  EXPECT_TRUE(extract(projection("t", "*", {"/id"}), e.view(), &error).empty());
  EXPECT_THAT(error, HasSubstr("nested deeper than 1024 levels"));
  e.payload = std::string(1000000, '[') + std::string(1000000, ']');
  EXPECT_TRUE(extract(projection("t", "*", {"?/id"}), e.view(), &error).empty());
  EXPECT_THAT(error, HasSubstr("nested deeper than"));
  // @payload still binds such a payload as it is: no pointer needs it read.
  auto whole = extract(projection("t", "*", {"@payload"}), e.view());
  ASSERT_EQ(whole.size(), 1u);
  EXPECT_EQ(whole[0]->size(), 2000000u);
}

// Views may interleave (the thread's parser holds one document at a time): each reads its own payload.
TEST(SinkProjectionTest, InterleavedViewsReadTheirOwnPayloads) {
  Event a;
  a.payload = R"({"v":"a"})";
  Event b;
  b.payload = R"({"v":"b"})";
  SinkEvent ea = a.view();
  SinkEvent eb = b.view();
  EventView va(ea, "eventType");
  EventView vb(eb, "eventType");
  Projection p(projection("t", "*", {"/v"}));
  ParamValues values;
  std::string error;
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(p.extract(va, 0, values, error)) << error;
    EXPECT_THAT(values[0], Optional(std::string("a")));
    ASSERT_TRUE(p.extract(vb, 0, values, error)) << error;
    EXPECT_THAT(values[0], Optional(std::string("b")));
  }
}

TEST(SinkProjectionTest, RecordAttributes) {
  Event e;
  auto values = extract(projection("t", "*",
                                   {"@id", "@key", "@topic", "@partition", "@offset", "@timestamp", "@type",
                                    "@header:trace", "@payload"}),
                        e.view());
  ASSERT_EQ(values.size(), 9u);
  EXPECT_THAT(values[0], Optional(std::string("6f1c5a3e-0c1e-4f8e-9b7a-2a4d1c0e9f11")));
  EXPECT_THAT(values[1], Optional(std::string("o-1")));
  EXPECT_THAT(values[2], Optional(std::string("outbox.event.order")));
  EXPECT_THAT(values[3], Optional(std::string("2")));
  EXPECT_THAT(values[4], Optional(std::string("1234")));
  EXPECT_THAT(values[5], Optional(std::string("1700000000123")));
  EXPECT_THAT(values[6], Optional(std::string("OrderCreated")));
  EXPECT_THAT(values[7], Optional(std::string("t2")));  // the last of repeated headers
  EXPECT_THAT(values[8], Optional(e.payload));
}

TEST(SinkProjectionTest, MissingFieldIsAnErrorUnlessOptional) {
  Event e;
  std::string error;
  EXPECT_TRUE(extract(projection("t", "*", {"/orderId", "/discount"}, "orders"), e.view(), &error).empty());
  EXPECT_THAT(error, HasSubstr("projection orders: parameter /discount: the payload has no field /discount"));
  auto values = extract(projection("t", "*", {"?/discount", "?@header:missing", "/orderId"}), e.view());
  ASSERT_EQ(values.size(), 3u);
  EXPECT_EQ(values[0], std::nullopt);
  EXPECT_EQ(values[1], std::nullopt);
  EXPECT_THAT(values[2], Optional(std::string("o-1")));
  EXPECT_TRUE(extract(projection("t", "*", {"@header:missing"}), e.view(), &error).empty());
  EXPECT_THAT(error, HasSubstr("no header \"missing\""));
}

TEST(SinkProjectionTest, InvalidJsonIsAnErrorOnlyWhenAPointerNeedsIt) {
  Event e;
  e.payload = R"({"orderId": "o-1",)";
  std::string error;
  EXPECT_TRUE(extract(projection("t", "*", {"?/orderId"}), e.view(), &error).empty());
  EXPECT_THAT(error, HasSubstr("not valid JSON"));
  auto values = extract(projection("t", "*", {"@key", "@payload"}), e.view());
  ASSERT_EQ(values.size(), 2u);
  EXPECT_THAT(values[1], Optional(e.payload));
}

TEST(SinkProjectionTest, TombstoneHasNoPayload) {
  Event e;
  SinkEvent view = e.view();
  view.payload.reset();
  view.key.reset();
  std::string error;
  EXPECT_TRUE(extract(projection("t", "*", {"/orderId"}), view, &error).empty());
  EXPECT_THAT(error, HasSubstr("tombstone"));
  auto values = extract(projection("t", "*", {"@key", "@payload"}), view);
  ASSERT_EQ(values.size(), 2u);
  EXPECT_EQ(values[0], std::nullopt);
  EXPECT_EQ(values[1], std::nullopt);
}

TEST(SinkProjectionTest, ParamSourceParsing) {
  std::string error;
  EXPECT_TRUE(parseParamSource("/a~1b/c~0d", error));
  EXPECT_TRUE(parseParamSource("?@header:x", error));
  EXPECT_FALSE(parseParamSource("", error));
  EXPECT_FALSE(parseParamSource("?", error));
  EXPECT_FALSE(parseParamSource("a/b", error));
  EXPECT_FALSE(parseParamSource("/a~2", error));
  EXPECT_THAT(error, HasSubstr("JSON pointer"));
  EXPECT_FALSE(parseParamSource("@offsets", error));
  EXPECT_FALSE(parseParamSource("/a~", error));
  auto pointer = parseParamSource("/a~1b", error);
  ASSERT_TRUE(pointer);
  EXPECT_EQ(pointer->pointer, "/a~1b");
  Event e;
  e.payload = R"({"a/b": 1})";
  auto values = extract(projection("t", "*", {"/a~1b"}), e.view());
  ASSERT_EQ(values.size(), 1u);
  EXPECT_THAT(values[0], Optional(std::string("1")));
}

TEST(SinkProjectionTest, MatchingByTopicAndTypeInConfigOrder) {
  ProjectionSet set({projection("outbox.event.order", "OrderCreated", {}, "created"),
                     projection("^outbox\\.event\\.", "*", {}, "audit"),
                     projection("outbox.event.order", "OrderCancelled", {}, "cancelled"),
                     projection("^outbox\\.event\\.cust", "CustomerCreated", {}, "customers")});
  Event e;
  std::vector<size_t> out;
  SinkEvent created = e.view();
  set.matching(EventView(created, "eventType"), out);
  EXPECT_THAT(out, ElementsAre(0, 1));

  SinkEvent cancelled = e.view();
  cancelled.headers = {{"eventType", "OrderCancelled"}};
  set.matching(EventView(cancelled, "eventType"), out);
  EXPECT_THAT(out, ElementsAre(1, 2));

  Event c;
  c.topic = "outbox.event.customer";
  SinkEvent customer = c.view();
  customer.headers = {{"eventType", "CustomerCreated"}};
  set.matching(EventView(customer, "eventType"), out);
  EXPECT_THAT(out, ElementsAre(1, 3));

  SinkEvent untyped = c.view();
  untyped.headers = {};
  set.matching(EventView(untyped, "eventType"), out);
  EXPECT_THAT(out, ElementsAre(1));  // "*" matches an event without a type header

  Event other;
  other.topic = "elsewhere";
  SinkEvent elsewhere = other.view();
  set.matching(EventView(elsewhere, "eventType"), out);
  EXPECT_TRUE(out.empty());
}

TEST(SinkProjectionTest, SeveralEventTypes) {
  ProjectionConfig config = projection("outbox.event.order", "OrderCreated", {});
  config.eventTypes.push_back("OrderPlaced");
  ProjectionSet set({config});
  Event e;
  std::vector<size_t> out;
  for (const char* type : {"OrderCreated", "OrderPlaced", "OrderPaid"}) {
    SinkEvent event = e.view();
    event.headers = {{"eventType", type}};
    set.matching(EventView(event, "eventType"), out);
    EXPECT_EQ(out.size(), std::string(type) == "OrderPaid" ? 0u : 1u) << type;
  }
}

TEST(SinkProjectionTest, EventTypeHeaderIsConfigurable) {
  Event e;
  SinkEvent event = e.view();
  event.headers = {{"type", "OrderCreated"}};
  ProjectionSet set({projection("outbox.event.order", "OrderCreated", {"@type"})});
  std::vector<size_t> out;
  set.matching(EventView(event, "eventType"), out);
  EXPECT_TRUE(out.empty());
  EventView typed(event, "type");
  set.matching(typed, out);
  EXPECT_THAT(out, ElementsAre(0));
  ParamValues values;
  std::string error;
  ASSERT_TRUE(set.at(0).extract(typed, 0, values, error)) << error;
  EXPECT_THAT(values[0], Optional(std::string("OrderCreated")));
}

TEST(SinkProjectionTest, MultiStatementProjectionExtractsEachStatementsParameters) {
  ProjectionConfig c;
  c.name = "reserve";
  c.topic = "outbox.event.order";
  c.eventTypes = {"OrderCreated"};
  c.statements = {{"SELECT $1, $2", {"/orderId", "/total"}}, {"SELECT $1", {"/missing"}}, {"SELECT 1", {}}};
  Projection p(c);
  ASSERT_EQ(p.statements().size(), 3u);
  EXPECT_EQ(p.statements()[1].sql, "SELECT $1");
  EXPECT_EQ(p.label(0), "projection reserve statement 1");
  EXPECT_EQ(p.label(2), "projection reserve statement 3");
  Event e;
  SinkEvent event = e.view();
  EventView view(event, "eventType");
  ParamValues values;
  std::string error;
  ASSERT_TRUE(p.extract(view, 0, values, error)) << error;
  EXPECT_THAT(values, ElementsAre(Optional(std::string("o-1")), Optional(std::string("42.5"))));
  EXPECT_FALSE(p.extract(view, 1, values, error));
  EXPECT_EQ(error, "projection reserve statement 2: parameter /missing: the payload has no field /missing");
  ASSERT_TRUE(p.extract(view, 2, values, error)) << error;
  EXPECT_TRUE(values.empty());

  // A single-statement projection's texts stay as they were: no statement number.
  Projection single(projection("t", "*", {"/missing"}, "one"));
  EXPECT_EQ(single.label(0), "projection one");
  EXPECT_FALSE(single.extract(view, 0, values, error));
  EXPECT_EQ(error, "projection one: parameter /missing: the payload has no field /missing");
}
