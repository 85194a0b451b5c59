#include "chunkcache/metrics.h"

#include <algorithm>
#include <cstdint>
#include <string_view>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "internal/json.h"
#include "simdjson.h"

namespace chunkcache {
namespace {

using internal::JsonString;

// Every counter of CacheStats, once: the exporters and StatsDelta walk this table.
struct CounterField {
  const char* name;  // snake_case; Prometheus "<prefix>_<name>_total", EMF in CamelCase
  const char* unit;  // CloudWatch unit
  const char* help;
  std::uint64_t CacheStats::*member;
};

constexpr CounterField kCounters[] = {
    {"gets", "Count",
     "Near-cache hits and backend reads of Get, GetStream and GetOrLoad (one per GetOrLoad "
     "flight: its coalesced callers are not counted, nor is GetCompressed).",
     &CacheStats::gets},
    {"hits", "Count", "Reads answered with a verified entry (near-cache hits included).",
     &CacheStats::hits},
    {"misses", "Count", "Reads that found no usable entry (absent or corrupt).",
     &CacheStats::misses},
    {"puts", "Count", "Put calls and stores after a load.", &CacheStats::puts},
    {"put_errors", "Count", "Puts and stores that failed.", &CacheStats::put_errors},
    {"invalidates", "Count", "Invalidate calls.", &CacheStats::invalidates},
    {"loads", "Count", "Loader calls (foreground and background).", &CacheStats::loads},
    {"load_errors", "Count", "Loader calls that failed or threw.", &CacheStats::load_errors},
    {"coalesced", "Count", "GetOrLoad callers that shared another caller's load.",
     &CacheStats::coalesced},
    {"wait_timeouts", "Count", "GetOrLoad callers that gave up waiting for another's load.",
     &CacheStats::wait_timeouts},
    {"fallbacks", "Count", "Backend failures answered through the loader.", &CacheStats::fallbacks},
    {"load_backoffs", "Count", "GetOrLoad callers answered with a recent load's failure.",
     &CacheStats::load_backoffs},
    {"unstored_served", "Count", "GetOrLoad callers answered with a loaded value not stored.",
     &CacheStats::unstored_served},
    {"l1_hits", "Count", "Reads answered by the near cache without a backend call.",
     &CacheStats::l1_hits},
    {"l1_revalidations", "Count", "Reads that kept the near copy after reading the manifest.",
     &CacheStats::l1_revalidations},
    {"l1_evictions", "Count", "Near-cache entries evicted to stay within its bound.",
     &CacheStats::l1_evictions},
    {"stale_served", "Count", "Reads that returned an entry older than soft_ttl.",
     &CacheStats::stale_served},
    {"refreshes", "Count", "Background refreshes run.", &CacheStats::refreshes},
    {"refresh_errors", "Count", "Background refreshes that failed to load or store.",
     &CacheStats::refresh_errors},
    {"refreshes_dropped", "Count",
     "Background refreshes not run: the refresh queue was full or no refresh thread could start.",
     &CacheStats::refreshes_dropped},
    {"refreshes_lease_held", "Count",
     "Background refreshes left to another process, which held the key's lease.",
     &CacheStats::refreshes_lease_held},
    {"refreshes_skipped", "Count", "Background refreshes that found the entry fresh already.",
     &CacheStats::refreshes_skipped},
    {"refreshes_deferred", "Count", "Stale reads that queued no refresh (backing off).",
     &CacheStats::refreshes_deferred},
    {"leases_won", "Count", "Misses that took the cross-process lease and loaded.",
     &CacheStats::leases_won},
    {"leases_waited", "Count", "Misses that found the lease taken and waited.",
     &CacheStats::leases_waited},
    {"lease_wait_hits", "Count", "Lease waits answered by the holder's entry.",
     &CacheStats::lease_wait_hits},
    {"lease_wait_loads", "Count", "Lease waits that ended in a load of their own.",
     &CacheStats::lease_wait_loads},
    {"breaker_opens", "Count", "Times the circuit breaker opened.", &CacheStats::breaker_opens},
    {"breaker_rejections", "Count", "Backend calls skipped by the open circuit breaker.",
     &CacheStats::breaker_rejections},
    {"compressed_gets", "Count", "GetCompressed calls that returned an entry.",
     &CacheStats::compressed_gets},
    {"corrupt_reads", "Count", "Entries found unusable: missing chunk, bad checksum, bad bytes.",
     &CacheStats::corrupt_reads},
    {"torn_retries", "Count", "Reads started over because a writer replaced the entry.",
     &CacheStats::torn_retries},
    {"backend_calls", "Count", "Backend calls (round trips).", &CacheStats::backend_calls},
    {"backend_errors", "Count", "Backend calls that failed.", &CacheStats::backend_errors},
    {"chunks_read", "Count", "Chunk items fetched.", &CacheStats::chunks_read},
    {"chunks_written", "Count", "Chunk items stored.", &CacheStats::chunks_written},
    {"bytes_put_raw", "Bytes", "JSON bytes accepted for storing.", &CacheStats::bytes_put_raw},
    {"bytes_written", "Bytes", "Bytes stored in the backend.", &CacheStats::bytes_written},
    {"bytes_read", "Bytes", "Bytes fetched from the backend.", &CacheStats::bytes_read},
    {"bytes_returned", "Bytes", "JSON bytes handed to callers.", &CacheStats::bytes_returned},
};

struct LatencyField {
  const char* name;
  const char* help;
  LatencyStats CacheStats::*member;
};

constexpr LatencyField kLatencies[] = {
    {"get_latency", "Reads that went to the backend.", &CacheStats::get_latency},
    {"get_or_load_latency", "GetOrLoad calls past the near cache, waiting and loading included.",
     &CacheStats::get_or_load_latency},
    {"put_latency", "Puts: validate, compress, store.", &CacheStats::put_latency},
    {"load_latency", "Loader calls.", &CacheStats::load_latency},
    {"backend_latency", "Backend calls.", &CacheStats::backend_latency},
};

constexpr std::size_t kStatusCodes = 17;

// "l1_hits" -> "L1Hits".
std::string CamelCase(std::string_view snake) {
  std::string out;
  bool upper = true;
  for (const char c : snake) {
    if (c == '_') {
      upper = true;
      continue;
    }
    out.push_back(upper ? absl::ascii_toupper(static_cast<unsigned char>(c)) : c);
    upper = false;
  }
  return out;
}

// "UNAVAILABLE" for absl::StatusCode::kUnavailable.
std::string CodeName(std::size_t code) {
  std::string name = absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  for (char& c : name) c = absl::ascii_toupper(static_cast<unsigned char>(c));
  return name;
}

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }
double Millis(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

// ---- Prometheus ------------------------------------------------------------------------------

bool IsMetricName(std::string_view name) {
  if (name.empty() || absl::ascii_isdigit(static_cast<unsigned char>(name[0]))) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':';
  });
}

