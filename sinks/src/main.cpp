// outbox-sink: keeps CQRS read models in PostgreSQL up to date from the outbox topics, effectively once.
// Thin: parse the command line, load the config, start the admin server, run the sink until a signal.
#include <fmt/format.h>
#include <librdkafka/rdkafka.h>

#include <memory>
#include <string>

#include "common/AdminServer.h"
#include "common/CommandLine.h"
#include "common/Log.h"
#include "common/StopSignals.h"
#include "common/UnixTime.h"
#include "src/Sink.h"
#include "src/SinkConfig.h"
#include "src/SinkMetrics.h"

namespace {

const char* kUsage = R"(usage: outbox-sink --config FILE
       outbox-sink --check-config FILE
       outbox-sink --version | --help

Consumes outbox topics from Kafka as a consumer group and applies each event to read models in PostgreSQL
with the [[projection]] statements of the configuration: one transaction per batch, with the consumed
offsets stored in the same transaction, so every event is applied exactly once.

  --config FILE        run with the TOML configuration in FILE
  --check-config FILE  parse and validate FILE, print every problem with its line and column;
                       exit status 0 when valid, 2 when not
  --version            print the version
  --help               print this help

Exit statuses: 0 stopped cleanly; 1 a fatal Kafka or database error; 2 configuration or setup error
(including a projection whose SQL does not prepare); 3 an event could not be applied and on_error = "stop";
5 internal error (a bug; the log says what).
See README.md for the configuration reference.
)";

// /healthz: the event loop went round recently. /readyz: connected to the read-model database, not waiting out a
// database error, and Kafka neither refuses the consumer nor is out of reach (see Sink::errorCallback).
outbox::HealthCheck sinkHealth(const outbox::sink::SinkMetrics& metrics) {
  outbox::HealthCheck health;
  health.live = outbox::loopAliveCheck(metrics.lastLoopTimestamp, 60);
  health.ready = [&metrics] {
    if (metrics.databaseConnected.Value() < 1) return outbox::HealthVerdict{false, "read-model database unavailable"};
    if (metrics.databaseWaiting.Value() >= 1) {
      return outbox::HealthVerdict{false, "waiting out a read-model database error (see outbox_sink_db_errors_total)"};
    }
    if (metrics.kafkaUnavailable.Value() >= 1) {
      auto error = static_cast<rd_kafka_resp_err_t>(metrics.kafkaError.load());
      return outbox::HealthVerdict{
          false, fmt::format("Kafka refuses the consumer or no broker is up for {} s: {} ({}); see the log",
                             static_cast<int64_t>(outbox::unixSecondsNow()) - metrics.kafkaUnavailableSince.load(),
                             rd_kafka_err2str(error), rd_kafka_err2name(error))};
    }
    return outbox::HealthVerdict{true, "ok"};
  };
  return health;
}

}  // namespace

int main(int argc, char** argv) {
  outbox::CommandLine commandLine;
  if (auto status = outbox::parseCommandLine(argc, argv, "outbox-sink", kUsage, commandLine)) return *status;
  auto loaded = outbox::sink::loadSinkConfig(commandLine.configPath);
  if (auto status = outbox::finishConfigCheck(loaded, commandLine)) return *status;
  const outbox::sink::SinkConfig& config = *loaded.config;

  outbox::log::configure(config.logLevel, config.logFormat);
  outbox::log::info("outbox-sink {} starting with configuration:\n{}", OUTBOX_RELAY_VERSION, config.redactedSummary());

  outbox::sink::SinkMetrics metrics(config.projections);
  std::unique_ptr<outbox::AdminServer> admin;
  if (config.metrics.enabled) {
    admin = outbox::startAdminServer(config.metrics.listen, metrics.registry(), sinkHealth(metrics));
    if (!admin) return 2;
  }

  outbox::sink::Sink sink(config, metrics);
  return outbox::runUntilStopped(sink);
}
