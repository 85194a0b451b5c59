// UniqueFd owns a file descriptor and closes it when destroyed, like std::unique_ptr for fds.
//
//   chunkcache::internal::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
//   if (!fd.valid()) return absl::ErrnoToStatus(errno, "socket");

#ifndef CHUNKCACHE_SRC_INTERNAL_UNIQUE_FD_H_
#define CHUNKCACHE_SRC_INTERNAL_UNIQUE_FD_H_

#include <unistd.h>

#include <utility>

namespace chunkcache::internal {

// Move-only. Not thread-safe: one owner at a time.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) Reset(other.Release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

  // Closes the descriptor held (if any) and holds `fd` instead.
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

  // Gives up ownership without closing: the caller closes the returned descriptor.
  int Release() { return std::exchange(fd_, -1); }

 private:
  int fd_ = -1;
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_INTERNAL_UNIQUE_FD_H_
