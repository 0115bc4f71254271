// libFuzzer target: any text as outbox-sink's config file, through parseSinkConfig and, when it loads, the
// subscription and the start-up summary. Anything thrown, any sanitizer report, is a finding. Seeds:
// examples/sink.toml and the sink.toml the Helm chart renders (fuzz/run).

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ConfigEnvironment.h"
#include "src/SinkConfig.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  outbox::fuzz::prepareConfigEnvironment();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto result = outbox::sink::parseSinkConfig(text, "fuzz.toml");
  if (result.config) {
    (void)result.config->subscription();
    (void)result.config->redactedSummary();
  }
  return 0;
}
