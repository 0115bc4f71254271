// RelayMetrics: the series whose value depends on the server connected to.

#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include <string>

#include "src/RelayConfig.h"
#include "src/RelayMetrics.h"
#include "src/ServerWalProbe.h"

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

// The slot-health series: NaN before the first read (no alert matches NaN), one-hot wal_status and invalidation
// reason, NaN safe WAL size for unlimited, and a gone slot leaves all but outbox_relay_slot_exists as last seen.
// prometheus-cpp writes NaN as "Nan" (Prometheus's parser takes any case).
TEST(RelayMetrics, SlotHealthSeries) {
  RelayConfig config;
  RelayMetrics metrics(config);
  std::string text = exposition(metrics);
  for (const char* series :
       {"outbox_relay_slot_exists Nan", "outbox_relay_slot_safe_wal_size_bytes Nan",
        "outbox_relay_slot_wal_status{status=\"reserved\"} Nan", "outbox_relay_slot_wal_status{status=\"lost\"} Nan",
        "outbox_relay_slot_invalidated{reason=\"wal_removed\"} Nan", "outbox_relay_slot_failover Nan"}) {
    EXPECT_NE(text.find(std::string("\n") + series + "\n"), std::string::npos) << series << " in\n" << text;
  }

  SlotHealth slot;
  slot.exists = true;
  slot.active = true;
  slot.walStatus = "reserved";
  slot.inactiveSeconds = 0.0;
  metrics.slotHealth(slot);
  text = exposition(metrics);
  for (const char* series :
       {"outbox_relay_slot_exists 1", "outbox_relay_slot_active 1", "outbox_relay_slot_safe_wal_size_bytes Nan",
        "outbox_relay_slot_wal_status{status=\"reserved\"} 1", "outbox_relay_slot_wal_status{status=\"extended\"} 0",
        "outbox_relay_slot_wal_status{status=\"unreserved\"} 0", "outbox_relay_slot_wal_status{status=\"lost\"} 0",
        "outbox_relay_slot_invalidated{reason=\"wal_removed\"} 0",
        "outbox_relay_slot_invalidated{reason=\"idle_timeout\"} 0", "outbox_relay_slot_conflicting 0",
        "outbox_relay_slot_inactive_seconds 0", "outbox_relay_slot_failover 0", "outbox_relay_slot_synced 0"}) {
    EXPECT_NE(text.find(std::string("\n") + series + "\n"), std::string::npos) << series << " in\n" << text;
  }

  slot.active = false;
  slot.walStatus = "lost";
  slot.invalidationReason = "conflict";  // PostgreSQL 16's: a series of its own
  slot.conflicting = true;
  slot.safeWalSize = 1048576;
  slot.inactiveSeconds.reset();
  slot.failover = true;
  metrics.slotHealth(slot);
  text = exposition(metrics);
  for (const char* series :
       {"outbox_relay_slot_active 0", "outbox_relay_slot_safe_wal_size_bytes 1048576",
        "outbox_relay_slot_wal_status{status=\"reserved\"} 0", "outbox_relay_slot_wal_status{status=\"lost\"} 1",
        "outbox_relay_slot_invalidated{reason=\"conflict\"} 1",
        "outbox_relay_slot_invalidated{reason=\"wal_removed\"} 0", "outbox_relay_slot_conflicting 1",
        "outbox_relay_slot_inactive_seconds Nan", "outbox_relay_slot_failover 1"}) {
    EXPECT_NE(text.find(std::string("\n") + series + "\n"), std::string::npos) << series << " in\n" << text;
  }

  metrics.slotHealth(SlotHealth{});  // the row is gone
  text = exposition(metrics);
  for (const char* series : {"outbox_relay_slot_exists 0", "outbox_relay_slot_wal_status{status=\"lost\"} 1",
                             "outbox_relay_slot_failover 1"}) {
    EXPECT_NE(text.find(std::string("\n") + series + "\n"), std::string::npos) << series << " in\n" << text;
  }
}

}  // namespace
