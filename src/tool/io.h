// tool/io.h — the chunkcache tool's files and standard streams: checked writes to stdout, a
// progress line on stderr, bounded reads of an input file or stdin, and output files.
//
// Errors are absl::Status with the code errno stands for, their messages ready for the tool's
// one-line reports ("cannot open FILE: No such file or directory").

#ifndef CHUNKCACHE_SRC_TOOL_IO_H_
#define CHUNKCACHE_SRC_TOOL_IO_H_

#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace chunkcache::cli {

// `what: strerror(error)`, with the code that errno stands for (ENOENT NotFound, EACCES
// PermissionDenied, ENOSPC ResourceExhausted, ...).
absl::Status ErrnoError(int error, absl::string_view what);

// The tool's standard output. Every write is checked; the first failure is kept and reported by
// Finish, so that a command whose output was lost never exits 0. Requires external
// synchronization (the tool has one thread).
class Stdout {
 public:
  // OK if descriptor 1 can take writes. A closed stdout holds EnsureStandardFds' read-only
  // placeholder, so this tells before a command starts that its output would be lost.
  static absl::Status CheckWritable();

  template <typename... Args>
  void Print(const absl::FormatSpec<Args...>& format, const Args&... args) {
    if (absl::FPrintF(stdout, format, args...) < 0) Record(errno);
  }

  void Write(absl::string_view bytes) {
    if (std::fwrite(bytes.data(), 1, bytes.size(), stdout) != bytes.size()) Record(errno);
  }

  // Flushes stdout (a full disk or a broken pipe may show only here) and closes a duplicate of
  // its descriptor (a network file system reports delayed write errors on every close, as
  // fclose(stdout) would, but stdout stays open for the caller of RunTool); the first write
  // error, if any.
  absl::Status Finish();

 private:
  void Record(int error) {
    if (error_ == 0) error_ = error == 0 ? EIO : error;
  }

  int error_ = 0;  // errno of the first failed write
};

// A progress line on stderr for long transfers, only when stderr is a terminal.
class Progress {
 public:
  Progress() : enabled_(::isatty(STDERR_FILENO) == 1) {}

  // Shows `what...` until Done or Clear replaces it.
  void Show(absl::string_view what) {
    if (enabled_) absl::FPrintF(stderr, "\r\033[K%s...", what);
  }
  // Replaces the line with `summary`, which stays.
  void Done(absl::string_view summary) {
    if (enabled_) absl::FPrintF(stderr, "\r\033[K%s\n", summary);
  }
  void Clear() {
    if (enabled_) absl::FPrintF(stderr, "\r\033[K");
  }

 private:
  const bool enabled_;
};

// The bytes of `path` ("-": stdin), at most `limit` of them: one byte more is ResourceExhausted
// ("... holds more than --max_payload_size"), so an endless input (< /dev/zero) costs at most
// `limit` bytes of memory.
absl::StatusOr<std::string> ReadInput(const std::string& path, std::size_t limit);

// NotFound naming the directory `path` would go into, if that directory does not exist (or
// FailedPrecondition if it is not a directory); OK otherwise, including when the check fails.
absl::Status CheckOutputDirectory(const std::string& path);

// Writes `bytes` to the file `path`, created or truncated.
absl::Status WriteFile(absl::string_view bytes, const std::string& path);

}  // namespace chunkcache::cli

#endif  // CHUNKCACHE_SRC_TOOL_IO_H_
