// libFuzzer target: any text as the relay's config file, through parseRelayConfig and, when it loads, the
// start-up summary. An input is either a config or a list of issues; anything thrown, any sanitizer report,
// is a finding. Seeds: examples/relay.toml and the relay.toml the Helm chart renders (fuzz/run).

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ConfigEnvironment.h"
#include "src/RelayConfig.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  outbox::fuzz::prepareConfigEnvironment();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto result = outbox::parseRelayConfig(text, "fuzz.toml");
  if (result.config) (void)result.config->redactedSummary();
  return 0;
}
