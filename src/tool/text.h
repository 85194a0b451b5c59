// tool/text.h — how the chunkcache tool words figures: sizes, latencies, rates, TTLs, a backend
// URL without its credentials, and the cache's counters.

#ifndef CHUNKCACHE_SRC_TOOL_TEXT_H_
#define CHUNKCACHE_SRC_TOOL_TEXT_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "chunkcache/stats.h"

namespace chunkcache::cli {

// "2.8 MB": decimal units, as throughput figures are.
std::string HumanBytes(double bytes);

// A latency with three significant figures or so: "812us", "7.91ms", "1.204s".
std::string HumanLatency(absl::Duration d);

// "12.3 MB/s"; "- MB/s" for no time.
std::string MegabytesPerSecond(double bytes, absl::Duration elapsed);

// Whole seconds: "1h2m3s", "0s".
std::string WholeSeconds(absl::Duration d);

// "59m59s", "no expiry" or "absent", from one TimeToLive answer.
std::string DescribeTtl(const std::optional<absl::Duration>& ttl);

// `url` reduced to its scheme and host[:port], for messages: "redis://10.0.0.5:6379" for
// redis://user:secret@10.0.0.5:6379/2. A URL without a host shows its path instead
// ("unix:///run/redis.sock", "dir:///var/cache"); a query or fragment is dropped. Everything up
// to the last '@' goes, wherever it is (a password may hold '/' or '?'), so a path holding '@'
// shows less than it could, never a credential.
std::string DescribeBackend(absl::string_view url);

// The stats in `format`: text (one "name = value" line each), prometheus or emf; InvalidArgument
// for another format.
absl::StatusOr<std::string> FormatStats(const CacheStats& stats, absl::string_view format);

}  // namespace chunkcache::cli

#endif  // CHUNKCACHE_SRC_TOOL_TEXT_H_
