// Standard descriptors for programs that open sockets: call EnsureStandardFds() first thing in
// main(), before anything opens a file or a socket.
//
// A program started with descriptor 0, 1 or 2 closed hands that number to the first file or socket
// it opens. Output meant for stdout then goes into, say, a Redis connection, where the server runs
// it as commands. EnsureStandardFds() fills each closed one with /dev/null opened the wrong way
// round (stdin write-only, stdout and stderr read-only), so that reading stdin or writing stdout
// fails with EBADF, which the program reports, instead of silently reading or writing nothing.

#ifndef CHUNKCACHE_EXAMPLES_COMMON_STANDARD_FDS_H_
#define CHUNKCACHE_EXAMPLES_COMMON_STANDARD_FDS_H_

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace chunkcache::examples {

// True if 0, 1 and 2 are open on return (they were, or now hold a placeholder).
inline bool EnsureStandardFds() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    // The lowest free number is `fd`: every lower one is open by now.
    const int placeholder =
        open("/dev/null", (fd == 0 ? O_WRONLY : O_RDONLY));  // inherited: children get it too
    if (placeholder != fd) {
      if (placeholder >= 0) close(placeholder);
      return false;
    }
  }
  return true;
}

}  // namespace chunkcache::examples

#endif  // CHUNKCACHE_EXAMPLES_COMMON_STANDARD_FDS_H_
