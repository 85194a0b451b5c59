// chunkcache/metrics.h — CacheStats in the formats monitoring systems read.
//
// ToPrometheusText renders a snapshot in the Prometheus text exposition format (version 0.0.4),
// for a /metrics endpoint; ToCloudWatchEmf renders one CloudWatch Embedded Metric Format line,
// for a Lambda function or any process whose stdout goes to CloudWatch Logs — CloudWatch turns it
// into metrics with no API call and no log query. docs/OPERATIONS.md lists every metric.
//
//   std::cout << *chunkcache::ToPrometheusText(cache.Stats(),
//                                              {.labels = {{"cache", "catalogue"}}});
//
//   // Once per invocation or minute: what happened since the last line.
//   chunkcache::CacheStats now = cache.Stats();
//   std::cout << *chunkcache::ToCloudWatchEmf(chunkcache::StatsDelta(now, last),
//                                             {.metric_namespace = "VideoService",
//                                              .dimensions = {{"Function", "catalogue"}}})
//             << "\n";
//   last = now;
//
// Thread safety: these are pure functions of their arguments.

#ifndef CHUNKCACHE_METRICS_H_
#define CHUNKCACHE_METRICS_H_

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "chunkcache/stats.h"

namespace chunkcache {

struct PrometheusOptions {
  // Prepended to every metric name ("<prefix>_hits_total"); letters, digits, '_' and ':' only,
  // not starting with a digit. Default: "chunkcache".
  std::string prefix = "chunkcache";

  // Added to every sample, e.g. {{"cache", "catalogue"}}. Names as Prometheus label names
  // ([a-zA-Z_][a-zA-Z0-9_]*, not starting with "__", not "le" or "code"); values any UTF-8,
  // escaped. Default: none.
  std::vector<std::pair<std::string, std::string>> labels;
};

// Counters as "<prefix>_<name>_total" counters, sizes and states as gauges, latencies as
// histograms in seconds ("_bucket{le=...}", "_sum", "_count"), each family with one # HELP and one
// # TYPE line. Backend errors are one family labelled by status code (code="UNAVAILABLE").
// InvalidArgument for a bad prefix or label name.
absl::StatusOr<std::string> ToPrometheusText(const CacheStats& stats,
                                             const PrometheusOptions& options = {});

// CloudWatch's limits on one EMF line.
inline constexpr std::size_t kEmfMaxMetricsPerDirective = 100;
inline constexpr std::size_t kEmfMaxDimensions = 30;

struct EmfOptions {
  // The CloudWatch namespace of the metrics (1 to 255 characters). Default: "chunkcache".
  std::string metric_namespace = "chunkcache";

  // Dimension names and values, e.g. {{"Service", "catalogue"}}: at most kEmfMaxDimensions,
  // names unique, not starting with ':' and not clashing with a metric name. Default: none.
  std::vector<std::pair<std::string, std::string>> dimensions;

  // The line's timestamp. Default: the time of the call (absl::InfinitePast() means now).
  absl::Time timestamp = absl::InfinitePast();
};

// One JSON line (no trailing newline): "_aws" with Timestamp (ms) and CloudWatchMetrics (one
// directive of at most kEmfMaxMetricsPerDirective metrics, with Name and Unit: Count, Bytes,
// Milliseconds or None), then the dimension values and every metric's value at the top level.
// Counters are reported as they are in `stats`: pass StatsDelta(now, before) to report an
// interval. Latencies are p50/p90/p99/max in milliseconds. InvalidArgument for a bad namespace or
// dimensions.
absl::StatusOr<std::string> ToCloudWatchEmf(const CacheStats& stats,
                                            const EmfOptions& options = {});

}  // namespace chunkcache

#endif  // CHUNKCACHE_METRICS_H_