bool IsUtf8(std::string_view text) { return simdjson::validate_utf8(text.data(), text.size()); }

bool IsLabelName(std::string_view name) {
  if (name.empty() || absl::ascii_isdigit(static_cast<unsigned char>(name[0]))) return false;
  if (name.substr(0, 2) == "__" || name == "le" || name == "code") return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  for (const char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

class PrometheusWriter {
 public:
  explicit PrometheusWriter(const PrometheusOptions& options) : prefix_(options.prefix) {
    for (const auto& [name, value] : options.labels) {
      absl::StrAppend(&labels_, labels_.empty() ? "" : ",", name, "=\"", EscapeLabelValue(value),
                      "\"");
    }
  }

  void Family(absl::string_view name, absl::string_view type, absl::string_view help) {
    absl::StrAppend(&out_, "# HELP ", prefix_, "_", name, " ", help, "\n# TYPE ", prefix_, "_",
                    name, " ", type, "\n");
  }

  // One sample line; `extra` is a label list without braces ("le=\"0.5\""), or empty.
  template <typename Value>
  void Sample(absl::string_view name, absl::string_view extra, Value value) {
    absl::StrAppend(&out_, prefix_, "_", name);
    if (!labels_.empty() || !extra.empty()) {
      absl::StrAppend(&out_, "{", labels_, !labels_.empty() && !extra.empty() ? "," : "", extra,
                      "}");
    }
    absl::StrAppend(&out_, " ", Number(value), "\n");
  }

  std::string Take() { return std::move(out_); }

 private:
  static std::string Number(std::uint64_t v) { return absl::StrCat(v); }
  static std::string Number(double v) { return absl::StrFormat("%.9g", v); }

  const std::string prefix_;
  std::string labels_;
  std::string out_;
};

// ---- CloudWatch EMF ----------------------------------------------------------------------------

struct EmfMetric {
  std::string name;
  const char* unit;
  std::string value;  // a JSON number
};

std::vector<EmfMetric> EmfMetrics(const CacheStats& stats) {
  std::vector<EmfMetric> metrics;
  for (const CounterField& field : kCounters) {
    metrics.push_back({CamelCase(field.name), field.unit, absl::StrCat(stats.*field.member)});
  }
  metrics.push_back({"L1BytesHeld", "Bytes", absl::StrCat(stats.l1_bytes)});
  metrics.push_back({"BreakerOpen", "None", stats.breaker_open ? "1" : "0"});
  for (std::size_t code = 1; code < kStatusCodes; ++code) {
    if (stats.backend_errors_by_code[code] == 0) continue;
    metrics.push_back(
        {absl::StrCat("BackendErrors", CamelCase(absl::AsciiStrToLower(CodeName(code)))), "Count",
         absl::StrCat(stats.backend_errors_by_code[code])});
  }
  for (const LatencyField& field : kLatencies) {
    const LatencyStats& l = stats.*field.member;
    if (l.count == 0) continue;  // CloudWatch would chart a zero latency as a real one
    const std::string base = CamelCase(field.name);
    for (const auto& [suffix, value] : {std::pair{"P50", l.p50}, std::pair{"P90", l.p90},
                                        std::pair{"P99", l.p99}, std::pair{"Max", l.max}}) {
      metrics.push_back({base + suffix, "Milliseconds", absl::StrFormat("%.6g", Millis(value))});
    }
  }
  return metrics;
}

}  // namespace

CacheStats StatsDelta(const CacheStats& now, const CacheStats& before) {
  CacheStats delta = now;
  const auto minus = [](std::uint64_t a, std::uint64_t b) { return a >= b ? a - b : 0; };
  for (const CounterField& field : kCounters) {
    delta.*field.member = minus(now.*field.member, before.*field.member);
  }
  for (std::size_t code = 0; code < kStatusCodes; ++code) {
    delta.backend_errors_by_code[code] =
        minus(now.backend_errors_by_code[code], before.backend_errors_by_code[code]);
  }
  return delta;
}

absl::StatusOr<std::string> ToPrometheusText(const CacheStats& stats,
                                             const PrometheusOptions& options) {
  if (!IsMetricName(options.prefix)) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunkcache: \"", options.prefix, "\" is not a Prometheus metric name"));
  }
  absl::flat_hash_set<std::string> seen;
  for (const auto& [name, value] : options.labels) {
    if (!IsLabelName(name) || !seen.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chunkcache: \"", name, "\" is not a usable Prometheus label name (or is repeated)"));
    }
    if (!IsUtf8(value)) {
      return absl::InvalidArgumentError("chunkcache: Prometheus label values must be UTF-8");
    }
  }
  PrometheusWriter w(options);
  for (const CounterField& field : kCounters) {
    const std::string name = absl::StrCat(field.name, "_total");
    w.Family(name, "counter", field.help);
    w.Sample(name, "", stats.*field.member);
  }
  w.Family("backend_errors_by_code_total", "counter", "Backend calls that failed, by status code.");
  for (std::size_t code = 1; code < kStatusCodes; ++code) {
    if (stats.backend_errors_by_code[code] == 0) continue;
    w.Sample("backend_errors_by_code_total", absl::StrCat("code=\"", CodeName(code), "\""),
             stats.backend_errors_by_code[code]);
  }
  w.Family("l1_bytes", "gauge", "Bytes held by the near cache.");
  w.Sample("l1_bytes", "", stats.l1_bytes);
  w.Family("breaker_open", "gauge", "1 while the circuit breaker skips the backend.");
  w.Sample("breaker_open", "", std::uint64_t{stats.breaker_open ? 1u : 0u});

  const std::array<absl::Duration, kLatencyBuckets> bounds = LatencyBucketBounds();
  for (const LatencyField& field : kLatencies) {
    const LatencyStats& l = stats.*field.member;
    const std::string name = absl::StrCat(field.name, "_seconds");
    w.Family(name, "histogram", field.help);
    for (std::size_t i = 0; i < kLatencyBuckets; ++i) {
      const std::string le = bounds[i] == absl::InfiniteDuration()
                                 ? "+Inf"
                                 : absl::StrFormat("%.9g", Seconds(bounds[i]));
      w.Sample(name + "_bucket", absl::StrCat("le=\"", le, "\""), l.buckets[i]);
    }
    w.Sample(name + "_sum", "", Seconds(l.sum));
    w.Sample(name + "_count", "", l.count);
  }
  return w.Take();
}

