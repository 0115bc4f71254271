#pragma once
// Building Prometheus series with prometheus-cpp, the same way in both binaries: one call per series, the
// family registered on first use (prometheus-cpp returns the existing family for a repeated name).

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <string>

namespace outbox::metrics {

prometheus::Counter& counter(prometheus::Registry& registry, const std::string& name, const std::string& help,
                             const prometheus::Labels& labels = {});
prometheus::Gauge& gauge(prometheus::Registry& registry, const std::string& name, const std::string& help,
                         const prometheus::Labels& labels = {});
// A latency histogram in seconds, buckets from 1 ms to 60 s.
prometheus::Histogram& secondsHistogram(prometheus::Registry& registry, const std::string& name,
                                        const std::string& help);
// <name>{version="..."} 1: which build is running.
void buildInfo(prometheus::Registry& registry, const std::string& name, const std::string& help);

}  // namespace outbox::metrics
