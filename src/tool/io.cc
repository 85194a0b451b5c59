#include "tool/io.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"

namespace chunkcache::cli {
namespace {

absl::Status TooLarge(absl::string_view name, std::size_t limit) {
  return absl::ResourceExhaustedError(absl::StrFormat(
      "%s holds more than --max_payload_size (%d bytes): nothing was stored", name, limit));
}

}  // namespace

// `what: strerror(error)`, with the code that errno stands for (ENOENT NotFound, EACCES
// PermissionDenied, ENOSPC ResourceExhausted, ...).
absl::Status ErrnoError(int error, absl::string_view what) {
  return absl::Status(absl::ErrnoToStatusCode(error),
                      absl::StrCat(what, ": ", std::strerror(error)));
}

absl::Status Stdout::CheckWritable() {
  const int flags = ::fcntl(STDOUT_FILENO, F_GETFL);
  if (flags == -1 || (flags & O_ACCMODE) == O_RDONLY) {
    return absl::FailedPreconditionError("standard output is closed");
  }
  return absl::OkStatus();
}

absl::Status Stdout::Finish() {
  if (std::fflush(stdout) != 0) Record(errno);
  if (std::ferror(stdout) != 0) Record(EIO);  // a failure stdio kept without an errno we saw
  if (const int copy = ::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 0); copy >= 0) {
    if (::close(copy) != 0 && errno != EINTR) Record(errno);
  }
  if (error_ == 0) return absl::OkStatus();
  if (error_ == EBADF) return absl::FailedPreconditionError("standard output is closed");
  return ErrnoError(error_, "cannot write standard output");
}

absl::StatusOr<std::string> ReadInput(const std::string& path, std::size_t limit) {
  const bool is_stdin = path == "-";
  const std::string name = is_stdin ? "standard input" : path;
  const int fd = is_stdin ? STDIN_FILENO : ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, absl::StrCat("cannot open ", path));
  absl::Cleanup close_file = [&] {
    if (!is_stdin) ::close(fd);
  };
  std::string data;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
    if (static_cast<std::uint64_t>(st.st_size) > limit) return TooLarge(name, limit);
    data.reserve(static_cast<std::size_t>(st.st_size));
  }
  char buffer[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buffer, std::min(sizeof(buffer), limit + 1 - data.size()));
    if (n > 0) {
      const std::size_t size = data.size() + static_cast<std::size_t>(n);
      if (size > limit) break;
      // Grow by doubling, but never past the limit (a string's own doubling would reach 2x).
      if (size > data.capacity())
        data.reserve(std::min(limit, std::max(size, 2 * data.capacity())));
      data.append(buffer, static_cast<std::size_t>(n));
    } else if (n == 0) {
      return data;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      // A non-blocking descriptor inherited from the caller: wait for input as a blocking one
      // would.
      pollfd readable{fd, POLLIN, 0};
      ::poll(&readable, 1, -1);
    } else if (errno == EBADF && is_stdin) {
      // Closed when the tool started: EnsureStandardFds left a write-only placeholder.
      return absl::FailedPreconditionError("cannot read standard input: it is closed");
    } else if (errno != EINTR) {
      return ErrnoError(errno, absl::StrCat("cannot read ", name));
    }
  }
  return TooLarge(name, limit);
}

absl::Status CheckOutputDirectory(const std::string& path) {
  std::filesystem::path directory = std::filesystem::path(path).parent_path();
  if (directory.empty()) return absl::OkStatus();  // the working directory
  std::error_code error;
  const std::filesystem::file_status status = std::filesystem::status(directory, error);
  if (status.type() == std::filesystem::file_type::not_found) {
    return absl::NotFoundError(absl::StrCat("cannot write ", path, ": the directory ",
                                            directory.string(), " does not exist"));
  }
  if (!error && status.type() != std::filesystem::file_type::directory) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot write ", path, ": ", directory.string(), " is not a directory"));
  }
  return absl::OkStatus();
}

absl::Status WriteFile(absl::string_view bytes, const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) {
    const int error = errno;
    if (error == ENOENT || error == ENOTDIR) {
      if (absl::Status missing = CheckOutputDirectory(path); !missing.ok()) return missing;
    }
    return ErrnoError(error, absl::StrCat("cannot open ", path, " for writing"));
  }
  int error = 0;
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n >= 0) {
      bytes.remove_prefix(static_cast<std::size_t>(n));
    } else if (errno != EINTR) {
      error = errno;
      break;
    }
  }
  // close reports what a network file system delayed.
  if (::close(fd) != 0 && error == 0 && errno != EINTR) error = errno;
  if (error != 0) return ErrnoError(error, absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace chunkcache::cli
