// backends/redis/resp_over_tls.h — RESP commands over a TlsStream, parsed by hiredis' reader.
//
// hiredis 0.14 cannot carry TLS, but its RESP parts work on bytes alone: redisFormatCommandArgv
// encodes a command and a redisReader parses replies fed to it. RoundTrip joins them to a
// TlsStream: one command written, bytes read until the reader holds a whole reply.
//
//   RespReader reader = NewRespReader();
//   absl::StatusOr<Reply> pong =
//       RoundTrip(*stream, *reader, {"PING"}, absl::Now() + absl::Seconds(1));
//
// Errors: those of TlsStream; a reply hiredis cannot parse → Internal. An error reply is a reply
// (REDIS_REPLY_ERROR), not a failed Status. No bound on the reply's size is applied here.
//
// Thread safety: a reader and its stream are used by one thread at a time.

#ifndef CHUNKCACHE_SRC_BACKENDS_REDIS_RESP_OVER_TLS_H_
#define CHUNKCACHE_SRC_BACKENDS_REDIS_RESP_OVER_TLS_H_

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "backends/redis/connection.h"
#include "backends/redis/tls.h"
#include "hiredis/hiredis.h"

namespace chunkcache::redis {

// A hiredis reader with the default reply builders; nullptr when out of memory.
RespReader NewRespReader();

// Sends `args` as one command over `stream` and reads its reply into `reader`, before
// `deadline`. Bytes read beyond the reply stay in `reader` for the next call.
absl::StatusOr<Reply> RoundTrip(TlsStream& stream, redisReader& reader,
                                absl::Span<const std::string_view> args, absl::Time deadline);

}  // namespace chunkcache::redis

#endif  // CHUNKCACHE_SRC_BACKENDS_REDIS_RESP_OVER_TLS_H_
