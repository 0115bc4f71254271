// RelayMetrics: the series whose value depends on the server connected to.

#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include <string>

#include "src/RelayConfig.h"
#include "src/RelayMetrics.h"

namespace {

using namespace outbox;

std::string exposition(const RelayMetrics& metrics) {
  return prometheus::TextSerializer().Serialize(metrics.registry()->Collect());
}

size_t occurrences(const std::string& text, const std::string& needle) {
  size_t count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++count;
  return count;
}

// Absent before the first connection; one series for the server connected to; a reconnect to another version (a
// failover to an upgraded server) replaces it.
TEST(RelayMetrics, SourceInfoFollowsTheServerConnectedTo) {
  RelayConfig config;
  RelayMetrics metrics(config);
  EXPECT_EQ(occurrences(exposition(metrics), "\noutbox_relay_source_info{"), 0u);

  metrics.sourceInfo(3, "15.18");
  std::string text = exposition(metrics);
  EXPECT_EQ(occurrences(text, "\noutbox_relay_source_info{"), 1u) << text;
  EXPECT_NE(text.find("\noutbox_relay_source_info{pgoutput_protocol=\"3\",server_version=\"15.18\"} 1\n"),
            std::string::npos)
      << text;

  metrics.sourceInfo(3, "15.18");  // a reconnect to the same server
  EXPECT_EQ(occurrences(exposition(metrics), "\noutbox_relay_source_info{"), 1u);

  metrics.sourceInfo(4, "16.14");
  text = exposition(metrics);
  EXPECT_EQ(occurrences(text, "\noutbox_relay_source_info{"), 1u) << text;
  EXPECT_NE(text.find("\noutbox_relay_source_info{pgoutput_protocol=\"4\",server_version=\"16.14\"} 1\n"),
            std::string::npos)
      << text;
}

}  // namespace
