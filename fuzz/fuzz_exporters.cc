// fuzz_exporters — ToPrometheusText and ToCloudWatchEmf (include/chunkcache/metrics.h) with names,
// values and counters from the input.
//
// Input: a mode byte, pieces (fuzz_util.h) prefix and namespace, a byte L then L label (name,
// value) piece pairs, a byte D then D dimension pairs, a 64-bit timestamp in ms, then the counters,
// error counts and latencies (little-endian; zero once the input runs out). Mode bit 0 keeps the
// default prefix, bit 1 the default namespace, bit 2 the default timestamp (now), bit 3 uses
// absl::InfiniteFuture(). Latency histograms are built consistent (cumulative buckets, count =
// the +Inf bucket) as a real CacheStats is.
// Properties:
//   - ToPrometheusText is OK exactly when the prefix is a metric name, the label names are
//     usable, distinct label names ([a-zA-Z_][a-zA-Z0-9_]*, not "__...", "le" or "code") and the
//     label values UTF-8;
//   - its text passes a strict line check (one HELP and one TYPE per family, before its samples;
//     well-formed names, labels and numbers; only \\ \" \n escapes; counters end in _total;
//     histogram buckets cumulative, +Inf equal to _count), every sample carries the given labels,
//     values exactly as given, first and in order; and it is UTF-8;
//   - ToCloudWatchEmf is OK exactly when the namespace has 1 to 255 bytes and the dimensions are
//     at most 30, with distinct names of 1 to 255 bytes not starting with ':' that are not metric
//     names or "_aws", and all this text is UTF-8 (fuzzing found non-UTF-8 text copied into the
//     line, which was then not JSON; now refused);
//   - its line is one JSON object (simdjson) with no newline, whose Namespace, dimension names
//     and values are exactly the ones given, whose Timestamp is the one given, and where every
//     metric listed has a number at the top level (the counters' the ones given).

#include <cstdint>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "chunkcache/metrics.h"
#include "chunkcache/stats.h"
#include "fuzz_util.h"
#include "simdjson.h"

