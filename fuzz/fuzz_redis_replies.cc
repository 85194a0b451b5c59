// fuzz_redis_replies — RedisBackend's own handling of what a server answers: reply types and
// counts (MGET, SET, DEL, PTTL, SET NX), error codes, MOVED/ASK redirects, TRYAGAIN, and the
// CLUSTER SLOTS map (src/backends/redis/). hiredis parses the RESP bytes; everything
// built on its reply objects is ours, and is what this target exercises.
//
// A fake server thread listens on a unix socket in a fresh temporary directory, named ".../redis:0"
// so that a CLUSTER SLOTS entry with host "?" (or empty) and port 0 names it. For each connection
// it reads the request, writes the next reply of the input's script (nothing once the script is
// used up) and closes. The backend keeps no idle connection (pool_size 0), so every pipeline is
// one connection, one scripted reply.
//
// Input: an operations byte, then pieces (fuzz_util.h): the replies, raw RESP bytes, in the order
// connections are made. "@S" in a reply stands for the server's address (to redirect to it).
// First NewRedisBackend (PING); then, as the byte's bits say: MultiGet, MultiSet, Delete,
// SetIfAbsent, TimeToLive, MultiGet again — on keys of several hash slots, so that a backend that
// a MOVED reply turned into a cluster client sends one command per slot.
//
// No address but the socket is ever touched: this file replaces connect() (anything but AF_UNIX
// fails with ENETUNREACH) and getaddrinfo() (always fails), so a redirect or a slot map naming a
// host:port makes no connection and no DNS query. The target checks at start-up that these
// replacements are the ones the process uses, and aborts otherwise.
//
// absl::SleepFor is replaced too (no sleep): the backend pauses after TRYAGAIN replies, which
// would make the target sleep-bound.
//
// Properties: no crash, no hang (every call ends within its timeouts); statuses are OK,
// Unavailable, DeadlineExceeded, PermissionDenied, ResourceExhausted or Internal; an OK MultiGet
// or TimeToLive has one entry per key; no value is longer than the reply bound of its call; and
// (sanitizer builds) no call allocates more than kLargestAllocation at once, whatever the server
// claims ("max_item_size ... the bound on the bytes one reply may hold, whatever the server
// sends", redis_backend.h). hiredis allocates an array reply's element pointers as soon as it
// reads the header ("*666666663\r\n", 12 bytes, would cost a 5.3 GB calloc): RedisBackend checks
// every array header against the command before hiredis allocates.

#include <dlfcn.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/config.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/time.h"
#include "chunkcache/redis_backend.h"
#include "fuzz_util.h"

namespace chunkcache::fuzz::redis_target {
std::atomic<std::uint64_t> blocked_connects{0}, skipped_sleeps{0};
}  // namespace chunkcache::fuzz::redis_target

// The process's connect(): unix sockets only.
extern "C" int connect(int fd, const struct sockaddr* address, socklen_t length) {
  if (address == nullptr || address->sa_family != AF_UNIX) {
    chunkcache::fuzz::redis_target::blocked_connects.fetch_add(1);
    errno = ENETUNREACH;
    return -1;
  }
  return static_cast<int>(syscall(SYS_connect, fd, address, length));
}

// The process's getaddrinfo(): no name is ever resolved.
extern "C" int getaddrinfo(const char*, const char*, const struct addrinfo*,
                           struct addrinfo** result) {
  chunkcache::fuzz::redis_target::blocked_connects.fetch_add(1);
  if (result != nullptr) *result = nullptr;
  return EAI_FAIL;
}

// absl::SleepFor's hook (weak in Abseil, meant to be replaced): the backend's pauses (10 ms after
// a TRYAGAIN reply, up to 6 rounds) are skipped, so that the target runs on CPU, not on sleeps.
extern "C" void ABSL_INTERNAL_C_SYMBOL(AbslInternalSleepFor)(absl::Duration) {
  chunkcache::fuzz::redis_target::skipped_sleeps.fetch_add(1);
}

