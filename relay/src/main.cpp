// outbox-relay: streams committed outbox rows from PostgreSQL's WAL to Kafka. Thin: parse the command line,
// load the config, start the admin server, run the relay until a signal.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "common/AdminServer.h"
#include "common/CommandLine.h"
#include "common/Log.h"
#include "common/StopSignals.h"
#include "src/Relay.h"
#include "src/RelayConfig.h"
#include "src/RelayMetrics.h"
#include "src/Replay.h"

namespace {

const char* kUsage = R"(usage: outbox-relay --config FILE
       outbox-relay --check-config FILE
       outbox-relay replay --config FILE [--dry-run] [--table T] [--aggregate-type T] [--aggregate-id ID]
                    [--id ID]... [--since TS] [--until TS] [--time-column C]
       outbox-relay --version | --help

Streams committed rows of PostgreSQL outbox tables (and outbox logical messages) to Kafka,
using logical replication with the built-in pgoutput plugin.

  --config FILE        run with the TOML configuration in FILE
  --check-config FILE  parse and validate FILE, print every problem with its line and column;
                       exit status 0 when valid, 2 when not
  replay               publish rows still in the outbox tables again, as the live relay routes them, with
                       the header outbox_replay; reads the tables (SELECT), never the slot; --dry-run lists
                       what it would send. Exit status 0 all sent, 1 some left out or refused, 2 setup error
  --version            print the version
  --help               print this help

Exit statuses: 0 stopped cleanly; 1 stopped with events Kafka had not acknowledged (they stay in the
slot and are re-sent); 2 configuration or setup error; 3 an event failed permanently in Kafka (not
confirmed); 4 the replication stream could not be decoded; 5 internal error (a bug: the log says what).
See README.md for the configuration reference.
)";

// /healthz: the event loop went round recently (it wakes at least once a second).
// /readyz: streaming from the slot and Kafka reachable; a hot standby waiting for the slot is alive, not ready.
outbox::HealthCheck relayHealth(const outbox::RelayMetrics& metrics) {
  outbox::HealthCheck health;
  health.live = outbox::loopAliveCheck(metrics.lastLoopTimestamp, 30);
  health.ready = [&metrics] {
    if (metrics.standby.Value() > 0)
      return outbox::HealthVerdict{false, "standby: the replication slot is held by another relay"};
    if (metrics.streaming.Value() < 1) {
      // Before a slot is created the checkpoint is read from Kafka: unreachable brokers hold streaming up too.
      return outbox::HealthVerdict{false, metrics.kafkaConnected.Value() < 1
                                              ? "not streaming from PostgreSQL; Kafka brokers unreachable"
                                              : "not streaming from PostgreSQL"};
    }
    if (metrics.kafkaConnected.Value() < 1) return outbox::HealthVerdict{false, "Kafka brokers unreachable"};
    return outbox::HealthVerdict{true, "ok"};
  };
  return health;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "replay") == 0) {
    outbox::ReplayOptions options;
    if (auto problem = outbox::parseReplayArguments(argc, argv, 2, options)) {
      std::fprintf(stderr, "outbox-relay replay: %s\n%s", problem->c_str(), kUsage);
      return 2;
    }
    auto loaded = outbox::loadRelayConfig(options.configPath);
    outbox::CommandLine check;
    check.configPath = options.configPath;
    if (auto status = outbox::finishConfigCheck(loaded, check)) return *status;
    outbox::log::configure(outbox::log::Level::Warn, loaded.config->log.format);
    return outbox::runReplay(*loaded.config, options);
  }
  outbox::CommandLine commandLine;
  if (auto status = outbox::parseCommandLine(argc, argv, "outbox-relay", kUsage, commandLine)) return *status;
  auto loaded = outbox::loadRelayConfig(commandLine.configPath);
  if (auto status = outbox::finishConfigCheck(loaded, commandLine)) return *status;
  const outbox::RelayConfig& config = *loaded.config;

  outbox::log::configure(config.log.level, config.log.format);
  outbox::log::info("outbox-relay {} starting with configuration:\n{}", OUTBOX_RELAY_VERSION, config.redactedSummary());

  outbox::RelayMetrics metrics(config);
  std::unique_ptr<outbox::AdminServer> admin;
  if (config.metrics.enabled) {
    admin = outbox::startAdminServer(config.metrics.listen, metrics.registry(), relayHealth(metrics));
    if (!admin) return 2;
  }

  outbox::Relay relay(config, metrics);
  return outbox::runUntilStopped(relay);
}
