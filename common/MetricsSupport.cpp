#include "common/MetricsSupport.h"

namespace outbox::metrics {

prometheus::Counter& counter(prometheus::Registry& registry, const std::string& name, const std::string& help,
                             const prometheus::Labels& labels) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry).Add(labels);
}

prometheus::Gauge& gauge(prometheus::Registry& registry, const std::string& name, const std::string& help,
                         const prometheus::Labels& labels) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry).Add(labels);
}

prometheus::Histogram& secondsHistogram(prometheus::Registry& registry, const std::string& name,
                                        const std::string& help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(registry).Add(
      {}, prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                                  10, 30, 60});
}

void buildInfo(prometheus::Registry& registry, const std::string& name, const std::string& help) {
  gauge(registry, name, help, {{"version", OUTBOX_RELAY_VERSION}}).Set(1);
}

}  // namespace outbox::metrics