namespace chunkcache::fuzz {
namespace exporters_target {

using Pairs = std::vector<std::pair<std::string, std::string>>;

constexpr std::uint64_t CacheStats::*kCounters[] = {
    &CacheStats::gets,
    &CacheStats::hits,
    &CacheStats::misses,
    &CacheStats::puts,
    &CacheStats::put_errors,
    &CacheStats::invalidates,
    &CacheStats::loads,
    &CacheStats::load_errors,
    &CacheStats::coalesced,
    &CacheStats::wait_timeouts,
    &CacheStats::fallbacks,
    &CacheStats::l1_hits,
    &CacheStats::l1_revalidations,
    &CacheStats::l1_evictions,
    &CacheStats::l1_bytes,
    &CacheStats::stale_served,
    &CacheStats::refreshes,
    &CacheStats::refresh_errors,
    &CacheStats::refreshes_dropped,
    &CacheStats::refreshes_skipped,
    &CacheStats::refreshes_deferred,
    &CacheStats::refreshes_lease_held,
    &CacheStats::load_backoffs,
    &CacheStats::unstored_served,
    &CacheStats::leases_won,
    &CacheStats::leases_waited,
    &CacheStats::lease_wait_hits,
    &CacheStats::lease_wait_loads,
    &CacheStats::breaker_opens,
    &CacheStats::breaker_rejections,
    &CacheStats::compressed_gets,
    &CacheStats::corrupt_reads,
    &CacheStats::torn_retries,
    &CacheStats::backend_calls,
    &CacheStats::backend_errors,
    &CacheStats::chunks_read,
    &CacheStats::chunks_written,
    &CacheStats::bytes_put_raw,
    &CacheStats::bytes_written,
    &CacheStats::bytes_read,
    &CacheStats::bytes_returned,
};

constexpr LatencyStats CacheStats::*kLatencies[] = {
    &CacheStats::get_latency, &CacheStats::get_or_load_latency, &CacheStats::put_latency,
    &CacheStats::load_latency, &CacheStats::backend_latency};

CacheStats ReadStats(InputReader& in) {
  CacheStats stats;
  for (const auto member : kCounters) stats.*member = in.Integer<std::uint64_t>();
  stats.breaker_open = (in.Byte() & 1) != 0;
  for (std::uint64_t& errors : stats.backend_errors_by_code) {
    errors = (in.Byte() & 1) ? in.Integer<std::uint64_t>() : 0;
  }
  for (const auto member : kLatencies) {
    LatencyStats& l = stats.*member;
    std::uint64_t total = 0;
    for (std::uint64_t& bucket : l.buckets) {
      total += in.Integer<std::uint16_t>();
      bucket = total;
    }
    l.count = total;
    for (absl::Duration* d : {&l.sum, &l.mean, &l.p50, &l.p90, &l.p99, &l.max}) {
      *d = absl::Nanoseconds(in.Integer<std::int64_t>());
    }
  }
  return stats;
}

// ---- Prometheus ------------------------------------------------------------------------------

bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool IsMetricName(std::string_view s) {
  if (s.empty() || IsDigit(s[0])) return false;
  for (const char c : s) {
    if (!IsAlpha(c) && !IsDigit(c) && c != '_' && c != ':') return false;
  }
  return true;
}

bool IsLabelName(std::string_view s) {
  if (s.empty() || IsDigit(s[0])) return false;
  for (const char c : s) {
    if (!IsAlpha(c) && !IsDigit(c) && c != '_') return false;
  }
  return true;
}

bool IsUsableLabelName(std::string_view s) {
  return IsLabelName(s) && !s.starts_with("__") && s != "le" && s != "code";
}

bool IsNumber(std::string_view s) {
  if (s == "+Inf" || s == "-Inf" || s == "NaN") return true;
  std::size_t i = 0;
  if (i < s.size() && s[i] == '-') ++i;
  const std::size_t digits = i;
  while (i < s.size() && IsDigit(s[i])) ++i;
  if (i == digits) return false;
  if (i < s.size() && s[i] == '.') {
    const std::size_t fraction = ++i;
    while (i < s.size() && IsDigit(s[i])) ++i;
    if (i == fraction) return false;
  }
  if (i < s.size() && s[i] == 'e') {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    const std::size_t exponent = i;
    while (i < s.size() && IsDigit(s[i])) ++i;
    if (i == exponent) return false;
  }
  return i == s.size();
}

struct Sample {
  std::string name;
  Pairs labels;  // unescaped values
  std::string value;
};

// Parses one sample line strictly; false if it is malformed.
bool ParseSample(std::string_view line, Sample* sample) {
  std::size_t i = 0;
  while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
  sample->name = std::string(line.substr(0, i));
  if (!IsMetricName(sample->name)) return false;
  if (i < line.size() && line[i] == '{') {
    ++i;
    while (true) {
      const std::size_t start = i;
      while (i < line.size() && line[i] != '=') ++i;
      const std::string name(line.substr(start, i - start));
      if (!IsLabelName(name) || i + 1 >= line.size() || line[i + 1] != '"') return false;
      i += 2;
      std::string value;
      while (true) {
        if (i >= line.size()) return false;
        const char c = line[i++];
        if (c == '"') break;
        if (c == '\\') {
          if (i >= line.size()) return false;
          const char e = line[i++];
          if (e == '\\' || e == '"') {
            value.push_back(e);
          } else if (e == 'n') {
            value.push_back('\n');
          } else {
            return false;
          }
        } else {
          value.push_back(c);
        }
      }
      sample->labels.emplace_back(name, value);
      if (i < line.size() && line[i] == ',') {
        ++i;
        continue;
      }
      if (i < line.size() && line[i] == '}') {
        ++i;
        break;
      }
      return false;
    }
  }
  if (i >= line.size() || line[i] != ' ') return false;
  sample->value = std::string(line.substr(i + 1));
  return IsNumber(sample->value);
}

void CheckPrometheusText(const std::string& text, const Pairs& labels) {
  FUZZ_CHECK(text.ends_with("\n"), "the text does not end with a newline");
  std::set<std::string> families;
  std::string family, type;
  std::uint64_t last_bucket = 0;
  bool saw_inf = false;
  std::vector<std::string_view> lines;
  for (const absl::string_view line : absl::StrSplit(text, '\n')) {
    lines.emplace_back(line.data(), line.size());
  }
  for (std::size_t n = 0; n + 1 < lines.size(); ++n) {
    const std::string_view line = lines[n];
    const std::string where = absl::StrCat("line ", n + 1, ": ", std::string(line));
    if (line.starts_with("# HELP ")) {
      const std::string_view rest = line.substr(7);
      const std::size_t space = rest.find(' ');
      FUZZ_CHECK(
          space != std::string_view::npos && space + 1 < rest.size() && rest[space + 1] != ' ',
          where);
      family = std::string(rest.substr(0, space));
      FUZZ_CHECK(IsMetricName(family) && families.insert(family).second, where);
      type.clear();
      last_bucket = 0;
      saw_inf = false;
      continue;
    }
    if (line.starts_with("# TYPE ")) {
      FUZZ_CHECK(type.empty(), where);
      const std::string_view rest = line.substr(7);
      FUZZ_CHECK(rest.starts_with(family + " "), where);
      type = std::string(rest.substr(family.size() + 1));
      FUZZ_CHECK(type == "counter" || type == "gauge" || type == "histogram", where);
      continue;
    }
    Sample sample;
    FUZZ_CHECK(ParseSample(line, &sample), "malformed sample, " + where);
    FUZZ_CHECK(!type.empty(), "a sample before its family's TYPE, " + where);
    FUZZ_CHECK(sample.labels.size() >= labels.size(), where);
    for (std::size_t k = 0; k < labels.size(); ++k) {
      FUZZ_CHECK(sample.labels[k] == labels[k], "label " + labels[k].first + " changed, " + where);
    }
    FUZZ_CHECK(sample.labels.size() <= labels.size() + 1, where);
    const bool extra = sample.labels.size() == labels.size() + 1;
    if (type == "histogram") {
      if (sample.name == family + "_bucket") {
        FUZZ_CHECK(extra && sample.labels.back().first == "le", where);
        const std::uint64_t value = std::stoull(sample.value);
        FUZZ_CHECK(value >= last_bucket, "buckets not cumulative, " + where);
        last_bucket = value;
        saw_inf = sample.labels.back().second == "+Inf";
      } else if (sample.name == family + "_count") {
        FUZZ_CHECK(!extra && saw_inf && std::stoull(sample.value) == last_bucket, where);
      } else {
        FUZZ_CHECK(!extra && sample.name == family + "_sum", where);
      }
    } else {
      FUZZ_CHECK(sample.name == family, where);
      FUZZ_CHECK(!extra || sample.labels.back().first == "code", where);
      if (type == "counter") FUZZ_CHECK(sample.name.ends_with("_total"), where);
    }
  }
}

// ---- CloudWatch EMF --------------------------------------------------------------------------

void CheckEmfLine(const std::string& line, const EmfOptions& options, const CacheStats& stats,
                  const std::set<std::string>& metric_names, bool utf8) {
  FUZZ_CHECK(line.find('\n') == std::string::npos, "the EMF line holds a newline");
  static simdjson::dom::parser parser;  // reused: a parser allocates for the largest document
  simdjson::dom::object root;
  const simdjson::error_code error = parser.parse(line).get(root);
  FUZZ_CHECK(error == simdjson::SUCCESS,
             absl::StrCat("the EMF line is not JSON: ", simdjson::error_message(error)));
  if (!utf8) return;
  std::int64_t timestamp = 0;
  FUZZ_CHECK(root["_aws"]["Timestamp"].get(timestamp) == simdjson::SUCCESS, "no Timestamp");
  if (options.timestamp != absl::InfinitePast()) {
    FUZZ_CHECK(timestamp == absl::ToUnixMillis(options.timestamp), "a different Timestamp");
  }
  simdjson::dom::array directives;
  FUZZ_CHECK(root["_aws"]["CloudWatchMetrics"].get(directives) == simdjson::SUCCESS,
             "no CloudWatchMetrics");
  std::set<std::string> listed;
  for (simdjson::dom::element directive : directives) {
    std::string_view ns;
    FUZZ_CHECK(
        directive["Namespace"].get(ns) == simdjson::SUCCESS && ns == options.metric_namespace,
        "the Namespace is not the one given");
    simdjson::dom::array sets;
    FUZZ_CHECK(directive["Dimensions"].get(sets) == simdjson::SUCCESS && sets.size() == 1,
               "Dimensions is not one set");
    simdjson::dom::array names = sets.at(0).get_array();
    FUZZ_CHECK(names.size() == options.dimensions.size(), "a different number of dimensions");
    std::size_t k = 0;
    for (simdjson::dom::element name : names) {
      FUZZ_CHECK(name.get_string().value() == options.dimensions[k++].first,
                 "a dimension name is not the one given");
    }
    simdjson::dom::array metrics;
    FUZZ_CHECK(directive["Metrics"].get(metrics) == simdjson::SUCCESS &&
                   metrics.size() <= kEmfMaxMetricsPerDirective,
               "bad Metrics");
    for (simdjson::dom::element metric : metrics) {
      std::string_view name;
      FUZZ_CHECK(metric["Name"].get(name) == simdjson::SUCCESS, "a metric without a Name");
      FUZZ_CHECK(listed.insert(std::string(name)).second, "a metric listed twice");
      FUZZ_CHECK(root[name].is_number(), "metric " + std::string(name) + " has no value");
    }
  }
  FUZZ_CHECK(listed == metric_names, "the metrics listed depend on the dimensions");
  for (const auto& [name, value] : options.dimensions) {
    std::string_view got;
    FUZZ_CHECK(root[name].get(got) == simdjson::SUCCESS && got == value,
               "dimension " + name + " does not have the value given");
  }
  std::uint64_t hits = 0;
  FUZZ_CHECK(root["Hits"].get(hits) == simdjson::SUCCESS && hits == stats.hits,
             "Hits is not the counter given");
  std::uint64_t bytes_read = 0;
  FUZZ_CHECK(
      root["BytesRead"].get(bytes_read) == simdjson::SUCCESS && bytes_read == stats.bytes_read,
      "BytesRead is not the counter given");
}

// The metric names of an EMF line for `stats` (they do not depend on the options, nor on the
// values of the counters: only on which error codes and latencies are there). Memoized.
const std::set<std::string>& EmfMetricNames(const CacheStats& stats) {
  std::uint32_t shape = 0;
  for (std::size_t code = 0; code < stats.backend_errors_by_code.size(); ++code) {
    if (stats.backend_errors_by_code[code] != 0) shape |= 1u << code;
  }
  for (std::size_t i = 0; i < std::size(kLatencies); ++i) {
    if ((stats.*kLatencies[i]).count != 0) shape |= 1u << (17 + i);
  }
  static std::map<std::uint32_t, std::set<std::string>> memo;
  if (memo.size() >= 4096) memo.clear();  // bounded: there are 2^22 shapes
  std::set<std::string>& names = memo[shape];
  if (!names.empty()) return names;
  absl::StatusOr<std::string> line = ToCloudWatchEmf(stats);
  FUZZ_CHECK(line.ok(), "the default EMF options are refused: " + line.status().ToString());
  static simdjson::dom::parser parser;
  simdjson::dom::element root;
  FUZZ_CHECK(parser.parse(*line).get(root) == simdjson::SUCCESS,
             "the default EMF line is not JSON");
  for (simdjson::dom::element directive : root["_aws"]["CloudWatchMetrics"].get_array()) {
    for (simdjson::dom::element metric : directive["Metrics"].get_array()) {
      names.insert(std::string(metric["Name"].get_string().value()));
    }
  }
  return names;
}

}  // namespace exporters_target

int FuzzExporters(const std::uint8_t* data, std::size_t size) {
  using namespace exporters_target;
  InputReader in(data, size);
  const std::uint8_t mode = in.Byte();
  PrometheusOptions prometheus;
  EmfOptions emf;
  std::string prefix = in.Piece();
  std::string metric_namespace = in.Piece();
  if (!(mode & 1)) prometheus.prefix = std::move(prefix);
  if (!(mode & 2)) emf.metric_namespace = std::move(metric_namespace);
  for (int n = in.Byte() % 8; n > 0; --n) {
    std::string name = in.Piece();
    prometheus.labels.emplace_back(std::move(name), in.Piece());
  }
  for (int n = in.Byte() % 40; n > 0; --n) {
    std::string name = in.Piece();
    emf.dimensions.emplace_back(std::move(name), in.Piece());
  }
  const auto millis = in.Integer<std::int64_t>();
  if (mode & 8) {
    emf.timestamp = absl::InfiniteFuture();
  } else if (!(mode & 4)) {
    emf.timestamp = absl::FromUnixMillis(millis);
  }
  const CacheStats stats = ReadStats(in);

  // Prometheus.
  bool prometheus_valid = IsMetricName(prometheus.prefix);
  bool labels_utf8 = true;
  std::set<std::string> label_names;
  for (const auto& [name, value] : prometheus.labels) {
    prometheus_valid =
        prometheus_valid && IsUsableLabelName(name) && label_names.insert(name).second;
    labels_utf8 = labels_utf8 && simdjson::validate_utf8(value.data(), value.size());
  }
  prometheus_valid = prometheus_valid && labels_utf8;  // the format is UTF-8 text
  absl::StatusOr<std::string> text = ToPrometheusText(stats, prometheus);
  FUZZ_CHECK(text.ok() == prometheus_valid && (text.ok() || absl::IsInvalidArgument(text.status())),
             "ToPrometheusText: " + text.status().ToString());
  if (text.ok()) {
    CheckPrometheusText(*text, prometheus.labels);
    if (labels_utf8) {
      FUZZ_CHECK(simdjson::validate_utf8(text->data(), text->size()),
                 "UTF-8 labels gave a text that is not UTF-8");
    }
  }

  // CloudWatch EMF.
  const std::set<std::string>& metric_names = EmfMetricNames(stats);
  bool emf_valid = !emf.metric_namespace.empty() && emf.metric_namespace.size() <= 255 &&
                   emf.dimensions.size() <= kEmfMaxDimensions;
  bool emf_utf8 = simdjson::validate_utf8(emf.metric_namespace.data(), emf.metric_namespace.size());
  std::set<std::string> taken = metric_names;
  taken.insert("_aws");
  for (const auto& [name, value] : emf.dimensions) {
    emf_valid = emf_valid && !name.empty() && name.size() <= 255 && name[0] != ':' &&
                taken.insert(name).second;
    emf_utf8 = emf_utf8 && simdjson::validate_utf8(name.data(), name.size()) &&
               simdjson::validate_utf8(value.data(), value.size());
  }
  emf_valid = emf_valid && emf_utf8;  // the line is JSON
  absl::StatusOr<std::string> line = ToCloudWatchEmf(stats, emf);
  FUZZ_CHECK(line.ok() == emf_valid && (line.ok() || absl::IsInvalidArgument(line.status())),
             "ToCloudWatchEmf: " + line.status().ToString());
  if (line.ok()) CheckEmfLine(*line, emf, stats, metric_names, emf_utf8);
  return 0;
}

}  // namespace chunkcache::fuzz

#ifndef CHUNKCACHE_FUZZ_NO_ENTRY_POINTS
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return chunkcache::fuzz::FuzzExporters(data, size);
}
#endif
