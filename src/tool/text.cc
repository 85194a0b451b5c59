#include "tool/text.h"

#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "chunkcache/metrics.h"

namespace chunkcache::cli {
namespace {

std::string LatencyLine(const LatencyStats& l) {
  return absl::StrFormat("count %d  mean %s  p50 %s  p90 %s  p99 %s  max %s", l.count,
                         HumanLatency(l.mean), HumanLatency(l.p50), HumanLatency(l.p90),
                         HumanLatency(l.p99), HumanLatency(l.max));
}

std::string StatsText(const CacheStats& s) {
  const std::pair<const char*, std::uint64_t> counters[] = {
      {"gets", s.gets},
      {"hits", s.hits},
      {"misses", s.misses},
      {"puts", s.puts},
      {"put_errors", s.put_errors},
      {"invalidates", s.invalidates},
      {"loads", s.loads},
      {"load_errors", s.load_errors},
      {"coalesced", s.coalesced},
      {"wait_timeouts", s.wait_timeouts},
      {"fallbacks", s.fallbacks},
      {"l1_hits", s.l1_hits},
      {"l1_revalidations", s.l1_revalidations},
      {"l1_evictions", s.l1_evictions},
      {"l1_bytes", s.l1_bytes},
      {"stale_served", s.stale_served},
      {"refreshes", s.refreshes},
      {"refresh_errors", s.refresh_errors},
      {"refreshes_dropped", s.refreshes_dropped},
      {"refreshes_lease_held", s.refreshes_lease_held},
      {"leases_won", s.leases_won},
      {"leases_waited", s.leases_waited},
      {"lease_wait_hits", s.lease_wait_hits},
      {"lease_wait_loads", s.lease_wait_loads},
      {"breaker_open", s.breaker_open ? 1u : 0u},
      {"breaker_opens", s.breaker_opens},
      {"breaker_rejections", s.breaker_rejections},
      {"compressed_gets", s.compressed_gets},
      {"corrupt_reads", s.corrupt_reads},
      {"torn_retries", s.torn_retries},
      {"backend_calls", s.backend_calls},
      {"backend_errors", s.backend_errors},
      {"chunks_read", s.chunks_read},
      {"chunks_written", s.chunks_written},
      {"bytes_put_raw", s.bytes_put_raw},
      {"bytes_written", s.bytes_written},
      {"bytes_read", s.bytes_read},
      {"bytes_returned", s.bytes_returned},
  };
  std::string text;
  for (const auto& [name, value] : counters) {
    absl::StrAppendFormat(&text, "%-20s = %d\n", name, value);
  }
  absl::StrAppendFormat(&text, "%-20s = %s\n", "get_latency", LatencyLine(s.get_latency));
  absl::StrAppendFormat(&text, "%-20s = %s\n", "put_latency", LatencyLine(s.put_latency));
  absl::StrAppendFormat(&text, "%-20s = %s\n", "load_latency", LatencyLine(s.load_latency));
  return text;
}

}  // namespace

std::string HumanBytes(double bytes) {
  if (bytes < 1e3) return absl::StrFormat("%.0f B", bytes);
  if (bytes < 1e6) return absl::StrFormat("%.1f kB", bytes / 1e3);
  if (bytes < 1e9) return absl::StrFormat("%.1f MB", bytes / 1e6);
  return absl::StrFormat("%.2f GB", bytes / 1e9);
}

std::string HumanLatency(absl::Duration d) {
  const double us = absl::ToDoubleMicroseconds(d);
  if (us < 1e3) return absl::StrFormat("%.0fus", us);
  if (us < 1e6) return absl::StrFormat("%.2fms", us / 1e3);
  return absl::StrFormat("%.3fs", us / 1e6);
}

std::string MegabytesPerSecond(double bytes, absl::Duration elapsed) {
  const double seconds = absl::ToDoubleSeconds(elapsed);
  if (seconds <= 0) return "- MB/s";
  return absl::StrFormat("%.1f MB/s", bytes / 1e6 / seconds);
}

std::string WholeSeconds(absl::Duration d) {
  d = absl::Trunc(d, absl::Seconds(1));
  return d == absl::ZeroDuration() ? "0s" : absl::FormatDuration(d);
}

std::string DescribeTtl(const std::optional<absl::Duration>& ttl) {
  if (!ttl.has_value()) return "absent";
  if (*ttl == absl::InfiniteDuration()) return "no expiry";
  return WholeSeconds(*ttl);
}

std::string DescribeBackend(absl::string_view url) {
  const std::size_t colon = url.find(':');
  if (colon == absl::string_view::npos || colon == 0) return "(no scheme)";
  const absl::string_view scheme = url.substr(0, colon);
  absl::string_view rest = url.substr(colon + 1);
  if (!absl::ConsumePrefix(&rest, "//")) return absl::StrCat(scheme, ":");
  if (const std::size_t at = rest.rfind('@'); at != absl::string_view::npos) {
    rest.remove_prefix(at + 1);
  }
  const absl::string_view host = rest.substr(0, rest.find_first_of("/?#"));
  if (!host.empty()) return absl::StrCat(scheme, "://", host);
  return absl::StrCat(scheme, "://", rest.substr(0, rest.find_first_of("?#")));
}

absl::StatusOr<std::string> FormatStats(const CacheStats& stats, absl::string_view format) {
  if (format == "text") return StatsText(stats);
  if (format == "prometheus") return ToPrometheusText(stats);
  if (format == "emf") {
    absl::StatusOr<std::string> line = ToCloudWatchEmf(stats);
    if (line.ok()) line->push_back('\n');
    return line;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown --format '", format, "': use text, prometheus or emf"));
}

}  // namespace chunkcache::cli