absl::StatusOr<std::string> ToCloudWatchEmf(const CacheStats& stats, const EmfOptions& options) {
  if (options.metric_namespace.empty() || options.metric_namespace.size() > 255) {
    return absl::InvalidArgumentError("chunkcache: an EMF namespace has 1 to 255 characters");
  }
  // The line is JSON: text that is not UTF-8 would make it unreadable to CloudWatch.
  bool utf8 = IsUtf8(options.metric_namespace);
  for (const auto& [name, value] : options.dimensions) utf8 = utf8 && IsUtf8(name) && IsUtf8(value);
  if (!utf8) {
    return absl::InvalidArgumentError(
        "chunkcache: EMF namespaces, dimension names and values must be UTF-8");
  }
  if (options.dimensions.size() > kEmfMaxDimensions) {
    return absl::InvalidArgumentError(
        absl::StrFormat("chunkcache: %d EMF dimensions; CloudWatch allows %d",
                        options.dimensions.size(), kEmfMaxDimensions));
  }
  const std::vector<EmfMetric> metrics = EmfMetrics(stats);
  absl::flat_hash_set<std::string> names = {"_aws"};
  for (const EmfMetric& metric : metrics) names.insert(metric.name);
  for (const auto& [name, value] : options.dimensions) {
    if (name.empty() || name.size() > 255 || name[0] == ':' || !names.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chunkcache: \"", name, "\" cannot be an EMF dimension (empty, too long, or taken)"));
    }
  }
  const absl::Time timestamp =
      options.timestamp == absl::InfinitePast() ? absl::Now() : options.timestamp;

  std::string dimension_names;
  for (const auto& [name, value] : options.dimensions) {
    absl::StrAppend(&dimension_names, dimension_names.empty() ? "" : ",", JsonString(name));
  }
  std::string out = absl::StrCat("{\"_aws\":{\"Timestamp\":", absl::ToUnixMillis(timestamp),
                                 ",\"CloudWatchMetrics\":[");
  for (std::size_t first = 0; first < metrics.size(); first += kEmfMaxMetricsPerDirective) {
    absl::StrAppend(&out, first == 0 ? "" : ",",
                    "{\"Namespace\":", JsonString(options.metric_namespace), ",\"Dimensions\":[[",
                    dimension_names, "]],\"Metrics\":[");
    const std::size_t last = std::min(metrics.size(), first + kEmfMaxMetricsPerDirective);
    for (std::size_t i = first; i < last; ++i) {
      absl::StrAppend(&out, i == first ? "" : ",", "{\"Name\":", JsonString(metrics[i].name),
                      ",\"Unit\":\"", metrics[i].unit, "\"}");
    }
    absl::StrAppend(&out, "]}");
  }
  absl::StrAppend(&out, "]}");
  for (const auto& [name, value] : options.dimensions) {
    absl::StrAppend(&out, ",", JsonString(name), ":", JsonString(value));
  }
  for (const EmfMetric& metric : metrics) {
    absl::StrAppend(&out, ",", JsonString(metric.name), ":", metric.value);
  }
  absl::StrAppend(&out, "}");
  return out;
}

}  // namespace chunkcache
