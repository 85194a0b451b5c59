#include "backends/redis/resp_over_tls.h"

#include <vector>

#include "absl/strings/str_cat.h"

namespace chunkcache::redis {

RespReader NewRespReader() { return RespReader(redisReaderCreate()); }

absl::StatusOr<Reply> RoundTrip(TlsStream& stream, redisReader& reader,
                                absl::Span<const std::string_view> args, absl::Time deadline) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  for (const std::string_view arg : args) {
    argv.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  char* command = nullptr;
  const int length =
      redisFormatCommandArgv(&command, static_cast<int>(argv.size()), argv.data(), lengths.data());
  if (length < 0) return absl::ResourceExhaustedError("redis: cannot format a command");
  const absl::Status written = stream.Write({command, static_cast<std::size_t>(length)}, deadline);
  redisFreeCommand(command);
  if (!written.ok()) return written;

  char buffer[16 * 1024];
  while (true) {
    void* reply = nullptr;
    if (redisReaderGetReply(&reader, &reply) != REDIS_OK) {
      return absl::InternalError(absl::StrCat("redis: ", reader.errstr));
    }
    if (reply != nullptr) return Reply(static_cast<redisReply*>(reply));
    absl::StatusOr<std::size_t> got = stream.Read(buffer, sizeof(buffer), deadline);
    if (!got.ok()) return got.status();
    if (redisReaderFeed(&reader, buffer, *got) != REDIS_OK) {
      return absl::InternalError(absl::StrCat("redis: ", reader.errstr));
    }
  }
}

}  // namespace chunkcache::redis
