// CloudEvents end to end: the relay publishes an outbox table in binary mode and another in structured mode
// ([[outbox]] cloudevents), and outbox-sink projects both into PostgreSQL: the binary one by its ce_* headers
// (event_type_header = "ce_type"), the structured one by the headers the relay keeps and JSON pointers under /data.
#include <gtest/gtest.h>

#include "support/RelayProcess.h"
#include "support/SinkProcess.h"
#include "support/TestEnv.h"

using namespace outbox;
using namespace outbox::test;
using namespace std::chrono_literals;

TEST(CloudEvents, TheSinkProjectsBinaryAndStructuredEventsFromTheRelay) {
  PgConnection pg(pgUrl());
  std::string binary = createOutboxTable(pg, "cebin");
  std::string structured = createOutboxTable(pg, "cestr");
  std::string topic = uniqueName("ce");
  std::string model = uniqueName("ce_model");
  pg.exec("CREATE TABLE " + model + " (id text PRIMARY KEY, mode text NOT NULL, type text NOT NULL, total int, "
          "source text, ce_time text)");
  RelayConfigBuilder relayConfig;
  relayConfig
      .addOutbox({binary, topic + ".binary", {{"cloudevents", "binary"}, {"cloudevents_source", "/orders"}}, {}})
      .addOutbox({structured, topic + ".structured", {{"cloudevents", "structured"}, {"cloudevents_source", "/orders"}},
                  {{"eventType", "type"}}});
  ReplicationCleanup cleanup(relayConfig.slot(), relayConfig.publication(), {binary, structured, model});
  auto relay = RelayProcess::start(relayConfig.render());
  ASSERT_TRUE(waitForSlotStreaming(pg, relayConfig.slot(), 120s)) << relay->logTail();

  SinkConfigBuilder binarySink;
  binarySink.set("kafka", "event_type_header", "\"ce_type\"")
      .projection("ce_binary", topic + ".binary", "OrderCreated",
                  "INSERT INTO " + model + " VALUES ($1, 'binary', $2, $3::int, $4, $5)",
                  {"@header:ce_id", "@type", "/total", "@header:ce_source", "@header:ce_time"});
  SinkConfigBuilder structuredSink;
  structuredSink.projection("ce_structured", topic + ".structured", "OrderCreated",
                            "INSERT INTO " + model + " VALUES ($1, 'structured', $2, $3::int, $4, $5)",
                            {"/id", "/type", "/data/total", "/source", "/time"});
  auto sinkA = SinkProcess::start(binarySink.render(), "sink-binary");
  auto sinkB = SinkProcess::start(structuredSink.render(), "sink-structured");

  pg.exec("INSERT INTO " + binary + " (aggregatetype, aggregateid, type, payload) VALUES ('order', 'o-1', "
          "'OrderCreated', '{\"total\": 42}')");
  pg.exec("INSERT INTO " + structured + " (aggregatetype, aggregateid, type, payload) VALUES ('order', 'o-2', "
          "'OrderCreated', '{\"total\": 7}')");
  ASSERT_TRUE(waitFor([&] { return std::stoll(*pg.scalar("SELECT count(*) FROM " + model)) == 2; }, 120s, 250ms))
      << relay->logTail() << sinkA->logTail() << sinkB->logTail();
  auto rows = pg.rows("SELECT m.mode, m.type, m.total, m.source, m.ce_time ~ '^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z$', "
                      "m.id = o.id::text FROM " + model + " m JOIN (SELECT id FROM " + binary +
                      " UNION ALL SELECT id FROM " + structured + ") o ON o.id::text = m.id ORDER BY m.mode");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"binary", "OrderCreated", "42", "/orders", "t", "t"}));
  EXPECT_EQ(rows[1], (std::vector<std::string>{"structured", "OrderCreated", "7", "/orders", "t", "t"}));
}