namespace chunkcache::fuzz {
namespace redis_target {

constexpr std::size_t kMaxItemSize = 512;
// What one MultiGet of kKeys may legitimately receive: kReplyOverhead (256) per command plus
// max_item_size + kReplyOverhead per key (src/backends/redis/backend.cc).
constexpr std::size_t kReplyBound = 4 * 256 + 4 * (kMaxItemSize + 256);
// The largest single allocation a call may make: the element pointers of a CLUSTER SLOTS reply of
// 16384 ranges (one per slot, the most RedisBackend admits in one array: 128 KiB), well above any
// legitimate reply object, value or hiredis read buffer (16 KiB) for these keys and kMaxItemSize.
constexpr std::size_t kLargestAllocation = 128 << 10;

class FakeServer {
 public:
  FakeServer() {
    char dir[] = "/tmp/ccfuzz-redis-XXXXXX";
    if (mkdtemp(dir) == nullptr) Die("mkdtemp");
    dir_ = dir;
    path_ = dir_ + "/redis:0";
    listener_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (listener_ < 0 || path_.size() >= sizeof(address.sun_path)) Die("socket");
    std::memcpy(address.sun_path, path_.c_str(), path_.size() + 1);
    if (bind(listener_, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 ||
        listen(listener_, 16) != 0) {
      Die("bind/listen");
    }
    thread_ = std::thread([this] { Serve(); });
  }

  ~FakeServer() {
    stopping_.store(true);
    thread_.join();
    close(listener_);
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }

  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;

  const std::string& path() const { return path_; }

  // The replies for the next connections; `script` must outlive the next Finish().
  void Start(const std::vector<std::string>* script) {
    std::lock_guard<std::mutex> lock(mu_);
    script_ = script;
    next_ = 0;
  }

  // Stops serving the script, and waits until no reply of it is being written.
  void Finish() {
    std::unique_lock<std::mutex> lock(mu_);
    script_ = nullptr;
    idle_.wait(lock, [this] { return !busy_; });
  }

 private:
  [[noreturn]] static void Die(const char* what) {
    std::fprintf(stderr, "fuzz_redis_replies: %s: %s\n", what, std::strerror(errno));
    std::abort();
  }

  void Serve() {
    while (!stopping_.load()) {
      pollfd ready{listener_, POLLIN, 0};
      if (poll(&ready, 1, 50) <= 0) continue;
      const int fd = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      Answer(fd);
      close(fd);
    }
  }

  void Answer(int fd) {
    pollfd request{fd, POLLIN, 0};
    if (poll(&request, 1, 200) <= 0) return;
    char buffer[4096];
    while (recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT) > 0) {
    }
    const std::string* reply = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (script_ == nullptr || next_ >= script_->size()) return;
      reply = &(*script_)[next_++];
      busy_ = true;
    }
    for (std::size_t sent = 0; sent < reply->size();) {
      const ssize_t n = send(fd, reply->data() + sent, reply->size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;  // the client gave up (a reply over its bound, say)
      sent += static_cast<std::size_t>(n);
    }
    std::lock_guard<std::mutex> lock(mu_);
    busy_ = false;
    idle_.notify_all();
  }

