// libFuzzer target: any bytes as a consumed record's value (and its key and event type header), through the
// sink's projection matching and parameter extraction: JSON pointers into the payload, record attributes,
// optional parameters. extract() says false for an unusable event (it is poison); anything thrown, any
// sanitizer report, is a finding. Seeds: fuzz/seeds/projection/.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "src/Projection.h"
#include "src/SinkConfig.h"

namespace {

using namespace outbox::sink;

// Projections with every kind of parameter; loaded through parseSinkConfig so they are what a user can write.
constexpr std::string_view kConfig = R"(
[database]
conninfo = "dbname=fuzz"
[kafka]
bootstrap_servers = "localhost:9092"
[[projection]]
name = "pointers"
topic = "outbox.event.order"
event_types = ["OrderPlaced", "OrderCreated"]
sql = "SELECT $1, $2, $3, $4, $5, $6, $7, $8"
params = ["/orderId", "?/customer/name", "?/items/0/sku", "?/items/1", "?/a~1b/~0c", "?/", "?/payload", "?/total"]
[[projection]]
name = "attributes"
topic = "^outbox\\.event\\..*"
event_type = "*"
sql = "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10"
params = ["@id", "@key", "@topic", "@partition", "@offset", "@timestamp", "@payload", "@type", "?@header:trace", "?/id"]
[[projection]]
name = "statements"
topic = "outbox.event.order"
event_type = "*"
  [[projection.statements]]
  sql = "SELECT $1, $2"
  params = ["?/orderId", "@header:trace"]
  [[projection.statements]]
  sql = "SELECT $1, $2, $3"
  params = ["/items/0", "?/total", "@id"]
)";

const std::vector<ProjectionConfig>& projectionConfigs() {
  static const std::vector<ProjectionConfig> configs = [] {
    auto result = parseSinkConfig(kConfig, "ProjectionFuzzer.cpp");
    if (!result.ok()) std::abort();  // the harness itself is wrong
    return result.config->projections;
  }();
  return configs;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static ProjectionSet projections(projectionConfigs());
  std::string_view input(reinterpret_cast<const char*>(data), size);
  SinkEvent event;
  event.topic = "outbox.event.order";
  event.partition = 3;
  event.offset = 42;
  event.timestampMs = 1700000000000;
  event.key = input;
  event.payload = input;
  event.headers = {{"id", "6f1c5a3e"}, {"eventType", "OrderPlaced"}, {"trace", input}};
  for (std::string_view type : {std::string_view("OrderPlaced"), input}) {
    event.headers[1].second = type;
    EventView view(event, "eventType");
    std::vector<size_t> matching;
    projections.matching(view, matching);
    ParamValues values;
    std::string error;
    for (size_t index : matching) {
      const Projection& projection = projections.at(index);
      for (size_t k = 0; k < projection.statements().size(); ++k) (void)projection.extract(view, k, values, error);
    }
  }
  return 0;
}
