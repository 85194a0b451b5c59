#include "dir_backend.h"

#include <absl/status/status.h>
#include <absl/strings/escaping.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <utility>

namespace {

constexpr std::size_t kPartSize = 240;  // hex digits in one name (NAME_MAX is 255)

// A descriptor, closed when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

absl::Status Errno(const char* what) { return absl::ErrnoToStatus(errno, what); }

// The directory holding `key`'s file, walked (and made, if `create`) part by part, and the file's
// name. NotFound if a directory is missing.
absl::StatusOr<std::pair<Fd, std::string>> Locate(int root_fd, std::string_view key, bool create) {
  const std::string hex = absl::BytesToHexString(absl::string_view(key.data(), key.size()));
  Fd dir(::fcntl(root_fd, F_DUPFD_CLOEXEC, 0));
  std::size_t at = 0;
  for (; hex.size() - at > kPartSize; at += kPartSize) {
    const std::string name = hex.substr(at, kPartSize) + ".d";
    if (create && ::mkdirat(dir.get(), name.c_str(), 0755) != 0 && errno != EEXIST) {
      return Errno("mkdir");
    }
    Fd next(::openat(dir.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (next.get() < 0) return Errno("open directory");
    dir = std::move(next);
  }
  return std::pair<Fd, std::string>(std::move(dir), hex.substr(at) + ".v");
}

}  // namespace

absl::StatusOr<std::shared_ptr<DirectoryBackend>> DirectoryBackend::Open(
    const std::string& root, std::size_t max_item_size) {
  std::error_code error;
  std::filesystem::create_directories(root, error);
  const int fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("cannot open the backend's directory");
  return std::shared_ptr<DirectoryBackend>(new DirectoryBackend(fd, max_item_size));
}

DirectoryBackend::~DirectoryBackend() { ::close(root_fd_); }

absl::StatusOr<std::optional<std::string>> DirectoryBackend::Read(std::string_view key) {
  auto located = Locate(root_fd_, key, /*create=*/false);
  if (absl::IsNotFound(located.status())) return std::nullopt;
  if (!located.ok()) return located.status();
  auto& [dir, name] = *located;
  const Fd file(::openat(dir.get(), name.c_str(), O_RDONLY | O_CLOEXEC));
  if (file.get() < 0 && errno == ENOENT) return std::nullopt;
  if (file.get() < 0) return Errno("open");
  std::string bytes;
  char buffer[1 << 16];
  for (ssize_t n; (n = ::read(file.get(), buffer, sizeof(buffer))) != 0;) {
    if (n < 0 && errno != EINTR) return Errno("read");
    if (n > 0) bytes.append(buffer, static_cast<std::size_t>(n));
  }
  std::int64_t expiry = 0;
  if (bytes.size() < sizeof(expiry)) return absl::DataLossError("a file without its header");
  std::memcpy(&expiry, bytes.data(), sizeof(expiry));
  if (absl::FromUnixNanos(expiry) <= absl::Now()) {
    ::unlinkat(dir.get(), name.c_str(), 0);  // expired: gone
    return std::nullopt;
  }
  return bytes.substr(sizeof(expiry));
}

absl::Status DirectoryBackend::Write(std::string_view key, std::string_view value,
                                     absl::Time expiry) {
  auto located = Locate(root_fd_, key, /*create=*/true);
  if (!located.ok()) return located.status();
  auto& [dir, name] = *located;
  const std::string temp = name + ".tmp";
  const Fd file(::openat(dir.get(), temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (file.get() < 0) return Errno("create");
  const std::int64_t nanos = expiry == absl::InfiniteFuture()
                                 ? std::numeric_limits<std::int64_t>::max()
                                 : absl::ToUnixNanos(expiry);
  std::string bytes(reinterpret_cast<const char*>(&nanos), sizeof(nanos));
  bytes.append(value);
  for (std::size_t done = 0; done < bytes.size();) {
    const ssize_t n = ::write(file.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno != EINTR) return Errno("write");
    if (n > 0) done += static_cast<std::size_t>(n);
  }
  if (::renameat(dir.get(), temp.c_str(), dir.get(), name.c_str()) != 0) return Errno("rename");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::optional<std::string>>> DirectoryBackend::MultiGet(
    absl::Span<const std::string_view> keys) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::optional<std::string>> values;
  for (std::string_view key : keys) {
    absl::StatusOr<std::optional<std::string>> value = Read(key);
    if (!value.ok()) return value.status();
    values.push_back(*std::move(value));
  }
  return values;
}

absl::Status DirectoryBackend::MultiSet(absl::Span<const chunkcache::KeyValue> items,
                                        absl::Duration ttl) {
  if (ttl <= absl::ZeroDuration()) return absl::InvalidArgumentError("ttl must be positive");
  for (const chunkcache::KeyValue& item : items) {
    if (item.key.empty()) return absl::InvalidArgumentError("empty key");
    if (item.value.size() > max_item_size_) return absl::InvalidArgumentError("value too large");
  }
  const absl::Time expiry = absl::Now() + ttl;  // InfiniteFuture for an infinite ttl
  std::lock_guard<std::mutex> lock(mu_);
  for (const chunkcache::KeyValue& item : items) {
    if (absl::Status written = Write(item.key, item.value, expiry); !written.ok()) return written;
  }
  return absl::OkStatus();
}

absl::Status DirectoryBackend::Delete(absl::Span<const std::string_view> keys) {
  std::lock_guard<std::mutex> lock(mu_);
  for (std::string_view key : keys) {
    auto located = Locate(root_fd_, key, /*create=*/false);
    if (absl::IsNotFound(located.status())) continue;
    if (!located.ok()) return located.status();
    if (::unlinkat(located->first.get(), located->second.c_str(), 0) != 0 && errno != ENOENT) {
      return Errno("unlink");
    }
  }
  return absl::OkStatus();
}
