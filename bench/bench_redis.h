// The Redis server a benchmark measures: the one at a URL (--redis_url), or, when the URL is empty,
// a private redis-server on a free loopback port that lives as long as this object.
//
//   chunkcache::bench::BenchRedis redis(absl::GetFlag(FLAGS_redis_url));
//   auto backend = chunkcache::NewRedisBackend({.url = redis.url()});
//
// Not thread-safe; construct and destroy it on the same thread (the private server is killed when
// the thread that started it exits).

#ifndef CHUNKCACHE_BENCH_BENCH_REDIS_H_
#define CHUNKCACHE_BENCH_BENCH_REDIS_H_

#include <optional>
#include <string>
#include <utility>

#include "fixtures/redis_server.h"

namespace chunkcache::bench {

class BenchRedis {
 public:
  // Starts a redis-server if `url` is empty; throws std::runtime_error if it cannot.
  explicit BenchRedis(std::string url) : url_(std::move(url)) {
    if (url_.empty()) url_ = server_.emplace().url();
  }

  const std::string& url() const { return url_; }

 private:
  std::optional<testing::RedisServer> server_;
  std::string url_;
};

}  // namespace chunkcache::bench

#endif  // CHUNKCACHE_BENCH_BENCH_REDIS_H_