  std::string dir_, path_;
  int listener_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable idle_;
  const std::vector<std::string>* script_ = nullptr;
  std::size_t next_ = 0;
  bool busy_ = false;
};

FakeServer& Server() {
  static const bool interposed = [] {
    // Make sure this file's connect() and getaddrinfo() are the ones everybody calls.
    if (dlsym(RTLD_DEFAULT, "connect") != reinterpret_cast<void*>(&::connect) ||
        dlsym(RTLD_DEFAULT, "getaddrinfo") != reinterpret_cast<void*>(&::getaddrinfo)) {
      std::fprintf(stderr,
                   "fuzz_redis_replies: connect()/getaddrinfo() are not interposed; refusing to "
                   "run a target that could reach the network\n");
      std::abort();
    }
    return true;
  }();
  (void)interposed;
  static FakeServer server;  // until the process exits
  return server;
}

// Runs a backend call under an allocation meter and checks kLargestAllocation.
template <typename Call>
auto Metered(const char* what, Call call) {
  AllocationMeter meter;
  auto result = call();
  if (AllocationMeter::Supported()) {
    FUZZ_CHECK(meter.largest() <= kLargestAllocation,
               absl::StrCat(what, " allocated ", meter.largest(), " bytes at once"));
  }
  return result;
}

void CheckStatus(const absl::Status& status, const char* what) {
  Note(absl::StrCat(what, ": ", status.ToString()));
  using absl::StatusCode;
  const StatusCode code = status.code();
  FUZZ_CHECK(code == StatusCode::kOk || code == StatusCode::kUnavailable ||
                 code == StatusCode::kDeadlineExceeded || code == StatusCode::kPermissionDenied ||
                 code == StatusCode::kResourceExhausted || code == StatusCode::kInternal,
             absl::StrCat(what, ": ", status.ToString()));
}

}  // namespace redis_target

int FuzzRedisReplies(const std::uint8_t* data, std::size_t size) {
  using namespace redis_target;
  FakeServer& server = Server();
  InputReader in(data, size);
  const std::uint8_t ops = in.Byte();
  std::vector<std::string> script = in.Pieces();
  for (std::string& reply : script) {
    reply = absl::StrReplaceAll(reply, {{"@S", server.path()}});
  }
  server.Start(&script);
  {
    absl::StatusOr<std::shared_ptr<RedisBackend>> made = Metered("NewRedisBackend", [&] {
      return NewRedisBackend({.url = "unix://" + server.path(),
                              .connect_timeout = absl::Seconds(1),
                              .command_timeout = absl::Seconds(2),
                              .pool_size = 0,
                              .max_item_size = kMaxItemSize});
    });
    CheckStatus(made.status(), "NewRedisBackend");
    if (made.ok()) {
      RedisBackend* redis = made->get();
      const std::string_view keys[] = {"{k}a", "{k}b", "other", "{x}y"};
      const auto check_values = [&](const auto& values, const char* what) {
        CheckStatus(values.status(), what);
        if (!values.ok()) return;
        FUZZ_CHECK(values->size() == std::size(keys),
                   absl::StrCat(what, ": ", values->size(), " entries for 4 keys"));
      };
      const auto multi_get = [&] {
        absl::StatusOr<std::vector<std::optional<std::string>>> values =
            Metered("MultiGet", [&] { return redis->MultiGet(keys); });
        check_values(values, "MultiGet");
        if (!values.ok()) return;
        for (const std::optional<std::string>& value : *values) {
          FUZZ_CHECK(!value.has_value() || value->size() <= kReplyBound,
                     absl::StrCat("MultiGet returned a ", value->size(), "-byte value"));
        }
      };
      if (ops & 1) multi_get();
      if (ops & 2) {
        const KeyValue items[] = {{"{k}a", "v1"}, {"other", "v2"}};
        CheckStatus(Metered("MultiSet", [&] { return redis->MultiSet(items, absl::Seconds(10)); }),
                    "MultiSet");
      }
      if (ops & 4) CheckStatus(Metered("Delete", [&] { return redis->Delete(keys); }), "Delete");
      if (ops & 8) {
        CheckStatus(
            Metered("SetIfAbsent",
                    [&] { return redis->SetIfAbsent("{k}:lease", "token", absl::Seconds(5)); })
                .status(),
            "SetIfAbsent");
      }
      if (ops & 16) {
        check_values(Metered("TimeToLive", [&] { return redis->TimeToLive(keys); }), "TimeToLive");
      }
      if (ops & 32) multi_get();
    }
  }
  server.Finish();
  return 0;
}

}  // namespace chunkcache::fuzz

#ifndef CHUNKCACHE_FUZZ_NO_ENTRY_POINTS
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return chunkcache::fuzz::FuzzRedisReplies(data, size);
}
#endif
